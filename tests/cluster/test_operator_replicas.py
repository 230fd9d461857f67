"""Two operator replicas on one namespace: only the Lease holder acts; the other takes over when the
holder is killed (kill -9, so the Lease lapses rather than being handed back)."""

from __future__ import annotations

import time
from pathlib import Path

from tests.cluster import kube
from tests.cluster.operator_fixtures import (
    BIG_GPU_BYTES,
    Operator,
    events_of,
    jobs_of,
    trace_manifest,
    wait_phase,
)

LEASE = "influence-trace-operator"
ESCALATES = {kube.SIMULATE_GPU_BYTES: BIG_GPU_BYTES, kube.SIMULATE_DURATION: "2s"}


def holder(namespace: str) -> str | None:
    lease = kube.get("lease", LEASE, namespace)
    return (lease or {}).get("spec", {}).get("holderIdentity")


def converged_once(name: str, namespace: str, attempts: int) -> None:
    """Succeeded on h200 after ``attempts`` Jobs, with exactly one JobCreated event per Job."""
    obj = wait_phase(name, namespace, ("Succeeded", "Failed"), timeout=90)
    assert obj["status"]["phase"] == "Succeeded" and obj["status"]["attempt"] == attempts, obj["status"]
    assert obj["status"]["pool"] == "h200"
    assert jobs_of(name, namespace) == [f"{name}-a{i}" for i in range(1, attempts + 1)]
    reasons = [reason for _, reason, _ in events_of(name, namespace)]
    assert reasons.count("JobCreated") == attempts and "JobAdopted" not in reasons, reasons


def test_a_second_replica_waits_and_takes_over_when_the_first_dies(
    namespace: str, op, tmp_path: Path
) -> None:
    op.start()
    first = kube.wait_for(lambda: holder(namespace), 90, description="first replica holds the Lease")
    (tmp_path / "second").mkdir()
    second = Operator(namespace, tmp_path / "second").start()
    try:
        kube.wait_for(lambda: "waiting for Lease" in second.logs(), 90, description="second up")
        time.sleep(2)  # the second replica is up, watching, and sees the Lease held
        kube.apply(trace_manifest("one", annotations=ESCALATES), namespace)
        converged_once("one", namespace, attempts=2)
        assert holder(namespace) == first
        assert "holding Lease" not in second.logs() and "waiting for Lease" in second.logs()

        op.kill()
        kube.apply(trace_manifest("two", annotations=ESCALATES), namespace)
        time.sleep(1)
        assert jobs_of("two", namespace) == []  # nobody acts while the dead holder's Lease runs
        took = kube.wait_for(
            lambda: (h := holder(namespace)) != first and h, 60, description="second replica takes the Lease"
        )
        converged_once("two", namespace, attempts=1)  # history: straight to h200
        assert "holding Lease" in second.logs() and took == holder(namespace)
        assert kube.get("lease", LEASE, namespace)["spec"]["leaseTransitions"] == 1
    finally:
        second.stop()
