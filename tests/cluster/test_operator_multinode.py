"""A two-node trace on the real control plane: an Indexed Job of two pods and its rendezvous Service,
both owned by the trace, and an escalation that relaunches the whole group on the larger pool."""

from __future__ import annotations

from tests.cluster import kube
from tests.cluster.operator_fixtures import (
    BIG_GPU_BYTES,
    jobs_of,
    trace_manifest,
    wait_phase,
)


def test_two_node_trace_escalates_as_a_group(namespace: str, op) -> None:
    op.start()
    spec = trace_manifest(
        "duo",
        annotations={kube.SIMULATE_GPU_BYTES: BIG_GPU_BYTES},
        resources={"gpus": 4, "nodes": 2, "pools": ["h100", "h200"]},
    )
    kube.apply(spec, namespace)
    obj = wait_phase("duo", namespace, ("Succeeded", "Failed"), timeout=90)
    assert obj["status"]["phase"] == "Succeeded", obj["status"]
    assert (obj["status"]["pool"], obj["status"]["attempt"]) == ("h200", 2)
    uid = obj["metadata"]["uid"]

    service = kube.get("service", "duo-ranks", namespace)
    assert service["spec"]["clusterIP"] == "None"
    assert service["metadata"]["ownerReferences"][0]["uid"] == uid

    assert jobs_of("duo", namespace) == ["duo-a1", "duo-a2"]
    for name, pool in (("duo-a1", "h100"), ("duo-a2", "h200")):
        job = kube.get("job", name, namespace)
        assert job["spec"]["completionMode"] == "Indexed" and job["spec"]["completions"] == 2
        assert job["metadata"]["ownerReferences"][0]["uid"] == uid
        pods = kube.job_pods(name, namespace)
        indexes = {p["metadata"]["annotations"]["batch.kubernetes.io/job-completion-index"] for p in pods}
        assert indexes == {"0", "1"}, indexes
        assert all(p["spec"]["subdomain"] == "duo-ranks" for p in pods)
        placed = [p["spec"]["nodeName"] for p in pods if p["spec"].get("nodeName")]
        assert placed and all(node.startswith(f"gpu-{pool}-") for node in placed)
