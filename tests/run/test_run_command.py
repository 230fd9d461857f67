"""`influence-trace run` end to end in a subprocess: outputs, exit codes and termination messages."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
from influence_trace.trace.timing import STAGES

from tests.conftest import manifest_dict, write_manifest

CLI = Path(sys.executable).parent / "influence-trace"


def run_cli(tmp_path: Path, manifest: Path, *extra: str, env: dict[str, str] | None = None) -> tuple:
    """Run the command; return its exit code and the decoded termination message."""
    log = tmp_path / "termination-log"
    log.unlink(missing_ok=True)
    full_env = {**os.environ, "INFLUENCE_TRACE_TERMINATION_LOG": str(log), **(env or {})}
    proc = subprocess.run(
        [str(CLI), "run", "--device", "cpu", *extra, str(manifest)],
        env=full_env, capture_output=True, text=True, timeout=300,
    )
    assert log.is_file(), f"no termination message; stderr:\n{proc.stderr[-3000:]}"
    text = log.read_text()
    assert len(text.encode()) <= 4096
    return proc.returncode, json.loads(text)


def manifest(tmp_path: Path, model: Path, rollouts: Path, name: str = "m.yaml", **trace: Any) -> Path:
    return write_manifest(tmp_path / name, manifest_dict(model, rollouts, tmp_path / "out", **trace))


def test_successful_run_writes_rows_and_summary(tmp_path: Path, tiny_model_dir: Path, rollouts_file: Path):
    path = manifest(tmp_path, tiny_model_dir, rollouts_file, debugHessianSimilarity=True)
    code, message = run_cli(tmp_path, path)
    assert code == 0, message
    out = tmp_path / "out"
    rows = pq.read_table(out / "rows.parquet").to_pylist()
    assert len(rows) == 12  # 3 groups x 4 responses, every group has contrast
    source = {row["response_id"]: row for row in map(json.loads, rollouts_file.read_text().splitlines())}
    for row in rows:
        assert row["token_ids"] == source[row["response_id"]]["response_ids"]
        assert len(row["scores"]) == len(row["token_ids"]) == row["num_tokens"]
        assert all(math.isfinite(s) for s in row["scores"])
        assert row["accepted"] == (row["reward"] == 1.0)
    assert any(s != 0.0 for row in rows for s in row["scores"])
    summary = json.loads((out / "summary.json").read_text())
    assert set(STAGES) | {"step_total"} <= set(summary["timings"])
    assert summary["rows_emitted"] == 12 and summary["groups"]["skipped"] == 0
    assert summary["tokens"]["scored"] == sum(r["num_tokens"] for r in rows)
    assert summary["config"]["trace"]["factor"] == 2 and summary["config"]["model"]["dtype"] == "float32"
    assert summary["resources"]["peak_gpu_bytes"] == 0 and summary["resources"]["peak_host_bytes"] > 0
    assert len(summary["modules"]) == 14 and all(m["damping"] for m in summary["modules"])
    assert 0.0 <= summary["metrics"]["auc"] <= 1.0 and summary["diagnostics"]
    assert message["rowsEmitted"] == 12 and message["outputPath"] == str(out)
    assert message["peakHostBytes"] > 0 and "step_total" in message["timings"]
    assert message["metrics"]["auc"] == summary["metrics"]["auc"]
    assert message["metrics"]["signConsistency"] == summary["metrics"]["sign_consistency"]


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        (lambda m: m["spec"]["trace"].update(fudge=1), "spec.trace.fudge"),
        (lambda m: m["spec"]["trace"].update(factor=0), "spec.trace.factor"),
    ],
)
def test_invalid_manifest_exits_65_naming_the_field(tmp_path: Path, edit, expected: str) -> None:
    data = manifest_dict(tmp_path / "model", tmp_path / "r.jsonl", tmp_path / "out")
    edit(data)
    code, message = run_cli(tmp_path, write_manifest(tmp_path / "m.yaml", data))
    assert code == 65
    assert message["reason"] == "InvalidInput" and message["stage"] == "load_manifest"
    assert expected in message["message"]


def test_missing_rollouts_file_exits_65(tmp_path: Path, tiny_model_dir: Path) -> None:
    missing = tmp_path / "nowhere.jsonl"
    code, message = run_cli(tmp_path, manifest(tmp_path, tiny_model_dir, missing))
    assert code == 65 and message["reason"] == "InvalidInput"
    assert f"spec.rollouts.path: {missing} does not exist" in message["message"]


def test_bad_row_and_no_contrast_exit_65(tmp_path: Path, tiny_model_dir: Path, rollouts_file: Path) -> None:
    lines = rollouts_file.read_text().splitlines()
    bad = tmp_path / "bad.jsonl"
    bad.write_text("\n".join([*lines[:4], lines[4].replace('"reward": ', '"reward": "x", "r": ')]) + "\n")
    code, message = run_cli(tmp_path, manifest(tmp_path, tiny_model_dir, bad))
    assert (code, message["stage"]) == (65, "load_rollouts")
    assert f"{bad} line 5: reward must be a number" in message["message"]
    flat = tmp_path / "flat.jsonl"
    flat.write_text("\n".join(json.dumps({**json.loads(line), "reward": 1.0}) for line in lines) + "\n")
    code, message = run_cli(tmp_path, manifest(tmp_path, tiny_model_dir, flat))
    assert (code, message["stage"]) == (65, "select_groups")
    assert "none of the 3 groups" in message["message"] and "contrast" in message["message"]


def test_nproc_below_one_is_refused(tmp_path: Path, tiny_model_dir: Path, rollouts_file: Path) -> None:
    code, message = run_cli(tmp_path, manifest(tmp_path, tiny_model_dir, rollouts_file), "--nproc", "0")
    assert code == 65 and "--nproc 0: expected a positive number of processes" in message["message"]


def test_tiny_gpu_budget_exits_75_with_stage(tmp_path: Path, tiny_model_dir: Path, rollouts_file: Path):
    from influence_trace.api.spec import ModelSpec
    from influence_trace.io.model_io import load_model

    path = manifest(tmp_path, tiny_model_dir, rollouts_file, factor=1)  # no projection matrices
    code, message = run_cli(tmp_path, path, env={"INFLUENCE_TRACE_GPU_BUDGET_BYTES": "1000"})
    assert (code, message["reason"]) == (75, "GPUOutOfMemory") and message["stage"]
    assert "weights" in message["message"] and "over the budget of 1000 bytes" in message["message"]
    model = load_model(ModelSpec(path=str(tiny_model_dir), dtype="float32"), "cpu")
    weights = sum(p.numel() * p.element_size() for p in model.parameters())
    budget = str(weights + 64)  # the weights fit, the first capture batch does not
    code, message = run_cli(tmp_path, path, env={"INFLUENCE_TRACE_GPU_BUDGET_BYTES": budget})
    assert (code, message["reason"], message["stage"]) == (75, "GPUOutOfMemory", "logprob_backward")
    assert not (tmp_path / "out" / "summary.json").exists()


def test_missing_model_dir_and_bad_env_exit_65(tmp_path: Path, rollouts_file: Path) -> None:
    missing = tmp_path / "no-model"
    code, message = run_cli(tmp_path, manifest(tmp_path, missing, rollouts_file))
    assert (code, message["reason"]) == (65, "InvalidInput")
    assert f"spec.model.path: {missing} is not a directory" in message["message"]
    env = {"INFLUENCE_TRACE_CHUNK_BYTES": "lots"}
    code, message = run_cli(tmp_path, manifest(tmp_path, missing, rollouts_file), env=env)
    assert code == 65 and "INFLUENCE_TRACE_CHUNK_BYTES: expected an integer, got 'lots'" in message["message"]


def test_failures_map_to_contract_reasons_in_the_failing_stage() -> None:
    import torch
    from influence_trace.api.contract import InvalidInput
    from influence_trace.run.entry import as_failure
    from influence_trace.trace.timing import StageTimer

    cases = [
        (torch.OutOfMemoryError("CUDA out of memory"), "GPUOutOfMemory", 75),
        (MemoryError(), "HostOutOfMemory", 76),
        (KeyError("k"), "Error", 70),
        (InvalidInput("bad group"), "InvalidInput", 65),
    ]
    for error, reason, code in cases:
        timer = StageTimer()
        with pytest.raises(type(error)), timer.stage("token_scoring"):
            raise error
        failure = as_failure(error, timer)
        assert (failure.reason, failure.exit_code, failure.stage) == (reason, code, "token_scoring")
    assert "KeyError: 'k'" in str(as_failure(KeyError("k"), StageTimer()))


def test_process_count_and_timing_table() -> None:
    from influence_trace.api.contract import InvalidInput
    from influence_trace.api.spec import parse_manifest
    from influence_trace.run.entry import format_timings, process_count

    data = manifest_dict(Path("m"), Path("r.jsonl"), Path("out"))
    data["spec"]["resources"] = {"gpus": 4}
    four = parse_manifest(data)
    assert process_count(four, None, "cpu") == 1  # on the CPU one process unless --nproc says more
    assert process_count(four, 3, "cpu") == 3
    with pytest.raises(InvalidInput, match=r"spec.resources.gpus: 4: one process per GPU, but this machine"):
        process_count(four, None, "cuda")  # no CUDA here: fewer GPUs than asked for
    assert process_count(four, 1, "cuda") == 1  # an explicit --nproc 1 overrides the manifest's GPU count
    table = format_timings({"hessian_solve": 3.0, "pop_rows": 1.0, "step_total": 4.0})
    assert table.splitlines()[1].split() == ["hessian_solve", "3.000", "75.0%"]
    assert table.splitlines()[-1].split() == ["step_total", "4.000"]
