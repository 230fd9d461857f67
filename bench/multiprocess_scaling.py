"""Multi-process scaling on the CPU: `influence-trace run --nproc N` for N = 1..max, as speed-up per process.

A small random Qwen2 (hidden 64, 4 layers) and synthetic rollouts; each N runs the real command, and the
stage seconds come from rank 0's summary.json. Not a test: run it by hand and copy the table into
bench/RESULTS.md ("Multi-process scaling"). On a GPU machine pass --device cuda to compare per-GPU rates.

    .venv/bin/python bench/multiprocess_scaling.py --max-nproc 2
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml
from influence_trace.demo.rollouts import make_rollouts
from influence_trace.demo.tiny_model import build_tiny_model

CLI = Path(sys.executable).parent / "influence-trace"
STAGES = ("logprob_backward", "grad_staging", "hessian_solve", "token_scoring")


def manifest(root: Path, model: Path, rollouts: Path, n: int) -> Path:
    data = {
        "apiVersion": "influencetrace.dev/v1alpha1", "kind": "InfluenceTrace",
        "metadata": {"name": f"n{n}"},
        "spec": {"model": {"path": str(model), "dtype": "float32"}, "rollouts": {"path": str(rollouts)},
                 "trace": {"factor": 1, "captureDtype": "float32", "scope": "all_selected"},
                 "output": {"path": str(root / f"out{n}")}},
    }
    path = root / f"n{n}.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--max-nproc", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--groups", type=int, default=24)
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="mp-scaling-"))
    model = build_tiny_model(root / "model", hidden_size=64, intermediate_size=128, num_layers=4)
    rollouts = make_rollouts(root / "r.jsonl", num_prompts=args.groups, responses_per_prompt=8,
                             response_len=(32, 64))
    base = None
    print(f"| processes | wall s | traced s ({'+'.join(STAGES)}) | speed-up | per process |")
    print("|---|---|---|---|---|")
    for n in range(1, args.max_nproc + 1):
        began = time.perf_counter()
        command = [str(CLI), "run", "--device", args.device, "--nproc", str(n),
                   str(manifest(root, model, rollouts, n))]
        env = {**os.environ, "INFLUENCE_TRACE_TERMINATION_LOG": str(root / "t")}
        subprocess.run(command, check=True, capture_output=True, env=env)
        wall = time.perf_counter() - began
        timings = json.loads((root / f"out{n}" / "summary.json").read_text())["timings"]
        traced = sum(timings[s] for s in STAGES)
        base = base or traced
        print(f"| {n} | {wall:.1f} | {traced:.2f} | {base / traced:.2f} | {base / traced / n:.2f} |")


if __name__ == "__main__":
    main()
