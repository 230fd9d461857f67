"""Contrast coefficients, in their structured form, and bilinear token scoring.

Every contrastive aggregation of docs/algorithm.md ("Scoring") is linear in ``infl(r, t)``: the score
of token t of response o is ``sum_r C[o, r] infl(r, t)`` for an R x R matrix C of the scope. With
``w_r = H~^-1 g_r`` that is ``m_o^T g_t`` for ``m_o = sum_r C[o, r] w_r``, and reshaped to ``M_o``
(k_out x k_in) it is ``u_t^T M_o v_t``.

C is never formed: every row of C is one of at most two distinct coefficient rows (one for
sum/advantage; for mean with leave-one-out, one for accepted and one for rejected responses) minus
a diagonal (the leave-one-out self term), ``C = rows[row_of] - diag(self_term)``. So
``M_o = (rows @ W)[row_of[o]] - self_term[o] w_o``: one K x R by R x D product per scope and module
(K <= 2) and D work per response, instead of R x R coefficients and an R^2 D product.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from influence_trace.api.spec import TraceSettings
from influence_trace.planning.hessian_plan import CHUNK_BYTES
from influence_trace.trace.kernels import strategy
from influence_trace.trace.ledger import MemoryLedger
from influence_trace.trace.scoring_gpu import gpu_score_tokens


@dataclass(frozen=True)
class Contrast:
    """A scope's contrast C = rows[row_of] - diag(self_term), rows and columns in scope order."""

    rows: np.ndarray  # K x R float64, K <= 2: the distinct coefficient rows
    row_of: np.ndarray  # R: which row response o's scores use
    self_term: np.ndarray  # R float64: subtracted from C[o, o] (the leave-one-out self term)

    def dense(self) -> np.ndarray:
        """The R x R matrix C (float64), for tests against the definitions."""
        c = self.rows[self.row_of]
        c[np.diag_indices(len(self.row_of))] -= self.self_term
        return c


def _full_and_excluded(
    accepted: np.ndarray, advantages: np.ndarray, agg: str
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(full row, excluded rows K x R, which excluded row each response uses).

    Without exclusion every response uses the full row; with it, response o uses its excluded row
    with its own entry zeroed (the diagonal of C_excluded is 0).
    """
    accepted = np.asarray(accepted, dtype=bool)
    if agg == "sum":
        full = np.where(accepted, 1.0, -1.0)
        return full, full[None, :], np.zeros(len(accepted), dtype=np.int64)
    if agg == "advantage":
        full = np.asarray(advantages, dtype=np.float64)
        return full, full[None, :], np.zeros(len(accepted), dtype=np.int64)
    if agg != "mean":
        raise ValueError(f"unknown contrastiveAgg {agg!r}")
    n_acc, n_rej = int(accepted.sum()), int((~accepted).sum())
    full = np.where(accepted, 1.0 / max(n_acc, 1), -1.0 / max(n_rej, 1))
    # Leave-one-out: the own side's mean is over the others (at least one in the denominator).
    loo_acc = np.where(accepted, 1.0 / max(n_acc - 1, 1), -1.0 / max(n_rej, 1))
    loo_rej = np.where(accepted, 1.0 / max(n_acc, 1), -1.0 / max(n_rej - 1, 1))
    return full, np.stack([loo_acc, loo_rej]), np.where(accepted, 0, 1)


def contrast(accepted: np.ndarray, advantages: np.ndarray, trace: TraceSettings) -> Contrast:
    """The scope's contrast: C_full, or (1 - a) C_excluded + a C_full with excludeSelfResponse."""
    full, excluded, row_of = _full_and_excluded(accepted, advantages, trace.contrastive_agg)
    n = len(full)
    if not trace.exclude_self_response:
        return Contrast(full[None, :], np.zeros(n, dtype=np.int64), np.zeros(n))
    a = trace.self_influence_scale
    own = excluded[row_of, np.arange(n)]  # C_excluded's diagonal before it is zeroed
    return Contrast((1.0 - a) * excluded + a * full[None, :], row_of, (1.0 - a) * own)


def contrast_bases(c: Contrast, solutions: torch.Tensor) -> torch.Tensor:
    """``rows @ W`` (K x D) for the solutions W (R x D, row r is w_r): the directions before self terms."""
    rows = torch.as_tensor(c.rows, dtype=solutions.dtype, device=solutions.device)
    return rows @ solutions


def direction(c: Contrast, bases: torch.Tensor, solutions: torch.Tensor, o: int,
              out: torch.Tensor) -> torch.Tensor:
    """``M_o = bases[row_of[o]] - self_term[o] w_o`` (D), row o of ``C @ W``; into ``out`` when needed."""
    base = bases[int(c.row_of[o])]
    own = float(c.self_term[o])
    if own == 0.0:
        return base
    return torch.add(base, solutions[o], alpha=-own, out=out)


def score_tokens(
    c: Contrast,
    solutions: torch.Tensor,
    u: torch.Tensor,
    v: torch.Tensor,
    token_offsets: list[int],
    out: torch.Tensor,
    chunk_bytes: int = CHUNK_BYTES["gpu"],
    ledger: MemoryLedger | None = None,
) -> None:
    """Add ``u_t^T M_o v_t`` to ``out`` (float64, the scope's tokens) for every token of each response o.

    ``solutions`` (R x D) holds the scope's w_r; ``u`` (T x k_out) and ``v`` (T x k_in) are the scope's
    factors; ``token_offsets`` has R + 1 entries. The CPU strategy (trace/kernels.py) forms each M_o
    only while its tokens are scored; the GPU strategy overwrites ``solutions`` with M and scores every
    token in chunks of ``chunk_bytes`` (trace/scoring_gpu.py).
    """
    if strategy(u.device) == "gpu":
        gpu_score_tokens(contrast_bases(c, solutions), c.row_of, c.self_term, solutions, u, v, token_offsets,
                         out, chunk_bytes, ledger or MemoryLedger())
        return
    k_out, k_in = u.shape[1], v.shape[1]
    bases = contrast_bases(c, solutions)
    scratch = torch.empty(k_out * k_in, dtype=solutions.dtype, device=solutions.device)
    for o in range(len(token_offsets) - 1):
        a, b = token_offsets[o], token_offsets[o + 1]
        if b > a:
            mat = direction(c, bases, solutions, o, scratch).view(k_out, k_in)
            out[a:b] += ((u[a:b] @ mat) * v[a:b]).sum(-1).to(out.dtype)
