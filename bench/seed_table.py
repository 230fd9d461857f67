"""Benchmark: the seed experiment's table on this project's worker, and the memory model against it.

A randomly initialised model with Qwen2.5-1.5B's shapes (bfloat16) traces random rollouts whose
response tokens match the seed's per-GPU count (733,870 by default), at factors 64 and 32 and both
scopes, one GPU, one fresh `influence-trace run` process per configuration. It prints the timing
breakdown under the pipeline's stage names, peak GPU memory (torch.cuda.max_memory_allocated) next
to the memory model's prediction and the worker's own ledger, and the hessian_solve stage's real flop
rate: the Hessian build as the worker runs it (2 T pairs(k_out) pairs(k_in) on the Gram path, the GPU
strategy's cyclic pair counts there, 2 T D^2 on the dense path), the Cholesky and the solves, over the
stage's seconds; and the Gram GEMM's share: its flops at the dense TF32 peak over the stage's seconds.
Meant for a GPU machine; `--shapes tiny` runs a small stand-in on the CPU to check the script itself.

    .venv/bin/python bench/seed_table.py [--tokens 733870] [--factors 64 32] [--shapes qwen2.5-1.5b|tiny]
        [--scopes per_prompt all_selected] [--device cuda|cpu] [--append bench/RESULTS.md]
        [--check] [--max-hessian-seconds 60]

``--check`` fails (exit 3, after the table) when the memory model's prediction is off the measured
peak by more than 10%, or hessian_solve extrapolated to ``--target-tokens`` exceeds
``--max-hessian-seconds``.

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
from influence_trace.planning.hessian_plan import cyclic_pairs, pairs, uses_symmetric_gram
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
    env = {**os.environ, "INFLUENCE_TRACE_TERMINATION_LOG": str(work / "termination.json"), **AS_ESTIMATED}
    subprocess.run([str(cli), "run", str(path), "--device", device], check=True, env=env)
    return json.loads((Path(body["spec"]["output"]["path"]) / "summary.json").read_text())


def dense_peak(gpu: str) -> float | None:
    return next((v for k, v in TF32_DENSE_FLOPS.items() if k in gpu), None)


def hessian_flops(summary: dict) -> tuple[float, float]:
    """(the token Hessian build's GEMM flops as the worker ran it, hessian_solve's flops: the build, the
    Cholesky D^3 / 3 per scope and the solves 2 D^2 R), summed over modules."""
    tokens, responses = summary["tokens"]["scored"], summary["responses"]["scored"]
    pair = cyclic_pairs if summary["resources"].get("kernels") == "gpu" else pairs
    gemm = stage = 0.0
    for m in summary["modules"]:
        dim, k_out, k_in = m["dim"], m["k_out"], m["k_in"]
        build = 2.0 * tokens * (pair(k_out) * pair(k_in) if uses_symmetric_gram(k_out, k_in) else dim * dim)
        gemm += build
        stage += build + summary["scopes"] * dim**3 / 3.0 + 2.0 * dim * dim * responses
    return gemm, stage


STAGES = ("logprob_backward", "grad_staging", "hessian_solve", "token_scoring")
# The capture as the memory model's capture stage assumes it (every decoder layer checkpointed, each
# response running its prompt), so --check's predicted/measured compares like with like: by default
# the worker spends spare memory on fewer checkpoints and shares prompts (lower, not a model miss),
# so the capture timed here is the conservative one (tests/planning/test_calibration.py does the same).
AS_ESTIMATED = {"INFLUENCE_TRACE_SHARE_PROMPTS": "0", "INFLUENCE_TRACE_CHECKPOINT_LAYERS": "1000"}


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
    parser.add_argument("--check", action="store_true", help="exit 3 when a threshold fails (see above)")
    parser.add_argument("--max-hessian-seconds", type=float, default=0.0,
                        help="with --check: hessian_solve extrapolated to --target-tokens at most this")
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
    failed = failures(rows, args) if args.check else []
    if failed:
        message = "\n".join(f"- check failed: {f}" for f in failed)
        print(message, file=sys.stderr)
        if args.out:
            args.out.write_text("\n".join(lines) + "\n\n" + message + "\n")
        sys.exit(3)


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
    """Markdown: per-stage seconds (as run and extrapolated), hessian_solve's real flop rate and the Gram
    GEMM's share of it at the dense TF32 peak, and the peak device memory against the memory model."""
    device = rows[0][2]["resources"].get("device_name")
    when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    scale = args.target_tokens / max(rows[0][2]["tokens"]["scored"], 1)
    lines = [
        f"### {args.shapes} on {device}, {when}", "",
        f"`{command_line()}`: {rows[0][2]['tokens']['scored']:,} response "
        f"tokens traced ({args.response_len} per response); `@{args.target_tokens:,}` columns scale each "
        f"stage's seconds by tokens (x{scale:.1f}) and the memory model's workload to that many tokens. "
        "Rate: hessian_solve's flops as run (the Gram or dense build, Cholesky, solves) over its seconds; "
        "GEMM share: the build's GEMM at the dense TF32 peak over hessian_solve's seconds.",
        "",
        "| factor | scope | kernels | logprob_backward | grad_staging | hessian_solve | token_scoring "
        "| step_total "
        f"| hessian_solve @{args.target_tokens:,} | trace @{args.target_tokens:,} | hessian_solve TFLOP/s "
        "(% of peak) | GEMM share | peak GPU (max_memory_allocated) | predicted | predicted/measured "
        f"| predicted @{args.target_tokens:,} | peak host |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for factor, scope, s, (predicted, target) in rows:
        t, res = s["timings"], s["resources"]
        gemm, flops = hessian_flops(s)
        seconds = max(t["hessian_solve"], 1e-9)
        peak = dense_peak(str(res.get("device_name", "")))
        share = "" if peak is None else f" ({100 * flops / seconds / peak:.0f}%)"
        gemm_share = "-" if peak is None else f"{100 * gemm / peak / seconds:.0f}%"
        measured = res["peak_gpu_bytes"] or res.get("ledger_peak_bytes", 0)  # the ledger on the CPU
        ratio = predicted / measured if measured else float("nan")
        lines.append(
            f"| {factor} | {scope} | {res.get('kernels', '?')} | "
            + " | ".join(f"{t[k]:.2f} s" for k in STAGES)
            + f" | {t['step_total']:.1f} s | {t['hessian_solve'] * scale:.1f} s "
            f"| {sum(t[k] for k in STAGES) * scale:.1f} s | {flops / seconds / 1e12:.3g}{share} "
            f"| {gemm_share} "
            f"| {measured / 1e9:.3f} GB{'' if res['peak_gpu_bytes'] else ' (ledger)'} "
            f"| {predicted / 1e9:.3f} GB | {ratio:.2f} | {target / 1e9:.1f} GB "
            f"| {res['peak_host_bytes'] / 1e9:.1f} GB |"
        )
    dims = traced_module_dims(PRESETS["qwen2.5-1.5b"], DEFAULT_MODULES, 32, -1)
    lines += ["", f"(Qwen2.5-1.5B at factor 32: {len(dims)} modules, largest D {max(d.dim for d in dims)})"]
    return lines


def failures(rows: list, args: argparse.Namespace) -> list[str]:
    """What ``--check`` fails on: the memory model off by more than 10%, hessian_solve over its limit."""
    out = []
    for factor, scope, s, (predicted, _) in rows:
        res, t = s["resources"], s["timings"]
        measured = res["peak_gpu_bytes"] or res.get("ledger_peak_bytes", 0)
        if not measured or not 0.9 <= predicted / measured <= 1.1:
            out.append(f"factor {factor} {scope}: predicted {predicted:,} bytes vs measured {measured:,}")
        extrapolated = t["hessian_solve"] * args.target_tokens / max(s["tokens"]["scored"], 1)
        if args.max_hessian_seconds and extrapolated > args.max_hessian_seconds:
            out.append(f"factor {factor} {scope}: hessian_solve {extrapolated:.0f} s at "
                       f"{args.target_tokens:,} "
                       f"tokens, over {args.max_hessian_seconds:.0f} s")
    return out


if __name__ == "__main__":
    main()
