"""The real operator (``influence-trace operator`` in a subprocess) against the local cluster.

Each test gets its own operator watching only the test's namespace, so tests stay independent and a
test can kill -9 and restart it at any point. The ``crd`` and ``op`` fixtures built from these helpers
live in tests/cluster/conftest.py with every other cluster fixture.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

from tests.cluster import kube

CLI = Path(sys.executable).parent / "influence-trace"
CRD_FILE = kube.REPO_ROOT / "crds" / "influencetraces.yaml"
TINY_ARCH = {
    "hiddenSize": 64,
    "intermediateSize": 128,
    "numLayers": 2,
    "numAttentionHeads": 4,
    "numKeyValueHeads": 2,
    "headDim": 16,
    "vocabSize": 1000,
}
BIG_GPU_BYTES = "100000000000"  # 100 GB: more than an h100's 85.5 GB, less than an h200's 150.8 GB


class Operator:
    """One operator process; ``kill()`` is SIGKILL (no clean shutdown), ``start()`` starts it again."""

    def __init__(self, namespace: str, log_dir: Path) -> None:
        self.namespace = namespace
        self.log_dir = log_dir
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def start(self, **env: str) -> Operator:
        assert self.proc is None, "already running"
        self.starts += 1
        log = open(self.log_dir / f"operator-{self.starts}.log", "wb")  # noqa: SIM115 (closed by the process)
        full_env = {
            **os.environ,
            "INFLUENCETRACE_LIVENESS_PORT": "0",
            "INFLUENCETRACE_RESYNC_SECONDS": "2",
            "INFLUENCETRACE_LEASE_SECONDS": "5",  # a restart after kill -9 waits this long for the Lease
            **kube.current_cluster().env(),
            **env,
        }
        self.proc = subprocess.Popen(
            [str(CLI), "operator", "--namespace", self.namespace],
            env=full_env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        return self

    def kill(self) -> None:
        if self.proc is not None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=30)
            self.proc = None

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.kill()
            self.proc = None

    def logs(self) -> str:
        return "\n".join(p.read_text(errors="replace") for p in sorted(self.log_dir.glob("operator-*.log")))


def install_crd() -> None:
    """Apply the generated CRD and wait until it is Established.

    Polled here rather than with ``kubectl wait --for=condition``: kubectl 1.36 fails at once
    (".status.conditions accessor error: <nil>") on a CRD created a moment ago whose conditions the
    apiextensions controller has not written yet (CI run of 2026-11-26)."""
    kube.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(CRD_FILE))
    kube.wait_for_condition("crd", "influencetraces.influencetrace.dev", "Established")


def trace_manifest(name: str, *, annotations: dict[str, str] | None = None, **spec: Any) -> dict[str, Any]:
    """A small trace (explicit tiny shapes, so the estimate fits h100); keyword args replace sections."""
    body: dict[str, Any] = {
        "model": {"path": "/workspace/models/tiny", "architecture": TINY_ARCH},
        "rollouts": {"path": "/workspace/data/rollouts.jsonl", "tokensEstimate": 1000},
        "resources": {"pools": ["h100", "h200"]},
        "output": {"path": f"/workspace/results/{name}"},
    }
    body.update(spec)
    return {
        "apiVersion": "influencetrace.dev/v1alpha1",
        "kind": "InfluenceTrace",
        "metadata": {"name": name, "annotations": annotations or {}},
        "spec": body,
    }


def get_trace(name: str, namespace: str) -> dict[str, Any]:
    obj = kube.get("influencetrace", name, namespace)
    assert obj is not None, f"trace {name} is gone"
    return obj


def wait_phase(name: str, namespace: str, phases: tuple[str, ...], timeout: float = 60) -> dict[str, Any]:
    def probe() -> dict[str, Any] | None:
        obj = get_trace(name, namespace)
        return obj if (obj.get("status") or {}).get("phase") in phases else None

    return kube.wait_for(probe, timeout, description=f"trace {name} phase in {phases}")


def jobs_of(name: str, namespace: str) -> list[str]:
    return sorted(
        j["metadata"]["name"]
        for j in kube.list_objects("jobs", namespace, selector=f"influencetrace.dev/trace={name}")
    )


def events_of(name: str, namespace: str) -> list[tuple[str, str, str]]:
    items = kube.list_objects("events", namespace)
    return [
        (e["type"], e["reason"], e["message"])
        for e in items
        if e["involvedObject"].get("kind") == "InfluenceTrace" and e["involvedObject"]["name"] == name
    ]
