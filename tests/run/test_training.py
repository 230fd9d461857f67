"""Multi-step traces on the tiny model: the loop, the policy update against a hand-written float64
AdamW, the scores of a later step against the brute force on the updated weights, and resuming."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from influence_trace.api.contract import GPUOutOfMemory
from influence_trace.api.spec import parse_manifest
from influence_trace.api.status import ResultStatus
from influence_trace.demo.rollouts import make_rollouts
from influence_trace.planning.options import WorkerOptions
from influence_trace.report.compare import comparison
from influence_trace.report.html import build_report
from influence_trace.report.run_view import expand_steps, open_run
from influence_trace.run.dispatch import run_manifest
from influence_trace.run.entry import success_message
from influence_trace.run.training import FAIL_ENV
from influence_trace.trace.selection import select_groups
from influence_trace.trace.timing import StageTimer
from safetensors.torch import load_file

from tests.trace.bruteforce import load_model, read_rollouts, reference, settings, token_gradients
from tests.trace.numeric_helpers import assert_scores_close

OPTIONS = WorkerOptions(device="cpu", chunk_bytes=4096, capture_tokens=40, progress=False)
FLOAT64 = {"factor": 4, "captureDtype": "float64", "hessianDtype": "float64"}
ADAMW = {"lr": 0.01, "betas": [0.8, 0.95], "eps": 1e-8, "weightDecay": 0.1, "gradClip": 0.05}


@pytest.fixture(scope="module")
def rollouts(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_rollouts(tmp_path_factory.mktemp("rollouts") / "r.jsonl", seed=3)


def manifest(model: Path, files: list[Path], out: Path, **training: Any) -> dict[str, Any]:
    return {
        "apiVersion": "influencetrace.dev/v1alpha1",
        "kind": "InfluenceTrace",
        "metadata": {"name": "steps"},
        "spec": {
            "model": {"path": str(model), "dtype": "float64"},
            "rollouts": {"stepPaths": [str(f) for f in files]},
            "trace": FLOAT64,
            "output": {"path": str(out)},
            "training": {"steps": len(files), **training},
        },
    }


def run(data: dict[str, Any]) -> dict[str, Any]:
    torch.set_num_threads(1)
    return run_manifest(parse_manifest(data), OPTIONS, StageTimer())


def step_scores(out: Path, step: int) -> dict[str, np.ndarray]:
    table = pq.read_table(out / f"step-{step}" / "rows.parquet").to_pydict()
    pairs = zip(table["response_id"], table["scores"], strict=True)
    return {r: np.asarray(s, dtype=np.float64) for r, s in pairs}


def checkpoint_weights(out: Path, step: int) -> dict[str, torch.Tensor]:
    return load_file(str(out / f"checkpoint-{step}" / "weights.safetensors"))


def test_skipping_the_optimizer_step_traces_the_same_scores_at_every_step(tiny_model_dir, rollouts,
                                                                          tmp_path) -> None:
    summary = run(manifest(tiny_model_dir, [rollouts, rollouts], tmp_path, skipOptimizerStep=True))
    first, second = step_scores(tmp_path, 1), step_scores(tmp_path, 2)
    assert first.keys() == second.keys() and len(first) == 12
    for key in first:
        np.testing.assert_array_equal(first[key], second[key])
    assert [s["step"] for s in summary["steps"]] == [1, 2]
    assert summary["training"] == {"steps": 2, "completed": 2, "resumed_after_step": 0, "optimizer_steps": 0}
    base = load_model(tiny_model_dir)
    for name, p in base.named_parameters():
        torch.testing.assert_close(checkpoint_weights(tmp_path, 2)[name], p, rtol=0, atol=0)
    for step in summary["steps"]:
        assert set(step["timings"]) >= {"gen", "logprob_backward", "grad_staging", "hessian_solve",
                                        "token_scoring", "pop_rows", "update_actor", "step_total"}
        assert step["timings"]["update_actor"] == 0.0 and step["timings"]["step_total"] > 0
    assert json.loads((tmp_path / "step-2" / "summary.json").read_text())["step"] == 2
    assert ResultStatus.model_validate(success_message(summary)).steps == "2/2"  # the STEP column
    compared = comparison([open_run(d) for d in expand_steps([tmp_path])])  # `compare DIR`: one column a step
    assert [Path(r["path"]).name for r in compared["runs"]] == ["step-1", "step-2"]
    assert compared["runs"][0]["metrics"] == compared["runs"][1]["metrics"]
    assert compared["runs"][0]["metrics"]["auc"] == summary["metrics"]["auc"]
    page = build_report(tmp_path).read_text()  # `report DIR`: the last step's page with a row per step
    table = page[page.index("<h2>Training steps</h2>"):page.index("</table>", page.index("Training steps"))]
    assert table.count("<tr>") == 3 and f"{summary['metrics']['auc']:.4g}" in table


def _advantages(responses) -> dict[str, float]:
    """(r - mean) / (std + 1e-6) per group, with Bessel's correction, written out again here."""
    out = {}
    for pid in dict.fromkeys(r.prompt_id for r in responses):
        members = [r for r in responses if r.prompt_id == pid]
        rewards = np.array([r.reward for r in members])
        for r, a in zip(members, (rewards - rewards.mean()) / (rewards.std(ddof=1) + 1e-6), strict=True):
            out[r.response_id] = float(a)
    return out


