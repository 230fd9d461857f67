"""The data-parallel update: one and two CPU processes give the same weights after each step."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
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


def test_two_processes_generate_every_step_on_rank_0(tmp_path: Path, tiny_model_dir: Path) -> None:
    """Rank 0 samples each step with the updated weights while rank 1 waits; both then trace and
    update: the second step's rollouts and the final weights are those of one process."""
    from tests.run.test_training import run

    credit = {str(d): 1.0 for d in range(5)}
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"prompt_id": f"q{i}", "prompt": f"what is {i} add {i}",
                                           "credit": credit}) + "\n" for i in range(3)))
    gen = {"promptsPath": str(prompts), "responsesPerPrompt": 6, "maxResponseTokens": 12, "batchSize": 5,
           "rewardColumn": "credit"}
    datas = {}
    for nproc in (1, 2):
        data = manifest(tiny_model_dir, [], tmp_path / f"gen{nproc}", steps=2, optimizer={"lr": 0.05})
        data["spec"]["rollouts"] = {"generate": gen}
        datas[nproc] = data
    run(datas[1])
    code, message = run_cli(tmp_path, write_manifest(tmp_path / "gen2.yaml", datas[2]), "--nproc", "2")
    assert code == 0, message
    assert message["steps"] == "2/2"
    first, second = (pq.read_table(tmp_path / f"gen{n}" / "step-2" / "rollouts.parquet").to_pydict()
                     for n in (1, 2))
    assert first["response_ids"] == second["response_ids"]
    one, two = (load_file(str(tmp_path / f"gen{n}" / "checkpoint-2" / "weights.safetensors")) for n in (1, 2))
    for name in one:
        torch.testing.assert_close(two[name], one[name], rtol=1e-9, atol=1e-12, msg=name)
