"""The operator's Prometheus metrics, served as text on the health port (``/metrics``).

Counters count what this process did (a restarted operator starts from zero, as Prometheus expects);
they are derived from the status a reconcile pass wrote, so a pass retried after a conflict is
counted once. The phase gauge follows the watch stream, so it also covers traces that finished
before the operator started.
"""

from __future__ import annotations

import threading
import time
from collections import Counter as Tally
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, disable_created_metrics, generate_latest
from prometheus_client.core import GaugeMetricFamily

disable_created_metrics()  # no *_created series: they double the output and nobody reads them
REGISTRY = CollectorRegistry(auto_describe=True)
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

ATTEMPTS = Counter(
    "influencetrace_attempts_total", "Attempts (Jobs) that ended, by outcome.", ["outcome"], registry=REGISTRY
)
LAUNCHES = Counter(
    "influencetrace_jobs_launched_total", "Jobs the operator launched (attempt 1 and relaunches).",
    registry=REGISTRY,
)
ESCALATIONS = Counter(
    "influencetrace_escalations_total", "Relaunches after a failed attempt, by pool left and pool chosen.",
    ["from_pool", "to_pool"], registry=REGISTRY,
)
REFUSALS = Counter(
    "influencetrace_placement_refusals_total", "Traces refused a placement (Placed=False), by reason.",
    ["reason"], registry=REGISTRY,
)
PROGRESS_READS = Counter(
    "influencetrace_progress_log_reads_total", "Worker log reads for status.progress (pods/log calls).",
    registry=REGISTRY,
)
RECONCILE_SECONDS = Histogram(
    "influencetrace_reconcile_seconds", "Duration of one reconcile pass of one trace (API calls included).",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0), registry=REGISTRY,
)
PASS_WAIT = Histogram(
    "influencetrace_pass_wait_seconds", "Time a watch event's pass waited for a thread, by class.", ["class"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0), registry=REGISTRY,
)


class PhaseCollector:
    """``influencetrace_traces{phase=...}``: the traces the operator sees, by status phase."""

    def __init__(self) -> None:
        self._phases: dict[tuple[str, str], str] = {}
        self._lock = threading.Lock()

    def note(self, event_type: str | None, body: dict[str, Any]) -> None:
        meta = body.get("metadata") or {}
        key = (meta.get("namespace") or "", meta.get("name") or "")
        with self._lock:
            if event_type == "DELETED":
                self._phases.pop(key, None)
            else:
                self._phases[key] = (body.get("status") or {}).get("phase") or "New"

    def collect(self) -> Iterator[GaugeMetricFamily]:
        gauge = GaugeMetricFamily("influencetrace_traces", "Traces seen by the operator, by phase.",
                                  labels=["phase"])
        with self._lock:
            tally = Tally(self._phases.values())
        for phase in ("New", "Pending", "Running", "Escalating", "Succeeded", "Failed"):
            tally.setdefault(phase, 0)
        for phase, n in sorted(tally.items()):
            gauge.add_metric([phase], n)
        yield gauge


class CacheCollector:
    """``influencetrace_informer_objects{kind=...}``: the copies the informer holds (informer.py), so an
    operator's memory can be told apart from its cache's growth."""

    def __init__(self) -> None:
        self.sizes: Callable[[], dict[str, int]] = dict

    def collect(self) -> Iterator[GaugeMetricFamily]:
        gauge = GaugeMetricFamily("influencetrace_informer_objects",
                                  "Watched objects the operator holds a copy of, by kind.", labels=["kind"])
        sizes = self.sizes()
        for kind in ("trace", "job", "pod"):
            gauge.add_metric([kind], sizes.get(kind, 0))
        yield gauge


class QueueCollector:
    """``influencetrace_pass_queue{class=...}``: traces waiting for a pass thread, by class
    (runtime/dispatch.py: ``first``, ``failure``, ``other``)."""

    def __init__(self) -> None:
        self.depths: Callable[[], dict[str, int]] = dict

    def collect(self) -> Iterator[GaugeMetricFamily]:
        gauge = GaugeMetricFamily("influencetrace_pass_queue", "Traces waiting for a pass thread, by class.",
                                  labels=["class"])
        for cls, n in sorted(self.depths().items()):
            gauge.add_metric([cls], n)
        yield gauge


PHASES = PhaseCollector()
CACHE = CacheCollector()
QUEUE = QueueCollector()
for collector in (PHASES, CACHE, QUEUE):
    REGISTRY.register(collector)  # a custom collector: anything with collect()


def note_trace(event_type: str | None, body: dict[str, Any]) -> None:
    """Hook of the trace watch: keep the phase gauge current."""
    PHASES.note(event_type, body)


@contextmanager
def timed_pass() -> Iterator[None]:
    start = time.monotonic()
    try:
        yield
    finally:
        RECONCILE_SECONDS.observe(time.monotonic() - start)


def observe_pass(before: dict[str, Any], after: dict[str, Any]) -> None:
    """Hook after a pass wrote its status: count what changed between the two wire statuses."""
    old = {a["attempt"]: a for a in before.get("attempts") or []}
    new = after.get("attempts") or []
    for rec in new:
        was = old.get(rec["attempt"])
        if was is None:
            LAUNCHES.inc()
            if rec["attempt"] > 1:
                prev = next((a for a in new if a["attempt"] == rec["attempt"] - 1), None)
                ESCALATIONS.labels(prev["pool"] if prev else "unknown", rec["pool"]).inc()
        outcome = rec.get("outcome") or "Running"
        if outcome != "Running" and (was is None or (was.get("outcome") or "Running") == "Running"):
            ATTEMPTS.labels(outcome).inc()
    placed_before, placed_after = _placed(before), _placed(after)
    if placed_after is not None and placed_after["status"] == "False" and placed_after != placed_before:
        REFUSALS.labels(placed_after.get("reason") or "Unknown").inc()


def _placed(status: dict[str, Any]) -> dict[str, Any] | None:
    conds = status.get("conditions") or []
    found = next((c for c in conds if c.get("type") == "Placed"), None)
    return {k: found.get(k) for k in ("status", "reason", "message")} if found else None


def exposition() -> bytes:
    """The registry in the Prometheus text format."""
    return generate_latest(REGISTRY)
