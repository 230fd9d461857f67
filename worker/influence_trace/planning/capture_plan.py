"""One capture batch's device bytes, with shared prompts and only as many checkpointed layers as needed.

Checkpointing a decoder layer saves its activations but costs a second forward of it in backward:
about 6 forward-equivalents of flops per token instead of 4 when every layer is checkpointed. So the
worker checkpoints the fewest layers that let its largest batch fit the room it has
(``checkpoint_count``): none when the batch fits, every one when even that is needed.

With shared prompts (trace/shared_prompts.py) a batch also holds its groups' prompt keys and values
(every layer, ``group_prefix_tokens`` positions), and each layer's attention reads them gathered per
response (``row_prefix_tokens`` positions; after the grouped heads are repeated, as wide as the
queries): one layer's copy at a time, and one more per layer that is not checkpointed (attention saves
its keys and values for backward). Torch-free, like the rest of the memory model.
"""

from __future__ import annotations

from dataclasses import dataclass

from influence_trace.api.architectures import Shapes
from influence_trace.planning.memory_model import (
    DTYPE_BYTES,
    Estimate,
    layer_activation_bytes_per_token,
    logit_bytes_per_token,
    logit_chunk_tokens,
)


@dataclass(frozen=True)
class BatchShape:
    """What one capture batch computes: padded tokens with gradients and its prompts' positions."""

    padded_tokens: int  # B x W of the gradient pass
    response_tokens: int  # captured positions
    group_prefix_tokens: int = 0  # groups x Wp: prompt positions run once, kept as keys and values
    row_prefix_tokens: int = 0  # B x Wp: those positions as every response's attention reads them


def activation_bytes_per_token(shapes: Shapes, model_dtype: str, checkpointed: int) -> int:
    """Per padded token with the first ``checkpointed`` layers checkpointed, at the larger of two moments:
    backward starting (a checkpointed layer keeps its input h, another its saved activations, plus one
    layer's gradients) and backward reaching the checkpointed layers (the others' activations freed, one
    layer recomputed with its gradients). Always the embedding leaf, final hidden states and their
    gradients (4h). Checkpointing the last layer too saves nothing (it is recomputed at once)."""
    h, item = shapes.hidden_size, DTYPE_BYTES[model_dtype]
    layer = layer_activation_bytes_per_token(shapes, model_dtype)
    plain = shapes.num_layers - checkpointed
    start = (plain + 1) * layer if plain else 0
    recomputing = 2 * layer if checkpointed else 0
    return (4 + checkpointed) * h * item + max(start, recomputing)


def kv_bytes_per_token(shapes: Shapes, model_dtype: str) -> int:
    """Keys and values of one position over every layer, as the cache holds them."""
    return 2 * shapes.num_layers * shapes.num_key_value_heads * shapes.head_dim * DTYPE_BYTES[model_dtype]


def prompt_store_bytes(shapes: Shapes, model_dtype: str, prompt_tokens: int) -> int:
    """"prompt_store": every distinct prompt's keys and values, kept through the capture
    (trace/prompt_store.py); ``prompt_tokens`` counts each group's prompt once, less its last token."""
    return prompt_tokens * kv_bytes_per_token(shapes, model_dtype)


def prompt_kv_bytes(shapes: Shapes, model_dtype: str, batch: BatchShape, checkpointed: int) -> int:
    """"prompt_kv": the groups' cache and the per-response copies attention makes of it."""
    item = DTYPE_BYTES[model_dtype]
    width = 2 * max(shapes.num_attention_heads, shapes.num_key_value_heads) * shapes.head_dim * item
    copies = 1 + (shapes.num_layers - checkpointed)
    return (batch.group_prefix_tokens * kv_bytes_per_token(shapes, model_dtype)
            + batch.row_prefix_tokens * width * copies)


