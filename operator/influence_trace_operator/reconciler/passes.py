"""The working state of one reconcile pass, and how a trace object is read into it."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from influence_trace.api.spec import InfluenceTrace, parse_manifest
from influence_trace.api.status import AttemptRecord, TraceStatus
from pydantic import ValidationError

from influence_trace_operator.adapters.kube import now
from influence_trace_operator.rules import conditions
from influence_trace_operator.rules.jobs import TraceRef

log = logging.getLogger(__name__)


class Wait(Exception):
    """Nothing can be done in this pass (e.g. a leftover Job of a deleted namesake); try later."""


@dataclass
class Pass:
    """The working state of one pass: the object as read, the status being built, events to send."""

    obj: dict[str, Any]
    status: TraceStatus
    ref: TraceRef
    generation: int | None
    now: str = field(default_factory=now)
    events: list[tuple[str, str, str]] = field(default_factory=list)
    later: list[Callable[[], None]] = field(default_factory=list)  # after the status write and events

    def event(self, kind: str, reason: str, message: str) -> None:
        self.events.append((kind, reason, message))

    def condition(self, kind: str, value: bool, reason: str, message: str) -> None:
        conditions.set_condition(self.status, kind, value, reason, message, self.generation, self.now)

    def replace_record(self, record: AttemptRecord) -> None:
        """The status with ``record`` in place of the attempt record of the same number."""
        self.status.attempts = [record if r.attempt == record.attempt else r for r in self.status.attempts]


def start_pass(obj: dict[str, Any]) -> Pass:
    """A pass over the trace as read."""
    meta = obj["metadata"]
    ref = TraceRef(meta["name"], meta["namespace"], meta["uid"])
    return Pass(obj, load_status(obj), ref, meta.get("generation"))


def load_status(obj: dict[str, Any]) -> TraceStatus:
    """The status as the operator wrote it; a mangled one starts over rather than crash the pass."""
    try:
        return TraceStatus.model_validate(obj.get("status") or {})
    except ValidationError as err:
        log.warning("ignoring unreadable status of %s: %s", obj["metadata"].get("name"), err)
        return TraceStatus()


def parse_trace(obj: dict[str, Any]) -> InfluenceTrace:
    """The typed trace, metadata reduced to what a manifest carries; ManifestError names each field."""
    meta = obj.get("metadata") or {}
    data = {
        "apiVersion": obj.get("apiVersion"),
        "kind": obj.get("kind"),
        "metadata": {k: meta[k] for k in ("name", "namespace", "labels", "annotations") if meta.get(k)},
        "spec": obj.get("spec"),
    }
    return parse_manifest(data, f"InfluenceTrace {meta.get('namespace')}/{meta.get('name')}")
