"""The placement history in the cluster: one ConfigMap in the operator's namespace, and the two hooks
reconcile calls (place a new trace with it, record a finished attempt into it).

The rules live in ``influence_trace.planning.history``; this module only reads and writes the
ConfigMap (``history.json``, at most ``history_limit`` observations) with its resourceVersion, so two
passes recording at once cannot lose each other's observation (the loser re-reads and retries). The
history is advice: if the ConfigMap cannot be read or written, placement falls back to the model and
the pass goes on (logged), it never fails a trace.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from influence_trace.api.spec import InfluenceTraceSpec
from influence_trace.api.status import AttemptRecord
from influence_trace.planning.duration import Duration, predict, readable
from influence_trace.planning.history import (
    History,
    HistoryError,
    Learned,
    observation,
    parse_history,
    place_with_history,
)
from influence_trace.planning.memory_model import Estimate, estimate
from influence_trace.planning.placement import Placement, Pool
from kubernetes.client.rest import ApiException

from influence_trace_operator import labels as L
from influence_trace_operator.progress_reader import seconds_between
from influence_trace_operator.settings import OperatorSettings

log = logging.getLogger(__name__)
DATA_KEY = "history.json"
WRITE_RETRIES = 5
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
    """Reads and writes the history ConfigMap through the core/v1 API."""

    def __init__(self, core: Any, namespace: str, name: str, limit: int) -> None:
        self.core, self.namespace, self.name, self.limit = core, namespace, name, limit

    def _read(self) -> tuple[History, str | None]:
        """The history and the ConfigMap's resourceVersion (None: no ConfigMap yet)."""
        try:
            resp = self.core.read_namespaced_config_map(self.name, self.namespace, _preload_content=False)
        except ApiException as err:
            if err.status == 404:
                return History(), None
            raise
        body = json.loads(resp.data)
        text = (body.get("data") or {}).get(DATA_KEY)
        try:
            return parse_history(text, f"ConfigMap {self.namespace}/{self.name}"), body["metadata"][
                "resourceVersion"]
        except HistoryError as err:  # a mangled history starts over rather than block placement
            log.warning("%s; starting an empty history", err)
            return History(), body["metadata"]["resourceVersion"]

    def load(self) -> History:
        return self._read()[0]

    def _body(self, history: History, version: str | None) -> dict[str, Any]:
        meta: dict[str, Any] = {"name": self.name, "namespace": self.namespace,
                                "labels": {L.MANAGED_BY: L.MANAGER}}
        if version is not None:
            meta["resourceVersion"] = version
        data = {DATA_KEY: history.to_json()}
        return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta, "data": data}

    def record(self, obs: Any) -> bool:
        """Add one observation (once per id); retries on a concurrent write. True if it was added."""
        for _ in range(WRITE_RETRIES):
            history, version = self._read()
            if not history.record(obs, self.limit):
                return False
            try:
                if version is None:
                    self.core.create_namespaced_config_map(self.namespace, self._body(history, None),
                                                           _preload_content=False)
                else:
                    body = self._body(history, version)
                    self.core.replace_namespaced_config_map(self.name, self.namespace, body,
                                                            _preload_content=False)
                return True
            except ApiException as err:
                if err.status != 409:
                    raise
        log.warning("history %s/%s: gave up after %d conflicting writes", self.namespace, self.name,
                    WRITE_RETRIES)
        return False


def build_store(kube: Any, settings: OperatorSettings) -> HistoryStore | None:
    """The store the settings ask for (None: learning is turned off, or the client has no core API)."""
    core = getattr(kube, "core", None)
    if not settings.history or core is None:
        return None
    namespace = operator_namespace(settings)
    return HistoryStore(core, namespace, settings.history_configmap, settings.history_limit)


def place(store: HistoryStore | None, spec: InfluenceTraceSpec, table: list[Pool],
          settings: OperatorSettings) -> tuple[Estimate, Learned, Placement, Duration | None]:
    """Placement with the history when there is one (the model alone when it cannot be read), and the
    predicted duration on the chosen pool."""
    history = None
    if store is not None:
        try:
            history = store.load()
        except (ApiException, ValueError, OSError) as err:
            log.warning("history unreadable (%s); placing by the model alone", err)
    margin = settings.history_margin
    est, learned, chosen = place_with_history(spec, history, table, settings.headroom, margin)
    duration = predict(spec, est, chosen.pool, history) if chosen.pool else None
    return est, learned, chosen, duration


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
        seconds=seconds_between(record.started_at, record.finished_at), finished_at=record.finished_at,
        predicted_seconds=predict(spec, est, pool).model_seconds,
    )
    try:
        store.record(obs)
    except (ApiException, ValueError, OSError) as err:
        log.warning("could not record attempt %s of %s in the history: %s", record.attempt, name, err)



def duration_fields(duration: Duration | None) -> dict[str, Any]:
    """The EstimateStatus fields of a predicted duration."""
    if duration is None:
        return {}
    return {"seconds": round(duration.seconds, 1), "time": readable(duration.seconds),
            "stage_seconds": {s: round(v, 1) for s, v in duration.stages.items()}}
