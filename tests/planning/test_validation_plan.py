"""The validate stage in the memory and duration models, against the worker's own buffers."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from influence_trace.api.spec import parse_manifest
from influence_trace.planning.duration import stage_seconds
from influence_trace.planning.memory_model import EstimateOptions, estimate
from influence_trace.trace.projection import find_traced_linears

from tests.trace.bruteforce import load_model


def _spec(model: Path, dtype: str, validate: dict | None, **trace: object):
    spec = {"model": {"path": str(model), "dtype": dtype},
            "rollouts": {"path": "/r.jsonl", "tokensEstimate": 500},
            "trace": {"scope": "all_selected", "excludeSelfResponse": False, **trace},
            "output": {"path": "/o"}}
    if validate is not None:
        spec["validate"] = validate
    return parse_manifest({"apiVersion": "influencetrace.dev/v1alpha1", "kind": "InfluenceTrace",
                           "spec": spec}).spec


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_sgd_stage_holds_traced_weights_twice_and_a_float32_copy(tiny_model_dir: Path, dtype: str) -> None:
    est = estimate(_spec(tiny_model_dir, dtype, {"subsets": 8}), options=EstimateOptions(device="cpu"))
    model = load_model(tiny_model_dir, torch.float32)
    traced = sum(m.weight.numel() for _, m in find_traced_linears(model, [
        "self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj", "mlp.gate_proj",
        "mlp.up_proj", "mlp.down_proj"]))
    params = sum(p.numel() for p in model.parameters())
    b = est.gpu_breakdown
    assert b["validate_saved_weights"] == b["validate_gradients"] == traced * 4
    assert b["validate_copy"] == (params * 4 if dtype == "bfloat16" else 0)
    parts = ("weights", "validate_copy", "validate_saved_weights", "validate_gradients", "validate_batch")
    assert est.stages["validate"] == sum(b[k] for k in parts)


def test_optimizer_target_adds_every_weight_and_the_moments(tiny_model_dir: Path) -> None:
    cpu = EstimateOptions(device="cpu")
    sgd = estimate(_spec(tiny_model_dir, "float32", {}), options=cpu)
    opt = estimate(_spec(tiny_model_dir, "float32", {"target": "optimizer"}), options=cpu)
    params = sum(p.numel() for p in load_model(tiny_model_dir, torch.float32).parameters())
    assert opt.gpu_breakdown["validate_saved_weights"] == params * 4
    assert opt.gpu_breakdown["validate_optimizer_states"] == 2 * params * 4
    assert opt.stages["validate"] > sgd.stages["validate"]


def test_duration_grows_with_the_subsets_and_is_absent_without_validation(tiny_model_dir: Path) -> None:
    def seconds(validate: dict | None) -> dict[str, float]:
        spec = _spec(tiny_model_dir, "bfloat16", validate)
        return stage_seconds(spec, estimate(spec, options=EstimateOptions(device="cpu")))

    assert "validate" not in seconds(None)
    few, many = seconds({"subsets": 4})["validate"], seconds({"subsets": 60})["validate"]
    # (m + 4) masks plus one backward: 8 and 64 masks
    assert many / few == pytest.approx((64 * 8 + 6) / (8 * 8 + 6), rel=1e-9)
