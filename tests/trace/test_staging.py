"""The staging logic between the factor store and the device, with ordinary CPU buffers standing in for
pinned ones (the same code; on CUDA the copies are asynchronous and events order them)."""

from __future__ import annotations

import pytest
import torch
from influence_trace.api.contract import HostOutOfMemory
from influence_trace.planning.memory_model import pinned_reservation
from influence_trace.trace import staging
from influence_trace.trace.device_peak import PeakTracker
from influence_trace.trace.staging import CaptureStaging, Transfer


def _batches():
    """Three batches of (store rows, values of two modules' u) as capture would produce them."""
    g = torch.Generator().manual_seed(0)
    rows = [torch.tensor([4, 5, 6, 0, 1]), torch.tensor([2, 3]), torch.tensor([7, 8, 9])]
    return [(r, torch.randn(len(r), 3, generator=g, dtype=torch.float64),
             torch.randn(len(r), 2, generator=g, dtype=torch.float64)) for r in rows]


def test_capture_staging_lands_each_batch_in_its_rows_one_batch_late() -> None:
    store_a = torch.zeros(10, 3, dtype=torch.bfloat16)
    store_b = torch.zeros(10, 2, dtype=torch.bfloat16)
    st = CaptureStaging(capacity=5 * (3 + 2), dtype=torch.bfloat16, pin=False)
    batches = _batches()
    for n, (dest, a, b) in enumerate(batches):
        st.begin(dest)
        st.put(store_a, a)
        st.put(store_b, b)
        st.end()
        # Batch n is still staged (the GPU would be running it); batch n - 1 has landed.
        assert float(store_a[dest].abs().sum()) == 0.0
        if n:
            prev_dest, prev_a, _ = batches[n - 1]
            assert torch.equal(store_a[prev_dest], prev_a.to(torch.bfloat16))
    st.finish()
    for dest, a, b in batches:
        assert torch.equal(store_a[dest], a.to(torch.bfloat16))
        assert torch.equal(store_b[dest], b.to(torch.bfloat16))
    assert st.nbytes == 2 * 25 * 2  # two slots of the largest batch, nothing per batch


def test_capture_staging_refuses_rows_beyond_the_plan() -> None:
    st = CaptureStaging(capacity=6, dtype=torch.float32, pin=False)
    store = torch.zeros(4, 3)
    st.begin(torch.tensor([0, 1]))
    st.put(store, torch.ones(2, 3))
    with pytest.raises(RuntimeError, match="fired twice"):
        st.put(store, torch.ones(2, 3))  # a second store of the same module (a recomputed forward)
    with pytest.raises(RuntimeError, match="3 rows captured for a batch of 2"):
        st.put(store, torch.ones(3, 1))


@pytest.mark.parametrize("chunk_bytes", [8, 24, 40, 10_000])  # one row per chunk, several, odd, one chunk
def test_transfer_copies_every_row_in_chunks(chunk_bytes: int) -> None:
    g = torch.Generator().manual_seed(1)
    host = torch.randn(11, 2, generator=g).to(torch.bfloat16)
    t = Transfer(chunk_bytes=chunk_bytes, pin=False)
    out = torch.empty(11, 2, dtype=torch.float64)
    t.copy_in(out, host)  # the dtype-changing copy, chunk by chunk
    assert torch.equal(out, host.to(torch.float64))
    back = torch.empty_like(host)
    t.copy_out(back, host.clone())
    assert torch.equal(back, host)
    assert all(s.numel() == max(chunk_bytes, 4) for s in t.slots)  # reused, grown only for a wide row


def test_pinned_reservation_is_the_next_power_of_two() -> None:
    assert [pinned_reservation(n) for n in (0, 1, 2, 3, 4096, 4097, 3 * 2**30)] == [
        0, 1, 2, 4, 4096, 8192, 4 * 2**30]


def test_a_failed_staging_allocation_is_host_out_of_memory(monkeypatch: pytest.MonkeyPatch) -> None:
    def fail(*args, **kwargs):
        raise RuntimeError("CUDA error: out of memory")  # what cudaHostAlloc's failure looks like

    monkeypatch.setattr(staging.torch, "empty", fail)
    with pytest.raises(HostOutOfMemory, match="pinned host memory") as info:
        staging.host_buffer(1024, torch.float32, pin=True)
    assert info.value.exit_code == 76


def test_peak_tracker_keeps_the_largest_window() -> None:
    """torch's counter is reset every capture batch; the run's peak must survive the resets."""
    counter = {"peak": 0, "now": 0}

    def allocate(n: int) -> None:
        counter["now"] += n
        counter["peak"] = max(counter["peak"], counter["now"])

    def reset() -> None:
        counter["peak"] = counter["now"]

    tracker = PeakTracker(lambda: counter["peak"], reset, lambda: counter["now"])
    allocate(100)  # weights
    allocate(900)  # an earlier stage's large buffer...
    allocate(-900)  # ...freed
    assert tracker.start_window() == 100  # capture batch 1
    allocate(300)
    allocate(-300)
    assert tracker.start_window() == 100  # batch 2 resets the counter: torch alone now says 400
    allocate(50)
    assert counter["peak"] == 150
    assert tracker.peak() == 1000
    allocate(1500)
    assert tracker.peak() == 1650
