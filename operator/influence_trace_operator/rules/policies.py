"""Pure: every decision after an attempt, from the status, the finished attempt and the allowed pools.

``decide`` is the one entry the reconciler calls once an attempt has ended; each rule below is its own
function with its own tests (tests/operator/test_policies.py), like jobset's failure_policy.go.

| Outcome              | Next                                                                 |
|----------------------|----------------------------------------------------------------------|
| Succeeded            | Succeeded; copy the headline figures                                  |
| GPUOutOfMemory       | next larger allowed pool, same host memory request; none: Failed      |
| KernelOOMKilled,     | same pool with the host request times ``host_memory_growth`` (capped  |
| HostOutOfMemory      | by the nodes); already at the cap: next pool with more; none: Failed  |
| eviction             | the Job relaunches the pod on the same pool (no escalation spent)     |
| Kueue eviction kill  | relaunch on the same pool, same host memory (no escalation spent)     |
| Unschedulable        | next larger pool when the wait was for capacity, else Failed          |
| run timeout          | Failed (RunTimeout)                                                   |
| Cancelled            | Job deleted while running: relaunch on its pool; trace cancel: Failed |
| Succeeded, no result | Failed (NoResult): its outputs cannot be trusted                      |
| InvalidInput, Error, | Failed with the worker's message (no retry: it would fail the same)   |
| other failures       |                                                                       |

Every launch (a Job or an eviction's replacement pod) counts against ``resources.maxAttempts``.
Deterministic, so a restarted operator takes the same decision and adopts the Job it already made.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from influence_trace.api.spec import InfluenceTrace
from influence_trace.api.status import AttemptRecord, ResultStatus, TraceStatus
from influence_trace.api.units import gb
from influence_trace.planning.placement import Pool, next_pool

from influence_trace_operator.rules import conditions
from influence_trace_operator.rules.classify import Finished
from influence_trace_operator.rules.jobs import JobPlacement
from influence_trace_operator.rules.pending import is_capacity
from influence_trace_operator.rules.pools import larger_host_pool

Action = Literal["launch", "succeed", "fail"]


@dataclass(frozen=True)
class Decision:
    """The next step: launch a Job, finish (Succeeded/Failed), or nothing."""

    action: Action
    reason: str  # a conditions.* reason
    message: str
    placement: JobPlacement | None = None


def placement_on(pool: Pool, attempt: int, host_bytes: int) -> JobPlacement:
    return JobPlacement(
        attempt=attempt,
        pool=pool.name,
        node_selector=dict(pool.node_selector),
        tolerations=[t.model_dump(by_alias=True, exclude_none=True) for t in pool.tolerations],
        gpu_memory_bytes=pool.gpu_memory_bytes,
        host_memory_bytes=host_bytes,
    )


def host_request(estimate_host: int, pool: Pool, headroom: float, floor: int) -> int:
    """The first attempt's host memory request: the estimate plus headroom (at least ``floor``),
    within what one of the pool's nodes holds."""
    wanted = max(math.ceil(estimate_host * (1 + headroom)), floor)
    return min(wanted, pool.host_memory_bytes)


def first_launch(
    pool: Pool | None, reason: str, host_bytes: int, headroom: float, floor: int
) -> Decision:
    """Attempt 1 on the pool placement chose, or Failed (Infeasible) with no Job."""
    if pool is None:
        return Decision("fail", conditions.INFEASIBLE, reason)
    placement = placement_on(pool, 1, host_request(host_bytes, pool, headroom, floor))
    return Decision("launch", conditions.JOB_CREATED, reason, placement)


def launches_used(status: TraceStatus) -> int:
    """Jobs launched plus pods the Jobs relaunched after evictions (Kueue's evictions included)."""
    return sum(1 + a.evictions + a.kueue_evictions for a in status.attempts)


def max_attempts_of(resource: InfluenceTrace, default: int) -> int:
    """spec.resources.maxAttempts, or the operator's default when the trace leaves it unset."""
    return resource.spec.resources.max_attempts or default


def relaunch_within(status: TraceStatus, max_attempts: int, decision: Decision) -> Decision:
    """Turn a launch into Failed when maxAttempts is used up."""
    used = launches_used(status)
    if used >= max_attempts:
        return Decision(
            "fail",
            conditions.ATTEMPTS_EXHAUSTED,
            f"resources.maxAttempts ({max_attempts}) reached; the next step would have been: "
            f"{decision.message}",
        )
    return decision



