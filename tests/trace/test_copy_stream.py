"""Capture staging with its copies on a side stream (issue 24), checked on the CPU with a recording
stand-in for CopyStream: every copy is queued through the copier after the compute that made it, each
batch's event comes after its copies, and a slot is read into the store, and written again, only after
the event of the batch that last filled it."""

from __future__ import annotations

import torch
from influence_trace.trace.staging import CaptureStaging


class _Event:
    def __init__(self, log: list, batch: int) -> None:
        self.log, self.batch = log, batch

    def synchronize(self) -> None:
        self.log.append(("sync", self.batch))


class RecordingCopier:
    """What CopyStream does, on the CPU: the copy, and a log of the order of events."""

    def __init__(self) -> None:
        self.log: list = []
        self.batch = -1
        self.regions: dict[int, int] = {}  # data_ptr of a slot region -> batch that last wrote it

    def copy(self, region: torch.Tensor, values: torch.Tensor) -> None:
        self.log.append(("copy", self.batch, region.data_ptr()))
        region.copy_(values)

    def record(self) -> _Event:
        self.log.append(("event", self.batch))
        return _Event(self.log, self.batch)


def test_copies_go_through_the_side_stream_and_slots_are_reused_only_after_their_event() -> None:
    copier = RecordingCopier()
    stage = CaptureStaging(capacity=2 * 3 + 2 * 2, dtype=torch.float64, pin=False, copier=copier)
    u, v = torch.zeros(6, 3, dtype=torch.float64), torch.zeros(6, 2, dtype=torch.float64)
    for batch in range(3):
        copier.batch = batch
        dest = torch.tensor([2 * batch, 2 * batch + 1])
        stage.begin(dest)
        stage.put(u, torch.full((2, 3), float(batch + 1), dtype=torch.float64))
        stage.put(v, torch.full((2, 2), float(batch + 1), dtype=torch.float64))
        stage.end()
    stage.finish()
    for batch in range(3):
        rows = slice(2 * batch, 2 * batch + 2)
        assert (u[rows] == batch + 1).all() and (v[rows] == batch + 1).all()
    log = copier.log
    for batch in range(3):
        copies = [i for i, e in enumerate(log) if e[0] == "copy" and e[1] == batch]
        event = log.index(("event", batch))
        assert len(copies) == 2 and max(copies) < event  # the event follows the batch's copies
        assert log.index(("sync", batch)) > event
    # slot of batch 0 is written again by batch 2 only after batch 0's event was waited for
    first_reuse = next(i for i, e in enumerate(log) if e[0] == "copy" and e[1] == 2)
    assert log.index(("sync", 0)) < first_reuse
    slot0 = {e[2] for e in log if e[0] == "copy" and e[1] == 0}
    assert slot0 == {e[2] for e in log if e[0] == "copy" and e[1] == 2}  # the same slot, reused


def test_without_a_copier_the_copies_stay_on_the_current_stream() -> None:
    stage = CaptureStaging(capacity=6, dtype=torch.float32, pin=False)
    store = torch.zeros(2, 3)
    stage.begin(torch.tensor([1, 0]))
    stage.put(store, torch.arange(6, dtype=torch.float64).view(2, 3))
    stage.end()
    stage.finish()
    assert store.tolist() == [[3.0, 4.0, 5.0], [0.0, 1.0, 2.0]]
