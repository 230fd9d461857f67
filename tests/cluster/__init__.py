"""Tests against the local Kubernetes control plane (hack/cluster.sh); helpers in kube.py."""
