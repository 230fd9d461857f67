"""Watch-fed local copies of the traces, Jobs and Pods the operator watches (an informer cache).

kopf already streams every trace and every Job and Pod with the operator's label; keeping the latest
copy of each lets a reconcile pass read them from memory, so a pass makes only its writes (under a
burst of 1,000 traces the reads were most of the API server's work and of each pass's time). The
cache holds what the watches delivered, plus the API server's answers to the operator's own reads and
status writes (each a complete object at its resourceVersion, so it is exactly what the watch will
deliver), and may lag the server by one event:

- a stale trace costs a 409 on the status write (its resourceVersion is the one read); the pass then
  reads the trace from the API server. The answer to a status write replaces the copy at once, so the
  next pass starts from the state just written, not from the one it replaced, and reads nothing;
- a Job missing from the cache (not yet delivered, or deleted) is read from the API server;
- pods are read from the cache while nothing is decided from them; a pass whose cached Job or pods
  would end the attempt or count an eviction lists them from the API server first (except a one-pod
  Job's ended worker pod, which is final: reconcile.Reconciler._pods).

Objects are stored without ``metadata.managedFields`` (the bulk of a pod's size) and are never
mutated after they are stored: a reader may hold one while the watch replaces it.

A Job or pod of an attempt its trace has moved past (the stored trace is Succeeded or Failed, or names
a later attempt) is not kept: a pass reads only its trace's current attempt, and finished traces stay
in the cluster for weeks, so their children would otherwise grow the operator's memory without bound
(and be loaded again by every restart). Such an object's events wake no pass (on_child.py).
"""

from __future__ import annotations

import threading
from typing import Any

from influence_trace.api.status import TERMINAL_PHASES

from influence_trace_operator.rules import labels

Key = tuple[str, str]


def _key(body: dict[str, Any]) -> Key:
    meta = body.get("metadata") or {}
    return meta.get("namespace") or "", meta.get("name") or ""


def _slim(body: dict[str, Any]) -> dict[str, Any]:
    meta = {k: v for k, v in (body.get("metadata") or {}).items() if k != "managedFields"}
    return {**body, "metadata": meta}


def _version(body: dict[str, Any] | None) -> int | None:
    rv = ((body or {}).get("metadata") or {}).get("resourceVersion")
    return int(rv) if isinstance(rv, str) and rv.isdigit() else None


def newer(old: dict[str, Any] | None, new: dict[str, Any]) -> bool:
    """Whether ``new`` may replace ``old``: not when both resourceVersions are numbers (etcd's are)
    and ``new``'s is smaller, i.e. a late watch event or a read older than what is stored."""
    a, b = _version(old), _version(new)
    return a is None or b is None or b >= a


