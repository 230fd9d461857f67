"""The operator under faults the real API server produces: refused calls, a foreign namesake Job, no
node, a missing PVC, deadlines. Every stall is told in the status (a condition with a fixed reason and
the API's or scheduler's message), with one Warning event, never one per retry."""

from __future__ import annotations

import time

from tests.cluster import kube
from tests.cluster.operator_fixtures import (
    events_of,
    get_trace,
    jobs_of,
    trace_manifest,
    wait_phase,
)

HANG = {"labels": {kube.SIMULATE_LABEL: "hang"}}
FAST_BACKOFF = {"INFLUENCETRACE_API_BACKOFF_SECONDS": "1", "INFLUENCETRACE_API_BACKOFF_MAX_SECONDS": "3"}


def _condition(name: str, namespace: str, kind: str) -> dict:
    return kube.condition(get_trace(name, namespace), kind) or {}


def _reasons(name: str, namespace: str, reason: str) -> int:
    return sum(1 for _, r, _ in events_of(name, namespace) if r == reason)


def test_quota_refusal_is_told_once_and_retried_with_backoff(namespace: str, op) -> None:
    """403 (quota): Placed=False/APIError with the API's words, one event, a Job once the quota goes."""
    kube.apply({"apiVersion": "v1", "kind": "ResourceQuota", "metadata": {"name": "no-jobs"},
                "spec": {"hard": {"count/jobs.batch": "0"}}}, namespace)
    time.sleep(1)  # the quota controller fills in status.used, which admission needs
    op.start(**FAST_BACKOFF)
    kube.apply(trace_manifest("q", pod=HANG), namespace)
    kube.wait_for(lambda: _condition("q", namespace, "Placed").get("reason") == "APIError", 90,
                  description="Placed=APIError")
    cond = _condition("q", namespace, "Placed")
    assert cond["status"] == "False" and "exceeded quota" in cond["message"], cond
    assert "HTTP 403" in cond["message"]
    time.sleep(8)  # several retries (1, 2, 3, 3 s)
    assert "failure 1;" not in _condition("q", namespace, "Placed")["message"]
    assert _reasons("q", namespace, "APIError") == 1, events_of("q", namespace)
    assert jobs_of("q", namespace) == []
    kube.delete("resourcequota", "no-jobs", namespace, wait=True)
    obj = wait_phase("q", namespace, ("Pending", "Running"), timeout=90)
    kube.wait_for(lambda: jobs_of("q", namespace) == ["q-a1"], 90, description="job after the quota")
    obj = get_trace("q", namespace)
    assert kube.condition(obj, "Placed")["reason"] == "JobCreated"


def test_invalid_job_fails_the_trace_with_the_api_message(namespace: str, op) -> None:
    """422 is permanent: the API would refuse the same Job again, so the trace fails at once."""
    op.start()
    kube.apply(trace_manifest("inv", pod={"labels": {"team": "has space"}}), namespace)
    obj = wait_phase("inv", namespace, ("Failed",), timeout=90)
    cond = kube.condition(obj, "Failed")
    assert cond["reason"] == "APIRejected" and "HTTP 422" in cond["message"], cond
    assert "spec.template.labels" in cond["message"] and "has space" in cond["message"]
    assert jobs_of("inv", namespace) == []


def test_job_name_held_by_a_foreign_object_is_never_adopted(namespace: str, op) -> None:
    kube.apply(kube.job_manifest("own-a1", labels={kube.SIMULATE_LABEL: "hang"}, pool="h100"), namespace)
    op.start()
    kube.apply(trace_manifest("own"), namespace)
    obj = wait_phase("own", namespace, ("Failed",), timeout=90)
    cond = kube.condition(obj, "Failed")
    assert cond["reason"] == "ChildConflict" and "Job own-a1 already exists" in cond["message"], cond
    job = kube.get("job", "own-a1", namespace)
    assert job is not None and not job["metadata"].get("ownerReferences")  # left alone


