"""Watching a trace on the real control plane: the worker's progress lines reach status.progress and
the STAGE / PROGRESS columns through ``pods/log``.

kwok serves a fake pod's log from a file named by a ``Logs`` object (hack/cluster.sh enables that
kwok CRD). The test replays a recorded progress log (tests/cluster/data/progress-demo.log: the progress
lines of a real ``influence-trace demo`` run, every step) into that file, a line a second, while the pod
runs; the operator reads the log's tail on its passes (resync every 2 s here).

With ``INFLUENCE_TRACE_RECORD_DIR`` set, the ``kubectl get -w`` output is kept there (README's transcript).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import threading
import time
from pathlib import Path

from tests.cluster import kube
from tests.cluster.operator_fixtures import (
    CLI,
    trace_manifest,
    wait_phase,
)

RECORDED = Path(__file__).parent / "data" / "progress-demo.log"


def cri_line(text: str) -> str:
    """One line as the container runtime stores it (what kwok reads back)."""
    stamp = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return f"{stamp} stderr F {text}\n"


def serve_log(namespace: str, pod: str, path: Path) -> None:
    """Make kwok answer ``pods/log`` of ``pod``'s worker container from ``path``."""
    path.write_text("")
    kube.apply({"apiVersion": "kwok.x-k8s.io/v1alpha1", "kind": "Logs",
                "metadata": {"name": pod, "namespace": namespace},
                "spec": {"logs": [{"containers": ["worker"], "logsFile": str(path)}]}}, namespace)


def replay(path: Path, lines: list[str], every: float) -> threading.Thread:
    def run() -> None:
        for line in lines:
            with path.open("a") as f:
                f.write(cri_line(line))
            time.sleep(every)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def test_progress_moves_through_the_columns_and_ends_done(namespace: str, op, tmp_path: Path) -> None:
    lines = [line for line in RECORDED.read_text().splitlines() if line.strip()]
    report = "/workspace/results/watch/report.html"
    message = json.dumps({"rowsEmitted": 12, "outputPath": "/workspace/results/watch", "timings": {},
                          "peakGpuBytes": 2**30, "report": report})
    annotations = {kube.SIMULATE_DURATION: f"{len(lines) + 6}s", kube.SIMULATE_TERMINATION_MESSAGE: message}
    op.start()
    watch = subprocess.Popen([str(kube.cluster_info().bin_dir / "kubectl"), "get", "influencetraces", "-w",
                              "-n", namespace], env=kube.current_cluster().env(), stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True)
    try:
        kube.apply(trace_manifest("watch", annotations=annotations), namespace)
        placed = wait_phase("watch", namespace, ("Pending", "Running"), timeout=120)  # a loaded machine
        est = placed["status"]["estimate"]
        assert est["time"] and est["seconds"] >= 30  # the Est-Time column, before the Job starts
        assert set(est["stageSeconds"]) == {"setup", "capture", "hessian"}
        pod = kube.wait_for(lambda: kube.job_pods("watch-a1", namespace), 30, description="the pod")[0]
        log = tmp_path / "worker.log"
        serve_log(namespace, pod["metadata"]["name"], log)
        feeder = replay(log, lines, 1.0)
        seen: list[tuple[str, str, float]] = []
        est_times: set[str] = set()
        deadline = time.monotonic() + len(lines) + 30
        while time.monotonic() < deadline:
            status = kube.get("influencetrace", "watch", namespace)["status"]
            prog = status.get("progress")
            est_times.add(status["estimate"]["time"])
            if prog and (not seen or seen[-1][:2] != (prog["stage"], prog["text"])):
                seen.append((prog["stage"], prog["text"], prog["fraction"]))
                if len(seen) == 3:  # mid-run: the user's way to the worker's log
                    printed = subprocess.run([str(CLI), "logs", "watch", "-n", namespace],
                                             capture_output=True, text=True,
                                             env=kube.current_cluster().env(), timeout=60)
                    assert printed.returncode == 0 and "INFLUENCE_TRACE_PROGRESS" in printed.stdout, printed
            if status.get("phase") == "Succeeded":
                break
            time.sleep(0.3)
        feeder.join(timeout=5)
    finally:
        watch.terminate()
        transcript = watch.communicate(timeout=10)[0]
    final = kube.get("influencetrace", "watch", namespace)["status"]
    assert final["phase"] == "Succeeded", final
    running = [s for s in seen if s[1] != "done"]
    assert len(running) >= 4, seen  # the column moved while the pod ran
    assert running[0][0] == "capture" or running[0][0] == "hessian"
    assert any(stage == "hessian" for stage, _, _ in running), seen
    fractions = [f for _, _, f in running]
    assert fractions == sorted(fractions) and 0 < fractions[0] < fractions[-1] <= 1, seen
    assert final["progress"]["text"] == "done" and final["progress"]["fraction"] == 1.0
    assert any(t.endswith(" left") for t in est_times), est_times  # EST-TIME counted down while running
    assert final["estimate"]["time"] == est["time"]  # and shows the prediction again once done
    assert final["progress"]["actualSeconds"] >= len(lines)  # the pod ran that long; compared below
    described = kube.kubectl("describe", "itrace", "watch", namespace=namespace).stdout
    assert "predicted 30s" in described and "took " in described, described
    assert final["result"]["report"] == report and final["result"]["outputPath"] == "/workspace/results/watch"
    header = transcript.splitlines()[0].split()
    assert {"STAGE", "PROGRESS", "EST-TIME"} <= set(header), header
    assert any("/14 modules" in row for row in transcript.splitlines()), transcript
    record = os.environ.get("INFLUENCE_TRACE_RECORD_DIR")
    if record:
        Path(record).mkdir(parents=True, exist_ok=True)
        (Path(record) / "kubectl-get-w.txt").write_text(transcript)
