"""The dispatcher of passes (runtime/dispatch.py): with every thread busy, a new trace's first placement
is served before an out-of-memory escalation, and both before the bookkeeping of running traces; a
trace waits once however many events file it, a trace filed during its own pass is passed again
after it, and a stop drops what waits and joins the threads."""

from __future__ import annotations

import copy
import json
import threading
import time
from collections.abc import Callable
from typing import Any

import kopf
import pytest
from influence_trace_operator.adapters import metrics
from influence_trace_operator.reconciler.reconcile import Reconciler
from influence_trace_operator.rules import labels
from influence_trace_operator.rules.settings import OperatorSettings
from influence_trace_operator.runtime import dispatch, lifecycle, on_child, on_trace
from influence_trace_operator.runtime.dispatch import FAILURE, FIRST, OTHER, Dispatcher

from tests.operator.fake_kube import FakeKube
from tests.operator.operator_builders import H100, H200, pod, trace_dict

NS = "team-a"
OOM = json.dumps({"reason": "GPUOutOfMemory", "stage": "hessian_solve", "message": "CUDA OOM"})


def eventually(check: Callable[[], bool], seconds: float = 5.0) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.005)


def add(kube: FakeKube, name: str) -> dict[str, Any]:
    body = trace_dict()
    body["metadata"]["name"] = name
    return kube.add_trace(body)


def worker_pod(kube: FakeKube, trace: str, phase: str, rv: int, **kw: Any) -> dict[str, Any]:
    """The pod of ``trace``'s first Job as its watch delivers it."""
    job = f"{trace}-a1"
    body = pod(phase, name=f"{job}-x", **kw)
    body["metadata"].update(
        namespace=NS, resourceVersion=str(rv),
        labels={labels.CONTROLLER_UID: kube.jobs[(NS, job)]["metadata"]["uid"],
                labels.MANAGED_BY: labels.MANAGER, labels.ATTEMPT: "1"},
        annotations={labels.TRACE_NAME: trace},
    )
    kube.pods[(NS, job)] = [copy.deepcopy(body)]
    return body


def placed(kube: FakeKube, reconciler: Reconciler, names: list[str]) -> None:
    """Traces whose first Job exists (placed in the caller's thread, the handlers' default)."""
    for name in names:
        on_trace.on_trace_event(reconciler, "ADDED", add(kube, name))
        assert (NS, f"{name}-a1") in kube.jobs


@pytest.mark.parametrize("with_classes", [True, False])
def test_with_the_threads_busy_a_first_placement_and_an_escalation_go_before_bookkeeping(
    with_classes: bool,
) -> None:
    kube = FakeKube()
    reconciler = Reconciler(kube, OperatorSettings(history=False), [H100, H200])
    placed(kube, reconciler, ["busy", "run-1", "run-2", "oom"])
    order: list[str] = []
    gate = threading.Event()

    def run(namespace: str, name: str) -> None:
        order.append(name)
        if name == "busy":
            gate.wait(5)
        reconciler.reconcile(namespace, name)

    pool = Dispatcher(run, threads=1)
    # without classes every pass is bookkeeping: the queue is first come, first served (as kopf's was)
    submit = pool.submit if with_classes else (lambda ns, name, _cls: pool.submit(ns, name, OTHER))
    pool.start()
    on_child.on_pod_event(reconciler, "MODIFIED", worker_pod(kube, "busy", "Running", 101), submit)
    eventually(lambda: order == ["busy"])  # the one thread is taken
    on_child.on_pod_event(reconciler, "MODIFIED", worker_pod(kube, "run-1", "Running", 102), submit)
    on_child.on_pod_event(reconciler, "MODIFIED", worker_pod(kube, "run-2", "Running", 103), submit)
    on_trace.on_trace_event(reconciler, "ADDED", add(kube, "new"), submit)
    failed = worker_pod(kube, "oom", "Failed", 104, exit_code=75, message=OOM)
    on_child.on_pod_event(reconciler, "MODIFIED", failed, submit)
    assert pool.depths() == ({"first": 1, "failure": 1, "other": 2} if with_classes
                             else {"first": 0, "failure": 0, "other": 4})
    gate.set()
    eventually(lambda: len(order) == 5 and pool.depths() == {"first": 0, "failure": 0, "other": 0})
    pool.close()
    assert pool.join(5)
    expected = ["busy", "new", "oom", "run-1", "run-2"] if with_classes else [
        "busy", "run-1", "run-2", "new", "oom"]
    assert order == expected
    assert (NS, "new-a1") in kube.jobs and (NS, "oom-a2") in kube.jobs  # the passes did their work
    assert kube.status_of(NS, "run-1")["phase"] == "Running"


