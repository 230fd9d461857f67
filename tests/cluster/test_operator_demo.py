"""``bash scripts/demo.sh --operator``, the way to try the operator locally (README), after its
setup step: the story it prints must be the one it promises."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.cluster import kube


def test_the_operator_demo_escalates_shows_progress_and_names_the_report(
    cluster: kube.Cluster, tmp_path: Path
) -> None:
    script = (kube.REPO_ROOT / "scripts" / "demo.sh").read_text()
    assert "hack/record_transcripts.py --demo" in script  # what `--operator` runs after the setup
    proc = subprocess.run([sys.executable, str(kube.REPO_ROOT / "hack" / "record_transcripts.py"), "--demo",
                           "--work", str(tmp_path)], capture_output=True, text=True, timeout=900,
                          env=cluster.env())
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    out = proc.stdout
    rows = [line.split() for line in out.splitlines() if line.startswith("qwen15b-f32-all-selected ")]
    assert rows and rows[-1][1:4] == ["Succeeded", "WorkerSucceeded", "h200"], out[-3000:]
    assert any(r[1] == "Escalating" for r in rows) and any("modules" in " ".join(r) for r in rows)
    assert "GPUOutOfMemory" in out and "escalating to pool h200" in out
    report = tmp_path / "demo" / "run" / "report.html"
    assert f"the real run's report: {report}" in out and report.is_file()
