"""Issue 24's CUDA paths: shared prompts on the GPU against the float64 reference and against prompts
not shared, and the side-stream staging landing every row (its event order is checked on the CPU in
tests/trace/test_copy_stream.py)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch
from influence_trace.demo.rollouts import make_rollouts
from influence_trace.planning.options import WorkerOptions
from influence_trace.trace.selection import select_groups
from influence_trace.trace.staging import CaptureStaging, CopyStream

from tests.gpu import GPU
from tests.trace.bruteforce import load_model, read_rollouts, reference, settings, token_gradients
from tests.trace.numeric_helpers import assert_scores_close, run

pytestmark = GPU
CUDA = torch.device("cuda:0")


@pytest.fixture(scope="module")
def responses(tmp_path_factory: pytest.TempPathFactory):
    return read_rollouts(make_rollouts(tmp_path_factory.mktemp("r") / "r.jsonl", seed=7, num_prompts=4,
                                       prompt_len=(2, 12)))


@pytest.mark.parametrize("scope", ["per_prompt", "all_selected"])
def test_shared_prompts_on_cuda_match_the_reference_and_prompts_not_shared(tiny_model_dir: Path, responses,
                                                                          scope) -> None:
    trace = settings(factor=4, scope=scope)
    cpu_model = load_model(tiny_model_dir)
    selection = select_groups(responses, trace)
    ref = reference(token_gradients(cpu_model, selection, trace, False), selection, trace)
    model = load_model(tiny_model_dir).to(CUDA)
    options = WorkerOptions(device="cuda:0", capture_tokens=400, progress=False)
    shared = run(model, selection, trace, options)
    plain = run(model, selection, trace, dataclasses.replace(options, share_prompts=False))
    assert_scores_close(shared.scores, ref.scores, 1e-6)
    assert_scores_close(shared.scores, plain.scores, 1e-9)


def test_side_stream_staging_lands_every_row_while_compute_continues() -> None:
    store = torch.zeros(64, 8, dtype=torch.bfloat16)
    stage = CaptureStaging(capacity=16 * 8, dtype=torch.bfloat16, pin=True, copier=CopyStream(CUDA))
    values = []
    for batch in range(4):
        stage.begin(torch.arange(16 * batch, 16 * batch + 16))
        rows = torch.randn(16, 8, device=CUDA)
        stage.put(store, rows)
        values.append(rows.to(torch.bfloat16).cpu())
        del rows  # freed at once: record_stream keeps its memory from reuse until the copy read it
        torch.randn(4096, 4096, device=CUDA).sum()  # compute queued behind, reusing freed blocks
        stage.end()
    stage.finish()
    assert torch.equal(store, torch.cat(values))
