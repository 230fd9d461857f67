"""The history ConfigMap's cache and batched writes (history_store.HistoryStore) against a core/v1 fake
that counts calls: placements within the cache period read once, finished attempts are written
together, a concurrent writer's records survive, and nothing pending is lost at a clean stop."""

from __future__ import annotations

import json
import threading
import time

import pytest
from influence_trace.planning.history import Observation
from influence_trace_operator.adapters.history_store import DATA_KEY, HistoryStore
from kubernetes.client.rest import ApiException

from tests.operator.fake_kube import FakeCore

NS, NAME = "ops", "influence-trace-history"


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def obs(i: int, outcome: str = "Succeeded") -> Observation:
    return Observation(id=f"uid-{i}/1", key="k", tokens_per_process=100, pool="h100", outcome=outcome,
                       predicted_gpu_bytes=10**9)


def stored_ids(core: FakeCore) -> list[str]:
    data = core.configmaps[(NS, NAME)]["data"][DATA_KEY]
    return [o["id"] for o in json.loads(data)["observations"]]


@pytest.fixture()
def core() -> FakeCore:
    return FakeCore()


def store(core: FakeCore, clock: Clock | None = None, flush_seconds: float = 3600.0,
          limit: int = 200) -> HistoryStore:
    """A store whose background writer waits an hour: the tests flush by hand, deterministically."""
    return HistoryStore(core, NS, NAME, limit, cache_seconds=30.0, flush_seconds=flush_seconds,
                        clock=clock or Clock())


def test_placements_within_the_cache_period_read_the_configmap_once(core: FakeCore) -> None:
    clock = Clock()
    s = store(core, clock)
    for _ in range(50):
        assert s.load().observations == []
    assert core.calls["get"] == 1
    clock.t += 31  # past cache_seconds: an edit by hand (or another writer) is seen
    s.load()
    assert core.calls["get"] == 2


def test_records_wait_and_go_out_in_one_write_placement_sees_them_at_once(core: FakeCore) -> None:
    s = store(core)
    for i in range(5):
        assert s.record(obs(i))
    assert core.calls["create"] + core.calls["replace"] == 0 and s.pending == 5
    assert [o.id for o in s.load().observations] == [f"uid-{i}/1" for i in range(5)]  # before the write
    assert s.flush()
    assert (core.calls["create"], core.calls["replace"]) == (1, 0)
    for i in range(5, 8):
        s.record(obs(i))
    assert s.flush()
    assert (core.calls["create"], core.calls["replace"]) == (1, 1)
    assert stored_ids(core) == [f"uid-{i}/1" for i in range(8)]
    assert core.calls["get"] == 1  # the write's own answer keeps the cache current: no re-read
    s.close()


def test_a_concurrent_writer_is_merged_not_overwritten(core: FakeCore) -> None:
    other = store(core)
    mine = store(core)
    other.record(obs(1))
    other.flush()
    mine.load()  # cached at the version holding uid-1
    mine.record(obs(2))

    def another_replica_writes() -> None:
        other.record(obs(3))
        other.flush()

    core.before_write.append(another_replica_writes)
    assert mine.flush()
    assert core.calls["replace"] == 3  # the other's write, mine refused (409), mine again after a re-read
    assert stored_ids(core) == ["uid-1/1", "uid-3/1", "uid-2/1"]
    assert mine.pending == 0


def test_an_id_is_recorded_once_even_when_a_predecessor_wrote_it(core: FakeCore) -> None:
    before = store(core)
    before.record(obs(1))
    before.flush()
    s = store(core)
    s.load()
    assert not s.record(obs(1))  # a pass re-run after a conflict, or the predecessor's record
    assert s.record(obs(2)) and not s.record(obs(2))
    s.flush()
    assert stored_ids(core) == ["uid-1/1", "uid-2/1"]


def test_a_refused_write_keeps_the_records_for_the_next_flush(core: FakeCore) -> None:
    s = store(core)
    s.record(obs(1))
    core.errors_to_inject.append(ApiException(status=500, reason="Internal Server Error"))
    with pytest.raises(ApiException):
        s.flush()
    assert s.pending == 1 and (NS, NAME) not in core.configmaps
    assert s.flush() and stored_ids(core) == ["uid-1/1"]


def test_a_configmap_deleted_by_hand_is_created_again(core: FakeCore) -> None:
    s = store(core)
    s.record(obs(1))
    s.flush()
    del core.configmaps[(NS, NAME)]
    s.record(obs(2))
    assert s.flush()
    assert stored_ids(core) == ["uid-2/1"]  # the deletion emptied the history; new records go on


def test_the_limit_keeps_the_newest(core: FakeCore) -> None:
    s = store(core, limit=3)
    for i in range(5):
        s.record(obs(i))
    s.flush()
    assert stored_ids(core) == ["uid-2/1", "uid-3/1", "uid-4/1"]


def test_the_background_writer_coalesces_a_burst_and_close_writes_the_rest(core: FakeCore) -> None:
    s = store(core, flush_seconds=0.2)
    for i in range(20):
        s.record(obs(i))
    deadline = time.monotonic() + 10
    while s.pending and time.monotonic() < deadline:
        time.sleep(0.05)
    assert s.pending == 0
    assert core.calls["create"] + core.calls["replace"] <= 2  # 20 attempts, one write (two if split)
    s.record(obs(20))
    s.close()  # SIGTERM: kopf's cleanup closes the store before the process ends
    assert s.pending == 0 and len(stored_ids(core)) == 21


def test_a_slow_re_read_does_not_hold_up_placements_that_have_a_copy(core: FakeCore) -> None:
    clock = Clock()
    s = store(core, clock)
    s.record(obs(1))
    s.flush()
    clock.t += 31  # the copy is due for a re-read
    entered, gate = threading.Event(), threading.Event()
    core.before_read.append(lambda: (entered.set(), gate.wait(10)))
    reader = threading.Thread(target=s.load)
    reader.start()
    assert entered.wait(5)  # one placement is re-reading, and its GET hangs
    start = time.monotonic()
    assert [o.id for o in s.load().observations] == ["uid-1/1"]  # the others place with the copy
    assert time.monotonic() - start < 1
    gate.set()
    reader.join(5)
    assert core.calls["get"] == 2


def test_placing_a_trace_resolves_the_models_shapes_once(core: FakeCore, monkeypatch: pytest.MonkeyPatch,
                                                         ) -> None:
    """Estimate, learned placement, pool choice and duration share one resolved plan (Estimate.shapes,
    Estimate.workload): a model read from config.json is read once per placement, not once per use."""
    import sys

    from influence_trace.planning import memory_model
    from influence_trace_operator.adapters import history_store
    from influence_trace_operator.rules.settings import OperatorSettings

    from tests.operator.operator_builders import H100, H200, trace

    calls: list[str] = []
    real = memory_model.resolve_shapes
    counted = lambda spec: (calls.append("shapes"), real(spec))[1]  # noqa: E731
    for name, module in list(sys.modules.items()):  # every module that names it
        if name.startswith("influence_trace.planning") and hasattr(module, "resolve_shapes"):
            monkeypatch.setattr(module, "resolve_shapes", counted)
    s = store(core)
    s.record(obs(1))  # a history to learn from: the history's configuration key needs the shapes too
    placed = history_store.place(s, trace().spec, [H100, H200], OperatorSettings())
    assert placed.chosen.pool is not None and placed.duration is not None
    assert placed.model.shapes == real(trace().spec)
    assert calls == ["shapes"]
