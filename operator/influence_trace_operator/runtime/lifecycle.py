"""Operator start and stop: kopf's settings, the one Reconciler, the dispatcher of its passes, and the
periodic resync.

kopf's handlers only file passes with the dispatcher (runtime/dispatch.py), whose ``WORKERS`` threads
run them, first placements and failures first; kopf's own executor therefore needs only a few threads.

kopf's timers and daemons would put a finalizer on every trace (so that deleting one waits for the
operator); a plain background thread that re-reads unfinished traces every ``resync_seconds`` gives
the same safety net without blocking deletion while the operator is down.

Start-up may fail part-way (the health port taken) and kopf then runs ``configure`` again: the Lease
gate is in place before anything can act (``build_runtime``), and each thread is started once.
Every thread started here is stopped and joined by ``shutdown``, within ``shutdown_seconds``.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from http.server import ThreadingHTTPServer
from typing import Any, cast

import kopf
from influence_trace.api.status import TERMINAL_PHASES

from influence_trace_operator.adapters import health, metrics
from influence_trace_operator.adapters.history_store import operator_namespace
from influence_trace_operator.adapters.kube import Kube, KubeClient, api_client, coordination_api
from influence_trace_operator.adapters.leader import LeaseGuard
from influence_trace_operator.reconciler.reconcile import Reconciler
from influence_trace_operator.rules import labels
from influence_trace_operator.rules.pools import load_table
from influence_trace_operator.rules.settings import OperatorSettings
from influence_trace_operator.runtime.dispatch import Dispatcher, at_once

log = logging.getLogger(__name__)
# Events are posted by a small pool after the pass's status write, so a reconcile thread does not
# wait one API call per event; each pass's events stay in order (one task per pass).
EVENT_THREADS = 4
# kopf's executor runs the handlers, which only update the informer and file a pass (no API call).
HANDLER_THREADS = 4


@dataclass
class Runtime:
    settings: OperatorSettings
    reconciler: Reconciler
    stop: threading.Event
    wake: threading.Event = field(default_factory=threading.Event)  # resync now (e.g. Lease gained)
    lease: LeaseGuard | None = None
    events: ThreadPoolExecutor | None = None  # posts each pass's events off the reconcile threads
    health: ThreadingHTTPServer | None = None
    threads: dict[str, threading.Thread] = field(default_factory=dict)  # by name; each started once
    dispatcher: Dispatcher | None = None  # runs the handlers' passes (none: they run in the handler)

    def submit(self, namespace: str, name: str, cls: int) -> None:
        """File a watch event's pass (runtime/dispatch.py)."""
        run = self.dispatcher.submit if self.dispatcher is not None else at_once(self.reconciler.reconcile)
        run(namespace, name, cls)


def build_runtime(settings: OperatorSettings | None = None, kube: KubeClient | None = None) -> Runtime:
    """The operator's state, built once per process and carried in kopf's ``memo`` (main() passes the
    command line's settings; ``kopf run -m influence_trace_operator.runtime.handlers`` reads the environment).
    ``kube``: the API client (default: a ``Kube`` sized for the threads; tests pass their fake)."""
    settings = settings or OperatorSettings()
    table = load_table(settings.pools_file)
    log.info("pools: %s", ", ".join(f"{p.name} ({p.gpu_memory_bytes} B/GPU)" for p in table))
    kube = kube or Kube(api_client(settings.workers + EVENT_THREADS + 2))
    rt = Runtime(settings, Reconciler(kube, settings, table), threading.Event())
    if settings.lease:  # gate every pass before any thread or handler can start one
        rt.lease = lease_guard(settings)
    rt.reconciler.may_act = lambda: acting(rt)
    rt.dispatcher = Dispatcher(rt.reconciler.reconcile, settings.workers)
    metrics.CACHE.sizes = rt.reconciler.informer.sizes
    metrics.QUEUE.depths = rt.dispatcher.depths
    pool = rt.events = ThreadPoolExecutor(EVENT_THREADS, thread_name_prefix="events")

    def send(post: Callable[[], None]) -> None:
        try:
            pool.submit(post)
        except RuntimeError:  # shutting down: post in the pass itself
            post()

    rt.reconciler.send = send
    return rt


