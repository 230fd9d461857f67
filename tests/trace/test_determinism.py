"""trace.deterministic: the trace runs with deterministic algorithms, restored afterwards, and two runs
give bitwise equal scores."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from influence_trace.demo.rollouts import make_rollouts
from influence_trace.trace import capture
from influence_trace.trace.determinism import deterministic_algorithms
from influence_trace.trace.selection import select_groups

from tests.trace.bruteforce import read_rollouts, settings
from tests.trace.numeric_helpers import run


@pytest.fixture(scope="module")
def responses(tmp_path_factory: pytest.TempPathFactory):
    return read_rollouts(make_rollouts(tmp_path_factory.mktemp("r") / "r.jsonl", seed=3))


def test_the_switch_sets_and_restores_the_mode() -> None:
    assert not torch.are_deterministic_algorithms_enabled()
    with deterministic_algorithms(False):
        assert not torch.are_deterministic_algorithms_enabled()
    with deterministic_algorithms(True):
        assert torch.are_deterministic_algorithms_enabled()
        assert torch.is_deterministic_algorithms_warn_only_enabled()
    assert not torch.are_deterministic_algorithms_enabled()


@pytest.mark.parametrize("flag", [True, False])
def test_the_trace_runs_in_the_mode_it_asks_for(model, responses, monkeypatch, flag) -> None:
    trace = settings(factor=4, capture_dtype="float32", hessian_dtype="float32", deterministic=flag)
    selection = select_groups(responses, trace)
    seen: list[bool] = []
    factors = capture.capture_factors

    def spy(*args, **kwargs):
        seen.append(torch.are_deterministic_algorithms_enabled())
        return factors(*args, **kwargs)

    monkeypatch.setattr("influence_trace.trace.engine.capture_factors", spy)
    first = run(model, selection, trace).scores
    second = run(model, selection, trace).scores
    assert seen == [flag, flag] and not torch.are_deterministic_algorithms_enabled()
    for key, value in first.items():
        np.testing.assert_array_equal(value, second[key])
