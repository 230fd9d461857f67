"""Response gradients and per-module Hessians, built from the stored factors without T x D matrices.

This module is the CPU strategy (trace/kernels.py); the GPU strategy's builds, with a fixed number of
launches per token chunk, are in trace/hessian_gpu.py and are dispatched to from here.

``g_t = vec(u_t v_t^T)`` (row-major, D = k_out * k_in). A response's gradient is the sum over its
tokens, ``g_r = vec(U_r^T V_r)``, one small matmul per response. The token Hessian ``sum_t g_t g_t^T``
is built one of two ways, per module shape (planning/hessian_plan.py):

- symmetric Gram: per chunk of tokens the pair products ``P`` (u_ti u_tk, i <= k) and ``Q`` (v_tj v_tl,
  j <= l), one strided multiply per row of each side, and ``G += P^T Q``: T D^2 / 2 flops, a quarter of
  the dense build's; then H is expanded from G (``H[(i,j),(k,l)] = G[pair(i,k), pair(j,l)]``), memory
  traffic only;
- dense: chunks of c tokens formed on the fly (c x D), each a plain rank-c update ``H += chunk^T chunk``,
  where one side is too narrow for the pairs to pay off.
"""

from __future__ import annotations

import torch

from influence_trace.planning.hessian_plan import (
    CHUNK_BYTES,
    expansion_bytes,
    gram_bytes,
    gram_chunk_tokens,
    pair_buffer_bytes,
    pairs,
    uses_symmetric_gram,
)
from influence_trace.planning.memory_model import chunk_tokens
from influence_trace.trace.hessian_gpu import gpu_response_gradients, gpu_token_hessian
from influence_trace.trace.kernels import strategy
from influence_trace.trace.ledger import MemoryLedger

STAGE = "hessian_solve"


def response_gradients(u: torch.Tensor, v: torch.Tensor, token_offsets: list[int],
                       chunk_bytes: int = CHUNK_BYTES["gpu"], ledger: MemoryLedger | None = None,
                       stage: str = STAGE) -> torch.Tensor:
    """G (R x D): row r is ``vec(U_r^T V_r)``; a response without tokens has a zero row.

    CPU strategy: one small matmul per response. GPU strategy (trace/hessian_gpu.py): segment sums of
    token chunks of ``chunk_bytes``, declared to ``ledger`` under ``stage``.
    """
    if strategy(u.device) == "gpu":
        return gpu_response_gradients(u, v, token_offsets, chunk_bytes, ledger or MemoryLedger(), stage)
    k_out, k_in = u.shape[1], v.shape[1]
    grads = torch.zeros((len(token_offsets) - 1, k_out * k_in), dtype=u.dtype, device=u.device)
    for r in range(len(token_offsets) - 1):
        a, b = token_offsets[r], token_offsets[r + 1]
        if b > a:
            torch.mm(u[a:b].T, v[a:b], out=grads[r].view(k_out, k_in))
    return grads


def token_hessian(
    u: torch.Tensor, v: torch.Tensor, chunk_bytes: int, ledger: MemoryLedger
) -> torch.Tensor:
    """``H = sum_t g_t g_t^T`` over the rows of u, v (the scope's tokens), in their dtype."""
    if uses_symmetric_gram(u.shape[1], v.shape[1]) and strategy(u.device) == "gpu":
        return gpu_token_hessian(u, v, chunk_bytes, ledger)
    if uses_symmetric_gram(u.shape[1], v.shape[1]):
        return expand_gram(symmetric_gram(u, v, chunk_bytes, ledger), u.shape[1], v.shape[1], ledger)
    return dense_token_hessian(u, v, chunk_bytes, ledger)


def dense_token_hessian(
    u: torch.Tensor, v: torch.Tensor, chunk_bytes: int, ledger: MemoryLedger
) -> torch.Tensor:
    """H by rank-c updates from c x D chunks of g_t rows (2 T D^2 flops)."""
    tokens, k_out, k_in = u.shape[0], u.shape[1], v.shape[1]
    dim = k_out * k_in
    itemsize = u.element_size()
    c = chunk_tokens(tokens, dim, itemsize, chunk_bytes)
    ledger.allocate("hessian", dim * dim * itemsize, STAGE)
    hessian = torch.zeros((dim, dim), dtype=u.dtype, device=u.device)
    ledger.allocate("chunk", c * dim * itemsize, STAGE)
    chunk = torch.empty((c, dim), dtype=u.dtype, device=u.device)
    for a in range(0, tokens, c):
        n = min(c, tokens - a)
        block = chunk[:n]
        torch.mul(u[a : a + n, :, None], v[a : a + n, None, :], out=block.view(n, k_out, k_in))
        hessian.addmm_(block.T, block)
    del chunk
    ledger.free("chunk")
    return hessian


