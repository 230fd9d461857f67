"""Each prompt computed once per batch: scores identical (float64) to the brute force and to prompts
not shared, with and without checkpointed layers; the prompt cache never grows; padding at most 10%."""

from __future__ import annotations

import dataclasses
from collections import Counter

import numpy as np
import pytest
import torch
from influence_trace.api.architectures import shapes_and_dtype
from influence_trace.demo.rollouts import make_rollouts
from influence_trace.planning.capture_plan import BatchShape, batch_bytes, checkpoint_count
from influence_trace.trace import capture, capture_planning, prompt_store, shared_prompts
from influence_trace.trace.batching import MAX_PADDING, Item, plan_batches, shape_of
from influence_trace.trace.ledger import MemoryLedger
from influence_trace.trace.records import Response
from influence_trace.trace.selection import select_groups

from tests.trace.bruteforce import read_rollouts, reference, settings, token_gradients
from tests.trace.numeric_helpers import SMALL, assert_scores_close, run

UNSHARED = dataclasses.replace(SMALL, share_prompts=False)
WIDE = dataclasses.replace(SMALL, capture_tokens=400)  # several groups in one batch


@pytest.fixture(scope="module")
def responses(tmp_path_factory: pytest.TempPathFactory) -> list[Response]:
    """Prompts of 1 to 11 tokens (a one-token prompt has no prefix at all), four responses each."""
    rows = read_rollouts(make_rollouts(tmp_path_factory.mktemp("r") / "r.jsonl", seed=7, num_prompts=4,
                                       prompt_len=(1, 12)))
    first = rows[0]
    one = [dataclasses.replace(r, prompt_ids=first.prompt_ids[:1])
           for r in rows if r.prompt_id == first.prompt_id]
    return one + [r for r in rows if r.prompt_id != first.prompt_id]


@pytest.mark.parametrize("scope", ["per_prompt", "all_selected"])
@pytest.mark.parametrize("options", [SMALL, WIDE], ids=["small", "wide"])
def test_shared_prompts_match_the_brute_force_and_prompts_not_shared(model, responses, scope,
                                                                    options) -> None:
    trace = settings(factor=4, scope=scope)
    selection = select_groups(responses, trace)
    assert len({len(r.prompt_ids) for r in selection.responses}) > 2 and min(
        len(r.prompt_ids) for r in selection.responses) == 1
    ref = reference(token_gradients(model, selection, trace, False), selection, trace)
    shared = run(model, selection, trace, options)
    assert_scores_close(shared.scores, ref.scores, 1e-6)
    plain = run(model, selection, trace, dataclasses.replace(options, share_prompts=False))
    assert_scores_close(shared.scores, plain.scores, 1e-10)


