"""`influence-trace run` with spec.validate: validation.json, metrics.lds, and one process equals two."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from tests.conftest import manifest_dict, write_manifest
from tests.run.test_run_command import run_cli

FLOAT64 = {"captureDtype": "float64", "hessianDtype": "float64", "scope": "all_selected",
           "excludeSelfResponse": False}


def _manifest(tmp_path: Path, model: Path, rollouts: Path, out: str) -> Path:
    data = manifest_dict(model, rollouts, tmp_path / out, **FLOAT64)
    data["spec"]["model"]["dtype"] = "float64"  # capture batches differ by rank: exact only in float64
    data["spec"]["validate"] = {"subsets": 6, "seed": 3}
    return write_manifest(tmp_path / f"{out}.yaml", data)


def test_validation_written_and_the_same_with_two_processes(tmp_path: Path, tiny_model_dir: Path,
                                                              rollouts_file: Path) -> None:
    for out, nproc in (("one", "1"), ("two", "2")):
        manifest = _manifest(tmp_path, tiny_model_dir, rollouts_file, out)
        code, message = run_cli(tmp_path, manifest, "--nproc", nproc)
        assert code == 0, message
    one, two = (json.loads((tmp_path / o / "validation.json").read_text()) for o in ("one", "two"))
    assert len(one["subsets_detail"]) == 6 and one["target"] == "sgd" and one["tokens"] > 0
    # rank 0 validates with the same weights and selection: the measured changes are identical; the
    # predictions sum scores whose float64 sums over modules differ by ~1e-16 between 1 and 2 processes
    assert [s["actual"] for s in one["subsets_detail"]] == [s["actual"] for s in two["subsets_detail"]]
    np.testing.assert_allclose([s["predicted"] for s in one["subsets_detail"]],
                               [s["predicted"] for s in two["subsets_detail"]], rtol=1e-12)
    assert one["lds"] == two["lds"]
    summary = json.loads((tmp_path / "one" / "summary.json").read_text())
    assert summary["metrics"]["lds"] == one["lds"]
    assert summary["validation"]["removal"].keys() == {"top_1pct", "bottom_1pct", "random_1pct"}
    assert summary["timings"]["validate"] > 0
