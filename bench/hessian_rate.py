"""Benchmark: the achieved flop rate of the worker's Hessian build and solve, against a plain matmul.

For each module size D (= k_out * k_in) the worker's own functions build H = sum_t g_t g_t^T from T
tokens' factors in chunks (2 T D^2 flops), factor H + lambda I (D^3 / 3) and solve for R responses
(2 D^2 R). The reference is one plain matmul A^T A of a materialised T x D matrix (2 T D^2 flops),
timed in the same run, so the ratio is robust to a shared, noisy machine. Target: ratio >= 0.6.

    .venv/bin/python bench/hessian_rate.py [--dims 1024 2304] [--tokens 8192] [--responses 64]
"""

from __future__ import annotations

import argparse
import time

import torch
from influence_trace.planning.options import DEFAULT_CHUNK_BYTES
from influence_trace.trace.hessian import response_gradients, token_hessian
from influence_trace.trace.ledger import MemoryLedger
from influence_trace.trace.solve import damped_cholesky, solve_responses


def best_of(repeats: int, fn) -> float:
    """The fastest of ``repeats`` timed calls (the least disturbed by other processes)."""
    times = []
    for _ in range(repeats):
        began = time.perf_counter()
        fn()
        times.append(time.perf_counter() - began)
    return min(times)


def factor_shapes(dim: int) -> tuple[int, int]:
    """A (k_out, k_in) split of D shaped like an MLP module (k_out the larger side)."""
    k_in = 48 if dim % 48 == 0 else 32
    return dim // k_in, k_in


def plain_matmul_seconds(u: torch.Tensor, v: torch.Tensor, repeats: int) -> float:
    """Time A^T A for the materialised T x D matrix of the same tokens (the reference)."""
    dense = (u[:, :, None] * v[:, None, :]).reshape(u.shape[0], -1)
    return best_of(repeats, lambda: dense.T @ dense)


def measure(dim: int, tokens: int, responses: int, repeats: int, dtype: torch.dtype) -> dict[str, float]:
    k_out, k_in = factor_shapes(dim)
    gen = torch.Generator().manual_seed(dim)
    u = torch.randn(tokens, k_out, generator=gen, dtype=dtype)
    v = torch.randn(tokens, k_in, generator=gen, dtype=dtype)
    offsets = torch.linspace(0, tokens, responses + 1).long().tolist()
    ledger = MemoryLedger()
    matmul_s = plain_matmul_seconds(u, v, repeats)
    build_s = best_of(repeats, lambda: token_hessian(u, v, DEFAULT_CHUNK_BYTES, ledger))
    grads = response_gradients(u, v, offsets)
    hessian = token_hessian(u, v, DEFAULT_CHUNK_BYTES, ledger)

    def factor_and_solve() -> None:
        fact = damped_cholesky(hessian.clone(), -1.0, 6, ledger, "bench")
        solve_responses(fact, grads, ledger)

    solve_s = best_of(repeats, factor_and_solve)
    matmul_flops = 2.0 * tokens * dim * dim
    work_flops = matmul_flops + dim**3 / 3.0 + 2.0 * dim * dim * responses
    matmul_rate = matmul_flops / matmul_s
    return {
        "D": dim,
        "T": tokens,
        "matmul_gflops": matmul_rate / 1e9,
        "build_gflops": matmul_flops / build_s / 1e9,
        "build_solve_gflops": work_flops / (build_s + solve_s) / 1e9,
        "ratio": work_flops / (build_s + solve_s) / matmul_rate,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dims", type=int, nargs="+", default=[1024, 2304])
    parser.add_argument("--tokens", type=int, default=8192)
    parser.add_argument("--responses", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--dtype", choices=["float32", "float64"], default="float32")
    args = parser.parse_args()
    dtype = getattr(torch, args.dtype)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {args.dtype}")
    print("| D | T | matmul GFLOP/s | Hessian build GFLOP/s | build + Cholesky + solve GFLOP/s | ratio |")
    print("|---|---|---|---|---|---|")
    for dim in args.dims:
        r = measure(dim, args.tokens, args.responses, args.repeats, dtype)
        print(
            f"| {r['D']} | {r['T']} | {r['matmul_gflops']:.1f} | {r['build_gflops']:.1f} | "
            f"{r['build_solve_gflops']:.1f} | {r['ratio']:.2f} |"
        )


if __name__ == "__main__":
    main()
