"""The placement history in the cluster: one ConfigMap in the operator's namespace, and the two hooks
reconcile calls (place a new trace with it, record a finished attempt into it).

The rules live in ``influence_trace.planning.history``; this module only reads and writes the
ConfigMap (``history.json``, at most ``history_limit`` observations). Under a burst every placement
and every finished attempt would otherwise cost a GET (and a PUT) of one shared ConfigMap, so the
store keeps the last read with its resourceVersion (re-read at most every ``cache_seconds``; its own
writes update it) and coalesces records: they wait ``flush_seconds`` in memory (placement already
sees them) and go out in one PUT at the cached resourceVersion; a concurrent write (409) re-reads,
merges and retries, so no observation is lost to a race. A clean stop flushes what waits; a kill
loses at most the last ``flush_seconds`` of records. The history is advice: if the ConfigMap cannot
be read or written, placement falls back to the model and the pass goes on (logged), it never fails
a trace.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from influence_trace.api.spec import InfluenceTraceSpec
from influence_trace.api.status import AttemptRecord
from influence_trace.planning.duration import Duration, predict, readable
from influence_trace.planning.history import (
    History,
    HistoryError,
    Learned,
    Observation,
    observation,
    parse_history,
    place_with_history,
)
from influence_trace.planning.memory_model import Estimate, estimate
from influence_trace.planning.placement import Placement, Pool
from kubernetes.client.rest import ApiException
from urllib3.exceptions import HTTPError

from influence_trace_operator.adapters.progress_reader import seconds_between
from influence_trace_operator.rules import labels
from influence_trace_operator.rules.settings import OperatorSettings

log = logging.getLogger(__name__)
DATA_KEY = "history.json"
WRITE_RETRIES = 5
REQUEST_TIMEOUT = (5.0, 30.0)  # connect, read: a hung call must not hold the history (and placement) forever
API_ERRORS = (ApiException, ValueError, OSError, HTTPError)  # HTTPError: urllib3's timeouts among them
SERVICE_ACCOUNT_NAMESPACE = "/var/run/secrets/kubernetes.io/serviceaccount/namespace"


def operator_namespace(settings: OperatorSettings) -> str:
    """Where the history lives: the setting, else the pod's own namespace, else the first watched one."""
    if settings.history_namespace:
        return settings.history_namespace
    try:
        with open(SERVICE_ACCOUNT_NAMESPACE) as f:
            return f.read().strip()
    except OSError:
        return settings.namespaces[0] if settings.namespaces else "default"


