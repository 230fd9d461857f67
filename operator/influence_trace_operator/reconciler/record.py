"""What a pass writes into the trace's status and events, one function per kind of news.

No API calls here: the reconciler reads, decides (rules.policies), calls these to record, acts
(creates or deletes Jobs) and writes the status once.
"""

from __future__ import annotations

from typing import Any

from influence_trace.api.status import AttemptRecord
from influence_trace.api.units import gb

from influence_trace_operator.adapters import progress_reader
from influence_trace_operator.adapters.faults import ApiFault
from influence_trace_operator.reconciler.passes import Pass
from influence_trace_operator.rules import classify, conditions, pending, policies
from influence_trace_operator.rules.classify import Finished
from influence_trace_operator.rules.jobs import JobPlacement
from influence_trace_operator.rules.policies import Decision


def outcome(p: Pass, record: AttemptRecord, done: Finished) -> None:
    """The attempt's record with how it ended."""
    peak = done.payload.get("peakGpuBytes")
    p.replace_record(record.model_copy(update={
        "running_at": done.started_at,
        "finished_at": done.finished_at or p.now,
        "outcome": done.outcome,
        "exit_code": done.exit_code,
        "reason": done.reason,
        "stage": done.stage,
        "message": done.message or None,
        "peak_gpu_bytes": peak if isinstance(peak, int) and peak >= 0 else None,
    }))
    p.condition(conditions.RUNNING, False, conditions.ATTEMPT_FINISHED,
                f"attempt {record.attempt} ended: {done.outcome}")


def failed(p: Pass, reason: str, message: str, ended: Finished | None = None) -> str | None:
    """The trace as Failed; returns the running attempt's Job, which the caller deletes (no GPU stays
    held by a finished trace), its outcome ``ended`` or else Cancelled because the trace failed."""
    record = p.status.current()
    job = None
    if record is not None and record.outcome == "Running":
        job = record.job
        outcome(p, record, ended or Finished(
            outcome="Cancelled", reason=reason, message=f"stopped: the trace failed ({reason})"))
    p.status.phase = "Failed"
    p.status.message = message
    if reason in (conditions.INVALID_SPEC, conditions.INFEASIBLE):
        p.condition(conditions.PLACED, False, reason, message)
    p.condition(conditions.FAILED, True, reason, message)
    p.event("Warning", reason, message)
    return job


def succeeded(p: Pass, done: Finished, decision: Decision) -> None:
    """The trace as Succeeded, with the worker's headline figures."""
    result = policies.result_of(done)
    if done.pod is None:
        p.event("Warning", conditions.NO_RESULT,
                "the Job completed but no pod is left to read its result from")
    p.status.result = result
    took = progress_reader.finish(p.status)
    p.status.phase = "Succeeded"
    p.status.message = decision.message
    p.condition(conditions.SUCCEEDED, True, conditions.WORKER_SUCCEEDED, decision.message)
    p.event("Normal", "Succeeded",
            f"{decision.message}: {result.rows_emitted} rows in {result.output_path or 'the output path'}"
            + (f"; {took}" if took else ""))


def launched(p: Pass, placement: JobPlacement, decision: Decision, job: str, created: bool,
             relaunch: bool) -> None:
    """A new attempt whose Job exists: its record, phase, conditions and event."""
    p.status.attempts.append(AttemptRecord(attempt=placement.attempt, pool=placement.pool, job=job,
                                           host_memory_bytes=placement.host_memory_bytes, started_at=p.now))
    p.status.attempt, p.status.pool = placement.attempt, placement.pool
    progress_reader.restart(p.status)  # the new attempt starts from the beginning
    p.status.phase = "Escalating" if relaunch else "Pending"
    p.status.message = decision.message
    p.condition(conditions.PLACED, True, decision.reason, f"attempt {placement.attempt}: {decision.message}")
    p.condition(conditions.RUNNING, False, conditions.POD_PENDING,
                f"Job {job} waits for a node in pool {placement.pool}")
    verb = "Created" if created else "Adopted existing"
    p.event("Normal", "JobCreated" if created else "JobAdopted",
            f"{verb} Job {job} on pool {placement.pool} (attempt {placement.attempt}, "
            f"{gb(placement.host_memory_bytes)} host memory)")


