"""The kopf decorators, and nothing else: each calls one handler module's function, which files the
trace's pass with the dispatcher (runtime/dispatch.py) and returns.

Only ``on.event`` handlers and a startup/cleanup pair: kopf then writes nothing onto the traces
(no finalizer, no progress annotations), so deleting a trace never waits for the operator.
"""

from __future__ import annotations

from typing import Any

import kopf
from influence_trace.api.spec import API_GROUP, API_VERSION, PLURAL

from influence_trace_operator.adapters import metrics
from influence_trace_operator.rules import labels
from influence_trace_operator.runtime import lifecycle, on_child, on_trace

CHILDREN = {labels.MANAGED_BY: labels.MANAGER}
# A failed start-up (e.g. the health port still taken) is retried this often rather than kopf's 60 s;
# nothing acts meanwhile (lifecycle.configure).
STARTUP_RETRY_SECONDS = 5


@kopf.on.startup(backoff=STARTUP_RETRY_SECONDS)
def startup(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    if "runtime" not in memo:  # main() puts it there; a bare `kopf run -m` reads the environment
        memo.runtime = lifecycle.build_runtime()
    lifecycle.configure(settings, memo.runtime)


@kopf.on.cleanup()
def cleanup(memo: kopf.Memo, **_: Any) -> None:
    lifecycle.shutdown(memo.runtime)


@kopf.on.event(API_GROUP, API_VERSION, PLURAL)
def trace_event(type: str | None, body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    metrics.note_trace(type, dict(body))
    on_trace.on_trace_event(memo.runtime.reconciler, type, dict(body), memo.runtime.submit)


@kopf.on.event("batch", "v1", "jobs", labels=CHILDREN)
def job_event(type: str | None, body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    on_child.on_job_event(memo.runtime.reconciler, type, dict(body), memo.runtime.submit)


@kopf.on.event("", "v1", "pods", labels=CHILDREN)
def pod_event(type: str | None, body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    on_child.on_pod_event(memo.runtime.reconciler, type, dict(body), memo.runtime.submit)
