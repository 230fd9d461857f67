"""Exit codes of memory failures that torch does not raise as OutOfMemoryError (injected exceptions
with the texts the libraries produce), and each GPU rank's share of the CPU threads."""

from __future__ import annotations

import pytest
import torch
from influence_trace.api.contract import HostOutOfMemory
from influence_trace.run.launch import rank_threads
from influence_trace.run.process import as_failure
from influence_trace.trace.timing import StageTimer

CUDA_OOM = ("CUDA error: out of memory\nCUDA kernel errors might be asynchronously reported at some other "
            "API call, so the stacktrace below might be incorrect.")
CASES = [
    (torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"), 75),
    (MemoryError(), 76),
    (RuntimeError("[enforce fail at alloc_cpu.cpp:117] data. DefaultCPUAllocator: can't allocate memory: "
                  "you tried to allocate 53687091200 bytes. Error code 12 (Cannot allocate memory)"), 76),
    (RuntimeError("CachingHostAllocator: cudaHostAlloc failed: out of memory"), 76),
    (RuntimeError("CUDA error: CUBLAS_STATUS_ALLOC_FAILED when calling `cublasCreate(handle)`"), 75),
    (RuntimeError("cusolver error: CUSOLVER_STATUS_ALLOC_FAILED, when calling `cusolverDnCreate(&h)`"), 75),
    (torch.distributed.DistBackendError(
        "NCCL error in: ProcessGroupNCCL.cpp:1970, unhandled cuda error (run with NCCL_DEBUG=INFO for "
        "details), NCCL version 2.21.5\nncclUnhandledCudaError: Call to CUDA function failed.\n"
        "Last error:\nCuda failure 2 'out of memory'"), 75),
    (torch.AcceleratorError(CUDA_OOM), 75),
    (RuntimeError("CUDA error: an illegal memory access was encountered"), 70),
    (RuntimeError("NCCL error: remote process exited or there was a network error"), 70),
    (ValueError("bad row"), 70),
]


@pytest.mark.parametrize(("err", "code"), CASES, ids=[f"{type(e).__name__}-{c}" for e, c in CASES])
def test_memory_failures_map_to_their_exit_codes(err: BaseException, code: int) -> None:
    timer = StageTimer()
    with pytest.raises(type(err)), timer.stage("hessian_solve"):
        raise err
    failure = as_failure(err, timer)
    assert failure.exit_code == code, failure
    assert failure.stage == "hessian_solve"


def test_a_wrapped_library_error_counts_by_its_cause() -> None:
    try:
        try:
            raise RuntimeError("CUDA error: CUBLAS_STATUS_ALLOC_FAILED when calling `cublasCreate(handle)`")
        except RuntimeError as inner:
            raise RuntimeError("while building the Hessian") from inner
    except RuntimeError as outer:
        assert as_failure(outer, StageTimer()).exit_code == 75


def test_the_workers_own_host_failure_keeps_its_reason() -> None:
    failure = as_failure(HostOutOfMemory("cannot allocate 1024 bytes of pinned host memory"), StageTimer())
    assert (failure.reason, failure.exit_code) == ("HostOutOfMemory", 76)


def test_gpu_ranks_get_their_share_of_the_cores() -> None:
    assert rank_threads(8, cpus=96) == 12
    assert rank_threads(4, cpus=2) == 1
    assert rank_threads(1, cpus=16) == 16