def pair_products(x: torch.Tensor, out: torch.Tensor) -> None:
    """Rows ``x_i * x_k`` for i <= k (row-major pair order) of x (k x n) into out (pairs(k) x n).

    One strided multiply per row i (``x_i`` against rows i..k-1): no gathers.
    """
    k, row = x.shape[0], 0
    for i in range(k):
        torch.mul(x[i : i + 1], x[i:], out=out[row : row + k - i])
        row += k - i


def pair_rows(k: int, device: torch.device) -> torch.Tensor:
    """k x k: the pair-order row of (min(i, j), max(i, j))."""
    i = torch.arange(k, device=device)
    lo, hi = torch.minimum(i[:, None], i[None, :]), torch.maximum(i[:, None], i[None, :])
    return lo * k - lo * (lo - 1) // 2 + (hi - lo)


def symmetric_gram(u: torch.Tensor, v: torch.Tensor, chunk_bytes: int, ledger: MemoryLedger) -> torch.Tensor:
    """``G = sum_t P_t^T Q_t`` (pairs(k_out) x pairs(k_in)), one GEMM per chunk of tokens.

    G is accumulated with its longer side as rows (G or G^T in memory; a G-shaped view is returned):
    the CPU's BLAS runs that layout at the plain GEMM's rate and the other at about two thirds of it
    (48 x 280: 34 against 22 GFLOP/s on one core, bench/hessian_rate.py).
    """
    tokens, k_out, k_in = u.shape[0], u.shape[1], v.shape[1]
    itemsize = u.element_size()
    c = gram_chunk_tokens(tokens, k_out, k_in, itemsize, chunk_bytes)
    ledger.allocate("gram", gram_bytes(k_out, k_in, itemsize), STAGE)
    ledger.allocate("pairs", pair_buffer_bytes(tokens, k_out, k_in, itemsize, chunk_bytes), STAGE)
    p = torch.empty((pairs(k_out), c), dtype=u.dtype, device=u.device)
    q = torch.empty((pairs(k_in), c), dtype=u.dtype, device=u.device)
    transposed = pairs(k_in) > pairs(k_out)
    rows, cols = (q, p) if transposed else (p, q)
    acc = torch.zeros((rows.shape[0], cols.shape[0]), dtype=u.dtype, device=u.device)
    for a in range(0, tokens, c):
        n = min(c, tokens - a)
        pair_products(u[a : a + n].T.contiguous(), p[:, :n])
        pair_products(v[a : a + n].T.contiguous(), q[:, :n])
        acc.addmm_(rows[:, :n], cols[:, :n].T)
    del p, q, rows, cols
    ledger.free("pairs")
    return acc.T if transposed else acc


def expand_gram(gram: torch.Tensor, k_out: int, k_in: int, ledger: MemoryLedger) -> torch.Tensor:
    """H (D x D) from G: block (i, k) of H (k_in x k_in) is row pair(i, k) of G expanded on the k_in side.

    Rows of G for the pairs (i, k >= i) are contiguous; expanded once, they fill both block row i and
    block column i (each block is symmetric, so block (k, i) equals block (i, k)).
    """
    dim, itemsize = k_out * k_in, gram.element_size()
    ledger.allocate("hessian", dim * dim * itemsize, STAGE)
    hessian = torch.empty((dim, dim), dtype=gram.dtype, device=gram.device)
    blocks = hessian.view(k_out, k_in, k_out, k_in)
    columns = pair_rows(k_in, gram.device).reshape(-1)
    ledger.allocate("expansion", expansion_bytes(k_out, k_in, itemsize), STAGE)
    row = 0
    for i in range(k_out):
        n = k_out - i
        band = gram[row : row + n].index_select(1, columns).view(n, k_in, k_in)
        blocks[i, :, i:, :].copy_(band.permute(1, 0, 2))
        blocks[i:, :, i, :].copy_(band)
        row += n
    del band
    ledger.free("expansion")
    ledger.free("gram")
    return hessian


def response_hessian(grads: torch.Tensor, ledger: MemoryLedger) -> torch.Tensor:
    """``H = sum_r g_r g_r^T = G^T G`` over the scope's responses."""
    dim = grads.shape[1]
    ledger.allocate("hessian", dim * dim * grads.element_size(), STAGE)
    return grads.T @ grads

