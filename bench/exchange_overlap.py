"""A two-process trace with its exchange rounds overlapped with the Hessian work, and without: stage
seconds per run, and the rows of one equal to the other's.

`influence-trace run --nproc 2` on a small random Qwen2 and synthetic rollouts, first with
INFLUENCE_TRACE_EXCHANGE_OVERLAP=0 (each round waits for the module before it), then with 1 (the next
round's transfers run while a module's Hessian is built, factored and scored). Both receive the rows
into the buffers the Hessian reads (on CUDA: device buffers over NCCL, no host round trip). One
markdown row per run: the slowest rank's seconds of each stage, rank 0's ledger peak and whether
exchange_ahead was in it; then the largest difference between the two runs' scores, relative to the
largest score. Exits 1 when that is over --tolerance (the overlap must not change the numbers).

    .venv/bin/python bench/exchange_overlap.py --device cuda   # two GPUs (bench/gpu_check.sh, step 4)
    .venv/bin/python bench/exchange_overlap.py --device cpu    # two CPU processes over gloo
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

import numpy as np
import pyarrow.parquet as pq
import yaml
from influence_trace.demo.rollouts import make_rollouts
from influence_trace.demo.tiny_model import build_tiny_model

CLI = Path(sys.executable).parent / "influence-trace"
STAGES = ("logprob_backward", "grad_staging", "hessian_solve", "token_scoring", "wait")


def manifest(root: Path, model: Path, rollouts: Path, name: str, factor: int) -> Path:
    data = {
        "apiVersion": "influencetrace.dev/v1alpha1", "kind": "InfluenceTrace",
        "metadata": {"name": name},
        "spec": {"model": {"path": str(model), "dtype": "float32"}, "rollouts": {"path": str(rollouts)},
                 "trace": {"factor": factor, "captureDtype": "float32", "hessianDtype": "float32",
                           "scope": "all_selected", "deterministic": True},
                 "output": {"path": str(root / name)}},
    }
    path = root / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def run(root: Path, model: Path, rollouts: Path, device: str, overlap: int, factor: int) -> dict:
    name = f"overlap{overlap}"
    env = {**os.environ, "INFLUENCE_TRACE_TERMINATION_LOG": str(root / f"{name}.term"),
           "INFLUENCE_TRACE_EXCHANGE_OVERLAP": str(overlap)}
    began = time.perf_counter()
    done = subprocess.run([str(CLI), "run", "--device", device, "--nproc", "2",
                           str(manifest(root, model, rollouts, name, factor))], env=env, capture_output=True,
                          text=True)
    if done.returncode != 0:
        sys.exit(f"{name}: exit {done.returncode}\n{done.stderr[-4000:]}")
    summary = json.loads((root / name / "summary.json").read_text())
    summary["wall"] = time.perf_counter() - began
    return summary


def scores(out: Path) -> dict[str, np.ndarray]:
    rows = pq.read_table(out / "rows.parquet").to_pylist()
    return {r["response_id"]: np.asarray(r["scores"], dtype=np.float64) for r in rows}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--groups", type=int, default=32)
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--factor", type=int, default=8)
    parser.add_argument("--tolerance", type=float, default=1e-5, help="largest score difference allowed, "
                        "relative to the largest score (capture batches differ by rank on CUDA)")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="exchange-overlap-"))
    model = build_tiny_model(root / "model", hidden_size=args.hidden, intermediate_size=2 * args.hidden,
                             num_layers=4)
    rollouts = make_rollouts(root / "r.jsonl", num_prompts=args.groups, responses_per_prompt=8,
                             response_len=(64, 128))
    runs = {overlap: run(root, model, rollouts, args.device, overlap, args.factor) for overlap in (0, 1)}
    tokens = runs[0]["tokens"]["scored"]
    print(f"Two processes on {args.device}, hidden {args.hidden}, factor {args.factor}, {tokens} response "
          "tokens, all_selected, float32 (`bench/exchange_overlap.py`):\n")
    print(f"| overlap | wall s | {' | '.join(STAGES)} (slowest rank, s) | ledger peak (rank 0) | "
          "exchange_ahead in it |")
    print(f"|---|---|{'---|' * len(STAGES)}---|---|")
    for overlap, summary in runs.items():
        per_stage = summary["resources"]["stage_seconds"]
        seconds = " | ".join(f"{per_stage.get(s, {}).get('max', 0.0):.3f}" for s in STAGES)
        resources = summary["resources"]
        ahead = resources["ledger_peak_breakdown"].get("exchange_ahead", 0)
        peak = resources["ledger_peak_bytes"]
        print(f"| {overlap} | {summary['wall']:.1f} | {seconds} | {peak:,} | {ahead:,} |")
    one, two = scores(root / "overlap0"), scores(root / "overlap1")
    scale = max(float(np.abs(v).max()) for v in one.values())
    worst = max(float(np.abs(one[k] - two[k]).max()) for k in one) / scale
    print(f"\nlargest score difference between the two, relative to the largest score: {worst:.2e}")
    if one.keys() != two.keys() or worst > args.tolerance:
        sys.exit(f"the overlapped exchange changed the scores (over {args.tolerance:g})")


if __name__ == "__main__":
    main()
