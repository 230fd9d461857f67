"""Every decision after an attempt (rules/policies.py), each rule on its own, the one dispatch
(``decide``) that picks among them, and the maxAttempts bound."""

from __future__ import annotations

from influence_trace.api.status import AttemptRecord, TraceStatus
from influence_trace_operator.rules import conditions
from influence_trace_operator.rules.classify import Finished
from influence_trace_operator.rules.policies import (
    after_attempt,
    after_cancel,
    after_run_timeout,
    after_success,
    decide,
    evictions_exhausted,
    first_launch,
)

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
    assert d.action == "fail" and d.reason == conditions.INFEASIBLE and "factor 64" in d.message


def test_success() -> None:
    assert after_attempt(status(), Finished("Succeeded"), POOLS, 3, 2.0).action == "succeed"


def test_gpu_oom_escalates_then_fails_on_largest() -> None:
    d = after_attempt(status(), Finished("GPUOutOfMemory", 75, stage="hessian_solve"), POOLS, 3, 2.0)
    assert d.action == "launch" and d.reason == conditions.ESCALATED
    assert d.placement.pool == "h200" and d.placement.attempt == 2
    assert "hessian_solve" in d.message and "h100" in d.message and "h200" in d.message
    d = after_attempt(status("h200", 2), Finished("GPUOutOfMemory", 75, stage="capture"), POOLS, 3, 2.0)
    assert d.action == "fail" and d.reason == conditions.OUT_OF_GPU_MEMORY and "What would fit" in d.message


def test_kernel_oom_raises_host_memory_then_moves_on() -> None:
    d = after_attempt(status(host=8 * GIB), Finished("KernelOOMKilled", 137), POOLS, 3, 2.0)
    assert d.action == "launch" and d.reason == conditions.HOST_MEMORY_RAISED
    assert d.placement.pool == "h100" and d.placement.host_memory_bytes == 16 * GIB
    pools = [SMALL_HOST, H200]
    d = after_attempt(status("small", host=64 * GIB), Finished("KernelOOMKilled", 137), pools, 3, 2.0)
    assert d.placement.pool == "h200" and d.placement.host_memory_bytes == 128 * GIB
    d = after_attempt(status("small", host=48 * GIB), Finished("HostOutOfMemory", 76), pools, 3, 2.0)
    assert d.placement.pool == "small" and d.placement.host_memory_bytes == 64 * GIB  # capped by the nodes
    d = after_attempt(status("h200", host=2048 * GIB), Finished("KernelOOMKilled", 137), POOLS, 3, 2.0)
    assert d.action == "fail" and d.reason == conditions.OUT_OF_HOST_MEMORY


def test_worker_errors_fail_without_retry() -> None:
    for outcome in ("InvalidInput", "Error", "Failed"):
        d = after_attempt(status(), Finished(outcome, 65, message="rollouts.jsonl line 3"), POOLS, 3, 2.0)
        assert d.action == "fail" and d.reason == conditions.WORKER_FAILED and "line 3" in d.message


def test_max_attempts_bounds_everything() -> None:
    d = after_attempt(status(attempt=1), Finished("GPUOutOfMemory", 75), POOLS, 1, 2.0)
    assert d.action == "fail" and d.reason == conditions.ATTEMPTS_EXHAUSTED and "h200" in d.message
    d = after_attempt(status(attempt=2, evictions=1), Finished("KernelOOMKilled", 137), POOLS, 3, 2.0)
    assert d.action == "fail" and d.reason == conditions.ATTEMPTS_EXHAUSTED


def test_evictions_spend_attempts_not_escalations() -> None:
    assert evictions_exhausted(status(evictions=2), 3) is None
    d = evictions_exhausted(status(evictions=3), 3)
    assert d is not None and d.reason == conditions.ATTEMPTS_EXHAUSTED and "evicted 3 times" in d.message


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


def test_success_without_the_contracts_result_fails_as_no_result() -> None:
    told = Finished("Succeeded", 0, payload={"rowsEmitted": 4, "outputPath": "/out/t"}, pod="t-a1-x")
    assert after_success(status(), told).action == "succeed"
    silent = Finished("Succeeded", 0, payload={}, pod="t-a1-x")
    d = after_success(status(), silent)
    assert d.action == "fail" and d.reason == conditions.NO_RESULT and "cannot be trusted" in d.message
    no_pod = Finished("Succeeded", 0, payload={}, pod=None)  # the Job's condition alone: nothing to read
    assert after_success(status(), no_pod).action == "succeed"


def test_run_timeout_fails_without_relaunch() -> None:
    done = Finished("Failed", reason=conditions.RUN_TIMEOUT, message="ran longer than resources.runTimeout")
    d = after_run_timeout(status("h200", 2), done)
    assert (d.action, d.reason) == ("fail", conditions.RUN_TIMEOUT)
    assert d.message.startswith("attempt 2 on pool h200: ran longer")


def test_a_job_deleted_while_running_is_relaunched_on_its_pool_within_max_attempts() -> None:
    gone = "Job t-a1 was deleted before it finished"
    done = Finished("Cancelled", reason=conditions.CANCELLED, message=gone)
    d = after_cancel(status(host=16 * GIB), done, POOLS, 3)
    assert (d.action, d.reason) == ("launch", conditions.JOB_RELAUNCHED)
    assert (d.placement.pool, d.placement.attempt, d.placement.host_memory_bytes) == ("h100", 2, 16 * GIB)
    assert after_cancel(status(host=16 * GIB), done, POOLS, 1).reason == conditions.ATTEMPTS_EXHAUSTED
    assert after_cancel(status("a100"), done, POOLS, 3).action == "fail"  # its pool is not allowed now


def test_decide_dispatches_each_outcome_to_its_rule() -> None:
    def decided(done: Finished, st: TraceStatus | None = None) -> tuple[str, str]:
        d = decide(st or status(), done, POOLS, 3, 2.0)
        return d.action, d.reason

    capacity = "not started within resources.pendingTimeout (600 s): 0/4 nodes: 4 Insufficient nvidia.com/gpu"
    assert decided(Finished("Unschedulable", reason=conditions.UNSCHEDULABLE, message=capacity)) == (
        "launch", conditions.PENDING_TIMEOUT)
    assert decided(Finished("Failed", reason=conditions.RUN_TIMEOUT)) == ("fail", conditions.RUN_TIMEOUT)
    relaunched = ("launch", conditions.JOB_RELAUNCHED)
    assert decided(Finished("Cancelled", reason=conditions.CANCELLED)) == relaunched
    assert decided(Finished("GPUOutOfMemory", 75)) == ("launch", conditions.ESCALATED)
    queued = status()
    queued.attempts[-1] = queued.attempts[-1].model_copy(update={"kueue_evictions": 1})
    killed = Finished("KernelOOMKilled", 137, reason="Error")  # Kueue's eviction killed it
    assert decided(killed, queued) == ("launch", conditions.JOB_CREATED)
    assert decided(Finished("KernelOOMKilled", 137, reason="OOMKilled"), queued) == (
        "launch", conditions.HOST_MEMORY_RAISED)
    assert decided(Finished("InvalidInput", 65)) == ("fail", conditions.WORKER_FAILED)


def test_max_attempts_is_the_specs_else_the_operators_default() -> None:
    from influence_trace_operator.rules.policies import max_attempts_of

    from tests.operator.operator_builders import trace

    assert max_attempts_of(trace(), 4) == 4
    assert max_attempts_of(trace(resources={"pools": ["h100", "h200"], "maxAttempts": 2}), 4) == 2
