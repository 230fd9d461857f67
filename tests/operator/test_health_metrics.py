"""The health port: /healthz fails while a reconcile pass or the resync loop is wedged, and /metrics
counts launches, outcomes, escalations, refusals and pass durations of real Reconciler passes (the
in-memory Kube stands in for the API: a pass that hangs inside an API call cannot be staged on demand)."""

from __future__ import annotations

import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
from influence_trace_operator.adapters import health, metrics
from influence_trace_operator.adapters.informer import Informer
from influence_trace_operator.reconciler.reconcile import Reconciler
from influence_trace_operator.rules.settings import OperatorSettings
from prometheus_client.parser import text_string_to_metric_families

from tests.operator.fake_kube import FakeKube
from tests.operator.operator_builders import H100, H200, trace_dict
from tests.operator.test_reconciler import NAME, NS, gpu_oom_pod, success_pod


class HangingKube(FakeKube):
    """get_trace blocks while ``hang`` is set: a pass stuck in an API call that never answers."""

    def __init__(self) -> None:
        super().__init__()
        self.hang = threading.Event()
        self.release = threading.Event()

    def get_trace(self, namespace: str, name: str) -> dict[str, Any] | None:
        if self.hang.is_set():
            self.release.wait(10)
        return super().get_trace(namespace, name)


def get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode()


@pytest.fixture()
def kube() -> HangingKube:
    fake = HangingKube()
    fake.add_trace(trace_dict())
    return fake


@pytest.fixture()
def reconciler(kube: HangingKube) -> Reconciler:
    settings = OperatorSettings(wedged_seconds=0.5, resync_seconds=1.0)
    return Reconciler(kube, settings, [H100, H200])


@pytest.fixture()
def base(reconciler: Reconciler) -> Iterator[str]:
    server = health.serve(reconciler.watchdog, 0, host="127.0.0.1")
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def samples() -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(metrics.exposition().decode()):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def test_healthz_fails_while_a_reconcile_pass_is_wedged_and_recovers(
    kube: HangingKube, reconciler: Reconciler, base: str
) -> None:
    assert get(f"{base}/healthz") == (200, "ok\n")
    kube.hang.set()
    stuck = threading.Thread(target=reconciler.reconcile, args=(NS, NAME))
    stuck.start()
    time.sleep(0.3)
    assert get(f"{base}/healthz")[0] == 200  # slow, not yet wedged
    time.sleep(0.5)
    code, body = get(f"{base}/healthz")
    assert code == 500 and f"reconcile of {NS}/{NAME} running for" in body
    kube.release.set()
    stuck.join(5)
    reconciler.watchdog.resync_tick()
    assert get(f"{base}/healthz") == (200, "ok\n")


def test_healthz_fails_when_the_resync_loop_stops_going_round(reconciler: Reconciler, base: str) -> None:
    reconciler.watchdog.last_resync = time.monotonic() - 1.6  # period 1 s + wedged 0.5 s exceeded
    code, body = get(f"{base}/healthz")
    assert code == 500 and "resync loop has not gone round" in body
    reconciler.watchdog.resync_tick()
    assert get(f"{base}/healthz")[0] == 200


def test_metrics_count_launches_outcomes_escalations_and_pass_times(
    kube: HangingKube, reconciler: Reconciler, base: str
) -> None:
    before = samples()
    reconciler.reconcile(NS, NAME)
    kube.finish_job(NS, "demo-a1", "Failed", gpu_oom_pod())
    reconciler.reconcile(NS, NAME)
    kube.finish_job(NS, "demo-a2", "Complete", success_pod())
    reconciler.reconcile(NS, NAME)
    reconciler.reconcile(NS, NAME)  # terminal: nothing more counted
    code, text = get(f"{base}/metrics")
    assert code == 200 and "influencetrace_reconcile_seconds_bucket" in text
    after = samples()

    def grew(name: str, **labels: str) -> float:
        key = (name, tuple(sorted(labels.items())))
        return after.get(key, 0.0) - before.get(key, 0.0)

    assert grew("influencetrace_jobs_launched_total") == 2
    assert grew("influencetrace_attempts_total", outcome="GPUOutOfMemory") == 1
    assert grew("influencetrace_attempts_total", outcome="Succeeded") == 1
    assert grew("influencetrace_escalations_total", from_pool="h100", to_pool="h200") == 1
    assert grew("influencetrace_reconcile_seconds_count") == 4


def test_a_refused_placement_is_counted_by_reason(kube: HangingKube, reconciler: Reconciler) -> None:
    kube.traces.clear()
    kube.add_trace(trace_dict(resources={"gpus": 1, "pools": ["h100"]},
                              model={"path": "/m", "preset": "qwen2.5-72b"}))
    before = samples()
    reconciler.reconcile(NS, NAME)
    status = kube.status_of(NS, NAME)
    assert status["phase"] == "Failed" and kube.jobs == {}
    reason = next(c["reason"] for c in status["conditions"] if c["type"] == "Placed")
    key = ("influencetrace_placement_refusals_total", (("reason", reason),))
    assert samples()[key] - before.get(key, 0.0) == 1


def test_the_phase_gauge_follows_the_watch_stream() -> None:
    body = {"metadata": {"namespace": "gauge-ns", "name": "g1"}, "status": {"phase": "Running"}}
    running = ("influencetrace_traces", (("phase", "Running"),))
    done = ("influencetrace_traces", (("phase", "Succeeded"),))
    start = samples()
    metrics.note_trace(None, body)
    assert samples()[running] == start[running] + 1
    metrics.note_trace("MODIFIED", {**body, "status": {"phase": "Succeeded"}})
    assert (samples()[running], samples()[done]) == (start[running], start[done] + 1)
    metrics.note_trace("DELETED", body)
    assert samples()[done] == start[done]


def test_the_informer_gauge_counts_the_copies_held() -> None:
    informer = Informer()
    metrics.CACHE.sizes = informer.sizes
    trace = {"metadata": {"namespace": "gauge-ns", "name": "g1", "resourceVersion": "3"}, "status": {}}
    pod = {"metadata": {"namespace": "gauge-ns", "name": "g1-a1-x", "resourceVersion": "4"}, "status": {}}
    informer.put("trace", "ADDED", trace)
    informer.put("pod", "ADDED", pod)
    held = lambda kind: samples()[("influencetrace_informer_objects", (("kind", kind),))]  # noqa: E731
    assert (held("trace"), held("job"), held("pod")) == (1, 0, 1)
    informer.put("pod", "DELETED", pod)
    assert held("pod") == 0
