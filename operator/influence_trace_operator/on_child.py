"""Handlers of the operator's Jobs and Pods: wake the owning trace when something it acts on moved."""

from __future__ import annotations

from typing import Any

from influence_trace_operator import labels as L
from influence_trace_operator.classify import is_evicted, job_state
from influence_trace_operator.kueue import is_suspended
from influence_trace_operator.reconcile import Reconciler


def _owner(body: dict[str, Any]) -> str | None:
    meta = body.get("metadata") or {}
    return (meta.get("annotations") or {}).get(L.TRACE_NAME)


def on_job_event(reconciler: Reconciler, event_type: str | None, body: dict[str, Any]) -> None:
    """A Job that finished (or vanished) decides the next step of its trace; a suspended one (queued
    or evicted by Kueue) changes what its trace waits for."""
    name = _owner(body)
    if name and (event_type == "DELETED" or job_state(body) is not None or is_suspended(body)):
        reconciler.reconcile(body["metadata"]["namespace"], name)


def on_pod_event(reconciler: Reconciler, event_type: str | None, body: dict[str, Any]) -> None:
    """A worker pod that started running or was evicted changes its trace's phase or history."""
    name = _owner(body)
    phase = (body.get("status") or {}).get("phase")
    if name and event_type != "DELETED" and (phase == "Running" or is_evicted(body)):
        reconciler.reconcile(body["metadata"]["namespace"], name)
