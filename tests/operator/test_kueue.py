"""Kueue: how a queued Job is built and how a Workload's status is read (pure)."""

from __future__ import annotations

from typing import Any

from influence_trace.api.status import AttemptRecord, TraceStatus
from influence_trace_operator import kueue as Q
from influence_trace_operator.escalation import evictions_exhausted, launches_used, placement_on
from influence_trace_operator.jobs import build_job
from influence_trace_operator.settings import OperatorSettings

from tests.operator.operator_builders import H100, REF, trace
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
    assert Q.queue_of(trace(queue="mine"), settings) == "mine"
    assert Q.queue_of(trace(), settings) == "team-q"
    assert Q.queue_of(trace(), OperatorSettings()) is None


def test_a_queued_job_is_suspended_and_labelled_and_otherwise_the_same() -> None:
    job = _job()
    queued = Q.queue_job(job, "lq")
    assert queued["spec"]["suspend"] is True
    assert queued["metadata"]["labels"] == {**job["metadata"]["labels"], Q.QUEUE_LABEL: "lq"}
    assert {k: v for k, v in queued["spec"].items() if k != "suspend"} == job["spec"]
    assert "suspend" not in job["spec"] and Q.QUEUE_LABEL not in job["metadata"]["labels"]  # not mutated
    assert Q.queue_job(job, None) is job
    assert Q.is_queued_job(queued) and not Q.is_queued_job(job)


def test_job_selector_is_the_pool_so_kueue_can_only_pick_its_flavor() -> None:
    job = build_job(trace(), REF, placement_on(H100, 1, 2**34), OperatorSettings())
    assert job["spec"]["template"]["spec"]["nodeSelector"] == {"influencetrace.dev/pool": "h100"}
    assert Q.flavor_of(H100) == "h100"
    assert Q.flavor_of(H100.model_copy(update={"kueue_flavor": "gpu-h100"})) == "gpu-h100"


def test_no_workload_yet() -> None:
    state = Q.workload_state(None)
    assert not state.exists and not state.admitted and "create" in state.message


def test_pending_workload_carries_kueues_message() -> None:
    state = Q.workload_state(_workload(PENDING))
    assert state.exists and not state.admitted and state.flavor is None and state.evictions == 0
    assert state.message == PENDING["message"]


def test_admitted_workload_names_the_gpu_flavor() -> None:
    state = Q.workload_state(_workload(
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
    state = Q.workload_state(wl)
    assert state.evictions == 3 and not state.admitted
    assert state.eviction.startswith("Preempted: Preempted to accommodate")
    assert state.message.startswith("evicted by Kueue (Preempted)")


def test_newest_workload_wins_and_deleted_ones_do_not_count() -> None:
    old, new, gone = _workload(), _workload(), _workload()
    new["metadata"]["creationTimestamp"] = "2026-11-26T13:05:00Z"
    gone["metadata"].update(creationTimestamp="2026-11-26T13:09:00Z", deletionTimestamp="2026-11-26T13:10Z")
    assert Q.newest([old, gone, new]) is new
    assert Q.newest([gone]) is None


def test_kueue_evictions_count_against_max_attempts() -> None:
    record = AttemptRecord(attempt=1, pool="h100", job="demo-a1", evictions=1, kueue_evictions=2)
    status = TraceStatus(attempt=1, pool="h100", attempts=[record])
    assert launches_used(status) == 4
    assert evictions_exhausted(status, 4) is None
    stop = evictions_exhausted(status, 3)
    assert stop is not None and stop.reason == "AttemptsExhausted"
