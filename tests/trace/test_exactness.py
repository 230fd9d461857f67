"""The worker's scores against the independent float64 brute force (tests/trace/bruteforce.py)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from influence_trace.demo.rollouts import make_rollouts
from influence_trace.planning import hessian_plan
from influence_trace.trace.diagnostics import summarize_hinv_dot
from influence_trace.trace.selection import select_groups

from tests.trace.bruteforce import read_rollouts, reference, settings, token_gradients
from tests.trace.numeric_helpers import assert_scores_close, run

REL = 1e-6
pytestmark = pytest.mark.usefixtures("kernels")  # every test with each kernel strategy
BUILDS = {"gram": 1, "dense": 10**9}  # MIN_GRAM_SIDE forcing every module onto one token-Hessian path


@pytest.fixture(params=list(BUILDS))
def build(request, monkeypatch) -> str:
    """Run the test with every token Hessian built by the symmetric Gram path, then by the dense one."""
    monkeypatch.setattr(hessian_plan, "MIN_GRAM_SIDE", BUILDS[request.param])
    return request.param


@pytest.fixture(scope="module")
def responses(tmp_path_factory: pytest.TempPathFactory):
    return read_rollouts(make_rollouts(tmp_path_factory.mktemp("rollouts") / "r.jsonl", seed=3))


@pytest.fixture(scope="module")
def check(model, responses):
    """check(**trace fields): run the worker and the brute force; return (result, reference)."""
    cache: dict = {}

    def _check(unprojected: bool = False, **fields):
        trace = settings(**fields)
        selection = select_groups(responses, trace)
        key = (trace.factor, trace.max_hessian_dim, trace.output_function, trace.loss_aggregation,
               trace.seed, tuple(trace.modules), trace.contrastive_agg == "advantage", unprojected)
        if key not in cache:
            cache[key] = token_gradients(model, selection, trace, unprojected)
        result = run(model, selection, trace)
        ref = reference(cache[key], selection, trace)
        assert_scores_close(result.scores, ref.scores, REL)
        return result, ref

    return _check


GRID = list(itertools.product(["sum", "mean", "advantage"], ["per_prompt", "all_selected"],
                              [False, True], ["token", "response"]))


@pytest.mark.parametrize(("agg", "scope", "exclude", "source"), GRID)
def test_every_aggregation_scope_exclusion_and_source(check, build, agg, scope, exclude, source) -> None:
    result, ref = check(factor=4, contrastive_agg=agg, scope=scope, exclude_self_response=exclude,
                        hessian_source=source)
    for report in result.modules:
        np.testing.assert_allclose(report.damping, ref.damping[report.name], rtol=1e-10)
        assert report.retries == 0


@pytest.mark.parametrize("agg", ["sum", "mean", "advantage"])
def test_self_influence_scale(check, agg) -> None:
    check(factor=4, contrastive_agg=agg, exclude_self_response=True, self_influence_scale=0.4)


@pytest.mark.parametrize(
    "fields",
    [
        {"output_function": "log_prob_advantage", "contrastive_agg": "sum"},
        {"loss_aggregation": "sum"},
        {"max_hessian_dim": 20},
        {"hessian_mode": "identity", "scope": "all_selected"},
        {"hessian_mode": "identity", "contrastive_agg": "advantage"},
        {"reg_lambda": 0.05, "hessian_source": "response"},
        {"seed": 7, "factor": 3},
    ],
    ids=["log_prob_advantage", "sum_aggregation", "max_hessian_dim", "identity_all", "identity_adv",
         "reg_lambda", "factor3_seed7"],
)
def test_variants(check, fields) -> None:
    check(**{"factor": 4, **fields})


def test_max_hessian_dim_caps_every_module(check) -> None:
    result, _ = check(factor=4, max_hessian_dim=20)
    assert all(m.dim <= 20 for m in result.modules)


def test_factor_one_is_exact(check, build) -> None:
    result, _ = check(unprojected=True, factor=1, modules=["self_attn.k_proj", "self_attn.o_proj"])
    assert all((m.k_in, m.k_out) == (m.in_features, m.out_features) for m in result.modules)


@pytest.mark.parametrize(("scope", "source"), [("per_prompt", "token"), ("all_selected", "token"),
                                             ("all_selected", "response")])
def test_hinv_dot_matches_brute_force(check, build, responses, scope, source) -> None:
    result, ref = check(factor=4, scope=scope, hessian_source=source, debug_hessian_similarity=True)
    want = summarize_hinv_dot(ref.hinv_dot, select_groups(responses, settings()))
    assert result.diagnostics.keys() == want.keys()
    for key, value in want.items():
        scale = abs(want["hinv_dot_self_mean"])
        assert result.diagnostics[key] == pytest.approx(value, rel=REL, abs=REL * scale)