class EventsOnlyDiffBase(kopf.AnnotationsDiffBaseStorage):
    """kopf deep-copies every watched object on every event to build its "essence", the state that
    on.create/on.update/on.field handlers and daemons diff against. This operator has only on.event
    handlers, which never see it, and that copy was a quarter of kopf's event loop (the one thread all
    watch events pass through) under a burst of 1,000 traces (py-spy, bench/RESULTS.md). An empty
    essence instead; tests/operator/test_watch_filter.py fails if a handler that reads it appears."""

    def build(self, *, body: kopf.Body, extra_fields: Any = None) -> kopf.BodyEssence:
        return cast(kopf.BodyEssence, {})


def configure(kopf_settings: kopf.OperatorSettings, rt: Runtime) -> None:
    """kopf settings for one replica that keeps all state in the traces' status; starts the resync."""
    kopf_settings.peering.standalone = True  # one replica; no peering objects needed
    kopf_settings.peering.mandatory = False
    # No cluster scanning: the CRD exists before the operator starts (Helm's crds/) and namespaces are
    # given by name, so the operator needs no list/watch on CRDs or Namespaces (least-privilege RBAC).
    kopf_settings.scanning.disabled = True
    kopf_settings.posting.level = logging.WARNING  # our own events tell the story; kopf's only on trouble
    kopf_settings.execution.max_workers = HANDLER_THREADS
    kopf_settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix="influencetrace.dev")
    kopf_settings.persistence.diffbase_storage = EventsOnlyDiffBase(prefix="influencetrace.dev")
    kopf_settings.watching.reconnect_backoff = 1.0
    filter_children(kopf_settings)
    if rt.settings.liveness_port and rt.health is None:  # may raise (port taken): nothing started yet
        rt.health = health.serve(rt.reconciler.watchdog, rt.settings.liveness_port)
    if rt.lease is not None:
        if "lease" not in rt.threads:
            log.info("waiting for Lease %s/%s before acting", rt.lease.namespace, rt.lease.name)
        _start_once(rt, "lease", rt.lease.run, rt.stop, rt.wake.set)
    if rt.dispatcher is not None:
        rt.dispatcher.start()
    _start_once(rt, "resync", _resync_forever, rt)
    if rt.settings.progress_seconds:
        _start_once(rt, "progress", _progress_forever, rt)


def lease_guard(settings: OperatorSettings) -> LeaseGuard:
    """The Lease this replica must hold to act; a gain resyncs at once (``run``'s ``on_acquired``)."""
    coord = coordination_api(2)  # its own connections: never queued behind reconciles
    namespace = settings.lease_namespace or operator_namespace(settings)
    return LeaseGuard(namespace, settings.lease_name, settings.lease_seconds, coord)


def acting(rt: Runtime) -> bool:
    """Whether a pass may act now: not once a stop has begun, and only while the Lease is held."""
    return not rt.stop.is_set() and (rt.lease is None or rt.lease.acting())


def _start_once(rt: Runtime, name: str, target: Callable[..., None], *args: Any) -> None:
    if name not in rt.threads:
        rt.threads[name] = thread = threading.Thread(target=target, args=args, name=name, daemon=True)
        thread.start()
        log.info("started thread %s", name)


