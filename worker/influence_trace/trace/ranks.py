"""The seam between the one trace computation (engine.run_trace) and the processes that share it.

run_trace is written once, for one process and for many (kronfluence's pattern): where there are
several ranks it asks its ``Ranks`` for the few steps that differ, and alone those steps do nothing.

- ``share``: the responses this process captures (alone: every one).
- ``owned`` and ``module_rows``: the modules this process traces, each with every token's rows.
  Alone: its own captured rows, in host memory. Several: the rows the exchange gathered from every
  rank, straight from the buffers they were received in (device buffers under NCCL).
- ``reduce``: the float64 token scores (and the HINV_DOT matrix) summed onto the writer, and the
  module reports gathered there; None on every other rank. Alone: the scores as they are.
- ``enter``: called as the trace enters a stage (tests inject a rank's failure there).

``OneProcess`` is the single-process implementation, here; the torch.distributed one is
run/ranks.py's ``ProcessRanks`` (``trace`` sits below ``run``, so it comes in as an argument).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
import torch

from influence_trace.api.spec import TraceSettings
from influence_trace.trace.capture import Factors
from influence_trace.trace.ledger import MemoryLedger
from influence_trace.trace.projection import TracedModule
from influence_trace.trace.records import ModuleReport
from influence_trace.trace.selection import Selection
from influence_trace.trace.timing import Timer


def _keep() -> None:
    """The rows stay where they are (one process: the captured factors are the caller's)."""


@dataclass
class ModuleRows:
    """One traced module's u (T x k_out) and v (T x k_in) over every selected token, in scope order.

    ``take`` hands the two tensors over (this object keeps no reference, so their memory goes with the
    taker's). ``release`` is called once they are staged for the Hessian: the ledger's claim on the
    buffers they came in goes then (staging may go on using the same tensors), and the exchange may
    post its next round.
    """

    index: int  # the module's position in the traced modules
    tensors: list[torch.Tensor]  # [u, v] until taken
    release: Callable[[], None] = field(default=_keep)

    def take(self) -> tuple[torch.Tensor, torch.Tensor]:
        u, v = self.tensors
        self.tensors.clear()
        return u, v


Summed = tuple[np.ndarray, np.ndarray | None, dict[int, ModuleReport]]  # scores, HINV_DOT, reports


class Ranks(Protocol):
    """Where a trace's work is divided over processes (see the module docstring)."""

    @property
    def world(self) -> int: ...

    @property
    def is_writer(self) -> bool: ...

    def share(self, selection: Selection) -> Selection: ...

    def enter(self, stage: str) -> None: ...

    def owned(self, traced: list[TracedModule], selection: Selection, trace: TraceSettings) -> list[int]: ...

    def module_rows(self, captured: Factors, traced: list[TracedModule], selection: Selection,
                    trace: TraceSettings, device: torch.device, ledger: MemoryLedger,
                    timer: Timer) -> Iterator[ModuleRows]: ...

    def reduce(self, scores: torch.Tensor, hinv_dot: torch.Tensor | None,
               reports: dict[int, ModuleReport], timer: Timer) -> Summed | None: ...


class OneProcess:
    """The whole trace in this process: every response, every module, nothing to exchange or sum."""

    world = 1
    is_writer = True

    def share(self, selection: Selection) -> Selection:
        return selection

    def enter(self, stage: str) -> None:
        return None

    def owned(self, traced: list[TracedModule], selection: Selection, trace: TraceSettings) -> list[int]:
        return list(range(len(traced)))

    def module_rows(self, captured: Factors, traced: list[TracedModule], selection: Selection,
                    trace: TraceSettings, device: torch.device, ledger: MemoryLedger,
                    timer: Timer) -> Iterator[ModuleRows]:
        for index, mod in enumerate(traced):
            name = mod.name
            yield ModuleRows(index, [captured.u[name], captured.v[name]])

    def reduce(self, scores: torch.Tensor, hinv_dot: torch.Tensor | None,
               reports: dict[int, ModuleReport], timer: Timer) -> Summed:
        return scores.cpu().numpy(), None if hinv_dot is None else hinv_dot.cpu().numpy(), reports


ONE_PROCESS = OneProcess()
