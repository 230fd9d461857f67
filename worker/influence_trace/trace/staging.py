"""Moving factor rows between ordinary host memory and the device through small pinned buffers.

The factor store (tens of GB per process) stays in ordinary, pageable host memory. Pinning it would
cost far more than its size: torch's pinned allocator rounds every request up to a power of two and
keeps freed blocks cached (still pinned), so a pinned 53 GB store takes about 80 GB, and a second one
(the exchange's) would stay pinned beside the first. Instead every transfer goes through a few small
pinned buffers made once and reused:

- ``CaptureStaging``: two slots, each sized for one capture batch's factor rows. A capture hook
  queues an asynchronous device-to-host copy of its projected rows (one contiguous block per hook:
  the captured positions are ordered response by response) into the batch's slot; nothing waits.
  The copies run on a side stream (``CopyStream``): each waits for the compute stream's work so far
  (the rows it copies), and the rows are marked used by the side stream (``record_stream``) so the
  allocator does not hand their memory to the forward or backward before the copy has read it; so
  the copies overlap the compute instead of queueing between its kernels. After the batch, one event
  on the side stream marks its copies; the slot is scattered into the store only after the *next*
  batch is queued, so the GPU computes batch n+1 while the CPU fills the store from batch n, and a
  slot is written again only after its event (``_drain``).
- ``Transfer``: two pinned chunks for moving one module's rows to the device (Hessian stage,
  exchange) or back (exchange), chunk by chunk, so the dtype-changing copy to the device needs a
  temporary of one chunk, not of the whole module.

Without CUDA the same code runs with ordinary buffers and no events (the CPU tests exercise it).
Pinned bytes are in the memory model (``planning.memory_model.pinned_staging_bytes``).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

import torch

from influence_trace.api.contract import HostOutOfMemory
from influence_trace.planning.memory_model import TRANSFER_CHUNK_BYTES  # counted there, with the slots


def host_buffer(numel: int, dtype: torch.dtype, pin: bool) -> torch.Tensor:
    """A flat host buffer, pinned when asked; a failed allocation is the host's out-of-memory (76).

    cudaHostAlloc failing surfaces as ``RuntimeError: CUDA error: out of memory``, which elsewhere
    means the device: here it is known to be host memory, so it is said so.
    """
    try:
        return torch.empty(numel, dtype=dtype, pin_memory=pin)
    except (RuntimeError, MemoryError) as err:
        nbytes = numel * dtype.itemsize
        kind = "pinned" if pin else "ordinary"
        message = f"cannot allocate {nbytes} bytes of {kind} host memory for staging: {err}"
        raise HostOutOfMemory(message) from err


def _record(pin: bool, device: torch.device | None) -> torch.cuda.Event | None:
    """An event after the work queued so far on ``device``'s current stream (None without CUDA).

    The stream of the data's device, not of the current device: a single process may run on cuda:1
    without making it current.
    """
    if not pin or device is None or device.type != "cuda":
        return None
    event = torch.cuda.Event()
    event.record(torch.cuda.current_stream(device))
    return event


def _wait(event: torch.cuda.Event | None) -> None:
    if event is not None:
        event.synchronize()


class CopyStream:
    """Device-to-host copies on a side stream, each ordered after the compute that made its values."""

    def __init__(self, device: torch.device) -> None:
        self.stream = torch.cuda.Stream(device)

    def copy(self, region: torch.Tensor, values: torch.Tensor) -> None:
        """region (pinned host) <- values (device), queued on the side stream without blocking."""
        self.stream.wait_stream(torch.cuda.current_stream(values.device))
        with torch.cuda.stream(self.stream):
            region.copy_(values, non_blocking=True)
        values.record_stream(self.stream)  # not reused by the compute stream before this copy read it

    def record(self) -> torch.cuda.Event:
        """An event after every copy queued so far."""
        event = torch.cuda.Event()
        event.record(self.stream)
        return event


@dataclass
class _Batch:
    """One batch's queued copies: (store, staged rows) pairs, the store rows they go to, the event."""

    dest: torch.Tensor  # store row of each staged row (CPU, int64)
    copies: list[tuple[torch.Tensor, torch.Tensor]] = field(default_factory=list)
    event: torch.cuda.Event | None = None
    device: torch.device | None = None  # where the staged values came from


