"""Kueue: how a queued Job is built and how a Workload's status is read (pure)."""

from __future__ import annotations

import json
from types import SimpleNamespace
from typing import Any

import pytest
from influence_trace.api.status import AttemptRecord, TraceStatus
from influence_trace_operator.adapters import kueue
from influence_trace_operator.reconciler.reconcile import Reconciler
from influence_trace_operator.rules.jobs import build_job
from influence_trace_operator.rules.policies import evictions_exhausted, launches_used, placement_on
from influence_trace_operator.rules.settings import OperatorSettings
from kubernetes.client.rest import ApiException

from tests.operator.fake_kube import FakeKube
from tests.operator.operator_builders import H100, H200, REF, pod, trace, trace_dict
from tests.operator.test_jobs import _job


def _workload(*conditions: dict[str, Any], flavor: str | None = None, evictions: int = 0) -> dict:
    status: dict[str, Any] = {"conditions": list(conditions)}
    if flavor:
        status["admission"] = {
            "clusterQueue": "cq",
            "podSetAssignments": [
                {"name": "main", "count": 1,
                 "flavors": {"cpu": flavor, "memory": flavor, "nvidia.com/gpu": flavor}}
            ],
        }
    if evictions:
        status["schedulingStats"] = {
            "evictions": [{"reason": "Preempted", "underlyingCause": "InClusterQueue", "count": evictions}]
        }
    return {"metadata": {"name": "job-demo-a1-abcde", "creationTimestamp": "2026-11-26T13:00:00Z"},
            "status": status}


def _cond(kind: str, status: str, reason: str, message: str) -> dict[str, str]:
    return {"type": kind, "status": status, "reason": reason, "message": message}


PENDING = _cond("QuotaReserved", "False", "Pending",
                "couldn't assign flavors to pod set main: insufficient unused quota for nvidia.com/gpu in "
                "flavor h100, 1 more needed")


def test_queue_comes_from_the_spec_then_the_operator_default() -> None:
    settings = OperatorSettings(default_queue="team-q")
    assert kueue.queue_of(trace(queue="mine"), settings) == "mine"
    assert kueue.queue_of(trace(), settings) == "team-q"
    assert kueue.queue_of(trace(), OperatorSettings()) is None


def test_a_queued_job_is_suspended_and_labelled_and_otherwise_the_same() -> None:
    job = _job()
    queued = kueue.queue_job(job, "lq")
    assert queued["spec"]["suspend"] is True
    assert queued["metadata"]["labels"] == {**job["metadata"]["labels"], kueue.QUEUE_LABEL: "lq"}
    assert {k: v for k, v in queued["spec"].items() if k != "suspend"} == job["spec"]
    assert "suspend" not in job["spec"] and kueue.QUEUE_LABEL not in job["metadata"]["labels"]  # not mutated
    assert kueue.queue_job(job, None) is job
    assert kueue.is_queued_job(queued) and not kueue.is_queued_job(job)


def test_job_selector_is_the_pool_so_kueue_can_only_pick_its_flavor() -> None:
    job = build_job(trace(), REF, placement_on(H100, 1, 2**34), OperatorSettings())
    assert job["spec"]["template"]["spec"]["nodeSelector"] == {"influencetrace.dev/pool": "h100"}
    assert kueue.flavor_of(H100) == "h100"
    assert kueue.flavor_of(H100.model_copy(update={"kueue_flavor": "gpu-h100"})) == "gpu-h100"


def test_no_workload_yet() -> None:
    state = kueue.workload_state(None)
    assert not state.exists and not state.admitted and "create" in state.message


def test_pending_workload_carries_kueues_message() -> None:
    state = kueue.workload_state(_workload(PENDING))
    assert state.exists and not state.admitted and state.flavor is None and state.evictions == 0
    assert state.message == PENDING["message"]


def test_admitted_workload_names_the_gpu_flavor() -> None:
    state = kueue.workload_state(_workload(
        _cond("QuotaReserved", "True", "QuotaReserved", "Quota reserved in ClusterQueue cq"),
        _cond("Admitted", "True", "Admitted", "The workload is admitted"),
        flavor="h200",
    ))
    assert state.admitted and state.flavor == "h200"


def test_evictions_are_summed_over_reasons_and_described() -> None:
    wl = _workload(
        _cond("Evicted", "True", "Preempted", "Preempted to accommodate a workload (UID: x)"),
        PENDING, evictions=2,
    )
    wl["status"]["schedulingStats"]["evictions"].append(
        {"reason": "InactiveWorkload", "underlyingCause": "", "count": 1}
    )
    state = kueue.workload_state(wl)
    assert state.evictions == 3 and not state.admitted
    assert state.eviction.startswith("Preempted: Preempted to accommodate")
    assert state.message.startswith("evicted by Kueue (Preempted)")


