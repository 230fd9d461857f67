"""Handlers of the operator's Jobs and Pods: keep the informer's copy, and wake the owning trace when
something it acts on moved (compared with the copy the event replaces, so the many status updates of a
running pod or Job, e.g. its conditions or counters, start no pass)."""

from __future__ import annotations

from typing import Any

from influence_trace_operator.adapters.informer import owner
from influence_trace_operator.adapters.kueue import is_suspended
from influence_trace_operator.reconciler.reconcile import Reconciler
from influence_trace_operator.rules.classify import ended, is_evicted, job_state
from influence_trace_operator.runtime.dispatch import FAILURE, OTHER, Submit, at_once


def _owner(body: dict[str, Any]) -> str | None:
    return owner(body)[0][1] or None


def _superseded(reconciler: Reconciler, body: dict[str, Any], trace: str) -> bool:
    """A Job of an attempt older than the one this operator last wrote for its trace (same trace uid),
    or of one its watched trace has moved past (informer.py): nothing about it can change the trace
    (e.g. the Failed condition of an attempt whose outcome was already read from its pod), so its
    event costs no pass."""
    if reconciler.informer.moved_past(body):
        return True
    (namespace, _), attempt = owner(body)
    refs = (body.get("metadata") or {}).get("ownerReferences") or []
    uid = next((o.get("uid") for o in refs if o.get("controller")), None)
    return (attempt is not None and uid is not None
            and reconciler.memory.superseded(namespace, trace, uid, attempt))


def job_signature(job: dict[str, Any] | None) -> tuple[Any, ...] | None:
    """What a pass reads from a Job: the Job controller's verdict, Kueue's suspension, deletion."""
    if job is None:
        return None
    return job_state(job), is_suspended(job), bool((job.get("metadata") or {}).get("deletionTimestamp"))


def pod_signature(pod: dict[str, Any] | None) -> tuple[Any, ...] | None:
    """What a pass acts on from a pod: its phase and its eviction."""
    if pod is None:
        return None
    return (pod.get("status") or {}).get("phase"), is_evicted(pod)


def on_job_event(reconciler: Reconciler, event_type: str | None, body: dict[str, Any],
                 submit: Submit | None = None) -> None:
    """A Job that finished (or vanished) decides the next step of its trace; a suspended one (queued
    or evicted by Kueue) changes what its trace waits for, and so does its admission (suspension
    lifted): a pass that read the Job while it was still suspended waited for exactly that.
    ``submit`` files the pass (default: run it now); a failed or vanished Job's comes before
    bookkeeping (runtime/dispatch.py)."""
    old = reconciler.informer.put("job", event_type, body)
    name = _owner(body)
    changed = job_signature(old) != job_signature(body)
    lifted = old is not None and is_suspended(old) and not is_suspended(body)
    moved = event_type == "DELETED" or (changed and (job_state(body) is not None or is_suspended(body)
                                                     or lifted))
    if name and moved and not _superseded(reconciler, body, name):
        cls = FAILURE if event_type == "DELETED" or job_state(body) == "Failed" else OTHER
        (submit or at_once(reconciler.reconcile))(body["metadata"]["namespace"], name, cls)


def on_pod_event(reconciler: Reconciler, event_type: str | None, body: dict[str, Any],
                 submit: Submit | None = None) -> None:
    """A worker pod that started running or was evicted changes its trace's phase or history; one that
    ended decides the attempt's outcome before the Job controller marks its Job. Not only while the
    pod still holds the Job controller's tracking finalizer (not counted yet): kopf hands a handler
    only the last of an object's events within its batch window, so under load the event that showed
    the finalizer can be missed, and the Job's condition came 45 s or more later under a burst.
    ``submit`` files the pass (default: run it now); a failed pod's (the next Job) comes before those
    of running and succeeded pods (runtime/dispatch.py)."""
    old = reconciler.informer.put("pod", event_type, body)
    name = _owner(body)
    relevant = (body.get("status") or {}).get("phase") == "Running" or is_evicted(body) or ended(body)
    changed = pod_signature(old) != pod_signature(body)
    if name and event_type != "DELETED" and relevant and changed and not reconciler.informer.moved_past(body):
        cls = FAILURE if (body.get("status") or {}).get("phase") == "Failed" else OTHER
        (submit or at_once(reconciler.reconcile))(body["metadata"]["namespace"], name, cls)
