"""Stage timings under the user's pipeline's stage names, and the stage a failure happened in."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import Protocol

STAGES = ("gen", "logprob_backward", "grad_staging", "hessian_solve", "token_scoring", "pop_rows")


class Timer(Protocol):
    """What the writer's tail needs of a timer: a whole run's StageTimer, or one training step's."""

    def stage(self, name: str) -> AbstractContextManager[None]: ...

    def totals(self) -> dict[str, float]: ...


class StageTimer:
    """Accumulates seconds per stage; ``current`` names the stage running now (for failures)."""

    def __init__(self, synchronize=None) -> None:
        self.seconds: dict[str, float] = dict.fromkeys(STAGES, 0.0)
        self.current = "setup"
        self.failed: str | None = None  # innermost stage an exception left (current is reset by then)
        self._synchronize = synchronize or (lambda: None)
        self._start = time.perf_counter()

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        previous, self.current = self.current, name
        self._synchronize()
        began = time.perf_counter()
        try:
            yield
        except BaseException:
            self.failed = self.failed or name
            raise
        finally:
            self._synchronize()
            self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - began
            self.current = previous

    def totals(self) -> dict[str, float]:
        """Per-stage seconds plus step_total (wall time since the timer started)."""
        return {**self.seconds, "step_total": time.perf_counter() - self._start}
