"""The GPU strategy's token scoring: every response's tokens at once, a fixed number of launches per chunk.

The directions ``M = C W`` (trace/scoring.py, which calls this module) are formed in place over the
solutions: each row w_o becomes ``bases[row_of[o]] - self_term[o] w_o`` in three launches (a scale,
then at most two ``index_add_`` of the contrast's base rows, each row once). Then, per chunk of
tokens, each token's direction row is gathered (``index_select``) and ``u_t^T M_o v_t`` is two
batched matmuls: four launches per chunk, whatever the number of responses.
"""

from __future__ import annotations

import numpy as np
import torch

from influence_trace.planning.hessian_plan import token_chunk_tokens
from influence_trace.trace.ledger import MemoryLedger

STAGE = "token_scoring"


def directions_in_place(bases: torch.Tensor, row_of: np.ndarray, self_term: np.ndarray,
                        solutions: torch.Tensor) -> torch.Tensor:
    """Overwrite the solutions W (R x D) with ``C W`` for C = rows[row_of] - diag(self_term) and
    ``bases = rows @ W``: row o becomes ``bases[row_of[o]] - self_term[o] w_o`` (scoring.direction)."""
    own = torch.as_tensor(-self_term, dtype=solutions.dtype).to(solutions.device)
    solutions.mul_(own[:, None])
    for k in range(bases.shape[0]):
        rows = torch.as_tensor(np.flatnonzero(row_of == k), dtype=torch.int64).to(solutions.device)
        solutions.index_add_(0, rows, bases[k].expand(rows.shape[0], -1))
    return solutions


def token_owners(token_offsets: list[int], device: torch.device) -> torch.Tensor:
    """T: the scope-local response of every token (one copy to the device, one repeat)."""
    lengths = torch.as_tensor(np.diff(np.asarray(token_offsets, dtype=np.int64))).to(device)
    owners = torch.arange(len(token_offsets) - 1, device=device)
    return torch.repeat_interleave(owners, lengths, output_size=int(token_offsets[-1]))


def gpu_score_tokens(bases: torch.Tensor, row_of: np.ndarray, self_term: np.ndarray, solutions: torch.Tensor,
                     u: torch.Tensor, v: torch.Tensor, token_offsets: list[int], out: torch.Tensor,
                     chunk_bytes: int, ledger: MemoryLedger) -> None:
    """Add ``u_t^T M_o v_t`` to ``out`` for every token; ``solutions`` is consumed (becomes M).

    Declares "token_chunk": one chunk's gathered directions (c x D, half of the response gradients').
    """
    tokens, k_out, k_in = u.shape[0], u.shape[1], v.shape[1]
    if tokens == 0:
        return
    dim, itemsize = k_out * k_in, solutions.element_size()
    directions = directions_in_place(bases, row_of, self_term, solutions)
    owners = token_owners(token_offsets, u.device)
    chunk = token_chunk_tokens(tokens, dim, itemsize, chunk_bytes)
    ledger.allocate("token_chunk", chunk * dim * itemsize, STAGE)
    gathered = torch.empty((chunk, dim), dtype=solutions.dtype, device=solutions.device)
    for a in range(0, tokens, chunk):
        n = min(chunk, tokens - a)
        rows = torch.index_select(directions, 0, owners[a : a + n], out=gathered[:n])
        left = torch.bmm(u[a : a + n, None, :], rows.view(n, k_out, k_in))  # n x 1 x k_in: u_t^T M_o
        out[a : a + n].add_(torch.bmm(left, v[a : a + n, :, None]).view(n))  # no setitem copy
    del gathered
    ledger.free("token_chunk")
