"""Benchmark: the policy update's time per training step against one trace's time, on the CPU.

A small random Qwen2 (hidden 128, 4 layers) and synthetic token-id rollouts (8 groups of 8
responses) run a two-step training trace (`rollouts.stepPaths` naming one file twice, float32) through
the worker's own loop. From each step's timings in summary.json: trace = logprob_backward +
grad_staging + hessian_solve + token_scoring, update = update_actor (one AdamW step over all
responses, ppoEpochs 1). Both are measured in the same process, so the ratio holds on a noisy machine.

    .venv/bin/python bench/update_ratio.py [--hidden 128] [--layers 4] [--factor 8] [--epochs 1]
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import torch
from influence_trace.api.spec import parse_manifest
from influence_trace.demo.rollouts import make_rollouts
from influence_trace.demo.tiny_model import build_tiny_model
from influence_trace.planning.options import WorkerOptions
from influence_trace.run.dispatch import run_manifest
from influence_trace.trace.timing import StageTimer

TRACE = ("logprob_backward", "grad_staging", "hessian_solve", "token_scoring")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hidden", type=int, default=128)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--factor", type=int, default=8)
    parser.add_argument("--epochs", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        model = build_tiny_model(root / "model", hidden_size=args.hidden, intermediate_size=2 * args.hidden,
                                 num_layers=args.layers, num_heads=4, num_kv_heads=2)
        rollouts = make_rollouts(root / "r.jsonl", num_prompts=8, responses_per_prompt=8,
                                 prompt_len=(20, 40), response_len=(30, 60))
        manifest = parse_manifest({
            "apiVersion": "influencetrace.dev/v1alpha1", "kind": "InfluenceTrace",
            "spec": {"model": {"path": str(model), "dtype": "float32"},
                     "rollouts": {"stepPaths": [str(rollouts), str(rollouts)]},
                     "trace": {"factor": args.factor, "captureDtype": "float32"},
                     "output": {"path": str(root / "out")},
                     "training": {"steps": 2, "ppoEpochs": args.epochs, "optimizer": {"lr": 1e-5}}},
        })
        summary = run_manifest(manifest, WorkerOptions(device="cpu", progress=False), StageTimer())
    rows = []
    for step in summary["steps"]:
        t = step["timings"]
        trace = sum(t[k] for k in TRACE)
        update = t["update_actor"]
        rows.append({"step": step["step"], "trace_s": round(trace, 3), "update_s": round(update, 3),
                     "ratio": round(update / trace, 3), "step_total_s": round(t["step_total"], 3)})
    print(json.dumps({"hidden": args.hidden, "layers": args.layers, "factor": args.factor,
                      "epochs": args.epochs, "tokens": summary["steps"][0]["tokens"]["scored"],
                      "steps": rows}, indent=2))


if __name__ == "__main__":
    main()
