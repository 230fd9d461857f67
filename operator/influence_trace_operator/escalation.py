"""Pure: what to do next, from the status, the finished attempt and the allowed pools.

| Outcome              | Next                                                                 |
|----------------------|----------------------------------------------------------------------|
| Succeeded            | Succeeded; copy the headline figures                                  |
| GPUOutOfMemory       | next larger allowed pool, same host memory request; none: Failed      |
| KernelOOMKilled,     | same pool with the host request times ``host_memory_growth`` (capped  |
| HostOutOfMemory      | by the nodes); already at the cap: next pool with more; none: Failed  |
| eviction             | the Job relaunches the pod on the same pool (no escalation spent)     |
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

from influence_trace.api.status import TraceStatus
from influence_trace.api.units import gb
from influence_trace.planning.placement import Pool, next_pool

from influence_trace_operator import conditions as C
from influence_trace_operator.classify import Finished
from influence_trace_operator.jobs import JobPlacement
from influence_trace_operator.pools import larger_host_pool

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
        return Decision("fail", C.INFEASIBLE, reason)
    placement = placement_on(pool, 1, host_request(host_bytes, pool, headroom, floor))
    return Decision("launch", C.JOB_CREATED, reason, placement)


def launches_used(status: TraceStatus) -> int:
    """Jobs launched plus pods the Jobs relaunched after evictions (Kueue's evictions included)."""
    return sum(1 + a.evictions + a.kueue_evictions for a in status.attempts)


def relaunch_within(status: TraceStatus, max_attempts: int, decision: Decision) -> Decision:
    """Turn a launch into Failed when maxAttempts is used up."""
    used = launches_used(status)
    if used >= max_attempts:
        return Decision(
            "fail",
            C.ATTEMPTS_EXHAUSTED,
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
            C.OUT_OF_GPU_MEMORY,
            f"GPU out of memory in stage {stage} on pool {status.pool}, the largest allowed pool. "
            f"What would fit: {what_fits()}",
        )
    host_bytes = min(host, nxt.host_memory_bytes)
    return Decision(
        "launch",
        C.ESCALATED,
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
    if here is not None and host < here.host_memory_bytes:
        raised = min(math.ceil(host * growth), here.host_memory_bytes)
        return Decision(
            "launch",
            C.HOST_MEMORY_RAISED,
            f"worker {what} on pool {status.pool} with {gb(host)} host memory; "
            f"relaunching there with {gb(raised)}",
            placement_on(here, status.attempt + 1, raised),
        )
    nxt = larger_host_pool(pools, status.pool or "", host)
    if nxt is None:
        return Decision(
            "fail",
            C.OUT_OF_HOST_MEMORY,
            f"worker {what} on pool {status.pool} with {gb(host)}, all its nodes hold; no allowed "
            "pool has more host memory (lower rollouts.maxPrompts or use a per_prompt scope)",
        )
    raised = min(math.ceil(host * growth), nxt.host_memory_bytes)
    return Decision(
        "launch",
        C.HOST_MEMORY_RAISED,
        f"worker {what} on pool {status.pool} at its nodes' {gb(host)}; moving to pool {nxt.name} "
        f"with {gb(raised)}",
        placement_on(nxt, status.attempt + 1, raised),
    )


def after_attempt(
    status: TraceStatus, done: Finished, pools: list[Pool], max_attempts: int, growth: float,
    what_fits: WhatFits = lambda: GENERIC_WHAT_FITS,
) -> Decision:
    """The decision once the current attempt's Job has finished."""
    record = status.current()
    host = record.host_memory_bytes if record else 0
    if done.outcome == "Succeeded":
        return Decision(
            "succeed", C.WORKER_SUCCEEDED, f"worker finished on pool {status.pool} (attempt {status.attempt})"
        )
    if done.outcome == "GPUOutOfMemory":
        decision = _after_gpu_oom(status, done, pools, host, what_fits)
    elif done.outcome in ("KernelOOMKilled", "HostOutOfMemory"):
        decision = _after_host_oom(status, done, pools, host, growth)
    else:
        code = f" (exit code {done.exit_code})" if done.exit_code is not None else ""
        where = f" in stage {done.stage}" if done.stage else ""
        return Decision(
            "fail",
            C.WORKER_FAILED,
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
        C.ATTEMPTS_EXHAUSTED,
        f"the worker pod on pool {status.pool} was evicted {count} times; "
        f"resources.maxAttempts ({max_attempts}) reached",
    )
