"""Kernel launches and chunk memory traffic of a module's Hessian-stage work, per kernel strategy.

Torch-free, for ``planning/duration.py``: on a GPU each launch costs host time (``LAUNCH_SECONDS``)
whatever its size, and the GPU strategy's token chunks read and write every token's D-wide row a few
times. The counts follow the worker's code (trace/hessian.py, hessian_gpu.py, scoring.py,
scoring_gpu.py, solve.py); ``tests/planning/test_launch_plan.py`` checks them against the launches
counted on the CPU (trace/launches.py) within 15%.
"""

from __future__ import annotations

from dataclasses import dataclass

from influence_trace.planning.hessian_plan import (
    gpu_gram_chunk_tokens,
    gram_chunk_tokens,
    token_chunk_tokens,
    uses_symmetric_gram,
)

LAUNCH_SECONDS = 6e-6  # host time per kernel launch through PyTorch (5-10 us measured on H100 hosts)
FIXED = 13  # per module and scope: finiteness check, damping, Cholesky, solves (counted)


@dataclass(frozen=True)
class ScopeWork:
    """One scope of one module: its tokens and responses, and how the worker runs it."""

    k_out: int
    k_in: int
    tokens: int
    responses: int
    itemsize: int
    chunk_bytes: int
    kernels: str  # "gpu" or "cpu"
    source: str = "token"  # hessianSource
    inverse: bool = True  # hessianMode inverse


def _chunks(tokens: int, per_chunk: int) -> int:
    return -(-tokens // per_chunk) if tokens else 0


def _dense_chunks(w: ScopeWork) -> int:
    dim = w.k_out * w.k_in
    return _chunks(w.tokens, max(1, min(w.tokens, w.chunk_bytes // (dim * w.itemsize))))


def _build(w: ScopeWork) -> int:
    """Launches of the token Hessian build (and expansion)."""
    if not uses_symmetric_gram(w.k_out, w.k_in):
        return 2 * _dense_chunks(w) + 2
    if w.kernels == "gpu":
        c = gpu_gram_chunk_tokens(w.tokens, w.k_out, w.k_in, w.itemsize, w.chunk_bytes)
        return 4 * _chunks(w.tokens, c) + 20  # cat, two multiplies, addmm; the column tables, one gather
    c = gram_chunk_tokens(w.tokens, w.k_out, w.k_in, w.itemsize, w.chunk_bytes)
    return (w.k_out + w.k_in + 3) * _chunks(w.tokens, c) + 4 * w.k_out  # a multiply per pair row; bands


def _gradients(w: ScopeWork) -> int:
    """Launches of forming the scope's response gradients once."""
    if w.kernels == "gpu":
        c = token_chunk_tokens(w.tokens, w.k_out * w.k_in, w.itemsize, w.chunk_bytes)
        return 3 * _chunks(w.tokens, c)
    return w.responses + 1  # one matmul per response


def _scoring(w: ScopeWork) -> int:
    if w.kernels == "gpu":
        c = token_chunk_tokens(w.tokens, w.k_out * w.k_in, w.itemsize, w.chunk_bytes)
        return 4 * _chunks(w.tokens, c) + 8
    return 7 * w.responses + 2  # direction, matmul, multiply, sum, cast, add and its copy per response


def scope_launches(w: ScopeWork) -> dict[str, int]:
    """Launches per stage ("hessian_solve", "token_scoring") of one scope of one module."""
    grads = _gradients(w)
    if not w.inverse:
        return {"grad_staging": grads, "hessian_solve": 0, "token_scoring": _scoring(w)}
    build = _build(w) if w.source == "token" else grads + 1
    return {"grad_staging": 0, "hessian_solve": build + grads + FIXED, "token_scoring": _scoring(w)}


def scope_traffic_bytes(w: ScopeWork) -> int:
    """Bytes the GPU strategy's token chunks move: the g_t rows written and read by the segment sums
    (twice for hessianSource response), and each token's gathered direction row written and read."""
    if w.kernels != "gpu":
        return 0
    row = w.tokens * w.k_out * w.k_in * w.itemsize
    return (2 * (2 if w.source == "response" and w.inverse else 1) + 2) * row
