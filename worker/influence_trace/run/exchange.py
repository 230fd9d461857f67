"""Moving captured factors from the ranks that captured them to the rank that owns each module.

After the data-parallel capture every rank holds its own responses' rows of every module. The owner
of a module needs all rows of that module and nobody else needs any. The exchange runs in rounds:
in round k every rank receives the k-th of its modules from every other rank while sending its
pieces of the other owners' k-th modules, then drops what it sent. A rank therefore never holds
more than its own share plus the modules in flight (the memory model's per-process factor bytes).

The owner's rows are received straight into the buffers the Hessian reads: device buffers over NCCL
on GPUs (this rank's own rows go up once, through the reused pinned chunks of trace/staging.py, and
nothing comes back to the host), host tensors over gloo on the CPU (the same code). A round's
buffers are the ledger's ``exchange``. Once received, the rows are the module's factors: as they
are when the capture dtype is the Hessian's, else converted where they are, a side at a time, and
the engine stages them without a copy.

Overlap: with ``ahead``, the next round is posted as soon as the current module's rows are staged,
so its transfers run while that module's Hessian is built, factored and scored; its handles are
waited on only when the next module is needed. Its buffers are then ``exchange_ahead`` (the memory
model's term). At most two rounds' buffers exist: a round is posted only after the module before
the one in flight has released its rows, and a round's buffers are never written again (each round
gets its own, which the allocator reuses only once nothing refers to them).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Protocol

import torch
import torch.distributed as dist

from influence_trace.run.partition import Share
from influence_trace.trace.capture import Factors
from influence_trace.trace.ledger import MemoryLedger
from influence_trace.trace.ranks import ModuleRows
from influence_trace.trace.staging import transfer_for
from influence_trace.trace.timing import Timer

STAGE = "grad_staging"
Op = tuple[bool, torch.Tensor, int, int]  # (send, tensor, peer rank, tag)


class Link(Protocol):
    """Posts one round's point-to-point operations; each returned handle has ``wait()``."""

    def post(self, ops: list[Op]) -> list[Any]: ...


class DistLink:
    """torch.distributed's batched point-to-point operations (NCCL matches them by order, which is the
    same on both ends: per pair of ranks, u before v; gloo by tag)."""

    def post(self, ops: list[Op]) -> list[Any]:
        if not ops:
            return []
        return dist.batch_isend_irecv([dist.P2POp(dist.isend if send else dist.irecv, t, peer, tag=tag)
                                       for send, t, peer, tag in ops])


def rounds(assignment: list[list[int]]) -> list[dict[int, int]]:
    """Per round, owner rank -> module index (an owner with fewer modules sits later rounds out)."""
    depth = max((len(mods) for mods in assignment), default=0)
    return [{rank: mods[k] for rank, mods in enumerate(assignment) if k < len(mods)} for k in range(depth)]


def _module_bytes(local: Factors, name: str, rows: int) -> int:
    return rows * sum(t.shape[1] * t.element_size() for t in (local.u[name], local.v[name]))


@dataclass
class Round:
    """One round in flight: its handles, the owned module's buffers, the copies being sent."""

    number: int
    modules: dict[int, int]  # owner rank -> module index
    claim: str  # the ledger name of its buffers: "exchange", or "exchange_ahead" beside a module's work
    handles: list[Any] = field(default_factory=list)
    received: list[torch.Tensor] = field(default_factory=list)  # [u, v] over every row, or [] (no module)
    sent: list[torch.Tensor] = field(default_factory=list)  # device copies of this rank's pieces (CUDA)


