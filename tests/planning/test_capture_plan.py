"""The capture's checkpointing choice: none where the pool has room, the fewest layers that fit where
it has not, and the estimate command shows the choice for the chosen pool."""

from __future__ import annotations

import itertools
import json

import pytest
from influence_trace.api.architectures import PRESETS
from influence_trace.planning import estimate_command
from influence_trace.planning.capture_plan import (
    BatchShape,
    batch_bytes,
    checkpoint_count,
    estimated_batch,
    estimated_store_tokens,
    pool_capture,
)
from influence_trace.planning.memory_model import capture_batch_bytes, estimate
from influence_trace.planning.workload import Workload

from tests.planning.test_memory_model import seed_spec

SHAPES = PRESETS["qwen2.5-1.5b"]


def test_every_layer_checkpointed_without_prompts_is_the_memory_models_capture_batch() -> None:
    """The same formula as the estimate's capture stage (which assumes every layer checkpointed)."""
    batch = BatchShape(9216, 8192)
    got = batch_bytes(SHAPES, "bfloat16", batch, SHAPES.num_layers)
    assert got == {"capture_batch": capture_batch_bytes(SHAPES, 9216, 8192, "bfloat16"), "prompt_kv": 0}


def test_fewer_checkpointed_layers_need_more_memory_and_the_choice_is_the_fewest_that_fit() -> None:
    batch = BatchShape(4096, 3584, group_prefix_tokens=4 * 512, row_prefix_tokens=32 * 512)
    needs = [sum(batch_bytes(SHAPES, "bfloat16", batch, c).values()) for c in range(SHAPES.num_layers + 1)]
    assert all(a > b for a, b in itertools.pairwise(needs[:-1]))
    assert checkpoint_count(SHAPES, "bfloat16", batch, needs[0]) == 0
    assert checkpoint_count(SHAPES, "bfloat16", batch, needs[10]) == 10
    assert checkpoint_count(SHAPES, "bfloat16", batch, needs[10] - 1) == 11
    assert checkpoint_count(SHAPES, "bfloat16", batch, None) == 0


def test_the_seed_configuration_checkpoints_nothing_on_an_h100_and_some_layers_on_a_small_card() -> None:
    spec = seed_spec()
    est = estimate(spec)
    h100 = pool_capture(est, SHAPES, "bfloat16", "h100", 80 * 10**9, 0.1, 4096)
    assert h100.checkpointed == 0 and h100.batch_bytes <= h100.room
    small = pool_capture(est, SHAPES, "bfloat16", "small", 24 * 10**9, 0.1, 4096)
    assert 0 < small.checkpointed < SHAPES.num_layers and small.batch_bytes <= small.room
    batch = estimated_batch(est, 4096)
    assert batch.group_prefix_tokens > 0 and batch.row_prefix_tokens >= batch.group_prefix_tokens


def test_estimate_shows_the_choice(tmp_path) -> None:
    manifest = "examples/qwen15b-f32-all-selected.yaml"
    [(_, code, text)] = estimate_command.run(manifest, None, False)
    assert code == 0 and "capture on h100: 0 of 28 decoder layers checkpointed" in text
    [(_, code, text)] = estimate_command.run(manifest, None, True)
    assert json.loads(text)["capture"]["checkpointedLayers"] == 0


def test_the_prompt_store_is_kept_where_it_fits_and_counted_once_per_group() -> None:
    """5,733 responses of 128 tokens in groups of 16 with 1,024-token prompts on 8 GPUs: one process
    keeps its 45 groups' prompts (1,023 tokens each, 28 layers x 2 x 256 x 2 bytes per token)."""
    responses = 5733
    work = Workload(response_tokens=responses * 128, responses=responses, scope_tokens=16 * 128,
                    scope_responses=16, max_sequence_tokens=1024 + 128, prompt_tokens=responses * 1024,
                    source="test")
    est = estimate(seed_spec(), workload=work)
    tokens = estimated_store_tokens(est)
    assert tokens == pytest.approx(responses / 8 / 16 * 1024, rel=0.01)
    h100 = pool_capture(est, SHAPES, "bfloat16", "h100", 80 * 10**9, 0.1, 4096)
    assert h100.store_bytes == tokens * 28 * 2 * 256 * 2 and h100.checkpointed == 0
    tiny = pool_capture(est, SHAPES, "bfloat16", "tiny", 8 * 10**9, 0.1, 4096)
    assert tiny.store_bytes == 0  # not beside the batch: each batch computes its own prompts
