"""A run of several processes shows each stage's slowest rank and the spread, the wait included."""

from __future__ import annotations

from pathlib import Path

from influence_trace.report.run_view import Run, timing_rows
from influence_trace.run.ranks import rank_stage_seconds


def test_rank_stage_seconds_takes_the_slowest_and_the_spread() -> None:
    got = rank_stage_seconds([{"hessian_solve": 3.0, "wait": 0.5}, {"hessian_solve": 3.5, "wait": 0.0}])
    assert got["hessian_solve"] == {"max": 3.5, "spread": 0.5, "per_rank": [3.0, 3.5]}
    assert got["wait"] == {"max": 0.5, "spread": 0.5, "per_rank": [0.5, 0.0]}


def test_the_report_shows_the_slowest_rank_and_the_spread() -> None:
    stages = rank_stage_seconds([{"hessian_solve": 3.0, "wait": 0.5}, {"hessian_solve": 3.5, "wait": 0.0}])
    several = Run(Path("two"), {"timings": {"hessian_solve": 3.0, "wait": 0.5},
                                "resources": {"stage_seconds": stages}})
    one = Run(Path("one"), {"timings": {"hessian_solve": 2.0}})
    rows = {label: cells for label, cells, _ in timing_rows([several, one])}
    assert "slowest of 2 ranks" in rows["hessian_solve"][0] and "spread" in rows["hessian_solve"][0]
    assert "slowest" not in rows["hessian_solve"][1]
    assert "wait" in rows
