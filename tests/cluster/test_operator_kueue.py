"""Traces that queue under the real Kueue controller (``hack/cluster.sh up --with-kueue``).

Each test gets its own small ClusterQueue (4 GPUs of flavor h100, 8 of h200: the flavors `up` makes,
whose nodeLabels are the pools' node label) and a LocalQueue ``lq`` in its namespace, so a test can
fill a flavor's quota with one plain Job. Kueue is built on first use (minutes, cached by version);
set INFLUENCETRACE_SKIP_KUEUE=1 to skip these tests.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from typing import Any

import pytest

from tests.cluster import kube
from tests.cluster.operator_fixtures import (
    BIG_GPU_BYTES,
    events_of,
    get_trace,
    jobs_of,
    trace_manifest,
    wait_phase,
)

pytestmark = pytest.mark.kueue
QUEUE_LABEL = "kueue.x-k8s.io/queue-name"
PRIORITY_LABEL = "kueue.x-k8s.io/priority-class"
HIGH = "influencetrace-test-high"
H100_GPUS = 4


@pytest.fixture(scope="session")
def kueue(cluster: kube.Cluster) -> kube.Cluster:
    """Kueue running next to the cluster (``up --with-kueue`` reuses the cluster and a running Kueue)."""
    if os.environ.get("INFLUENCETRACE_SKIP_KUEUE") == "1":
        pytest.skip("INFLUENCETRACE_SKIP_KUEUE=1")
    subprocess.run([str(kube.CLUSTER_SH), "up", "--with-kueue"], check=True, timeout=3600)
    kube.apply({
        "apiVersion": "kueue.x-k8s.io/v1beta2", "kind": "WorkloadPriorityClass",
        "metadata": {"name": HIGH}, "value": 1000, "description": "tests: preempts traces",
    })
    return cluster


def _flavor(name: str, cpu: int, gpus: int) -> dict[str, Any]:
    return {"name": name, "resources": [
        {"name": "cpu", "nominalQuota": str(cpu)},
        {"name": "memory", "nominalQuota": "8Ti"},
        {"name": "nvidia.com/gpu", "nominalQuota": str(gpus)},
        {"name": "ephemeral-storage", "nominalQuota": "64Ti"},  # the worker's /tmp scratch request
    ]}


@pytest.fixture()
def queue(kueue: kube.Cluster, namespace: str) -> Iterator[str]:
    """A ClusterQueue of this test's own (h100: 4 GPUs, h200: 8) and LocalQueue ``lq`` pointing at it."""
    cq = namespace[:60]
    kube.apply({
        "apiVersion": "kueue.x-k8s.io/v1beta2", "kind": "ClusterQueue", "metadata": {"name": cq},
        "spec": {
            "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": namespace}},
            "preemption": {"withinClusterQueue": "LowerPriority"},
            "resourceGroups": [{
                "coveredResources": ["cpu", "memory", "nvidia.com/gpu", "ephemeral-storage"],
                "flavors": [_flavor("h100", 64, H100_GPUS), _flavor("h200", 128, 8)],
            }],
        },
    })
    kube.apply({
        "apiVersion": "kueue.x-k8s.io/v1beta2", "kind": "LocalQueue", "metadata": {"name": "lq"},
        "spec": {"clusterQueue": cq},
    }, namespace)
    kube.wait_for(
        lambda: kube.condition(kube.get("localqueue.kueue.x-k8s.io", "lq", namespace), "Active"),
        30, description="LocalQueue lq active",
    )
    yield "lq"
    kube.kubectl("delete", "clusterqueue.kueue.x-k8s.io", cq, "--wait=false", check=False)


def _gpu_job(name: str, namespace: str, *, priority: str | None = None) -> None:
    """A plain Job holding all of h100's quota in ``lq`` until deleted (its pod runs forever)."""
    job = kube.job_manifest(name, pool="h100", gpus=H100_GPUS, labels={kube.SIMULATE_LABEL: "hang"})
    job["metadata"]["labels"] = {QUEUE_LABEL: "lq", **({PRIORITY_LABEL: priority} if priority else {})}
    job["spec"]["suspend"] = True
    kube.apply(job, namespace)
    kube.wait_for(
        lambda: [p for p in kube.job_pods(name, namespace) if p["status"].get("phase") == "Running"],
        60, description=f"Job {name} admitted and running",
    )


