"""Quality metrics of a finished trace: do the token scores separate accepted from rejected responses?

A trace is only useful if its scores say something about the reward, so every run ends with a few
numbers that answer that at a glance (and that ``compare`` puts side by side across runs):

- ``auc``: response-level ROC AUC of the mean token score, accepted (positive class) against rejected.
  Computed as the Mann-Whitney statistic: the share of (accepted, rejected) pairs where the accepted
  response's mean score is higher, ties counting one half. ``None`` when either class is empty.
- ``sign_consistency``: over prompt groups that have at least one accepted and one rejected response,
  the share where the mean of the accepted responses' mean scores exceeds that of the rejected ones
  (ties count as failures). ``None`` when no group has both.
- ``snr_mean`` / ``snr_median``: per response, ``|mean| / std`` of its finite token scores (population
  standard deviation). The absolute value makes accepted responses (scores mostly positive) and rejected
  ones (mostly negative) comparable, so averaging over responses does not cancel them out. Responses
  with fewer than two finite scores or zero spread have no SNR and are left out. ``None`` when no
  response has one.
- ``unscored_token_share``: non-finite scores (NaN/inf: tokens the worker could not score) over all
  response tokens. ``None`` when there are no tokens at all.

A response's "mean score" ignores non-finite token scores; a response with none finite takes no part
in the AUC or the sign consistency. Pure numpy, so the pipeline, the report and tests can all use it.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

METRIC_KEYS = ("auc", "sign_consistency", "snr_mean", "snr_median", "unscored_token_share")


def response_means(scores: Sequence[np.ndarray]) -> np.ndarray:
    """Mean of each response's finite token scores; NaN where a response has none."""
    out = np.full(len(scores), np.nan)
    for i, s in enumerate(scores):
        finite = _finite(s)
        if finite.size:
            out[i] = finite.mean()
    return out


def auc(positive: np.ndarray, negative: np.ndarray) -> float | None:
    """Mann-Whitney AUC: P(pos > neg) + 0.5 P(pos == neg); rank-based so it is O(n log n)."""
    pos, neg = np.asarray(positive, float), np.asarray(negative, float)
    if pos.size == 0 or neg.size == 0:
        return None
    ranks = _average_ranks(np.concatenate([pos, neg]))
    u = ranks[: pos.size].sum() - pos.size * (pos.size + 1) / 2.0
    return float(u / (pos.size * neg.size))


def sign_consistency(prompt_ids: Sequence[str], accepted: np.ndarray, means: np.ndarray) -> float | None:
    """Share of groups (with both classes) where the accepted mean beats the rejected mean."""
    wins, groups = 0, 0
    pids = np.asarray(prompt_ids, dtype=object)
    for pid in dict.fromkeys(pids.tolist()):
        in_group = (pids == pid) & np.isfinite(means)
        acc, rej = means[in_group & accepted], means[in_group & ~accepted]
        if acc.size and rej.size:
            groups += 1
            wins += int(acc.mean() > rej.mean())
    return wins / groups if groups else None


def response_snr(scores: Sequence[np.ndarray]) -> np.ndarray:
    """Per response ``|mean| / std`` of finite token scores; NaN where undefined (see module doc)."""
    out = np.full(len(scores), np.nan)
    for i, s in enumerate(scores):
        finite = _finite(s)
        if finite.size >= 2:
            std = finite.std()
            if std > 0:
                out[i] = abs(finite.mean()) / std
    return out


def unscored_token_share(scores: Sequence[np.ndarray]) -> float | None:
    """Non-finite token scores over all tokens."""
    total = sum(np.asarray(s).size for s in scores)
    if total == 0:
        return None
    bad = sum(int((~np.isfinite(np.asarray(s, float))).sum()) for s in scores)
    return bad / total


def quality_metrics(
    prompt_ids: Sequence[str], accepted: Sequence[bool], scores: Sequence[np.ndarray]
) -> dict[str, float | None]:
    """All metrics for one run, keyed as in ``METRIC_KEYS`` (the keys of summary.json's ``metrics``)."""
    if not len(prompt_ids) == len(accepted) == len(scores):
        raise ValueError(
            f"quality_metrics: {len(prompt_ids)} prompt ids, {len(accepted)} accepted flags and "
            f"{len(scores)} score arrays; pass one of each per response"
        )
    acc = np.asarray(accepted, dtype=bool)
    means = response_means(scores)
    has_mean = np.isfinite(means)
    snr = response_snr(scores)
    snr = snr[np.isfinite(snr)]
    return {
        "auc": auc(means[has_mean & acc], means[has_mean & ~acc]),
        "sign_consistency": sign_consistency(prompt_ids, acc, means),
        "snr_mean": float(snr.mean()) if snr.size else None,
        "snr_median": float(np.median(snr)) if snr.size else None,
        "unscored_token_share": unscored_token_share(scores),
    }


def _finite(s: np.ndarray) -> np.ndarray:
    a = np.asarray(s, dtype=float).ravel()
    return a[np.isfinite(a)]


def _average_ranks(values: np.ndarray) -> np.ndarray:
    """1-based ranks, ties sharing their average rank (what Mann-Whitney needs for ties = 0.5)."""
    order = np.argsort(values, kind="mergesort")
    sorted_vals = values[order]
    starts = np.r_[0, np.flatnonzero(np.diff(sorted_vals)) + 1]
    ends = np.r_[starts[1:], values.size]
    avg = (starts + ends + 1) / 2.0  # mean of ranks starts+1 .. ends
    ranks = np.empty(values.size)
    ranks[order] = np.repeat(avg, ends - starts)
    return ranks
