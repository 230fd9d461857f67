"""Progress lines: how a running worker tells the operator where it is, through its own log.

The worker prints one line ``INFLUENCE_TRACE_PROGRESS {json}`` at most every ``interval`` seconds per
loop (and at each loop's first and last step) to stderr, which the container runtime keeps as the pod's
log; the operator reads the log's tail through ``pods/log`` and shows the last line in
``status.progress``. The worker pod needs no API credentials for it. Pure stdlib, shared by both sides.

Fields: ``stage`` (generate, capture, hessian, validate: the memory model's stages), ``step`` and ``total`` of
the stage's loop, ``unit`` (batch, module, update), ``tokens`` (response tokens the stage has covered so far,
when it counts tokens), ``elapsed`` (seconds since the worker started).
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass
from typing import IO, TypeVar

PREFIX = "INFLUENCE_TRACE_PROGRESS "
INTERVAL_ENV = "INFLUENCE_TRACE_PROGRESS_SECONDS"
LINES_ENV = "INFLUENCE_TRACE_PROGRESS_LINES"  # 1: print the lines on a terminal too
DEFAULT_INTERVAL = 5.0
STAGE_ORDER = ("generate", "capture", "hessian", "validate")  # the order a trace goes through them

T = TypeVar("T")


@dataclass(frozen=True)
class Progress:
    """One progress line."""

    stage: str
    step: int
    total: int
    unit: str
    elapsed: float
    tokens: int | None = None
    train_step: int | None = None  # the training step of a multi-step trace (spec.training)
    train_steps: int | None = None

    def line(self) -> str:
        body = {k: v for k, v in asdict(self).items() if v is not None}
        body["elapsed"] = round(self.elapsed, 1)
        return PREFIX + json.dumps(body, separators=(",", ":"), sort_keys=True)


def parse_line(line: str) -> Progress | None:
    """The progress in one log line, or None (other lines, a timestamp prefix is allowed)."""
    at = line.find(PREFIX)
    if at < 0:
        return None
    try:
        raw = json.loads(line[at + len(PREFIX):])
        return Progress(stage=str(raw["stage"]), step=int(raw["step"]), total=int(raw["total"]),
                        unit=str(raw.get("unit", "step")), elapsed=float(raw.get("elapsed", 0.0)),
                        tokens=int(raw["tokens"]) if raw.get("tokens") is not None else None,
                        train_step=_optional_int(raw, "train_step"),
                        train_steps=_optional_int(raw, "train_steps"))
    except (ValueError, KeyError, TypeError):
        return None


def _optional_int(raw: dict, key: str) -> int | None:
    return int(raw[key]) if raw.get(key) is not None else None


def last_progress(log_text: str) -> Progress | None:
    """The newest progress line of a log (tail)."""
    for line in reversed(log_text.splitlines()):
        found = parse_line(line)
        if found is not None:
            return found
    return None


class Reporter:
    """Prints progress lines, at most one per ``interval`` seconds per loop (first and last always)."""

    def __init__(self, interval: float | None = None, stream: IO[str] | None = None,
                 clock=time.monotonic) -> None:
        env = os.environ.get(INTERVAL_ENV)
        self.interval = interval if interval is not None else float(env) if env else DEFAULT_INTERVAL
        self.stream = stream
        self.clock = clock
        self.start = clock()
        self.enabled = True
        self.training: tuple[int, int] | None = None  # (step, steps) while a multi-step trace runs

    def track(self, items: Iterable[T], stage: str, unit: str, total: int,
              tokens: list[int] | None = None) -> Iterator[T]:
        """Yield ``items``, reporting step k of ``total`` (tokens: running sum of per-item counts)."""
        last = None
        done_tokens = 0
        for step, item in enumerate(items, start=1):
            yield item
            if tokens is not None:
                done_tokens += tokens[step - 1]
            now = self.clock()
            if self.enabled and (last is None or step == total or now - last >= self.interval) \
                    and not self.on_terminal():
                last = now
                train = self.training or (None, None)
                self.emit(Progress(stage, step, total, unit, now - self.start,
                                   done_tokens if tokens is not None else None, *train))

    def on_terminal(self) -> bool:
        """The lines are for the operator, which reads a pod's log: a person at a terminal sees the
        progress bars instead (``INFLUENCE_TRACE_PROGRESS_LINES=1`` prints them anyway)."""
        stream = self.stream or sys.stderr
        return os.environ.get(LINES_ENV) != "1" and bool(getattr(stream, "isatty", lambda: False)())

    def emit(self, progress: Progress) -> None:
        stream = self.stream or sys.stderr
        print(progress.line(), file=stream, flush=True)


REPORTER = Reporter()  # one per worker process; its clock starts when the worker imports this module