def _fill_h100(namespace: str) -> None:
    """Every h100 GPU taken by a pod that stays Running."""
    for node in kube.gpu_nodes("h100"):
        name = f"fill-{node['metadata']['name']}"
        kube.apply(kube.pod_manifest(name, pool="h100", gpus=8, restart_policy="Always"), namespace)
        kube.wait_for_pod_phase(name, namespace, ("Running",), timeout=240)  # old pods may linger


def test_pending_reason_then_timeout_moves_to_a_larger_pool(namespace: str, op) -> None:
    _fill_h100(namespace)
    op.start()
    spec = trace_manifest("pend", resources={"pools": ["h100", "h200"], "pendingTimeout": "6s"})
    kube.apply(spec, namespace)
    kube.wait_for(lambda: "Insufficient nvidia.com/gpu" in _condition("pend", namespace, "Running").get(
        "message", ""), 90, description="the scheduler's reason in Running")
    assert _condition("pend", namespace, "Running")["reason"] == "PodPending"
    assert _reasons("pend", namespace, "Unschedulable") >= 1
    obj = wait_phase("pend", namespace, ("Succeeded", "Failed"), timeout=120)
    assert obj["status"]["phase"] == "Succeeded", obj["status"]
    first, second = obj["status"]["attempts"]
    assert (first["pool"], first["outcome"], second["pool"]) == ("h100", "Unschedulable", "h200")
    assert "Insufficient nvidia.com/gpu" in first["message"]
    assert kube.condition(obj, "Placed")["reason"] == "PendingTimeout"
    kube.wait_for(lambda: kube.get("job", "pend-a1", namespace) is None, 90, description="a1 deleted")


def test_pending_timeout_without_a_larger_pool_fails_with_the_reason(namespace: str, op) -> None:
    _fill_h100(namespace)
    op.start()
    kube.apply(trace_manifest("stuck", resources={"pools": ["h100"], "pendingTimeout": "4s"}), namespace)
    obj = wait_phase("stuck", namespace, ("Failed",), timeout=120)
    cond = kube.condition(obj, "Failed")
    assert cond["reason"] == "Unschedulable" and "Insufficient nvidia.com/gpu" in cond["message"], cond
    kube.wait_for(lambda: jobs_of("stuck", namespace) == [], 90, description="its Job deleted")


def test_missing_volume_claim_waits_without_a_job(namespace: str, op) -> None:
    op.start()
    kube.apply(trace_manifest("pvc", storage={"volumeClaim": "influence-data"}), namespace)
    kube.wait_for(lambda: _condition("pvc", namespace, "Placed").get("reason") == "VolumeClaimMissing", 90,
                  description="VolumeClaimMissing")
    assert "influence-data" in _condition("pvc", namespace, "Placed")["message"]
    time.sleep(5)  # resyncs every 2 s: still one event, still no Job
    assert jobs_of("pvc", namespace) == []
    assert _reasons("pvc", namespace, "VolumeClaimMissing") == 1
    kube.apply({"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": "influence-data"},
                "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}},
               namespace)
    kube.wait_for(lambda: jobs_of("pvc", namespace) == ["pvc-a1"], 90, description="job once the PVC exists")


def test_run_timeout_stops_the_job(namespace: str, op) -> None:
    op.start()
    kube.apply(trace_manifest("slow", pod=HANG, resources={"pools": ["h100"], "runTimeout": "4s"}), namespace)
    job = kube.wait_for(lambda: kube.get("job", "slow-a1", namespace), 90, description="job")
    assert job["spec"]["activeDeadlineSeconds"] == 4
    obj = wait_phase("slow", namespace, ("Failed",), timeout=120)
    cond = kube.condition(obj, "Failed")
    assert cond["reason"] == "RunTimeout" and "runTimeout (4 s)" in cond["message"], cond