def test_newest_workload_wins_and_deleted_ones_do_not_count() -> None:
    old, new, gone = _workload(), _workload(), _workload()
    new["metadata"]["creationTimestamp"] = "2026-11-26T13:05:00Z"
    gone["metadata"].update(creationTimestamp="2026-11-26T13:09:00Z", deletionTimestamp="2026-11-26T13:10Z")
    assert kueue.newest([old, gone, new]) is new
    assert kueue.newest([gone]) is None


def test_kueue_evictions_count_against_max_attempts() -> None:
    record = AttemptRecord(attempt=1, pool="h100", job="demo-a1", evictions=1, kueue_evictions=2)
    status = TraceStatus(attempt=1, pool="h100", attempts=[record])
    assert launches_used(status) == 4
    assert evictions_exhausted(status, 4) is None
    stop = evictions_exhausted(status, 3)
    assert stop is not None and stop.reason == "AttemptsExhausted"


# ---- the Reconciler with a queue, against the in-memory Kube and Workloads as Kueue writes them ----

NS, NAME = "team-a", "demo"


class FakeWorkloads:
    """``CustomObjectsApi.list_namespaced_custom_object`` for Workloads, by the job-uid label."""

    def __init__(self) -> None:
        self.by_job_uid: dict[str, dict[str, Any]] = {}
        self.installed = True

    def list_namespaced_custom_object(self, group: str, version: str, namespace: str, plural: str,
                                      label_selector: str = "", **_: Any) -> SimpleNamespace:
        if not self.installed:
            raise ApiException(status=404, reason="Not Found")
        assert (group, version, plural) == (kueue.GROUP, kueue.VERSION, kueue.WORKLOADS)
        uid = label_selector.removeprefix(f"{kueue.JOB_UID_LABEL}=")
        found = self.by_job_uid.get(uid)
        return SimpleNamespace(data=json.dumps({"items": [found] if found else []}))


@pytest.fixture()
def kube() -> FakeKube:
    fake = FakeKube()
    fake.add_trace(trace_dict(queue="lq"))
    fake.custom = FakeWorkloads()
    return fake


@pytest.fixture()
def reconciler(kube: FakeKube) -> Reconciler:
    return Reconciler(kube, OperatorSettings(), [H100, H200])


def _running(kube: FakeKube) -> dict[str, Any]:
    return next(c for c in kube.status_of(NS, NAME)["conditions"] if c["type"] == "Running")


def _kueue_sets(kube: FakeKube, job: str, workload: dict[str, Any], suspend: bool) -> None:
    kube.jobs[(NS, job)]["spec"]["suspend"] = suspend
    kube.custom.by_job_uid[kube.jobs[(NS, job)]["metadata"]["uid"]] = workload


ADMITTED = (_cond("QuotaReserved", "True", "QuotaReserved", "Quota reserved in ClusterQueue cq"),
            _cond("Admitted", "True", "Admitted", "The workload is admitted"))


def test_queued_launch_is_suspended_and_waits_for_kueue(kube: FakeKube, reconciler: Reconciler) -> None:
    reconciler.reconcile(NS, NAME)
    job = kube.jobs[(NS, "demo-a1")]
    assert job["spec"]["suspend"] is True and job["metadata"]["labels"][kueue.QUEUE_LABEL] == "lq"
    status = kube.status_of(NS, NAME)
    assert (status["phase"], status["queue"]) == ("Pending", "lq")
    assert _running(kube)["reason"] == "QueuedInKueue" and "flavor h100" in _running(kube)["message"]

    reconciler.reconcile(NS, NAME)  # no Workload yet
    assert "waiting for Kueue to create" in _running(kube)["message"]
    _kueue_sets(kube, "demo-a1", _workload(PENDING), suspend=True)
    reconciler.reconcile(NS, NAME)
    reconciler.reconcile(NS, NAME)
    status = kube.status_of(NS, NAME)
    assert status["message"] == f"queued in Kueue LocalQueue lq: {PENDING['message']}"
    assert _running(kube)["message"] == status["message"] and status["attempt"] == 1
    assert [r for _, r, _ in kube.events].count("QueuedInKueue") == 1


