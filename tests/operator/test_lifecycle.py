"""Start and stop of the operator process without a cluster (the cluster test is
tests/cluster/test_operator_stop.py): the Lease gates every pass from the moment the runtime exists,
a start-up retried after a failure starts each thread once, and a stop joins what it started."""

from __future__ import annotations

import socket
import threading
import time
from types import SimpleNamespace

import kopf
import pytest
from influence_trace.api.progress import Progress
from influence_trace_operator.rules.settings import OperatorSettings
from influence_trace_operator.runtime import lifecycle, on_child

from tests.operator.fake_kube import FakeKube
from tests.operator.operator_builders import trace_dict
from tests.operator.test_informer import NAME, NS, deliver_trace, launched, watched_pod


def runtime(kube: FakeKube, **settings: object) -> lifecycle.Runtime:
    """A runtime on the in-memory Kube; its Lease client points at a port where nothing listens, so the
    Lease is never gained (as when another replica holds it)."""
    base = {"history": False, "resync_seconds": 0.05, "lease_seconds": 3.0, "shutdown_seconds": 5.0,
            "lease_namespace": "default"}
    rt = lifecycle.build_runtime(OperatorSettings(**{**base, **settings}), kube=kube)
    if rt.lease is not None:
        rt.lease.coord.api_client.configuration.host = "http://127.0.0.1:9"
    return rt


@pytest.fixture()
def kube() -> FakeKube:
    fake = FakeKube()
    fake.add_trace(trace_dict())
    return fake


def ours(rt: lifecycle.Runtime) -> list[threading.Thread]:
    """Live threads the runtime started: its named ones and the dispatcher's pass threads."""
    started = [*rt.threads.values(), *(rt.dispatcher.threads if rt.dispatcher else [])]
    return [t for t in threading.enumerate() if t in started]


def test_without_the_lease_a_failed_start_acts_on_nothing_and_a_retry_starts_each_thread_once(
    kube: FakeKube,
) -> None:
    taken = socket.socket()
    taken.bind(("0.0.0.0", 0))
    taken.listen()
    rt = runtime(kube, liveness_port=taken.getsockname()[1])
    try:
        assert not rt.reconciler.may_act()  # before any thread or handler runs
        with pytest.raises(OSError):
            lifecycle.configure(kopf.OperatorSettings(), rt)
        assert rt.threads == {}
        rt.reconciler.reconcile(NS, NAME)
        taken.close()
        lifecycle.configure(kopf.OperatorSettings(), rt)
        lifecycle.configure(kopf.OperatorSettings(), rt)
        assert sorted(rt.threads) == ["lease", "progress", "resync"]
        assert len(ours(rt)) == 3 + rt.settings.workers  # and the dispatcher's, each started once
        threading.Event().wait(0.3)  # several resync periods
        assert kube.jobs == {} and kube.status_writes == 0 and kube.events == []
    finally:
        lifecycle.shutdown(rt)
    assert ours(rt) == [] and kube.closed and rt.health is not None


def test_without_a_lease_the_runtime_acts_until_the_stop_begins(kube: FakeKube) -> None:
    rt = runtime(kube, lease=False, liveness_port=0)
    assert rt.lease is None and rt.reconciler.may_act()
    lifecycle.configure(kopf.OperatorSettings(), rt)
    lifecycle.shutdown(rt)
    assert not rt.reconciler.may_act() and ours(rt) == []


class LogCore:
    """pods/log of the worker: serves ``lines`` and counts the reads."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.reads = 0

    def read_namespaced_pod_log(self, pod: str, namespace: str, **_: object) -> SimpleNamespace:
        self.reads += 1
        return SimpleNamespace(data="\n".join(self.lines).encode())


def test_the_progress_loop_reads_each_running_trace_once_per_period_and_est_time_counts_down(
    kube: FakeKube,
) -> None:
    rt = runtime(kube, lease=False, progress_seconds=0.2)  # rounds are run by hand below
    core = kube.core = LogCore()
    launched(kube, rt.reconciler)
    on_child.on_pod_event(rt.reconciler, "MODIFIED", watched_pod(kube, "Running", 101))
    deliver_trace(kube, rt.reconciler)
    assert rt.reconciler.informer.running() == [(NS, NAME)]
    predicted = kube.status_of(NS, NAME)["estimate"]["time"]
    reads = core.reads
    assert lifecycle.progress_once(rt) == 0  # passed a moment ago (the pod's event)
    time.sleep(0.15)
    core.lines.append(Progress("hessian", 7, 14, "module", 30.0).line())
    assert lifecycle.progress_once(rt) == 1 and core.reads == reads + 1
    status = kube.status_of(NS, NAME)
    assert status["progress"]["text"] == "7/14 modules"
    assert status["estimate"]["time"] == f"{status['progress']['eta']} left" != predicted
    deliver_trace(kube, rt.reconciler)
    time.sleep(0.15)
    core.lines.append(Progress("hessian", 13, 14, "module", 50.0).line())
    assert lifecycle.progress_once(rt) == 1 and core.reads == reads + 2
    assert kube.status_of(NS, NAME)["progress"]["text"] == "13/14 modules"
    lifecycle.shutdown(rt)
