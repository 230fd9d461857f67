"""Which library errors mean "out of memory", and whose memory: the device's (75) or the host's (76).

torch raises its own ``OutOfMemoryError`` only for the caching allocator's device memory. Memory that
runs out elsewhere arrives as a plain ``RuntimeError`` (``torch.AcceleratorError``,
``DistBackendError``) whose text names the library: cuBLAS/cuSOLVER handles and workspaces, NCCL's
buffers, torch's CPU allocator, cudaHostAlloc behind pinned memory. A larger GPU or more host memory
fixes those just as well, so they must reach the operator as the same reasons, not as a generic 70.
The worker's own pinned allocations say so themselves (trace/staging.py raises HostOutOfMemory).
"""

from __future__ import annotations

from typing import Literal

Kind = Literal["gpu", "host"]

HOST_ALLOCATOR = (  # torch's CPU allocator: "[enforce fail at alloc_cpu.cpp] ... can't allocate memory"
    "DefaultCPUAllocator",
    "can't allocate memory",
    "not enough memory: you tried to allocate",
)
PINNED = ("cudaHostAlloc", "cudaHostRegister", "CachingHostAllocator", "pinned memory", "pin_memory")
GPU_PATTERNS = (
    "CUBLAS_STATUS_ALLOC_FAILED",
    "CUSOLVER_STATUS_ALLOC_FAILED",
    "CUDNN_STATUS_ALLOC_FAILED",
    "cudaErrorMemoryAllocation",
    "CUDA error: out of memory",
    "CUDA out of memory",
)
OOM_WORDS = ("out of memory", "Out of memory", "OUT_OF_MEMORY", "alloc failed", "Failed to CUDA calloc",
             "Failed to CUDA malloc")


def _chain(err: BaseException) -> list[BaseException]:
    """The error and what it was raised from (``raise ... from``: a wrapped library error counts)."""
    seen: list[BaseException] = []
    cause: BaseException | None = err
    while cause is not None and cause not in seen and len(seen) < 8:
        seen.append(cause)
        cause = cause.__cause__
    return seen


def memory_kind(err: BaseException) -> Kind | None:
    """"host", "gpu" or None (not a memory error) for any exception from torch, NCCL or Python."""
    import torch

    for e in _chain(err):
        if isinstance(e, torch.OutOfMemoryError):
            return "gpu"
        if isinstance(e, MemoryError):
            return "host"
        text = str(e)
        oom = any(w in text for w in OOM_WORDS)
        if any(p in text for p in HOST_ALLOCATOR) or (oom and any(p in text for p in PINNED)):
            return "host"
        if any(p in text for p in GPU_PATTERNS):
            return "gpu"
        if "NCCL" in text and oom:
            return "gpu"  # NCCL's device buffers (ncclUnhandledCudaError: ... 'out of memory')
    return None
