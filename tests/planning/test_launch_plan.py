"""planning/launch_plan.py's launch counts against the launches the worker's code makes (counted on the
CPU by trace/launches.py), per kernel strategy, Hessian source and module shape."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from influence_trace.api.architectures import ModuleDims
from influence_trace.planning import hessian_plan
from influence_trace.planning.hessian_plan import KERNELS_ENV
from influence_trace.planning.launch_plan import ScopeWork, scope_launches
from influence_trace.planning.options import WorkerOptions
from influence_trace.trace.engine import Scope, trace_module
from influence_trace.trace.launches import CountingTimer, LaunchCounter
from influence_trace.trace.ledger import MemoryLedger
from influence_trace.trace.projection import TracedModule
from influence_trace.trace.ranks import ModuleRows
from influence_trace.trace.scoring import contrast

from tests.trace.bruteforce import settings


def counted(k_out: int, k_in: int, tokens: int, responses: int, chunk: int, trace) -> LaunchCounter:
    """Launches of trace_module for one all_selected scope on random float32 factors."""
    gen = torch.Generator().manual_seed(k_out + k_in)
    offsets = np.linspace(0, tokens, responses + 1).round().astype(np.int64)
    u, v = torch.randn(tokens, k_out, generator=gen), torch.randn(tokens, k_in, generator=gen)
    rows = ModuleRows(0, [u, v])
    accepted = np.arange(responses) % 2 == 0
    scope = Scope("all", 0, responses, contrast(accepted, np.zeros(responses), trace))
    mod = TracedModule(ModuleDims("m", k_in, k_out, k_in, k_out), None, None, None)
    options = WorkerOptions(device="cpu", chunk_bytes=chunk, progress=False)
    counter = LaunchCounter()
    with counter:
        trace_module(mod, rows, [int(x) for x in offsets], [scope], trace, options, MemoryLedger(),
                     CountingTimer(counter), torch.zeros(tokens, dtype=torch.float64), None)
    return counter


@pytest.mark.parametrize(("kernels", "source", "shape"),
                         list(itertools.product(["gpu", "cpu"], ["token", "response"], [(24, 40), (4, 24)])))
def test_launch_plan_matches_the_counted_launches(monkeypatch, kernels: str, source: str, shape) -> None:
    monkeypatch.setenv(KERNELS_ENV, kernels)
    monkeypatch.setattr(hessian_plan, "MAX_GRAM_CHUNK_TOKENS", 16)  # several CPU Gram chunks
    trace = settings(scope="all_selected", contrastive_agg="mean", exclude_self_response=True,
                     hessian_source=source, hessian_dtype="float32")
    tokens, responses, chunk = 300, 30, 200_000
    got = counted(*shape, tokens, responses, chunk, trace).launches
    want = scope_launches(ScopeWork(*shape, tokens, responses, 4, chunk, kernels, source))
    for stage in ("hessian_solve", "token_scoring"):
        assert abs(got[stage] - want[stage]) <= 0.15 * got[stage], (stage, got, want)
