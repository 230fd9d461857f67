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
