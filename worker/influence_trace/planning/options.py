"""Run-time knobs that are not part of the manifest: where to run and how to cut the work.

They change speed and memory, never the numbers (tests check that results do not depend on them).
Environment variables set them for `influence-trace run`; tests construct WorkerOptions directly.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from influence_trace.planning.hessian_plan import CHUNK_BYTES, kernels_for

GPU_BUDGET_ENV = "INFLUENCE_TRACE_GPU_BUDGET_BYTES"
CHUNK_BYTES_ENV = "INFLUENCE_TRACE_CHUNK_BYTES"
CAPTURE_TOKENS_ENV = "INFLUENCE_TRACE_CAPTURE_TOKENS"
SHARE_PROMPTS_ENV = "INFLUENCE_TRACE_SHARE_PROMPTS"  # 0: every response runs its prompt again
CHECKPOINT_LAYERS_ENV = "INFLUENCE_TRACE_CHECKPOINT_LAYERS"  # N: checkpoint N decoder layers in capture
EXCHANGE_OVERLAP_ENV = "INFLUENCE_TRACE_EXCHANGE_OVERLAP"  # 1/0: always/never; unset: where memory allows

DEFAULT_CHUNK_BYTES = CHUNK_BYTES["cpu"]  # one Hessian chunk buffer (c x D in the Hessian dtype); 1 GiB on
# the GPU kernel strategy (hessian_plan.CHUNK_BYTES: its chunks hold thousands of tokens)
LOGIT_CHUNK_BYTES = 256 * 2**20  # float32 logits of one checkpointed log-probability chunk
DEFAULT_CAPTURE_TOKENS = 4096  # padded tokens per capture forward/backward (about 2 GB on Qwen2.5-1.5B)


def _env_int(name: str) -> int | None:
    value = os.environ.get(name)
    if value in (None, ""):
        return None
    try:
        number = int(value)
    except ValueError:
        raise ValueError(f"environment variable {name}: expected an integer, got {value!r}") from None
    if number < 1:
        raise ValueError(f"environment variable {name}: expected a positive integer, got {number}")
    return number


def _env_switch(name: str) -> bool | None:
    value = os.environ.get(name, "")
    if value in ("0", "1"):
        return value == "1"
    if value:
        raise ValueError(f"environment variable {name}: expected 0 or 1, got {value!r}")
    return None


@dataclass(frozen=True)
class WorkerOptions:
    """How the worker cuts its work; ``gpu_budget_bytes`` makes planned overruns a GPU OOM."""

    device: str = "cpu"
    chunk_bytes: int = DEFAULT_CHUNK_BYTES
    capture_tokens: int = DEFAULT_CAPTURE_TOKENS
    gpu_budget_bytes: int | None = None
    progress: bool = True
    share_prompts: bool = True  # each prompt runs once per capture batch (trace/shared_prompts.py)
    checkpoint_layers: int | None = None  # decoder layers checkpointed in capture; None: as memory requires
    exchange_overlap: bool | None = None  # next exchange round beside a module's Hessian; None: if it fits

    @classmethod
    def from_env(cls, device: str, progress: bool = True) -> WorkerOptions:
        return cls(
            device=device,
            chunk_bytes=_env_int(CHUNK_BYTES_ENV) or CHUNK_BYTES[kernels_for(device)],
            capture_tokens=_env_int(CAPTURE_TOKENS_ENV) or DEFAULT_CAPTURE_TOKENS,
            gpu_budget_bytes=_env_int(GPU_BUDGET_ENV),
            progress=progress,
            share_prompts=os.environ.get(SHARE_PROMPTS_ENV, "1") != "0",
            checkpoint_layers=_env_int(CHECKPOINT_LAYERS_ENV),
            exchange_overlap=_env_switch(EXCHANGE_OVERLAP_ENV),
        )
