"""What a tenant may set, checked by the real API server (CEL in the generated CRD) and on the real
objects the operator creates: hardened worker pods and the multi-node NetworkPolicy."""

from __future__ import annotations

import pytest

from tests.api.invalid_manifests import with_field
from tests.cluster import kube
from tests.cluster.operator_fixtures import (
    trace_manifest,
    wait_phase,
)


def _refusal(body: dict, namespace: str) -> str:
    proc = kube.create(body, namespace, check=False)
    assert proc.returncode != 0, f"accepted: {body['metadata']['name']}"
    return proc.stderr


@pytest.mark.usefixtures("crd")
def test_api_server_refuses_reserved_keys_bad_names_and_output_off_the_volume(namespace: str) -> None:
    body = with_field(trace_manifest("lab"), "spec.pod.labels", {"batch.kubernetes.io/controller-uid": "x"})
    assert "reserved prefixes" in _refusal(body, namespace)
    body = with_field(trace_manifest("ann"), "spec.pod.annotations", {"node.k8s.io/x": "value"})
    assert "reserved prefixes" in _refusal(body, namespace)
    assert "metadata.name must be a DNS-1035 label" in _refusal(trace_manifest("a" * 53), namespace)
    assert "metadata.name must be a DNS-1035 label" in _refusal(trace_manifest("9lives"), namespace)
    body = with_field(trace_manifest("out"), "spec.storage", {"volumeClaim": "data"})
    body["spec"]["output"] = {"path": "/tmp/out"}
    assert "output.path must lie under /workspace/" in _refusal(body, namespace)
    ok = with_field(trace_manifest("a" * 52), "spec.pod.labels", {"influencetrace.dev/simulate": "hang"})
    assert kube.create(ok, namespace, check=False).returncode == 0


def test_worker_pods_are_hardened_and_ranks_fenced(namespace: str, op) -> None:
    op.start()
    spec = trace_manifest("duo", resources={"gpus": 4, "nodes": 2, "pools": ["h100"]},
                          pod={"labels": {kube.SIMULATE_LABEL: "hang"}})
    kube.apply(spec, namespace)
    wait_phase("duo", namespace, ("Running",), timeout=120)
    (pod, *_) = kube.list_objects("pods", namespace, selector="influencetrace.dev/trace=duo")
    container = pod["spec"]["containers"][0]
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["resources"]["requests"]["ephemeral-storage"] == "16Gi"
    volumes = {v["name"]: v for v in pod["spec"]["volumes"]}
    assert volumes["tmp"]["emptyDir"]["sizeLimit"] == "16Gi"
    assert volumes["dshm"]["emptyDir"] == {"medium": "Memory", "sizeLimit": "8Gi"}
    policy = kube.get("networkpolicy", "duo-ranks", namespace)
    assert policy is not None
    assert policy["spec"]["podSelector"]["matchLabels"]["influencetrace.dev/trace"] == "duo"
    assert policy["spec"]["ingress"][0]["ports"] == [{"protocol": "TCP", "port": 29500}]
