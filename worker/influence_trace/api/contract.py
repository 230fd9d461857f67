"""The worker-to-operator contract: failure reasons, exit codes and the termination message.

The worker ends every run with one of these exit codes and writes one compact JSON object (at most
4 KB) to its termination-message path; the operator reads both from the pod's container status. The
kwok stages of the local cluster (hack/) use the same codes.
"""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path
from typing import Any, Literal

Reason = Literal["GPUOutOfMemory", "HostOutOfMemory", "InvalidInput", "Error"]

EXIT_OK = 0
EXIT_CODES: dict[str, int] = {
    "InvalidInput": 65,  # EX_DATAERR: the manifest or an input file is wrong; retrying will not help
    "Error": 70,  # EX_SOFTWARE: anything else the worker did not expect
    "GPUOutOfMemory": 75,  # the device ran out of memory (or the planned allocation exceeds the budget)
    "HostOutOfMemory": 76,  # the worker caught a host MemoryError itself
}
EXIT_KERNEL_OOM_KILL = 137  # SIGKILL from the kernel's OOM killer (not the worker's own code)
REASON_BY_EXIT_CODE: dict[int, str] = {code: reason for reason, code in EXIT_CODES.items()}

MESSAGE_LIMIT_BYTES = 4096
TERMINATION_LOG_ENV = "INFLUENCE_TRACE_TERMINATION_LOG"
DEFAULT_TERMINATION_LOG = "/dev/termination-log"


class WorkerFailure(Exception):
    """A failure the worker reports through the contract (reason, stage, message)."""

    reason: Reason = "Error"

    def __init__(self, message: str, stage: str = "setup") -> None:
        super().__init__(message)
        self.stage = stage

    @property
    def exit_code(self) -> int:
        return EXIT_CODES[self.reason]


class InvalidInput(WorkerFailure):
    """Bad manifest, file or row: the message names which and what was expected."""

    reason: Reason = "InvalidInput"


class GPUOutOfMemory(WorkerFailure):
    """The device could not hold a stage's allocations; a larger GPU may succeed."""

    reason: Reason = "GPUOutOfMemory"


class HostOutOfMemory(WorkerFailure):
    """Host memory ran out inside the worker."""

    reason: Reason = "HostOutOfMemory"


def compact_json(payload: dict[str, Any], limit: int = MESSAGE_LIMIT_BYTES) -> str:
    """JSON of payload within ``limit`` bytes, shortening the longest string fields if needed."""
    text = json.dumps(payload, separators=(",", ":"), sort_keys=True)
    if len(text.encode()) <= limit:
        return text
    trimmed = dict(payload)
    for key in sorted(trimmed, key=lambda k: -len(json.dumps(trimmed[k]))):
        excess = len(json.dumps(trimmed, separators=(",", ":")).encode()) - limit
        if excess <= 0:
            break
        value = trimmed[key]
        if isinstance(value, str):
            trimmed[key] = value[: max(0, len(value) - excess - 3)] + "..."
        else:
            trimmed.pop(key)
    return json.dumps(trimmed, separators=(",", ":"), sort_keys=True)


def failure_message(failure: WorkerFailure) -> dict[str, str]:
    """The termination payload for a failure."""
    return {"reason": failure.reason, "stage": failure.stage, "message": str(failure)}


def termination_log_path() -> Path:
    """Where to write the termination message (a pod's default, or the environment's override)."""
    return Path(os.environ.get(TERMINATION_LOG_ENV, DEFAULT_TERMINATION_LOG))


def write_termination_message(payload: dict[str, Any]) -> None:
    """Write the message if the path is writable; a local run without the path just skips it."""
    path = termination_log_path()
    with contextlib.suppress(OSError):
        path.write_text(compact_json(payload))


def parse_termination_message(text: str | None) -> dict[str, Any]:
    """Decode a container's termination message; logs or junk become ``{"message": text}``."""
    if not text:
        return {}
    try:
        value = json.loads(text)
    except ValueError:
        return {"message": text.strip()[-MESSAGE_LIMIT_BYTES:]}
    return value if isinstance(value, dict) else {"message": str(value)}
