"""Fidelity table (issue 27): the LDS of factor 1, 4, 16, 64 and identity-mode scores, both targets.

On a small random Qwen2 and on the demo's tiny model and rollouts, every configuration is traced
(all_selected without leave-one-out: one objective, the case both targets support) and validated with
``spec.validate``; the table gives the LDS, the full update's predicted/actual ratio, the removal of
the top 1% against a random 1%, and the seconds of the trace and of the validation.

    OMP_NUM_THREADS=2 .venv/bin/python bench/lds_fidelity.py [--subsets 32] [--out /tmp/lds]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch
from influence_trace.api.spec import InfluenceTraceSpec
from influence_trace.demo.rollouts import make_rollouts
from influence_trace.demo.tiny_model import build_tiny_model
from influence_trace.io.model_io import load_model, vocab_size
from influence_trace.io.rollouts import read_rows, to_responses
from influence_trace.planning.options import WorkerOptions
from influence_trace.run.pipeline import select
from influence_trace.trace.engine import run_trace
from influence_trace.trace.ledger import MemoryLedger
from influence_trace.trace.timing import StageTimer
from influence_trace.trace.validation import validate

CONFIGS = [("factor 1", {"factor": 1}), ("factor 4", {"factor": 4}), ("factor 16", {"factor": 16}),
           ("factor 64", {"factor": 64}), ("identity, factor 1", {"factor": 1, "hessianMode": "identity"})]
# The optimizer target: the run's AdamW with a learning rate whose change float32 can resolve.
TRAINING = {"optimizer": {"lr": 1e-4, "gradClip": 0.0}}
OPTIONS = WorkerOptions(device="cpu", progress=False)


def cases(root: Path) -> list[tuple[str, Path, Path]]:
    """(name, model dir, rollouts) of the small random Qwen2 and of the demo's model and rollouts."""
    small = build_tiny_model(root / "small", hidden_size=64, intermediate_size=128, num_layers=2,
                             num_heads=4, num_kv_heads=2, seed=1)  # factor 1: D = 8,192 for the MLP
    small_rollouts = make_rollouts(root / "small.jsonl", num_prompts=6, responses_per_prompt=6,
                                   prompt_len=(6, 14), response_len=(8, 24), seed=1)
    demo = build_tiny_model(root / "demo")
    return [("Qwen2 h64 i128 2 layers, 6x6 rollouts", small, small_rollouts),
            ("demo tiny model and rollouts", demo, make_rollouts(root / "demo.jsonl", num_prompts=4,
                                                                 responses_per_prompt=6))]


def spec_of(model: Path, trace: dict, target: str, subsets: int) -> InfluenceTraceSpec:
    data = {"model": {"path": str(model), "dtype": "float32"}, "rollouts": {"path": "/unused"},
            "output": {"path": "/unused"},
            "trace": {"scope": "all_selected", "excludeSelfResponse": False, "captureDtype": "float32",
                      **trace},
            "validate": {"subsets": subsets, "target": target}}
    if target == "optimizer":
        data["training"] = TRAINING
    return InfluenceTraceSpec.model_validate(data)


def measure(model_dir: Path, rollouts: Path, trace: dict, subsets: int) -> list[dict]:
    """Trace once, then validate the same scores against both targets."""
    spec = spec_of(model_dir, trace, "sgd", subsets)
    model = load_model(spec.model, "cpu")
    selection = select(to_responses(read_rows(rollouts), None, vocab_size(model)), spec)
    began = time.perf_counter()
    result = run_trace(model, selection, spec.trace, OPTIONS, MemoryLedger(), StageTimer())
    traced = time.perf_counter() - began
    rows = []
    for target in ("sgd", "optimizer"):
        checked = validate(model, selection, result.scores, spec_of(model_dir, trace, target, subsets), "cpu",
                           OPTIONS.capture_tokens)
        full, removal = checked.full, checked.removal
        rows.append({"target": target, "lds": checked.lds,
                     "ratio": full["predicted"] / full["actual"] if full["actual"] else None,
                     "top": removal["top_1pct"]["actual"], "random": removal["random_1pct"]["actual"],
                     "trace_s": traced, "validate_s": checked.seconds, "tokens": selection.num_tokens})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--subsets", type=int, default=32)
    parser.add_argument("--out", default=None, help="also write the rows as JSON here")
    args = parser.parse_args()
    torch.manual_seed(0)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for case, model_dir, rollouts in cases(Path(tmp)):
            for label, trace in CONFIGS:
                for row in measure(model_dir, rollouts, trace, args.subsets):
                    rows.append({"case": case, "scores": label, **row})
                    print(f"| {case} | {label} | {row['target']} | {row['lds']:.3f} | {row['ratio']:.3g} | "
                          f"{row['top']:.3g} / {row['random']:.3g} | {row['trace_s']:.1f} | "
                          f"{row['validate_s']:.1f} |", flush=True)
    if args.out:
        Path(args.out).write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
