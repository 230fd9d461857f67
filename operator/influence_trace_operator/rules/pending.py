"""Pure: why an attempt waits for a node, and what happens when it waits past its pendingTimeout.

The scheduler's own words come from the pod's ``PodScheduled`` condition (e.g. ``0/8 nodes are
available: 8 Insufficient nvidia.com/gpu``, or ``persistentvolumeclaim "data" not found``). An attempt
that has not started within ``resources.pendingTimeout`` ends as ``Unschedulable``: when the
scheduler's reason is capacity (``Insufficient ...``) and a larger allowed pool exists, the next
attempt goes there (``policies.after_unschedulable``); otherwise the trace fails with the scheduler's
reason.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from influence_trace.api.spec import InfluenceTrace, duration_seconds
from influence_trace.api.status import AttemptRecord, TraceStatus

from influence_trace_operator.rules import conditions
from influence_trace_operator.rules.classify import Finished

CAPACITY_WORDS = ("Insufficient",)


def scheduler_reason(pods: list[dict[str, Any]]) -> str | None:
    """``pod NAME: <the scheduler's message>`` for the first pod it could not place, else None."""
    for pod in pods:
        status = pod.get("status") or {}
        if status.get("phase") != "Pending":
            continue
        for cond in status.get("conditions") or []:
            if cond.get("type") == "PodScheduled" and cond.get("status") == "False":
                why = cond.get("message") or cond.get("reason") or "not scheduled"
                return f"pod {pod['metadata']['name']}: {why}"
    return None


def is_capacity(reason: str | None) -> bool:
    """True when the scheduler waits for room (more nodes could place it), not for a fix."""
    return reason is not None and any(word in reason for word in CAPACITY_WORDS)


def _seconds_since(stamp: str | None, now: str) -> float:
    if not stamp:
        return 0.0
    parse = dt.datetime.fromisoformat
    return (parse(now.replace("Z", "+00:00")) - parse(stamp.replace("Z", "+00:00"))).total_seconds()


def started(job: dict[str, Any], record: AttemptRecord) -> str | None:
    """Since when the attempt waits for a node: the Job's startTime (set when the Job controller
    starts it, so time queued while suspended, e.g. in Kueue, does not count), else its creation."""
    return (job.get("status") or {}).get("startTime") or record.started_at


def timed_out(
    status: TraceStatus, pods: list[dict[str, Any]], timeout_s: int, now: str, since: str | None = None
) -> Finished | None:
    """The attempt as ``Unschedulable`` when no pod has started within the timeout, else None."""
    record = status.current()
    if record is None or status.phase == "Running":
        return None
    if any((p.get("status") or {}).get("phase") not in (None, "Pending") for p in pods):
        return None
    waited = _seconds_since(since or record.started_at, now)
    if waited < timeout_s:
        return None
    reason = scheduler_reason(pods) or "no pod of the Job was scheduled"
    return Finished(
        outcome="Unschedulable",
        reason=conditions.UNSCHEDULABLE,
        message=f"not started within resources.pendingTimeout ({timeout_s} s): {reason}",
    )


def deadline_exceeded(job: dict[str, Any], run_timeout_s: int) -> Finished | None:
    """The Job's own verdict when it ran past activeDeadlineSeconds (resources.runTimeout)."""
    for cond in (job.get("status") or {}).get("conditions") or []:
        if cond.get("type") == "Failed" and cond.get("status") == "True" and cond.get("reason") == (
            "DeadlineExceeded"
        ):
            return Finished(
                outcome="Failed",
                reason=conditions.RUN_TIMEOUT,
                message=f"the Job ran longer than resources.runTimeout ({run_timeout_s} s) and was stopped",
            )
    return None


def timeouts(resource: InfluenceTrace, default_pending: str, default_run: str) -> tuple[int, int]:
    """(pendingTimeout, runTimeout) in seconds: the spec's, else the operator's defaults."""
    res = resource.spec.resources
    return (
        duration_seconds(res.pending_timeout or default_pending),
        duration_seconds(res.run_timeout or default_run),
    )
