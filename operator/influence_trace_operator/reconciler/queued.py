"""The reconcile steps of a trace whose Jobs queue under Kueue, called from two places in reconcile.py.

* after a launch: the status names the queue, and the Running condition says the Job waits for Kueue;
* each pass over a queued Job: read its Workload; count Kueue's evictions (same pool, no escalation,
  counted against maxAttempts like a pod eviction); while the Job is suspended the trace waits with
  reason ``QueuedInKueue`` and Kueue's message; once admitted, the flavor is recorded.

A finished Job is left to the ordinary classification: Kueue does not change how an attempt ends.
"""

from __future__ import annotations

from typing import Any

from influence_trace.api.status import AttemptRecord, Condition
from influence_trace.planning.placement import Pool

from influence_trace_operator.adapters import kueue
from influence_trace_operator.adapters.kube import KubeClient
from influence_trace_operator.reconciler.passes import Pass
from influence_trace_operator.rules import conditions, policies
from influence_trace_operator.rules.classify import job_state
from influence_trace_operator.rules.policies import Decision

GO_ON = "go on"  # follow's verdicts besides a Decision to fail
WAIT = "wait"


def _flavor(table: list[Pool], pool: str) -> str:
    found = next((p for p in table if p.name == pool), None)
    return kueue.flavor_of(found) if found else pool


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
    p.condition(conditions.RUNNING, False, conditions.QUEUED_IN_KUEUE, message)


def follow(
    kube: KubeClient, table: list[Pool], p: Pass, record: AttemptRecord, job: dict[str, Any],
    max_attempts: int,
) -> str | Decision:
    """One pass over a queued Job: GO_ON (not queued, or admitted), WAIT (suspended in the queue), or
    the Decision to fail the trace (Kueue's evictions used up maxAttempts)."""
    if not kueue.is_queued_job(job):
        return GO_ON
    try:
        workload = kueue.read_workload(kube.custom, p.ref.namespace, job["metadata"]["uid"])
        state = kueue.workload_state(workload)
    except kueue.WorkloadApiMissing as err:
        state = kueue.WorkloadState(exists=False, message=str(err))
    stop = _note_evictions(p, record, state, max_attempts)
    if stop is not None:
        return stop
    if kueue.is_suspended(job) and job_state(job) is None:
        _wait(p, state, job)
        return WAIT
    _note_admission(p, state, table)  # also for a Job that finished between two passes
    return GO_ON


QUEUED_PREFIX = "queued in Kueue LocalQueue"


def _told_already(before: Condition | None) -> bool:
    """The trace already shows Kueue's own reason (not the launch note or the no-Workload-yet one)."""
    return (
        before is not None
        and before.reason == conditions.QUEUED_IN_KUEUE
        and before.message.startswith(QUEUED_PREFIX)
        and not before.message.endswith(kueue.NO_WORKLOAD)
    )


def _wait(p: Pass, state: kueue.WorkloadState, job: dict[str, Any]) -> None:
    """The Job is suspended: the trace waits, with Kueue's own words on why (one event per wait)."""
    queue = (job["metadata"].get("labels") or {}).get(kueue.QUEUE_LABEL)
    message = f"{QUEUED_PREFIX} {queue}: {state.message}"
    before = conditions.get_condition(p.status, conditions.RUNNING)
    if p.status.phase == "Running":
        p.status.phase = "Pending"
    p.status.message = message
    p.condition(conditions.RUNNING, False, conditions.QUEUED_IN_KUEUE, message)
    if state.exists and not _told_already(before):
        p.event("Normal", conditions.QUEUED_IN_KUEUE, f"Job {job['metadata']['name']} {message}")


def _note_admission(p: Pass, state: kueue.WorkloadState, table: list[Pool]) -> None:
    record = p.status.current()
    if record is None or state.flavor is None or record.flavor == state.flavor:
        return
    p.replace_record(record.model_copy(update={"flavor": state.flavor}))
    expected = _flavor(table, record.pool)
    note = "" if state.flavor == expected else f" (the pool's flavor is {expected}: check its nodeLabels)"
    message = f"admitted by Kueue on flavor {state.flavor}{note}; Job {record.job} waits for a node"
    if p.status.phase != "Running":
        p.status.message = message
        p.condition(conditions.RUNNING, False, conditions.ADMITTED_BY_KUEUE, message)
    p.event("Normal" if not note else "Warning", conditions.ADMITTED_BY_KUEUE, f"Job {record.job} {message}")


def _note_evictions(
    p: Pass, record: AttemptRecord, state: kueue.WorkloadState, max_attempts: int
) -> Decision | None:
    """Count Kueue's evictions of the Job's Workload; the decision to fail when they used up maxAttempts."""
    if state.evictions <= record.kueue_evictions:
        return None
    p.event(
        "Warning",
        conditions.EVICTED_BY_KUEUE,
        f"Kueue evicted the Workload of Job {record.job} on pool {record.pool} ({state.eviction}); it is "
        "requeued on the same pool (no escalation)",
    )
    p.replace_record(record.model_copy(update={"kueue_evictions": state.evictions, "flavor": None}))
    evictions = f"{state.evictions} Kueue eviction(s) on pool {record.pool}"
    p.condition(conditions.RUNNING, False, conditions.EVICTED_BY_KUEUE, evictions)
    if p.status.phase == "Running":
        p.status.phase = "Pending"
    return policies.evictions_exhausted(p.status, max_attempts)

