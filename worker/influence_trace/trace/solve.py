"""Damping, Cholesky with retries, and the solves for the scope's response gradients.

The damped Hessian is factored once per module and scope. If the factorization fails (H is
numerically indefinite, e.g. rank-deficient with a tiny regLambda), the damping is multiplied by ten
and the factorization retried, up to ``maxDampingRetries`` times; the retries and the final damping
are reported. A Hessian that still cannot be factored is an error, never NaN scores.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from influence_trace.api.contract import WorkerFailure
from influence_trace.trace.ledger import MemoryLedger

STAGE = "hessian_solve"


@dataclass
class Factorization:
    """The Cholesky factor of H + damping * I, and how many retries it took."""

    chol: torch.Tensor
    damping: float
    retries: int


def initial_damping(hessian: torch.Tensor, reg_lambda: float) -> float:
    """regLambda when positive, else 0.1 * trace(H) / D."""
    if reg_lambda > 0:
        return float(reg_lambda)
    return 0.1 * float(torch.trace(hessian)) / hessian.shape[0]


def damped_cholesky(
    hessian: torch.Tensor, reg_lambda: float, max_retries: int, ledger: MemoryLedger, where: str
) -> Factorization:
    """Factor H + lambda I, retrying with lambda * 10; ``hessian`` is consumed (its diagonal changes).

    ``where`` names the module and scope for error messages.
    """
    # H = sum g g^T: a NaN or overflow shows on the diagonal (|H_ij| <= sqrt(H_ii H_jj)), and checking
    # only the diagonal avoids a D x D temporary the memory model does not plan for.
    if not bool(torch.isfinite(hessian.diagonal()).all()):
        raise WorkerFailure(
            f"{where}: the Hessian has non-finite entries (the captured gradients overflowed or are NaN); "
            "try model.dtype float32 or captureDtype float32",
            stage=STAGE,
        )
    damping = initial_damping(hessian, reg_lambda)
    if damping <= 0:
        raise WorkerFailure(
            f"{where}: the Hessian is zero (the module gets no gradient from these responses), so the "
            "automatic damping 0.1 * trace(H) / D is zero; set trace.regLambda > 0 or drop the module",
            stage=STAGE,
        )
    diagonal = hessian.diagonal().clone()
    dim = hessian.shape[0]
    ledger.allocate("cholesky", dim * dim * hessian.element_size(), STAGE)
    for attempt in range(max_retries + 1):
        hessian.diagonal().copy_(diagonal + damping)
        chol, info = torch.linalg.cholesky_ex(hessian)
        if int(info) == 0:
            return Factorization(chol, damping, attempt)
        del chol
        if attempt < max_retries:
            damping *= 10.0
    raise WorkerFailure(
        f"{where}: Cholesky of H + lambda I failed even with lambda = {damping:.3g} after {max_retries} "
        "retries (each ten times the damping); raise trace.regLambda or trace.maxDampingRetries, or use "
        "hessianDtype float64",
        stage=STAGE,
    )


def solve_in_place(fact: Factorization, grads: torch.Tensor, similarity: torch.Tensor | None = None) -> None:
    """Overwrite the scope's response gradients G (R x D) with W^T: row r becomes ``w_r = H~^-1 g_r``.

    Two triangular solves on the Cholesky factor as it is, each written over G's own storage: ``G.T``
    (D x R) is F-contiguous, the layout LAPACK/cuBLAS solve in, so ``solve_triangular(..., out=G.T)``
    with ``G.T`` also the right-hand side neither copies the right-hand side nor allocates a second
    R x D (bench/inplace_solve.py measures it). ``torch.cholesky_solve`` would also clone the D x D
    factor into a column-major working copy (17.6 GB at D = 66,304 in float32).

    ``similarity`` (R x R, HINV_DOT): ``G H~^-1 G^T = Y^T Y`` for the half-solved ``Y = L^-1 G^T``
    is added to it between the two solves, so the diagnostic needs no copy of G either.
    """
    cols = grads.T  # D x R, F-contiguous; the same object is passed as right-hand side and out
    torch.linalg.solve_triangular(fact.chol, cols, upper=False, out=cols)  # L Y = G^T
    if similarity is not None:
        similarity.add_(grads @ grads.T)  # rows of grads now hold Y^T
    torch.linalg.solve_triangular(fact.chol.mT, cols, upper=True, out=cols)  # L^T W = Y
