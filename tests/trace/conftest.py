"""Fixtures of the worker's numerical tests."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tests.trace.bruteforce import load_model


@pytest.fixture(scope="module")
def model(tiny_model_dir: Path):
    """The tiny model in float64, as the exactness tests need it."""
    torch.set_num_threads(1)  # tiny matrices: threads only contend on the shared test machine
    return load_model(tiny_model_dir)
