"""How the operator starts and stops, on the local control plane.

* A start-up that fails part-way (the health port taken) acts on nothing while another replica holds
  the Lease, and starts each background thread once however many times kopf retries it (issue 28.1).
* SIGTERM after real work (an escalation and a success) exits 0 every time, hands the Lease back and
  leaves the last history observations in the ConfigMap (issue 29).
"""

from __future__ import annotations

import json
import signal
import socket
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from tests.cluster import kube
from tests.cluster.operator_fixtures import (
    BIG_GPU_BYTES,
    Operator,
    events_of,
    get_trace,
    jobs_of,
    trace_manifest,
    wait_phase,
)
from tests.cluster.test_operator_replicas import LEASE, holder

HISTORY = "influence-trace-history"
ESCALATES = {kube.SIMULATE_GPU_BYTES: BIG_GPU_BYTES, kube.SIMULATE_DURATION: "1s"}
STOPS = 5


def _lease(holder: str, renewed: str) -> dict:
    return {
        "apiVersion": "coordination.k8s.io/v1",
        "kind": "Lease",
        "metadata": {"name": LEASE},
        "spec": {"holderIdentity": holder, "leaseDurationSeconds": 5, "renewTime": renewed},
    }


class OtherReplica:
    """Another replica holding the operator's Lease: renews it every second until ``stop()``."""

    def __init__(self, namespace: str) -> None:
        self.namespace = namespace
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._renew, daemon=True)

    def _renew(self) -> None:
        while not self._stop.is_set():
            now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
            kube.apply(_lease("other-replica", now), self.namespace)
            self._stop.wait(1.0)

    def __enter__(self) -> OtherReplica:
        kube.apply(_lease("other-replica", datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")),
                   self.namespace)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=30)

    def __exit__(self, *exc: object) -> None:
        self.stop()


def test_a_start_that_fails_on_its_health_port_acts_on_nothing_without_the_lease(
    namespace: str, op: Operator
) -> None:
    """Before the fix the resync thread was already running, ungated, when the port bind failed: it
    created the trace's Job while another replica held the Lease, and each retry added a thread."""
    taken = socket.socket()
    taken.bind(("0.0.0.0", 0))
    taken.listen()
    port = taken.getsockname()[1]
    with OtherReplica(namespace) as other:
        op.start(INFLUENCETRACE_LIVENESS_PORT=str(port))
        kube.wait_for(lambda: op.logs().count("Address already in use") >= 1, 60,
                      description="the health server's bind failed")
        kube.apply(trace_manifest("blocked"), namespace)
        time.sleep(8)  # four resync periods, and the trace's own watch event
        assert jobs_of("blocked", namespace) == []
        assert not (get_trace("blocked", namespace).get("status") or {}).get("phase")
        assert events_of("blocked", namespace) == []
        assert holder(namespace) == "other-replica"
        taken.close()  # kopf's retry of the start-up now binds the port
        kube.wait_for(lambda: "health and metrics on" in op.logs(), 60, description="start-up retried")
        time.sleep(4)
        assert jobs_of("blocked", namespace) == [] and holder(namespace) == "other-replica"
        other.stop()
    obj = wait_phase("blocked", namespace, ("Succeeded", "Failed"), timeout=90)
    assert obj["status"]["phase"] == "Succeeded" and jobs_of("blocked", namespace) == ["blocked-a1"]
    assert holder(namespace) not in (None, "other-replica")
    logs = op.logs()
    assert logs.count("Address already in use") >= 2, "kopf retried the start-up at least once"
    for thread in ("resync", "lease", "progress"):
        assert logs.count(f"started thread {thread}") == 1, logs[-4000:]


def _history(namespace: str) -> list[dict]:
    cm = kube.get("configmap", HISTORY, namespace)
    return json.loads(cm["data"]["history.json"])["observations"] if cm else []


def _work_then_sigterm(namespace: str, log_dir: Path) -> tuple[int, str]:
    """One operator: a trace escalates h100 -> h200 and succeeds, then SIGTERM; (exit code, logs)."""
    op = Operator(namespace, log_dir).start(INFLUENCETRACE_HISTORY_FLUSH_SECONDS="5")
    try:
        kube.apply(trace_manifest("work", annotations=ESCALATES), namespace)
        obj = wait_phase("work", namespace, ("Succeeded", "Failed"), timeout=120)
        assert obj["status"]["phase"] == "Succeeded" and obj["status"]["attempt"] == 2, obj["status"]
        assert op.proc is not None
        op.proc.send_signal(signal.SIGTERM)
        code = op.proc.wait(timeout=60)
        op.proc = None
    finally:
        op.kill()
    return code, op.logs()


@pytest.mark.parametrize("repetition", range(STOPS))
def test_sigterm_after_an_escalation_and_a_success_exits_0_and_hands_everything_over(
    repetition: int, namespace: str, crd: None, tmp_path: Path
) -> None:
    """Each repetition in its own namespace (its own history): exit 0, never 134 (SIGABRT at
    interpreter exit, 7 of 9 stops before the fix); the Lease handed back; both attempts' observations
    written by the stop itself (the flush period is longer than the time from success to SIGTERM)."""
    code, logs = _work_then_sigterm(namespace, tmp_path)
    assert code == 0, f"exit code {code}\n{logs[-6000:]}"
    assert "Fatal Python error" not in logs and "stopped in" in logs
    assert holder(namespace) is None
    seen = [(o["pool"], o["outcome"]) for o in _history(namespace)]
    assert seen == [("h100", "GPUOutOfMemory"), ("h200", "Succeeded")], seen
