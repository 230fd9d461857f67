"""Benchmark: the worker's peak host memory as a ratio to the bytes of the factors it stores.

The stored factors (u_t, v_t per token and module) are the one large host allocation by design; the
worker must not keep other copies of them. Two fresh `influence-trace run` processes trace the same
model on a small and a large rollout set (CPU); the growth of peak RSS between them is divided by the
growth of the stored factor bytes, which cancels the constant cost of Python, torch and the model.
On the CPU the device buffers are host memory too: both runs use the same capture batch
(INFLUENCE_TRACE_CAPTURE_TOKENS) and a Hessian chunk bound (INFLUENCE_TRACE_CHUNK_BYTES) that both
runs fill, so these bounded buffers cancel as well and what remains is what grows with the tokens.
Target: ratio <= 1.5.

    .venv/bin/python bench/host_memory.py [--prompts 48] [--response-len 250 350]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml
from influence_trace.demo.rollouts import make_rollouts
from influence_trace.demo.tiny_model import build_tiny_model
from influence_trace.planning.options import CAPTURE_TOKENS_ENV, CHUNK_BYTES_ENV

CAPTURE_ITEMSIZE = 4  # captureDtype float32


def run_once(model: Path, work: Path, name: str, prompts: int, response_len: tuple[int, int],
             capture_tokens: int, chunk_bytes: int) -> dict:
    """Trace ``prompts`` groups of 8 responses in a fresh process; return its summary."""
    rollouts = make_rollouts(work / f"{name}.jsonl", num_prompts=prompts, responses_per_prompt=8,
                             response_len=response_len, prompt_len=(20, 40))
    manifest = {
        "apiVersion": "influencetrace.dev/v1alpha1",
        "kind": "InfluenceTrace",
        "metadata": {"name": name},
        "spec": {
            "model": {"path": str(model), "dtype": "float32"},
            "rollouts": {"path": str(rollouts)},
            "trace": {"factor": 16, "scope": "all_selected", "captureDtype": "float32"},
            "output": {"path": str(work / name)},
        },
    }
    path = work / f"{name}.yaml"
    path.write_text(yaml.safe_dump(manifest))
    cli = Path(sys.executable).with_name("influence-trace")
    env = {**os.environ, CAPTURE_TOKENS_ENV: str(capture_tokens), CHUNK_BYTES_ENV: str(chunk_bytes)}
    subprocess.run([str(cli), "run", str(path), "--device", "cpu"], check=True, capture_output=True, env=env)
    return json.loads((work / name / "summary.json").read_text())


def factor_bytes(summary: dict) -> int:
    """Bytes of the stored factors: tokens x sum over modules of (k_in + k_out) x itemsize."""
    per_token = sum(m["k_in"] + m["k_out"] for m in summary["modules"])
    return summary["tokens"]["scored"] * per_token * CAPTURE_ITEMSIZE


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=48)
    parser.add_argument("--response-len", type=int, nargs=2, default=[250, 350])
    parser.add_argument("--capture-tokens", type=int, default=2048, help="padded tokens per capture batch")
    parser.add_argument("--chunk-bytes", type=int, default=16 * 2**20, help="Hessian chunk buffer bound")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        model = build_tiny_model(work / "model", hidden_size=256, intermediate_size=512, num_layers=2,
                                 num_heads=4, num_kv_heads=2)
        small = run_once(model, work, "small", 8, (250, 350), args.capture_tokens, args.chunk_bytes)
        large = run_once(model, work, "large", args.prompts, tuple(args.response_len), args.capture_tokens,
                         args.chunk_bytes)
    rss = [s["resources"]["peak_host_bytes"] for s in (small, large)]
    stored = [factor_bytes(s) for s in (small, large)]
    ratio = (rss[1] - rss[0]) / (stored[1] - stored[0])
    print("| run | tokens | stored factors (MB) | peak RSS (MB) |")
    print("|---|---|---|---|")
    for name, s, f, r in zip(("small", "large"), (small, large), stored, rss, strict=True):
        print(f"| {name} | {s['tokens']['scored']} | {f / 1e6:.1f} | {r / 1e6:.1f} |")
    print(f"\npeak RSS growth / stored factor growth = {ratio:.2f} (target <= 1.5)")


if __name__ == "__main__":
    main()