def _loss(model, responses) -> torch.Tensor:
    """-(1/R) sum_r A_r mean_t log p(y_t): whole-sequence forwards, no batching, no gathers."""
    adv = _advantages(responses)
    total = torch.zeros((), dtype=torch.float64)
    for r in responses:
        ids = torch.tensor([r.prompt_ids + r.response_ids])
        logp = torch.log_softmax(model(ids).logits[0], dim=-1)
        plen = len(r.prompt_ids)
        picked = torch.stack([logp[plen + i - 1, t] for i, t in enumerate(r.response_ids)])
        total = total + adv[r.response_id] * picked.mean()
    return -total / len(responses)


def _adamw_step(model, moments: dict, t: int) -> None:
    """One AdamW step with global-norm clipping, written from the paper's formulas (float64)."""
    lr, (b1, b2), eps, wd, clip = (ADAMW["lr"], ADAMW["betas"], ADAMW["eps"], ADAMW["weightDecay"],
                                   ADAMW["gradClip"])
    params = [(n, p) for n, p in model.named_parameters()]
    norm = float(torch.sqrt(sum((p.grad**2).sum() for _, p in params)))
    scale = min(1.0, clip / (norm + 1e-6))
    with torch.no_grad():
        for name, p in params:
            g = p.grad * scale
            m, v = moments.get(name, (torch.zeros_like(p), torch.zeros_like(p)))
            m, v = b1 * m + (1 - b1) * g, b2 * v + (1 - b2) * g * g
            moments[name] = (m, v)
            p.mul_(1 - lr * wd)
            p.sub_(lr * (m / (1 - b1**t)) / (torch.sqrt(v / (1 - b2**t)) + eps))
            p.grad = None


def test_updated_weights_match_a_hand_written_adamw_and_the_brute_force(tiny_model_dir, rollouts,
                                                                        tmp_path) -> None:
    summary = run(manifest(tiny_model_dir, [rollouts, rollouts], tmp_path, optimizer=ADAMW))
    assert summary["training"]["optimizer_steps"] == 2
    responses = read_rollouts(rollouts)
    model = load_model(tiny_model_dir)
    moments: dict = {}
    _loss(model, responses).backward()
    _adamw_step(model, moments, 1)
    after_one = {n: p.detach().clone() for n, p in model.named_parameters()}
    # Step 2 traced the weights after one update: its scores are the brute force's on those weights.
    trace = settings(factor=4)
    selection = select_groups(responses, trace)
    ref = reference(token_gradients(_with(tiny_model_dir, after_one), selection, trace), selection, trace)
    assert_scores_close(step_scores(tmp_path, 2), ref.scores, 1e-6)
    base = load_model(tiny_model_dir).named_parameters()
    moved = max(float((after_one[n] - p).abs().max()) for n, p in base)
    assert moved > 1e-3  # the update moved the weights, so the comparison above is not vacuous
    model.requires_grad_(True)
    _loss(model, responses).backward()
    _adamw_step(model, moments, 2)
    saved = checkpoint_weights(tmp_path, 2)
    for name, p in model.named_parameters():
        torch.testing.assert_close(saved[name], p.detach(), rtol=1e-10, atol=1e-12, msg=name)


def _with(model_dir: Path, weights: dict[str, torch.Tensor]):
    model = load_model(model_dir)
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.copy_(weights[name])
    return model


