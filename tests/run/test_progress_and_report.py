"""The worker's progress lines (api/progress.py) and its report.html, from a real CPU run."""

from __future__ import annotations

import io
import itertools
import json
import os
import subprocess
from pathlib import Path

from influence_trace.api.progress import PREFIX, Progress, Reporter, last_progress, parse_line

from tests.cluster.operator_fixtures import CLI
from tests.conftest import manifest_dict, write_manifest


def test_a_run_reports_every_loop_and_writes_its_report(tmp_path: Path, tiny_model_dir: Path,
                                                        rollouts_file: Path) -> None:
    body = manifest_dict(tiny_model_dir, rollouts_file, tmp_path / "out")
    manifest = write_manifest(tmp_path / "m.yaml", body)
    log = tmp_path / "termination-log"
    env = {**os.environ, "INFLUENCE_TRACE_TERMINATION_LOG": str(log), "INFLUENCE_TRACE_PROGRESS_SECONDS": "0"}
    proc = subprocess.run([str(CLI), "run", "--device", "cpu", str(manifest)], env=env, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = [p for p in map(parse_line, proc.stderr.splitlines()) if p is not None]
    capture = [p for p in lines if p.stage == "capture"]
    hessian = [p for p in lines if p.stage == "hessian"]
    assert capture and hessian and lines.index(capture[-1]) < lines.index(hessian[0])
    assert [p.step for p in capture] == list(range(1, capture[0].total + 1))  # interval 0: every step
    assert [p.step for p in hessian] == list(range(1, 15)) and hessian[-1].total == 14  # 7 suffixes x 2
    assert {p.unit for p in capture} == {"batch"} and {p.unit for p in hessian} == {"module"}
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert capture[-1].tokens == summary["tokens"]["scored"]
    assert all(a.elapsed <= b.elapsed for a, b in itertools.pairwise(lines))
    message = json.loads(log.read_text())
    report = tmp_path / "out" / "report.html"
    assert message["report"] == str(report) and report.read_text().startswith("<!DOCTYPE html>")
    assert "report: " + str(report) in proc.stderr


def test_reporter_keeps_to_its_interval_and_the_parser_takes_the_newest_line() -> None:
    ticks = iter([0.0, 0.0, 1.0, 2.0, 6.0, 7.0, 8.0])
    out = io.StringIO()
    reporter = Reporter(interval=5.0, stream=out, clock=lambda: next(ticks))
    assert list(reporter.track(range(6), "hessian", "module", 6)) == list(range(6))
    steps = [p.step for p in map(parse_line, out.getvalue().splitlines())]
    assert steps == [1, 4, 6]  # the first, one 5 s later, and the last
    text = "junk\n2026-11-26T13:00:00Z stderr F " + Progress("capture", 3, 9, "batch", 1.5, 300).line() + "\n"
    text += PREFIX + "{not json\n"
    assert last_progress(text) == Progress("capture", 3, 9, "batch", 1.5, 300)
    assert last_progress("no progress here") is None
