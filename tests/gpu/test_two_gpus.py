"""Two GPUs: two ranks exchange their factors over NCCL (CUDA device buffers, run/exchange.py) and must
write the rows one GPU writes. Skipped where fewer than two GPUs exist; bench/gpu_check.sh runs it
where they do (a one-rank NCCL group cannot fail its all-reduce, so this is the exchange's real test)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from tests.conftest import manifest_dict, write_manifest
from tests.run.test_run_command import run_cli

REASON = "needs two CUDA GPUs (one rank cannot exercise the NCCL exchange)"
pytestmark = [pytest.mark.gpu, pytest.mark.skipif(torch.cuda.device_count() < 2, reason=REASON)]


def _run(tmp_path: Path, model: Path, rollouts: Path, name: str, nproc: int) -> dict[str, np.ndarray]:
    data = manifest_dict(model, rollouts, tmp_path / name, captureDtype="float64", hessianDtype="float64",
                         scope="all_selected")
    data["spec"]["model"]["dtype"] = "float64"
    code, message = run_cli(tmp_path, write_manifest(tmp_path / f"{name}.yaml", data), "--device", "cuda",
                            "--nproc", str(nproc))
    assert code == 0, message
    summary = json.loads((tmp_path / name / "summary.json").read_text())
    assert summary["resources"].get("processes", 1) == nproc and summary["resources"]["kernels"] == "gpu"
    rows = pq.read_table(tmp_path / name / "rows.parquet").to_pylist()
    return {r["response_id"]: np.array(r["scores"]) for r in rows}


def test_two_gpus_write_the_rows_of_one(tmp_path: Path, tiny_model_dir: Path, rollouts_file: Path) -> None:
    one = _run(tmp_path, tiny_model_dir, rollouts_file, "one", 1)
    two = _run(tmp_path, tiny_model_dir, rollouts_file, "two", 2)
    assert one.keys() == two.keys()
    # Capture batches differ by rank, and CUDA kernels may round a float32 step (RMSNorm, rotary)
    # differently for another batch shape: agreement to float32 storage, relative to the largest score.
    scale = max(float(np.abs(v).max()) for v in one.values())
    for key in one:
        np.testing.assert_allclose(two[key], one[key], rtol=1e-5, atol=1e-5 * scale, err_msg=key)
