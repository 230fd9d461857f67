"""Which kernel strategy the Hessian build, the response gradients and the scoring use.

Two strategies give the same numbers (tests/trace run both against the float64 brute force):

- ``cpu``: Python loops over pair rows and over responses, each step a small kernel. On a CPU a
  kernel call costs about a microsecond and the loops keep the working set in cache, so this is the
  faster one there (bench/hessian_rate.py).
- ``gpu``: a fixed number of large kernels per chunk of tokens, whatever the number of responses:
  on a GPU each launch costs 5-10 us, and the loops would launch millions (issue 23).

``auto`` (the default) picks by device; ``INFLUENCE_TRACE_KERNELS=gpu|cpu`` forces one, so the GPU
strategy's exactness and launch count are tested on the CPU.
"""

from __future__ import annotations

import torch

from influence_trace.planning.hessian_plan import CHUNK_BYTES, KERNELS_ENV, kernels_for

__all__ = ["CHUNK_BYTES", "KERNELS_ENV", "strategy"]


def strategy(device: torch.device | str) -> str:
    """"gpu" or "cpu" for work on ``device``, as INFLUENCE_TRACE_KERNELS (default ``auto``) says."""
    return kernels_for(torch.device(device).type)
