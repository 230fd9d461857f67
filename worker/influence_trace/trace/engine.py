"""The token influence computation, start to finish, for one loaded model and one selection.

Order of work (docs/algorithm.md, "Per module: staging, Hessian, solve"): capture every module's
projected factors in one pass over the responses; then, one module at a time, stage its factors on
the device and per scope build the Hessian, factor it, form the scope's response gradients and solve
for them in place, and score the scope's tokens. Only one module's Hessian, and one scope's R_s x D
buffer, exist at a time.

The same code runs in one process and in several (trace/ranks.py): each process captures its share
of the responses, traces the modules it owns from every token's rows, and the scores are summed onto
the writer. Alone, the share is everything, the rows are the captured ones, and nothing is summed.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TypeVar

import numpy as np
import torch
from torch import nn

from influence_trace.api.progress import REPORTER
from influence_trace.api.spec import TraceSettings
from influence_trace.planning.options import WorkerOptions
from influence_trace.trace.capture import Factors, capture_factors, compute_dtype
from influence_trace.trace.determinism import deterministic_algorithms
from influence_trace.trace.diagnostics import summarize_hinv_dot
from influence_trace.trace.hessian import STAGE, response_gradients, response_hessian, token_hessian
from influence_trace.trace.ledger import MemoryLedger
from influence_trace.trace.projection import (
    TracedModule,
    build_traced_modules,
    move_projections,
    projection_bytes,
)
from influence_trace.trace.ranks import ONE_PROCESS, ModuleRows, Ranks
from influence_trace.trace.records import ModuleReport, TraceResult
from influence_trace.trace.scoring import Contrast, contrast, score_tokens
from influence_trace.trace.selection import Selection
from influence_trace.trace.solve import damped_cholesky, solve_in_place
from influence_trace.trace.staging import transfer_for
from influence_trace.trace.timing import Timer

HESSIAN_DTYPES = {"float32": torch.float32, "float64": torch.float64}
T = TypeVar("T")


@dataclass
class Scope:
    """A contiguous run of responses (and so of token rows) with its contrast coefficients."""

    label: str
    first: int  # first response index (scope order)
    last: int  # one past the last response index
    contrast: Contrast  # R_s x R_s, structured: O(R_s) numbers


def build_scopes(selection: Selection, trace: TraceSettings) -> list[Scope]:
    """per_prompt: one scope per group; all_selected: one scope, counts over every selected group."""
    groups = selection.groups
    if trace.scope == "all_selected":
        acc = np.concatenate([g.accepted for g in groups])
        adv = np.concatenate([g.advantages for g in groups])
        return [Scope("all_selected", 0, len(acc), contrast(acc, adv, trace))]
    scopes, first = [], 0
    for g in groups:
        last = first + len(g.responses)
        coeffs = contrast(g.accepted, g.advantages, trace)
        scopes.append(Scope(f"prompt {g.prompt_id!r}", first, last, coeffs))
        first = last
    return scopes


@contextmanager
def frozen_weights(model: nn.Module) -> Iterator[None]:
    """No parameter gets a gradient during capture; flags are restored afterwards."""
    flags = [p.requires_grad for p in model.parameters()]
    for p in model.parameters():
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p, flag in zip(model.parameters(), flags, strict=True):
            p.requires_grad_(flag)


@contextmanager
def tf32_matmuls(device: torch.device, allow: bool) -> Iterator[None]:
    """TF32 matmuls on CUDA exactly when ``allow`` (TraceSettings.tf32) says so, restored afterwards."""
    if device.type != "cuda":
        yield
        return
    previous = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = allow
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32 = previous


@dataclass
class _Staged:
    """One module's factors on the device, in the Hessian dtype."""

    u: torch.Tensor  # T x k_out
    v: torch.Tensor  # T x k_in
    offsets: list[int]  # R + 1 token offsets

    @property
    def dim(self) -> int:
        return self.u.shape[1] * self.v.shape[1]


