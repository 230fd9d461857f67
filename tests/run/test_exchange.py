"""The exchange's order of operations (run/exchange.py), in one process with a fake link standing for
rank 1 of two: a round's rows are read only after its handles are waited on, the next round is posted
beside a module's work only when overlapping, and no more than two rounds' buffers are ever alive
(a round's buffers are not reused while their consumer works on them)."""

from __future__ import annotations

import weakref
from typing import Any

import pytest
import torch
from influence_trace.planning.memory_model import exchange_overlap_fits
from influence_trace.run.exchange import Exchange, Op
from influence_trace.run.partition import Share
from influence_trace.trace.capture import Factors
from influence_trace.trace.ledger import MemoryLedger
from influence_trace.trace.timing import StageTimer

NAMES = ["m0", "m1", "m2", "m3"]
WIDTHS = {"m0": (2, 3), "m1": (3, 2), "m2": (4, 1), "m3": (1, 4)}  # (k_out, k_in)
SHARES = [Share(0, 2, 0, 3), Share(2, 3, 3, 5)]  # rank 0: rows [0, 3); rank 1: rows [3, 5)
ASSIGNMENT = [[0, 2, 3], [1]]  # rounds: {0: m0, 1: m1}, {0: m2}, {0: m3}
CPU = torch.device("cpu")


