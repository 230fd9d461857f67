"""spec.training and rollouts.stepPaths: defaults, bounds, and the cross-field rules in both places."""

from __future__ import annotations

from typing import Any

import pytest
from influence_trace.api import crd
from influence_trace.api.spec import ManifestError, parse_manifest


def manifest(rollouts: dict[str, Any], training: dict[str, Any] | None = None) -> dict[str, Any]:
    spec: dict[str, Any] = {"model": {"path": "/m"}, "rollouts": rollouts, "output": {"path": "/o"}}
    if training is not None:
        spec["training"] = training
    return {"apiVersion": "influencetrace.dev/v1alpha1", "kind": "InfluenceTrace", "spec": spec}


GENERATE = {"generate": {"promptsPath": "/p.jsonl"}}


def test_absent_training_is_one_step_and_defaults_are_documented() -> None:
    assert parse_manifest(manifest({"path": "/r.jsonl"})).spec.training is None
    training = parse_manifest(manifest(GENERATE, {"steps": 4})).spec.training
    got = (training.steps, training.ppo_epochs, training.mini_batch_size, training.checkpoint_every)
    assert got == (4, 1, 0, 1)
    assert training.optimizer.betas == [0.9, 0.999] and training.optimizer.grad_clip == 1.0
    assert not training.skip_optimizer_step


@pytest.mark.parametrize(
    ("rollouts", "training", "field", "words"),
    [
        ({"path": "/r.jsonl"}, {"steps": 2}, "spec", "training.steps > 1 needs rollouts.generate"),
        ({"stepPaths": ["/a", "/b"]}, {"steps": 3}, "spec", "exactly one file per training step"),
        ({"stepPaths": ["/a", "/b"]}, None, "spec", "exactly one file per training step"),
        ({"path": "/r", "stepPaths": ["/a"]}, None, "spec.rollouts", "replaces rollouts.path"),
        (GENERATE, {"steps": 0}, "spec.training.steps", "greater than or equal to 1"),
        (GENERATE, {"optimizer": {"betas": [0.9, 1.0]}}, "spec.training.optimizer.betas.1", "less than 1"),
        (GENERATE, {"optimizer": {"betas": [0.9]}}, "spec.training.optimizer.betas", "at least 2"),
        (GENERATE, {"optimizer": {"eps": 0}}, "spec.training.optimizer.eps", "greater than 0"),
        (GENERATE, {"ppoEpochs": 0}, "spec.training.ppoEpochs", "greater than or equal to 1"),
        (GENERATE, {"miniBatchSize": -1}, "spec.training.miniBatchSize", "greater than or equal to 0"),
    ],
)
def test_refused_with_the_field_named(rollouts, training, field: str, words: str) -> None:
    with pytest.raises(ManifestError) as err:
        parse_manifest(manifest(rollouts, training))
    assert f"  {field}:" in str(err.value) and words in str(err.value), str(err.value)


def test_accepted_combinations() -> None:
    assert parse_manifest(manifest({"stepPaths": ["/a", "/a"]}, {"steps": 2})).spec.rollouts.step_paths
    assert parse_manifest(manifest({"stepPaths": ["/a"]})).spec.training is None
    skipping = parse_manifest(manifest(GENERATE, {"steps": 3, "skipOptimizerStep": True}))
    assert skipping.spec.training.steps == 3


def test_crd_carries_bounds_and_rules() -> None:
    schema = crd.openapi_schema()["properties"]["spec"]
    training = schema["properties"]["training"]["properties"]
    assert training["steps"] == {**training["steps"], "minimum": 1, "maximum": 10000, "default": 1}
    betas = training["optimizer"]["properties"]["betas"]
    assert betas["minItems"] == betas["maxItems"] == 2 and betas["default"] == [0.9, 0.999]
    rules = [r["rule"] for r in schema["x-kubernetes-validations"]]
    assert any("self.training.steps <= 1" in r for r in rules)
    assert any("size(self.rollouts.stepPaths)" in r for r in rules)
