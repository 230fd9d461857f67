"""Table-driven: a finished attempt's outcome from its Job and Pods."""

from __future__ import annotations

import json

import pytest
from influence_trace_operator.rules.classify import classify, evictions

from tests.operator.operator_builders import job, pod

GPU_OOM = json.dumps({"reason": "GPUOutOfMemory", "stage": "hessian_solve", "message": "CUDA OOM"})
SUCCESS = json.dumps(
    {
        "rowsEmitted": 12,
        "outputPath": "/out",
        "timings": {"step_total": 1.5},
        "peakGpuBytes": 10,
        "peakHostBytes": 20,
    }
)


@pytest.mark.parametrize(
    ("job_state", "pods", "outcome", "stage"),
    [
        ("Complete", [pod("Succeeded", 0, "Completed", SUCCESS)], "Succeeded", None),
        ("Failed", [pod("Failed", 75, "Error", GPU_OOM)], "GPUOutOfMemory", "hessian_solve"),
        ("Failed", [pod("Failed", 137, "OOMKilled")], "KernelOOMKilled", None),
        (
            "Failed",
            [pod("Failed", 76, "Error", '{"reason":"HostOutOfMemory","stage":"capture","message":"m"}')],
            "HostOutOfMemory",
            "capture",
        ),
        (
            "Failed",
            [pod("Failed", 65, "Error", '{"reason":"InvalidInput","stage":"load","message":"bad"}')],
            "InvalidInput",
            "load",
        ),
        ("Failed", [pod("Failed", 70, "Error", "Traceback ... boom")], "Error", None),
        ("Failed", [pod("Failed", 1, "Error", "segfault")], "Failed", None),
        ("Failed", [], "GPUOutOfMemory", None),  # pods gone: the Job's condition names the exit code
    ],
)
def test_outcomes(job_state: str, pods: list, outcome: str, stage: str | None) -> None:
    msg = "Container worker for pod ns/p failed with exit code 75 matching FailJob rule at index 1"
    done = classify(job(job_state, msg), pods)
    assert done is not None
    assert done.outcome == outcome
    assert done.stage == stage


def test_success_payload_and_no_message() -> None:
    done = classify(job("Complete"), [pod("Succeeded", 0, "Completed", SUCCESS)])
    assert done.payload["rowsEmitted"] == 12 and done.message == ""


def test_running_job_is_not_finished() -> None:
    assert classify(job(None), [pod("Running")]) is None


def test_evicted_pods_are_not_the_outcome() -> None:
    pods = [
        pod("Failed", 137, evicted=True, name="a", created="2025-01-01T00:00:00Z"),
        pod("Succeeded", 0, "Completed", SUCCESS, name="b", created="2025-01-01T00:00:05Z"),
    ]
    assert [p["metadata"]["name"] for p in evictions(pods)] == ["a"]
    assert classify(job("Complete"), pods).outcome == "Succeeded"
    assert classify(job(None), pods[:1]) is None


def test_logs_as_message_are_kept_short() -> None:
    done = classify(job("Failed"), [pod("Failed", 70, "Error", "x" * 5000)])
    assert len(done.message) <= 1030


def _ranked(rank: int, finished: str, **kw) -> dict:
    p = pod(name=f"demo-a1-{rank}", **kw)
    p["metadata"]["annotations"] = {"batch.kubernetes.io/job-completion-index": str(rank)}
    p["status"]["containerStatuses"][0]["state"]["terminated"]["finishedAt"] = finished
    return p


def test_multinode_failure_comes_from_the_pod_that_failed_first() -> None:
    """Rank 1 ran out of GPU memory first; rank 0 died afterwards of the broken process group (70)."""
    oom = json.dumps({"reason": "GPUOutOfMemory", "stage": "hessian_solve", "message": "OOM"})
    first = _ranked(1, "2025-01-01T00:01:00Z", phase="Failed", exit_code=75, message=oom,
                    created="2025-01-01T00:00:00Z")
    nccl = json.dumps({"reason": "Error", "message": "NCCL"})
    later = _ranked(0, "2025-01-01T00:01:30Z", phase="Failed", exit_code=70, message=nccl,
                    created="2025-01-01T00:00:05Z")
    done = classify(job("Failed"), [later, first])
    assert (done.outcome, done.pod, done.stage) == ("GPUOutOfMemory", "demo-a1-1", "hessian_solve")


def test_multinode_success_is_read_from_rank_zero() -> None:
    summary = {"rowsEmitted": 5}
    rank0 = _ranked(0, "2025-01-01T00:02:00Z", phase="Succeeded", exit_code=0, reason="Completed",
                    message=json.dumps(summary), created="2025-01-01T00:00:00Z")
    rank1 = _ranked(1, "2025-01-01T00:01:00Z", phase="Succeeded", exit_code=0, reason="Completed",
                    message=json.dumps({}), created="2025-01-01T00:00:09Z")
    done = classify(job("Complete"), [rank1, rank0])
    assert done.pod == "demo-a1-0" and done.payload["rowsEmitted"] == 5
