"""Invalid manifests, each with the field its refusal must name: shared by the pydantic check
(tests/api/test_rules.py) and the API server check (tests/cluster/test_operator_validation.py), so the
two validators are held to the same cases and must agree."""

from __future__ import annotations

import copy
from typing import Any

from influence_trace.api.spec import ManifestError, parse_manifest

# (path, value set there (None deletes it), the field the refusal names)
CASES: list[tuple[str, Any, str]] = [
    ("spec.trace.factor", 0, "spec.trace.factor"),
    ("spec.trace.scope", "global", "spec.trace.scope"),
    ("spec.model.dtype", "int8", "spec.model.dtype"),
    ("spec.model.preset", "gpt-5", "spec.model.preset"),
    ("spec.model.path", "", "spec.model.path"),
    ("spec.output", None, "spec.output"),
    ("spec.rollouts", {"tokensEstimate": 10}, "spec.rollouts"),
    ("spec.trace", {"selfInfluenceScale": 0.5, "excludeSelfResponse": False},
     "spec.trace.selfInfluenceScale"),
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
    ("spec.pod.labels", {"batch.kubernetes.io/controller-uid": "x"}, "spec.pod.labels"),
    ("spec.pod.annotations", {"influencetrace.dev/pool-gpu-bytes": "1"}, "spec.pod.annotations"),
    ("spec.pod.labels", {"team": "x" * 64}, "spec.pod.labels"),
    ("spec.resources.nodes", 65, "spec.resources.nodes"),
    ("spec.resources.pendingTimeout", "30 minutes", "spec.resources.pendingTimeout"),
    ("spec.validate", {"fraction": 1.0}, "spec.validate.fraction"),
    ("spec.validate", {"fraction": 0}, "spec.validate.fraction"),
    ("spec.validate", {"subsets": 1}, "spec.validate.subsets"),
    ("spec.validate", {"target": "optimizer"}, "spec.validate.target"),
]
IDS = [c[0] + "=" + repr(c[1])[:20] for c in CASES]


def with_field(base: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    """A copy of ``base`` with one field set (``None`` deletes it)."""
    body = copy.deepcopy(base)
    node = body
    *parents, last = path.split(".")
    for part in parents:
        node = node.setdefault(part, {})
    if value is None:
        node.pop(last, None)
    else:
        node[last] = value
    return body


def pydantic_refusal(body: dict[str, Any]) -> str | None:
    """The worker's refusal of a manifest (its message), or None when pydantic accepts it."""
    try:
        parse_manifest(body, "case")
    except ManifestError as err:
        return str(err)
    return None


def names_field(message: str, field: str) -> bool:
    """Whether a refusal names the field: its full path, or, on the line of one of its ancestors (where
    pydantic reports a cross-field rule), the rest of its path."""
    if field in message:
        return True
    parts = field.split(".")
    for cut in range(1, len(parts)):
        ancestor, rest = ".".join(parts[:cut]), ".".join(parts[cut:])
        if any(line.strip().startswith(f"{ancestor}:") and rest in line for line in message.splitlines()):
            return True
    return False
