"""How a capture runs, decided before its first batch: batches, shared prompts, the prompt store and
how many decoder layers are checkpointed, from the memory model (planning/capture_plan.py) and the
room the device has.

The room: the budget's rest when ``INFLUENCE_TRACE_GPU_BUDGET_BYTES`` is set; on CUDA the card less
the placement's headroom less what is allocated (so a measured peak that a learned placement records
still fits the pool with its headroom); on the CPU half the available memory. The prompt store is kept
when it fits beside the largest batch at the least that batch can take; then the fewest checkpointed
layers that fit what is left.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
from torch import nn

from influence_trace.api.architectures import shapes_and_dtype
from influence_trace.planning.capture_plan import (
    BatchShape,
    batch_bytes,
    checkpoint_count,
    prompt_store_bytes,
)
from influence_trace.planning.options import WorkerOptions
from influence_trace.planning.placement import DEFAULT_HEADROOM
from influence_trace.trace import batching, shared_prompts
from influence_trace.trace.batching import Item
from influence_trace.trace.lean_capture import decoder_layers
from influence_trace.trace.ledger import MemoryLedger
from influence_trace.trace.prompt_store import distinct_prompts


def plan_batches(lengths: list[int], capture_tokens: int) -> list[list[int]]:
    """Whole sequences (prompts not shared) in batches of at most ``capture_tokens`` padded tokens and
    at most 10% padding (trace/batching.py); the policy update's micro-batches use it too."""
    return batching.plan_batches([Item(n) for n in lengths], capture_tokens)


def sharing(model: nn.Module, options: WorkerOptions) -> bool:
    """Whether this capture runs each prompt once per batch (options.share_prompts, if the model can)."""
    return options.share_prompts and shared_prompts.supported(model)


def plan_items(responses, share: bool) -> list[Item]:
    """The planner's view of each response: shared prompts, or whole sequences."""
    if share:
        return shared_prompts.items_of(responses)
    return [Item(len(r.prompt_ids) + r.num_tokens) for r in responses]


def capture_room(ledger: MemoryLedger, device: torch.device) -> int | None:
    """Bytes a capture may take beside what the ledger holds (the module docstring says which); with
    several processes the exchange asks it too, whether a round fits beside a module's Hessian work."""
    if ledger.budget_bytes is not None:
        return ledger.budget_bytes - ledger.total
    if device.type == "cuda":  # within the placement's headroom, so a measured peak still fits the pool
        free, total = torch.cuda.mem_get_info(device)
        return int(total / (1 + DEFAULT_HEADROOM)) - (total - free)
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") // 2
    except (ValueError, OSError):
        return None


def batch_shape(shape: batching.Shape, response_tokens: int) -> BatchShape:
    """The memory model's view of a planned batch."""
    return BatchShape(shape.rows * shape.width, response_tokens, shape.groups * shape.prefix,
                      shape.rows * shape.prefix)


def planned_shapes(items: list[Item], batches: list[list[int]], responses,
                   capture_tokens: int) -> list[BatchShape]:
    """The memory model's view of every planned batch."""
    return [batch_shape(batching.shape_of(items, idx, capture_tokens),
                        sum(responses[i].num_tokens for i in idx)) for idx in batches]


def plan_checkpointing(model: nn.Module, shapes: list[BatchShape], room: int | None) -> int:
    """How many decoder layers to checkpoint: the fewest that let the largest batch fit ``room``."""
    model_shapes, dtype = shapes_and_dtype(model)
    return max((checkpoint_count(model_shapes, dtype, shape, room) for shape in shapes), default=0)


def batch_need(model: nn.Module, shape: BatchShape, checkpointed: int) -> int:
    """Bytes of one batch ("capture_batch" and "prompt_kv") with ``checkpointed`` layers."""
    return sum(estimate_batch_bytes(model, shape, checkpointed).values())


def estimate_batch_bytes(model: nn.Module, shape: BatchShape, checkpointed: int) -> dict[str, int]:
    """The memory model's prediction for one capture batch ("capture_batch", "prompt_kv").

    Used for the budget check before a batch; on CUDA the measured peak replaces it.
    """
    shapes, dtype = shapes_and_dtype(model)
    return batch_bytes(shapes, dtype, shape, checkpointed)


@dataclass
class CapturePlan:
    """How the capture runs: batches, whether prompts are shared (and kept for the whole capture), how
    many layers are checkpointed."""

    batches: list[list[int]]
    share: bool
    checkpointed: int
    capture_tokens: int
    store_bytes: int = 0  # > 0: every prompt computed once, before the batches (trace/prompt_store.py)


def plan_capture(model: nn.Module, responses, options: WorkerOptions, ledger: MemoryLedger) -> CapturePlan:
    """Batches, then the prompt store if it fits beside the largest batch (with the fewest bytes a batch
    can take), then the fewest checkpointed layers for the room left."""
    share = sharing(model, options)
    items = plan_items(responses, share)
    batches = batching.plan_batches(items, options.capture_tokens)
    shapes = planned_shapes(items, batches, responses, options.capture_tokens)
    room = capture_room(ledger, torch.device(options.device))
    store = store_bytes(model, responses) if share else 0
    if store and room is not None:
        least = plan_checkpointing(model, shapes, 0)
        if store + max(batch_need(model, shape, least) for shape in shapes) > room:
            store = 0  # each batch computes its own prompts instead
        else:
            room -= store
    checkpointed = plan_checkpointing(model, shapes, room)
    if options.checkpoint_layers is not None:  # forced (calibration against the estimate's assumption)
        checkpointed = min(options.checkpoint_layers, len(decoder_layers(model)))
    return CapturePlan(batches, share, checkpointed, options.capture_tokens, store)


def store_bytes(model: nn.Module, responses) -> int:
    """The prompt store's bytes: every distinct prompt's keys and values."""
    shapes, dtype = shapes_and_dtype(model)
    return prompt_store_bytes(shapes, dtype, sum(len(p) for p in distinct_prompts(responses).values()))