def recorder(gate: threading.Event | None = None) -> tuple[Dispatcher, list[str]]:
    order: list[str] = []

    def run(namespace: str, name: str) -> None:
        order.append(name)
        if gate is not None and name == "busy":
            gate.wait(5)

    return Dispatcher(run, threads=1), order


def test_a_waiting_trace_is_passed_once_and_moves_up_to_its_most_urgent_class() -> None:
    gate = threading.Event()
    pool, order = recorder(gate)
    pool.start()
    pool.submit(NS, "busy", OTHER)
    eventually(lambda: order == ["busy"])
    pool.submit(NS, "a", OTHER)
    pool.submit(NS, "b", OTHER)
    for _ in range(3):
        pool.submit(NS, "a", OTHER)  # level-triggered: one pass reads the latest state
    pool.submit(NS, "b", FAILURE)  # its pod failed meanwhile: ahead of a
    pool.submit(NS, "b", OTHER)  # a later, less urgent event does not move it back
    assert pool.depths() == {"first": 0, "failure": 1, "other": 1}
    gate.set()
    eventually(lambda: len(order) == 3)
    time.sleep(0.05)
    pool.close()
    assert pool.join(5) and order == ["busy", "b", "a"]


def test_a_trace_filed_during_its_own_pass_is_passed_again_after_it_never_beside_it() -> None:
    gate = threading.Event()
    running: list[str] = []
    order: list[str] = []
    overlap: list[str] = []

    def run(namespace: str, name: str) -> None:
        if name in running:
            overlap.append(name)
        running.append(name)
        order.append(name)
        if len(order) == 1:
            gate.wait(5)
        running.remove(name)

    pool = Dispatcher(run, threads=4)
    pool.start()
    pool.submit(NS, "busy", OTHER)
    eventually(lambda: order == ["busy"])
    pool.submit(NS, "busy", OTHER)  # the running pass may have read the state before this event
    pool.submit(NS, "busy", FIRST)
    time.sleep(0.05)
    assert order == ["busy"]  # three idle threads, yet no second pass of the same trace beside it
    gate.set()
    eventually(lambda: len(order) == 2)
    time.sleep(0.05)
    pool.close()
    assert pool.join(5) and order == ["busy", "busy"] and overlap == []


def test_a_failing_pass_does_not_stop_its_thread() -> None:
    order: list[str] = []

    def run(namespace: str, name: str) -> None:
        order.append(name)
        if name == "bad":
            raise RuntimeError("boom")

    pool = Dispatcher(run, threads=1)
    pool.start()
    pool.submit(NS, "bad", FIRST)
    pool.submit(NS, "good", OTHER)
    eventually(lambda: order == ["bad", "good"])
    pool.close()
    assert pool.join(5)


def test_close_drops_what_waits_and_the_threads_end_after_their_pass() -> None:
    gate = threading.Event()
    pool, order = recorder(gate)
    pool.start()
    pool.start()  # a retried start-up starts no more threads
    assert len(pool.threads) == 1
    pool.submit(NS, "busy", OTHER)
    eventually(lambda: order == ["busy"])
    pool.submit(NS, "waiting", FIRST)
    pool.close()
    pool.submit(NS, "late", FIRST)  # ignored once closed
    assert not pool.join(0.05)  # the pass in flight holds its thread
    gate.set()
    assert pool.join(5) and order == ["busy"]


def test_the_runtime_files_handler_passes_with_its_dispatcher_and_the_stop_joins_its_threads() -> None:
    kube = FakeKube()
    kube.add_trace(trace_dict())
    settings = OperatorSettings(history=False, lease=False, liveness_port=0, workers=3, progress_seconds=0,
                                resync_seconds=30, shutdown_seconds=5)
    rt = lifecycle.build_runtime(settings, kube=kube)
    kopf_settings = kopf.OperatorSettings()
    lifecycle.configure(kopf_settings, rt)
    assert rt.dispatcher is not None and len(rt.dispatcher.threads) == 3
    assert kopf_settings.execution.max_workers == lifecycle.HANDLER_THREADS
    assert b'influencetrace_pass_queue{class="first"} 0.0' in metrics.exposition()
    on_trace.on_trace_event(rt.reconciler, "ADDED", kube.get_trace(NS, "demo"), rt.submit)
    eventually(lambda: (NS, "demo-a1") in kube.jobs)
    lifecycle.shutdown(rt)
    assert not any(t.is_alive() for t in rt.dispatcher.threads) and kube.closed
    assert b'influencetrace_pass_wait_seconds_count{class="first"}' in metrics.exposition()


def test_at_once_runs_the_pass_in_the_callers_thread() -> None:
    seen: list[tuple[str, str, str]] = []
    submit = dispatch.at_once(lambda ns, name: seen.append((ns, name, threading.current_thread().name)))
    submit(NS, "x", OTHER)
    assert seen == [(NS, "x", threading.current_thread().name)]
