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


def test_gpu_check_dry_run_appends_a_table(tmp_path: Path) -> None:
    results = tmp_path / "RESULTS.md"
    env = {**os.environ, "PYTHON": sys.executable, "GPU_CHECK_RESULTS": str(results)}
    out = subprocess.run(["bash", str(ROOT / "bench" / "gpu_check.sh"), "--dry-run"], env=env,
                         capture_output=True, text=True, timeout=2400)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    text = results.read_text()
    assert "## GPU check (CPU dry run)" in text
    assert re.search(r"pytest -m gpu exit 0 \(\d+ skipped", text), text  # skipped on the CPU, saying why
    assert "needs a CUDA GPU" in out.stdout
    rows = {int(m[1]): m[0] for m in re.finditer(r"^\| (\d+) \| per_prompt \|.*$", text, re.M)}
    assert sorted(rows) == [32, 64]
    for row in rows.values():
        cells = [c.strip() for c in row.strip("|").split("|")]
        assert all(float(c.split()[0]) >= 0 for c in cells[2:7])  # stage seconds
        ratio = float(cells[12])  # predicted / measured (the ledger on the CPU)
        assert 0.9 <= ratio <= 1.1, row
