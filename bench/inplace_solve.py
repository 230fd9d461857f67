"""Benchmark: host memory of the response solve on the CPU, written over G versus into a new buffer.

The worker solves ``W = H~^-1 G^T`` for a scope's response gradients G (R x D) with two triangular
solves on the Cholesky factor L, both written over G's storage (trace/solve.py ``solve_in_place``:
``solve_triangular(L, G.T, out=G.T)``, ``G.T`` being F-contiguous). This checks that torch really
does it without a hidden copy, against the previous code, whose first solve returned a new D x R:

- ``before``: ``half = solve_triangular(L, G.T)``, then ``solve_triangular(L.mT, half, out=half)``;
- ``after``: ``solve_in_place(fact, G)``.

Each variant runs in a fresh process: it builds a random SPD H (D x D), factors it and forms G, then
solves once (first-use allocations of LAPACK and the thread pool), resets the kernel's high-water
mark (``/proc/self/clear_refs``) and reports, for a second solve alone, VmHWM growth over the
resident set before it; a third solve runs under torch's profiler, which reports the bytes its
operators allocated. One R x D float32 is printed for scale.

    .venv/bin/python bench/inplace_solve.py [--dim 2048] [--responses 4096]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys


def status_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(field + ":"))


def child(variant: str, dim: int, responses: int) -> dict:
    import torch
    from influence_trace.trace.solve import Factorization, solve_in_place
    from torch.profiler import ProfilerActivity, profile

    torch.manual_seed(0)
    a = torch.randn(dim, dim)
    hessian = a @ a.T + dim * torch.eye(dim)
    fact = Factorization(torch.linalg.cholesky(hessian), 0.0, 0)
    del a, hessian
    grads = torch.randn(responses, dim)
    expected_input = grads.clone()
    expected = torch.linalg.solve_triangular(fact.chol.mT, torch.linalg.solve_triangular(
        fact.chol, grads.T.contiguous(), upper=False), upper=True)  # on a copy, before the measurement
    def solve() -> torch.Tensor:
        if variant == "before":
            half = torch.linalg.solve_triangular(fact.chol, grads.T, upper=False)
            return torch.linalg.solve_triangular(fact.chol.mT, half, upper=True, out=half)
        solve_in_place(fact, grads)
        return grads.T

    solve()  # once untimed: LAPACK's and the thread pool's first-use allocations are not the solve's
    grads.copy_(expected_input)
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # reset VmHWM to the current resident set
    before = status_kib("VmRSS")
    solved = solve()
    growth = (status_kib("VmHWM") - before) * 1024
    error = float((solved - expected).abs().max() / expected.abs().max())
    same = solved.data_ptr() == grads.data_ptr()
    del solved
    grads.copy_(expected_input)
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        solve()
    allocated = sum(e.self_cpu_memory_usage for e in prof.events() if e.self_cpu_memory_usage > 0)
    return {"variant": variant, "hwm_growth": growth, "profiler_allocated": allocated,
            "same_storage": same, "max_rel_error": error}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dim", type=int, default=2048)
    parser.add_argument("--responses", type=int, default=4096)
    parser.add_argument("--child", choices=["before", "after"])
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.dim, args.responses)))
        return
    rxd = args.responses * args.dim * 4
    print(f"D {args.dim}, R {args.responses}: one R x D float32 is {rxd / 2**20:.1f} MiB")
    print("| variant | VmHWM growth | profiler: bytes allocated | result in G's storage | max rel. error |")
    print("|---|---|---|---|---|")
    for variant in ("before", "after"):
        out = subprocess.run([sys.executable, __file__, "--child", variant, "--dim", str(args.dim),
                              "--responses", str(args.responses)], capture_output=True, text=True, check=True)
        r = json.loads(out.stdout.strip().splitlines()[-1])
        mib = {k: f"{r[k] / 2**20:.1f} MiB" for k in ("hwm_growth", "profiler_allocated")}
        print(f"| {variant} | {mib['hwm_growth']} | {mib['profiler_allocated']} | {r['same_storage']} | "
              f"{r['max_rel_error']:.1e} |")


if __name__ == "__main__":
    main()
