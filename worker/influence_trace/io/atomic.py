"""Atomic file writes: a crashed or killed run never leaves a file that looks finished."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path


def write_atomically(path: Path, write: Callable[[Path], object]) -> None:
    """``write`` into a temporary name beside ``path``, then rename over it; on failure remove the
    temporary, so ``path`` holds either its old content or the complete new one."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
