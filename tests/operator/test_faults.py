"""Faults the real API server will not produce on demand (a 500, a ConfigMap of a deleted namesake
with an old manifest), against the in-memory Kube; and the pure pending/timeout rules. The faults the
API does produce (quota 403, 422, foreign Job, no node, missing PVC, deadline) run against the real
control plane in tests/cluster/test_operator_faults.py."""

from __future__ import annotations

import json

import pytest
from influence_trace.api.status import AttemptRecord, TraceStatus
from influence_trace_operator.reconciler.reconcile import Reconciler
from influence_trace_operator.rules import pending, policies
from influence_trace_operator.rules.children import SPEC_HASH, content_hash
from influence_trace_operator.rules.labels import CANCEL as CANCEL_ANNOTATION
from influence_trace_operator.rules.settings import OperatorSettings
from influence_trace_operator.runtime import on_trace
from kubernetes.client.rest import ApiException

from tests.operator.fake_kube import FakeKube
from tests.operator.operator_builders import H100, H200

NS, NAME = "team-a", "demo"


@pytest.fixture()
def reconciler(kube: FakeKube) -> Reconciler:
    settings = OperatorSettings(api_backoff_seconds=1000, api_backoff_max_seconds=4000)
    return Reconciler(kube, settings, [H100, H200])


def refused(status: int, message: str) -> ApiException:
    err = ApiException(status=status, reason="Refused")
    err.body = json.dumps({"kind": "Status", "message": message})
    return err


def condition(kube: FakeKube, kind: str) -> dict:
    return next(c for c in kube.status_of(NS, NAME)["conditions"] if c["type"] == kind)


def test_a_server_error_is_told_once_and_backed_off(kube: FakeKube, reconciler: Reconciler) -> None:
    kube.errors_to_inject = [refused(500, "etcd leader changed")]
    reconciler.reconcile(NS, NAME)
    placed = condition(kube, "Placed")
    assert (placed["status"], placed["reason"]) == ("False", "APIError")
    assert "HTTP 500: etcd leader changed" in placed["message"] and "failure 1;" in placed["message"]
    assert kube.jobs == {} and [e[1] for e in kube.events] == ["APIError"]
    writes = kube.status_writes
    reconciler.reconcile(NS, NAME)  # an event during the backoff: skipped
    assert kube.status_writes == writes
    assert reconciler.retries.delay(1) == 1000 and reconciler.retries.delay(3) == 4000  # 2^n, capped
    reconciler.retries._due.clear()  # the backoff ran out
    kube.errors_to_inject = [refused(500, "etcd leader changed")]
    reconciler.reconcile(NS, NAME)
    assert "failure 2;" in condition(kube, "Placed")["message"]
    assert [e[1] for e in kube.events] == ["APIError"]  # still one event
    reconciler.retries._due.clear()
    reconciler.reconcile(NS, NAME)
    assert list(kube.jobs) == [(NS, "demo-a1")] and condition(kube, "Placed")["reason"] == "JobCreated"
    assert reconciler.retries.failures((NS, NAME)) == 0
    for timer in list(reconciler.retries._timers.values()):
        timer.cancel()


def test_an_invalid_object_fails_the_trace(kube: FakeKube, reconciler: Reconciler) -> None:
    kube.errors_to_inject = [refused(422, 'Job.batch "demo-a1" is invalid: spec.template.labels')]
    reconciler.reconcile(NS, NAME)
    status = kube.status_of(NS, NAME)
    assert status["phase"] == "Failed" and condition(kube, "Failed")["reason"] == "APIRejected"
    assert "HTTP 422" in status["message"] and kube.jobs == {}


def test_an_old_manifest_of_a_deleted_namesake_is_replaced(kube: FakeKube, reconciler: Reconciler) -> None:
    kube.configmaps[(NS, "demo-manifest")] = {
        "kind": "ConfigMap",
        "metadata": {"name": "demo-manifest", "namespace": NS, "resourceVersion": "1",
                     "annotations": {SPEC_HASH: "old"},
                     "ownerReferences": [{"kind": "InfluenceTrace", "name": NAME, "uid": "old-uid"}]},
        "data": {"trace.yaml": "the old spec"},
    }
    reconciler.reconcile(NS, NAME)
    cm = kube.configmaps[(NS, "demo-manifest")]
    assert kube.replaced == 1 and "the old spec" not in cm["data"]["trace.yaml"]
    assert cm["metadata"]["ownerReferences"][0]["uid"] == kube.traces[(NS, NAME)]["metadata"]["uid"]
    assert cm["metadata"]["annotations"][SPEC_HASH] == content_hash(cm)
    assert list(kube.jobs) == [(NS, "demo-a1")]


