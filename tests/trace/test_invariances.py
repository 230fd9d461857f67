"""Equivalences the computation must satisfy, and its failure modes (retries, device budget)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from influence_trace.api.contract import GPUOutOfMemory, InvalidInput, WorkerFailure
from influence_trace.demo.rollouts import make_rollouts
from influence_trace.trace.ledger import MemoryLedger
from influence_trace.trace.selection import select_groups

from tests.trace.bruteforce import load_model, read_rollouts, reference, settings, token_gradients
from tests.trace.numeric_helpers import SMALL, assert_scores_close, run


@pytest.fixture(scope="module")
def responses(tmp_path_factory: pytest.TempPathFactory):
    return read_rollouts(make_rollouts(tmp_path_factory.mktemp("rollouts") / "r.jsonl", seed=5))


def test_all_selected_over_one_group_equals_per_prompt(model, responses, kernels) -> None:
    results = []
    for scope in ("per_prompt", "all_selected"):
        trace = settings(factor=4, scope=scope)
        results.append(run(model, select_groups(responses, trace, max_prompts=1), trace).scores)
    assert_scores_close(results[0], results[1], 1e-10)


@pytest.mark.parametrize("source", ["token", "response"])
def test_scores_do_not_depend_on_chunks_or_capture_batches(model, responses, source, kernels) -> None:
    trace = settings(factor=4, hessian_source=source)
    selection = select_groups(responses, trace)
    big = run(model, selection, trace, replace(SMALL, chunk_bytes=2**30, capture_tokens=2**20))
    tiny = run(model, selection, trace, replace(SMALL, chunk_bytes=1, capture_tokens=1))
    assert_scores_close(tiny.scores, big.scores, 1e-10)


def test_same_seed_same_scores_other_seed_different(model, responses, kernels) -> None:
    selection = select_groups(responses, settings())
    first = run(model, selection, settings(factor=4, seed=11)).scores
    again = run(model, selection, settings(factor=4, seed=11)).scores
    other = run(model, selection, settings(factor=4, seed=12)).scores
    for key in first:
        np.testing.assert_array_equal(first[key], again[key])
    assert any(not np.allclose(first[k], other[k], rtol=1e-3) for k in first)


def test_factor_one_equals_the_unprojected_definition(model, responses) -> None:
    trace = settings(factor=1, modules=["self_attn.v_proj"], scope="all_selected")
    selection = select_groups(responses, trace)
    ref = reference(token_gradients(model, selection, trace, unprojected=True), selection, trace)
    assert_scores_close(run(model, selection, trace).scores, ref.scores, 1e-6)


def singular(retries: int) -> dict:
    """Rank-4 Hessians of side 512 (four response gradients) with a negligible regLambda."""
    return dict(factor=1, modules=["self_attn.k_proj"], hessian_source="response", reg_lambda=1e-30,
                max_damping_retries=retries)


def test_singular_hessian_retries_with_more_damping(model, responses) -> None:
    trace = settings(**singular(60))
    result = run(model, select_groups(responses, trace), trace)
    for report in result.modules:
        assert report.retries > 0
        assert all(d > 1e-30 for d in report.damping) and len(report.damping) == result.scopes
    assert all(np.isfinite(v).all() for v in result.scores.values())


def test_hessian_that_cannot_be_factored_is_an_error(model, responses) -> None:
    trace = settings(**singular(1))
    with pytest.raises(WorkerFailure, match="Cholesky of H \\+ lambda I failed") as info:
        run(model, select_groups(responses, trace), trace)
    assert info.value.reason == "Error" and info.value.stage == "hessian_solve"


class RecordingLedger(MemoryLedger):
    """Remembers the running total and the stage of every allocation."""

    def __init__(self, budget_bytes: int | None = None) -> None:
        super().__init__(budget_bytes)
        self.log: list[tuple[str, str, int]] = []

    def allocate(self, name: str, nbytes: int, stage: str) -> None:
        super().allocate(name, nbytes, stage)
        self.log.append((name, stage, self.total))


def test_tiny_budget_is_a_gpu_oom_in_the_stage_that_needs_the_memory(model, responses) -> None:
    trace = settings(factor=1, modules=["self_attn.o_proj"])  # 1024 x 1024 float64 Hessians: 8 MiB
    selection = select_groups(responses, trace)
    ledger = RecordingLedger()
    run(model, selection, trace, ledger=ledger)
    first_hessian = next(i for i, (name, _, _) in enumerate(ledger.log) if name == "hessian")
    before = max(total for _, _, total in ledger.log[:first_hessian])
    assert ledger.log[first_hessian][1] == "hessian_solve" and ledger.log[first_hessian][2] > before
    with pytest.raises(GPUOutOfMemory) as info:
        run(model, selection, trace, ledger=MemoryLedger(budget_bytes=before))
    assert info.value.stage == "hessian_solve" and info.value.exit_code == 75
    names = {name for name, _, _ in ledger.log}
    assert {"weights", "capture_batch", "factors", "response_grads", "hessian", "cholesky",
            "gram", "pairs", "expansion"} <= names  # 32 x 32: the symmetric Gram build
    assert "solutions" not in names  # solved in place, over the response gradients


def test_float32_and_bfloat16_paths_approximate_float64(model, responses, tiny_model_dir: Path) -> None:
    exact = settings(factor=4)
    selection = select_groups(responses, exact)
    want = run(model, selection, exact).scores
    model32 = load_model(tiny_model_dir, torch.float32)
    fast = settings(factor=4, capture_dtype="float32", hessian_dtype="float32")
    assert_scores_close(run(model32, selection, fast).scores, want, 1e-3)
    default = run(model32, selection, settings(factor=4, capture_dtype="bfloat16", hessian_dtype="float32"))
    assert_scores_close(default.scores, want, 0.1)


def test_unknown_module_suffix_is_invalid_input(model, responses) -> None:
    trace = settings(modules=["mlp.nonexistent_proj"])
    with pytest.raises(InvalidInput, match=r"mlp\.nonexistent_proj"):
        run(model, select_groups(responses, trace), trace)


@pytest.mark.parametrize(("diagonal", "message"), [(float("nan"), "non-finite"), (0.0, "Hessian is zero")])
def test_unusable_hessians_are_errors_not_nan_scores(diagonal: float, message: str) -> None:
    from influence_trace.trace.solve import damped_cholesky

    hessian = torch.zeros(3, 3, dtype=torch.float64)
    hessian[1, 1] = diagonal
    with pytest.raises(WorkerFailure, match=message) as info:
        damped_cholesky(hessian, -1.0, 3, MemoryLedger(), "module m")
    assert info.value.stage == "hessian_solve"
