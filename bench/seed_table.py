"""Benchmark: the seed experiment's table on this project's worker, and the memory model against it.

A randomly initialised model with Qwen2.5-1.5B's shapes (bfloat16) traces random rollouts whose
response tokens match the seed's per-GPU count (733,870 by default), at factors 64 and 32 and both
scopes, one GPU, one fresh `influence-trace run` process per configuration. It prints the timing
breakdown under the pipeline's stage names, peak GPU memory (torch.cuda.max_memory_allocated) next
to the memory model's prediction and the worker's own ledger, and the hessian_solve time against the
TF32 floor of 2 T D^2 flops over every module. Meant for a GPU machine; `--shapes tiny` runs a small
stand-in on the CPU to check the script itself.

    .venv/bin/python bench/seed_table.py [--tokens 733870] [--factors 64 32] [--shapes qwen2.5-1.5b|tiny]
        [--scopes per_prompt all_selected] [--device cuda|cpu] [--append bench/RESULTS.md]

bench/gpu_check.sh runs it with a token count that fits its time slot and extrapolates to 733,870.
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
import torch
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
    AutoModelForCausalLM.from_config(config).to(torch.bfloat16).save_pretrained(path)  # as it is traced
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
        "metadata": {"name": f"f{factor}-{scope}".replace("_", "-")},  # a DNS-1035 label
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
    peak = dense_peak(gpu)
    return None if peak is None else hessian_flops(summary) / peak


def dense_peak(gpu: str) -> float | None:
    return next((v for k, v in TF32_DENSE_FLOPS.items() if k in gpu), None)


def hessian_flops(summary: dict) -> float:
    """The build's plain-GEMM flops, 2 T D^2 summed over modules (every scope's tokens once)."""
    tokens = summary["tokens"]["scored"]
    return sum(2.0 * tokens * m["dim"] ** 2 for m in summary["modules"])


STAGES = ("logprob_backward", "grad_staging", "hessian_solve", "token_scoring")


def predicted_at(spec, device: str, tokens: int) -> int:
    """The memory model's device peak (without the CUDA context) with the run's workload scaled to
    ``tokens`` response tokens (responses and prompt tokens in proportion, same group sizes)."""
    from dataclasses import replace

    from influence_trace.planning.workload import resolve_workload

    w = resolve_workload(spec)
    scale = tokens / max(w.response_tokens, 1)
    scaled = replace(w, response_tokens=tokens, responses=max(1, round(w.responses * scale)),
                     prompt_tokens=round(w.prompt_tokens * scale), source=f"scaled to {tokens} tokens")
    return estimate(spec, options=EstimateOptions(device=device), workload=scaled).ledger_bytes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=733_870, help="response tokens (the seed's per GPU)")
    parser.add_argument("--target-tokens", type=int, default=733_870, help="extrapolate to this many tokens")
    parser.add_argument("--response-len", type=int, default=3822)
    parser.add_argument("--group", type=int, default=8, help="responses per prompt")
    parser.add_argument("--factors", type=int, nargs="+", default=[64, 32])
    parser.add_argument("--scopes", nargs="+", default=["per_prompt", "all_selected"])
    parser.add_argument("--shapes", default="qwen2.5-1.5b", choices=[*PRESETS, "tiny"])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--append", type=Path, help="also append the table to this markdown file")
    parser.add_argument("--out", type=Path, help="rewrite the table so far here after every configuration "
                        "(bench/gpu_check.sh: a run cut off by its time limit keeps what finished)")
    args = parser.parse_args()
    dtype = "bfloat16" if args.device == "cuda" else "float32"
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        began = time.perf_counter()
        model = build_model(work / "model", args.shapes)
        print(f"model built in {time.perf_counter() - began:.1f} s", flush=True)
        vocab = 90 if args.shapes == "tiny" else PRESETS[args.shapes].vocab_size
        rollouts = write_rollouts(work / "rollouts.jsonl", args.tokens, args.response_len, args.group, vocab)
        for factor in args.factors:
            for scope in args.scopes:
                body = manifest(model, rollouts, work / f"f{factor}-{scope}", factor, scope, dtype)
                summary = run(work, body, args.device)
                spec = parse_manifest(body).spec
                predicted = (predicted_at(spec, args.device, summary["tokens"]["scored"]),
                             predicted_at(spec, args.device, args.target_tokens))
                rows.append((factor, scope, summary, predicted))
                if args.out:
                    args.out.write_text("\n".join(table(rows, args)) + "\n")
    lines = table(rows, args)
    print("\n".join(lines))
    if args.append:
        with args.append.open("a") as f:
            f.write("\n" + "\n".join(lines) + "\n")


def command_line() -> str:
    """This script's arguments, without where the table is written."""
    args, skip = [], False
    for arg in sys.argv[1:]:
        if skip or arg in ("--out", "--append"):
            skip = not skip
            continue
        args.append(arg)
    return " ".join(["bench/seed_table.py", *args])


def table(rows: list, args: argparse.Namespace) -> list[str]:
    """Markdown: per-stage seconds (as run and extrapolated), the Hessian stage's rate against the
    GPU's dense TF32 peak, and the peak device memory against the memory model."""
    device = rows[0][2]["resources"].get("device_name")
    when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    scale = args.target_tokens / max(rows[0][2]["tokens"]["scored"], 1)
    lines = [
        f"### {args.shapes} on {device}, {when}", "",
        f"`{command_line()}`: {rows[0][2]['tokens']['scored']:,} response "
        f"tokens traced; `@{args.target_tokens:,}` columns scale each stage's seconds by tokens "
        f"(x{scale:.1f}) and the memory model's workload to that many tokens. Rate: 2 T D^2 over every "
        "module divided by hessian_solve seconds (build, Cholesky and solves), against the dense TF32 peak.",
        "",
        "| factor | scope | logprob_backward | grad_staging | hessian_solve | token_scoring | step_total "
        f"| hessian_solve @{args.target_tokens:,} | trace @{args.target_tokens:,} | Hessian TFLOP/s "
        "(% of peak) | peak GPU (max_memory_allocated) | predicted | predicted/measured "
        f"| predicted @{args.target_tokens:,} | peak host |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for factor, scope, s, (predicted, target) in rows:
        t, res = s["timings"], s["resources"]
        rate = hessian_flops(s) / max(t["hessian_solve"], 1e-9)
        peak = dense_peak(str(res.get("device_name", "")))
        share = "" if peak is None else f" ({100 * rate / peak:.0f}%)"
        measured = res["peak_gpu_bytes"] or res.get("ledger_peak_bytes", 0)  # the ledger on the CPU
        ratio = predicted / measured if measured else float("nan")
        lines.append(
            f"| {factor} | {scope} | " + " | ".join(f"{t[k]:.2f} s" for k in STAGES)
            + f" | {t['step_total']:.1f} s | {t['hessian_solve'] * scale:.1f} s "
            f"| {sum(t[k] for k in STAGES) * scale:.1f} s | {rate / 1e12:.2f}{share} "
            f"| {measured / 1e9:.3f} GB{'' if res['peak_gpu_bytes'] else ' (ledger)'} "
            f"| {predicted / 1e9:.3f} GB | {ratio:.2f} | {target / 1e9:.1f} GB "
            f"| {res['peak_host_bytes'] / 1e9:.1f} GB |"
        )
    dims = traced_module_dims(PRESETS["qwen2.5-1.5b"], DEFAULT_MODULES, 32, -1)
    lines += ["", f"(Qwen2.5-1.5B at factor 32: {len(dims)} modules, largest D {max(d.dim for d in dims)})"]
    return lines


if __name__ == "__main__":
    main()