@pytest.mark.parametrize("store", [True, False], ids=["store", "per-batch"])
@pytest.mark.parametrize("count", [1, 2])
def test_checkpointed_layers_see_the_same_prompt_and_the_cache_never_grows(model, responses, monkeypatch,
                                                                          count, store) -> None:
    """``count`` of the two layers checkpointed and recomputed in backward, each recomputation reading the
    prompt's keys and values from a cache that stays as it was; the prompts computed before the batches
    (the store) or in each batch, under the checkpointed layers (a forward without gradients)."""
    trace = settings(factor=4)
    selection = select_groups(responses, trace)
    seen: list = []
    update = shared_prompts.PrefixLayer.update

    def counting_update(self, keys, values, *args, **kwargs):
        before = self.keys.shape
        out = update(self, keys, values, *args, **kwargs)
        assert self.keys.shape == before and out[0].shape[-2] == before[-2] + keys.shape[-2]
        if not hasattr(self, "calls"):
            self.calls = 0
            seen.append(self)  # kept alive, so each layer of each batch is counted apart
        self.calls += 1
        return out

    monkeypatch.setattr(shared_prompts.PrefixLayer, "update", counting_update)
    monkeypatch.setattr(capture_planning, "plan_checkpointing", lambda *_: count)
    if not store:
        monkeypatch.setattr(capture_planning, "store_bytes", lambda *_: 10**18)
    result = run(model, selection, trace, WIDE)
    calls = Counter(layer.calls for layer in seen)  # 2: forward and its recomputation, same cache
    assert calls == ({2: len(seen)} if count == 2 else {1: len(seen) // 2, 2: len(seen) // 2})
    ref = reference(token_gradients(model, selection, trace, False), selection, trace)
    assert_scores_close(result.scores, ref.scores, 1e-6)


def test_checkpoints_nothing_when_the_batch_fits_else_the_fewest_layers_that_fit(model) -> None:
    shapes, dtype = shapes_and_dtype(model)
    batch = BatchShape(padded_tokens=400, response_tokens=300, group_prefix_tokens=40, row_prefix_tokens=200)

    def need(count: int) -> int:
        return sum(batch_bytes(shapes, dtype, batch, count).values())

    layers = shapes.num_layers
    assert layers == 2 and need(0) > need(1)
    assert need(2) >= need(1)  # checkpointing the last layer too saves nothing: it is recomputed at once
    assert checkpoint_count(shapes, dtype, batch, None) == 0
    assert checkpoint_count(shapes, dtype, batch, need(0)) == 0
    assert checkpoint_count(shapes, dtype, batch, need(0) - 1) == 1
    assert checkpoint_count(shapes, dtype, batch, need(1)) == 1
    assert checkpoint_count(shapes, dtype, batch, 0) == 1  # does not fit at all: the least


def _count_prompt_rows(monkeypatch) -> list[int]:
    rows: list[int] = []
    forward = shared_prompts.forward_prefix

    def counting(model_, ids):
        rows.append(ids.shape[0])
        return forward(model_, ids)

    monkeypatch.setattr(shared_prompts, "forward_prefix", counting)
    monkeypatch.setattr(prompt_store, "forward_prefix", counting)
    return rows


def test_each_prompt_runs_once_for_the_whole_capture(model, responses, monkeypatch) -> None:
    """Responses of one group in several batches (lengths differ): the store runs its prompt once."""
    trace = settings(factor=4)
    selection = select_groups(responses, trace)
    plan = capture_planning.plan_capture(model, selection.responses, WIDE, MemoryLedger())
    assert plan.store_bytes > 0
    spread = Counter(selection.responses[i].prompt_id for b in plan.batches
                     for i in {selection.responses[j].prompt_id: j for j in b}.values())
    assert max(spread.values()) > 1  # some group's responses are in several batches
    rows = _count_prompt_rows(monkeypatch)
    run(model, selection, trace, WIDE)
    assert sum(rows) == len({r.prompt_id for r in selection.responses if len(r.prompt_ids) > 1})


def test_without_room_for_the_store_each_batch_runs_its_prompts_with_the_same_scores(model, responses,
                                                                                  monkeypatch) -> None:
    trace = settings(factor=4, scope="all_selected")
    selection = select_groups(responses, trace)
    stored = run(model, selection, trace, WIDE).scores
    rows = _count_prompt_rows(monkeypatch)
    monkeypatch.setattr(capture_planning, "store_bytes", lambda *_: 10**18)  # more than any room
    plan = capture_planning.plan_capture(model, selection.responses, WIDE, MemoryLedger())
    assert plan.store_bytes == 0
    ledger = MemoryLedger()
    per_batch = run(model, selection, trace, WIDE, ledger).scores
    assert "prompt_store" not in ledger.peak_breakdown
    assert sum(rows) > len({r.prompt_id for r in selection.responses})
    assert_scores_close(per_batch, stored, 1e-10)


def test_batches_of_mixed_lengths_pad_at_most_ten_percent() -> None:
    """400 responses of 16-3,000 tokens in 40 groups with prompts of 1-1,024 tokens."""
    rng = np.random.default_rng(0)
    prefix = rng.integers(0, 1024, 40)
    items = [Item(int(w), int(g), int(prefix[g])) for w, g in zip(rng.integers(16, 3000, 400),
                                                                  rng.integers(0, 40, 400), strict=True)]
    for share in (True, False):
        planned = items if share else [Item(it.width + it.prefix) for it in items]
        batches = plan_batches(planned, 16384)
        assert sorted(i for b in batches for i in b) == list(range(len(items)))
        shapes = [shape_of(planned, b, 16384) for b in batches]
        assert all(s.padded - s.real <= MAX_PADDING * s.real for s in shapes)
        assert all(s.rows * s.width <= 16384 or s.rows == 1 for s in shapes)
        assert len(batches) < len(items) / 4  # not one batch per response


def test_batch_inputs_are_what_the_planner_planned(responses) -> None:
    items = shared_prompts.items_of(responses)
    idx = list(range(len(responses)))
    offsets = np.concatenate([[0], np.cumsum([r.num_tokens for r in responses])])
    inputs = shared_prompts.shared_inputs(responses, idx, offsets, torch.device("cpu"))
    shape = shape_of(items, idx, 4096)
    assert inputs.ids.shape == (shape.rows, shape.width)
    assert inputs.prefix_ids.shape == (shape.groups, shape.prefix)
    assert int(inputs.mask.sum()) == sum(len(r.prompt_ids) - 1 + r.num_tokens for r in responses)
    assert inputs.targets.tolist() == [t for r in responses for t in r.response_ids]


def test_a_capture_that_does_not_fit_checkpoints_the_layers_the_model_says(model, responses,
                                                                          monkeypatch) -> None:
    """Room for the largest batch with one layer checkpointed: the worker checkpoints exactly one, and
    its ledger's capture bytes are the model's for that count (no more than the room)."""
    trace = settings(factor=4)
    selection = select_groups(responses, trace)
    plan = capture_planning.plan_capture(model, selection.responses, WIDE, MemoryLedger())
    assert plan.checkpointed == 0  # the CPU's room: everything fits
    items = shared_prompts.items_of(selection.responses)
    shapes, dtype = shapes_and_dtype(model)
    planned = [capture_planning.batch_shape(shape_of(items, b, WIDE.capture_tokens),
                                   sum(selection.responses[i].num_tokens for i in b)) for b in plan.batches]
    largest = max(planned, key=lambda s: sum(batch_bytes(shapes, dtype, s, 1).values()))
    room = sum(batch_bytes(shapes, dtype, largest, 1).values())
    monkeypatch.setattr(capture_planning, "capture_room", lambda *_: room)
    monkeypatch.setattr(capture_planning, "store_bytes", lambda *_: 10**18)  # no prompt store: batches alone
    counts: list[int] = []
    layers = capture.checkpointed_layers

    def spy(model_, count=None):
        counts.append(count)
        return layers(model_, count)

    monkeypatch.setattr(capture, "checkpointed_layers", spy)
    ledger = MemoryLedger()
    run(model, selection, trace, WIDE, ledger)
    assert counts == [1]
    held = ledger.peak_breakdown
    assert held["capture_batch"] + held["prompt_kv"] <= room


def test_equal_lengths_without_any_padding_match_prompts_not_shared(model, tmp_path) -> None:
    """No padded position at all: the attention mask is all ones, and the gradient pass's queries still
    sit after the prompt's keys (a mask aligned to the top left would let them see nothing of it)."""
    rows = read_rollouts(make_rollouts(tmp_path / "u.jsonl", seed=3, num_prompts=3, prompt_len=(6, 7),
                                       response_len=(5, 6)))
    assert {len(r.prompt_ids) for r in rows} == {6} and {r.num_tokens for r in rows} == {5}
    trace = settings(factor=4, scope="all_selected")
    selection = select_groups(rows, trace)
    shared = run(model, selection, trace, WIDE).scores
    assert_scores_close(shared, run(model, selection, trace, UNSHARED).scores, 1e-10)