GENERIC_WHAT_FITS = (
    "a larger spec.trace.factor (e.g. twice the current one), a positive spec.trace.maxHessianDim, "
    "or more resources.gpus to split the tokens"
)
WhatFits = Callable[[], str]  # the memory model's suggestion, asked only when the largest pool failed


def _after_gpu_oom(status: TraceStatus, done: Finished, pools: list[Pool], host: int,
                   what_fits: WhatFits) -> Decision:
    stage = done.stage or "an unknown stage"
    nxt = next_pool(status.pool or "", pools)
    if nxt is None:
        return Decision(
            "fail",
            conditions.OUT_OF_GPU_MEMORY,
            f"GPU out of memory in stage {stage} on pool {status.pool}, the largest allowed pool. "
            f"What would fit: {what_fits()}",
        )
    host_bytes = min(host, nxt.host_memory_bytes)
    return Decision(
        "launch",
        conditions.ESCALATED,
        f"GPU out of memory in stage {stage} on pool {status.pool}; escalating to pool {nxt.name} "
        f"({gb(nxt.gpu_memory_bytes)} per GPU)",
        placement_on(nxt, status.attempt + 1, host_bytes),
    )


def _after_host_oom(
    status: TraceStatus, done: Finished, pools: list[Pool], host: int, growth: float
) -> Decision:
    what = (
        "killed by the kernel for exceeding its memory limit"
        if done.outcome == "KernelOOMKilled"
        else "out of host memory"
    )
    here = next((p for p in pools if p.name == status.pool), None)
    room_here = here is not None and host < here.host_memory_bytes
    target = here if room_here else larger_host_pool(pools, status.pool or "", host)
    if target is None:
        return Decision(
            "fail",
            conditions.OUT_OF_HOST_MEMORY,
            f"worker {what} on pool {status.pool} with {gb(host)}, all its nodes hold; no allowed "
            "pool has more host memory (lower rollouts.maxPrompts or use a per_prompt scope)",
        )
    raised = min(math.ceil(host * growth), target.host_memory_bytes)
    step = (f"with {gb(host)} host memory; relaunching there with {gb(raised)}" if room_here else
            f"at its nodes' {gb(host)}; moving to pool {target.name} with {gb(raised)}")
    return Decision("launch", conditions.HOST_MEMORY_RAISED, f"worker {what} on pool {status.pool} {step}",
                    placement_on(target, status.attempt + 1, raised))


def after_success(status: TraceStatus, done: Finished) -> Decision:
    """Succeeded, unless the worker exited 0 without the contract's result (rows, output path)."""
    message = f"worker finished on pool {status.pool} (attempt {status.attempt})"
    if done.pod is not None and not result_of(done).output_path:
        return Decision("fail", conditions.NO_RESULT, f"{message}, but exited 0 without a result in its "
                        "termination message (rows, output path): its outputs cannot be trusted")
    return Decision("succeed", conditions.WORKER_SUCCEEDED, message)


def result_of(done: Finished) -> ResultStatus:
    """The headline figures from the termination message; empty when they do not parse."""
    try:
        return ResultStatus.model_validate(done.payload)
    except ValueError:
        return ResultStatus()


def after_attempt(
    status: TraceStatus, done: Finished, pools: list[Pool], max_attempts: int, growth: float,
    what_fits: WhatFits = lambda: GENERIC_WHAT_FITS,
) -> Decision:
    """The decision once the current attempt's worker has ended on its own (success or failure)."""
    record = status.current()
    host = record.host_memory_bytes if record else 0
    if done.outcome == "Succeeded":
        return after_success(status, done)
    if done.outcome == "GPUOutOfMemory":
        decision = _after_gpu_oom(status, done, pools, host, what_fits)
    elif done.outcome in ("KernelOOMKilled", "HostOutOfMemory"):
        decision = _after_host_oom(status, done, pools, host, growth)
    else:
        code = f" (exit code {done.exit_code})" if done.exit_code is not None else ""
        where = f" in stage {done.stage}" if done.stage else ""
        return Decision(
            "fail",
            conditions.WORKER_FAILED,
            f"worker failed with {done.reason or done.outcome}{code}{where} on pool {status.pool}: "
            f"{done.message or 'no message'}",
        )
    return relaunch_within(status, max_attempts, decision) if decision.action == "launch" else decision


