"""Pure: how a finished attempt ended, from its Job's and Pods' status (camelCase API dicts).

The worker's exit code is the primary signal (the contract's codes), the container's reason tells a
kernel OOM kill from other SIGKILLs, and the termination message carries the stage and the message.
When the pods are already gone, the Job's failure condition still names the exit code.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, cast, get_args

from influence_trace.api.contract import EXIT_KERNEL_OOM_KILL, REASON_BY_EXIT_CODE, parse_termination_message
from influence_trace.api.status import Outcome

from influence_trace_operator.rules import labels

MESSAGE_LIMIT = 1024  # characters of a worker message kept in status and events
TERMINAL = ("Succeeded", "Failed")
_EXIT_CODE_IN_MESSAGE = re.compile(r"exit code (\d+)")


@dataclass(frozen=True)
class Finished:
    """The outcome of one finished attempt."""

    outcome: Outcome
    exit_code: int | None = None
    reason: str | None = None
    stage: str | None = None
    message: str = ""
    payload: dict[str, Any] = field(default_factory=dict)  # the parsed termination message
    pod: str | None = None  # None: read from the Job's condition, no pod left to read
    started_at: str | None = None  # the worker container's start
    finished_at: str | None = None


def _true(conditions: list[dict[str, Any]] | None, kind: str) -> dict[str, Any] | None:
    for cond in conditions or []:
        if cond.get("type") == kind and cond.get("status") == "True":
            return cond
    return None


def job_state(job: dict[str, Any]) -> str | None:
    """ "Complete" or "Failed" once the Job controller has decided, else None."""
    conditions = (job.get("status") or {}).get("conditions")
    for kind in ("Complete", "Failed"):
        if _true(conditions, kind):
            return kind
    return None


def one_pod(job: dict[str, Any]) -> bool:
    """A Job of one pod (a one-node trace's): once its pod has ended, no other pod of it follows."""
    spec = job.get("spec") or {}
    return int(spec.get("parallelism") or 1) <= 1 and int(spec.get("completions") or 1) <= 1


def is_evicted(pod: dict[str, Any]) -> bool:
    """A pod the node or the eviction API took away (not the worker's own failure)."""
    status = pod.get("status") or {}
    if status.get("phase") != "Failed":
        return False
    return bool(_true(status.get("conditions"), "DisruptionTarget")) or status.get("reason") == "Evicted"


def is_running(pod: dict[str, Any]) -> bool:
    return (pod.get("status") or {}).get("phase") == "Running"


def worker_terminated(pod: dict[str, Any]) -> dict[str, Any] | None:
    """The worker container's terminated state (or the first container's), if it has ended."""
    statuses = (pod.get("status") or {}).get("containerStatuses") or []
    chosen = next(
        (s for s in statuses if s.get("name") == labels.WORKER_CONTAINER), statuses[0] if statuses else None
    )
    if not chosen:
        return None
    return (chosen.get("state") or {}).get("terminated") or (chosen.get("lastState") or {}).get("terminated")


def _created(pod: dict[str, Any]) -> str:
    return (pod.get("metadata") or {}).get("creationTimestamp") or ""


def _rank(pod: dict[str, Any]) -> int:
    """An Indexed Job pod's completion index (its node rank); 0 for a one-pod Job."""
    meta = pod.get("metadata") or {}
    index = (meta.get("annotations") or {}).get(labels.COMPLETION_INDEX) or (meta.get("labels") or {}).get(
        labels.COMPLETION_INDEX
    )
    return int(str(index)) if str(index or "").isdigit() else 0


def _first_failed(pod: dict[str, Any]) -> tuple[str, int]:
    """The pod whose worker ended first (in a failed multi-node Job the other ranks die of its
    failure, so the newest pod tells the wrong story), then the lowest rank."""
    term = worker_terminated(pod) or {}
    return (term.get("finishedAt") or "~", _rank(pod))


def _short(text: str | None) -> str:
    text = (text or "").strip()
    return text if len(text) <= MESSAGE_LIMIT else "..." + text[-MESSAGE_LIMIT:]


def outcome_of(exit_code: int | None, container_reason: str | None, payload: dict[str, Any]) -> Outcome:
    """The contract's reading of one terminated worker container."""
    if exit_code == 0:
        return "Succeeded"
    by_code = REASON_BY_EXIT_CODE.get(exit_code or -1)
    if by_code:
        return _outcome(by_code)
    if container_reason == "OOMKilled" or exit_code == EXIT_KERNEL_OOM_KILL:
        return "KernelOOMKilled"
    worker_reason = payload.get("reason")
    if worker_reason in REASON_BY_EXIT_CODE.values():
        return _outcome(str(worker_reason))
    return "Failed"


def _outcome(reason: str) -> Outcome:
    """A contract reason as an attempt outcome (each is one; anything else reads as Failed)."""
    return cast(Outcome, reason) if reason in get_args(Outcome) else "Failed"


def from_pod(pod: dict[str, Any]) -> Finished | None:
    """Classify one pod whose worker container has terminated."""
    term = worker_terminated(pod)
    if term is None:
        return None
    payload = parse_termination_message(term.get("message"))
    exit_code = term.get("exitCode")
    outcome = outcome_of(exit_code, term.get("reason"), payload)
    message = payload.get("message") if outcome != "Succeeded" else ""
    if outcome == "KernelOOMKilled" and not message:
        message = "the kernel killed the worker for exceeding its memory limit (OOMKilled)"
    return Finished(
        outcome=outcome,
        exit_code=exit_code,
        reason=payload.get("reason") or term.get("reason"),
        stage=payload.get("stage"),
        message=_short(message or ("" if outcome == "Succeeded" else term.get("reason"))),
        payload=payload if outcome == "Succeeded" else {},
        pod=(pod.get("metadata") or {}).get("name"),
        started_at=term.get("startedAt"),
        finished_at=term.get("finishedAt"),
    )


def _from_job_condition(job: dict[str, Any]) -> Finished:
    """Without pods: the Job's Failed condition (PodFailurePolicy messages name the exit code)."""
    cond = _true((job.get("status") or {}).get("conditions"), "Failed") or {}
    message = cond.get("message") or ""
    match = _EXIT_CODE_IN_MESSAGE.search(message)
    exit_code = int(match.group(1)) if match else None
    outcome = outcome_of(exit_code, None, {}) if exit_code is not None else "Failed"
    return Finished(outcome=outcome, exit_code=exit_code, reason=cond.get("reason"), message=_short(message))


def classify(job: dict[str, Any], pods: list[dict[str, Any]]) -> Finished | None:
    """How the attempt ended, or None while its Job is still going."""
    state = job_state(job)
    if state is None:
        return None
    wanted = "Succeeded" if state == "Complete" else "Failed"
    candidates = [p for p in pods if (p.get("status") or {}).get("phase") == wanted and not is_evicted(p)]
    for pod in sorted(candidates, key=_first_failed if state == "Failed" else _rank):
        found = from_pod(pod)
        if found is not None and (found.outcome == "Succeeded") == (state == "Complete"):
            return found
    if state == "Complete":
        return Finished(outcome="Succeeded", message="the Job completed (no pod status left to read)")
    return _from_job_condition(job)


def ended_before_job(job: dict[str, Any], pods: list[dict[str, Any]]) -> Finished | None:
    """How the attempt ended, read from its pods before the Job controller marks the Job (seconds to a
    minute under load); the answer ``classify`` gives once it has.

    The Job has ``backoffLimit: 0`` and fails at once on the contract's exit codes, so a worker pod
    that failed without being evicted always fails its Job; a succeeded pod for every completion index
    (a one-node trace's one pod) always completes it. Decided only when no pod of the Job is still
    active (two attempts' pods never run at once) and the Job is neither suspended (Kueue's eviction
    kills its pods) nor being deleted."""
    meta = job.get("metadata") or {}
    if job_state(job) is not None or (job.get("spec") or {}).get("suspend") or meta.get("deletionTimestamp"):
        return None
    if any((p.get("status") or {}).get("phase") not in TERMINAL for p in pods):
        return None
    failed = [p for p in pods if (p.get("status") or {}).get("phase") == "Failed" and not is_evicted(p)]
    for pod in sorted(failed, key=_first_failed):
        found = from_pod(pod)
        if found is not None and found.outcome != "Succeeded":
            return found
    return _all_ranks_succeeded(job, pods)


def _all_ranks_succeeded(job: dict[str, Any], pods: list[dict[str, Any]]) -> Finished | None:
    """Rank 0's success once every completion index has a succeeded pod (what ``classify`` reads)."""
    completions = int((job.get("spec") or {}).get("completions") or 1)
    ranks = {_rank(p): p for p in pods if (p.get("status") or {}).get("phase") == "Succeeded"}
    if not set(range(completions)) <= set(ranks):
        return None
    found = from_pod(ranks[0])
    return found if found is not None and found.outcome == "Succeeded" else None


def ended(pod: dict[str, Any]) -> bool:
    """A worker pod that failed or succeeded by itself (not evicted, not being deleted): its event may
    end the attempt before the Job controller marks the Job (``ended_before_job``)."""
    return (
        (pod.get("status") or {}).get("phase") in TERMINAL
        and not is_evicted(pod)
        and not (pod.get("metadata") or {}).get("deletionTimestamp")
    )


def evictions(pods: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """This Job's evicted pods, oldest first."""
    return sorted((p for p in pods if is_evicted(p)), key=_created)
