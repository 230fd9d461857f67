"""Benchmark: kernel launches per stage of the Hessian work, extrapolated to the seed's per-GPU workload.

Every aten operation that would launch a kernel is counted (trace/launches.py, a TorchDispatchMode:
views, allocations and metadata are not launches; host reads of a device scalar are counted apart as
syncs) while the engine's per-module work (trace/engine.py ``trace_module``: staging, Hessian build,
Cholesky, response gradients, solves, scoring) runs on the CPU on random factors of each of
Qwen2.5-1.5B's module shapes, all_selected, mean contrast with leave-one-out, once per kernel
strategy (``cpu``: the loops; ``gpu``: trace/hessian_gpu.py and trace/scoring_gpu.py).

Extrapolation: the work is run at 1/SCALE of the seed's tokens with chunk bytes (and the CPU
strategy's 1,024-token Gram chunk cap) divided by SCALE, so each module has the seed's number of
chunks; the per-response part is measured by running again with twice the responses over the same
tokens, and counted at the seed's number of responses. Ops that launch several kernels inside one
aten call (cuSOLVER's Cholesky, segment_reduce's offsets) count once.

    .venv/bin/python bench/kernel_launches.py [--factor 32] [--tokens 733870] [--lengths 128 3822]
        [--kernels cpu gpu] [--scale 1024]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import torch
from influence_trace.api.architectures import PRESETS, traced_module_dims
from influence_trace.api.spec import DEFAULT_MODULES, TraceSettings
from influence_trace.planning import hessian_plan
from influence_trace.planning.hessian_plan import CHUNK_BYTES, KERNELS_ENV
from influence_trace.planning.options import WorkerOptions
from influence_trace.trace.engine import Scope, trace_module
from influence_trace.trace.launches import CountingTimer, LaunchCounter
from influence_trace.trace.ledger import MemoryLedger
from influence_trace.trace.projection import TracedModule
from influence_trace.trace.ranks import ModuleRows
from influence_trace.trace.scoring import contrast

STAGES = ("grad_staging", "hessian_solve", "token_scoring")


@contextmanager
def kernels(choice: str) -> Iterator[None]:
    """INFLUENCE_TRACE_KERNELS=choice for the block."""
    before = os.environ.get(KERNELS_ENV)
    os.environ[KERNELS_ENV] = choice
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(KERNELS_ENV, None)
        else:
            os.environ[KERNELS_ENV] = before


def trace_settings(**fields) -> TraceSettings:
    base = {"factor": 32, "scope": "all_selected", "contrastiveAgg": "mean", "excludeSelfResponse": True}
    return TraceSettings.model_validate({**base, **fields})


def count_module(k_out: int, k_in: int, tokens: int, responses: int, chunk_bytes: int,
                 trace: TraceSettings) -> LaunchCounter:
    """Launches of one module's trace_module on random factors: one all_selected scope."""
    from influence_trace.api.architectures import ModuleDims

    gen = torch.Generator().manual_seed(k_out * 1000 + k_in)
    offsets = np.linspace(0, tokens, responses + 1).round().astype(np.int64)
    name = f"m{k_out}x{k_in}"
    rows = ModuleRows(0, [torch.randn(tokens, k_out, generator=gen),
                          torch.randn(tokens, k_in, generator=gen)])
    accepted = np.arange(responses) % 2 == 0
    scope = Scope("all_selected", 0, responses, contrast(accepted, np.zeros(responses), trace))
    mod = TracedModule(ModuleDims(name, k_in * 32, k_out * 32, k_in, k_out), None, None, None)
    counter = LaunchCounter()
    options = WorkerOptions(device="cpu", chunk_bytes=chunk_bytes, progress=False)
    scores = torch.zeros(tokens, dtype=torch.float64)
    with counter:
        trace_module(mod, rows, [int(x) for x in offsets], [scope], trace, options, MemoryLedger(),
                     CountingTimer(counter), scores, None)
    return counter


def seed_launches(k_out: int, k_in: int, tokens: int, length: int, scale: int, strategy: str,
                  trace: TraceSettings) -> dict[str, float]:
    """Launches per stage of one module at the seed's tokens and responses (see the module docstring)."""
    small = max(1, tokens // scale)
    responses = max(1, tokens // length)
    r_small = max(2, responses // scale)
    chunk = max(1, CHUNK_BYTES[strategy] // scale)
    cap = hessian_plan.MAX_GRAM_CHUNK_TOKENS
    hessian_plan.MAX_GRAM_CHUNK_TOKENS = max(1, cap // scale)
    try:
        one = count_module(k_out, k_in, small, r_small, chunk, trace)
        two = count_module(k_out, k_in, small, 2 * r_small, chunk, trace)
    finally:
        hessian_plan.MAX_GRAM_CHUNK_TOKENS = cap
    out = {}
    for stage in STAGES:
        per_response = (two.launches[stage] - one.launches[stage]) / r_small
        out[stage] = one.launches[stage] + per_response * (responses - r_small)
    out["syncs"] = sum(one.syncs.values())
    return out


def workload_launches(args: argparse.Namespace, strategy: str, length: int) -> dict[str, float]:
    """Sum over every traced module of Qwen2.5-1.5B at the factor (identical shapes counted once)."""
    dims = traced_module_dims(PRESETS["qwen2.5-1.5b"], DEFAULT_MODULES, args.factor, -1)
    shapes = Counter((d.k_out, d.k_in) for d in dims)
    trace = trace_settings(factor=args.factor)
    total: Counter[str] = Counter()
    with kernels(strategy):
        for (k_out, k_in), count in sorted(shapes.items()):
            per = seed_launches(k_out, k_in, args.tokens, length, args.scale, strategy, trace)
            for stage, n in per.items():
                total[stage] += n * count
    return dict(total)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--factor", type=int, default=32)
    parser.add_argument("--tokens", type=int, default=733_870, help="response tokens per GPU (the seed's)")
    parser.add_argument("--lengths", type=int, nargs="+", default=[128, 3822], help="tokens per response")
    parser.add_argument("--kernels", nargs="+", default=["cpu", "gpu"], choices=["cpu", "gpu"])
    parser.add_argument("--scale", type=int, default=1024, help="run at tokens / scale, chunks / scale")
    parser.add_argument("--check", type=float, default=0.0,
                        help="exit 3 when the gpu strategy's hessian_solve or token_scoring exceeds this")
    args = parser.parse_args()
    torch.set_num_threads(1)
    print(f"Qwen2.5-1.5B, factor {args.factor}, all_selected, mean + leave-one-out, {args.tokens:,} tokens "
          f"(counted at 1/{args.scale})\n")
    print("| kernels | response tokens | grad_staging | hessian_solve | token_scoring | host syncs "
          "| seconds |")
    print("|---|---|---|---|---|---|---|")
    over = []
    for strategy in args.kernels:
        for length in args.lengths:
            began = time.perf_counter()
            n = workload_launches(args, strategy, length)
            print(f"| {strategy} | {length:,} | {n['grad_staging']:,.0f} | {n['hessian_solve']:,.0f} "
                  f"| {n['token_scoring']:,.0f} | {n['syncs']:,.0f} | {time.perf_counter() - began:.0f} |",
                  flush=True)
            over += [f"{strategy} {length}: {stage} {n[stage]:,.0f}"
                     for stage in ("hessian_solve", "token_scoring")
                     if strategy == "gpu" and args.check and n[stage] > args.check]
    if over:
        print("\n" + "\n".join(f"- over the budget of {args.check:,.0f}: {o}" for o in over))
        sys.exit(3)


if __name__ == "__main__":
    main()
