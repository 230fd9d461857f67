"""Contrast coefficients and bilinear token scoring.

Every contrastive aggregation of ALGORITHM.md is linear in ``infl(r, t)``: the score of token t of
response o is ``sum_r C[o, r] infl(r, t)`` for an R x R matrix C of the scope (row o holds the
leave-one-out self term and the selfInfluenceScale blend). With ``w_r = H~^-1 g_r`` that is
``m_o^T g_t`` for ``m_o = sum_r C[o, r] w_r``, and reshaped to ``M_o`` (k_out x k_in) it is
``u_t^T M_o v_t``: one R x R by R x D product per scope and module, then k_out * k_in work per token.
"""

from __future__ import annotations

import numpy as np
import torch

from influence_trace.api.spec import TraceSettings


def _full_and_excluded(
    accepted: np.ndarray, advantages: np.ndarray, agg: str
) -> tuple[np.ndarray, np.ndarray]:
    """(C_full, C_excluded): the coefficients without and with the token's own response left out."""
    accepted = np.asarray(accepted, dtype=bool)
    n = len(accepted)
    sign = np.where(accepted, 1.0, -1.0)
    if agg == "sum":
        full = np.tile(sign, (n, 1))
        excl = full.copy()
        np.fill_diagonal(excl, 0.0)
        return full, excl
    if agg == "advantage":
        full = np.tile(np.asarray(advantages, dtype=np.float64), (n, 1))
        excl = full.copy()
        np.fill_diagonal(excl, 0.0)
        return full, excl
    if agg != "mean":
        raise ValueError(f"unknown contrastiveAgg {agg!r}")
    n_acc, n_rej = int(accepted.sum()), int((~accepted).sum())
    row = np.where(accepted, 1.0 / max(n_acc, 1), -1.0 / max(n_rej, 1))
    full = np.tile(row, (n, 1))
    # Leave-one-out: the own side's mean is over the others (at least one in the denominator).
    loo_acc = np.where(accepted, 1.0 / max(n_acc - 1, 1), -1.0 / max(n_rej, 1))
    loo_rej = np.where(accepted, 1.0 / max(n_acc, 1), -1.0 / max(n_rej - 1, 1))
    excl = np.where(accepted[:, None], loo_acc[None, :], loo_rej[None, :])
    np.fill_diagonal(excl, 0.0)
    return full, excl


def contrast_matrix(accepted: np.ndarray, advantages: np.ndarray, trace: TraceSettings) -> np.ndarray:
    """The scope's R x R coefficient matrix C (float64), rows and columns in scope order."""
    full, excl = _full_and_excluded(accepted, advantages, trace.contrastive_agg)
    if not trace.exclude_self_response:
        return full
    a = trace.self_influence_scale
    return (1.0 - a) * excl + a * full


def contrast_directions(coeffs: np.ndarray, solutions: torch.Tensor) -> torch.Tensor:
    """M = C @ W: row o is the direction token scores of response o are read along (R x D)."""
    c = torch.as_tensor(coeffs, dtype=solutions.dtype, device=solutions.device)
    return c @ solutions


def score_tokens(
    directions: torch.Tensor,
    u: torch.Tensor,
    v: torch.Tensor,
    token_offsets: list[int],
    out: torch.Tensor,
) -> None:
    """Add ``u_t^T M_o v_t`` to ``out`` (float64, the scope's tokens) for every token of each response o.

    ``u`` (T x k_out) and ``v`` (T x k_in) are the scope's factors; ``token_offsets`` has R + 1 entries.
    """
    k_out, k_in = u.shape[1], v.shape[1]
    mats = directions.reshape(-1, k_out, k_in)
    for o in range(len(token_offsets) - 1):
        a, b = token_offsets[o], token_offsets[o + 1]
        if b > a:
            out[a:b] += ((u[a:b] @ mats[o]) * v[a:b]).sum(-1).to(out.dtype)
