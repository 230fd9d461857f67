"""Checkpointed capture: each factor stored once despite recomputation, scores unchanged (float64)."""

from __future__ import annotations

import dataclasses
from collections import Counter

import pytest
import torch
from influence_trace.demo.rollouts import make_rollouts
from influence_trace.planning import memory_model
from influence_trace.trace import capture_planning, staging
from influence_trace.trace.lean_capture import checkpointed_layers, decoder_layers, response_log_probs
from influence_trace.trace.selection import select_groups

from tests.trace.bruteforce import read_rollouts, reference, settings, token_gradients
from tests.trace.numeric_helpers import SMALL, assert_scores_close, run


@pytest.fixture(scope="module")
def responses(tmp_path_factory: pytest.TempPathFactory):
    return read_rollouts(make_rollouts(tmp_path_factory.mktemp("rollouts") / "r.jsonl", seed=5))


def test_each_factor_is_stored_once_though_layers_are_recomputed(model, responses, monkeypatch) -> None:
    trace = settings(factor=4)
    selection = select_groups(responses, trace)
    puts: Counter = Counter()
    put = staging.CaptureStaging.put

    def counting_put(self, store, values):
        puts[id(store)] += 1
        return put(self, store, values)

    monkeypatch.setattr(staging.CaptureStaging, "put", counting_put)
    monkeypatch.setattr(capture_planning, "plan_checkpointing", lambda *_: 2)  # both layers, whatever fits
    calls: Counter = Counter()
    linear = model.get_submodule("model.layers.0.mlp.up_proj")
    handle = linear.register_forward_hook(lambda *_: calls.update(["up_proj"]))
    try:
        # capture batches of 40 padded tokens; prompts not shared: one forward per batch runs up_proj
        result = run(model, selection, trace, dataclasses.replace(SMALL, share_prompts=False))
    finally:
        handle.remove()
    batches = puts[max(puts, key=puts.get)]
    assert batches > 1
    stores = len(result.modules) * 2  # u and v of every traced module
    assert len(puts) == stores and set(puts.values()) == {batches}  # once per store and batch
    assert calls["up_proj"] == 2 * batches  # the forward and backward's recomputation both ran it


def test_layers_are_restored_after_the_block(model) -> None:
    layers = decoder_layers(model)
    assert layers and all("forward" not in layer.__dict__ for layer in layers)
    with checkpointed_layers(model) as count:
        assert count == len(layers) and all("forward" in layer.__dict__ for layer in layers)
    assert all("forward" not in layer.__dict__ for layer in layers)


def test_chunked_log_probs_and_their_gradient_equal_the_full_computation(model) -> None:
    lm_head = model.get_output_embeddings()
    gen = torch.Generator().manual_seed(0)
    hidden = torch.randn(11, lm_head.in_features, generator=gen, dtype=torch.float64, requires_grad=True)
    targets = torch.randint(0, lm_head.out_features, (11,), generator=gen)
    full = torch.log_softmax(lm_head(hidden), dim=-1).gather(1, targets[:, None])[:, 0]
    (want,) = torch.autograd.grad(full.sum(), hidden)
    for chunk in (1, 4, 11, 50):
        got = response_log_probs(lm_head, hidden, targets, chunk)
        torch.testing.assert_close(got, full, rtol=1e-13, atol=0)
        (grad,) = torch.autograd.grad(got.sum(), hidden)
        torch.testing.assert_close(grad, want, rtol=1e-13, atol=1e-15)


@pytest.mark.parametrize("scope", ["per_prompt", "all_selected"])
def test_scores_with_three_token_logit_chunks_match_the_brute_force(model, responses, monkeypatch,
                                                                   scope) -> None:
    vocab = model.get_output_embeddings().out_features
    monkeypatch.setattr(memory_model, "LOGIT_CHUNK_BYTES", 3 * vocab * 4)
    assert memory_model.logit_chunk_tokens(vocab) == 3
    trace = settings(factor=4, scope=scope)
    selection = select_groups(responses, trace)
    ref = reference(token_gradients(model, selection, trace, False), selection, trace)
    assert_scores_close(run(model, selection, trace).scores, ref.scores, 1e-6)
