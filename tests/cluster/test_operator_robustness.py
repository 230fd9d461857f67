"""Restarts at several points, deletion with the operator down, and immutability of a started spec."""

from __future__ import annotations

import time

from influence_trace.api.spec import parse_manifest
from influence_trace_operator.rules.jobs import TraceRef, build_configmap, build_job
from influence_trace_operator.rules.policies import placement_on
from influence_trace_operator.rules.pools import load_table
from influence_trace_operator.rules.settings import OperatorSettings

from tests.cluster import kube
from tests.cluster.operator_fixtures import (
    BIG_GPU_BYTES,
    events_of,
    get_trace,
    jobs_of,
    trace_manifest,
    wait_phase,
)

SLOW = {kube.SIMULATE_GPU_BYTES: BIG_GPU_BYTES, kube.SIMULATE_DURATION: "4s"}


def _converged(name: str, namespace: str) -> dict:
    obj = wait_phase(name, namespace, ("Succeeded", "Failed"), timeout=90)
    assert obj["status"]["phase"] == "Succeeded", obj["status"]
    assert (obj["status"]["pool"], obj["status"]["attempt"]) == ("h200", 2)
    assert [a["attempt"] for a in obj["status"]["attempts"]] == [1, 2]
    assert jobs_of(name, namespace) == [f"{name}-a1", f"{name}-a2"]
    return obj


def test_restart_before_any_job(namespace: str, op) -> None:
    """Traces created while the operator is down are placed when it starts."""
    kube.apply(trace_manifest("r0", annotations={kube.SIMULATE_GPU_BYTES: BIG_GPU_BYTES}), namespace)
    time.sleep(1)
    assert jobs_of("r0", namespace) == [] and "status" not in get_trace("r0", namespace)
    op.start()
    _converged("r0", namespace)


def test_restart_while_attempt_one_runs(namespace: str, op) -> None:
    """Killed after Job 1 exists; Job 1 runs out of GPU memory while the operator is down."""
    op.start()
    kube.apply(trace_manifest("r1", annotations=SLOW), namespace)
    kube.wait_for(lambda: jobs_of("r1", namespace) == ["r1-a1"], 30, description="job a1")
    op.kill()
    kube.wait_for_job("r1-a1", namespace, timeout=30)
    assert jobs_of("r1", namespace) == ["r1-a1"]
    op.start()
    _converged("r1", namespace)


def test_restart_during_the_escalation(namespace: str, op) -> None:
    """Killed once the escalation's Job 2 exists: the restarted operator follows it, no Job 3."""
    op.start()
    kube.apply(trace_manifest("r2", annotations=SLOW), namespace)
    kube.wait_for(lambda: "r2-a2" in jobs_of("r2", namespace), 40, description="job a2")
    op.kill()
    assert get_trace("r2", namespace)["status"]["phase"] in ("Escalating", "Running")
    op.start()
    _converged("r2", namespace)


def test_restart_between_job_creation_and_status_write(namespace: str, op) -> None:
    """The crash window of a pass: the Job exists but the status never said so. It is adopted."""
    kube.apply(trace_manifest("r3", annotations={kube.SIMULATE_GPU_BYTES: BIG_GPU_BYTES}), namespace)
    obj = get_trace("r3", namespace)
    meta = obj["metadata"]
    trace = parse_manifest({**obj, "metadata": {"name": meta["name"], "annotations": meta["annotations"]}})
    ref = TraceRef(meta["name"], namespace, meta["uid"])
    h100 = next(p for p in load_table(None) if p.name == "h100")
    settings = OperatorSettings()
    kube.apply(build_configmap(trace, ref), namespace)
    kube.apply(build_job(trace, ref, placement_on(h100, 1, 4 * 2**30), settings), namespace)
    op.start()
    _converged("r3", namespace)
    assert any(r == "JobAdopted" for _, r, _ in events_of("r3", namespace))


def test_deletion_removes_jobs_and_pods_even_with_the_operator_down(namespace: str, op) -> None:
    op.start()
    spec = trace_manifest("del", pod={"labels": {kube.SIMULATE_LABEL: "hang"}})
    kube.apply(spec, namespace)
    wait_phase("del", namespace, ("Running",), timeout=30)
    assert not get_trace("del", namespace)["metadata"].get("finalizers")
    op.kill()
    kube.kubectl("delete", "influencetrace", "del", "--wait=true", "--timeout=30s", namespace=namespace)
    kube.wait_for(lambda: jobs_of("del", namespace) == [], 60, description="jobs garbage-collected")
    kube.wait_for(
        lambda: not kube.list_objects("pods", namespace, selector="influencetrace.dev/trace=del"),
        60,
        description="pods garbage-collected",
    )
    assert kube.get("configmap", "del-manifest", namespace) is None


def test_spec_is_immutable_once_started(namespace: str, op) -> None:
    op.start()
    kube.apply(trace_manifest("imm", pod={"labels": {kube.SIMULATE_LABEL: "hang"}}), namespace)
    wait_phase("imm", namespace, ("Pending", "Running"), timeout=30)
    proc = kube.kubectl(
        "patch",
        "influencetrace",
        "imm",
        "--type=merge",
        "-p",
        '{"spec":{"trace":{"factor":64}}}',
        namespace=namespace,
        check=False,
    )
    assert proc.returncode != 0 and "spec is immutable" in proc.stderr, proc.stderr
    # metadata may still change
    kube.kubectl("label", "influencetrace", "imm", "team=rl", namespace=namespace)
