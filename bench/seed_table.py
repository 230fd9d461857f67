"""Benchmark: the seed experiment's table on this project's worker, and the memory model against it.

A randomly initialised model with Qwen2.5-1.5B's shapes (bfloat16) traces random rollouts whose
response tokens match the seed's per-GPU count (733,870 by default), at factors 64 and 32 and both
scopes, one GPU, one fresh `influence-trace run` process per configuration. It prints the timing
breakdown under the pipeline's stage names, peak GPU memory (torch.cuda.max_memory_allocated) next
to the memory model's prediction and the worker's own ledger, and the hessian_solve time against the
TF32 floor of 2 T D^2 flops over every module. Meant for a GPU machine; `--shapes tiny` runs a small
stand-in on the CPU to check the script itself.

    .venv/bin/python bench/seed_table.py [--tokens 733870] [--factors 64 32] [--shapes qwen2.5-1.5b|tiny]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import yaml
from influence_trace.api.architectures import PRESETS, traced_module_dims
from influence_trace.api.spec import DEFAULT_MODULES, parse_manifest
from influence_trace.planning.memory_model import EstimateOptions, estimate

TF32_DENSE_FLOPS = {"H100": 494e12, "H200": 494e12}  # SXM, dense TF32 tensor-core peak
TINY = {"hidden_size": 64, "intermediate_size": 128, "num_layers": 2, "num_heads": 4, "num_kv_heads": 2}


def build_model(path: Path, shapes: str) -> Path:
    """A random model with the preset's exact shapes (or the tiny stand-in), saved by path."""
    from influence_trace.demo.tiny_model import build_tiny_model
    from transformers import AutoModelForCausalLM, Qwen2Config

    if shapes == "tiny":
        return build_tiny_model(path, **TINY)
    s = PRESETS[shapes]
    config = Qwen2Config(
        vocab_size=s.vocab_size, hidden_size=s.hidden_size, intermediate_size=s.intermediate_size,
        num_hidden_layers=s.num_layers, num_attention_heads=s.num_attention_heads,
        num_key_value_heads=s.num_key_value_heads, tie_word_embeddings=s.tie_word_embeddings,
        max_position_embeddings=32768,
    )
    AutoModelForCausalLM.from_config(config).save_pretrained(path)
    return path


def write_rollouts(path: Path, tokens: int, response_len: int, group: int, vocab: int) -> Path:
    """Token-id rollouts: groups of ``group`` responses of ``response_len`` tokens, 0/1 rewards."""
    rng = np.random.default_rng(0)
    responses = max(group, tokens // response_len // group * group)
    with path.open("w") as f:
        for r in range(responses):
            p = r // group
            row = {
                "prompt_id": f"p{p}", "response_id": f"p{p}-r{r % group}",
                "prompt_ids": rng.integers(10, vocab, 256).tolist(),
                "response_ids": rng.integers(10, vocab, response_len).tolist(),
                "reward": float(r % group < group // 2),
            }
            f.write(json.dumps(row) + "\n")
    return path


def manifest(model: Path, rollouts: Path, out: Path, factor: int, scope: str, dtype: str) -> dict:
    return {
        "apiVersion": "influencetrace.dev/v1alpha1", "kind": "InfluenceTrace",
        "metadata": {"name": f"f{factor}-{scope}"},
        "spec": {
            "model": {"path": str(model), "dtype": dtype},
            "rollouts": {"path": str(rollouts)},
            "trace": {"factor": factor, "scope": scope, "allowTf32": True},
            "output": {"path": str(out)},
        },
    }


def run(work: Path, body: dict, device: str) -> dict:
    path = work / f"{body['metadata']['name']}.yaml"
    path.write_text(yaml.safe_dump(body))
    cli = Path(sys.executable).with_name("influence-trace")
    env = {**os.environ, "INFLUENCE_TRACE_TERMINATION_LOG": str(work / "termination.json")}
    subprocess.run([str(cli), "run", str(path), "--device", device], check=True, env=env)
    return json.loads((Path(body["spec"]["output"]["path"]) / "summary.json").read_text())


def tf32_floor_seconds(summary: dict, gpu: str) -> float | None:
    """2 T D^2 flops over every module (the Hessian build) at the GPU's dense TF32 peak."""
    peak = next((v for k, v in TF32_DENSE_FLOPS.items() if k in gpu), None)
    if peak is None:
        return None
    tokens = summary["tokens"]["scored"]
    return sum(2.0 * tokens * m["dim"] ** 2 for m in summary["modules"]) / peak


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=733_870, help="response tokens (the seed's per GPU)")
    parser.add_argument("--response-len", type=int, default=3822)
    parser.add_argument("--group", type=int, default=8, help="responses per prompt")
    parser.add_argument("--factors", type=int, nargs="+", default=[64, 32])
    parser.add_argument("--scopes", nargs="+", default=["per_prompt", "all_selected"])
    parser.add_argument("--shapes", default="qwen2.5-1.5b", choices=[*PRESETS, "tiny"])
    parser.add_argument("--device", default="cuda")
    args = parser.parse_args()
    dtype = "bfloat16" if args.device == "cuda" else "float32"
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        model = build_model(work / "model", args.shapes)
        vocab = 90 if args.shapes == "tiny" else PRESETS[args.shapes].vocab_size
        rollouts = write_rollouts(work / "rollouts.jsonl", args.tokens, args.response_len, args.group, vocab)
        for factor in args.factors:
            for scope in args.scopes:
                body = manifest(model, rollouts, work / f"f{factor}-{scope}", factor, scope, dtype)
                summary = run(work, body, args.device)
                predicted = estimate(parse_manifest(body).spec, options=EstimateOptions(device=args.device))
                rows.append((factor, scope, summary, predicted))
    print_table(rows, args)


def print_table(rows: list, args: argparse.Namespace) -> None:
    device = rows[0][2]["resources"].get("device_name")
    print(f"\n{args.shapes}, {args.tokens} response tokens, device {device}")
    print("| factor | scope | step_total | logprob_backward | grad_staging | hessian_solve | TF32 floor "
          "| token_scoring | peak GPU | ledger peak | predicted GPU | peak host |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for factor, scope, s, est in rows:
        t, res = s["timings"], s["resources"]
        floor = tf32_floor_seconds(s, str(res.get("device_name", "")))
        print(f"| {factor} | {scope} | {t['step_total']:.1f} s | {t['logprob_backward']:.1f} s | "
              f"{t['grad_staging']:.1f} s | {t['hessian_solve']:.1f} s | "
              f"{'-' if floor is None else f'{floor:.1f} s'} | {t['token_scoring']:.1f} s | "
              f"{res['peak_gpu_bytes'] / 1e9:.1f} GB | {res.get('ledger_peak_bytes', 0) / 1e9:.1f} GB | "
              f"{est.gpu_bytes / 1e9:.1f} GB | {res['peak_host_bytes'] / 1e9:.1f} GB |")
    dims = traced_module_dims(PRESETS["qwen2.5-1.5b"], DEFAULT_MODULES, 32, -1)
    print(f"\n(Qwen2.5-1.5B at factor 32: {len(dims)} modules, largest D {max(d.dim for d in dims)})")


if __name__ == "__main__":
    main()
