"""The default precision: bfloat16 factors, float32 Hessian, TF32 Gram (emulated on the CPU).

On CUDA the default (allowTf32 unset, captureDtype bfloat16) runs the Hessian's GEMMs with TF32 inputs
(10 stored mantissa bits). Here TF32 is emulated where it matters most: the Gram build's inputs (the
pair products P and Q) are rounded to 10 mantissa bits before the GEMM, every module on the Gram path.
The scores' error against float64 must stay what bfloat16 storage alone gives.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from influence_trace.demo.rollouts import make_rollouts
from influence_trace.planning import hessian_plan
from influence_trace.trace import hessian
from influence_trace.trace.selection import select_groups

from tests.trace.bruteforce import load_model, read_rollouts, settings
from tests.trace.numeric_helpers import run

# Measured on the tiny model (2026-11-26): per_prompt 1.64, all_selected 0.96 (docs/algorithm.md). TF32
# rounds only H's inputs, not the gradients it is applied to, and small per_prompt Hessians amplify
# that inconsistency; the bound is what the measurement supports, not the hoped-for ~1.
ERROR_RATIO = 2.0


def tf32_round(x: torch.Tensor) -> torch.Tensor:
    """float32 rounded to nearest (ties away) at TF32's 10 stored mantissa bits."""
    bits = x.view(torch.int32)
    return ((bits + 0x1000) & ~0x1FFF).view(torch.float32)


def max_error(got: dict[str, np.ndarray], want: dict[str, np.ndarray]) -> float:
    scale = max(float(np.abs(v).max()) for v in want.values() if v.size)
    return max(float(np.abs(got[k] - want[k]).max()) for k in want) / scale


def test_tf32_round_keeps_ten_mantissa_bits() -> None:
    x = torch.tensor([1.0 + 2**-10, 1.0 + 2**-11 + 2**-12, 1.0 + 2**-12, -3.0])
    torch.testing.assert_close(tf32_round(x), torch.tensor([1.0 + 2**-10, 1.0 + 2**-10, 1.0, -3.0]),
                               rtol=0, atol=0)


@pytest.mark.parametrize("scope", ["per_prompt", "all_selected"])
def test_tf32_gram_stays_within_bfloat16_storage_error(model, tiny_model_dir: Path, tmp_path: Path,
                                                       monkeypatch, scope) -> None:
    responses = read_rollouts(make_rollouts(tmp_path / "r.jsonl", seed=11))
    exact = settings(factor=4, scope=scope)
    selection = select_groups(responses, exact)
    want = run(model, selection, exact).scores
    monkeypatch.setattr(hessian_plan, "MIN_GRAM_SIDE", 1)  # every token Hessian through the Gram
    model32 = load_model(tiny_model_dir, torch.float32)
    default = settings(factor=4, scope=scope, capture_dtype="bfloat16", hessian_dtype="float32")
    assert default.tf32 and not settings(factor=4).tf32  # unset allowTf32 follows captureDtype
    storage_only = max_error(run(model32, selection, default).scores, want)
    products = hessian.pair_products

    def tf32_pairs(x: torch.Tensor, out: torch.Tensor) -> None:
        products(x, out)
        out.copy_(tf32_round(out))

    monkeypatch.setattr(hessian, "pair_products", tf32_pairs)
    with_tf32 = max_error(run(model32, selection, default).scores, want)
    print(f"\n{scope}: bfloat16 storage alone {storage_only:.3e}, with TF32 Gram {with_tf32:.3e}, "
          f"ratio {with_tf32 / storage_only:.3f}")
    assert storage_only > 1e-4  # bfloat16's own error is visible, so the ratio means something
    assert with_tf32 <= ERROR_RATIO * storage_only