def test_admission_records_the_flavor_then_the_pod_runs(kube: FakeKube, reconciler: Reconciler) -> None:
    reconciler.reconcile(NS, NAME)
    _kueue_sets(kube, "demo-a1", _workload(*ADMITTED, flavor="h100"), suspend=False)
    reconciler.reconcile(NS, NAME)
    status = kube.status_of(NS, NAME)
    assert status["attempts"][0]["flavor"] == "h100"
    assert _running(kube)["reason"] == "AdmittedByKueue"
    assert ("Normal", "AdmittedByKueue") in [(k, r) for k, r, _ in kube.events]
    kube.pods[(NS, "demo-a1")] = [pod("Running")]
    reconciler.reconcile(NS, NAME)
    assert kube.status_of(NS, NAME)["phase"] == "Running"


def test_kueue_eviction_requeues_on_the_same_pool_and_counts(kube: FakeKube, reconciler: Reconciler) -> None:
    reconciler.reconcile(NS, NAME)
    _kueue_sets(kube, "demo-a1", _workload(*ADMITTED, flavor="h100"), suspend=False)
    kube.pods[(NS, "demo-a1")] = [pod("Running")]
    reconciler.reconcile(NS, NAME)
    evicted = _cond("Evicted", "True", "Preempted", "Preempted to accommodate a workload (UID: x)")
    _kueue_sets(kube, "demo-a1", _workload(evicted, PENDING, evictions=1), suspend=True)
    kube.pods[(NS, "demo-a1")] = []
    reconciler.reconcile(NS, NAME)
    status = kube.status_of(NS, NAME)
    assert (status["phase"], status["pool"], status["attempt"]) == ("Pending", "h100", 1)
    assert status["attempts"][0]["kueueEvictions"] == 1 and "flavor" not in status["attempts"][0]
    assert list(kube.jobs) == [(NS, "demo-a1")]
    assert _running(kube)["reason"] == "QueuedInKueue"
    (message,) = [m for _, r, m in kube.events if r == "EvictedByKueue"]
    assert "Preempted" in message and "same pool" in message


def test_kueue_evictions_use_up_max_attempts(kube: FakeKube, reconciler: Reconciler) -> None:
    kube.add_trace(trace_dict(queue="lq", resources={"pools": ["h100", "h200"], "maxAttempts": 2}))
    reconciler.reconcile(NS, NAME)
    evicted = _cond("Evicted", "True", "Preempted", "Preempted")
    _kueue_sets(kube, "demo-a1", _workload(evicted, PENDING, evictions=2), suspend=True)
    reconciler.reconcile(NS, NAME)
    status = kube.status_of(NS, NAME)
    assert status["phase"] == "Failed" and not kube.jobs
    assert next(c for c in status["conditions"] if c["type"] == "Failed")["reason"] == "AttemptsExhausted"


def test_queue_without_kueue_installed_says_so(kube: FakeKube, reconciler: Reconciler) -> None:
    kube.custom.installed = False
    reconciler.reconcile(NS, NAME)
    reconciler.reconcile(NS, NAME)
    status = kube.status_of(NS, NAME)
    assert status["phase"] == "Pending" and "not installed" in status["message"]
    assert kube.jobs[(NS, "demo-a1")]["spec"]["suspend"] is True


def test_a_sigkill_at_kueue_eviction_relaunches_like_an_eviction() -> None:
    from influence_trace_operator.rules.classify import Finished
    from influence_trace_operator.rules.policies import after_eviction_kill

    record = AttemptRecord(attempt=1, pool="h100", job="demo-a1", host_memory_bytes=2**34, kueue_evictions=1)
    status = TraceStatus(attempt=1, pool="h100", attempts=[record])
    killed = Finished(outcome="KernelOOMKilled", exit_code=137, reason="PodFailurePolicy")
    decision = after_eviction_kill(status, killed, record, [H100, H200], 3)
    assert decision is not None and decision.action == "launch" and decision.placement is not None
    assert (decision.placement.pool, decision.placement.attempt) == ("h100", 2)
    assert decision.placement.host_memory_bytes == 2**34
    oom = Finished(outcome="KernelOOMKilled", exit_code=137, reason="OOMKilled")
    assert after_eviction_kill(status, oom, record, [H100, H200], 3) is None  # the kernel's: escalate
    never = record.model_copy(update={"kueue_evictions": 0})
    assert after_eviction_kill(status, killed, never, [H100, H200], 3) is None
    exhausted = after_eviction_kill(status, killed, record, [H100, H200], 1)
    assert exhausted is not None and exhausted.action == "fail"