def evictions_exhausted(status: TraceStatus, max_attempts: int) -> Decision | None:
    """Failed when evictions have used up maxAttempts (the Job would relaunch its pod forever)."""
    if launches_used(status) <= max_attempts:
        return None
    record = status.current()
    count = record.evictions if record else 0
    return Decision(
        "fail",
        conditions.ATTEMPTS_EXHAUSTED,
        f"the worker pod on pool {status.pool} was evicted {count} times; "
        f"resources.maxAttempts ({max_attempts}) reached",
    )


def after_unschedulable(
    status: TraceStatus, done: Finished, pools: list[Pool], max_attempts: int
) -> Decision:
    """A larger allowed pool when the wait was for capacity, else Failed with the scheduler's reason."""
    record = status.current()
    nxt = next_pool(status.pool or "", pools) if is_capacity(done.message) else None
    if nxt is None:
        return Decision("fail", conditions.UNSCHEDULABLE, f"attempt {status.attempt} on pool {status.pool} "
                        f"{done.message}")
    host = min(record.host_memory_bytes if record else 0, nxt.host_memory_bytes)
    decision = Decision(
        "launch",
        conditions.PENDING_TIMEOUT,
        f"attempt {status.attempt} on pool {status.pool} {done.message}; moving to pool {nxt.name}",
        placement_on(nxt, status.attempt + 1, host),
    )
    return relaunch_within(status, max_attempts, decision)


def after_run_timeout(status: TraceStatus, done: Finished) -> Decision:
    """A Job past resources.runTimeout fails the trace: a relaunch would run as long again."""
    where = f"attempt {status.attempt} on pool {status.pool}"
    return Decision("fail", conditions.RUN_TIMEOUT, f"{where}: {done.message}")


def after_cancel(status: TraceStatus, done: Finished, pools: list[Pool], max_attempts: int) -> Decision:
    """A Job deleted while it ran (not by the trace) is relaunched on its pool; else the trace fails."""
    record = status.current()
    pool = next((x for x in pools if record and x.name == record.pool), None)
    if record is None or pool is None:
        return Decision("fail", conditions.CANCELLED, done.message)
    relaunch = Decision(
        "launch", conditions.JOB_RELAUNCHED, f"{done.message}; relaunching on pool {pool.name}",
        placement_on(pool, record.attempt + 1, record.host_memory_bytes),
    )
    return relaunch_within(status, max_attempts, relaunch)


def after_eviction_kill(
    status: TraceStatus, done: Finished, record: AttemptRecord, pools: list[Pool], max_attempts: int
) -> Decision | None:
    """A queued Job that failed with exit 137 but not ``OOMKilled`` after Kueue evicted it: suspending
    the Job deleted its pod, and the kill (SIGKILL, which the Job's FailJob rule matches) failed the
    Job. That is the eviction, not the worker: relaunch on the same pool with the same host memory."""
    if record.kueue_evictions == 0 or done.outcome != "KernelOOMKilled" or done.reason == "OOMKilled":
        return None
    pool = next((x for x in pools if x.name == record.pool), None)
    if pool is None:
        return None
    decision = Decision(
        "launch",
        conditions.JOB_CREATED,
        f"the worker of Job {record.job} was killed when Kueue evicted it; relaunching on pool {pool.name} "
        "with the same host memory (no escalation)",
        placement_on(pool, record.attempt + 1, record.host_memory_bytes),
    )
    return relaunch_within(status, max_attempts, decision)


def decide(
    status: TraceStatus, done: Finished, pools: list[Pool], max_attempts: int, growth: float,
    what_fits: WhatFits = lambda: GENERIC_WHAT_FITS,
) -> Decision:
    """The next step after the current attempt ended as ``done``: the one dispatch over the rules above."""
    if done.outcome == "Unschedulable":
        return after_unschedulable(status, done, pools, max_attempts)
    if done.reason == conditions.RUN_TIMEOUT:
        return after_run_timeout(status, done)
    if done.outcome == "Cancelled":
        return after_cancel(status, done, pools, max_attempts)
    record = status.current()
    evicted = record and after_eviction_kill(status, done, record, pools, max_attempts)
    return evicted or after_attempt(status, done, pools, max_attempts, growth, what_fits)
