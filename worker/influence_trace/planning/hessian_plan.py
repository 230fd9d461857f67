"""How the worker builds a module's token Hessian, and the buffers that takes (torch-free, shared).

``H[(i,j),(k,l)] = sum_t u_ti u_tk v_tj v_tl`` is symmetric in i<->k and in j<->l separately, so only
``k_out(k_out+1)/2 x k_in(k_in+1)/2`` entries are distinct. The symmetric Gram path forms, per token
chunk, the pair products P (u_ti u_tk, i <= k) and Q (v_tj v_tl, j <= l) and accumulates
``G += P^T Q`` (a quarter of the dense build's 2 T D^2 flops), then expands H from G. Where one
side is very narrow the pairs cost more to form than the GEMM saves, and the dense rank-c build
stays (``uses_symmetric_gram``). The worker (trace/hessian.py) and the memory model both follow
these rules, so what the ledger declares is what the estimate predicts.
"""

from __future__ import annotations

import os

# Narrowest side (k_out or k_in) for which the Gram path is the faster one (bench/hessian_rate.py):
# at k = 4 or 8 (Qwen2.5-1.5B's k/v projections at factors 64 and 32) forming the other side's
# pairs (up to 1,176 per token against D = 384) costs more than the quarter-flop GEMM saves.
MIN_GRAM_SIDE = 16
# Tokens per Gram chunk at most: the pair buffers stay near the cache instead of growing to chunkBytes.
MAX_GRAM_CHUNK_TOKENS = 1024


def pairs(k: int) -> int:
    """Distinct products x_i x_j (i <= j) of a k-vector."""
    return k * (k + 1) // 2


def uses_symmetric_gram(k_out: int, k_in: int) -> bool:
    """The module's token Hessian is built by the symmetric Gram path (else the dense rank-c path)."""
    return min(k_out, k_in) >= MIN_GRAM_SIDE


def gram_chunk_tokens(scope_tokens: int, k_out: int, k_in: int, itemsize: int, chunk_bytes: int) -> int:
    """Tokens per Gram chunk: pair buffers within chunk_bytes and MAX_GRAM_CHUNK_TOKENS."""
    per_token = (pairs(k_out) + pairs(k_in)) * itemsize
    return max(1, min(scope_tokens, MAX_GRAM_CHUNK_TOKENS, chunk_bytes // per_token))


def gram_bytes(k_out: int, k_in: int, itemsize: int) -> int:
    """"gram": G, pairs(k_out) x pairs(k_in)."""
    return pairs(k_out) * pairs(k_in) * itemsize


def pair_buffer_bytes(scope_tokens: int, k_out: int, k_in: int, itemsize: int, chunk_bytes: int) -> int:
    """"pairs": the P and Q buffers of one chunk (freed before H is expanded)."""
    c = gram_chunk_tokens(scope_tokens, k_out, k_in, itemsize, chunk_bytes)
    return c * (pairs(k_out) + pairs(k_in)) * itemsize


def expansion_bytes(k_out: int, k_in: int, itemsize: int) -> int:
    """"expansion": one row band of G expanded on the k_in side while H is filled (k_out x k_in^2)."""
    return k_out * k_in * k_in * itemsize


# --- Which strategy runs the Hessian build, the response gradients and the scoring -------------------
#
# "cpu": the loops above (one strided multiply per pair row, one small matmul per response), the
# fastest on a CPU where a kernel launch costs nothing. "gpu": a fixed number of launches per chunk of
# tokens (trace/kernels.py), whatever the number of responses; each chunk is larger, so fewer launches.

KERNELS_ENV = "INFLUENCE_TRACE_KERNELS"
KERNELS = ("auto", "gpu", "cpu")
# Default chunk bytes per strategy: the GPU strategy's pair buffers hold thousands of tokens per chunk
# (about 6,500 at Qwen2.5-1.5B's MLP shapes at factor 32), so a whole trace stays near 10^5 launches.
CHUNK_BYTES = {"cpu": 256 * 2**20, "gpu": 2**30}


def kernels_for(device_type: str, value: str | None = None) -> str:
    """"gpu" or "cpu": ``value`` (or the environment's INFLUENCE_TRACE_KERNELS), ``auto`` by device."""
    choice = (value if value is not None else os.environ.get(KERNELS_ENV, "")) or "auto"
    if choice not in KERNELS:
        raise ValueError(f"environment variable {KERNELS_ENV}: expected one of {', '.join(KERNELS)}, "
                         f"got {choice!r}")
    if choice == "auto":
        return "gpu" if device_type.startswith("cuda") else "cpu"
    return choice


def cyclic_pairs(k: int) -> int:
    """Columns of the GPU strategy's pair layout: pairs (i, (i + d) mod k) for d = 0 .. k // 2.

    Exactly pairs(k) for odd k; for even k the last offset d = k / 2 lists each of its k / 2 pairs
    twice (k / 2 extra columns, 1 / k more GEMM work), the price of forming all pairs in one multiply.
    """
    return k * (k // 2 + 1)


def gpu_pair_token_bytes(k_out: int, k_in: int, itemsize: int) -> int:
    """Per token of a GPU Gram chunk: both sides' cyclic pairs and the doubled factors they are read from."""
    return (cyclic_pairs(k_out) + cyclic_pairs(k_in) + 2 * (k_out + k_in)) * itemsize


def gpu_gram_chunk_tokens(scope_tokens: int, k_out: int, k_in: int, itemsize: int, chunk_bytes: int) -> int:
    """Tokens per GPU Gram chunk: its buffers within chunk_bytes (no token cap: launches are the cost)."""
    return max(1, min(scope_tokens, chunk_bytes // gpu_pair_token_bytes(k_out, k_in, itemsize)))


def gpu_gram_bytes(k_out: int, k_in: int, itemsize: int) -> int:
    """"gram" on the GPU strategy: cyclic_pairs(k_out) x cyclic_pairs(k_in)."""
    return cyclic_pairs(k_out) * cyclic_pairs(k_in) * itemsize


def gpu_pair_buffer_bytes(scope_tokens: int, k_out: int, k_in: int, itemsize: int, chunk_bytes: int) -> int:
    """"pairs" on the GPU strategy: one chunk's pair buffers and doubled factors."""
    c = gpu_gram_chunk_tokens(scope_tokens, k_out, k_in, itemsize, chunk_bytes)
    return c * gpu_pair_token_bytes(k_out, k_in, itemsize)


def token_chunk_tokens(scope_tokens: int, dim: int, itemsize: int, chunk_bytes: int) -> int:
    """Tokens per chunk of the GPU strategy's response gradients and scoring: two c x D buffers."""
    return max(1, min(scope_tokens, chunk_bytes // (2 * dim * itemsize)))


def token_chunk_bytes(scope_tokens: int, dim: int, itemsize: int, chunk_bytes: int) -> int:
    """"token_chunk": g_t rows of a chunk and their per-response sums (or gathered directions)."""
    return 2 * token_chunk_tokens(scope_tokens, dim, itemsize, chunk_bytes) * dim * itemsize
