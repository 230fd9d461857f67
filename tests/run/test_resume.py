"""Resuming: a second run reuses the finished stages, a changed setting or model redoes them, and a
stage interrupted half-way (no completion marker) is redone, never half-used."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
from influence_trace.api.contract import InvalidInput
from influence_trace.api.spec import parse_manifest
from influence_trace.io.artifacts import Artifact
from influence_trace.planning.options import WorkerOptions
from influence_trace.run.pipeline import run_pipeline

# A reward table instead of the 0/1 verifier: the random model's last digit earns 1 when it is 0-4,
# so its gibberish responses still give groups with contrast.
CREDIT = {str(d): 1.0 for d in range(5)}


@pytest.fixture()
def prompts_file(tmp_path: Path) -> Path:
    rows = [{"prompt_id": f"q{i}", "prompt": f"what is {i} add {i}", "credit": CREDIT} for i in range(3)]
    path = tmp_path / "prompts.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def manifest(model: Path, prompts: Path, out: Path, rollouts: Path | None = None, generate=None,
             **trace: Any) -> dict[str, Any]:
    gen = {"promptsPath": str(prompts), "responsesPerPrompt": 6, "maxResponseTokens": 12, "batchSize": 5,
           "rewardColumn": "credit", **(generate or {})}
    spec_rollouts: dict[str, Any] = {"generate": gen}
    if rollouts is not None:
        spec_rollouts["path"] = str(rollouts)
    return {
        "apiVersion": "influencetrace.dev/v1alpha1",
        "kind": "InfluenceTrace",
        "metadata": {"name": "resume"},
        "spec": {
            "model": {"path": str(model), "dtype": "float32"},
            "rollouts": spec_rollouts,
            "trace": {"factor": 2, "captureDtype": "float32", **trace},
            "output": {"path": str(out), "keepFactors": True},
        },
    }


def run(data: dict[str, Any]) -> dict[str, Any]:
    return run_pipeline(parse_manifest(data), WorkerOptions(progress=False))


def scores(out: Path) -> list:
    return pq.read_table(out / "rows.parquet").column("scores").to_pylist()


def test_second_run_reuses_rollouts_and_factors(tiny_model_dir: Path, prompts_file: Path,
                                                tmp_path: Path) -> None:
    out = tmp_path / "out"
    data = manifest(tiny_model_dir, prompts_file, out)
    first = run(data)
    baseline = scores(out)
    assert first["reused"] == {} and set(first["stored"]) == {"rollouts", "factors"}
    assert first["timings"]["gen"] > 0 and first["timings"]["logprob_backward"] > 0
    rollouts = pq.read_table(out / "rollouts.parquet")
    assert rollouts.num_rows == 18
    recorded = json.loads(rollouts.schema.metadata[b"influence_trace.generation"])
    assert recorded["settings"]["rewardColumn"] == "credit" and recorded["responses"] == 18

    second = run(data)
    assert set(second["reused"]) == {"rollouts", "factors"} and second["stored"] == {}
    assert second["reused"]["rollouts"]["fingerprint"] == first["stored"]["rollouts"]["fingerprint"]
    assert second["timings"]["gen"] < 0.2 * first["timings"]["gen"]  # only the fingerprint check
    assert second["timings"]["logprob_backward"] == 0.0
    assert second["rows_emitted"] == first["rows_emitted"]
    assert scores(out) == baseline  # rows rewritten from the reused factors
    assert pq.read_table(out / "rollouts.parquet").equals(rollouts)


def test_changed_settings_invalidate_only_what_they_affect(tiny_model_dir: Path, prompts_file: Path,
                                                          tmp_path: Path) -> None:
    out = tmp_path / "out"
    first = run(manifest(tiny_model_dir, prompts_file, out))
    baseline = scores(out)

    damping = run(manifest(tiny_model_dir, prompts_file, out, regLambda=0.5))  # after capture: reuse all
    assert set(damping["reused"]) == {"rollouts", "factors"}

    factor = run(manifest(tiny_model_dir, prompts_file, out, factor=1))  # capture changes
    assert set(factor["reused"]) == {"rollouts"} and set(factor["stored"]) == {"factors"}

    hotter = run(manifest(tiny_model_dir, prompts_file, out, generate={"temperature": 0.7}))
    assert hotter["reused"] == {} and set(hotter["stored"]) == {"rollouts", "factors"}
    assert hotter["stored"]["rollouts"]["fingerprint"] != first["stored"]["rollouts"]["fingerprint"]

    back = run(manifest(tiny_model_dir, prompts_file, out))  # the original recipe is made again
    assert back["reused"] == {} and scores(out) == baseline  # and gives the same results (same seed)


def test_changed_model_invalidates_a_copied_one_does_not(tiny_model_dir: Path, prompts_file: Path,
                                                        tmp_path: Path) -> None:
    from influence_trace.demo.tiny_model import build_tiny_model

    out = tmp_path / "out"
    run(manifest(tiny_model_dir, prompts_file, out))
    copy = shutil.copytree(tiny_model_dir, tmp_path / "copy")
    moved = run(manifest(copy, prompts_file, out))  # same files elsewhere (a relaunched pod's mount)
    assert set(moved["reused"]) == {"rollouts", "factors"}
    other = build_tiny_model(tmp_path / "other", seed=7)
    changed = run(manifest(other, prompts_file, out))
    assert changed["reused"] == {}


def test_interrupted_stage_is_redone(tiny_model_dir: Path, prompts_file: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    data = manifest(tiny_model_dir, prompts_file, out)
    run(data)
    (out / "factors.safetensors.done.json").unlink()  # as if killed before the marker was written
    with (out / "rollouts.parquet").open("ab") as handle:  # and the rollouts file no longer as vouched
        handle.write(b"garbage")
    again = run(data)
    assert again["reused"] == {} and set(again["stored"]) == {"rollouts", "factors"}


def test_foreign_file_at_rollouts_path_is_not_overwritten(tiny_model_dir: Path, prompts_file: Path,
                                                          tmp_path: Path) -> None:
    target = tmp_path / "mine.jsonl"
    target.write_text('{"prompt_id": "x"}\n')
    with pytest.raises(InvalidInput, match="exists but was not made by generation") as err:
        run(manifest(tiny_model_dir, prompts_file, tmp_path / "out", rollouts=target))
    assert err.value.stage == "gen" and target.read_text() == '{"prompt_id": "x"}\n'
    target.unlink()
    made = run(manifest(tiny_model_dir, prompts_file, tmp_path / "out", rollouts=target))
    assert set(made["stored"]) == {"rollouts", "factors"} and len(target.read_text().splitlines()) == 18
    assert (tmp_path / "mine.jsonl.done.json").is_file()


def test_artifact_states(tmp_path: Path) -> None:
    art = Artifact("thing", tmp_path / "thing.txt", {"a": 1})
    assert art.state() == "missing" and not art.exists()
    art.save(lambda tmp: tmp.write_text("hello"), {"n": 5})
    assert art.exists() and art.load(lambda p: p.read_text()) == "hello"
    assert art.record()["info"] == {"n": 5}
    assert Artifact("thing", art.path, {"a": 2}).state() == "stale"
    assert Artifact("other", art.path, {"a": 1}).state() == "stale"  # the name is in the fingerprint
    art.path.write_text("hello, changed")
    assert art.state() == "incomplete"
    art.marker_path.unlink()
    assert art.state() == "incomplete"
    with pytest.raises(RuntimeError, match="incomplete"):
        art.load(lambda p: p.read_text())


def test_failed_save_leaves_no_artifact(tmp_path: Path) -> None:
    art = Artifact("thing", tmp_path / "thing.txt", {"a": 1})
    art.save(lambda tmp: tmp.write_text("old"))

    def crash(tmp: Path) -> None:
        tmp.write_text("half")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        art.save(crash)
    assert not art.exists() and art.path.read_text() == "old"  # the old data, no longer vouched for
    assert [p.name for p in tmp_path.iterdir()] == ["thing.txt"]  # no temporary left behind
