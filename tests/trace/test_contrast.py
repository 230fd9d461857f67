"""The contrast matrix C against the ALGORITHM.md formulas written out as explicit loops."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from influence_trace.trace.scoring import contrast_matrix

from tests.trace.bruteforce import explicit_score, settings

FLAGS = [
    np.array([True, False, True, False, False]),
    np.array([True, False]),  # one each: leave-one-out denominators hit max(n - 1, 1)
    np.array([False, True, True, True]),
]


@pytest.mark.parametrize(
    ("agg", "exclude", "scale", "flags"),
    [
        (agg, ex, sc, fl)
        for agg, (ex, sc), fl in itertools.product(
            ["sum", "mean", "advantage"], [(False, 0.0), (True, 0.0), (True, 0.3), (True, 1.0)], range(3)
        )
    ],
)
def test_contrast_matrix_matches_explicit_formulas(agg: str, exclude: bool, scale: float, flags: int) -> None:
    acc = FLAGS[flags]
    rng = np.random.default_rng(flags)
    adv = rng.normal(size=len(acc))
    trace = settings(contrastive_agg=agg, exclude_self_response=exclude, self_influence_scale=scale)
    c = contrast_matrix(acc, adv, trace)
    for _ in range(3):
        infl = rng.normal(size=len(acc))
        for o in range(len(acc)):
            expected = explicit_score(o, infl, acc, adv, trace)
            assert c[o] @ infl == pytest.approx(expected, rel=1e-12, abs=1e-12)


def test_exclusion_changes_the_scores() -> None:
    acc = FLAGS[0]
    on = contrast_matrix(acc, np.ones(5), settings(contrastive_agg="sum", exclude_self_response=True))
    off = contrast_matrix(acc, np.ones(5), settings(contrastive_agg="sum", exclude_self_response=False))
    assert not np.allclose(on, off) and np.all(np.diag(on) == 0.0)
