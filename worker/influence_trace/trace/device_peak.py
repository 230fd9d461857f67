"""The device's peak allocated bytes over the whole run, although capture measures each batch's own.

Capture resets torch's peak counter before every batch to measure that batch (the measured batch
replaces the model's estimate in the budget check). The reset would erase the earlier stages' peaks
from ``torch.cuda.max_memory_allocated``, so each reset first folds the counter into a running
maximum; the summary's ``peak_gpu_bytes`` is the larger of the two.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch


@dataclass
class PeakTracker:
    """Running maximum of a resettable peak counter (torch's on CUDA; any counter in tests)."""

    max_allocated: Callable[[], int]
    reset: Callable[[], None]
    allocated: Callable[[], int]
    running: int = field(default=0)

    def start_window(self) -> int:
        """Keep the peak so far, reset the counter, and return the bytes allocated now (the base)."""
        self.running = max(self.running, int(self.max_allocated()))
        self.reset()
        return int(self.allocated())

    def peak(self) -> int:
        """The largest allocation total since the process started, across every window."""
        return max(self.running, int(self.max_allocated()))


_TRACKERS: dict[str, PeakTracker] = {}


def tracker(device: torch.device | str) -> PeakTracker | None:
    """The process's tracker for a CUDA device (None on the CPU, which has no such counter)."""
    device = torch.device(device)
    if device.type != "cuda":
        return None
    key = str(device)
    if key not in _TRACKERS:
        _TRACKERS[key] = PeakTracker(
            lambda: torch.cuda.max_memory_allocated(device),
            lambda: torch.cuda.reset_peak_memory_stats(device),
            lambda: torch.cuda.memory_allocated(device),
        )
    return _TRACKERS[key]


def start_window(device: torch.device | str) -> int:
    """Begin measuring a new peak window on ``device`` (0 on the CPU)."""
    t = tracker(device)
    return 0 if t is None else t.start_window()


def run_peak(device: torch.device | str) -> int:
    """Peak allocated bytes of the whole run on ``device`` (0 on the CPU or without CUDA)."""
    if torch.device(device).type != "cuda" or not torch.cuda.is_available():
        return 0
    t = tracker(device)
    return 0 if t is None else t.peak()
