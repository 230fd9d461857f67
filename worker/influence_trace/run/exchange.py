"""Moving captured factors from the ranks that captured them to the rank that owns each module.

After the data-parallel capture every rank holds its own responses' rows of every module. The owner
of a module needs all rows of that module and nobody else needs any. The exchange runs in rounds:
in round k every rank receives the k-th of its modules from every other rank while sending its
pieces of the other owners' k-th modules, then drops what it sent. A rank therefore never holds
more than its own share plus the modules it owns (the memory model's per-process factor bytes).
"""

from __future__ import annotations

import torch
import torch.distributed as dist

from influence_trace.run.partition import Share
from influence_trace.trace.capture import Factors


def _rounds(assignment: list[list[int]]) -> list[dict[int, int]]:
    """Per round, owner rank -> module index (an owner with fewer modules sits later rounds out)."""
    depth = max((len(mods) for mods in assignment), default=0)
    return [{rank: mods[k] for rank, mods in enumerate(assignment) if k < len(mods)} for k in range(depth)]


def _full_buffers(local: Factors, name: str, total_rows: int, pin: bool) -> tuple[torch.Tensor, torch.Tensor]:
    u, v = local.u[name], local.v[name]
    return (torch.empty((total_rows, u.shape[1]), dtype=u.dtype, pin_memory=pin),
            torch.empty((total_rows, v.shape[1]), dtype=v.dtype, pin_memory=pin))


def exchange_factors(local: Factors, names: list[str], assignment: list[list[int]], shares: list[Share],
                     me: int, pin: bool) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Return ``name -> (u, v)`` over every token row for the modules this rank owns.

    ``local`` holds this rank's rows (``shares[me]``) of every module and is emptied as it goes.
    Tags are ``2 * module index + side`` so the u and v messages of a pair of ranks never mix.
    """
    total = shares[-1].row_last
    owned: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
    for round_modules in _rounds(assignment):
        pending = []
        mine = round_modules.get(me)
        if mine is not None:
            name = names[mine]
            full = _full_buffers(local, name, total, pin)
            for side, (buffer, piece) in enumerate(zip(full, (local.u[name], local.v[name]), strict=True)):
                buffer[shares[me].row_first : shares[me].row_last] = piece
                for src, share in enumerate(shares):
                    if src != me and share.rows:
                        view = buffer[share.row_first : share.row_last]
                        pending.append(dist.irecv(view, src=src, tag=2 * mine + side))
            owned[name] = full
        for owner, module in round_modules.items():
            if owner != me and shares[me].rows:
                pieces = (local.u[names[module]], local.v[names[module]])
                pending += [dist.isend(p, dst=owner, tag=2 * module + side) for side, p in enumerate(pieces)]
        for work in pending:
            work.wait()
        for module in round_modules.values():  # sent or copied: this rank's own rows are not needed
            local.u.pop(names[module]), local.v.pop(names[module])
    return owned