def _workloads(namespace: str, job: str) -> list[dict[str, Any]]:
    uid = kube.get("job", job, namespace)["metadata"]["uid"]
    return kube.list_objects("workloads.kueue.x-k8s.io", namespace, selector=f"kueue.x-k8s.io/job-uid={uid}")


def _running_reason(name: str, namespace: str) -> str | None:
    cond = kube.condition(get_trace(name, namespace), "Running") or {}
    return cond.get("reason")


def test_full_cluster_queue_waits_then_starts_when_quota_frees(namespace: str, queue: str, op) -> None:
    _gpu_job("blocker", namespace)
    op.start()
    kube.apply(trace_manifest("q", queue=queue, resources={"pools": ["h100"]}), namespace)

    def waiting() -> dict | None:
        obj = get_trace("q", namespace)
        cond = kube.condition(obj, "Running") or {}
        message = cond.get("message", "")
        kueues = message.startswith("queued in Kueue LocalQueue lq: ") and "insufficient" in message
        return obj if cond.get("reason") == "QueuedInKueue" and kueues else None

    obj = kube.wait_for(waiting, 60, description="trace q QueuedInKueue with Kueue's message")
    status = obj["status"]
    assert status["phase"] == "Pending" and status["queue"] == "lq" and status["attempt"] == 1, status
    message = kube.condition(obj, "Running")["message"]
    assert "h100" in message and "nvidia.com/gpu" in message, message  # Kueue's own words
    assert status["message"] == message
    job = kube.get("job", "q-a1", namespace)
    assert job["spec"]["suspend"] is True and job["metadata"]["labels"][QUEUE_LABEL] == "lq"
    assert kube.job_pods("q-a1", namespace) == []
    columns = kube.kubectl("get", "influencetraces", "q", namespace=namespace).stdout.splitlines()
    assert "QUEUE" in columns[0].split() and "lq" in columns[1].split()

    kube.delete("job", "blocker", namespace)
    obj = wait_phase("q", namespace, ("Succeeded", "Failed"), timeout=90)
    assert obj["status"]["phase"] == "Succeeded", obj["status"]
    record = obj["status"]["attempts"][0]
    assert (record["pool"], record["flavor"], record["kueueEvictions"]) == ("h100", "h100", 0)
    assert jobs_of("q", namespace) == ["q-a1"]
    (workload,) = _workloads(namespace, "q-a1")
    assignment = workload["status"]["admission"]["podSetAssignments"][0]
    assert assignment["flavors"]["nvidia.com/gpu"] == "h100"
    reasons = [r for _, r, _ in events_of("q", namespace)]
    assert "QueuedInKueue" in reasons and "AdmittedByKueue" in reasons


def test_gpu_oom_on_h100_is_requeued_and_admitted_on_h200(namespace: str, queue: str, op) -> None:
    op.start(INFLUENCETRACE_DEFAULT_QUEUE=queue)  # the operator-wide default queue; no spec.queue
    kube.apply(trace_manifest("esc", annotations={kube.SIMULATE_GPU_BYTES: BIG_GPU_BYTES}), namespace)
    obj = wait_phase("esc", namespace, ("Succeeded", "Failed"), timeout=90)
    status = obj["status"]
    assert status["phase"] == "Succeeded" and status["queue"] == queue, status
    assert [(a["pool"], a["flavor"], a["outcome"]) for a in status["attempts"]] == [
        ("h100", "h100", "GPUOutOfMemory"),
        ("h200", "h200", "Succeeded"),
    ]
    for name, flavor in (("esc-a1", "h100"), ("esc-a2", "h200")):
        job = kube.get("job", name, namespace)
        assert job["metadata"]["labels"][QUEUE_LABEL] == queue
        (workload,) = _workloads(namespace, name)
        assert workload["status"]["admission"]["podSetAssignments"][0]["flavors"]["nvidia.com/gpu"] == flavor
    assert kube.job_pods("esc-a2", namespace)[0]["spec"]["nodeName"].startswith("gpu-h200-")


