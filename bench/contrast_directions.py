"""Benchmark: the contrast directions M = C @ W of an all_selected scope, dense against structured.

Row o of M is the direction the tokens of response o are scored along. Before issue 13 the worker
built the R x R matrix C on the host (float64), copied it to the device dtype and multiplied,
``C @ W``: R^2 D flops and R^2 memory. Now C is kept structured (trace/scoring.py ``Contrast``: at
most two distinct rows, which row each response uses, and the leave-one-out self term), and
``M_o = (rows @ W)[row_of[o]] - self_term[o] w_o``, formed response by response as the worker's
``score_tokens`` forms them: O(R D).

Both variants run in one process on the same random W (R x D float32) and flags (half accepted),
mean aggregation with leave-one-out (the seed's configuration, K = 2 rows), timed from the accepted
flags to every M_o (the dense one includes building C); the largest difference between the two
is printed.

    .venv/bin/python bench/contrast_directions.py [--responses 1000 2000 4000] [--dim 1024]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from influence_trace.api.spec import TraceSettings
from influence_trace.trace.scoring import contrast, contrast_bases, direction


def dense(accepted: np.ndarray, trace: TraceSettings, solutions: torch.Tensor) -> torch.Tensor:
    """The previous path: C (R x R, float64, host) to the solutions' dtype, then C @ W."""
    c = contrast(accepted, np.zeros(len(accepted)), trace).dense()
    return torch.as_tensor(c, dtype=solutions.dtype) @ solutions


def structured(accepted: np.ndarray, trace: TraceSettings, solutions: torch.Tensor,
               out: torch.Tensor) -> torch.Tensor:
    """The worker's path: K x D bases, then each M_o (copied into ``out`` so it can be compared)."""
    c = contrast(accepted, np.zeros(len(accepted)), trace)
    bases = contrast_bases(c, solutions)
    scratch = torch.empty(solutions.shape[1], dtype=solutions.dtype)
    for o in range(len(accepted)):
        out[o] = direction(c, bases, solutions, o, scratch)
    return out


def timed(fn, *args) -> tuple[float, torch.Tensor]:
    start = time.perf_counter()
    result = fn(*args)
    return time.perf_counter() - start, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--responses", type=int, nargs="+", default=[1000, 2000, 4000])
    parser.add_argument("--dim", type=int, default=1024)
    args = parser.parse_args()
    trace = TraceSettings(contrastiveAgg="mean", excludeSelfResponse=True, scope="all_selected")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, D {args.dim}, float32")
    print("| R | dense C @ W | structured | dense / structured | C on the host | max abs difference |")
    print("|---|---|---|---|---|---|")
    for r in args.responses:
        rng = np.random.default_rng(r)
        accepted = rng.random(r) < 0.5
        solutions = torch.as_tensor(rng.normal(size=(r, args.dim)), dtype=torch.float32)
        out = torch.empty_like(solutions)
        t_dense, want = timed(dense, accepted, trace, solutions)
        t_struct, got = timed(structured, accepted, trace, solutions, out)
        diff = float((got - want).abs().max())
        print(f"| {r} | {t_dense:.3f} s | {t_struct:.3f} s | {t_dense / t_struct:.1f} | "
              f"{r * r * 8 / 2**20:.0f} MiB | {diff:.1e} |", flush=True)


if __name__ == "__main__":
    main()