def rows_of(name: str, side: int, first: int, last: int, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """Distinct values (exact in float32 too) for rows [first, last) of one module's side."""
    k = WIDTHS[name][side]
    base = 1000 * NAMES.index(name) + 100 * side
    return (torch.arange(first * k, last * k, dtype=torch.float64).view(last - first, k) + base).to(dtype)


class Work:
    """A handle: the peer's rows land in the receive buffers only when it is waited on."""

    def __init__(self, log: list, number: int, fills: list[tuple[torch.Tensor, torch.Tensor]]) -> None:
        self.log, self.number, self.fills = log, number, fills

    def wait(self) -> None:
        self.log.append(("wait", self.number))
        for buffer, values in self.fills:
            buffer.copy_(values)


class Peer:
    """Rank 1's side of every round, for rank 0: its rows of rank 0's modules, and what it receives."""

    def __init__(self, log: list) -> None:
        self.log, self.posted, self.alive = log, 0, []

    def post(self, ops: list[Op]) -> list[Any]:
        number, self.posted = self.posted, self.posted + 1
        self.log.append(("post", number))
        self.alive.append([weakref.ref(t) for send, t, _, _ in ops if not send])
        live = sum(any(ref() is not None for ref in refs) for refs in self.alive)
        assert live <= 2, f"round {number} posted while {live - 1} earlier rounds' buffers are alive"
        fills = []
        for send, tensor, peer, tag in ops:
            assert peer == 1
            if not send:  # rank 1's rows [3, 5) of module tag // 2, side tag % 2
                fills.append((tensor, rows_of(NAMES[tag // 2], tag % 2, 3, 5)))
        return [Work(self.log, number, fills)]


class Ledger(MemoryLedger):
    """Records every declaration, in order."""

    def __init__(self) -> None:
        super().__init__()
        self.declared: list[tuple[str, int]] = []

    def allocate(self, name: str, nbytes: int, stage: str) -> None:
        self.declared.append((name, nbytes))
        super().allocate(name, nbytes, stage)


def consume(ahead: bool) -> tuple[list, Ledger]:
    log: list = []
    local = Factors({n: rows_of(n, 0, 0, 3) for n in NAMES}, {n: rows_of(n, 1, 0, 3) for n in NAMES}, None)
    ledger = Ledger()
    exchange = Exchange(local, NAMES, ASSIGNMENT, SHARES, 0, CPU, torch.float64, ledger, ahead, Peer(log))
    for rows in exchange.rows(StageTimer()):
        log.append(("yield", rows.index))
        u, v = rows.take()
        name = NAMES[rows.index]
        torch.testing.assert_close(u, rows_of(name, 0, 0, 5), rtol=0, atol=0)  # read after its wait
        torch.testing.assert_close(v, rows_of(name, 1, 0, 5), rtol=0, atol=0)
        rows.release()
        log.append(("released", rows.index))
        u.mul_(-1)  # the consumer's work on the buffers it was given
        log.append(("done", rows.index))
        del u, v
    assert not local.u and not local.v  # every piece sent or copied, then dropped
    assert not {"exchange", "exchange_ahead"} & set(ledger.current)
    return log, ledger


def test_without_overlap_each_round_is_posted_after_the_module_before_it() -> None:
    log, ledger = consume(ahead=False)
    assert log == [("post", 0), ("wait", 0), ("yield", 0), ("released", 0), ("done", 0),
                   ("post", 1), ("wait", 1), ("yield", 2), ("released", 2), ("done", 2),
                   ("post", 2), ("wait", 2), ("yield", 3), ("released", 3), ("done", 3)]
    row = 5 * 5 * 8  # every module here is 5 rows x 5 float64 columns (CPU: no device copies to send)
    assert ledger.declared == [("exchange", row)] * 6


def test_with_overlap_the_next_round_runs_beside_the_module() -> None:
    log, ledger = consume(ahead=True)
    assert log == [("post", 0), ("wait", 0), ("yield", 0), ("post", 1), ("released", 0), ("done", 0),
                   ("wait", 1), ("yield", 2), ("post", 2), ("released", 2), ("done", 2),
                   ("wait", 2), ("yield", 3), ("released", 3), ("done", 3)]
    row = 5 * 5 * 8
    assert ledger.declared == [("exchange", row)] * 2 + [("exchange_ahead", row)] * 4  # beside m0, m2


def test_the_overlap_is_decided_by_the_room() -> None:
    assert exchange_overlap_fits(None, 10, 10)  # no limit known
    assert exchange_overlap_fits(20, 10, 10)
    assert not exchange_overlap_fits(19, 10, 10)
    asked: list[int] = []

    def ahead(nbytes: int) -> bool:
        asked.append(nbytes)
        return False

    log: list = []
    local = Factors({n: rows_of(n, 0, 0, 3) for n in NAMES}, {n: rows_of(n, 1, 0, 3) for n in NAMES}, None)
    exchange = Exchange(local, NAMES, ASSIGNMENT, SHARES, 0, CPU, torch.float64, MemoryLedger(), ahead,
                        Peer(log))
    for rows in exchange.rows(StageTimer()):
        rows.take()
        rows.release()
    assert asked == [5 * 5 * 8, 5 * 5 * 8]  # rounds 1 and 2: the owned module's rows (CPU: no send copies)
    assert [e for e in log if e[0] == "post"] == [("post", 0), ("post", 1), ("post", 2)]


@pytest.mark.parametrize("ahead", [False, True])
def test_a_rank_without_a_module_in_a_round_still_sends(ahead: bool) -> None:
    """Rank 1's view (owns m1 only): it sends its rows of m0, m2 and m3 and receives m1's."""
    sent: list[tuple[int, int]] = []

    class Rank0:
        def post(self, ops: list[Op]) -> list[Any]:
            fills = []
            for send, tensor, peer, tag in ops:
                assert peer == 0
                if send:
                    sent.append((tag, tensor.shape[0]))
                else:
                    fills.append((tensor, rows_of(NAMES[tag // 2], tag % 2, 0, 3)))
            return [Work([], 0, fills)]

    local = Factors({n: rows_of(n, 0, 3, 5) for n in NAMES}, {n: rows_of(n, 1, 3, 5) for n in NAMES}, None)
    exchange = Exchange(local, NAMES, ASSIGNMENT, SHARES, 1, CPU, torch.float64, MemoryLedger(), ahead,
                        Rank0())
    got = []
    for rows in exchange.rows(StageTimer()):
        u, v = rows.take()
        rows.release()
        got.append(rows.index)
        torch.testing.assert_close(u, rows_of("m1", 0, 0, 5), rtol=0, atol=0)
        torch.testing.assert_close(v, rows_of("m1", 1, 0, 5), rtol=0, atol=0)
    assert got == [1]
    assert sorted(sent) == [(0, 2), (1, 2), (4, 2), (5, 2), (6, 2), (7, 2)]


def test_received_rows_become_the_hessian_dtype_a_side_at_a_time() -> None:
    """float32 rows received for a float64 Hessian: converted where they are, the wider side first; at
    most one side exists twice, and the round's claim says so at every step."""
    ledger = Ledger()
    local = Factors({n: rows_of(n, 0, 3, 5, torch.float32) for n in NAMES},
                    {n: rows_of(n, 1, 3, 5, torch.float32) for n in NAMES}, None)

    class Rank0:
        def post(self, ops: list[Op]) -> list[Any]:
            fills = [(t, rows_of(NAMES[tag // 2], tag % 2, 0, 3, torch.float32))
                     for send, t, _, tag in ops if not send]
            return [Work([], 0, fills)]

    exchange = Exchange(local, NAMES, ASSIGNMENT, SHARES, 1, CPU, torch.float64, ledger, False, Rank0())
    for rows in exchange.rows(StageTimer()):
        u, v = rows.take()
        assert u.dtype == v.dtype == torch.float64
        torch.testing.assert_close(u, rows_of("m1", 0, 0, 5), rtol=0, atol=0)
        torch.testing.assert_close(v, rows_of("m1", 1, 0, 5), rtol=0, atol=0)
        rows.release()
    u32, v32 = 5 * 3 * 4, 5 * 2 * 4  # m1: k_out 3 (the wider side), k_in 2, five rows
    steps = [nbytes for name, nbytes in ledger.declared if name == "exchange"]
    assert steps == [u32 + v32,  # posted (rank 1 sends no copies on the CPU)
                     u32 + v32,  # received
                     u32 + v32 + 2 * u32, 2 * u32 + v32,  # u converted, its float32 rows dropped
                     2 * u32 + v32 + 2 * v32, 2 * u32 + 2 * v32,  # then v
                     0, 0, 0, 0]  # rounds 1 and 2: rank 1 only sends, its stored rows themselves