def shutdown(rt: Runtime) -> None:
    """Stop in order, within ``shutdown_seconds`` (the chart's grace period is longer): no pass acts
    from now on (``acting``) and none waiting starts, the resync, the dispatcher's threads and the
    passes in flight end, the waiting history records and
    events are written, the Lease is handed back (a successor acts at once, never beside a pass of
    ours), and the health server and API connections close. Nothing of ours runs at interpreter exit."""
    deadline = time.monotonic() + rt.settings.shutdown_seconds
    rt.stop.set()
    rt.wake.set()
    rt.reconciler.retries.close()
    if rt.dispatcher is not None:
        rt.dispatcher.close()
    _join(rt.threads.get("resync"), deadline)
    _join(rt.threads.get("progress"), deadline)
    if rt.dispatcher is not None and not rt.dispatcher.join(_left(deadline)):
        log.warning("pass threads did not stop within the shutdown bound")
    if not rt.reconciler.watchdog.wait_idle(_left(deadline)):
        log.warning("stopping with passes still in flight: %s", rt.reconciler.watchdog.problem())
    if rt.reconciler.history is not None:
        rt.reconciler.history.close(_left(deadline))
    if rt.events is not None:
        events = rt.events
        _bounded(lambda: events.shutdown(wait=True), "events", deadline)  # posts of ended passes
    _join(rt.threads.get("lease"), deadline)
    if rt.lease is not None:
        rt.lease.release()
    if rt.health is not None:
        rt.health.shutdown()
        rt.health.server_close()
    rt.reconciler.kube.close()
    log.info("stopped in %.1f s", rt.settings.shutdown_seconds - _left(deadline))


def _left(deadline: float) -> float:
    return max(0.0, deadline - time.monotonic())


def _join(thread: threading.Thread | None, deadline: float) -> None:
    if thread is not None:
        thread.join(_left(deadline))
        if thread.is_alive():
            log.warning("thread %s did not stop within the shutdown bound", thread.name)


def _bounded(step: Callable[[], None], name: str, deadline: float) -> None:
    """Run ``step`` in a thread and wait for it until the deadline (a hung API call cannot hold the stop)."""
    thread = threading.Thread(target=step, name=f"stop-{name}", daemon=True)
    thread.start()
    _join(thread, deadline)


def filter_children(kopf_settings: kopf.OperatorSettings) -> None:
    """Jobs and Pods are watched (and listed) by the API server's label selector, so the operator
    neither streams nor holds every pod of the cluster, only its workers'."""
    selector = f"{labels.MANAGED_BY}={labels.MANAGER}"
    kopf_settings.watching.label_selectors["batch", "v1", "jobs"] = selector
    kopf_settings.watching.label_selectors["", "v1", "pods"] = selector


def resync_once(rt: Runtime) -> int:
    """Reconcile every unfinished trace (only while this replica may act); returns how many."""
    rt.reconciler.watchdog.resync_tick()
    if not rt.reconciler.may_act():
        return 0
    traces = rt.reconciler.kube.list_traces(rt.settings.namespaces or None)
    keys = [(o["metadata"]["namespace"], o["metadata"]["name"]) for o in traces
            if (o.get("status") or {}).get("phase") not in TERMINAL_PHASES]
    # a trace an event-driven pass looked at during this period missed nothing
    return _pass_each(rt, keys, rt.settings.resync_seconds, "resync", rt.reconciler.watchdog.resync_tick)


def progress_once(rt: Runtime) -> int:
    """A pass (which reads the worker's log) for every Running trace not passed this half-period;
    returns how many. Sequential: a round never reads more than one log per running trace."""
    if not rt.reconciler.may_act():
        return 0
    return _pass_each(rt, rt.reconciler.informer.running(), rt.settings.progress_seconds / 2, "progress")


def _pass_each(rt: Runtime, keys: list[tuple[str, str]], within: float, what: str,
               after: Callable[[], None] = lambda: None) -> int:
    """One pass per trace not passed in the last ``within`` seconds, until a stop; how many ran."""
    count = 0
    for namespace, name in keys:
        if rt.stop.is_set():
            break
        if rt.reconciler.memory.passed_within(namespace, name, within):
            continue
        try:
            rt.reconciler.reconcile(namespace, name)
        except Exception:  # one bad trace must not stop the others
            log.exception("%s pass of %s/%s failed", what, namespace, name)
        count += 1
        after()
    return count


def _progress_forever(rt: Runtime) -> None:
    while not rt.stop.wait(rt.settings.progress_seconds):
        progress_once(rt)


def _resync_forever(rt: Runtime) -> None:
    while not rt.stop.is_set():
        rt.wake.wait(rt.settings.resync_seconds)
        rt.wake.clear()
        if rt.stop.is_set():
            return
        try:
            resync_once(rt)
        except Exception:
            log.exception("resync failed; trying again in %.0f s", rt.settings.resync_seconds)
