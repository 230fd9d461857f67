"""The contrast matrix C against the ALGORITHM.md formulas written out as explicit loops."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from influence_trace.spec import TraceSettings
from influence_trace.worker.scoring import contrast_matrix
from pydantic.alias_generators import to_camel


def settings(**fields: object) -> TraceSettings:
    """TraceSettings from snake_case keywords (the model only accepts the camelCase wire names)."""
    return TraceSettings.model_validate({to_camel(k): v for k, v in fields.items()})


def explicit_score(o: int, infl: np.ndarray, acc: np.ndarray, adv: np.ndarray, t: TraceSettings) -> float:
    """Score of a token of response o whose influences from each response r are infl[r]."""
    acc_ids = [r for r in range(len(acc)) if acc[r]]
    rej_ids = [r for r in range(len(acc)) if not acc[r]]
    sum_acc = sum(infl[r] for r in acc_ids)
    sum_rej = sum(infl[r] for r in rej_ids)
    n_acc, n_rej = len(acc_ids), len(rej_ids)
    if t.contrastive_agg == "sum":
        full = sum_acc - sum_rej
        excl = full - (1.0 if acc[o] else -1.0) * infl[o]
    elif t.contrastive_agg == "advantage":
        full = sum(adv[r] * infl[r] for r in range(len(acc)))
        excl = full - adv[o] * infl[o]
    else:
        full = sum_acc / n_acc - sum_rej / n_rej
        if acc[o]:
            excl = (sum_acc - infl[o]) / max(n_acc - 1, 1) - sum_rej / n_rej
        else:
            excl = sum_acc / n_acc - (sum_rej - infl[o]) / max(n_rej - 1, 1)
    if not t.exclude_self_response:
        return full
    a = t.self_influence_scale
    return (1 - a) * excl + a * full


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