def _stage(rows: ModuleRows, offsets: list[int], dtype: torch.dtype, device: torch.device,
           ledger: MemoryLedger) -> _Staged:
    """The module's rows on the device in the Hessian dtype (stage grad_staging); gradients are formed
    per scope. Host rows go up through reused pinned chunks (the dtype change needs one chunk); rows
    already on the device (received there by the exchange) are converted there, or used as they are
    when their dtype is the Hessian's: no host round trip."""
    given_u, given_v = rows.take()
    nbytes = (given_u.numel() + given_v.numel()) * (torch.finfo(dtype).bits // 8)
    there = given_u.device.type == device.type and device.index in (None, given_u.device.index)
    as_they_are = there and given_u.dtype == dtype and given_v.dtype == dtype
    if as_they_are:  # the received buffers are the factors: their claim passes to "factors"
        rows.release()
    ledger.allocate("factors", nbytes, "grad_staging")
    if there:
        u, v = given_u.to(dtype), given_v.to(dtype)
    else:
        transfer = transfer_for(device)
        u, v = transfer.to_device(given_u, device, dtype), transfer.to_device(given_v, device, dtype)
    del given_u, given_v  # converted: the received buffers go now
    if not as_they_are:
        rows.release()
    return _Staged(u, v, offsets)


def _scope_gradients(staged: _Staged, first: int, last: int, ledger: MemoryLedger,
                     stage: str, chunk_bytes: int) -> torch.Tensor:
    """G_s (R_s x D) for responses [first, last), formed only when needed (declared "response_grads").

    Forming it costs 2 T_s D flops, nothing beside the Hessian's, so it is formed again rather than
    kept through the Hessian and its factorization.
    """
    a, b = staged.offsets[first], staged.offsets[last]
    ledger.allocate("response_grads", (last - first) * staged.dim * staged.u.element_size(), stage)
    local = [o - a for o in staged.offsets[first : last + 1]]
    return response_gradients(staged.u[a:b], staged.v[a:b], local, chunk_bytes, ledger, stage)


def _inverse_solutions(staged: _Staged, first: int, last: int, trace: TraceSettings, chunk_bytes: int,
                       ledger: MemoryLedger, where: str,
                       similarity: torch.Tensor | None = None) -> tuple[torch.Tensor, float, int]:
    """(W^T = (H~^-1 G_s^T)^T as R_s x D, damping, retries) for responses [first, last).

    Only one R_s x D buffer exists at a time: for hessianSource response G_s is freed once H = G_s^T G_s
    is built; after the factorization (H freed) G_s is formed again and solved in place. ``similarity``
    receives G_s H~^-1 G_s^T (HINV_DOT).
    """
    a, b = staged.offsets[first], staged.offsets[last]
    if trace.hessian_source == "token":
        hessian = token_hessian(staged.u[a:b], staged.v[a:b], chunk_bytes, ledger)
    else:
        grads = _scope_gradients(staged, first, last, ledger, STAGE, chunk_bytes)
        hessian = response_hessian(grads, ledger)
        del grads
        ledger.free("response_grads")
    fact = damped_cholesky(hessian, trace.reg_lambda, trace.max_damping_retries, ledger, where)
    del hessian
    ledger.free("hessian")
    solved = _scope_gradients(staged, first, last, ledger, STAGE, chunk_bytes)
    solve_in_place(fact, solved, similarity)
    damping, retries = fact.damping, fact.retries
    del fact
    ledger.free("cholesky")
    return solved, damping, retries


def _score_scope(scope: Scope, solved: torch.Tensor, staged: _Staged, scores: torch.Tensor,
                 chunk_bytes: int, ledger: MemoryLedger) -> None:
    """Add the scope's token scores for this module: u_t^T M_o v_t with M = C W^T, C structured.

    The structured contrast's K x D directions (K <= 2), one D row and K x R coefficients are not
    declared (about 1.2 MB at D = 66,304 and R = 45,867, docs/memory-model.md); the GPU strategy's
    token chunk is (trace/scoring_gpu.py), and it overwrites ``solved`` with the directions.
    """
    a, b = staged.offsets[scope.first], staged.offsets[scope.last]
    local = [o - a for o in staged.offsets[scope.first : scope.last + 1]]
    score_tokens(scope.contrast, solved, staged.u[a:b], staged.v[a:b], local, scores[a:b], chunk_bytes,
                 ledger)


def _global_hinv_dot(staged: _Staged, trace: TraceSettings, chunk_bytes: int, ledger: MemoryLedger,
                     name: str, hinv_dot: torch.Tensor) -> None:
    """Add G H~^-1 G^T over every selected response, with one global Hessian (HINV_DOT), to hinv_dot."""
    count = len(staged.offsets) - 1
    solved, _, _ = _inverse_solutions(staged, 0, count, trace, chunk_bytes, ledger,
                                      f"module {name}, HINV_DOT global Hessian", hinv_dot)
    del solved
    ledger.free("response_grads")


def trace_module(mod: TracedModule, rows: ModuleRows, offsets: list[int], scopes: list[Scope],
                 trace: TraceSettings, options: WorkerOptions, ledger: MemoryLedger, timer: Timer,
                 scores: torch.Tensor, hinv_dot: torch.Tensor | None) -> ModuleReport:
    """All of one module's work; its device buffers are freed before the next module starts."""
    report = empty_report(mod)
    device = torch.device(options.device)
    with timer.stage("grad_staging"):
        staged = _stage(rows, offsets, HESSIAN_DTYPES[trace.hessian_dtype], device, ledger)
    # Under all_selected the scope's Hessian is the global one: reuse its solutions for HINV_DOT.
    reuse_for_diag = (
        hinv_dot is not None and trace.scope == "all_selected" and trace.hessian_mode == "inverse"
    )
    for scope in scopes:
        if trace.hessian_mode == "identity":
            with timer.stage("grad_staging"):
                solved = _scope_gradients(staged, scope.first, scope.last, ledger, "grad_staging",
                                          options.chunk_bytes)
        else:
            with timer.stage("hessian_solve"):
                where = f"module {mod.name}, scope {scope.label}"
                solved, damping, retries = _inverse_solutions(
                    staged, scope.first, scope.last, trace, options.chunk_bytes, ledger, where,
                    hinv_dot if reuse_for_diag else None,
                )
            report.damping.append(damping)
            report.retries += retries
        with timer.stage("token_scoring"):
            _score_scope(scope, solved, staged, scores, options.chunk_bytes, ledger)
        del solved
        ledger.free("response_grads")
    if hinv_dot is not None and not reuse_for_diag:
        with timer.stage("hessian_solve"):
            _global_hinv_dot(staged, trace, options.chunk_bytes, ledger, mod.name, hinv_dot)
    del staged
    ledger.free("factors")
    return report


def _progress(items: Iterable[T], enabled: bool, desc: str, total: int) -> Iterable[T]:
    if not enabled:
        return items
    from tqdm.auto import tqdm

    return tqdm(items, desc=desc, unit="module", leave=False, total=total)


def run_trace(model: nn.Module, selection: Selection, trace: TraceSettings, options: WorkerOptions,
              ledger: MemoryLedger, timer: Timer, factors: Factors | None = None,
              on_captured: Callable[[Factors], None] | None = None,
              ranks: Ranks = ONE_PROCESS) -> TraceResult | None:
    """Scores for every token of every selected response (float64, summed over traced modules).

    Every rank of a multi-process trace calls this with the same selection and its ``ranks``
    (trace/ranks.py); the writer gets the TraceResult, the other ranks None. One process (the
    default) always gets the result.
    Resume seam: ``factors`` (captured earlier for ``ranks.share(selection)`` and the same settings)
    skips capture; ``on_captured`` receives freshly captured factors before the Hessian work that
    may run out of memory.
    """
    device = torch.device(options.device)
    responses = selection.responses
    accepted = {
        r.response_id: bool(a) for g in selection.groups for r, a in zip(g.responses, g.accepted, strict=True)
    }
    traced = build_traced_modules(model, list(trace.modules), trace.factor, trace.max_hessian_dim,
                                  trace.seed, compute_dtype(trace))
    ledger.allocate("weights", sum(p.numel() * p.element_size() for p in model.parameters()), "setup")
    if not responses:
        return TraceResult({}, accepted, [empty_report(t) for t in traced], 0) if ranks.is_writer else None
    ledger.allocate("projections", projection_bytes(traced), "setup")
    move_projections(traced, device)
    scopes = build_scopes(selection, trace)
    offsets = selection.token_offsets
    with tf32_matmuls(device, trace.tf32), deterministic_algorithms(trace.deterministic):
        if factors is None:
            with timer.stage("logprob_backward"), frozen_weights(model):
                ranks.enter("logprob_backward")
                factors = capture_factors(model, ranks.share(selection), traced, trace, options, ledger)
            ledger.free("capture_batch")
            if on_captured is not None:
                on_captured(factors)
        ledger.allocate("token_scores", int(offsets[-1]) * 8, "token_scoring")
        scores = torch.zeros(int(offsets[-1]), dtype=torch.float64, device=device)
        hinv_dot = None
        if trace.debug_hessian_similarity:
            hinv_dot = torch.zeros((len(responses), len(responses)), dtype=torch.float64, device=device)
        count = len(ranks.owned(traced, selection, trace))
        rows = ranks.module_rows(factors, traced, selection, trace, device, ledger, timer)
        del factors  # the exchange empties a rank's captured rows as it sends them
        ranks.enter("hessian_solve")
        bounds = [int(x) for x in offsets]
        reports = {
            r.index: trace_module(traced[r.index], r, bounds, scopes, trace, options, ledger, timer, scores,
                                  hinv_dot)
            for r in REPORTER.track(_progress(rows, options.progress, "modules", count), "hessian", "module",
                                    count)
        }
    summed = ranks.reduce(scores, hinv_dot, reports, timer)
    if summed is None:  # not the writer
        return None
    host, matrix, reports = summed
    result = TraceResult(
        {r.response_id: host[offsets[i] : offsets[i + 1]].copy() for i, r in enumerate(responses)},
        accepted,
        [reports.get(i, empty_report(t)) for i, t in enumerate(traced)],
        len(scopes),
    )
    if matrix is not None:
        result.diagnostics = summarize_hinv_dot(matrix, selection)
    return result


def empty_report(mod: TracedModule) -> ModuleReport:
    d = mod.dims
    return ModuleReport(d.name, d.in_features, d.out_features, d.k_in, d.k_out)
