"""The GPU strategy's Hessian build and response gradients: a fixed number of launches per token chunk.

Same numbers as trace/hessian.py's loops (tests/trace run both against the float64 brute force); what
differs is how many kernels it takes (bench/kernel_launches.py counts them):

- pair products: the k values of a token are written twice in a row (``xx = [x, x]``), so
  ``xx[d + i] = x[(i + d) mod k]`` and the products ``x_i x_{(i+d) mod k}`` for every offset
  d = 0 .. k // 2 and every i are ONE multiply of ``x`` (broadcast over d) with a strided view of
  ``xx``; every unordered pair appears once (twice for d = k / 2 when k is even). No gathers, no
  temporary: per chunk one ``cat`` of both sides' doubled factors, one multiply per side, one GEMM.
- expansion: H is one advanced-indexing gather of G, ``H[i, j, k, l] = G[col(i, k), col(j, l)]``;
- response gradients: per chunk of tokens, the g_t rows in one multiply and their per-response sums
  in one ``segment_reduce`` (deterministic, unlike an atomic ``index_add_``) added to G's rows.
"""

from __future__ import annotations

import bisect

import torch

from influence_trace.planning.hessian_plan import (
    cyclic_pairs,
    gpu_gram_bytes,
    gpu_gram_chunk_tokens,
    gpu_pair_buffer_bytes,
    token_chunk_bytes,
    token_chunk_tokens,
)
from influence_trace.trace.ledger import MemoryLedger

STAGE = "hessian_solve"


def cyclic_columns(k: int, device: torch.device) -> torch.Tensor:
    """k x k: the cyclic-layout column of the pair (i, j) (symmetric); see ``cyclic_pairs``."""
    i = torch.arange(k, device=device)
    rows, cols = i[:, None], i[None, :]
    d = (cols - rows) % k
    forward, backward = d * k + rows, (k - d) * k + cols  # from i by +d, or from j by k - d
    # d == k - d (even k): both columns hold the pair; take the one from min(i, j), so H stays symmetric
    tie = d * k + torch.minimum(rows, cols)
    return torch.where(2 * d < k, forward, torch.where(2 * d > k, backward, tie))