class CaptureStaging:
    """Double-buffered staging of capture batches: ``begin``, ``put`` per hook, ``end``, ``finish``."""

    def __init__(self, capacity: int, dtype: torch.dtype, pin: bool, slots: int = 2,
                 copier: CopyStream | None = None) -> None:
        self.capacity = capacity  # elements per slot: the largest batch's rows x sum(k_in + k_out)
        self.pin = pin
        self.copier = copier  # the side stream of the copies (CUDA); None: copies on the current stream
        self.slots = [host_buffer(capacity, dtype, pin) for _ in range(slots)]
        self.queued: deque[_Batch] = deque()  # ended, not yet scattered into the store
        self.batch: _Batch | None = None
        self.turn = -1
        self.cursor = 0

    @property
    def nbytes(self) -> int:
        return sum(s.numel() * s.element_size() for s in self.slots)

    def begin(self, dest: torch.Tensor) -> None:
        """Start a batch whose staged rows go to store rows ``dest`` (its slot was drained by now)."""
        self.turn += 1
        self.cursor = 0
        self.batch = _Batch(dest)
        while len(self.queued) >= len(self.slots):  # only if end() was skipped: never reuse unread rows
            self._drain(self.queued.popleft())

    def put(self, store: torch.Tensor, values: torch.Tensor) -> None:
        """Queue the copy of ``values`` (rows x k, any device) into the slot, for ``store``'s rows."""
        assert self.batch is not None, "put() outside begin()/end()"
        rows, k = values.shape
        if rows != len(self.batch.dest):
            raise RuntimeError(f"staging: {rows} rows captured for a batch of {len(self.batch.dest)} rows")
        if self.cursor + rows * k > self.capacity:
            raise RuntimeError(
                f"staging: the batch's factors need more than the {self.capacity} elements planned "
                "(a module's hook fired twice in one batch?)"
            )
        slot = self.slots[self.turn % len(self.slots)]
        region = slot[self.cursor : self.cursor + rows * k].view(rows, k)
        self.cursor += rows * k
        # Cast on the device (half the bytes over PCIe for bfloat16), then one contiguous copy.
        cast = values.detach().to(store.dtype)
        if self.copier is not None:
            self.copier.copy(region, cast)
        else:
            region.copy_(cast, non_blocking=self.pin)
        self.batch.copies.append((store, region))
        self.batch.device = values.device

    def end(self) -> None:
        """Mark the batch's copies queued; scatter the previous batch (its copies are done or nearly)."""
        assert self.batch is not None, "end() without begin()"
        if self.copier is not None:
            self.batch.event = self.copier.record()
        else:
            self.batch.event = _record(self.pin, self.batch.device)
        self.queued.append(self.batch)
        self.batch = None
        while len(self.queued) > 1:
            self._drain(self.queued.popleft())

    def finish(self) -> None:
        """Scatter every batch still staged (after the last batch)."""
        while self.queued:
            self._drain(self.queued.popleft())

    @staticmethod
    def _drain(batch: _Batch) -> None:
        _wait(batch.event)
        for store, region in batch.copies:
            store.index_copy_(0, batch.dest, region)


