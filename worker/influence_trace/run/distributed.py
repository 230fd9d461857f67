"""The process group of a multi-process trace: who this rank is, its device, and the collectives' timeout.

gloo on the CPU. On GPUs the group is ``cpu:gloo,cuda:nccl``: device tensors (the token scores and
the exchanged factors, staged through device buffers: run/exchange.py) go over NCCL, the few Python
objects (module reports, resources) over gloo. Every collective has a timeout, so a rank whose peer
died stops waiting and fails instead of hanging the pod.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist

TIMEOUT_ENV = "INFLUENCE_TRACE_COLLECTIVE_TIMEOUT_S"
DEFAULT_TIMEOUT_S = 1800  # longer than the slowest rank's Hessian work ahead of the final reduce


@dataclass(frozen=True)
class RankGroup:
    """This process's place in the trace: global rank, world size, and local rank on its node."""

    rank: int
    world: int
    local_rank: int

    @property
    def is_writer(self) -> bool:
        """Rank 0 alone writes rows.parquet and summary.json."""
        return self.rank == 0


def collective_timeout() -> timedelta:
    value = os.environ.get(TIMEOUT_ENV, "")
    return timedelta(seconds=float(value) if value else DEFAULT_TIMEOUT_S)


def rank_device(kind: str, local_rank: int) -> str:
    """cuda:<local rank> on GPUs (one GPU per process), cpu otherwise."""
    return f"cuda:{local_rank}" if kind.startswith("cuda") else "cpu"


def init_group(device: str) -> RankGroup:
    """Join the group the launcher set up (RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT in the env).

    On CUDA, ``device_id`` makes NCCL create its communicator now, while the GPU is empty, rather
    than lazily at the first collective, after capture (whose cached blocks could leave NCCL's own
    buffers no room: an out-of-memory outside torch's allocator).
    """
    if device.startswith("cuda"):
        torch.cuda.set_device(torch.device(device))
        dist.init_process_group(backend="cpu:gloo,cuda:nccl", timeout=collective_timeout(),
                                device_id=torch.device(device))
    else:
        dist.init_process_group(backend="gloo", timeout=collective_timeout())
    return RankGroup(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))


def close_group() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()