def test_a_foreign_configmap_stops_the_trace(kube: FakeKube, reconciler: Reconciler) -> None:
    kube.configmaps[(NS, "demo-manifest")] = {
        "kind": "ConfigMap", "metadata": {"name": "demo-manifest", "namespace": NS}, "data": {"x": "y"}}
    reconciler.reconcile(NS, NAME)
    assert condition(kube, "Failed")["reason"] == "ChildConflict"
    assert kube.configmaps[(NS, "demo-manifest")]["data"] == {"x": "y"} and kube.jobs == {}


def test_a_missing_claim_waits_without_a_job(kube: FakeKube, reconciler: Reconciler) -> None:
    kube.missing_claims.add((NS, "influence-data"))
    reconciler.reconcile(NS, NAME)
    reconciler.reconcile(NS, NAME)
    assert condition(kube, "Placed")["reason"] == "VolumeClaimMissing" and kube.jobs == {}
    assert [e[1] for e in kube.events] == ["VolumeClaimMissing"]
    kube.missing_claims.clear()
    reconciler.reconcile(NS, NAME)
    assert list(kube.jobs) == [(NS, "demo-a1")]


def test_cancel_annotation_deletes_the_running_job(kube: FakeKube, reconciler: Reconciler) -> None:
    reconciler.reconcile(NS, NAME)
    on_trace.on_trace_event(reconciler, "MODIFIED", kube.annotate(NS, NAME, CANCEL_ANNOTATION, "true"))
    status = kube.status_of(NS, NAME)
    assert status["phase"] == "Failed" and condition(kube, "Failed")["reason"] == "Cancelled"
    assert kube.jobs == {} and status["attempts"][0]["outcome"] == "Cancelled"


# ---- pure: the scheduler's reason and the pending timeout ----------------------------------------
def pending_pod(message: str) -> dict:
    return {"metadata": {"name": "demo-a1-x"}, "status": {"phase": "Pending", "conditions": [
        {"type": "PodScheduled", "status": "False", "reason": "Unschedulable", "message": message}]}}


def waiting(started: str) -> TraceStatus:
    record = AttemptRecord(attempt=1, pool="h100", job="demo-a1", host_memory_bytes=2**32, started_at=started)
    return TraceStatus(phase="Pending", pool="h100", attempt=1, attempts=[record])


def test_timeout_counts_from_the_job_and_keeps_the_schedulers_words() -> None:
    pods = [pending_pod("0/5 nodes are available: 2 Insufficient nvidia.com/gpu.")]
    status = waiting("2026-01-01T00:00:00Z")
    assert pending.timed_out(status, pods, 600, "2026-01-01T00:09:59Z") is None
    done = pending.timed_out(status, pods, 600, "2026-01-01T00:10:00Z")
    assert done is not None and done.outcome == "Unschedulable"
    assert "pod demo-a1-x: 0/5 nodes are available: 2 Insufficient nvidia.com/gpu." in done.message
    running = [{"metadata": {"name": "p"}, "status": {"phase": "Running"}}]
    assert pending.timed_out(status, running, 600, "2026-01-01T05:00:00Z") is None


def test_capacity_moves_to_a_larger_pool_anything_else_fails() -> None:
    status = waiting("2026-01-01T00:00:00Z")
    capacity = pending.timed_out(status, [pending_pod("0/5 nodes: 2 Insufficient nvidia.com/gpu")], 1,
                           "2026-01-01T01:00:00Z")
    decision = policies.after_unschedulable(status, capacity, [H100, H200], 3)
    assert decision.action == "launch" and decision.placement.pool == "h200"
    assert decision.placement.attempt == 2
    assert policies.after_unschedulable(status, capacity, [H100], 3).action == "fail"
    claim = pending.timed_out(status, [pending_pod('persistentvolumeclaim "data" not found')], 1,
                        "2026-01-01T01:00:00Z")
    decision = policies.after_unschedulable(status, claim, [H100, H200], 3)
    assert decision.action == "fail" and 'persistentvolumeclaim "data" not found' in decision.message
