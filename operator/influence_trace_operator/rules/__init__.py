"""Layer 1, pure rules: labels, conditions and their reasons, how a Job or pod ended, what to do after an
attempt (policies), pending and timeouts, tenancy, pools, the Job/ConfigMap/Service/NetworkPolicy
builders and the operator's settings. No Kubernetes client, no I/O: each is unit-tested on plain data."""