class Transfer:
    """Two reused pinned chunks for moving whole row blocks between host memory and the device."""

    def __init__(self, chunk_bytes: int = TRANSFER_CHUNK_BYTES, pin: bool = True) -> None:
        self.pin = pin
        self.chunk_bytes = chunk_bytes
        self.slots = [host_buffer(chunk_bytes, torch.uint8, pin) for _ in range(2)]
        self.events: list[torch.cuda.Event | None] = [None, None]

    def _rows_per_chunk(self, t: torch.Tensor) -> int:
        return max(1, self.chunk_bytes // max(t.shape[1] * t.element_size(), 1))

    def _view(self, slot: int, like: torch.Tensor, rows: int) -> torch.Tensor:
        nbytes = rows * like.shape[1] * like.element_size()
        if nbytes > self.chunk_bytes:  # a single row wider than a chunk: grow once, stays reused
            self.slots[slot] = host_buffer(nbytes, torch.uint8, self.pin)
        return self.slots[slot][:nbytes].view(like.dtype).view(rows, like.shape[1])

    def copy_in(self, out: torch.Tensor, host: torch.Tensor) -> None:
        """out[:] = host (host rows to ``out``'s device and dtype), one chunk at a time.

        The memcpy into one chunk overlaps the device copy of the other; the dtype change happens on
        the device, with a temporary of one chunk.
        """
        step = self._rows_per_chunk(host)
        for i, a in enumerate(range(0, host.shape[0], step)):
            b = min(a + step, host.shape[0])
            _wait(self.events[i % 2])  # the chunk's previous copy has left it
            chunk = self._view(i % 2, host, b - a)
            chunk.copy_(host[a:b])
            out[a:b].copy_(chunk, non_blocking=self.pin)
            self.events[i % 2] = _record(self.pin, out.device)
        self._settle()

    def copy_out(self, host: torch.Tensor, device_rows: torch.Tensor) -> None:
        """host[:] = device_rows (same dtype), one chunk at a time; the next chunk's device copy is
        queued before the previous chunk is copied out of its pinned buffer."""
        step = self._rows_per_chunk(device_rows)
        previous: tuple[int, int, int, torch.Tensor] | None = None
        for i, a in enumerate(range(0, device_rows.shape[0], step)):
            b = min(a + step, device_rows.shape[0])
            chunk = self._view(i % 2, device_rows, b - a)  # its last reader landed in iteration i - 1
            chunk.copy_(device_rows[a:b], non_blocking=self.pin)
            self.events[i % 2] = _record(self.pin, device_rows.device)
            if previous is not None:
                self._land(host, *previous)
            previous = (i % 2, a, b, chunk)
        if previous is not None:
            self._land(host, *previous)
        self._settle()

    def _land(self, host: torch.Tensor, slot: int, a: int, b: int, chunk: torch.Tensor) -> None:
        _wait(self.events[slot])
        host[a:b].copy_(chunk)

    def _settle(self) -> None:
        for event in self.events:
            _wait(event)
        self.events = [None, None]

    def to_device(self, host: torch.Tensor, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
        """A device copy of ``host`` in ``dtype``; on the CPU a plain ``.to`` (no copy if nothing changes)."""
        if device.type != "cuda":
            return host.to(dtype)
        out = torch.empty(host.shape, dtype=dtype, device=device)
        self.copy_in(out, host)
        return out

    def to_host(self, device_rows: torch.Tensor) -> torch.Tensor:
        """An ordinary (pageable) host copy of device rows."""
        if device_rows.device.type != "cuda":
            return device_rows
        host = torch.empty(device_rows.shape, dtype=device_rows.dtype)
        self.copy_out(host, device_rows)
        return host


_TRANSFERS: dict[bool, Transfer] = {}


def transfer_for(device: torch.device) -> Transfer:
    """This process's one Transfer (pinned on CUDA), made on first use and kept."""
    pin = device.type == "cuda"
    if pin not in _TRANSFERS:
        _TRANSFERS[pin] = Transfer(pin=pin)
    return _TRANSFERS[pin]


def release_cached_device_memory(device: torch.device) -> None:
    """Give the caching allocator's free blocks back after capture, so cuBLAS/cuSOLVER workspaces and
    NCCL buffers allocated later (outside torch's allocator) find the memory capture held."""
    if device.type == "cuda":
        torch.cuda.empty_cache()
