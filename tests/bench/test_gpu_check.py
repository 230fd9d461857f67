"""bench/gpu_check.sh's CPU dry run: the same script as on a GPU machine, with the tiny model, so a
broken check is found here and not in a scarce GPU slot."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow


def run_check(tmp_path: Path, **env: str) -> tuple[subprocess.CompletedProcess, str]:
    results = tmp_path / "RESULTS.md"
    env = {**os.environ, "PYTHON": sys.executable, "GPU_CHECK_RESULTS": str(results), **env}
    out = subprocess.run(["bash", str(ROOT / "bench" / "gpu_check.sh"), "--dry-run"], env=env,
                         capture_output=True, text=True, timeout=2400)
    return out, results.read_text() if results.exists() else ""


def test_gpu_check_dry_run_appends_a_table(tmp_path: Path) -> None:
    out, text = run_check(tmp_path)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert "## GPU check (CPU dry run)" in text
    assert re.search(r"pytest -m gpu exit 0 \(\d+ skipped", text), text  # skipped on the CPU, saying why
    assert "needs a CUDA GPU" in out.stdout
    row = re.compile(r"^\| (\d+) \| (per_prompt|all_selected) \|.*$", re.M)
    rows = [(int(m[1]), m[2], m[0]) for m in row.finditer(text)]
    # 30-token responses at both factors and scopes, then 8-token responses at factor 32 all_selected
    want = [(32, "all_selected"), (32, "all_selected"), (32, "per_prompt"), (64, "all_selected"),
            (64, "per_prompt")]
    assert sorted((f, s) for f, s, _ in rows) == want
    assert "(30 per response)" in text and "(8 per response)" in text
    for _, _, row in rows:
        cells = [c.strip() for c in row.strip("|").split("|")]
        assert cells[2] == "cpu"  # the kernel strategy the run used (auto on the CPU)
        assert all(float(c.split()[0]) >= 0 for c in cells[3:8])  # stage seconds
        assert float(cells[10].split()[0]) > 0  # hessian_solve's real flop rate
        ratio = float(cells[14])  # predicted / measured (the ledger on the CPU)
        assert 0.9 <= ratio <= 1.1, row
    launches = re.findall(r"^\| gpu \| ([\d,]+) \| [\d,]+ \| ([\d,]+) \| ([\d,]+) \|", text, re.M)
    assert [n for n, *_ in launches] == ["128", "3,822"], text
    assert all(int(x.replace(",", "")) <= 100_000 for _, *counts in launches for x in counts)


def test_gpu_check_fails_and_records_when_pytest_prints_no_summary(tmp_path: Path) -> None:
    """A CUDA or NCCL abort, or a timeout, leaves no pytest summary: recorded, and the check fails."""
    fake = tmp_path / "aborting_pytest.sh"
    fake.write_text("echo 'Fatal Python error: Aborted'\nexit 134\n")
    out, text = run_check(tmp_path, GPU_CHECK_STEPS="tests", GPU_CHECK_PYTEST=f"bash {fake}")
    assert out.returncode == 1, out.stdout[-3000:] + out.stderr[-3000:]
    assert "pytest -m gpu exit 134 (no summary)" in text
    assert "gpu_check: FAILED" in out.stderr


def test_gpu_check_skips_the_two_gpu_exchange_saying_why(tmp_path: Path) -> None:
    """Step 4 runs only where two GPUs exist; elsewhere (here: the dry run) it prints and records why."""
    out, text = run_check(tmp_path, GPU_CHECK_STEPS="exchange")
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    reason = "skipped: the CPU dry run here, the NCCL exchange needs two"
    assert f"== 4. two-GPU exchange: {reason}" in out.stdout
    assert f"two-GPU exchange exit skipped ({reason})." in text
