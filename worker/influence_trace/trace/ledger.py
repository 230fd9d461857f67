"""The worker's own accounting of its large device allocations, and the device-memory budget.

Every stage declares its big buffers here before allocating them. The ledger keeps the running and
peak total by name (what the memory model predicts, category by category), and raises the GPU
out-of-memory failure when a planned allocation would exceed the budget: that is how the contract is
exercised on a machine without a GPU.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from influence_trace.api.contract import GPUOutOfMemory


class MemoryLedger:
    """Running and peak bytes of the worker's declared device allocations."""

    def __init__(self, budget_bytes: int | None = None) -> None:
        self.budget_bytes = budget_bytes
        self.current: dict[str, int] = {}
        self.peak_bytes = 0
        self.peak_breakdown: dict[str, int] = {}

    @property
    def total(self) -> int:
        return sum(self.current.values())

    def allocate(self, name: str, nbytes: int, stage: str) -> None:
        """Declare a buffer; raise GPUOutOfMemory if the total would pass the budget."""
        total = self.total - self.current.get(name, 0) + nbytes
        if self.budget_bytes is not None and total > self.budget_bytes:
            raise GPUOutOfMemory(
                f"planned {nbytes} bytes for {name} would bring the device total to {total} bytes, "
                f"over the budget of {self.budget_bytes} bytes",
                stage=stage,
            )
        self.current[name] = nbytes
        if total > self.peak_bytes:
            self.peak_bytes = total
            self.peak_breakdown = dict(self.current)

    def free(self, name: str) -> None:
        self.current.pop(name, None)

    @contextmanager
    def hold(self, name: str, nbytes: int, stage: str) -> Iterator[None]:
        """Declare a buffer for the duration of a block."""
        self.allocate(name, nbytes, stage)
        try:
            yield
        finally:
            self.free(name)
