"""Counting kernel launches per stage, for bench/kernel_launches.py and the launch-budget tests.

On a GPU every aten operation that computes (not a view, an allocation or metadata) is at least one
kernel launch, 5-10 us of host time each; a count taken on the CPU with the GPU kernel strategy
(trace/kernels.py) is the count the GPU would see. Host reads of a device scalar (``.item()``,
``bool()``) are counted apart: on a GPU each is a synchronisation. Ops that launch several kernels
inside one aten call (cuSOLVER's Cholesky) count once.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager

from torch.utils._python_dispatch import TorchDispatchMode

from influence_trace.trace.timing import StageTimer

# Not kernel launches: allocations, metadata, and aliasing ops not flagged as views.
NO_KERNEL = frozenset({"empty", "empty_strided", "empty_like", "detach", "lift_fresh", "alias",
                       "_unsafe_view", "set_", "resize_", "sym_size", "sym_stride", "sym_numel", "is_pinned",
                       "_pin_memory"})
SYNCS = frozenset({"_local_scalar_dense"})


class LaunchCounter(TorchDispatchMode):
    """Counts kernel-launching aten ops per stage (``stage`` is set by ``CountingTimer``)."""

    def __init__(self) -> None:
        super().__init__()
        self.stage = "setup"
        self.launches: Counter[str] = Counter()
        self.syncs: Counter[str] = Counter()
        self.ops: Counter[tuple[str, str]] = Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = func.overloadpacket.__name__
        if name in SYNCS:
            self.syncs[self.stage] += 1
        elif not func.is_view and name not in NO_KERNEL:
            self.launches[self.stage] += 1
            self.ops[(self.stage, name)] += 1
        return func(*args, **(kwargs or {}))


class CountingTimer(StageTimer):
    """A StageTimer that tells a LaunchCounter which stage runs."""

    def __init__(self, counter: LaunchCounter) -> None:
        super().__init__()
        self.counter = counter

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        previous, self.counter.stage = self.counter.stage, name
        try:
            with super().stage(name):
                yield
        finally:
            self.counter.stage = previous
