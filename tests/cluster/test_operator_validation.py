"""Invalid manifests are refused by the API server itself, with a message that names the field."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from tests.cluster import kube
from tests.cluster.operator_fixtures import crd_fixture, trace_manifest  # noqa: F401  (fixture)


def _with(path: str, value: Any) -> dict[str, Any]:
    """The small valid trace with one field set (``None`` deletes it)."""
    body = copy.deepcopy(trace_manifest("invalid"))
    node = body
    *parents, last = path.split(".")
    for part in parents:
        node = node.setdefault(part, {})
    if value is None:
        node.pop(last, None)
    else:
        node[last] = value
    return body


CASES = [
    ("spec.trace.factor", 0, "spec.trace.factor"),
    ("spec.trace.scope", "global", "spec.trace.scope"),
    ("spec.model.dtype", "int8", "spec.model.dtype"),
    ("spec.model.preset", "gpt-5", "spec.model.preset"),
    ("spec.model.path", "", "spec.model.path"),
    ("spec.output", None, "spec.output"),
    ("spec.rollouts", {"tokensEstimate": 10}, "spec.rollouts"),
    (
        "spec.trace",
        {"selfInfluenceScale": 0.5, "excludeSelfResponse": False},
        "spec.trace.selfInfluenceScale",
    ),
    ("spec.trace.bogus", 1, "spec.trace.bogus"),
    ("spec.resources.maxAttempts", 0, "spec.resources.maxAttempts"),
    ("spec.resources.gpus", 17, "spec.resources.gpus"),
    ("spec.trace.modules", ["mlp.up_proj", "mlp.up_proj"], "spec.trace.modules"),
    ("spec.trace.maxHessianDim", -2, "spec.trace.maxHessianDim"),
    ("spec.rollouts.generate", {"promptsPath": "/p.jsonl", "topP": 0}, "spec.rollouts.generate.topP"),
    ("spec.trace.hessianDtype", "bfloat16", "spec.trace.hessianDtype"),
    ("spec.training", {"steps": 3}, "spec.training.steps"),
    ("spec.training", {"optimizer": {"betas": [0.9]}}, "spec.training.optimizer.betas"),
    ("spec.rollouts.stepPaths", ["/a.jsonl", "/b.jsonl"], "spec.rollouts.stepPaths"),
]


@pytest.mark.parametrize(("path", "value", "field"), CASES, ids=[c[0] + "=" + repr(c[1])[:20] for c in CASES])
def test_api_server_refuses(crd: None, namespace: str, path: str, value: Any, field: str) -> None:
    proc = kube.kubectl(
        "create", "-f", "-", input=kube._to_yaml(_with(path, value)), namespace=namespace, check=False
    )
    assert proc.returncode != 0, f"{path}={value!r} was accepted"
    assert field in proc.stderr, proc.stderr
    assert kube.get("influencetrace", "invalid", namespace) is None


def test_valid_manifest_is_accepted_with_defaults(crd: None, namespace: str) -> None:
    kube.create(trace_manifest("valid"), namespace)
    obj = kube.get("influencetrace", "valid", namespace)
    assert obj["spec"]["trace"]["factor"] == 32 and obj["spec"]["resources"]["gpus"] == 1
    assert "maxAttempts" not in obj["spec"]["resources"]  # unset: the operator's default applies
    assert obj["spec"]["trace"]["modules"][0] == "self_attn.q_proj"
