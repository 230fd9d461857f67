"""The token influence computation over several processes, with the same scores as one process.

1. Capture (data parallel): each rank runs the forward/backward for its contiguous share of the
   responses (partition.contiguous_shares, balanced by sequence tokens).
2. Exchange (grad_staging): each module has one owner (partition.assign_modules, balanced by
   D^2 per token + D^3/3); the owner receives that module's rows from every rank (exchange.py).
3. Hessian, solve and scoring (module parallel): the owner runs exactly the single-process code of
   trace.py on exactly the single-process rows, so each module's contribution is bit-for-bit the
   same; only the sum over modules is added up in another order (ranks first, then a reduce).
4. The float64 token scores (and the HINV_DOT matrix) are summed onto rank 0, which alone returns a
   TraceResult; module reports are gathered there in module order.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from influence_trace.api.contract import GPUOutOfMemory
from influence_trace.api.spec import TraceSettings
from influence_trace.planning.options import WorkerOptions
from influence_trace.run.distributed import RankGroup
from influence_trace.run.exchange import exchange_factors
from influence_trace.run.partition import Share, assign_modules, contiguous_shares, module_cost
from influence_trace.trace.capture import Factors, capture_factors, compute_dtype
from influence_trace.trace.diagnostics import summarize_hinv_dot
from influence_trace.trace.engine import (
    build_scopes,
    empty_report,
    frozen_weights,
    tf32_matmuls,
    trace_module,
)
from influence_trace.trace.ledger import MemoryLedger
from influence_trace.trace.projection import build_traced_modules, move_projections, projection_bytes
from influence_trace.trace.records import ModuleReport, TraceResult
from influence_trace.trace.selection import ResponseGroup, Selection
from influence_trace.trace.timing import StageTimer

FAIL_ENV = "INFLUENCE_TRACE_TEST_FAIL_RANK"  # tests only: "RANK:STAGE[:kill]"
ShareHooks = Callable[[Selection], dict[str, Any]]  # this rank's share -> run_trace's keep-factors hooks


def inject_failure(rank: int, stage: str) -> None:
    """Make one rank fail at the start of a stage (tests of the failure path; unset in production).

    ``1:hessian_solve`` raises a GPU out-of-memory there; ``1:hessian_solve:kill`` SIGKILLs the rank,
    as the kernel's OOM killer would.
    """
    spec = os.environ.get(FAIL_ENV, "").split(":")
    if len(spec) < 2 or spec[0] != str(rank) or spec[1] != stage:
        return
    if spec[2:] == ["kill"]:
        os.kill(os.getpid(), signal.SIGKILL)
    raise GPUOutOfMemory(f"injected failure ({FAIL_ENV}) at the start of {stage}", stage)


def sub_selection(selection: Selection, share: Share) -> Selection:
    """The responses [share.first, share.last) as a selection (groups cut at the share's edges).

    Capture only needs each response's own weight (its token count and advantage), so a group split
    between two ranks captures the same rows as the whole group would.
    """
    groups, start = [], 0
    for g in selection.groups:
        a, b = max(share.first - start, 0), min(share.last - start, len(g.responses))
        if a < b:
            groups.append(ResponseGroup(g.prompt_id, g.responses[a:b], g.accepted[a:b], g.advantages[a:b]))
        start += len(g.responses)
    return Selection(groups, 0, [], len(groups))


def _shares(selection: Selection, world: int) -> list[Share]:
    responses = selection.responses
    weights = [len(r.prompt_ids) + r.num_tokens for r in responses]
    return contiguous_shares(weights, [r.num_tokens for r in responses], world)


def _assignment(traced, selection: Selection, trace: TraceSettings, world: int) -> list[list[int]]:
    tokens, count = selection.num_tokens, len(selection.responses)
    return assign_modules([module_cost(t.dims.dim, tokens, count, trace) for t in traced], world)


def _reduce_to_writer(tensor: torch.Tensor) -> np.ndarray:
    dist.reduce(tensor, dst=0, op=dist.ReduceOp.SUM)
    return tensor.cpu().numpy()


def run_trace_parallel(model: nn.Module, selection: Selection, trace: TraceSettings, options: WorkerOptions,
                       ledger: MemoryLedger, timer: StageTimer, group: RankGroup,
                       hooks: ShareHooks = lambda share: {}) -> TraceResult | None:
    """Every rank calls this with the same selection; rank 0 gets the TraceResult, the others None.

    ``hooks(share)`` may return this rank's stored factors (``factors``, skipping its capture) or an
    ``on_captured`` callback that stores them (output.keepFactors), as run_trace takes them.
    """
    device = torch.device(options.device)
    responses = selection.responses
    traced = build_traced_modules(model, list(trace.modules), trace.factor, trace.max_hessian_dim,
                                  trace.seed, compute_dtype(trace))
    ledger.allocate("weights", sum(p.numel() * p.element_size() for p in model.parameters()), "setup")
    ledger.allocate("projections", projection_bytes(traced), "setup")
    move_projections(traced, device)
    shares = _shares(selection, group.world)
    assignment = _assignment(traced, selection, trace, group.world)
    names = [t.name for t in traced]
    with tf32_matmuls(device, trace.tf32):
        share = sub_selection(selection, shares[group.rank])
        given = hooks(share)
        local = given.get("factors")
        if local is None:
            with timer.stage("logprob_backward"), frozen_weights(model):
                inject_failure(group.rank, "logprob_backward")
                local = capture_factors(model, share, traced, trace, options, ledger)
            ledger.free("capture_batch")
            if "on_captured" in given:
                given["on_captured"](local)
        with timer.stage("grad_staging"):
            owned = exchange_factors(local, names, assignment, shares, group.rank, device, ledger)
        del local
        offsets = np.concatenate([[0], np.cumsum([r.num_tokens for r in responses])]).astype(np.int64)
        total = int(offsets[-1])
        ledger.allocate("token_scores", total * 8, "token_scoring")
        scores = torch.zeros(total, dtype=torch.float64, device=device)
        hinv_dot = None
        if trace.debug_hessian_similarity:
            hinv_dot = torch.zeros((len(responses),) * 2, dtype=torch.float64, device=device)
        scopes = build_scopes(selection, trace)
        with timer.stage("hessian_solve"):
            inject_failure(group.rank, "hessian_solve")
        reports: dict[int, ModuleReport] = {}
        for index in assignment[group.rank]:
            u, v = owned.pop(names[index])
            factors = Factors({names[index]: u}, {names[index]: v}, offsets)
            reports[index] = trace_module(traced[index], factors, scopes, trace, options, ledger, timer,
                                           scores, hinv_dot)
            del u, v, factors
    with timer.stage("wait"):  # for the slowest rank, so token_scoring's reduce times the reduce alone
        dist.barrier()
    with timer.stage("token_scoring"):
        host = _reduce_to_writer(scores)
        matrix = None if hinv_dot is None else _reduce_to_writer(hinv_dot)
    parts: list[Any] = [None] * group.world
    dist.gather_object(reports, parts if group.is_writer else None, dst=0)
    if not group.is_writer:
        return None
    merged = {i: r for part in parts for i, r in part.items()}
    accepted = {r.response_id: bool(a) for g in selection.groups
                for r, a in zip(g.responses, g.accepted, strict=True)}
    result = TraceResult(
        {r.response_id: host[offsets[i] : offsets[i + 1]].copy() for i, r in enumerate(responses)},
        accepted,
        [merged.get(i, empty_report(t)) for i, t in enumerate(traced)],
        len(scopes),
    )
    if matrix is not None:
        result.diagnostics = summarize_hinv_dot(matrix, selection)
    return result


def gather_resources(group: RankGroup, resources: dict, timer: StageTimer | None = None) -> dict | None:
    """Rank 0's resources with the per-process peaks of every rank (None on the other ranks).

    peak_gpu_bytes and ledger_peak_bytes become the largest over ranks (the per-GPU figure the memory
    model predicts); peak_host_bytes the sum over ranks (a pod's host memory when all ranks share it).
    With ``timer``, ``stage_seconds`` holds every rank's stage seconds (``rank_stage_seconds``).
    """
    keys = ("peak_gpu_bytes", "peak_host_bytes", "ledger_peak_bytes")
    mine = {k: resources[k] for k in keys}
    if timer is not None:
        mine["stage_seconds"] = timer.totals()
    gathered: list[Any] = [None] * group.world
    dist.gather_object(mine, gathered if group.is_writer else None, dst=0)
    if not group.is_writer:
        return None
    out = dict(resources)
    out["processes"] = group.world
    out["per_process"] = [{k: g[k] for k in keys} for g in gathered]
    for key in ("peak_gpu_bytes", "ledger_peak_bytes"):
        out[key] = max(g[key] for g in gathered)
    out["peak_host_bytes"] = sum(g["peak_host_bytes"] for g in gathered)
    if timer is not None:
        out["stage_seconds"] = rank_stage_seconds([g["stage_seconds"] for g in gathered])
    return out


def rank_stage_seconds(per_rank: list[dict[str, float]]) -> dict[str, dict]:
    """Per stage over the ranks: the slowest rank's seconds (what the step waits for), the spread
    (slowest less fastest: the imbalance) and every rank's. ``wait`` is each rank's wait for the
    slowest before the scores are reduced: a rank's wait is the others' lead."""
    stages = sorted({k for seconds in per_rank for k in seconds})
    out = {}
    for stage in stages:
        values = [round(float(seconds.get(stage, 0.0)), 6) for seconds in per_rank]
        out[stage] = {"max": max(values), "spread": round(max(values) - min(values), 6), "per_rank": values}
    return out
