"""Benchmark: the effective rate of the worker's token-Hessian build against a plain GEMM's, per shape.

For each traced module shape (k_out, k_in), D = k_out * k_in, the build of H = sum_t g_t g_t^T from
T tokens' factors is timed by both of the worker's paths (trace/hessian.py): the dense rank-c build
(2 T D^2 flops) and the symmetric Gram build (T D^2 / 2 flops, then H expanded from G). Each is
reported as an effective rate 2 T D^2 / time, against the rate of one plain GEMM ``A^T A`` of a
materialised T_ref x D matrix, all in the same run, so the ratios hold on a shared, noisy machine.
``worker`` is the path the worker picks for that shape (planning/hessian_plan.py). ``GPU Gram`` is
the GPU kernel strategy's cyclic Gram and one-gather expansion (trace/hessian_gpu.py) timed on this
CPU, at its own default chunk bytes: the CPU keeps the loops, which must stay the faster.
Targets (issue 13):
Gram build >= 2.5x the GEMM's rate at k_out 48, k_in 280 (T >= 16,384), >= 1.2x at the other shapes
of Qwen2.5-1.5B at factors 32 and 64. ``--solve`` adds damped Cholesky + solve for R responses.

    .venv/bin/python bench/hessian_rate.py [--shapes 48x280 280x48 ...] [--tokens 16384]
        [--reference-tokens 4096] [--threads 1] [--repeats 2] [--skip-dense] [--solve]
"""

from __future__ import annotations

import argparse
import time

import torch
from influence_trace.planning.hessian_plan import CHUNK_BYTES, uses_symmetric_gram
from influence_trace.planning.options import DEFAULT_CHUNK_BYTES
from influence_trace.trace.hessian import (
    dense_token_hessian,
    expand_gram,
    response_gradients,
    symmetric_gram,
    token_hessian,
)
from influence_trace.trace.hessian_gpu import gpu_token_hessian
from influence_trace.trace.ledger import MemoryLedger
from influence_trace.trace.solve import damped_cholesky, solve_in_place

# Qwen2.5-1.5B's traced (k_out, k_in) at factor 32 (q/o, k/v, gate/up, down), then factor 64.
QWEN15B_SHAPES = ["48x280", "280x48", "48x48", "8x48", "24x140", "140x24", "24x24", "4x24"]


def best_of(repeats: int, fn) -> float:
    """The fastest of ``repeats`` timed calls (the least disturbed by other processes)."""
    times = []
    for _ in range(repeats):
        began = time.perf_counter()
        fn()
        times.append(time.perf_counter() - began)
    return min(times)


def plain_gemm_rate(u: torch.Tensor, v: torch.Tensor, tokens: int, repeats: int) -> float:
    """flop/s of A^T A for the materialised tokens x D matrix of the first ``tokens`` factors."""
    dense = (u[:tokens, :, None] * v[:tokens, None, :]).reshape(tokens, -1)
    seconds = best_of(repeats, lambda: dense.T @ dense)
    return 2.0 * tokens * dense.shape[1] ** 2 / seconds


def measure(k_out: int, k_in: int, args: argparse.Namespace, dtype: torch.dtype) -> dict[str, float]:
    dim, tokens = k_out * k_in, args.tokens
    gen = torch.Generator().manual_seed(dim)
    u = torch.randn(tokens, k_out, generator=gen, dtype=dtype)
    v = torch.randn(tokens, k_in, generator=gen, dtype=dtype)
    ledger = MemoryLedger()
    ref_rate = plain_gemm_rate(u, v, min(tokens, args.reference_tokens), args.repeats)
    flops = 2.0 * tokens * dim * dim
    dense_s = (float("nan") if args.skip_dense
               else best_of(args.repeats, lambda: dense_token_hessian(u, v, DEFAULT_CHUNK_BYTES, ledger)))
    gram_s = best_of(args.repeats, lambda: symmetric_gram(u, v, DEFAULT_CHUNK_BYTES, ledger))
    gram = symmetric_gram(u, v, DEFAULT_CHUNK_BYTES, ledger)
    expand_s = best_of(args.repeats, lambda: expand_gram(gram, k_out, k_in, ledger))
    gpu_s = best_of(args.repeats, lambda: gpu_token_hessian(u, v, CHUNK_BYTES["gpu"], ledger))
    out = {
        "gpu_gram": flops / gpu_s / ref_rate,
        "gemm_gflops": ref_rate / 1e9,
        "dense": flops / dense_s / ref_rate,
        "gram": flops / (gram_s + expand_s) / ref_rate,
        "expand_share": expand_s / (gram_s + expand_s),
    }
    out["worker"] = out["gram"] if uses_symmetric_gram(k_out, k_in) else out["dense"]
    if args.solve:
        out["solve"] = build_and_solve_ratio(u, v, args, ref_rate, ledger)
    return out


def build_and_solve_ratio(u: torch.Tensor, v: torch.Tensor, args: argparse.Namespace, ref_rate: float,
                          ledger: MemoryLedger) -> float:
    """(2 T D^2 + D^3 / 3 + 2 D^2 R) / time of the worker's build, Cholesky and solve, over the GEMM rate."""
    tokens, dim = u.shape[0], u.shape[1] * v.shape[1]
    offsets = torch.linspace(0, tokens, args.responses + 1).long().tolist()

    def build_factor_solve() -> None:  # the gradients formed after the factorization, as the worker does
        fact = damped_cholesky(token_hessian(u, v, DEFAULT_CHUNK_BYTES, ledger), -1.0, 6, ledger, "bench")
        solve_in_place(fact, response_gradients(u, v, offsets))

    seconds = best_of(args.repeats, build_factor_solve)
    work = 2.0 * tokens * dim * dim + dim**3 / 3.0 + 2.0 * dim * dim * args.responses
    return work / seconds / ref_rate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shapes", nargs="+", default=QWEN15B_SHAPES, help="k_out x k_in, e.g. 48x280")
    parser.add_argument("--tokens", type=int, default=16384)
    parser.add_argument("--reference-tokens", type=int, default=4096,
                        help="rows of the plain GEMM (its rate no longer depends on depth in the thousands)")
    parser.add_argument("--responses", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--dtype", choices=["float32", "float64"], default="float32")
    parser.add_argument("--solve", action="store_true")
    parser.add_argument("--skip-dense", action="store_true", help="no dense build timing (slow at large D)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    dtype = getattr(torch, args.dtype)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {args.dtype}, T = {args.tokens}, "
          f"GEMM reference on {min(args.tokens, args.reference_tokens)} rows")
    head = ("| k_out x k_in | D | GEMM GFLOP/s | dense build / GEMM | Gram build / GEMM | expansion share "
            "| worker | GPU Gram / GEMM |")
    print(head + (" build+solve / GEMM |" if args.solve else ""))
    print("|---" * (9 if args.solve else 8) + "|")
    for shape in args.shapes:
        k_out, k_in = (int(x) for x in shape.split("x"))
        r = measure(k_out, k_in, args, dtype)
        path = "gram" if uses_symmetric_gram(k_out, k_in) else "dense"
        line = (f"| {k_out} x {k_in} | {k_out * k_in} | {r['gemm_gflops']:.1f} | {r['dense']:.2f} | "
                f"{r['gram']:.2f} | {r['expand_share']:.2f} | {r['worker']:.2f} ({path}) "
                f"| {r['gpu_gram']:.2f} |")
        print(line + (f" {r['solve']:.2f} |" if args.solve else ""), flush=True)


if __name__ == "__main__":
    main()
