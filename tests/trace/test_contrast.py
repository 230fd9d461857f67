"""The structured contrast C against the docs/algorithm.md formulas written out as explicit loops, and
its directions against the dense product C @ W."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from influence_trace.trace.scoring import contrast, contrast_bases, direction

from tests.trace.bruteforce import explicit_score, settings

FLAGS = [
    np.array([True, False, True, False, False]),
    np.array([True, False]),  # one each: leave-one-out denominators hit max(n - 1, 1)
    np.array([False, True, True, True]),
]


GRID = [
    (agg, ex, sc, fl)
    for agg, (ex, sc), fl in itertools.product(
        ["sum", "mean", "advantage"], [(False, 0.0), (True, 0.0), (True, 0.3), (True, 1.0)], range(3)
    )
]


@pytest.mark.parametrize(("agg", "exclude", "scale", "flags"), GRID)
def test_contrast_matrix_matches_explicit_formulas(agg: str, exclude: bool, scale: float, flags: int) -> None:
    acc = FLAGS[flags]
    rng = np.random.default_rng(flags)
    adv = rng.normal(size=len(acc))
    trace = settings(contrastive_agg=agg, exclude_self_response=exclude, self_influence_scale=scale)
    c = contrast(acc, adv, trace).dense()
    for _ in range(3):
        infl = rng.normal(size=len(acc))
        for o in range(len(acc)):
            expected = explicit_score(o, infl, acc, adv, trace)
            assert c[o] @ infl == pytest.approx(expected, rel=1e-12, abs=1e-12)


def test_exclusion_changes_the_scores() -> None:
    acc = FLAGS[0]
    on = contrast(acc, np.ones(5), settings(contrastive_agg="sum", exclude_self_response=True)).dense()
    off = contrast(acc, np.ones(5), settings(contrastive_agg="sum", exclude_self_response=False)).dense()
    assert not np.allclose(on, off) and np.all(np.diag(on) == 0.0)


@pytest.mark.parametrize(("agg", "exclude", "scale", "flags"), GRID)
def test_structured_directions_equal_the_dense_product(agg: str, exclude: bool, scale: float,
                                                       flags: int) -> None:
    """Row o of C @ W (C dense, float64) is what the worker scores response o's tokens along."""
    acc = FLAGS[flags]
    rng = np.random.default_rng(10 + flags)
    adv = rng.normal(size=len(acc))
    trace = settings(contrastive_agg=agg, exclude_self_response=exclude, self_influence_scale=scale)
    c = contrast(acc, adv, trace)
    assert c.rows.shape[0] <= 2 and c.rows.shape[1] == len(acc)
    solutions = torch.as_tensor(rng.normal(size=(len(acc), 12)))
    want = torch.as_tensor(c.dense()) @ solutions
    bases, scratch = contrast_bases(c, solutions), torch.empty(12, dtype=torch.float64)
    for o in range(len(acc)):
        got = direction(c, bases, solutions, o, scratch)
        torch.testing.assert_close(got, want[o], rtol=1e-14, atol=1e-14)
