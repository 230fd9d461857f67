"""Fixtures of the operator's unit tests: the in-memory Kube holding the default small trace.

A module that needs another Kube (a queue, a hanging API) defines its own ``kube`` fixture, which
overrides this one."""

from __future__ import annotations

import pytest

from tests.operator.fake_kube import FakeKube
from tests.operator.operator_builders import trace_dict


@pytest.fixture()
def kube() -> FakeKube:
    fake = FakeKube()
    fake.add_trace(trace_dict())
    return fake
