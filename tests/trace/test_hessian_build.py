"""The token Hessian's builds (symmetric Gram, cyclic Gram of the GPU strategy, dense rank-c) against a
float64 brute force."""

from __future__ import annotations

import pytest
import torch
from influence_trace.planning import hessian_plan
from influence_trace.planning.hessian_plan import (
    expansion_bytes,
    gram_bytes,
    pair_buffer_bytes,
    uses_symmetric_gram,
)
from influence_trace.trace.hessian import (
    dense_token_hessian,
    expand_gram,
    pair_products,
    symmetric_gram,
    token_hessian,
)
from influence_trace.trace.hessian_gpu import cyclic_gram, expand_cyclic_gram
from influence_trace.trace.ledger import MemoryLedger

SHAPES = [(1, 1, 5), (1, 7, 13), (7, 1, 13), (3, 5, 17), (5, 3, 40), (16, 20, 300), (2, 17, 9)]


def brute_force(u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """sum_t g_t g_t^T, g_t = vec(u_t v_t^T), entry by entry over the materialised g (float64)."""
    g = torch.stack([torch.outer(u[t], v[t]).reshape(-1) for t in range(u.shape[0])])
    return g.T @ g


@pytest.mark.parametrize(("k_out", "k_in", "tokens"), SHAPES)
@pytest.mark.parametrize("chunk_bytes", [1, 4096, 2**26])  # one token per chunk, several, one chunk
def test_gram_and_dense_builds_equal_the_brute_force(k_out: int, k_in: int, tokens: int,
                                                      chunk_bytes: int) -> None:
    gen = torch.Generator().manual_seed(k_out * 100 + k_in)
    u = torch.randn(tokens, k_out, generator=gen, dtype=torch.float64)
    v = torch.randn(tokens, k_in, generator=gen, dtype=torch.float64)
    want = brute_force(u, v)
    ledger = MemoryLedger()
    gram = expand_gram(symmetric_gram(u, v, chunk_bytes, ledger), k_out, k_in, ledger)
    torch.testing.assert_close(gram, want, rtol=1e-12, atol=1e-12 * float(want.abs().max()))
    dense = dense_token_hessian(u, v, chunk_bytes, ledger)
    torch.testing.assert_close(dense, want, rtol=1e-12, atol=1e-12 * float(want.abs().max()))
    cyclic = expand_cyclic_gram(cyclic_gram(u, v, chunk_bytes, ledger), k_out, k_in, ledger)
    torch.testing.assert_close(cyclic, want, rtol=1e-12, atol=1e-12 * float(want.abs().max()))


def test_pair_products_are_the_upper_triangle_in_row_order() -> None:
    x = torch.tensor([[1.0, 2.0], [3.0, 5.0], [7.0, 11.0]])  # k = 3 values at n = 2 tokens
    out = torch.empty(6, 2)
    pair_products(x, out)
    want = [x[i] * x[k] for i in range(3) for k in range(i, 3)]
    torch.testing.assert_close(out, torch.stack(want), rtol=0, atol=0)


def test_gram_ledger_matches_the_plan() -> None:
    """What the build declares is what the memory model's rule functions predict, buffer by buffer."""
    k_out, k_in, tokens, chunk = 16, 24, 500, 2**16
    u, v = torch.randn(tokens, k_out), torch.randn(tokens, k_in)
    ledger = MemoryLedger()
    token_hessian(u, v, chunk, ledger)
    assert uses_symmetric_gram(k_out, k_in)
    h = (k_out * k_in) ** 2 * 4
    g = gram_bytes(k_out, k_in, 4)
    assert ledger.peak_bytes == max(g + pair_buffer_bytes(tokens, k_out, k_in, 4, chunk),
                                    g + h + expansion_bytes(k_out, k_in, 4))
    assert ledger.current == {"hessian": h}


def test_narrow_side_keeps_the_dense_build(monkeypatch) -> None:
    ledger = MemoryLedger()
    token_hessian(torch.randn(50, 8), torch.randn(50, 48), 2**20, ledger)
    assert "chunk" in ledger.peak_breakdown and "gram" not in ledger.peak_breakdown
    monkeypatch.setattr(hessian_plan, "MIN_GRAM_SIDE", 8)
    ledger = MemoryLedger()
    token_hessian(torch.randn(50, 8), torch.randn(50, 48), 2**20, ledger)
    assert "gram" in ledger.peak_breakdown
