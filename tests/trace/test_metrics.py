"""Quality metrics on hand-made score sets whose answers are worked out by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest
from influence_trace.trace.metrics import METRIC_KEYS, auc, quality_metrics


def arr(*xs: float) -> np.ndarray:
    return np.array(xs, dtype=np.float32)


def test_perfect_separation() -> None:
    scores = [arr(1, 3), arr(-1), arr(2), arr(0, 0)]
    m = quality_metrics(["p", "p", "q", "q"], [True, False, True, False], scores)
    assert m["auc"] == 1.0
    assert m["sign_consistency"] == 1.0
    assert m["unscored_token_share"] == 0.0
    assert set(m) == set(METRIC_KEYS)


def test_auc_counts_ties_as_half() -> None:
    # accepted means 1, 2; rejected means 2, 0 -> pairs (1>2 no, 1>0 yes, 2=2 half, 2>0 yes) = 2.5/4
    assert auc(np.array([1.0, 2.0]), np.array([2.0, 0.0])) == pytest.approx(0.625)
    assert auc(np.array([1.0]), np.array([1.0])) == 0.5
    assert auc(np.array([0.0, 0.0]), np.array([1.0])) == 0.0


def test_auc_matches_brute_force() -> None:
    rng = np.random.default_rng(0)
    pos, neg = rng.integers(0, 5, 30).astype(float), rng.integers(0, 5, 20).astype(float)
    brute = np.mean([(p > n) + 0.5 * (p == n) for p in pos for n in neg])
    assert auc(pos, neg) == pytest.approx(brute)


def test_one_class_empty_gives_none() -> None:
    m = quality_metrics(["p", "p"], [True, True], [arr(1, 2), arr(3, 5)])
    assert m["auc"] is None
    assert m["sign_consistency"] is None


def test_sign_consistency_only_counts_groups_with_both_classes() -> None:
    prompts = ["a", "a", "a", "b", "b", "c", "c"]
    accepted = [True, True, False, True, False, True, True]
    # a: accepted means (1, -3) -> -1 vs rejected 0 -> loss; b: 2 vs 1 -> win; c: no rejected -> skipped
    scores = [arr(1), arr(-3), arr(0), arr(2), arr(1), arr(5), arr(5)]
    assert quality_metrics(prompts, accepted, scores)["sign_consistency"] == 0.5


def test_sign_consistency_tie_is_not_a_win() -> None:
    m = quality_metrics(["a", "a"], [True, False], [arr(1), arr(1)])
    assert m["sign_consistency"] == 0.0
    assert m["auc"] == 0.5


def test_snr_is_abs_mean_over_population_std() -> None:
    # (1, 3): mean 2, std 1 -> 2;  (-2, -4, -6): |mean| 4, std sqrt(8/3) -> 4/1.633 = 2.449
    # (5,): one token -> no SNR;  (7, 7): zero spread -> no SNR
    scores = [arr(1, 3), arr(-2, -4, -6), arr(5), arr(7, 7)]
    m = quality_metrics(["a", "a", "b", "b"], [True, False, True, False], scores)
    third = 4 / math.sqrt(8 / 3)
    assert m["snr_mean"] == pytest.approx((2 + third) / 2)
    assert m["snr_median"] == pytest.approx((2 + third) / 2)


def test_unscored_tokens_are_counted_and_ignored_in_means() -> None:
    nan, inf = float("nan"), float("inf")
    scores = [arr(1, nan, 3), arr(nan, nan), arr(-1, inf)]
    m = quality_metrics(["a", "a", "a"], [True, True, False], scores)
    assert m["unscored_token_share"] == pytest.approx(4 / 7)
    # the all-NaN response drops out; accepted mean 2 vs rejected -1
    assert m["auc"] == 1.0
    assert m["sign_consistency"] == 1.0
    assert m["snr_mean"] == pytest.approx(2.0)  # only (1, 3) has two finite scores


def test_no_tokens_and_mismatched_lengths() -> None:
    m = quality_metrics([], [], [])
    assert all(m[k] is None for k in METRIC_KEYS)
    with pytest.raises(ValueError, match="one of each per response"):
        quality_metrics(["a"], [True, False], [arr(1)])
