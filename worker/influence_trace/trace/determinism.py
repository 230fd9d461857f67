"""``trace.deterministic``: deterministic algorithms for the whole trace, restored afterwards.

Two GPU runs of the same trace are not bitwise equal by default: some CUDA kernels accumulate with
atomics in an order that varies (SDPA's backward, index_add, some cuBLAS reductions), so scores differ
in their last bits. ``torch.use_deterministic_algorithms`` picks deterministic kernels where torch has
them (``warn_only``: an operation without one warns in the log instead of failing the trace), and
cuBLAS needs a fixed workspace (``CUBLAS_WORKSPACE_CONFIG``, set here unless already set; it takes
effect only if no cuBLAS handle exists yet, as at the start of a worker process). Slower on a GPU;
on the CPU the trace's kernels are deterministic already.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

import torch

CUBLAS_WORKSPACE = ":4096:8"


@contextmanager
def deterministic_algorithms(enabled: bool) -> Iterator[None]:
    """Deterministic torch algorithms for the block when ``enabled``; the previous mode afterwards."""
    if not enabled:
        yield
        return
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", CUBLAS_WORKSPACE)
    previous = (torch.are_deterministic_algorithms_enabled(),
                torch.is_deterministic_algorithms_warn_only_enabled())
    torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(previous[0], warn_only=previous[1])
