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


def solve_responses(fact: Factorization, grads: torch.Tensor, ledger: MemoryLedger) -> torch.Tensor:
    """W = H~^-1 G^T (D x R) for the scope's response gradients G (R x D).

    Two triangular solves, the second in place, instead of ``torch.cholesky_solve``: that one clones
    the D x D factor into a column-major working copy (another Hessian's worth of memory, e.g. 17.6 GB
    at D = 66,304 in float32), while ``solve_triangular`` uses L as it is (C- or F-contiguous).
    """
    dim, count = grads.shape[1], grads.shape[0]
    ledger.allocate("solutions", dim * count * grads.element_size(), STAGE)
    half = torch.linalg.solve_triangular(fact.chol, grads.T, upper=False)  # L Y = G^T
    return torch.linalg.solve_triangular(fact.chol.mT, half, upper=True, out=half)  # L^T W = Y
