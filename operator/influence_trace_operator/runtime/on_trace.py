"""Handler of InfluenceTrace watch events (creation, operator start, status and spec changes)."""

from __future__ import annotations

import logging
from typing import Any

from influence_trace.api.status import TERMINAL_PHASES

from influence_trace_operator.reconciler.reconcile import Reconciler
from influence_trace_operator.runtime.dispatch import FIRST, OTHER, Submit, at_once

log = logging.getLogger(__name__)


def on_trace_event(reconciler: Reconciler, event_type: str | None, body: dict[str, Any],
                   submit: Submit | None = None) -> None:
    """Reconcile an unfinished trace; the initial listing at start-up (type None) resumes them all.
    ``submit`` files the pass (the dispatcher; default: run it now); a trace with no attempt yet is
    a first placement, served before the other passes (runtime/dispatch.py)."""
    reconciler.informer.put("trace", event_type, body)
    if event_type == "DELETED":  # ownerReferences let the garbage collector remove the Jobs and Pods
        meta = body.get("metadata") or {}
        reconciler.memory.forget(meta.get("namespace", ""), meta.get("name", ""))
        return
    if (body.get("status") or {}).get("phase") in TERMINAL_PHASES:
        return
    meta = body["metadata"]
    if meta.get("deletionTimestamp") or reconciler.memory.own_write(meta["namespace"], meta["name"],
                                                            meta.get("resourceVersion")):
        return
    cls = OTHER if (body.get("status") or {}).get("attempt") else FIRST
    (submit or at_once(reconciler.reconcile))(meta["namespace"], meta["name"], cls)  # reads the informer
