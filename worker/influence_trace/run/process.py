"""What every worker process shares: its log format, the CUDA-aware stage timer, and the mapping of any
exception to the worker contract. A leaf of ``run``: the entry point and each rank import it."""

from __future__ import annotations

import logging
import sys
from typing import Any

from influence_trace.api.contract import GPUOutOfMemory, HostOutOfMemory, WorkerFailure
from influence_trace.run.memory_errors import memory_kind
from influence_trace.trace.timing import StageTimer

log = logging.getLogger("influence_trace.run")


class _StageFilter(logging.Filter):
    """Adds the running stage to every log record."""

    def __init__(self, timer: StageTimer) -> None:
        super().__init__()
        self.timer = timer

    def filter(self, record: logging.LogRecord) -> bool:
        record.stage = self.timer.current
        return True


def setup_logging(timer: StageTimer, prefix: str = "") -> None:
    handler = logging.StreamHandler(sys.stderr)
    who = f"{prefix} " if prefix else ""
    fmt = f"%(asctime)s %(levelname)s {who}[%(stage)s] %(message)s"
    handler.setFormatter(logging.Formatter(fmt, "%H:%M:%S"))
    handler.addFilter(_StageFilter(timer))
    log.handlers[:] = [handler]
    log.setLevel(logging.INFO)
    log.propagate = False


def synchronize_cuda() -> None:
    """Wait for queued kernels so stage timings are real; a no-op until CUDA is in use.

    It waits on the current device's current stream (``select_device`` makes that device the
    process's own GPU), not on the whole device: an exchange round posted ahead runs on NCCL's own
    stream beside the Hessian work, and a stage boundary must not wait for it.
    """
    import torch

    if torch.cuda.is_initialized():
        torch.cuda.current_stream().synchronize()


def select_device(device: str) -> None:
    """Make an indexed CUDA ``device`` (``cuda:1``) the current one, so synchronize_cuda times its work
    (otherwise a one-process ``--device cuda:1`` run would wait on an idle GPU 0 and time nothing)."""
    import torch

    target = torch.device(device)
    if target.type == "cuda" and target.index is not None:
        torch.cuda.set_device(target)


def format_timings(timings: dict[str, float]) -> str:
    """A readable two-column table of stage seconds, with each stage's share of step_total."""
    total = timings.get("step_total", 0.0) or 1e-12
    width = max(len(name) for name in timings)
    lines = [f"{'stage':<{width}}  {'seconds':>9}  {'share':>6}"]
    for name, seconds in timings.items():
        share = "" if name == "step_total" else f"{100 * seconds / total:5.1f}%"
        lines.append(f"{name:<{width}}  {seconds:9.3f}  {share:>6}")
    return "\n".join(lines)


def as_failure(err: BaseException, timer: StageTimer) -> WorkerFailure:
    """Map any exception to a contract failure, in the stage that was running."""
    stage = timer.failed or timer.current
    if isinstance(err, WorkerFailure):
        if err.stage == "setup":
            err.stage = stage  # raised without a stage of its own
        return err
    kind = memory_kind(err)
    if kind == "gpu":
        return GPUOutOfMemory(f"device out of memory: {type(err).__name__}: {err}", stage)
    if kind == "host":
        return HostOutOfMemory(f"host out of memory: {type(err).__name__}: {err or 'MemoryError'}", stage)
    return WorkerFailure(f"{type(err).__name__}: {err}", stage)  # reason "Error"




class GroupFailure(Exception):
    """The ranks failed: the exit code and termination payload of the root cause, already decided."""

    def __init__(self, exit_code: int, payload: dict[str, Any]) -> None:
        super().__init__(payload["message"])
        self.exit_code = exit_code
        self.payload = payload