def test_kueue_preemption_is_an_eviction_not_an_escalation(namespace: str, queue: str, op) -> None:
    op.start()
    spec = trace_manifest("pre", queue=queue, pod={"labels": {kube.SIMULATE_LABEL: "hang"}},
                          resources={"gpus": H100_GPUS, "pools": ["h100", "h200"]})
    kube.apply(spec, namespace)
    wait_phase("pre", namespace, ("Running",), timeout=60)

    _gpu_job("urgent", namespace, priority=HIGH)  # runs only once Kueue has preempted the trace
    obj = kube.wait_for(
        lambda: (o := get_trace("pre", namespace))["status"]["attempts"][0]["kueueEvictions"] >= 1 and o,
        60, description="Kueue eviction counted on attempt 1",
    )
    obj = kube.wait_for(
        lambda: _running_reason("pre", namespace) == "QueuedInKueue" and get_trace("pre", namespace),
        30, description="trace pre queued again",
    )
    status = obj["status"]
    assert (status["phase"], status["pool"], status["attempt"]) == ("Pending", "h100", 1), status
    record = status["attempts"][0]
    assert (record["kueueEvictions"], record["evictions"], record["outcome"]) == (1, 0, "Running")
    selectors = [kube.get("job", j, namespace)["spec"]["template"]["spec"]["nodeSelector"]
                 for j in jobs_of("pre", namespace)]
    assert selectors and all(s == {kube.POOL_LABEL: "h100"} for s in selectors)  # never h200
    evicted = [m for _, r, m in events_of("pre", namespace) if r == "EvictedByKueue"]
    assert len(evicted) == 1 and "Preempted" in evicted[0] and "same pool" in evicted[0], evicted

    kube.delete("job", "urgent", namespace)
    obj = wait_phase("pre", namespace, ("Running",), timeout=60)
    # Suspending the Job deleted its pod; the kill (exit 137, a FailJob code) may have failed the Job.
    # Then the operator relaunched it as the eviction it was: same pool, same host memory.
    attempts = obj["status"]["attempts"]
    assert obj["status"]["pool"] == "h100" and {a["pool"] for a in attempts} == {"h100"}, attempts
    assert len({a["hostMemoryBytes"] for a in attempts}) == 1 and len(attempts) <= 2, attempts
    assert attempts[-1]["flavor"] == "h100" and attempts[0]["kueueEvictions"] == 1


def test_two_node_trace_is_admitted_as_one_workload(namespace: str, queue: str, op) -> None:
    op.start()
    spec = trace_manifest("duo", queue=queue, resources={"gpus": 4, "nodes": 2, "pools": ["h200"]})
    kube.apply(spec, namespace)
    obj = wait_phase("duo", namespace, ("Succeeded", "Failed"), timeout=90)
    assert obj["status"]["phase"] == "Succeeded", obj["status"]
    (workload,) = _workloads(namespace, "duo-a1")
    (podset,) = workload["spec"]["podSets"]
    assert podset["count"] == 2
    assert workload["status"]["admission"]["podSetAssignments"][0]["count"] == 2


def test_without_a_queue_nothing_changes(namespace: str, kueue: kube.Cluster, op) -> None:
    op.start()
    kube.apply(trace_manifest("plain"), namespace)
    obj = wait_phase("plain", namespace, ("Succeeded", "Failed"))
    assert obj["status"]["phase"] == "Succeeded" and "queue" not in obj["status"], obj["status"]
    job = kube.get("job", "plain-a1", namespace)
    assert QUEUE_LABEL not in job["metadata"]["labels"] and not job["spec"].get("suspend")
    assert _workloads(namespace, "plain-a1") == []
    assert "flavor" not in obj["status"]["attempts"][0]