class HistoryStore:
    """The history ConfigMap through the core/v1 API, cached and written in batches (thread-safe)."""

    def __init__(self, core: Any, namespace: str, name: str, limit: int, cache_seconds: float = 30.0,
                 flush_seconds: float = 1.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.core, self.namespace, self.name, self.limit = core, namespace, name, limit
        self.cache_seconds, self.flush_seconds, self.clock = cache_seconds, flush_seconds, clock
        self._lock = threading.Lock()  # the cache and the pending records
        self._read_lock = threading.Lock()  # one GET at a time: a burst of placements waits for it
        self._write_lock = threading.Lock()  # one flush at a time
        self._cached: History | None = None
        self._version: str | None = None  # resourceVersion of the cached copy (None: no ConfigMap)
        self._read_at = float("-inf")
        self._writes = 0  # own writes so far: a GET that raced one must not replace the newer copy
        self._pending: list[Observation] = []
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._flusher: threading.Thread | None = None

    # ---- reading -----------------------------------------------------------------------------
    def _get(self) -> tuple[History, str | None]:
        """The history and the ConfigMap's resourceVersion (None: no ConfigMap yet)."""
        try:
            resp = self.core.read_namespaced_config_map(self.name, self.namespace, _preload_content=False,
                                                        _request_timeout=REQUEST_TIMEOUT)
        except ApiException as err:
            if err.status == 404:
                return History(), None
            raise
        body = json.loads(resp.data)
        version = body["metadata"]["resourceVersion"]
        try:
            return parse_history((body.get("data") or {}).get(DATA_KEY), self._source()), version
        except HistoryError as err:  # a mangled history starts over rather than block placement
            log.warning("%s; starting an empty history", err)
            return History(), version

    def _source(self) -> str:
        return f"ConfigMap {self.namespace}/{self.name}"

    def _fresh(self) -> bool:
        return self._cached is not None and self.clock() - self._read_at < self.cache_seconds

    def _refresh(self, force: bool = False) -> None:
        """Re-read the ConfigMap unless the cache is young. One thread reads at a time; while it does,
        the others go on with the copy they have (only a store with no copy yet waits for the read)."""
        if not self._read_lock.acquire(blocking=force or self._cached is None):
            return
        try:
            with self._lock:
                if not force and self._fresh():
                    return
                writes = self._writes
            history, version = self._get()
            with self._lock:
                if self._writes == writes:
                    self._cached, self._version, self._read_at = history, version, self.clock()
        finally:
            self._read_lock.release()

    def load(self) -> History:
        """The history as placement should see it: the cached copy plus the records not yet written.
        A failed re-read falls back on an older copy when there is one (logged)."""
        try:
            self._refresh()
        except API_ERRORS as err:
            if self._cached is None:
                raise
            log.warning("history re-read failed (%s); using the copy read %.0f s ago", err,
                        self.clock() - self._read_at)
        with self._lock:
            return self._merged(self._pending)

    def _merged(self, batch: list[Observation]) -> History:
        """The cached copy with ``batch`` added (a copy; call with ``_lock`` held)."""
        base = self._cached.observations if self._cached else []
        merged = History.model_construct(version=1, observations=list(base))
        for obs in batch:
            merged.record(obs, self.limit)
        return merged

    # ---- writing -----------------------------------------------------------------------------
    def record(self, obs: Observation) -> bool:
        """Queue one observation (once per id) for the next write. True if it was new."""
        with self._lock:
            known = self._cached.observations if self._cached else []
            if any(o.id == obs.id for o in [*known, *self._pending]):
                return False
            self._pending = [*self._pending, obs][-self.limit:]
        if self.flush_seconds <= 0:
            self.flush()
        else:
            self._start_flusher()
            self._wake.set()
        return True

    def flush(self) -> bool:
        """Write every pending record in one PUT (create when missing); a conflict re-reads, merges
        and retries. True when nothing is left pending. API errors propagate (the records stay)."""
        with self._write_lock:
            conflicts = 0
            while conflicts < WRITE_RETRIES:
                with self._lock:
                    batch = list(self._pending)
                if not batch:
                    return True
                if self._cached is None:
                    self._refresh(force=True)
                with self._lock:
                    merged, version = self._merged(batch), self._version
                try:
                    written = self._write(merged, version)
                except ApiException as err:
                    if err.status not in (404, 409):
                        raise
                    conflicts += 1
                    self._refresh(force=True)  # someone else wrote (or deleted it): merge with theirs
                    continue
                with self._lock:
                    self._cached, self._version, self._read_at = merged, written, self.clock()
                    self._writes += 1
                    ids = {o.id for o in batch}
                    self._pending = [o for o in self._pending if o.id not in ids]
            log.warning("history %s/%s: %d conflicting writes in a row; the records wait for the next "
                        "flush", self.namespace, self.name, WRITE_RETRIES)
            return False

    def _write(self, history: History, version: str | None) -> str:
        """One create or PUT at ``version``; returns the new resourceVersion."""
        if version is None:
            resp = self.core.create_namespaced_config_map(self.namespace, self._body(history, None),
                                                          _preload_content=False,
                                                          _request_timeout=REQUEST_TIMEOUT)
        else:
            body = self._body(history, version)
            resp = self.core.replace_namespaced_config_map(
                self.name, self.namespace, body, _preload_content=False, _request_timeout=REQUEST_TIMEOUT)
        return json.loads(resp.data)["metadata"]["resourceVersion"]

    def _body(self, history: History, version: str | None) -> dict[str, Any]:
        meta: dict[str, Any] = {"name": self.name, "namespace": self.namespace,
                                "labels": {labels.MANAGED_BY: labels.MANAGER}}
        if version is not None:
            meta["resourceVersion"] = version
        data = {DATA_KEY: history.to_json()}
        return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta, "data": data}

    # ---- the background writer ---------------------------------------------------------------
    def _start_flusher(self) -> None:
        with self._lock:
            if self._flusher is not None:
                return
            self._flusher = threading.Thread(target=self._flush_forever, name="history-writer", daemon=True)
        self._flusher.start()

    def _flush_forever(self) -> None:
        """Wait for a record, let more gather for ``flush_seconds``, write them all; repeat."""
        while not self._stop.is_set():
            self._wake.wait()
            if self._stop.wait(self.flush_seconds):
                return  # close() flushes what is left
            self._wake.clear()
            try:
                if not self.flush():
                    self._wake.set()
            except API_ERRORS as err:
                log.warning("could not write the history %s/%s (%s); retrying", self.namespace, self.name,
                            err)
                self._wake.set()
                self._stop.wait(max(self.flush_seconds, 1.0) * 5)

    def close(self, timeout: float = 10.0) -> None:
        """Stop the writer and write what waits (a clean stop loses no record)."""
        self._stop.set()
        self._wake.set()
        if self._flusher is not None:
            self._flusher.join(timeout=timeout)
        try:
            self.flush()
        except API_ERRORS as err:
            log.warning("history %s/%s: %d record(s) not written at stop: %s", self.namespace, self.name,
                        len(self._pending), err)

    @property
    def pending(self) -> int:
        return len(self._pending)


