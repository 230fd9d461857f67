"""Learned placement on the real control plane: the history ConfigMap, and what the next trace does.

Peaks are simulated by the fake pods' termination messages (hack/kwok-stages.yaml): a pod whose
``simulate-gpu-bytes`` exceeds its pool's GPUs runs out of memory, and a succeeding pod reports the
``peakGpuBytes`` of its ``simulate-termination-message``.
"""

from __future__ import annotations

import json

from influence_trace.api.spec import parse_manifest
from influence_trace.planning.memory_model import estimate

from tests.cluster import kube
from tests.cluster.operator_fixtures import (
    BIG_GPU_BYTES,
    trace_manifest,
    wait_phase,
)

HISTORY = "influence-trace-history"
BIG_TOKENS = 2_500_000_000  # the model predicts ~82.9 GB per GPU: h200; half of that fits h100


def _history(namespace: str) -> list[dict]:
    cm = kube.get("configmap", HISTORY, namespace)
    assert cm is not None, "no history ConfigMap"
    return json.loads(cm["data"]["history.json"])["observations"]


def _wait_history(namespace: str, count: int) -> list[dict]:
    """The observations once there are ``count`` (recorded in the pass that saw the attempt end)."""

    def probe() -> list[dict] | None:
        found = _history(namespace) if kube.get("configmap", HISTORY, namespace) else []
        return found if len(found) >= count else None

    return kube.wait_for(probe, 30, description=f"{count} observation(s) in the history")


def _placed(obj: dict) -> tuple[str, int]:
    return obj["status"]["pool"], obj["status"]["attempt"]


def test_gpu_oom_on_h100_makes_the_same_trace_start_on_h200(namespace: str, op) -> None:
    op.start()
    simulate = {kube.SIMULATE_GPU_BYTES: BIG_GPU_BYTES}
    kube.apply(trace_manifest("first", annotations=simulate), namespace)
    first = wait_phase("first", namespace, ("Succeeded", "Failed"))
    assert first["status"]["phase"] == "Succeeded" and _placed(first) == ("h200", 2)
    seen = _wait_history(namespace, 2)
    assert [(o["pool"], o["outcome"], o["stage"]) for o in seen] == [
        ("h100", "GPUOutOfMemory", "hessian_solve"), ("h200", "Succeeded", "capture")]
    assert seen[0]["key"] == seen[1]["key"] and seen[0]["trace"] == "first"

    kube.apply(trace_manifest("again", annotations=simulate), namespace)
    again = wait_phase("again", namespace, ("Succeeded", "Failed"))
    assert again["status"]["phase"] == "Succeeded"
    assert _placed(again) == ("h200", 1)  # zero repeated out-of-memory for this configuration
    assert [a["pool"] for a in again["status"]["attempts"]] == ["h200"]
    reason = again["status"]["estimate"]["reason"]
    assert "ran out of GPU memory on h100 before" in reason, reason
    assert again["status"]["estimate"]["pool"] == "h200"


def test_measured_half_moves_the_next_trace_to_the_smaller_pool_across_a_restart(namespace: str, op) -> None:
    body = trace_manifest("big", rollouts={"path": "/workspace/data/r.jsonl", "tokensEstimate": BIG_TOKENS})
    predicted = estimate(parse_manifest(body).spec).gpu_bytes
    half = predicted // 2
    message = json.dumps({"rowsEmitted": 10, "outputPath": "/workspace/results/big", "timings": {},
                          "peakGpuBytes": half, "peakHostBytes": 2**30})
    body["metadata"]["annotations"] = {kube.SIMULATE_TERMINATION_MESSAGE: message}
    op.start()
    kube.apply(body, namespace)
    big = wait_phase("big", namespace, ("Succeeded", "Failed"))
    assert big["status"]["phase"] == "Succeeded" and _placed(big) == ("h200", 1)
    assert big["status"]["estimate"]["source"] == "model"
    assert big["status"]["estimate"]["gpuBytes"] == predicted
    [obs] = _wait_history(namespace, 1)
    assert (obs["measuredGpuBytes"], obs["predictedGpuBytes"]) == (half, predicted)

    op.kill()  # SIGKILL: the history must come back from the cluster, not from memory
    op.start()
    body["metadata"]["name"] = "big-again"
    kube.apply(body, namespace)
    again = wait_phase("big-again", namespace, ("Succeeded", "Failed"))
    est = again["status"]["estimate"]
    assert _placed(again) == ("h100", 1), again["status"]
    assert est["source"] == "observed (1 runs)" and est["gpuBytes"] == half
    assert f"observed {half / 1e9:.1f} GB peak in 1 run" in est["reason"], est["reason"]  # follows the model
    assert len(_wait_history(namespace, 2)) == 2  # written within history_flush_seconds


def test_history_turned_off_keeps_the_model_and_writes_nothing(namespace: str, op) -> None:
    op.start(INFLUENCETRACE_HISTORY="false")
    kube.apply(trace_manifest("plain", annotations={kube.SIMULATE_GPU_BYTES: BIG_GPU_BYTES}), namespace)
    plain = wait_phase("plain", namespace, ("Succeeded", "Failed"))
    assert _placed(plain) == ("h200", 2)
    kube.apply(trace_manifest("plain2", annotations={kube.SIMULATE_GPU_BYTES: BIG_GPU_BYTES}), namespace)
    assert _placed(wait_phase("plain2", namespace, ("Succeeded", "Failed"))) == ("h200", 2)
    assert kube.get("configmap", HISTORY, namespace) is None