def test_an_interrupted_run_resumes_at_the_failed_step_with_the_same_numbers(tiny_model_dir, rollouts,
                                                                           tmp_path, monkeypatch) -> None:
    other = make_rollouts(tmp_path / "other.jsonl", seed=5)
    files = [rollouts, other, rollouts]
    whole = run(manifest(tiny_model_dir, files, tmp_path / "whole", optimizer=ADAMW, miniBatchSize=5,
                         ppoEpochs=2))
    assert whole["training"]["optimizer_steps"] == 3 * 2 * 3  # steps x epochs x ceil(12 / 5)
    broken = manifest(tiny_model_dir, files, tmp_path / "broken", optimizer=ADAMW, miniBatchSize=5,
                      ppoEpochs=2)
    monkeypatch.setenv(FAIL_ENV, "3")
    with pytest.raises(GPUOutOfMemory):
        run(broken)
    assert (tmp_path / "broken" / "checkpoint-2").is_dir()
    assert not (tmp_path / "broken" / "summary.json").exists()
    monkeypatch.delenv(FAIL_ENV)
    resumed = run(broken)
    assert resumed["training"]["resumed_after_step"] == 2 and resumed["training"]["completed"] == 3
    for step in (1, 2, 3):
        got, want = step_scores(tmp_path / "broken", step), step_scores(tmp_path / "whole", step)
        for key in want:
            np.testing.assert_array_equal(got[key], want[key])
    a, b = checkpoint_weights(tmp_path / "broken", 3), checkpoint_weights(tmp_path / "whole", 3)
    assert a.keys() == b.keys()
    for name in a:
        assert a[name].dtype == torch.float64
        torch.testing.assert_close(a[name], b[name], rtol=0, atol=0, msg=name)
    losses = [[s["update"]["loss_last"] for s in run["steps"]] for run in (resumed, whole)]
    assert losses[0] == losses[1]


def test_generating_steps_sample_from_the_current_policy(tiny_model_dir, tmp_path) -> None:
    """Seeded the same at both steps: without updates both steps sample and score the same rollouts;
    with updates the second step samples from the updated policy (its own rollouts file)."""
    credit = {str(d): 1.0 for d in range(5)}  # the random model's gibberish still gives contrast
    rows = [{"prompt_id": f"q{i}", "prompt": f"what is {i} add {i}", "credit": credit} for i in range(3)]
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(json.dumps(r) + "\n" for r in rows))
    gen = {"promptsPath": str(prompts), "responsesPerPrompt": 6, "maxResponseTokens": 12, "batchSize": 5,
           "rewardColumn": "credit"}
    for name, training in (("same", {"skipOptimizerStep": True}), ("learn", {"optimizer": {"lr": 0.05}})):
        data = manifest(tiny_model_dir, [], tmp_path / name, steps=2, **training)
        data["spec"]["rollouts"] = {"generate": gen}
        run(data)
    tables = {(name, step): pq.read_table(tmp_path / name / f"step-{step}" / "rollouts.parquet").to_pydict()
              for name in ("same", "learn") for step in (1, 2)}
    assert tables["same", 1]["response_ids"] == tables["same", 2]["response_ids"]
    assert tables["learn", 1]["response_ids"] == tables["same", 1]["response_ids"]  # step 1: base weights
    assert tables["learn", 2]["response_ids"] != tables["learn", 1]["response_ids"]
    first, second = step_scores(tmp_path / "same", 1), step_scores(tmp_path / "same", 2)
    for key in first:
        np.testing.assert_array_equal(first[key], second[key])


def test_validating_every_step_leaves_the_training_unchanged(tiny_model_dir, rollouts, tmp_path) -> None:
    """spec.validate in a multi-step trace: each step writes validation.json before its update, and the
    updates (restored weights, the loop's own optimizer untouched) are bit for bit those of a run
    without it."""
    plain = manifest(tiny_model_dir, [rollouts, rollouts], tmp_path / "plain", optimizer=ADAMW)
    checked = manifest(tiny_model_dir, [rollouts, rollouts], tmp_path / "checked", optimizer=ADAMW)
    checked["spec"]["trace"] = {**FLOAT64, "scope": "all_selected", "excludeSelfResponse": False}
    checked["spec"]["validate"] = {"subsets": 3, "target": "optimizer"}
    plain["spec"]["trace"] = checked["spec"]["trace"]
    run(plain)
    summary = run(checked)
    for step in (1, 2):
        document = json.loads((tmp_path / "checked" / f"step-{step}" / "validation.json").read_text())
        assert document["target"] == "optimizer" and len(document["subsets_detail"]) == 3
        assert summary["steps"][step - 1]["metrics"]["lds"] == document["lds"]
    a, b = checkpoint_weights(tmp_path / "plain", 2), checkpoint_weights(tmp_path / "checked", 2)
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=0, atol=0, msg=name)
