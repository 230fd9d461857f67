"""Moving captured factors from the ranks that captured them to the rank that owns each module.

After the data-parallel capture every rank holds its own responses' rows of every module. The owner
of a module needs all rows of that module and nobody else needs any. The exchange runs in rounds:
in round k every rank receives the k-th of its modules from every other rank while sending its
pieces of the other owners' k-th modules, then drops what it sent. A rank therefore never holds
more than its own share plus the modules it owns (the memory model's per-process factor bytes).

On GPUs the rows go over NCCL through device buffers (one round's module at a time, declared to the
ledger as ``exchange``), not over gloo TCP: tens of GB per rank would otherwise cross the host
network stack. Each round still ends before the next begins; overlapping a round's transfers with
the previous module's Hessian work is not done yet.
"""

from __future__ import annotations

import torch
import torch.distributed as dist

from influence_trace.run.partition import Share
from influence_trace.trace.capture import Factors
from influence_trace.trace.ledger import MemoryLedger
from influence_trace.trace.staging import Transfer, transfer_for

STAGE = "grad_staging"
Pair = tuple[torch.Tensor, torch.Tensor]


def _rounds(assignment: list[list[int]]) -> list[dict[int, int]]:
    """Per round, owner rank -> module index (an owner with fewer modules sits later rounds out)."""
    depth = max((len(mods) for mods in assignment), default=0)
    return [{rank: mods[k] for rank, mods in enumerate(assignment) if k < len(mods)} for k in range(depth)]


def _module_bytes(local: Factors, name: str, rows: int) -> int:
    return rows * sum(t.shape[1] * t.element_size() for t in (local.u[name], local.v[name]))


def _exchange_bytes(local: Factors, names: list[str], round_modules: dict[int, int], shares: list[Share],
                    me: int, total: int, on_device: bool) -> int:
    """Device bytes of one round: the owned module's full rows, plus this rank's pieces for the other
    owners (on CUDA they are device copies; on the CPU the pieces are the stored rows themselves)."""
    mine = round_modules.get(me)
    nbytes = 0 if mine is None else _module_bytes(local, names[mine], total)
    if on_device:
        others = [m for owner, m in round_modules.items() if owner != me]
        nbytes += sum(_module_bytes(local, names[m], shares[me].rows) for m in others)
    return nbytes


def exchange_factors(local: Factors, names: list[str], assignment: list[list[int]], shares: list[Share],
                     me: int, device: torch.device, ledger: MemoryLedger) -> dict[str, Pair]:
    """Return ``name -> (u, v)`` over every token row, in host memory, for the modules this rank owns.

    ``local`` holds this rank's rows (``shares[me]``) of every module and is emptied as it goes.
    On CUDA the rows travel over NCCL between device buffers (host rows go up and come back through
    the reused pinned chunks of trace/staging.py); on the CPU over gloo between host tensors. Tags
    are ``2 * module index + side`` (gloo matches by tag; NCCL by order, which is the same on both
    ends: per pair of ranks, u before v).
    """
    total = shares[-1].row_last
    on_device = device.type == "cuda"
    transfer = transfer_for(device)
    if on_device:  # every rank's NCCL communicator is up before the first point-to-point batch
        dist.all_reduce(torch.zeros(1, device=device))
    owned: dict[str, Pair] = {}
    for round_modules in _rounds(assignment):
        nbytes = _exchange_bytes(local, names, round_modules, shares, me, total, on_device)
        ledger.allocate("exchange", nbytes, STAGE)
        ops: list[dist.P2POp] = []
        mine = round_modules.get(me)
        full: tuple[torch.Tensor, ...] = ()
        if mine is not None:
            full = _receive_into(local, names[mine], mine, shares, me, total, device, transfer, ops)
        for owner, module in round_modules.items():
            if owner != me and shares[me].rows:
                pieces = (local.u[names[module]], local.v[names[module]])
                for side, piece in enumerate(pieces):
                    sent = transfer.to_device(piece, device, piece.dtype)
                    ops.append(dist.P2POp(dist.isend, sent, owner, tag=2 * module + side))
        if ops:
            for work in dist.batch_isend_irecv(ops):
                work.wait()
        del ops
        if mine is not None:
            owned[names[mine]] = (transfer.to_host(full[0]), transfer.to_host(full[1]))
        del full
        ledger.free("exchange")
        for module in round_modules.values():  # sent or copied: this rank's own rows are not needed
            local.u.pop(names[module]), local.v.pop(names[module])
    return owned


def _receive_into(local: Factors, name: str, index: int, shares: list[Share], me: int, total: int,
                  device: torch.device, transfer: Transfer, ops: list) -> Pair:
    """The owned module's full u and v on ``device``: this rank's rows copied in, the others' receives
    appended to ``ops``."""
    full = []
    for side, piece in enumerate((local.u[name], local.v[name])):
        buffer = torch.empty((total, piece.shape[1]), dtype=piece.dtype, device=device)
        own = buffer[shares[me].row_first : shares[me].row_last]
        if device.type == "cuda":
            transfer.copy_in(own, piece)
        else:
            own.copy_(piece)
        for src, share in enumerate(shares):
            if src != me and share.rows:
                view = buffer[share.row_first : share.row_last]
                ops.append(dist.P2POp(dist.irecv, view, src, tag=2 * index + side))
        full.append(buffer)
    return full[0], full[1]
