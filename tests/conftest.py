"""Fixtures shared by the whole suite: tiny random models saved to disk, and manifests for them."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
import yaml


def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    """pytest-xdist (scripts/test.sh runs ``-n 3``): every test under tests/cluster/ in one worker, one
    after another, as they share the local cluster's fake GPU nodes (some fill a pool); every other
    test is scheduled on its own. (xdist's ``loadgroup`` would need per-module marks: since pytest 9
    it can no longer tag node ids added by a conftest hook.)"""
    from xdist.scheduler import LoadScopeScheduling

    class ClusterTestsTogether(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            if nodeid.startswith("tests/images/"):  # one container of an image per module
                return nodeid.split("::")[0]
            return "tests/cluster" if nodeid.startswith("tests/cluster/") else nodeid

    return ClusterTestsTogether(config, log)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Under pytest-xdist the cluster tests (the longest chain, one worker) are handed out first."""
    if os.environ.get("PYTEST_XDIST_WORKER"):
        items.sort(key=lambda item: not item.nodeid.startswith("tests/cluster/"))


def pytest_configure(config: pytest.Config) -> None:
    """Under pytest-xdist (scripts/test.sh) several workers share the cores: one math thread each, so
    torch's GEMMs do not wait at barriers for threads another worker holds (set before torch loads;
    subprocesses inherit it, and the worker's own ranks still set their share explicitly)."""
    if os.environ.get("PYTEST_XDIST_WORKER"):
        os.environ.setdefault("OMP_NUM_THREADS", "1")


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random 2-layer Qwen2 (hidden 32) with its word-level tokenizer, saved with save_pretrained."""
    from influence_trace.demo.tiny_model import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("tiny-qwen2") / "model", arch="qwen2")


@pytest.fixture()
def rollouts_file(tmp_path: Path) -> Path:
    """Three groups of four token-id responses with 0/1 rewards, each group with contrast."""
    from influence_trace.demo.rollouts import make_rollouts

    return make_rollouts(tmp_path / "rollouts.jsonl")


def manifest_dict(model_dir: Path, rollouts: Path, output: Path, **trace: Any) -> dict[str, Any]:
    """A complete manifest for a local run; keyword arguments override spec.trace fields."""
    return {
        "apiVersion": "influencetrace.dev/v1alpha1",
        "kind": "InfluenceTrace",
        "metadata": {"name": "test-trace"},
        "spec": {
            "model": {"path": str(model_dir), "dtype": "float32"},
            "rollouts": {"path": str(rollouts)},
            "trace": {"factor": 2, "captureDtype": "float32", **trace},
            "output": {"path": str(output)},
        },
    }


def write_manifest(path: Path, data: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path
