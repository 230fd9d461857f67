"""Response gradients and per-module Hessians, built from the stored factors without T x D matrices.

``g_t = vec(u_t v_t^T)`` (row-major, D = k_out * k_in). A response's gradient is the sum over its
tokens, ``g_r = vec(U_r^T V_r)``, one small matmul per response. The token Hessian ``sum_t g_t g_t^T``
is accumulated from chunks of c tokens formed on the fly (c x D), each a plain rank-c update
``H += chunk^T chunk``: the same flops as a matmul of that shape, which is what makes it fast.
"""

from __future__ import annotations

import torch

from influence_trace.planning.memory_model import chunk_tokens
from influence_trace.trace.ledger import MemoryLedger

STAGE = "hessian_solve"


def response_gradients(u: torch.Tensor, v: torch.Tensor, token_offsets: list[int]) -> torch.Tensor:
    """G (R x D): row r is ``vec(U_r^T V_r)``; a response without tokens has a zero row."""
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


def response_hessian(grads: torch.Tensor, ledger: MemoryLedger) -> torch.Tensor:
    """``H = sum_r g_r g_r^T = G^T G`` over the scope's responses."""
    dim = grads.shape[1]
    ledger.allocate("hessian", dim * dim * grads.element_size(), STAGE)
    return grads.T @ grads


def build_hessian(
    source: str,
    u: torch.Tensor,
    v: torch.Tensor,
    grads: torch.Tensor,
    chunk_bytes: int,
    ledger: MemoryLedger,
) -> torch.Tensor:
    """The scope's Hessian from tokens (u, v) or from responses (grads), per hessianSource."""
    if source == "token":
        return token_hessian(u, v, chunk_bytes, ledger)
    return response_hessian(grads, ledger)
