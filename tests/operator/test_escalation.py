"""Decisions after each outcome, and the maxAttempts bound."""

from __future__ import annotations

from influence_trace.api.status import AttemptRecord, TraceStatus
from influence_trace_operator import conditions as C
from influence_trace_operator.classify import Finished
from influence_trace_operator.escalation import after_attempt, evictions_exhausted, first_launch

from tests.operator.operator_builders import GIB, H100, H200, SMALL_HOST

POOLS = [H100, H200]


def status(pool: str = "h100", attempt: int = 1, host: int = 8 * GIB, evictions: int = 0) -> TraceStatus:
    records = [
        AttemptRecord(attempt=i, pool=pool, job=f"t-a{i}", host_memory_bytes=host) for i in range(1, attempt)
    ]
    records.append(
        AttemptRecord(
            attempt=attempt, pool=pool, job=f"t-a{attempt}", host_memory_bytes=host, evictions=evictions
        )
    )
    return TraceStatus(phase="Running", pool=pool, attempt=attempt, attempts=records)


def test_first_launch() -> None:
    d = first_launch(H100, "fits h100", 3 * GIB, 0.1, 4 * GIB)
    assert d.action == "launch" and d.placement.pool == "h100" and d.placement.attempt == 1
    assert d.placement.host_memory_bytes == 4 * GIB  # the floor
    d = first_launch(None, "no allowed pool fits; trace.factor 64 would fit h200", 0, 0.1, 0)
    assert d.action == "fail" and d.reason == C.INFEASIBLE and "factor 64" in d.message


def test_success() -> None:
    assert after_attempt(status(), Finished("Succeeded"), POOLS, 3, 2.0).action == "succeed"


def test_gpu_oom_escalates_then_fails_on_largest() -> None:
    d = after_attempt(status(), Finished("GPUOutOfMemory", 75, stage="hessian_solve"), POOLS, 3, 2.0)
    assert d.action == "launch" and d.reason == C.ESCALATED
    assert d.placement.pool == "h200" and d.placement.attempt == 2
    assert "hessian_solve" in d.message and "h100" in d.message and "h200" in d.message
    d = after_attempt(status("h200", 2), Finished("GPUOutOfMemory", 75, stage="capture"), POOLS, 3, 2.0)
    assert d.action == "fail" and d.reason == C.OUT_OF_GPU_MEMORY and "What would fit" in d.message


def test_kernel_oom_raises_host_memory_then_moves_on() -> None:
    d = after_attempt(status(host=8 * GIB), Finished("KernelOOMKilled", 137), POOLS, 3, 2.0)
    assert d.action == "launch" and d.reason == C.HOST_MEMORY_RAISED
    assert d.placement.pool == "h100" and d.placement.host_memory_bytes == 16 * GIB
    pools = [SMALL_HOST, H200]
    d = after_attempt(status("small", host=64 * GIB), Finished("KernelOOMKilled", 137), pools, 3, 2.0)
    assert d.placement.pool == "h200" and d.placement.host_memory_bytes == 128 * GIB
    d = after_attempt(status("small", host=48 * GIB), Finished("HostOutOfMemory", 76), pools, 3, 2.0)
    assert d.placement.pool == "small" and d.placement.host_memory_bytes == 64 * GIB  # capped by the nodes
    d = after_attempt(status("h200", host=2048 * GIB), Finished("KernelOOMKilled", 137), POOLS, 3, 2.0)
    assert d.action == "fail" and d.reason == C.OUT_OF_HOST_MEMORY


def test_worker_errors_fail_without_retry() -> None:
    for outcome in ("InvalidInput", "Error", "Failed"):
        d = after_attempt(status(), Finished(outcome, 65, message="rollouts.jsonl line 3"), POOLS, 3, 2.0)
        assert d.action == "fail" and d.reason == C.WORKER_FAILED and "line 3" in d.message


def test_max_attempts_bounds_everything() -> None:
    d = after_attempt(status(attempt=1), Finished("GPUOutOfMemory", 75), POOLS, 1, 2.0)
    assert d.action == "fail" and d.reason == C.ATTEMPTS_EXHAUSTED and "h200" in d.message
    d = after_attempt(status(attempt=2, evictions=1), Finished("KernelOOMKilled", 137), POOLS, 3, 2.0)
    assert d.action == "fail" and d.reason == C.ATTEMPTS_EXHAUSTED


def test_evictions_spend_attempts_not_escalations() -> None:
    assert evictions_exhausted(status(evictions=2), 3) is None
    d = evictions_exhausted(status(evictions=3), 3)
    assert d is not None and d.reason == C.ATTEMPTS_EXHAUSTED and "evicted 3 times" in d.message


def test_what_fits_is_asked_only_when_no_larger_pool_is_left() -> None:
    asked = []

    def what_fits() -> str:
        asked.append(1)
        return "trace.factor 45 would fit h200"

    oom = Finished("GPUOutOfMemory", 75, stage="hessian_solve")
    after_attempt(status(), oom, POOLS, 3, 2.0, what_fits)
    assert asked == []  # escalating to h200 needs no suggestion
    d = after_attempt(status("h200", 2), oom, POOLS, 3, 2.0, what_fits)
    assert asked == [1] and d.message.endswith("What would fit: trace.factor 45 would fit h200")
