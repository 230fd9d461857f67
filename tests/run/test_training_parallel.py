"""The data-parallel update: one and two CPU processes give the same weights after each step."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file

from tests.conftest import write_manifest
from tests.run.test_run_command import run_cli
from tests.run.test_training import ADAMW, manifest, step_scores


def test_two_processes_take_the_update_of_one(tmp_path: Path, tiny_model_dir: Path, rollouts_file: Path):
    outs = {}
    for nproc in (1, 2):
        out = tmp_path / f"nproc{nproc}"
        data = manifest(tiny_model_dir, [rollouts_file, rollouts_file], out, optimizer=ADAMW, miniBatchSize=5)
        path = write_manifest(tmp_path / f"{nproc}.yaml", data)
        code, message = run_cli(tmp_path, path, "--nproc", str(nproc))
        assert code == 0, message
        assert message["rowsEmitted"] == 12 and message["outputPath"] == str(out)
        outs[nproc] = out
    one, two = (load_file(str(outs[n] / "checkpoint-2" / "weights.safetensors")) for n in (1, 2))
    base = load_file(str(next(tiny_model_dir.glob("*.safetensors"))))
    moved = [name for name in one if name in base and not torch.equal(one[name], base[name].double())]
    assert moved  # the weights did change, so agreeing is not vacuous
    for name in one:  # gradients summed in another order: equal to float64 rounding
        torch.testing.assert_close(two[name], one[name], rtol=1e-9, atol=1e-12, msg=name)
    for step in (1, 2):
        a, b = step_scores(outs[1], step), step_scores(outs[2], step)
        for key in a:
            np.testing.assert_allclose(b[key], a[key], rtol=1e-6, atol=1e-9)
