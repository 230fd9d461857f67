"""The GPU kernel strategy's pieces (trace/hessian_gpu.py, trace/scoring_gpu.py) against float64 brute
force, its ledger against the plan, and how its launch count grows (bench/kernel_launches.py counts)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from influence_trace.planning.hessian_plan import (
    KERNELS_ENV,
    cyclic_pairs,
    gpu_gram_bytes,
    gpu_pair_buffer_bytes,
    kernels_for,
    pairs,
    token_chunk_bytes,
)
from influence_trace.trace.hessian import response_gradients, token_hessian
from influence_trace.trace.hessian_gpu import chunk_segments, cyclic_columns
from influence_trace.trace.ledger import MemoryLedger
from influence_trace.trace.scoring import contrast, score_tokens

from tests.trace.bruteforce import settings

OFFSETS = [[0, 3, 3, 10, 11, 17], [0, 0, 5, 5], [0, 1, 2, 3, 4, 5, 6, 7]]  # with empty responses


@pytest.mark.parametrize("k", [1, 2, 3, 4, 7, 8, 48])
def test_cyclic_columns_list_every_pair_once(k: int) -> None:
    """Columns d * k + i hold x_i x_{(i+d) mod k}: the map is symmetric, each unordered pair one column
    (odd k: a bijection onto the pairs; even k: the offset k/2 pairs each have two equal columns)."""
    cols = cyclic_columns(k, torch.device("cpu"))
    assert torch.equal(cols, cols.T)
    for i, j in itertools.product(range(k), repeat=2):
        col = int(cols[i, j])
        d, base = divmod(col, k)
        assert d <= k // 2 and {base, (base + d) % k} == {i, j}
    distinct = len({int(c) for c in cols.reshape(-1)})
    assert distinct == pairs(k) and cyclic_pairs(k) - pairs(k) == (k // 2 if k % 2 == 0 else 0)


@pytest.mark.parametrize("chunk", [1, 2, 4, 100])
@pytest.mark.parametrize("offsets", OFFSETS)
def test_chunk_segments_cover_each_token_once(offsets: list[int], chunk: int) -> None:
    owner = np.repeat(np.arange(len(offsets) - 1), np.diff(offsets))
    for a, n, responses, lengths in chunk_segments(offsets, chunk):
        assert 0 < n <= chunk and all(x > 0 for x in lengths)
        assert np.repeat(responses, lengths).tolist() == owner[a : a + n].tolist()


@pytest.mark.parametrize("chunk_bytes", [1, 700, 2**26])
@pytest.mark.parametrize("offsets", OFFSETS)
def test_response_gradients_equal_the_sums(kernels: str, offsets: list[int], chunk_bytes: int) -> None:
    gen = torch.Generator().manual_seed(len(offsets))
    u = torch.randn(offsets[-1], 3, generator=gen, dtype=torch.float64)
    v = torch.randn(offsets[-1], 5, generator=gen, dtype=torch.float64)
    got = response_gradients(u, v, offsets, chunk_bytes, MemoryLedger())
    for r in range(len(offsets) - 1):
        a, b = offsets[r], offsets[r + 1]
        want = sum((torch.outer(u[t], v[t]).reshape(-1) for t in range(a, b)), torch.zeros(15, dtype=u.dtype))
        torch.testing.assert_close(got[r], want, rtol=1e-13, atol=1e-13)


@pytest.mark.parametrize(("agg", "exclude", "scale"), [("mean", True, 0.0), ("mean", True, 0.3),
                                                      ("sum", False, 0.0), ("advantage", True, 0.5)])
@pytest.mark.parametrize("chunk_bytes", [1, 2**26])
def test_scores_equal_the_dense_contrast(kernels: str, agg: str, exclude: bool, scale: float,
                                         chunk_bytes: int) -> None:
    """score_t = g_t . (C W)[o(t)], with C dense in float64 and g_t materialised."""
    offsets = [0, 3, 3, 10, 11, 17]
    rng = np.random.default_rng(4)
    accepted = np.array([True, False, True, False, True])
    trace = settings(contrastive_agg=agg, exclude_self_response=exclude, self_influence_scale=scale)
    c = contrast(accepted, rng.normal(size=5), trace)
    solutions = torch.as_tensor(rng.normal(size=(5, 12)))
    u, v = torch.as_tensor(rng.normal(size=(17, 3))), torch.as_tensor(rng.normal(size=(17, 4)))
    directions = torch.as_tensor(c.dense()) @ solutions
    owner = np.repeat(np.arange(5), np.diff(offsets))
    want = torch.stack([torch.outer(u[t], v[t]).reshape(-1) @ directions[owner[t]] for t in range(17)])
    got = torch.zeros(17, dtype=torch.float64)
    score_tokens(c, solutions.clone(), u, v, offsets, got, chunk_bytes, MemoryLedger())
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)


def test_gpu_gram_ledger_matches_the_plan(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(KERNELS_ENV, "gpu")
    k_out, k_in, tokens, chunk = 16, 24, 500, 2**16
    ledger = MemoryLedger()
    token_hessian(torch.randn(tokens, k_out), torch.randn(tokens, k_in), chunk, ledger)
    h, g = (k_out * k_in) ** 2 * 4, gpu_gram_bytes(k_out, k_in, 4)
    assert ledger.peak_bytes == max(g + gpu_pair_buffer_bytes(tokens, k_out, k_in, 4, chunk), g + h)
    assert ledger.current == {"hessian": h}
    ledger = MemoryLedger()
    response_gradients(torch.randn(tokens, k_out), torch.randn(tokens, k_in), [0, 7, tokens], chunk, ledger)
    assert ledger.peak_breakdown == {"token_chunk": token_chunk_bytes(tokens, k_out * k_in, 4, chunk)}


def test_kernels_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(KERNELS_ENV, raising=False)
    assert (kernels_for("cuda"), kernels_for("cuda:1"), kernels_for("cpu")) == ("gpu", "gpu", "cpu")
    monkeypatch.setenv(KERNELS_ENV, "gpu")
    assert kernels_for("cpu") == "gpu" and kernels_for("cuda", "cpu") == "cpu"
    monkeypatch.setenv(KERNELS_ENV, "fast")
    with pytest.raises(ValueError, match="INFLUENCE_TRACE_KERNELS"):
        kernels_for("cpu")
