"""`influence-trace run --nproc N` end to end: the same rows as one process, and failures that end the
attempt promptly with the failing rank's exit code, rank and stage."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import yaml
from influence_trace.api.contract import EXIT_KERNEL_OOM_KILL
from influence_trace.run.launch import root_cause, topology_from_env
from influence_trace.run.ranks import FAIL_ENV

from tests.conftest import manifest_dict, write_manifest
from tests.run.test_run_command import run_cli

FLOAT64 = {"captureDtype": "float64", "hessianDtype": "float64", "scope": "all_selected"}
# Startup included, on a loaded 2-core machine; a rank left hanging waits for the 1,800 s collective timeout.
BOUND_S = 300


def _manifest(tmp_path: Path, model: Path, rollouts: Path, out: str) -> Path:
    data = manifest_dict(model, rollouts, tmp_path / out, **FLOAT64)
    data["spec"]["model"]["dtype"] = "float64"  # capture batches differ by rank: exact only in float64
    return write_manifest(tmp_path / f"{out}.yaml", data)


def _scores(out: Path) -> dict[str, np.ndarray]:
    return {r["response_id"]: np.array(r["scores"]) for r in pq.read_table(out / "rows.parquet").to_pylist()}


def test_two_processes_write_the_rows_of_one(tmp_path: Path, tiny_model_dir: Path, rollouts_file: Path):
    code, _ = run_cli(tmp_path, _manifest(tmp_path, tiny_model_dir, rollouts_file, "one"), "--nproc", "1")
    assert code == 0
    two = _manifest(tmp_path, tiny_model_dir, rollouts_file, "two")
    code, message = run_cli(tmp_path, two, "--nproc", "2")
    assert code == 0, message
    assert message["rowsEmitted"] == 12 and message["outputPath"] == str(tmp_path / "two")
    one, two = _scores(tmp_path / "one"), _scores(tmp_path / "two")
    assert one.keys() == two.keys()
    for key in one:  # float32 as stored; the float64 sums differ by ~1e-16
        np.testing.assert_array_equal(one[key], two[key])
    summary = json.loads((tmp_path / "two" / "summary.json").read_text())
    assert summary["resources"]["processes"] == 2 and len(summary["resources"]["per_process"]) == 2
    stages = summary["resources"]["stage_seconds"]  # every rank's, not rank 0's alone
    for name in ("logprob_backward", "hessian_solve", "token_scoring", "wait", "step_total"):
        entry = stages[name]
        assert len(entry["per_rank"]) == 2 and entry["max"] == max(entry["per_rank"])
        assert entry["spread"] == pytest.approx(max(entry["per_rank"]) - min(entry["per_rank"]), abs=1e-5)
    assert "wait" in summary["timings"]  # rank 0's wait, apart from its token_scoring
    assert all(m["damping"] for m in summary["modules"]) and len(summary["modules"]) == 14


@pytest.mark.parametrize(
    ("fail", "code", "reason", "stage"),
    [("1:hessian_solve", 75, "GPUOutOfMemory", "hessian_solve"),
     ("1:logprob_backward:kill", EXIT_KERNEL_OOM_KILL, "HostOutOfMemory", "unknown")],
    ids=["oom", "killed"],
)
def test_a_failing_rank_ends_the_attempt(tmp_path: Path, tiny_model_dir: Path, rollouts_file: Path,
                                        fail: str, code: int, reason: str, stage: str) -> None:
    began = time.monotonic()
    path = _manifest(tmp_path, tiny_model_dir, rollouts_file, "out")
    got, message = run_cli(tmp_path, path, "--nproc", "2", env={FAIL_ENV: fail})
    assert time.monotonic() - began < BOUND_S
    assert (got, message["reason"], message["stage"], message["rank"]) == (code, reason, stage, 1)
    assert message["message"].startswith("rank 1 of 2")
    assert not (tmp_path / "out" / "summary.json").exists()


def test_root_cause_prefers_the_specific_failure_then_a_kill() -> None:
    oom = {"rank": 2, "reason": "GPUOutOfMemory", "stage": "hessian_solve", "message": "m", "time": 2.0,
           "exit_code": 75}
    peer = {"rank": 0, "reason": "Error", "stage": "grad_staging", "message": "connection closed",
            "time": 1.0, "exit_code": 70}
    code, payload = root_cause([peer, oom], {0: (70, ""), 2: (75, "")}, 4)
    assert (code, payload["rank"], payload["stage"]) == (75, 2, "hessian_solve")
    assert payload["message"] == "rank 2 of 4, stage hessian_solve: m"
    code, payload = root_cause([peer], {0: (70, ""), 3: (-9, "SIGKILL")}, 4)
    assert (code, payload["rank"], payload["reason"]) == (137, 3, "HostOutOfMemory")
    code, payload = root_cause([peer], {0: (70, ""), 1: (-15, "SIGTERM")}, 4)  # SIGTERM: the agent's own
    assert (code, payload["rank"]) == (70, 0)
    code, payload = root_cause([], {1: (1, "")}, 2)
    assert (code, payload["rank"], payload["reason"]) == (70, 1, "Error")


def test_topology_from_the_indexed_job_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    assert topology_from_env(3).world == 3 and topology_from_env(3).master_port == 0
    monkeypatch.setenv("INFLUENCE_TRACE_NNODES", "2")
    monkeypatch.setenv("JOB_COMPLETION_INDEX", "1")
    monkeypatch.setenv("MASTER_ADDR", "t-0.t-workers")
    topo = topology_from_env(8)
    assert (topo.world, topo.node_rank, topo.master_addr, topo.master_port) == (16, 1, "t-0.t-workers", 29500)
    monkeypatch.setenv("JOB_COMPLETION_INDEX", "2")
    with pytest.raises(Exception, match="expected 0 <= node rank < nodes"):
        topology_from_env(8)


def test_generated_rollouts_are_made_once_by_rank_0(tmp_path: Path, tiny_model_dir: Path) -> None:
    from tests.run.test_resume import manifest as generate_manifest
    from tests.run.test_resume import prompts_file

    data = generate_manifest(tiny_model_dir, prompts_file.__wrapped__(tmp_path), tmp_path / "out")
    data["spec"]["output"]["keepFactors"] = False
    code, message = run_cli(tmp_path, write_manifest(tmp_path / "gen.yaml", data), "--nproc", "2")
    assert code == 0, message
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["rows_emitted"] == message["rowsEmitted"] > 0 and summary["resources"]["processes"] == 2


def test_two_processes_keep_and_reuse_their_factor_shares(tmp_path: Path, tiny_model_dir: Path,
                                                           rollouts_file: Path) -> None:
    path = _manifest(tmp_path, tiny_model_dir, rollouts_file, "kept")
    data = yaml.safe_load(path.read_text())
    data["spec"]["output"]["keepFactors"] = True
    write_manifest(path, data)
    assert run_cli(tmp_path, path, "--nproc", "2")[0] == 0
    first = json.loads((tmp_path / "kept" / "summary.json").read_text())
    shares = sorted(p.name for p in (tmp_path / "kept").glob("factors.rank*-of-2.safetensors"))
    assert shares == ["factors.rank0-of-2.safetensors", "factors.rank1-of-2.safetensors"]
    assert "factors" in first["stored"] and not first["reused"]
    before = _scores(tmp_path / "kept")
    assert run_cli(tmp_path, path, "--nproc", "2")[0] == 0
    second = json.loads((tmp_path / "kept" / "summary.json").read_text())
    assert "factors" in second["reused"] and second["timings"]["logprob_backward"] == 0.0
    after = _scores(tmp_path / "kept")
    for key in before:
        np.testing.assert_array_equal(before[key], after[key])
