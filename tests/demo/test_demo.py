"""The demo runs the real pipeline on the CPU, leaves a rerunnable manifest and prints top tokens."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import pytest
from influence_trace.api.spec import load_manifest
from influence_trace.demo.command import main
from influence_trace.io.outputs import load_run


def test_demo_runs_and_prints_top_tokens(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(argparse.Namespace(out=str(tmp_path / "demo"), top=5)) == 0
    printed = capsys.readouterr().out
    manifest = load_manifest(tmp_path / "demo" / "trace.yaml")  # an ordinary, valid manifest
    assert Path(manifest.spec.model.path).is_dir() and Path(manifest.spec.rollouts.path).is_file()
    run = load_run(manifest.spec.output.path)
    assert run.rows.num_rows == 24 and run.summary["groups"]["selected"] == 4
    assert "top 5 tokens by score" in printed and "step_total" in printed and "model is random" in printed
    report = Path(manifest.spec.output.path) / "report.html"
    assert f"report:   {report}" in printed and report.stat().st_size > 1000
    listed = re.findall(r"^\s*(-?[\d.e+-]+)\s+(q\d-r\d)\s+(True|False)\s+'(.+?)'", printed, re.M)
    assert len(listed) == 5
    best = max(s for row in run.rows.to_pylist() for s in row["scores"])
    assert float(listed[0][0]) == pytest.approx(best, rel=1e-3)
    assert [float(x[0]) for x in listed] == sorted((float(x[0]) for x in listed), reverse=True)
    assert "<unk>" not in {x[3] for x in listed}
