"""The reconcile steps of a trace whose Jobs queue under Kueue, called from two hooks in reconcile.py.

* after a launch: the status names the queue, and the Running condition says the Job waits for Kueue;
* each pass over a queued Job: read its Workload; count Kueue's evictions (same pool, no escalation,
  counted against maxAttempts like a pod eviction); while the Job is suspended the trace waits with
  reason ``QueuedInKueue`` and Kueue's message; once admitted, the flavor is recorded.

A finished Job is left to the ordinary classification: Kueue does not change how an attempt ends.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from influence_trace.api.status import AttemptRecord, Condition, TraceStatus
from influence_trace.planning.placement import Pool

from influence_trace_operator import conditions as C
from influence_trace_operator import escalation as E
from influence_trace_operator import kueue as Q
from influence_trace_operator.api import Kube
from influence_trace_operator.classify import Finished, job_state
from influence_trace_operator.jobs import TraceRef


class Pass(Protocol):
    """What these steps use of reconcile's Pass (a Protocol: reconcile imports this module)."""

    status: TraceStatus
    ref: TraceRef

    def event(self, kind: str, reason: str, message: str) -> None: ...

    def condition(self, kind: str, value: bool, reason: str, message: str) -> None: ...


Fail = Callable[..., None]  # reconcile's Reconciler._fail(pass, reason, message, ended)


def _flavor(table: list[Pool], pool: str) -> str:
    found = next((p for p in table if p.name == pool), None)
    return Q.flavor_of(found) if found else pool


def after_launch(p: Pass, queue: str | None, table: list[Pool]) -> None:
    """Record the queue; a queued Job waits for Kueue, not for a node, until it is admitted."""
    p.status.queue = queue
    if not queue:
        return
    record = p.status.current()
    if record is None:
        return
    message = (
        f"Job {record.job} waits in Kueue LocalQueue {queue} for quota on flavor "
        f"{_flavor(table, record.pool)} (pool {record.pool})"
    )
    p.condition(C.RUNNING, False, C.QUEUED_IN_KUEUE, message)


def follow(
    kube: Kube, table: list[Pool], fail: Fail, p: Pass, record: AttemptRecord, job: dict[str, Any],
    max_attempts: int,
) -> bool:
    """One pass over a queued Job; True when the pass ends here (waiting in the queue, or Failed)."""
    if not Q.is_queued_job(job):
        return False
    try:
        state = Q.workload_state(Q.read_workload(kube.custom, p.ref.namespace, job["metadata"]["uid"]))
    except Q.WorkloadApiMissing as err:
        state = Q.WorkloadState(exists=False, message=str(err))
    if _note_evictions(kube, fail, p, record, state, max_attempts):
        return True
    if Q.is_suspended(job) and job_state(job) is None:
        _wait(p, state, job)
        return True
    _note_admission(p, state, table)  # also for a Job that finished between two passes
    return False


QUEUED_PREFIX = "queued in Kueue LocalQueue"


def _told_already(before: Condition | None) -> bool:
    """The trace already shows Kueue's own reason (not the launch note or the no-Workload-yet one)."""
    return (
        before is not None
        and before.reason == C.QUEUED_IN_KUEUE
        and before.message.startswith(QUEUED_PREFIX)
        and not before.message.endswith(Q.NO_WORKLOAD)
    )


def _wait(p: Pass, state: Q.WorkloadState, job: dict[str, Any]) -> None:
    """The Job is suspended: the trace waits, with Kueue's own words on why (one event per wait)."""
    queue = (job["metadata"].get("labels") or {}).get(Q.QUEUE_LABEL)
    message = f"{QUEUED_PREFIX} {queue}: {state.message}"
    before = C.get_condition(p.status, C.RUNNING)
    if p.status.phase == "Running":
        p.status.phase = "Pending"
    p.status.message = message
    p.condition(C.RUNNING, False, C.QUEUED_IN_KUEUE, message)
    if state.exists and not _told_already(before):
        p.event("Normal", C.QUEUED_IN_KUEUE, f"Job {job['metadata']['name']} {message}")


def _note_admission(p: Pass, state: Q.WorkloadState, table: list[Pool]) -> None:
    record = p.status.current()
    if record is None or state.flavor is None or record.flavor == state.flavor:
        return
    rec = record.model_copy(update={"flavor": state.flavor})
    p.status.attempts = [rec if r.attempt == rec.attempt else r for r in p.status.attempts]
    expected = _flavor(table, record.pool)
    note = "" if state.flavor == expected else f" (the pool's flavor is {expected}: check its nodeLabels)"
    message = f"admitted by Kueue on flavor {state.flavor}{note}; Job {record.job} waits for a node"
    if p.status.phase != "Running":
        p.status.message = message
        p.condition(C.RUNNING, False, C.ADMITTED_BY_KUEUE, message)
    p.event("Normal" if not note else "Warning", C.ADMITTED_BY_KUEUE, f"Job {record.job} {message}")


def _note_evictions(
    kube: Kube, fail: Fail, p: Pass, record: AttemptRecord, state: Q.WorkloadState, max_attempts: int
) -> bool:
    """Count Kueue's evictions of the Job's Workload; True when they used up maxAttempts (Failed)."""
    if state.evictions <= record.kueue_evictions:
        return False
    p.event(
        "Warning",
        C.EVICTED_BY_KUEUE,
        f"Kueue evicted the Workload of Job {record.job} on pool {record.pool} ({state.eviction}); it is "
        "requeued on the same pool (no escalation)",
    )
    updated = record.model_copy(update={"kueue_evictions": state.evictions, "flavor": None})
    p.status.attempts = [updated if r.attempt == updated.attempt else r for r in p.status.attempts]
    evictions = f"{state.evictions} Kueue eviction(s) on pool {record.pool}"
    p.condition(C.RUNNING, False, C.EVICTED_BY_KUEUE, evictions)
    if p.status.phase == "Running":
        p.status.phase = "Pending"
    stop = E.evictions_exhausted(p.status, max_attempts)
    if stop is None:
        return False
    ended = Finished(outcome="Evicted", reason=C.EVICTED_BY_KUEUE, message=stop.message)
    fail(p, stop.reason, stop.message, ended)
    return True  # fail() deletes the Job


def after_eviction_kill(
    status: TraceStatus, done: Finished, record: AttemptRecord, pools: list[Pool], max_attempts: int
) -> E.Decision | None:
    """A queued Job that failed with exit 137 but not ``OOMKilled`` after Kueue evicted it: suspending
    the Job deleted its pod, and the kill (SIGKILL, which the Job's FailJob rule matches) failed the
    Job. That is the eviction, not the worker: relaunch on the same pool with the same host memory."""
    if record.kueue_evictions == 0 or done.outcome != "KernelOOMKilled" or done.reason == "OOMKilled":
        return None
    pool = next((x for x in pools if x.name == record.pool), None)
    if pool is None:
        return None
    decision = E.Decision(
        "launch",
        C.JOB_CREATED,
        f"the worker of Job {record.job} was killed when Kueue evicted it; relaunching on pool {pool.name} "
        "with the same host memory (no escalation)",
        E.placement_on(pool, record.attempt + 1, record.host_memory_bytes),
    )
    return E.relaunch_within(status, max_attempts, decision)