def batch_bytes(shapes: Shapes, model_dtype: str, batch: BatchShape, checkpointed: int) -> dict[str, int]:
    """"capture_batch" (activations, gathered rows, one logit chunk) and "prompt_kv" of one batch."""
    logit_rows = min(batch.response_tokens, logit_chunk_tokens(shapes.vocab_size))
    item = DTYPE_BYTES[model_dtype]
    capture = (batch.padded_tokens * activation_bytes_per_token(shapes, model_dtype, checkpointed)
               + batch.response_tokens * shapes.hidden_size * item * 2  # gathered rows, their gradients
               + logit_rows * logit_bytes_per_token(shapes, model_dtype))
    return {"capture_batch": capture, "prompt_kv": prompt_kv_bytes(shapes, model_dtype, batch, checkpointed)}


def checkpoint_count(shapes: Shapes, model_dtype: str, batch: BatchShape, room: int | None) -> int:
    """The fewest decoder layers to checkpoint so the batch needs at most ``room`` bytes (None: no
    limit, none checkpointed); when nothing fits, the count that needs least (the budget check fails)."""
    if room is None:
        return 0
    needs = [sum(batch_bytes(shapes, model_dtype, batch, c).values()) for c in range(shapes.num_layers + 1)]
    fitting = [c for c, need in enumerate(needs) if need <= room]
    return fitting[0] if fitting else needs.index(min(needs))


@dataclass(frozen=True)
class PoolCapture:
    """What the worker's capture will do on one pool: the prompt store, checkpointed layers, bytes."""

    pool: str
    checkpointed: int
    layers: int
    batch_bytes: int  # capture_batch + prompt_kv at that count
    room: int  # the pool's GPU memory (less headroom) left beside weights, projections and context
    store_bytes: int = 0  # every prompt's keys and values kept through the capture (0: not kept)


def estimated_batch(est: Estimate, capture_tokens: int) -> BatchShape:
    """The estimate's largest batch with shared prompts: ``capture_tokens`` padded tokens (or one longest
    sequence) of responses, whose groups' prompts (the mean prompt length) are held as keys and values."""
    w = est.workload
    longest = w.max_sequence_tokens
    padded = min(max(capture_tokens, longest), w.responses * longest)
    mean_response = max(1, w.response_tokens // max(w.responses, 1))
    mean_prompt = w.prompt_tokens // max(w.responses, 1)
    rows = max(1, padded // mean_response)
    groups = max(1, -(-rows // max(w.scope_responses, 1)))
    return BatchShape(padded, min(padded, w.response_tokens), groups * mean_prompt, rows * mean_prompt)


def estimated_store_tokens(est: Estimate) -> int:
    """One process's distinct prompts' tokens: its share of the rows' prompt tokens, once per group (a
    group of one where the group size is unknown, i.e. the largest group is every response)."""
    w = est.workload
    share = est.tokens_per_gpu / max(w.response_tokens, 1)
    group = w.scope_responses if w.scope_responses < w.responses else 1
    return int(w.prompt_tokens * share / max(group, 1))


def pool_capture(est: Estimate, shapes: Shapes, model_dtype: str, pool: str, gpu_memory_bytes: int,
                 headroom: float, capture_tokens: int) -> PoolCapture:
    """What the worker would do on a pool of ``gpu_memory_bytes`` per GPU (trace/capture_planning.py
    ``plan_capture``): keep every prompt if that fits beside the largest batch at its least, then
    checkpoint the fewest layers for the room left."""
    held = sum(est.gpu_breakdown.get(k, 0) for k in ("weights", "projections", "cuda_context"))
    room = int(gpu_memory_bytes / (1 + headroom)) - held
    batch = estimated_batch(est, capture_tokens)
    store = prompt_store_bytes(shapes, model_dtype, estimated_store_tokens(est))
    least = min(sum(batch_bytes(shapes, model_dtype, batch, c).values())
                for c in range(shapes.num_layers + 1))
    store = store if store + least <= room else 0
    count = checkpoint_count(shapes, model_dtype, batch, room - store)
    need = sum(batch_bytes(shapes, model_dtype, batch, count).values())
    return PoolCapture(pool, count, shapes.num_layers, need, room, store)