class Informer:
    """The latest watched copy of each trace, Job and Pod; thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._traces: dict[Key, dict[str, Any]] = {}
        self._jobs: dict[Key, dict[str, Any]] = {}
        self._pods: dict[Key, dict[str, Any]] = {}
        self._pods_by_job: dict[str, set[Key]] = {}  # Job uid -> its pods' keys
        self._children: dict[Key, set[tuple[str, Key]]] = {}  # trace key -> its stored Jobs and pods

    # ---- the watches write -------------------------------------------------------------------
    def put(self, kind: str, event_type: str | None, body: dict[str, Any]) -> dict[str, Any] | None:
        """Store a watch event's object ('trace', 'job' or 'pod'; DELETED removes it); returns the copy
        it replaced (None when it is new), so a handler can tell what changed."""
        store = self._store(kind)
        key = _key(body)
        with self._lock:
            old = store.get(key)
            if event_type == "DELETED" or (kind != "trace" and self._moved_past(body)):
                self._drop(kind, key)
            elif newer(old, body):
                store[key] = _slim(body)
                self._unindex(kind, key, old)
                self._index(kind, key, body)
                if kind == "trace":
                    self._drop_finished_children(key)
            return old

    def moved_past(self, body: dict[str, Any]) -> bool:
        """Whether this Job or pod belongs to an attempt its stored trace has moved past."""
        with self._lock:
            return self._moved_past(body)

    def _store(self, kind: str) -> dict[Key, dict[str, Any]]:
        return {"trace": self._traces, "job": self._jobs, "pod": self._pods}[kind]

    def _moved_past(self, body: dict[str, Any]) -> bool:
        trace_key, attempt = owner(body)
        status = (self._traces.get(trace_key) or {}).get("status") or {}
        if attempt is None or not status:
            return False
        current = status.get("attempt")
        return status.get("phase") in TERMINAL_PHASES or (isinstance(current, int) and current > attempt)

    def _drop_finished_children(self, trace_key: Key) -> None:
        for kind, key in list(self._children.get(trace_key, ())):
            body = self._store(kind).get(key)
            if body is not None and self._moved_past(body):
                self._drop(kind, key)

    def _drop(self, kind: str, key: Key) -> None:
        """Remove a stored copy (if any) and its index entries."""
        self._unindex(kind, key, self._store(kind).pop(key, None))

    def refresh_trace(self, body: dict[str, Any]) -> None:
        """A trace the API server answered with (a read after a conflict or a miss, or the operator's
        own status write): kept unless the watch has delivered a newer one."""
        self.put("trace", "MODIFIED", body)

    def _index(self, kind: str, key: Key, body: dict[str, Any]) -> None:
        if kind == "trace":
            return
        _add(self._children, owner(body)[0], (kind, key))
        uid = job_uid(body) if kind == "pod" else None
        if uid:
            _add(self._pods_by_job, uid, key)

    def _unindex(self, kind: str, key: Key, old: dict[str, Any] | None) -> None:
        if kind == "trace" or old is None:
            return
        _discard(self._children, owner(old)[0], (kind, key))
        uid = job_uid(old) if kind == "pod" else None
        if uid:
            _discard(self._pods_by_job, uid, key)

    def sizes(self) -> dict[str, int]:
        """How many copies of each kind are held (the ``influencetrace_informer_objects`` gauge)."""
        with self._lock:
            return {"trace": len(self._traces), "job": len(self._jobs), "pod": len(self._pods)}

    # ---- the passes read ---------------------------------------------------------------------
    def trace(self, namespace: str, name: str) -> dict[str, Any] | None:
        with self._lock:
            return self._traces.get((namespace, name))

    def running(self) -> list[Key]:
        """The traces whose stored phase is Running (the progress loop reads their logs)."""
        with self._lock:
            return sorted(k for k, t in self._traces.items()
                          if (t.get("status") or {}).get("phase") == "Running")

    def job(self, namespace: str, name: str) -> dict[str, Any] | None:
        with self._lock:
            return self._jobs.get((namespace, name))

    def pods_of(self, job_uid: str) -> list[dict[str, Any]]:
        """The cached pods of the Job with this uid (the Job controller's label on each pod)."""
        with self._lock:
            keys = sorted(self._pods_by_job.get(job_uid, ()))
            return [self._pods[k] for k in keys]


def _add(index: dict[Any, set[Any]], key: Any, item: Any) -> None:
    index.setdefault(key, set()).add(item)


def _discard(index: dict[Any, set[Any]], key: Any, item: Any) -> None:
    if key in index:
        index[key].discard(item)
        if not index[key]:
            del index[key]


def owner(child: dict[str, Any]) -> tuple[Key, int | None]:
    """The (namespace, name) of the trace a Job or pod belongs to, and its attempt (None if unlabelled)."""
    meta = child.get("metadata") or {}
    attempt = (meta.get("labels") or {}).get(labels.ATTEMPT, "")
    trace = (meta.get("annotations") or {}).get(labels.TRACE_NAME) or ""
    return (meta.get("namespace") or "", trace), int(attempt) if attempt.isdigit() else None


def job_uid(pod: dict[str, Any]) -> str | None:
    found = (pod.get("metadata") or {}).get("labels") or {}
    return found.get(labels.CONTROLLER_UID) or found.get("controller-uid")
