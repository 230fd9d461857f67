"""HINV_DOT (debugHessianSimilarity): g_r^T H~^-1 g_r' over all selected responses, across prompts.

One global damped Hessian per module over every selected token (or response, per hessianSource),
summed over modules like the scores. The summary compares pairs within a prompt with pairs across
prompts, and accepted/rejected pairings, both raw and as cosines in the H~^-1 metric.
"""

from __future__ import annotations

import numpy as np

from influence_trace.trace.selection import Selection


def _mean(values: np.ndarray, mask: np.ndarray) -> float | None:
    return float(values[mask].mean()) if mask.any() else None


def summarize_hinv_dot(matrix: np.ndarray, selection: Selection) -> dict[str, float]:
    """Means of the R x R matrix over pair classes; classes without pairs are left out."""
    prompt = np.array([g.prompt_id for g in selection.groups for _ in g.responses])
    acc = np.concatenate([g.accepted for g in selection.groups]).astype(bool)
    n = len(prompt)
    off_diag: np.ndarray = ~np.eye(n, dtype=bool)
    same = (prompt[:, None] == prompt[None, :]) & off_diag
    cross = prompt[:, None] != prompt[None, :]
    diag = np.clip(np.diag(matrix), 1e-300, None)
    cosine = matrix / np.sqrt(diag[:, None] * diag[None, :])
    acc_acc = acc[:, None] & acc[None, :]
    rej_rej = ~acc[:, None] & ~acc[None, :]
    acc_rej = acc[:, None] != acc[None, :]
    classes = {
        "within_prompt": same,
        "cross_prompt": cross,
        "within_acc_acc": same & acc_acc,
        "within_acc_rej": same & acc_rej,
        "within_rej_rej": same & rej_rej,
        "cross_acc_acc": cross & acc_acc,
        "cross_acc_rej": cross & acc_rej,
    }
    summary: dict[str, float] = {
        "hinv_dot_self_mean": float(np.diag(matrix).mean()),
        "hinv_dot_responses": float(n),
    }
    for label, mask in classes.items():
        for prefix, values in (("hinv_dot", matrix), ("hinv_cos", cosine)):
            mean = _mean(values, mask)
            if mean is not None:
                summary[f"{prefix}_{label}_mean"] = mean
    return summary
