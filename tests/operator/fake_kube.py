"""An in-memory stand-in for the operator's ``Kube``, for faults the real API server will not produce on
demand: a status write that loses a race (409) again and again, a Job name held by a foreign object, a
Job that vanishes between two calls. Every cluster behaviour the operator relies on is also tested
against the real control plane (tests/cluster/); this fake only has to be faithful where it is used.
"""

from __future__ import annotations

import copy
import itertools
import json
from collections import Counter
from collections.abc import Callable
from typing import Any

from influence_trace_operator.adapters.kube import KubeClient
from influence_trace_operator.rules import labels
from kubernetes.client.rest import ApiException


def conflict() -> ApiException:
    return ApiException(status=409, reason="Conflict")


class FakeKube:
    """Traces, Jobs, Pods, ConfigMaps, Services and Events in dicts, with resourceVersions."""

    def __init__(self) -> None:
        self.traces: dict[tuple[str, str], dict[str, Any]] = {}
        self.jobs: dict[tuple[str, str], dict[str, Any]] = {}
        self.pods: dict[tuple[str, str], list[dict[str, Any]]] = {}  # by (namespace, job name)
        self.configmaps: dict[tuple[str, str], dict[str, Any]] = {}
        self.services: dict[tuple[str, str], dict[str, Any]] = {}
        self.network_policies: dict[tuple[str, str], dict[str, Any]] = {}
        self.events: list[tuple[str, str, str]] = []
        self.status_writes = 0
        self.closed = False
        self.custom: Any = None  # Kueue's Workloads: tests/operator/test_kueue.py puts its fake here
        self.core: Any = None  # no pod logs, no history ConfigMap unless a test gives them
        self.replaced = 0  # ConfigMaps/Services replaced after a 409
        self.missing_claims: set[tuple[str, str]] = set()  # PersistentVolumeClaims that do not exist
        self.errors_to_inject: list[ApiException] = []  # raised, in order, by the next creates
        self.conflicts_to_inject = 0  # the next N status writes fail with 409
        self._versions = itertools.count(1)
        self._uids = itertools.count(1)

    # ---- test set-up -------------------------------------------------------------------------
    def edit_trace(self, namespace: str, name: str, edit: Callable[[dict[str, Any]], Any]) -> dict[str, Any]:
        """A user's (or a dead operator's) change to the stored trace, at a new resourceVersion;
        returns the trace as its watch event delivers it (pass it to on_trace.on_trace_event)."""
        trace = self.traces[(namespace, name)]
        edit(trace)
        trace["metadata"]["resourceVersion"] = str(next(self._versions))
        return copy.deepcopy(trace)

    def annotate(self, namespace: str, name: str, key: str, value: str) -> dict[str, Any]:
        """``kubectl annotate`` on the trace; returns its watch event's copy."""
        return self.edit_trace(namespace, name, lambda t: t["metadata"].setdefault("annotations", {}).update(
            {key: value}))

    def add_trace(self, body: dict[str, Any]) -> dict[str, Any]:
        obj = copy.deepcopy(body)
        meta = obj["metadata"]
        meta.setdefault("uid", f"trace-uid-{next(self._uids)}")
        meta["resourceVersion"] = str(next(self._versions))
        meta.setdefault("generation", 1)
        self.traces[(meta["namespace"], meta["name"])] = obj
        return obj

    def finish_job(self, namespace: str, name: str, state: str, pod: dict[str, Any]) -> None:
        """The Job controller's verdict (Complete/Failed) and the pod it ran."""
        job = self.jobs[(namespace, name)]
        job["status"] = {"conditions": [{"type": state, "status": "True"}]}
        self.pods[(namespace, name)] = [pod]

    def foreign_job(self, namespace: str, name: str, owner: dict[str, Any] | None = None) -> None:
        """A Job of that name owned by some other object (by default not a trace at all)."""
        self.jobs[(namespace, name)] = {
            "metadata": {"name": name, "namespace": namespace, "uid": "other",
                         "ownerReferences": [owner or {"uid": "someone-else"}]},
            "status": {},
        }

    def status_of(self, namespace: str, name: str) -> dict[str, Any]:
        return self.traces[(namespace, name)].get("status") or {}

    # ---- the Kube interface ------------------------------------------------------------------
    def close(self) -> None:
        self.closed = True

    def get_trace(self, namespace: str, name: str) -> dict[str, Any] | None:
        obj = self.traces.get((namespace, name))
        return copy.deepcopy(obj) if obj is not None else None

    def list_traces(self, namespaces: list[str] | None) -> list[dict[str, Any]]:
        return [copy.deepcopy(o) for (ns, _), o in self.traces.items() if not namespaces or ns in namespaces]

    def replace_status(self, trace: dict[str, Any], status: dict[str, Any]) -> dict[str, Any]:
        meta = trace["metadata"]
        current = self.traces[(meta["namespace"], meta["name"])]
        if self.conflicts_to_inject > 0 or meta["resourceVersion"] != current["metadata"]["resourceVersion"]:
            self.conflicts_to_inject = max(0, self.conflicts_to_inject - 1)
            current["metadata"]["resourceVersion"] = str(next(self._versions))  # someone else wrote
            raise conflict()
        current["status"] = copy.deepcopy(status)
        current["metadata"]["resourceVersion"] = str(next(self._versions))
        self.status_writes += 1
        return copy.deepcopy(current)

    def get_job(self, namespace: str, name: str) -> dict[str, Any] | None:
        job = self.jobs.get((namespace, name))
        return copy.deepcopy(job) if job is not None else None

    def create_job(self, body: dict[str, Any]) -> tuple[dict[str, Any], bool]:
        self._refuse()
        key = (body["metadata"]["namespace"], body["metadata"]["name"])
        if key in self.jobs:
            return copy.deepcopy(self.jobs[key]), False
        job = copy.deepcopy(body)
        job["metadata"]["uid"] = f"job-uid-{next(self._uids)}"
        job["status"] = {}
        self.jobs[key] = job
        return copy.deepcopy(job), True

    def delete_job(self, namespace: str, name: str) -> None:
        self.jobs.pop((namespace, name), None)
        self.pods.pop((namespace, name), None)

    def _ensure(self, store: dict[tuple[str, str], dict[str, Any]], body: dict[str, Any]) -> dict | None:
        self._refuse()
        key = (body["metadata"]["namespace"], body["metadata"]["name"])
        if key in store:
            return copy.deepcopy(store[key])
        store[key] = copy.deepcopy(body)
        store[key]["metadata"]["resourceVersion"] = str(next(self._versions))
        return None

    def _replace(self, store: dict[tuple[str, str], dict[str, Any]], body: dict[str, Any]) -> None:
        store[(body["metadata"]["namespace"], body["metadata"]["name"])] = copy.deepcopy(body)
        self.replaced += 1

    def ensure_configmap(self, body: dict[str, Any]) -> dict[str, Any] | None:
        return self._ensure(self.configmaps, body)

    def replace_configmap(self, body: dict[str, Any], existing: dict[str, Any]) -> None:
        self._replace(self.configmaps, body)

    def ensure_service(self, body: dict[str, Any]) -> dict[str, Any] | None:
        return self._ensure(self.services, body)

    def replace_service(self, body: dict[str, Any], existing: dict[str, Any]) -> None:
        self._replace(self.services, body)

    def ensure_network_policy(self, body: dict[str, Any]) -> dict[str, Any] | None:
        return self._ensure(self.network_policies, body)

    def replace_network_policy(self, body: dict[str, Any], existing: dict[str, Any]) -> None:
        self._replace(self.network_policies, body)

    def job_pods(self, namespace: str, job: str, uid: str | None = None) -> list[dict[str, Any]]:
        return copy.deepcopy(self.pods.get((namespace, job), []))

    def volume_claim_exists(self, namespace: str, name: str) -> bool:
        return (namespace, name) not in self.missing_claims

    def _refuse(self) -> None:
        """Raise the next injected API error (e.g. a 500 the real server will not produce on demand)."""
        if self.errors_to_inject:
            raise self.errors_to_inject.pop(0)

    def post_event(self, trace: dict[str, Any], kind: str, reason: str, message: str) -> None:
        self.events.append((kind, reason, message))


