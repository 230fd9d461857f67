"""The memory model's update stage against the worker's optimizer buffers on the tiny model."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from influence_trace.api.spec import parse_manifest
from influence_trace.planning.memory_model import EstimateOptions, estimate, resolve_shapes
from influence_trace.trace.update import PolicyOptimizer

from tests.trace.bruteforce import load_model


def _spec(model: Path, dtype: str, training: dict | None):
    spec = {"model": {"path": str(model), "dtype": dtype},
            "rollouts": {"generate": {"promptsPath": "/p.jsonl", "maxResponseTokens": 16},
                         "tokensEstimate": 500},
            "output": {"path": "/o"}}
    if training is not None:
        spec["training"] = training
    return parse_manifest({"apiVersion": "influencetrace.dev/v1alpha1", "kind": "InfluenceTrace",
                           "spec": spec}).spec


@pytest.mark.parametrize(("dtype", "torch_dtype"), [("float32", torch.float32), ("bfloat16", torch.bfloat16)])
def test_update_categories_are_the_optimizers_buffers(tiny_model_dir: Path, dtype: str, torch_dtype) -> None:
    spec = _spec(tiny_model_dir, dtype, {"steps": 3})
    est = estimate(spec, options=EstimateOptions(device="cpu"))
    worker = PolicyOptimizer(load_model(tiny_model_dir, torch_dtype), spec.training.optimizer).nbytes()
    for name, nbytes in worker.items():
        assert est.gpu_breakdown[name] == nbytes, name
    assert (worker["master_weights"] > 0) == (dtype == "bfloat16")
    parts = ("weights", "optimizer_states", "master_weights", "gradients", "update_batch")
    assert est.stages["update"] == sum(est.gpu_breakdown[k] for k in parts)


def test_stages_with_and_without_updates(tiny_model_dir: Path) -> None:
    plain = estimate(_spec(tiny_model_dir, "bfloat16", None), options=EstimateOptions(device="cpu"))
    skipping = estimate(_spec(tiny_model_dir, "bfloat16", {"steps": 3, "skipOptimizerStep": True}),
                        options=EstimateOptions(device="cpu"))
    one = estimate(_spec(tiny_model_dir, "bfloat16", {"steps": 1}), options=EstimateOptions(device="cpu"))
    three = estimate(_spec(tiny_model_dir, "bfloat16", {"steps": 3}), options=EstimateOptions(device="cpu"))
    assert "update" not in plain.stages and skipping.stages == plain.stages
    assert one.stages["capture"] == plain.stages["capture"]  # nothing resident before the first update
    held = three.gpu_breakdown["optimizer_states"] + three.gpu_breakdown["master_weights"]
    params = resolve_shapes(_spec(tiny_model_dir, "bfloat16", None)).parameter_count()
    assert held == 3 * 4 * params  # two float32 moments and a float32 master per parameter
    for stage in ("capture", "hessian", "generate"):
        assert three.stages[stage] == plain.stages[stage] + held, stage
    assert three.stages["update"] > three.stages["capture"]
