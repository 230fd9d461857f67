"""Conditions change only when status, reason or message differ; the transition time follows status."""

from __future__ import annotations

import pytest
from influence_trace.api.status import TraceStatus
from influence_trace_operator.rules import conditions
from influence_trace_operator.rules.conditions import POD_PENDING, POD_RUNNING, RUNNING, set_condition


def test_set_condition_semantics() -> None:
    s = TraceStatus()
    assert set_condition(s, RUNNING, False, POD_PENDING, "waiting", 1, "t1")
    assert not set_condition(s, RUNNING, False, POD_PENDING, "waiting", 1, "t2")
    assert set_condition(s, RUNNING, False, POD_PENDING, "still waiting", 1, "t3")
    assert conditions.get_condition(s, conditions.RUNNING).last_transition_time == "t1"
    assert set_condition(s, RUNNING, True, POD_RUNNING, "on node", 1, "t4")
    cond = conditions.get_condition(s, conditions.RUNNING)
    assert cond.last_transition_time == "t4" and cond.status == "True"
    assert len(s.conditions) == 1


def test_unknown_type_is_refused() -> None:
    with pytest.raises(ValueError):
        conditions.set_condition(TraceStatus(), "Ready", True, "X", "", None, "t")


def test_status_round_trips_through_the_wire() -> None:
    s = TraceStatus(phase="Running", attempt=1)
    conditions.set_condition(s, conditions.PLACED, True, conditions.JOB_CREATED, "m", 1, "t")
    wire = s.wire()
    assert wire["conditions"][0]["lastTransitionTime"] == "t" and "result" not in wire
    assert TraceStatus.model_validate({**wire, "somethingOld": 1}).wire() == wire
