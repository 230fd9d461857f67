"""The operator against the real control plane: each way an attempt can end, and what status says."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

from tests.cluster import kube
from tests.cluster.operator_fixtures import (
    BIG_GPU_BYTES,
    CLI,
    events_of,
    jobs_of,
    trace_manifest,
    wait_phase,
)
from tests.conftest import manifest_dict, write_manifest


def _attempts(obj: dict) -> list[dict]:
    return obj["status"]["attempts"]


def test_gpu_oom_on_h100_escalates_to_h200(namespace: str, op) -> None:
    op.start()
    kube.apply(trace_manifest("esc", annotations={kube.SIMULATE_GPU_BYTES: BIG_GPU_BYTES}), namespace)
    obj = wait_phase("esc", namespace, ("Succeeded", "Failed"))
    status = obj["status"]
    assert status["phase"] == "Succeeded", status
    assert (status["pool"], status["attempt"]) == ("h200", 2)
    assert [(a["pool"], a["outcome"]) for a in _attempts(obj)] == [
        ("h100", "GPUOutOfMemory"),
        ("h200", "Succeeded"),
    ]
    assert _attempts(obj)[0]["exitCode"] == 75 and _attempts(obj)[0]["stage"] == "hessian_solve"
    assert jobs_of("esc", namespace) == ["esc-a1", "esc-a2"]
    job1 = kube.get("job", "esc-a1", namespace)
    assert job1["spec"]["template"]["spec"]["nodeSelector"] == {"influencetrace.dev/pool": "h100"}
    pod2 = kube.job_pods("esc-a2", namespace)[0]
    assert pod2["spec"]["nodeName"].startswith("gpu-h200-")

    row = kube.kubectl("get", "influencetraces", "esc", namespace=namespace).stdout.splitlines()
    header, line = row[0].split(), row[1].split()
    assert header[:7] == ["NAME", "PHASE", "REASON", "POOL", "FACTOR", "SCOPE", "ATTEMPT"]
    assert line[1:4] == ["Succeeded", "WorkerSucceeded", "h200"] and line[6] == "2"
    described = kube.kubectl("describe", "itrace", "esc", namespace=namespace).stdout
    for text in ("JobCreated", "GPUOutOfMemory", "escalating to pool h200", "Succeeded"):
        assert text in described, described
    assert any(
        k == "Warning" and "hessian_solve" in m and "h100" in m and "h200" in m
        for k, _, m in events_of("esc", namespace)
    )
    # The outcome is read from the failed pod or from the Job's Failed condition, whichever the
    # operator sees first; the other one must change nothing: one warning, two Jobs, no third.
    reasons = [r for _, r, _ in events_of("esc", namespace)]
    assert reasons.count("GPUOutOfMemory") == 1 and reasons.count("JobCreated") == 2, reasons
    assert "JobAdopted" not in reasons and jobs_of("esc", namespace) == ["esc-a1", "esc-a2"]


def test_success_copies_the_real_worker_summary(
    namespace: str, op, tmp_path: Path, tiny_model_dir: Path, rollouts_file: Path
) -> None:
    manifest = write_manifest(
        tmp_path / "m.yaml", manifest_dict(tiny_model_dir, rollouts_file, tmp_path / "out")
    )
    log = tmp_path / "termination-log"
    env = {**os.environ, "INFLUENCE_TRACE_TERMINATION_LOG": str(log)}
    proc = subprocess.run(
        [str(CLI), "run", "--device", "cpu", str(manifest)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = log.read_text()
    op.start()
    kube.apply(trace_manifest("ok", annotations={kube.SIMULATE_TERMINATION_MESSAGE: summary}), namespace)
    obj = wait_phase("ok", namespace, ("Succeeded", "Failed"))
    status = obj["status"]
    expected = json.loads(summary)
    assert status["phase"] == "Succeeded" and (status["pool"], status["attempt"]) == ("h100", 1)
    assert status["result"]["rowsEmitted"] == expected["rowsEmitted"] == 12
    assert status["result"]["outputPath"] == expected["outputPath"]
    assert set(status["result"]["timings"]) == set(expected["timings"])
    assert status["result"]["peakHostBytes"] == expected["peakHostBytes"]
    assert kube.condition(obj, "Succeeded")["reason"] == "WorkerSucceeded"
    assert jobs_of("ok", namespace) == ["ok-a1"]


def test_kubectl_get_tells_failures_apart_by_reason(namespace: str, op) -> None:
    """A worker that exits 0 with no result (NoResult), an out-of-memory on every pool
    (OutOfGPUMemory) and an escalation that succeeds: REASON says which, -o wide adds the message."""
    op.start()
    kube.apply(trace_manifest("empty", annotations={kube.SIMULATE_TERMINATION_MESSAGE: "{}"}), namespace)
    kube.apply(trace_manifest("huge", annotations={kube.SIMULATE_GPU_BYTES: "400000000000"}), namespace)
    for name in ("empty", "huge"):
        wait_phase(name, namespace, ("Succeeded", "Failed"))
    table = kube.kubectl("get", "influencetraces", namespace=namespace).stdout.splitlines()
    rows = {line.split()[0]: line.split()[1:3] for line in table[1:]}
    assert table[0].split()[:3] == ["NAME", "PHASE", "REASON"]
    assert rows == {"empty": ["Failed", "NoResult"], "huge": ["Failed", "OutOfGPUMemory"]}, table
    wide = kube.kubectl("get", "influencetraces", "-o", "wide", namespace=namespace).stdout
    assert "MESSAGE" in wide.splitlines()[0] and "without a result" in wide


def test_gpu_oom_on_the_largest_pool_fails(namespace: str, op) -> None:
    op.start()
    kube.apply(trace_manifest("big", annotations={kube.SIMULATE_GPU_BYTES: "400000000000"}), namespace)
    obj = wait_phase("big", namespace, ("Succeeded", "Failed"))
    assert obj["status"]["phase"] == "Failed" and obj["status"]["attempt"] == 2
    cond = kube.condition(obj, "Failed")
    assert cond["reason"] == "OutOfGPUMemory" and "largest allowed pool" in cond["message"]
    assert "What would fit: the memory model predicted" in cond["message"]
    assert jobs_of("big", namespace) == ["big-a1", "big-a2"]


def test_infeasible_trace_fails_without_a_job(namespace: str, op) -> None:
    op.start()
    spec = trace_manifest(
        "inf",
        model={"path": "/workspace/models/Qwen2.5-1.5B", "preset": "qwen2.5-1.5b"},
        rollouts={"path": "/workspace/data/r.jsonl", "tokensEstimate": 733870},
        trace={"factor": 8, "scope": "all_selected"},
    )
    kube.apply(spec, namespace)
    obj = wait_phase("inf", namespace, ("Failed", "Running", "Pending"))
    assert obj["status"]["phase"] == "Failed"
    cond = kube.condition(obj, "Failed")
    assert cond["reason"] == "Infeasible" and "would fit" in cond["message"] and "factor" in cond["message"]
    assert kube.condition(obj, "Placed")["status"] == "False"
    assert obj["status"]["estimate"]["gpuBytes"] > 150 * 10**9
    assert jobs_of("inf", namespace) == []


def test_kernel_oom_kill_raises_host_memory(namespace: str, op) -> None:
    op.start()
    spec = trace_manifest("oomk", pod={"labels": {kube.SIMULATE_LABEL: "oom-kill"}})
    kube.apply(spec, namespace)
    obj = wait_phase("oomk", namespace, ("Succeeded", "Failed"), timeout=90)
    attempts = _attempts(obj)
    assert [a["outcome"] for a in attempts] == ["KernelOOMKilled"] * 3
    hosts = [a["hostMemoryBytes"] for a in attempts]
    assert hosts[0] < hosts[1] < hosts[2] and all(a["pool"] == "h100" for a in attempts)
    assert kube.condition(obj, "Failed")["reason"] == "AttemptsExhausted"
    job2 = kube.get("job", "oomk-a2", namespace)
    request = job2["spec"]["template"]["spec"]["containers"][0]["resources"]["requests"]["memory"]
    assert int(request) == hosts[1]
    assert any(
        r == "KernelOOMKilled" and "relaunching there with" in m for _, r, m in events_of("oomk", namespace)
    )


def test_eviction_relaunches_on_the_same_pool(namespace: str, op) -> None:
    op.start()
    spec = trace_manifest("evi", pod={"labels": {kube.SIMULATE_LABEL: "evict"}})
    spec["spec"]["resources"]["maxAttempts"] = 2
    kube.apply(spec, namespace)
    obj = wait_phase("evi", namespace, ("Succeeded", "Failed"), timeout=90)
    status = obj["status"]
    assert status["phase"] == "Failed" and status["attempt"] == 1 and status["pool"] == "h100"
    assert (
        _attempts(obj)[0]["evictions"] >= 2 and kube.condition(obj, "Failed")["reason"] == "AttemptsExhausted"
    )
    assert jobs_of("evi", namespace) in ([], ["evi-a1"])  # the operator deletes the Job that would go on
    assert _attempts(obj)[0]["outcome"] == "Evicted", _attempts(obj)[0]  # not Cancelled: it was evicted
    evictions = [m for _, r, m in events_of("evi", namespace) if r == "PodEvicted"]
    assert len(evictions) >= 2 and all("same pool" in m for m in evictions)


def test_worker_error_fails_once_with_its_message(namespace: str, op) -> None:
    op.start()
    message = json.dumps(
        {
            "reason": "InvalidInput",
            "stage": "load_rollouts",
            "message": "rollouts.jsonl line 3: reward is missing",
        }
    )
    spec = trace_manifest(
        "bad",
        pod={
            "labels": {kube.SIMULATE_LABEL: "fail"},
            "annotations": {kube.SIMULATE_EXIT_CODE: "65", kube.SIMULATE_MESSAGE: message},
        },
    )
    kube.apply(spec, namespace)
    obj = wait_phase("bad", namespace, ("Succeeded", "Failed"))
    cond = kube.condition(obj, "Failed")
    assert cond["reason"] == "WorkerFailed" and "reward is missing" in cond["message"]
    assert "load_rollouts" in cond["message"] and "65" in cond["message"]
    assert jobs_of("bad", namespace) == ["bad-a1"]
    assert len(kube.job_pods("bad-a1", namespace)) == 1  # no retry storm


def test_unset_max_attempts_takes_the_operator_default(namespace: str, op) -> None:
    op.start(INFLUENCETRACE_DEFAULT_MAX_ATTEMPTS="1")
    kube.apply(trace_manifest("one", annotations={kube.SIMULATE_GPU_BYTES: BIG_GPU_BYTES}), namespace)
    obj = wait_phase("one", namespace, ("Succeeded", "Failed"))
    assert obj["status"]["phase"] == "Failed" and obj["status"]["attempt"] == 1
    cond = kube.condition(obj, "Failed")
    assert cond["reason"] == "AttemptsExhausted" and "(1) reached" in cond["message"]
    assert "escalating to pool h200" in cond["message"]  # what the next step would have been
    assert jobs_of("one", namespace) == ["one-a1"]
