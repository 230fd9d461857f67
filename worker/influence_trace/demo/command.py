"""``influence-trace demo``: a whole trace on the CPU in seconds, with files a user can read and rerun.

It builds a small random model and text rollouts (arithmetic prompts, some responses right and some
wrong), writes an ordinary manifest (``OUT/trace.yaml``, runnable with ``influence-trace run``), runs
the real pipeline on it, and prints the timings and the tokens with the highest scores. The model is
random, so the scores show the mechanics, not a trained model's behaviour.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import yaml

PROMPTS = [
    ("compute the sum of 2 and 3", 5),
    ("add 4 and 4", 8),
    ("what is 9 minus 6", 3),
    ("compute 3 times 2", 6),
]
OPENINGS = ["first we add", "let x be the number", "we check the step", "so the total is", "next we solve"]
RESPONSES_PER_PROMPT = 6
# What the ranking is, for tokens of either side: a score is the change of the accepted-minus-rejected
# contrast that a gradient step on that token would make (docs/algorithm.md).
LEGEND = ("a step on a high-scoring token raises the accepted-minus-rejected contrast, whichever response "
          "it is in; the demo model is random, so which tokens rank high shows the mechanics only")
MODEL: dict[str, Any] = {"hidden_size": 64, "intermediate_size": 128, "num_layers": 2, "num_heads": 4,
                         "num_kv_heads": 2}


def response_text(rng: np.random.Generator, answer: int, correct: bool) -> str:
    """A short worked answer; wrong ones end with a different number."""
    given = answer if correct else int((answer + rng.integers(1, 9)) % 10)
    steps = " ".join(rng.choice(OPENINGS, size=rng.integers(1, 3)))
    return f"{steps} then the answer is {given} therefore boxed {{ {given} }}"


def write_rollouts(path: Path, seed: int = 0) -> Path:
    """Text rollouts: per prompt, half the responses correct (reward 1) and half wrong (reward 0)."""
    rng = np.random.default_rng(seed)
    lines = []
    for p, (prompt, answer) in enumerate(PROMPTS):
        for r in range(RESPONSES_PER_PROMPT):
            correct = r % 2 == 0
            row = {
                "prompt_id": f"q{p}",
                "response_id": f"q{p}-r{r}",
                "prompt": prompt,
                "response": response_text(rng, answer, correct),
                "reward": 1.0 if correct else 0.0,
                "answer": str(answer),
            }
            lines.append(json.dumps(row))
    path.write_text("\n".join(lines) + "\n")
    return path


def demo_manifest(model: Path, rollouts: Path, output: Path) -> dict[str, Any]:
    return {
        "apiVersion": "influencetrace.dev/v1alpha1",
        "kind": "InfluenceTrace",
        "metadata": {"name": "demo"},
        "spec": {
            "model": {"path": str(model), "dtype": "float32"},
            "rollouts": {"path": str(rollouts)},
            "trace": {"factor": 4, "scope": "per_prompt", "captureDtype": "float32", "seed": 0},
            "resources": {"gpus": 1},
            "output": {"path": str(output)},
        },
    }


def prepare(out: Path) -> Path:
    """Write the model, rollouts and manifest under ``out``; return the manifest's path."""
    from influence_trace.demo.tiny_model import build_tiny_model

    out.mkdir(parents=True, exist_ok=True)
    model = build_tiny_model(out / "model", **MODEL)
    rollouts = write_rollouts(out / "rollouts.jsonl")
    manifest = out / "trace.yaml"
    manifest.write_text(yaml.safe_dump(demo_manifest(model, rollouts, out / "run"), sort_keys=False))
    return manifest


def top_tokens(rows: list[dict[str, Any]], tokens: list[str], top: int) -> list[dict[str, Any]]:
    """The ``top`` highest-scoring tokens over all rows, with a little preceding context."""
    flat = [(s, i, t) for i, row in enumerate(rows) for t, s in enumerate(row["scores"])]
    flat.sort(key=lambda item: -item[0])
    picked = []
    for score, i, t in flat[:top]:
        row = rows[i]
        ids = row["token_ids"]
        picked.append(
            {
                "score": score,
                "token": tokens[ids[t]],
                "context": " ".join(tokens[x] for x in ids[max(0, t - 4) : t]),
                "response_id": row["response_id"],
                "accepted": row["accepted"],
            }
        )
    return picked


def format_top(picked: list[dict[str, Any]]) -> str:
    lines = [f"{'score':>11}  {'response':<8}  {'accepted':<8}  token (after ...context)"]
    for p in picked:
        lines.append(
            f"{p['score']:11.4g}  {p['response_id']:<8}  {p['accepted']!s:<8}  "
            f"{p['token']!r} (after ...{p['context']})"
        )
    return "\n".join(lines)


def main(args: argparse.Namespace) -> int:
    from influence_trace.api.contract import WorkerFailure
    from influence_trace.api.spec import load_manifest
    from influence_trace.io.model_io import load_tokenizer
    from influence_trace.io.outputs import load_run
    from influence_trace.planning.options import WorkerOptions
    from influence_trace.run.entry import format_timings, setup_logging, write_report
    from influence_trace.run.pipeline import run_pipeline
    from influence_trace.trace.timing import StageTimer

    out = Path(args.out).resolve()
    manifest_path = prepare(out)
    manifest = load_manifest(manifest_path)
    timer = StageTimer()
    setup_logging(timer)
    try:
        summary = run_pipeline(manifest, WorkerOptions(device="cpu", progress=False), timer=timer)
    except WorkerFailure as err:
        print(f"demo failed: {err.reason} in {err.stage}: {err}", file=sys.stderr)
        return err.exit_code
    run = load_run(manifest.spec.output.path)
    tokenizer = load_tokenizer(manifest.spec.model)
    tokens = tokenizer.convert_ids_to_tokens(list(range(len(tokenizer))))
    print(f"\nmanifest: {manifest_path}  (rerun with: influence-trace run {manifest_path})")
    print(f"outputs:  {manifest.spec.output.path}  ({summary['rows_emitted']} rows)")
    print(f"report:   {write_report(summary) or '(could not be written; see the log)'}\n")
    print(format_timings(summary["timings"]))
    print(f"\ntop {args.top} tokens by score: {LEGEND}")
    print(format_top(top_tokens(run.rows.to_pylist(), tokens, args.top)))
    return 0