def build_store(kube: Any, settings: OperatorSettings) -> HistoryStore | None:
    """The store the settings ask for (None: learning is turned off, or the client has no core API)."""
    core = getattr(kube, "core", None)
    if not settings.history or core is None:
        return None
    namespace = operator_namespace(settings)
    return HistoryStore(core, namespace, settings.history_configmap, settings.history_limit,
                        settings.history_cache_seconds, settings.history_flush_seconds)


@dataclass(frozen=True)
class Placed:
    """A first placement: the memory model's estimate, what the history made of it, the pool chosen
    and the predicted duration there (None: no pool fits)."""

    model: Estimate
    learned: Learned
    chosen: Placement
    duration: Duration | None


def place(store: HistoryStore | None, spec: InfluenceTraceSpec, table: list[Pool],
          settings: OperatorSettings) -> Placed:
    """Placement with the history when there is one (the model alone when it cannot be read), and the
    predicted duration on the chosen pool."""
    history = None
    if store is not None:
        try:
            history = store.load()
        except API_ERRORS as err:
            log.warning("history unreadable (%s); placing by the model alone", err)
    margin = settings.history_margin
    est, learned, chosen = place_with_history(spec, history, table, settings.headroom, margin)
    duration = predict(spec, est, chosen.pool, history) if chosen.pool else None
    return Placed(est, learned, chosen, duration)


def record(store: HistoryStore | None, spec: InfluenceTraceSpec, uid: str, name: str, record: AttemptRecord,
           table: list[Pool], payload: dict[str, Any]) -> None:
    """Record a finished attempt (its record already carries the outcome); errors are only logged."""
    if store is None or record.outcome == "Running":
        return
    try:
        est = estimate(spec)
    except ValueError:
        return
    pool = next((p for p in table if p.name == record.pool), None)
    host = payload.get("peakHostBytes")
    obs = observation(
        spec, est, id=f"{uid}/{record.attempt}", trace=name, pool=record.pool,
        pool_gpu_bytes=pool.gpu_memory_bytes if pool else 0, outcome=record.outcome, stage=record.stage,
        measured_gpu_bytes=record.peak_gpu_bytes or None,
        measured_host_bytes=host if isinstance(host, int) and host > 0 else None,
        context_bytes=est.gpu_bytes - max(est.stages.values()),
        seconds=seconds_between(record.running_at or record.started_at, record.finished_at),
        finished_at=record.finished_at,
        predicted_seconds=predict(spec, est, pool).model_seconds,
    )
    try:
        store.record(obs)
    except API_ERRORS as err:
        log.warning("could not record attempt %s of %s in the history: %s", record.attempt, name, err)



def duration_fields(duration: Duration | None) -> dict[str, Any]:
    """The EstimateStatus fields of a predicted duration."""
    if duration is None:
        return {}
    return {"seconds": round(duration.seconds, 1), "time": readable(duration.seconds),
            "stage_seconds": {s: round(v, 1) for s, v in duration.stages.items()}}
