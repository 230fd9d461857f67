"""Multi-process traces (issue 8): the same scores with 1, 2 and 3 CPU processes as with one process
and as the float64 brute force, for both scopes; and the pure splits behind them."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from influence_trace.demo.rollouts import make_rollouts
from influence_trace.run.partition import assign_modules, contiguous_shares, module_cost, owner_of
from influence_trace.trace.selection import select_groups

from tests.run.parallel_helpers import run_parallel, run_parallel_claims
from tests.trace.bruteforce import load_model, read_rollouts, reference, settings, token_gradients
from tests.trace.numeric_helpers import SMALL, assert_scores_close, run

SAME = 1e-12  # same per-module numbers; only the sum over modules is added in another order
REL = 1e-6  # against the brute force, as in test_exactness.py

CASES = {
    "all_selected": {"factor": 4, "scope": "all_selected", "contrastive_agg": "mean",
                     "exclude_self_response": True, "debug_hessian_similarity": True},
    "per_prompt": {"factor": 4, "scope": "per_prompt", "contrastive_agg": "sum",
                   "hessian_source": "response"},
    "identity": {"factor": 3, "scope": "per_prompt", "hessian_mode": "identity",
                 "contrastive_agg": "advantage"},
    "two_responses": {"factor": 4, "scope": "all_selected"},  # fewer responses than ranks: an empty share
}


@pytest.fixture(scope="module")
def responses(tmp_path_factory: pytest.TempPathFactory):
    return read_rollouts(make_rollouts(tmp_path_factory.mktemp("rollouts") / "r.jsonl", seed=3))


@pytest.fixture(scope="module")
def cases(responses):
    group = [r for r in responses if r.prompt_id == responses[0].prompt_id]
    pair = [next(r for r in group if r.reward == max(x.reward for x in group)),
            next(r for r in group if r.reward == min(x.reward for x in group))]
    return [(settings(**fields), pair if name == "two_responses" else responses)
            for name, fields in CASES.items()]


@pytest.fixture(scope="module")
def single(tiny_model_dir: Path, cases):
    torch.set_num_threads(1)
    model = load_model(tiny_model_dir)
    return model, [run(model, select_groups(rs, trace), trace) for trace, rs in cases]


@pytest.mark.parametrize("nproc", [1, 2, 3])
def test_scores_do_not_depend_on_the_process_count(nproc, tiny_model_dir: Path, cases, single,
                                                   tmp_path: Path) -> None:
    model, expected = single
    got = run_parallel(nproc, tiny_model_dir, cases, tmp_path / "results.pkl")
    for (trace, rs), result, want in zip(cases, got, expected, strict=True):
        assert_scores_close(result.scores, want.scores, SAME)
        assert result.accepted == want.accepted and result.scopes == want.scopes
        assert [m.name for m in result.modules] == [m.name for m in want.modules]
        for a, b in zip(result.modules, want.modules, strict=True):
            np.testing.assert_allclose(a.damping, b.damping, rtol=SAME)
        assert result.diagnostics.keys() == want.diagnostics.keys()
        for key, value in want.diagnostics.items():
            assert result.diagnostics[key] == pytest.approx(value, rel=SAME)
        if trace.hessian_mode == "inverse" and len(rs) > 2:  # and the independent brute force
            selection = select_groups(rs, trace)
            ref = reference(token_gradients(model, selection, trace), selection, trace)
            assert_scores_close(result.scores, ref.scores, REL)


def test_the_overlapped_exchange_gives_the_scores_of_the_waiting_one(tiny_model_dir: Path, cases,
                                                                    tmp_path: Path) -> None:
    """Two gloo processes, float64: each round posted beside the module before it's Hessian work, or
    after it, gives bit-identical scores (the same rows reach the same per-module code)."""
    trace, rs = cases[0]  # all_selected with HINV_DOT: three modules' rounds, two owners
    runs = [(trace, rs), (trace, rs)]
    options = [replace(SMALL, exchange_overlap=False), replace(SMALL, exchange_overlap=True)]
    (waiting, ahead), claims = run_parallel_claims(2, tiny_model_dir, runs, tmp_path / "r.pkl", options)
    assert "exchange_ahead" not in claims[0] and "exchange_ahead" in claims[1]
    assert waiting.scores.keys() == ahead.scores.keys()
    for key, scores in waiting.scores.items():
        np.testing.assert_array_equal(ahead.scores[key], scores)
    assert [m.damping for m in ahead.modules] == [m.damping for m in waiting.modules]
    assert ahead.diagnostics.keys() == waiting.diagnostics.keys()
    for key, value in waiting.diagnostics.items():
        np.testing.assert_equal(ahead.diagnostics[key], value)


def test_capture_shares_are_contiguous_and_balanced_by_tokens() -> None:
    weights = [10, 10, 10, 10, 40, 10, 10]
    shares = contiguous_shares(weights, [w // 2 for w in weights], 3)
    assert [(s.first, s.last) for s in shares] == [(0, 4), (4, 5), (5, 7)]
    assert [(s.row_first, s.row_last) for s in shares] == [(0, 20), (20, 40), (40, 50)]
    assert shares[-1].last == len(weights) and shares[0].first == 0
    empty = contiguous_shares([5, 5], [5, 5], 3)  # more ranks than responses: someone gets nothing
    assert sum(s.last - s.first for s in empty) == 2 and min(s.rows for s in empty) == 0
    assert [(s.first, s.last) for s in contiguous_shares([1] * 9, [1] * 9, 3)] == [(0, 3), (3, 6), (6, 9)]


def test_modules_are_assigned_by_cost_deterministically() -> None:
    trace = settings(factor=4)
    # Qwen2.5-1.5B at factor 32: q/o 2304, k/v 384, gate/up/down 13440 (one layer), 700k tokens.
    dims = [2304, 384, 384, 2304, 13440, 13440, 13440]
    costs = [module_cost(d, 700_000, 96, trace) for d in dims]
    owned = assign_modules(costs, 3)
    assert sorted(m for mods in owned for m in mods) == list(range(7))
    loads = [sum(costs[m] for m in mods) for mods in owned]
    assert max(loads) / min(loads) < 1.2  # each rank has one big MLP module
    assert owned == assign_modules(costs, 3) and all(mods == sorted(mods) for mods in owned)
    assert owner_of(owned)[4] != owner_of(owned)[5]
    assert assign_modules(costs, 1) == [list(range(7))]
    assert module_cost(10, 100, 5, settings(hessian_mode="identity")) == 1000.0
    by_response = module_cost(10, 100, 5, settings(hessian_source="response"))
    assert by_response == pytest.approx(100 * 5 + 1000 / 3 + 1000)