def owned_by(job: dict[str, Any], trace: dict[str, Any]) -> bool:
    return any(o.get("uid") == trace["metadata"]["uid"] for o in job["metadata"].get("ownerReferences", []))


def trace_name_of(job: dict[str, Any]) -> str | None:
    return (job["metadata"].get("annotations") or {}).get(labels.TRACE_NAME)


class RawResponse:
    """What the client returns with ``_preload_content=False``: the JSON body in ``.data``."""

    def __init__(self, body: dict[str, Any]) -> None:
        self.data = json.dumps(body).encode()


class FakeCore:
    """ConfigMaps of core/v1 with resourceVersions, counting each verb, for the history store's unit
    tests: a write at a stale resourceVersion answers 409 as the API server does, and ``before_write``
    puts another replica's write exactly between the store's read and its write (a race the real API
    server produces only by chance)."""

    def __init__(self) -> None:
        self.configmaps: dict[tuple[str, str], dict[str, Any]] = {}
        self.calls: Counter[str] = Counter()
        self.before_write: list[Callable[[], None]] = []  # run (once each) just before the next writes
        self.before_read: list[Callable[[], object]] = []  # run (once each) at the start of the next reads
        self.errors_to_inject: list[ApiException] = []  # raised by the next writes
        self._versions = itertools.count(1)

    def read_namespaced_config_map(self, name: str, namespace: str, **_: Any) -> RawResponse:
        self.calls["get"] += 1
        if self.before_read:
            self.before_read.pop(0)()
        found = self.configmaps.get((namespace, name))
        if found is None:
            raise ApiException(status=404, reason="Not Found")
        return RawResponse(found)

    def _before_write(self) -> None:
        if self.before_write:
            self.before_write.pop(0)()
        if self.errors_to_inject:
            raise self.errors_to_inject.pop(0)

    def create_namespaced_config_map(self, namespace: str, body: dict[str, Any], **_: Any) -> RawResponse:
        self.calls["create"] += 1
        self._before_write()
        key = (namespace, body["metadata"]["name"])
        if key in self.configmaps:
            raise conflict()
        return self._store(key, body)

    def replace_namespaced_config_map(self, name: str, namespace: str, body: dict[str, Any],
                                      **_: Any) -> RawResponse:
        self.calls["replace"] += 1
        self._before_write()
        current = self.configmaps.get((namespace, name))
        if current is None:
            raise ApiException(status=404, reason="Not Found")
        if body["metadata"].get("resourceVersion") != current["metadata"]["resourceVersion"]:
            raise conflict()
        return self._store((namespace, name), body)

    def _store(self, key: tuple[str, str], body: dict[str, Any]) -> RawResponse:
        stored = copy.deepcopy(body)
        stored["metadata"]["resourceVersion"] = str(next(self._versions))
        self.configmaps[key] = stored
        return RawResponse(stored)


def _satisfies(kube: FakeKube) -> KubeClient:
    return kube  # mypy (pyproject.toml's files) checks here that the fake implements the whole protocol
