"""Fixtures of the worker's numerical tests."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from influence_trace.planning.hessian_plan import KERNELS_ENV

from tests.trace.bruteforce import load_model


@pytest.fixture(scope="module")
def model(tiny_model_dir: Path):
    """The tiny model in float64, as the exactness tests need it."""
    torch.set_num_threads(1)  # tiny matrices: threads only contend on the shared test machine
    return load_model(tiny_model_dir)


@pytest.fixture(params=["cpu", "gpu"])
def kernels(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Run the test with each kernel strategy (trace/kernels.py), forced by INFLUENCE_TRACE_KERNELS."""
    monkeypatch.setenv(KERNELS_ENV, request.param)
    return request.param
