"""``compare``: two real demo runs (factor 4 and 2) side by side, and synthetic runs for the edge cases."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest
import yaml
from influence_trace.report import compare
from influence_trace.report.run_view import open_run

from tests.report.runs import random_rows, write_run

METRICS = {"auc": 0.978, "sign_consistency": 0.9, "snr_mean": 1.5, "snr_median": 1.25,
           "unscored_token_share": 0.0}


@pytest.fixture(scope="module")
def demo_runs(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """The demo's model and rollouts traced twice through the real pipeline, at factor 4 and 2."""
    from influence_trace.api.spec import parse_manifest
    from influence_trace.demo.command import prepare
    from influence_trace.planning.options import WorkerOptions
    from influence_trace.run.pipeline import run_pipeline

    base = tmp_path_factory.mktemp("demo")
    data = yaml.safe_load(prepare(base).read_text())
    outs = []
    for factor in (4, 2):
        data["metadata"]["name"] = f"demo-f{factor}"
        data["spec"]["trace"]["factor"] = factor
        data["spec"]["output"]["path"] = str(base / f"run-f{factor}")
        run_pipeline(parse_manifest(data), WorkerOptions(device="cpu", progress=False))
        outs.append(base / f"run-f{factor}")
    return outs


def cli(dirs: list[Path], as_json: bool, capsys: pytest.CaptureFixture[str]) -> str:
    assert compare.main(argparse.Namespace(dirs=[str(d) for d in dirs], json=as_json)) == 0
    return capsys.readouterr().out


@pytest.mark.slow
def test_two_demo_runs_markdown(demo_runs: list[Path], capsys: pytest.CaptureFixture[str]) -> None:
    text = cli(demo_runs, False, capsys)
    assert "| Setting | demo-f4 | demo-f2 |" in text
    assert "| trace.factor | 4 | 2 |" in text
    assert "`trace.scope=per_prompt`" in text.splitlines()[2]  # common config line
    assert "| rows_emitted | 24 | 24 |" in text
    assert "GPU mem" not in text  # CPU runs: no GPU figures
    for row in ("**step total**", "hessian_solve", "token_scoring", "CPU mem (GB)",
                "**AUC (accepted vs rejected)**", "sign consistency", "SNR mean", "unscored tokens"):
        assert f"| {row} |" in text, row
    assert "output.path" not in text


@pytest.mark.slow
def test_two_demo_runs_json(demo_runs: list[Path], capsys: pytest.CaptureFixture[str]) -> None:
    data = json.loads(cli(demo_runs, True, capsys))
    assert data["differing_settings"] == ["trace.factor"]
    assert [r["settings"] for r in data["runs"]] == [{"trace.factor": 4}, {"trace.factor": 2}]
    for run, path in zip(data["runs"], demo_runs, strict=True):
        assert run["rows_emitted"] == 24
        assert run["timings"]["step_total"] > 0 and "hessian_solve" in run["timings"]
        assert set(run["metrics"]) == {*METRICS, "lds"} and run["metrics"]["lds"] is None
        assert run["metrics"] == open_run(path).metrics
        assert 0.0 <= run["metrics"]["auc"] <= 1.0


def test_synthetic_runs_show_metrics_and_several_differences(tmp_path: Path,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    a = write_run(tmp_path / "a", random_rows(2, 4), name="f64-perprompt", factor=64, metrics=METRICS)
    b = write_run(tmp_path / "b", random_rows(2, 4), name="f32-allsel", factor=32, scope="all_selected",
                  hessianMode="identity", metrics={**METRICS, "auc": 0.618, "lds": 0.912})
    text = cli([a, b], False, capsys)
    assert "| trace.factor | 64 | 32 |" in text
    assert "| trace.scope | per_prompt | all_selected |" in text
    assert "| trace.hessianMode | inverse | identity |" in text
    assert "| **AUC (accepted vs rejected)** | **0.978** | **0.618** |" in text
    assert "| **LDS (subset updates, Spearman)** | **–** | **0.912** |" in text
    assert "| **step total** | **1,012** | **1,012** |" in text
    assert "| GPU mem (GB) | 91 | 91 |" in text


def test_same_names_fall_back_to_directories(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    a = write_run(tmp_path / "x" / "run", random_rows(1, 2), name="same")
    b = write_run(tmp_path / "y" / "run", random_rows(1, 2), name="same")
    data = json.loads(cli([a, b], True, capsys))
    assert [r["name"] for r in data["runs"]] == ["run (1)", "run (2)"]
    assert data["differing_settings"] == []
    assert "(none)" in cli([a, b], False, capsys)  # no settings differ
