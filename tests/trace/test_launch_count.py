"""The GPU kernel strategy's launch count depends on token chunks, not on responses or projected sides.

A whole run of the tiny model is counted (trace/launches.py) with INFLUENCE_TRACE_KERNELS=gpu: 4x the
responses over the same response tokens, or doubled projected sides, may cost at most 1.3x the kernel
launches, for the whole run and for the stages after capture (staging, Hessian, solves, scoring;
issue 23). The CPU strategy is counted too, so the test shows it measures what it claims.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from influence_trace.demo.rollouts import make_rollouts
from influence_trace.trace.engine import run_trace
from influence_trace.trace.launches import CountingTimer, LaunchCounter
from influence_trace.trace.ledger import MemoryLedger
from influence_trace.trace.selection import select_groups

from tests.trace.bruteforce import read_rollouts, settings
from tests.trace.numeric_helpers import SMALL

BUDGET = 1.3
WORK_STAGES = ("setup", "grad_staging", "hessian_solve", "token_scoring")


def launches(model, path: Path, factor: int) -> tuple[int, int]:
    """(launches of the whole run, of everything but capture) at the worker's default chunks."""
    trace = settings(factor=factor, scope="all_selected", contrastive_agg="mean", exclude_self_response=True,
                     modules=["self_attn.q_proj", "mlp.down_proj"])
    selection = select_groups(read_rollouts(path), trace)
    options = SMALL.__class__(device="cpu", progress=False)  # default chunk and capture sizes
    counter = LaunchCounter()
    with counter:
        run_trace(model, selection, trace, options, MemoryLedger(), CountingTimer(counter))
    return sum(counter.launches.values()), sum(counter.launches[s] for s in WORK_STAGES)


def rollouts(tmp: Path, responses: int, length: int) -> Path:
    """Three prompts of two tokens, ``responses`` responses each of ``length`` tokens."""
    return make_rollouts(tmp / f"r{responses}.jsonl", num_prompts=3, responses_per_prompt=responses,
                         prompt_len=(2, 3), response_len=(length, length + 1), seed=1)


@pytest.mark.parametrize("kernels", ["gpu", "cpu"], indirect=True)
def test_four_times_the_responses_over_the_same_tokens(model, tmp_path: Path, kernels: str) -> None:
    few = launches(model, rollouts(tmp_path, 4, 32), 4)
    many = launches(model, rollouts(tmp_path, 16, 8), 4)
    work_ratio = many[1] / few[1]
    if kernels == "gpu":
        assert work_ratio <= BUDGET and many[0] / few[0] <= BUDGET, (few, many)
    else:  # the loops over responses: the count this budget guards against
        assert work_ratio > 2, (few, many)


@pytest.mark.parametrize("kernels", ["gpu", "cpu"], indirect=True)
def test_doubled_projected_sides(model, tmp_path: Path, kernels: str) -> None:
    path = rollouts(tmp_path, 4, 32)
    # Factors 2 and 1: every side of the tiny model at least 16, both on the Gram path.
    narrow, wide = launches(model, path, 2), launches(model, path, 1)
    if kernels == "gpu":
        assert wide[1] / narrow[1] <= BUDGET and wide[0] / narrow[0] <= BUDGET, (narrow, wide)
    else:
        assert wide[1] / narrow[1] > BUDGET, (narrow, wide)