def waiting_for_claim(p: Pass, claim: str) -> None:
    """No Job until the PVC exists: the scheduler would only say so on a pod that holds a GPU slot."""
    message = (f"PersistentVolumeClaim {claim} (spec.storage.volumeClaim) does not exist in namespace "
               f"{p.ref.namespace}; waiting for it")
    old = conditions.get_condition(p.status, conditions.PLACED)
    if old is None or old.reason != conditions.VOLUME_CLAIM_MISSING:
        p.event("Warning", conditions.VOLUME_CLAIM_MISSING, message)
    p.condition(conditions.PLACED, False, conditions.VOLUME_CLAIM_MISSING, message)
    p.status.phase = p.status.phase or "Pending"
    p.status.message = message


def evictions(p: Pass, record: AttemptRecord, pods: list[dict[str, Any]],
              max_attempts: int) -> Decision | None:
    """Count evicted pods (one event each); the decision to fail when they used up maxAttempts."""
    evicted = classify.evictions(pods)
    if len(evicted) <= record.evictions:
        return None
    for pod in evicted[record.evictions:]:
        why = (pod.get("status") or {}).get("message") or "evicted"
        p.event("Warning", "PodEvicted",
                f"Pod {pod['metadata']['name']} was evicted on pool {record.pool} ({why}); the Job "
                "relaunches it on the same pool (no escalation spent)")
    p.replace_record(record.model_copy(update={"evictions": len(evicted)}))
    p.condition(conditions.RUNNING, False, conditions.POD_EVICTED,
                f"{len(evicted)} eviction(s) on pool {record.pool}")
    return policies.evictions_exhausted(p.status, max_attempts)


def progress(p: Pass, pods: list[dict[str, Any]]) -> None:
    """Running once a pod runs (one event when it starts), else the scheduler's reason for the wait."""
    running = [pod for pod in pods if classify.is_running(pod)]
    if not running:
        _pending(p, pods)
        return
    pod = running[0]
    node = (pod.get("spec") or {}).get("nodeName") or "?"
    if p.status.phase != "Running":
        p.event("Normal", "Running", f"Pod {pod['metadata']['name']} runs on node {node} "
                f"(pool {p.status.pool}, attempt {p.status.attempt})")
    p.status.phase = "Running"
    p.status.message = f"attempt {p.status.attempt} running on pool {p.status.pool}"
    p.condition(conditions.RUNNING, True, conditions.POD_RUNNING,
                f"pod {pod['metadata']['name']} on node {node}")


def _pending(p: Pass, pods: list[dict[str, Any]]) -> None:
    """The scheduler's reason in the Running condition, and one Warning event when it changes."""
    why = pending.scheduler_reason(pods)
    if why is None:
        return
    old = conditions.get_condition(p.status, conditions.RUNNING)
    if old is None or old.message != why:
        p.event("Warning", conditions.UNSCHEDULABLE, why)
    p.condition(conditions.RUNNING, False, conditions.POD_PENDING, why)
    p.status.message = f"attempt {p.status.attempt} waits for a node in pool {p.status.pool}: {why}"


def api_trouble(p: Pass, fault: ApiFault, retry_in: float, failures: int) -> None:
    """Placed=False/APIError with the message; a Warning event only when the trouble starts."""
    old = conditions.get_condition(p.status, conditions.PLACED)
    if old is None or old.reason != conditions.API_ERROR:
        p.event("Warning", conditions.API_ERROR, f"{fault.message}; retrying with backoff")
    p.condition(conditions.PLACED, False, conditions.API_ERROR,
                f"{fault.message} (failure {failures}; next try in {retry_in:.0f} s)")
    if p.status.phase is None:
        p.status.phase = "Pending"
    p.status.message = fault.message
