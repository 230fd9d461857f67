"""Fluent-ish builders of test objects: traces, pools, Job and Pod status dicts."""

from __future__ import annotations

from typing import Any

from influence_trace.api.spec import InfluenceTrace, parse_manifest
from influence_trace.planning.placement import Pool
from influence_trace_operator.rules.jobs import TraceRef

GIB = 2**30
TOLERATION = {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}


def pool(name: str, gpu_gib: int, host_gib: int) -> Pool:
    """A pool of 8-GPU nodes labelled and tainted like the local cluster's."""
    return Pool(name=name, gpu_memory_bytes=gpu_gib * GIB, host_memory_bytes=host_gib * GIB, gpus_per_node=8,
                node_selector={"influencetrace.dev/pool": name}, tolerations=[TOLERATION])


H100 = pool("h100", 80, 2048)
H200 = pool("h200", 141, 2048)
SMALL_HOST = pool("small", 80, 64)
REF = TraceRef(name="demo", namespace="team-a", uid="1234-uid")


def trace_dict(**spec: Any) -> dict[str, Any]:
    """A small valid manifest; keyword arguments replace whole spec sections."""
    body: dict[str, Any] = {
        "apiVersion": "influencetrace.dev/v1alpha1",
        "kind": "InfluenceTrace",
        "metadata": {
            "name": "demo",
            "namespace": "team-a",
            "annotations": {
                "influencetrace.dev/simulate-gpu-bytes": "100000000000",
                "unrelated.example/x": "y",
            },
        },
        "spec": {
            "model": {"path": "/workspace/models/tiny", "preset": "qwen2.5-0.5b"},
            "rollouts": {"path": "/workspace/data/rollouts.jsonl", "tokensEstimate": 1000},
            "resources": {"gpus": 2, "pools": ["h100", "h200"]},
            "storage": {"volumeClaim": "influence-data"},
            "output": {"path": "/workspace/out"},
            "pod": {"labels": {"team": "rl"}, "annotations": {"owner": "alice"}},
        },
    }
    body["spec"].update(spec)
    return body


def trace(**spec: Any) -> InfluenceTrace:
    return parse_manifest(trace_dict(**spec))


def job(state: str | None = None, message: str = "") -> dict[str, Any]:
    conditions = [] if state is None else [{"type": state, "status": "True", "message": message}]
    return {"metadata": {"name": "demo-a1"}, "status": {"conditions": conditions}}


def pod(
    phase: str,
    exit_code: int | None = None,
    reason: str | None = None,
    message: str | None = None,
    evicted: bool = False,
    created: str = "2025-01-01T00:00:00Z",
    name: str = "demo-a1-x",
) -> dict[str, Any]:
    status: dict[str, Any] = {"phase": phase, "conditions": []}
    if exit_code is not None:
        term = {"exitCode": exit_code, "reason": reason or "Error", "finishedAt": "2025-01-01T00:01:00Z"}
        if message is not None:
            term["message"] = message
        status["containerStatuses"] = [{"name": "worker", "state": {"terminated": term}}]
    if evicted:
        status["conditions"].append({"type": "DisruptionTarget", "status": "True"})
        status["reason"] = "Evicted"
    return {"metadata": {"name": name, "creationTimestamp": created}, "status": status}
