"""Work the operator skips under load, and only where nothing can be missed: the watch event that
echoes its own status write, a resync of a trace a pass looked at within the resync period, and the
GET of a trace whose own watch event carries it (a stale copy costs a 409 and a fresh read; the
informer's other shortcuts are in test_informer.py)."""

from __future__ import annotations

import threading

import pytest
from influence_trace_operator.reconciler.reconcile import Reconciler
from influence_trace_operator.rules.labels import CANCEL as CANCEL_ANNOTATION
from influence_trace_operator.rules.settings import OperatorSettings
from influence_trace_operator.runtime import lifecycle, on_trace

from tests.operator.fake_kube import FakeKube
from tests.operator.operator_builders import H100, H200
from tests.operator.test_reconciler import NAME, NS


@pytest.fixture()
def reconciler(kube: FakeKube) -> Reconciler:
    return Reconciler(kube, OperatorSettings(resync_seconds=30), [H100, H200])


def passes(reconciler: Reconciler, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    calls: list[str] = []
    real = reconciler.reconcile
    monkeypatch.setattr(reconciler, "reconcile", lambda ns, name: (calls.append(name), real(ns, name)))
    return calls


def test_the_echo_of_our_own_status_write_is_skipped_but_a_user_edit_is_not(
    kube: FakeKube, reconciler: Reconciler, monkeypatch: pytest.MonkeyPatch
) -> None:
    reconciler.reconcile(NS, NAME)
    assert kube.status_writes == 1
    calls = passes(reconciler, monkeypatch)
    echo = kube.get_trace(NS, NAME)
    on_trace.on_trace_event(reconciler, "MODIFIED", echo)
    assert calls == []
    edited = {**echo, "metadata": {**echo["metadata"], "resourceVersion": "edited"}}
    on_trace.on_trace_event(reconciler, "MODIFIED", edited)
    assert calls == [NAME]


def test_resync_skips_a_trace_passed_within_the_period_and_not_after(
    reconciler: Reconciler, monkeypatch: pytest.MonkeyPatch
) -> None:
    rt = lifecycle.Runtime(reconciler.settings, reconciler, threading.Event())
    assert lifecycle.resync_once(rt) == 1  # never looked at: reconciled
    assert lifecycle.resync_once(rt) == 0  # just passed
    reconciler.memory._passed[(NS, NAME)] -= 31
    assert lifecycle.resync_once(rt) == 1


def test_a_replica_without_the_lease_neither_resyncs_nor_acts(kube: FakeKube, reconciler: Reconciler) -> None:
    reconciler.may_act = lambda: False
    rt = lifecycle.Runtime(reconciler.settings, reconciler, threading.Event())
    assert lifecycle.resync_once(rt) == 0
    reconciler.reconcile(NS, NAME)
    assert kube.status_writes == 0 and kube.jobs == {}


def test_a_trace_event_is_acted_on_without_reading_the_trace_again(
    kube: FakeKube, reconciler: Reconciler, monkeypatch: pytest.MonkeyPatch
) -> None:
    created = kube.get_trace(NS, NAME)
    reads: list[str] = []
    real = kube.get_trace
    monkeypatch.setattr(kube, "get_trace", lambda ns, name: (reads.append(name), real(ns, name))[1])
    on_trace.on_trace_event(reconciler, "ADDED", created)
    assert reads == [] and list(kube.jobs) == [(NS, "demo-a1")]
    assert kube.status_of(NS, NAME)["attempt"] == 1


def test_a_stale_trace_event_converges_through_the_conflict(
    kube: FakeKube, reconciler: Reconciler, monkeypatch: pytest.MonkeyPatch
) -> None:
    stale = kube.get_trace(NS, NAME)  # the creation, before the first pass wrote a status
    reconciler.reconcile(NS, NAME)
    reconciler.informer.put("trace", "MODIFIED", stale)  # the watch lags: the pass acts on this copy
    reconciler.reconcile(NS, NAME)  # ... and loses the write race, then reads the trace afresh
    assert list(kube.jobs) == [(NS, "demo-a1")] and kube.status_writes == 1
    assert [e[1] for e in kube.events] == ["JobCreated"]  # the losing try's JobAdopted is never posted


def test_an_echo_arriving_after_the_next_write_is_still_skipped(
    kube: FakeKube, reconciler: Reconciler, monkeypatch: pytest.MonkeyPatch
) -> None:
    reconciler.reconcile(NS, NAME)
    first = kube.get_trace(NS, NAME)  # the echo of the first write, delivered late
    cancelled = kube.annotate(NS, NAME, CANCEL_ANNOTATION, "true")
    on_trace.on_trace_event(reconciler, "MODIFIED", cancelled)  # a second write (the trace is cancelled)
    assert kube.status_writes == 2
    calls = passes(reconciler, monkeypatch)
    on_trace.on_trace_event(reconciler, "MODIFIED", first)
    assert calls == []
