"""The process group of a multi-process trace: who this rank is, its device, and the collectives' timeout.

gloo on the CPU. On GPUs the group is ``cpu:gloo,cuda:nccl``: device tensors (the token scores)
reduce over NCCL, while the captured factors, which live in (pinned) host memory, travel over gloo
without a detour through the GPU. Every collective has a timeout, so a rank whose peer died stops
waiting and fails instead of hanging the pod.
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
    """Join the group the launcher set up (RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT in the env)."""
    if device.startswith("cuda"):
        torch.cuda.set_device(torch.device(device))
        backend = "cpu:gloo,cuda:nccl"
    else:
        backend = "gloo"
    dist.init_process_group(backend=backend, timeout=collective_timeout())
    return RankGroup(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))


def close_group() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()