class Exchange:
    """The rounds of one trace's exchange, for this rank; ``rows`` yields its modules one at a time."""

    def __init__(self, local: Factors, names: list[str], assignment: list[list[int]], shares: list[Share],
                 me: int, device: torch.device, dtype: torch.dtype, ledger: MemoryLedger,
                 ahead: bool | Callable[[int], bool], link: Link | None = None) -> None:
        """``local`` holds this rank's rows (``shares[me]``) of every module and is emptied as it goes;
        ``dtype`` is the Hessian's, which the yielded rows come in. ``ahead`` (or ``ahead(nbytes)``)
        says whether the next round may be posted beside a module's work (bytes: that round's)."""
        self.local, self.names, self.shares, self.me, self.dtype = local, names, shares, me, dtype
        self.device, self.ledger, self.link = device, ledger, link or DistLink()
        self.rounds = rounds(assignment)
        self.ahead = ahead if callable(ahead) else (lambda nbytes, value=ahead: value)
        self.total = shares[-1].row_last
        self.on_device = device.type == "cuda"
        self.pending: Round | None = None

    def round_bytes(self, k: int) -> int:
        """Bytes of round k's buffers: the owned module's full rows, plus on CUDA this rank's pieces for
        the other owners (device copies; on the CPU the pieces sent are the stored rows themselves)."""
        modules = self.rounds[k]
        mine = modules.get(self.me)
        nbytes = 0 if mine is None else _module_bytes(self.local, self.names[mine], self.total)
        if self.on_device:
            rows = self.shares[self.me].rows
            others = [m for owner, m in modules.items() if owner != self.me]
            nbytes += sum(_module_bytes(self.local, self.names[m], rows) for m in others)
        return nbytes

    def rows(self, timer: Timer) -> Iterator[ModuleRows]:
        """This rank's modules in round order, each over every token row, from the buffers they were
        received in. The consumer calls ``release`` once it has staged them (that may post the next
        round) and asks for the next module only when it is done with this one."""
        with timer.stage(STAGE):
            if self.on_device:  # every rank's NCCL communicator is up before the first point-to-point
                dist.all_reduce(torch.zeros(1, device=self.device))
        for k in range(len(self.rounds)):
            with timer.stage(STAGE):
                current = self.pending or self.post(k, "exchange")
                self.pending = None
                self.wait(current)
            mine = current.modules.get(self.me)
            if mine is None:
                self.ledger.free(current.claim)
                continue
            rows = ModuleRows(mine, current.received, partial(self.release, current))
            current.received = []
            yield rows
        assert self.pending is None

    def post(self, k: int, claim: str) -> Round:
        """Declare round k's buffers, make them, and post its sends and receives."""
        self.ledger.allocate(claim, self.round_bytes(k), STAGE)
        current = Round(k, self.rounds[k], claim)
        ops: list[Op] = []
        mine = current.modules.get(self.me)
        if mine is not None:
            current.received = self._receive_into(mine, ops)
        transfer = transfer_for(self.device)
        for owner, module in current.modules.items():
            if owner == self.me or not self.shares[self.me].rows:
                continue
            name = self.names[module]
            for side, piece in enumerate((self.local.u[name], self.local.v[name])):
                sent = transfer.to_device(piece, self.device, piece.dtype)
                current.sent.append(sent)
                ops.append((True, sent, owner, 2 * module + side))
        current.handles = self.link.post(ops)
        return current

    def wait(self, current: Round) -> None:
        """Wait for every handle of the round; then what was sent, and this rank's own rows of the
        round's modules, are dropped, and the received rows become the module's factors."""
        for handle in current.handles:
            handle.wait()
        current.handles, current.sent = [], []
        for module in current.modules.values():  # sent or copied: this rank's own rows are not needed
            self.local.u.pop(self.names[module]), self.local.v.pop(self.names[module])
        self._as_factors(current)

    def _as_factors(self, current: Round) -> None:
        """The received rows in the Hessian dtype, where they are: as received when the dtypes agree,
        else converted a side at a time, the wider first, each received side dropped once converted
        (so at most one side exists twice). The round's claim follows what exists."""
        sides = current.received
        held = [t.numel() * t.element_size() for t in sides]
        self.ledger.allocate(current.claim, sum(held), STAGE)
        if all(t.dtype == self.dtype for t in sides):
            return
        itemsize = torch.finfo(self.dtype).bits // 8
        for i in sorted(range(len(sides)), key=lambda i: -sides[i].numel()):
            converted = sides[i].numel() * itemsize
            self.ledger.allocate(current.claim, sum(held) + converted, STAGE)
            sides[i] = sides[i].to(self.dtype)  # the received side goes with its last reference
            held[i] = converted
            self.ledger.allocate(current.claim, sum(held), STAGE)

    def release(self, done: Round) -> None:
        """The consumer has staged round ``done``'s rows: its claim goes, and the next round is posted
        now when it may run beside the module's work (else when the next module is asked for)."""
        self.ledger.free(done.claim)
        following = done.number + 1
        if following < len(self.rounds) and self.pending is None \
                and self.ahead(self.round_bytes(following)):
            self.pending = self.post(following, "exchange_ahead")

    def _receive_into(self, index: int, ops: list[Op]) -> list[torch.Tensor]:
        """The owned module's full u and v on the device: this rank's rows copied in, the others'
        receives appended to ``ops``."""
        name, share = self.names[index], self.shares[self.me]
        full = []
        for side, piece in enumerate((self.local.u[name], self.local.v[name])):
            buffer = torch.empty((self.total, piece.shape[1]), dtype=piece.dtype, device=self.device)
            own = buffer[share.row_first : share.row_last]
            if self.on_device:
                transfer_for(self.device).copy_in(own, piece)
            else:
                own.copy_(piece)
            for src, theirs in enumerate(self.shares):
                if src != self.me and theirs.rows:
                    ops.append((False, buffer[theirs.row_first : theirs.row_last], src, 2 * index + side))
            full.append(buffer)
        return full