def _pairs_into(x: torch.Tensor, doubled: torch.Tensor, out: torch.Tensor) -> None:
    """out (n x cyclic_pairs(k)) = x_i x_{(i+d) mod k}, column d * k + i; ``doubled`` is [x, x] (n x 2k)."""
    n, k = x.shape
    shifted = doubled.unfold(1, k, 1)[:, : k // 2 + 1]  # shifted[t, d, i] = x[t, (i + d) mod k]
    torch.mul(x[:, None, :], shifted, out=out.view(n, k // 2 + 1, k))


def cyclic_gram(u: torch.Tensor, v: torch.Tensor, chunk_bytes: int, ledger: MemoryLedger) -> torch.Tensor:
    """``G = sum_t P_t^T Q_t`` (cyclic_pairs(k_out) x cyclic_pairs(k_in)): four launches per chunk."""
    tokens, k_out, k_in = u.shape[0], u.shape[1], v.shape[1]
    itemsize = u.element_size()
    c = gpu_gram_chunk_tokens(tokens, k_out, k_in, itemsize, chunk_bytes)
    ledger.allocate("gram", gpu_gram_bytes(k_out, k_in, itemsize), STAGE)
    ledger.allocate("pairs", gpu_pair_buffer_bytes(tokens, k_out, k_in, itemsize, chunk_bytes), STAGE)
    kw = {"dtype": u.dtype, "device": u.device}
    doubled = torch.empty((c, 2 * (k_out + k_in)), **kw)
    p = torch.empty((c, cyclic_pairs(k_out)), **kw)
    q = torch.empty((c, cyclic_pairs(k_in)), **kw)
    gram = torch.zeros((p.shape[1], q.shape[1]), **kw)
    for a in range(0, tokens, c):
        n = min(c, tokens - a)
        uc, vc = u[a : a + n], v[a : a + n]
        xx = torch.cat([uc, uc, vc, vc], dim=1, out=doubled[:n])
        _pairs_into(uc, xx[:, : 2 * k_out], p[:n])
        _pairs_into(vc, xx[:, 2 * k_out :], q[:n])
        gram.addmm_(p[:n].T, q[:n])
    del doubled, p, q
    ledger.free("pairs")
    return gram


def expand_cyclic_gram(gram: torch.Tensor, k_out: int, k_in: int, ledger: MemoryLedger) -> torch.Tensor:
    """H (D x D) from the cyclic G in one gather: ``H[(i,j),(k,l)] = G[col(i,k), col(j,l)]``."""
    dim = k_out * k_in
    ledger.allocate("hessian", dim * dim * gram.element_size(), STAGE)
    rows = cyclic_columns(k_out, gram.device)[:, None, :, None]
    cols = cyclic_columns(k_in, gram.device)[None, :, None, :]
    hessian = gram[rows, cols].view(dim, dim)  # broadcast index views: no D x D index tensor
    ledger.free("gram")
    return hessian


def gpu_token_hessian(u: torch.Tensor, v: torch.Tensor, chunk_bytes: int,
                      ledger: MemoryLedger) -> torch.Tensor:
    """``H = sum_t g_t g_t^T`` by the cyclic Gram (the dense build, shared, keeps narrow sides)."""
    return expand_cyclic_gram(cyclic_gram(u, v, chunk_bytes, ledger), u.shape[1], v.shape[1], ledger)


def chunk_segments(offsets: list[int], chunk: int) -> list[tuple[int, int, list[int], list[int]]]:
    """Per token chunk [a, a + n): (a, n, the responses with tokens in it, how many each has there).

    Responses without tokens are left out, so a chunk has at most n segments.
    """
    out, tokens = [], offsets[-1]
    for a in range(0, tokens, chunk):
        b = min(a + chunk, tokens)
        first, last = bisect.bisect_right(offsets, a) - 1, bisect.bisect_left(offsets, b)
        spans = [(r, min(offsets[r + 1], b) - max(offsets[r], a)) for r in range(first, last)]
        spans = [(r, n) for r, n in spans if n > 0]
        out.append((a, b - a, [r for r, _ in spans], [n for _, n in spans]))
    return out


def gpu_response_gradients(u: torch.Tensor, v: torch.Tensor, token_offsets: list[int], chunk_bytes: int,
                           ledger: MemoryLedger, stage: str) -> torch.Tensor:
    """G (R x D), row r ``sum_t g_t`` over response r's tokens: three launches per chunk of tokens.

    Each chunk's segment sums are added to G's rows by ``index_add_`` with distinct indices (one
    addition per row and launch: deterministic).
    """
    k_out, k_in = u.shape[1], v.shape[1]
    dim, tokens, itemsize = k_out * k_in, u.shape[0], u.element_size()
    grads = torch.zeros((len(token_offsets) - 1, dim), dtype=u.dtype, device=u.device)
    if tokens == 0:
        return grads
    c = token_chunk_tokens(tokens, dim, itemsize, chunk_bytes)
    plan = chunk_segments(token_offsets, c)
    table = torch.tensor([[r for *_, rs, _ in plan for r in rs], [n for *_, ns in plan for n in ns]],
                         dtype=torch.int64).to(u.device)  # responses, lengths: one copy for every chunk
    ledger.allocate("token_chunk", token_chunk_bytes(tokens, dim, itemsize, chunk_bytes), stage)
    rows = torch.empty((c, dim), dtype=u.dtype, device=u.device)
    first = 0
    for a, n, responses, _ in plan:
        last = first + len(responses)
        torch.mul(u[a : a + n, :, None], v[a : a + n, None, :], out=rows[:n].view(n, k_out, k_in))
        sums = torch.segment_reduce(rows[:n], "sum", lengths=table[1, first:last], unsafe=True)
        grads.index_add_(0, table[0, first:last], sums)
        first = last
    del rows, sums
    ledger.free("token_chunk")
    return grads
