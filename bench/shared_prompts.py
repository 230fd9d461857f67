"""Benchmark: capture (logprob_backward) time with long prompts, each prompt computed once per batch.

A random Qwen2 (hidden 256, intermediate 512, 4 layers, 4 heads, 2 KV heads, vocab 8,192, float32,
factor 16, every projection traced) captures the factors of 32 responses in 4 groups of 8, on the CPU,
in one process. Each case is timed with prompts of 16 tokens and of the long length, for:

- ``shared``: the worker's capture (each prompt once, no gradients, its keys and values shared;
  layers checkpointed only as memory requires: none here);
- ``not shared``: ``INFLUENCE_TRACE_SHARE_PROMPTS=0`` (every response runs its prompt again);
- ``before``: prompts not shared and every decoder layer checkpointed (the capture before issue 24).

The ratio long/short is what the issue bounds (<= 2.5x for 512-token prompts and 32-token responses;
5.5x before). Times are the best of ``--repeat`` runs, short and long alternated, in this process's
CPU seconds by default (``--clock wall`` for wall time): with one thread they are the work done, and
they stay steady while other jobs load the machine.

    PYTHONPATH=. .venv/bin/python bench/shared_prompts.py [--repeat 3] [--threads 1] [--cases 2] [--clock cpu]
    PYTHONPATH=. .venv/bin/python bench/shared_prompts.py --device cuda --clock wall   # on a GPU
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from contextlib import contextmanager

SHAPES = {"hidden_size": 256, "intermediate_size": 512, "num_hidden_layers": 4, "num_attention_heads": 4,
          "num_key_value_heads": 2, "vocab_size": 8192, "tie_word_embeddings": True}
CASES = [(512, 32), (1024, 128)]  # (long prompt tokens, response tokens)
SHORT_PROMPT = 16
# cpu: this process's CPU seconds (one thread: steadier than wall time on a shared, loaded machine)
CLOCKS = {"cpu": time.process_time, "wall": time.perf_counter}
GROUPS, PER_GROUP = 4, 8


def build_model():
    import torch
    from transformers import AutoModelForCausalLM, Qwen2Config

    torch.manual_seed(0)
    return AutoModelForCausalLM.from_config(Qwen2Config(**SHAPES), dtype=torch.float32).eval()


def selection_of(prompt: int, response: int, seed: int = 1):
    """4 groups of 8 responses, rewards 1/0 alternating (every group selected)."""
    import numpy as np
    from influence_trace.trace.records import Response
    from influence_trace.trace.selection import select_groups

    from tests.trace.bruteforce import settings

    rng = np.random.default_rng(seed)
    rows = []
    for g in range(GROUPS):
        prompt_ids = tuple(int(x) for x in rng.integers(3, SHAPES["vocab_size"], prompt))
        for r in range(PER_GROUP):
            ids = tuple(int(x) for x in rng.integers(3, SHAPES["vocab_size"], response))
            rows.append(Response(f"p{g}", f"p{g}r{r}", prompt_ids, ids, float(r % 2), None, len(rows)))
    trace = settings(factor=16, capture_dtype="float32", hessian_dtype="float32")
    return select_groups(rows, trace), trace


@contextmanager
def every_layer_checkpointed(on: bool):
    from influence_trace.trace import capture_planning

    if not on:
        yield
        return
    original = capture_planning.plan_checkpointing
    capture_planning.plan_checkpointing = lambda model, *_: SHAPES["num_hidden_layers"]
    try:
        yield
    finally:
        capture_planning.plan_checkpointing = original


def capture_seconds(model, prompt: int, response: int, variant: str, repeat: int,
                    clock: str = "cpu", device: str = "cpu") -> float:
    import torch
    from influence_trace.planning.options import WorkerOptions
    from influence_trace.trace.capture import capture_factors, compute_dtype
    from influence_trace.trace.engine import frozen_weights
    from influence_trace.trace.ledger import MemoryLedger
    from influence_trace.trace.projection import build_traced_modules, move_projections

    selection, trace = selection_of(prompt, response)
    options = WorkerOptions(device=device, progress=False, capture_tokens=16384)
    options = dataclasses.replace(options, share_prompts=variant == "shared")
    traced = build_traced_modules(model, list(trace.modules), trace.factor, trace.max_hessian_dim, trace.seed,
                                  compute_dtype(trace))
    move_projections(traced, torch.device(device))
    best = float("inf")
    for _ in range(repeat):
        with frozen_weights(model), every_layer_checkpointed(variant == "before"):
            start = CLOCKS[clock]()
            capture_factors(model, selection, traced, trace, options, MemoryLedger())
            if device.startswith("cuda"):
                torch.cuda.synchronize()
            best = min(best, CLOCKS[clock]() - start)
    return best


def main() -> None:
    import torch

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--cases", type=int, default=len(CASES), help="the first N of the cases")
    parser.add_argument("--clock", choices=list(CLOCKS), default="cpu", help="wall on a GPU")
    parser.add_argument("--device", default="cpu", help="cuda on a GPU machine (with --clock wall)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model = build_model().to(args.device)
    print(f"random Qwen2 {SHAPES}, {GROUPS} groups x {PER_GROUP} responses, factor 16, float32, "
          f"{args.threads} thread(s), best of {args.repeat}, {args.clock} seconds")
    print("| prompt (long) | response | variant | 16-token prompt s | long prompt s | long / short |")
    print("|---|---|---|---|---|---|")
    for long, response in CASES[: args.cases]:
        for variant in ("shared", "not shared", "before"):
            short, slow = float("inf"), float("inf")
            for _ in range(args.repeat):  # alternated, so a burst of load on the machine hits both
                short = min(short, capture_seconds(model, SHORT_PROMPT, response, variant, 1, args.clock,
                                                   args.device))
                slow = min(slow, capture_seconds(model, long, response, variant, 1, args.clock, args.device))
            print(f"| {long} | {response} | {variant} | {short:.3f} | {slow:.3f} | {slow / short:.2f}x |",
                  flush=True)


if __name__ == "__main__":
    main()
