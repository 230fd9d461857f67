"""The ranks of a multi-process trace: trace/ranks.py's Ranks over torch.distributed.

engine.run_trace is the one computation; with ``ProcessRanks`` it runs on every rank, and the steps
that differ from one process are these:

1. Capture (data parallel): each rank runs the forward/backward for its contiguous share of the
   responses (partition.contiguous_shares, balanced by sequence tokens).
2. Exchange (grad_staging): each module has one owner (partition.assign_modules, balanced by
   D^2 per token + D^3/3); the owner receives that module's rows from every rank (exchange.py).
3. Hessian, solve and scoring (module parallel): the owner runs the engine's per-module code on
   exactly the single-process rows, so each module's contribution is bit-for-bit the same; only the
   sum over modules is added up in another order (ranks first, then a reduce).
4. The float64 token scores (and the HINV_DOT matrix) are summed onto rank 0, which alone gets a
   TraceResult; module reports are gathered there in module order.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

from influence_trace.api.contract import GPUOutOfMemory
from influence_trace.api.spec import TraceSettings
from influence_trace.planning.memory_model import exchange_overlap_fits, module_peak, module_stage_bytes
from influence_trace.planning.options import WorkerOptions
from influence_trace.run.distributed import RankGroup
from influence_trace.run.exchange import Exchange
from influence_trace.run.partition import Share, assign_modules, contiguous_shares, module_cost
from influence_trace.trace.capture import Factors
from influence_trace.trace.capture_planning import capture_room
from influence_trace.trace.engine import HESSIAN_DTYPES
from influence_trace.trace.kernels import strategy
from influence_trace.trace.ledger import MemoryLedger
from influence_trace.trace.projection import TracedModule
from influence_trace.trace.ranks import ModuleRows, Summed
from influence_trace.trace.records import ModuleReport
from influence_trace.trace.selection import ResponseGroup, Selection, selection_workload
from influence_trace.trace.timing import Timer

FAIL_ENV = "INFLUENCE_TRACE_TEST_FAIL_RANK"  # tests only: "RANK:STAGE[:kill]"


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


def _assignment(traced: list[TracedModule], selection: Selection, trace: TraceSettings,
                world: int) -> list[list[int]]:
    tokens, count = selection.num_tokens, len(selection.responses)
    return assign_modules([module_cost(t.dims.dim, tokens, count, trace) for t in traced], world)


def _reduce_to_writer(tensor: torch.Tensor) -> np.ndarray:
    dist.reduce(tensor, dst=0, op=dist.ReduceOp.SUM)
    return tensor.cpu().numpy()


@dataclass(frozen=True)
class ProcessRanks:
    """trace/ranks.py's Ranks over torch.distributed: this rank's share, its modules, the sums."""

    group: RankGroup
    options: WorkerOptions

    @property
    def world(self) -> int:
        return self.group.world

    @property
    def is_writer(self) -> bool:
        return self.group.is_writer

    @property
    def shard(self) -> tuple[int, int]:
        """(rank, world): names this rank's stored factors (output.keepFactors)."""
        return self.group.rank, self.group.world

    def share(self, selection: Selection) -> Selection:
        return sub_selection(selection, _shares(selection, self.world)[self.group.rank])

    def enter(self, stage: str) -> None:
        inject_failure(self.group.rank, stage)

    def owned(self, traced: list[TracedModule], selection: Selection, trace: TraceSettings) -> list[int]:
        return _assignment(traced, selection, trace, self.world)[self.group.rank]

    def module_rows(self, captured: Factors, traced: list[TracedModule], selection: Selection,
                    trace: TraceSettings, device: torch.device, ledger: MemoryLedger,
                    timer: Timer) -> Iterator[ModuleRows]:
        """This rank's modules from the exchange (exchange.py), round by round, the next round beside
        a module's Hessian work where ``options.exchange_overlap`` says so, or else where it fits."""
        names = [t.name for t in traced]
        assignment = _assignment(traced, selection, trace, self.world)
        owned = assignment[self.group.rank]
        ahead = self._ahead(traced, owned, selection, trace, device, ledger)
        exchange = Exchange(captured, names, assignment, _shares(selection, self.world), self.group.rank,
                            device, HESSIAN_DTYPES[trace.hessian_dtype], ledger, ahead)
        yield from exchange.rows(timer)

    def _ahead(self, traced: list[TracedModule], owned: list[int], selection: Selection, trace: TraceSettings,
               device: torch.device, ledger: MemoryLedger) -> bool | Callable[[int], bool]:
        """The overlap as asked for, or: where the room beside what is held now (the ledger's budget,
        else the card less the placement headroom, as for the capture) takes this rank's largest module
        peak (the memory model's, for this selection) with the next round's buffers."""
        if self.options.exchange_overlap is not None:
            return self.options.exchange_overlap
        work = selection_workload(selection)
        kernels = strategy(device)
        peak = max((module_peak(module_stage_bytes(traced[i].dims, work, trace, self.options.chunk_bytes,
                                                   kernels)) for i in owned), default=0)
        room = capture_room(ledger, device)
        return lambda nbytes: exchange_overlap_fits(room, peak, nbytes)

    def reduce(self, scores: torch.Tensor, hinv_dot: torch.Tensor | None,
               reports: dict[int, ModuleReport], timer: Timer) -> Summed | None:
        """The scores (and HINV_DOT) summed onto rank 0 and every rank's module reports gathered there."""
        with timer.stage("wait"):  # for the slowest rank, so token_scoring's reduce times the reduce alone
            dist.barrier()
        with timer.stage("token_scoring"):
            host = _reduce_to_writer(scores)
            matrix = None if hinv_dot is None else _reduce_to_writer(hinv_dot)
        parts: list[Any] = [None] * self.world
        dist.gather_object(reports, parts if self.is_writer else None, dst=0)
        if not self.is_writer:
            return None
        return host, matrix, {i: r for part in parts for i, r in part.items()}


def gather_resources(group: RankGroup, resources: dict, timer: Timer | None = None) -> dict | None:
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
