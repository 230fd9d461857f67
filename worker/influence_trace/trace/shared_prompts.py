"""Each prompt computed once, apart: its keys and values serve every response of its group.

Once for the whole capture when every prompt's keys and values fit (trace/prompt_store.py), else once
per capture batch holding its group (``prefix_cache``).

Why it is exact: response token t of a response with prompt length P is predicted at position
``P + t - 1``, so the captured positions are ``P - 1 .. P + n - 2``: the last prompt token and the
response without its last token. Attention is causal, so nothing at positions ``0 .. P - 2`` depends on
a captured position, and (weights frozen) no gradient there is ever read. Those positions therefore run
once per group, forward only and without gradients (``prefix_cache``), and their keys and values are
constants of the gradient pass, which runs only the ``n`` captured positions of each response with
position ids ``P - 1 + t`` and attends to its group's prompt keys and values through ``PrefixCache``.

``PrefixCache`` never stores anything: ``update`` returns the prompt's keys and values (gathered for the
batch's rows) concatenated with the layer's new ones, so a checkpointed layer recomputed in backward
sees exactly what its first forward saw and the cache cannot grow. The prompt is right-padded per
batch: under causal attention a real prompt position never sees a padded one, and the gradient pass's
attention mask hides the padded positions from the responses.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np
import torch
from torch import nn
from transformers.cache_utils import Cache, DynamicLayer

from influence_trace.planning.capture_plan import BatchShape
from influence_trace.trace.batching import Item, prefix_batches


def supported(model: nn.Module) -> bool:
    """Shared prompts need a decoder of full causal attention layers (no sliding window: its mask is
    cut by cache positions, which here are not the sequence positions)."""
    config = getattr(model, "config", None)
    if config is None or getattr(config, "use_sliding_window", False):
        return False
    types = getattr(config, "layer_types", None) or ["full_attention"]
    return all(t == "full_attention" for t in types)


def items_of(responses) -> list[Item]:
    """Planner items: the captured width n, the group (by prompt id) and its prompt prefix P - 1."""
    groups: dict[str, int] = {}
    return [Item(r.num_tokens, groups.setdefault(r.prompt_id, len(groups)), len(r.prompt_ids) - 1)
            for r in responses]


class PrefixLayer(DynamicLayer):
    """One layer's prompt keys and values (groups x heads x Wp x d), gathered per row, never grown."""

    def __init__(self, keys: torch.Tensor, values: torch.Tensor, rows: torch.Tensor) -> None:
        super().__init__()
        self.keys, self.values, self.rows = keys, values, rows
        self.dtype, self.device = keys.dtype, keys.device
        self.is_initialized = True

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs):
        keys = torch.cat([self.keys.index_select(0, self.rows), key_states], dim=-2)
        values = torch.cat([self.values.index_select(0, self.rows), value_states], dim=-2)
        return keys, values

    def get_seq_length(self) -> int:
        return self.keys.shape[-2]


class PrefixCache(Cache):
    """The read-only cache of one capture batch: every layer's prompt keys and values."""

    def __init__(self, layers: list[PrefixLayer]) -> None:
        super().__init__(layers=layers)


@dataclass
class BatchInputs:
    """The tensors of one capture batch (``shared_inputs``, or ``full_inputs`` with prompts not shared)."""

    prefix_ids: torch.Tensor | None  # groups x Wp, right-padded (None: no prompt computed apart)
    rows: torch.Tensor  # B: the prefix row (group) of each response
    ids: torch.Tensor  # B x Wr: last prompt token + response[:-1] (or prompt + response), right-padded
    positions: torch.Tensor  # B x Wr: each column's position in its sequence
    mask: torch.Tensor  # B x (Wp + Wr): real prompt positions, then real captured positions
    rows_b: torch.Tensor  # captured token's row (device)
    rows_p: torch.Tensor  # captured token's column in ids (device)
    targets: torch.Tensor  # the response tokens
    dest: torch.Tensor  # destination rows in the host factors (CPU)
    prefix_lengths: tuple[int, ...] = ()  # each group's prompt prefix (P - 1)
    prefix_names: tuple[str, ...] = ()  # each group's prompt id

    def shape(self) -> BatchShape:
        """What the memory model needs of this batch."""
        wp = 0 if self.prefix_ids is None else self.prefix_ids.shape[1]
        groups = 0 if self.prefix_ids is None else self.prefix_ids.shape[0]
        return BatchShape(self.ids.numel(), len(self.targets), groups * wp, self.ids.shape[0] * wp)


def shared_inputs(responses, idx: list[int], offsets: np.ndarray, device: torch.device,
                  pin: bool = False) -> BatchInputs:
    """Build one batch's tensors on the host in numpy (no per-response torch operation), pinned when
    ``pin``, then copy them without blocking."""
    groups: dict[str, int] = {}
    prompts: list[tuple[int, ...]] = []
    for i in idx:
        if responses[i].prompt_id not in groups:
            groups[responses[i].prompt_id] = len(groups)
            prompts.append(tuple(responses[i].prompt_ids[:-1]))
    wp = max(len(p) for p in prompts)
    wr = max(responses[i].num_tokens for i in idx)
    prefix: np.ndarray = np.zeros((len(prompts), wp), dtype=np.int64)
    for g, p in enumerate(prompts):
        prefix[g, : len(p)] = p
    ids: np.ndarray = np.zeros((len(idx), wr), dtype=np.int64)
    mask: np.ndarray = np.zeros((len(idx), wp + wr), dtype=np.int64)
    starts = np.array([len(responses[i].prompt_ids) - 1 for i in idx], dtype=np.int64)
    counts = np.array([responses[i].num_tokens for i in idx], dtype=np.int64)
    for b, i in enumerate(idx):
        r = responses[i]
        ids[b, : r.num_tokens] = (r.prompt_ids[-1], *r.response_ids[:-1])
        mask[b, : starts[b]] = 1
        mask[b, wp : wp + r.num_tokens] = 1
    rows: np.ndarray = np.array([groups[responses[i].prompt_id] for i in idx], dtype=np.int64)
    positions = starts[:, None] + np.arange(wr)[None, :]
    rows_p = np.concatenate([np.arange(n) for n in counts])
    inputs = _moved([prefix if wp > 0 else None, rows, ids, positions, mask], idx, counts, rows_p,
                    responses, offsets, device, pin)
    inputs.prefix_lengths = tuple(len(p) for p in prompts)
    inputs.prefix_names = tuple(groups)
    return inputs


def full_inputs(responses, idx: list[int], offsets: np.ndarray, device: torch.device,
                pin: bool = False) -> BatchInputs:
    """Prompts not shared: each row is its prompt and response, right-padded, run with gradients."""
    seqs = [responses[i].prompt_ids + responses[i].response_ids for i in idx]
    width = max(len(s) for s in seqs)
    ids: np.ndarray = np.zeros((len(idx), width), dtype=np.int64)
    mask: np.ndarray = np.zeros((len(idx), width), dtype=np.int64)
    for b, seq in enumerate(seqs):
        ids[b, : len(seq)] = seq
        mask[b, : len(seq)] = 1
    counts = np.array([responses[i].num_tokens for i in idx], dtype=np.int64)
    rows_p = np.concatenate([np.arange(n) + len(responses[i].prompt_ids) - 1
                             for i, n in zip(idx, counts, strict=True)])
    positions = np.tile(np.arange(width, dtype=np.int64), (len(idx), 1))
    rows: np.ndarray = np.zeros(len(idx), dtype=np.int64)
    return _moved([None, rows, ids, positions, mask], idx, counts, rows_p, responses, offsets, device, pin)


def _moved(arrays: list, idx: list[int], counts: np.ndarray, rows_p: np.ndarray, responses,
           offsets: np.ndarray, device: torch.device, pin: bool) -> BatchInputs:
    """The batch's arrays as device tensors, with the captured rows, targets and destination rows."""
    rows_b: np.ndarray = np.repeat(np.arange(len(idx)), counts)
    targets = np.concatenate([np.asarray(responses[i].response_ids, dtype=np.int64) for i in idx])
    dest = np.concatenate([np.arange(offsets[i], offsets[i] + n) for i, n in zip(idx, counts, strict=True)])
    def put(a: np.ndarray) -> torch.Tensor:
        return to_device(torch.from_numpy(np.ascontiguousarray(a, dtype=np.int64)), device, pin)

    prefix, rows, ids, positions, mask = arrays
    dest_t = torch.from_numpy(dest.astype(np.int64))
    return BatchInputs(None if prefix is None else put(prefix), put(rows), put(ids), put(positions),
                       put(mask), put(rows_b), put(rows_p), put(targets), dest_t)


def to_device(host: torch.Tensor, device: torch.device, pin: bool) -> torch.Tensor:
    """A copy on ``device`` that does not block the host: staged through pinned memory on CUDA.

    The pinned tensor is released by the caching host allocator only once the copy has completed (it
    records the copy's stream), so dropping it here is safe.
    """
    if device.type != "cuda":
        return host.to(device)
    staged = host.pin_memory() if pin else host
    return staged.to(device, non_blocking=pin)


def prefix_cache(model: nn.Module, inputs: BatchInputs, capture_tokens: int,
                 store: PromptSource | None = None) -> PrefixCache | None:
    """The batch's prompt keys and values: from ``store`` (computed once for the whole capture), else
    each distinct prompt of the batch run once here, forward only.

    Prompts run in sub-batches of similar length (trace/batching.py ``prefix_batches``); their keys and
    values land in one groups x Wp cache whose padded positions are zeros, masked in the gradient pass.
    """
    if inputs.prefix_ids is None:
        return None
    if store is not None:
        return store.cache(inputs)
    lengths = inputs.prefix_lengths
    keys: list[torch.Tensor] = []
    values: list[torch.Tensor] = []
    for sub in prefix_batches(list(lengths), capture_tokens):
        width = max(lengths[g] for g in sub)
        if width == 0:
            continue
        rows = torch.tensor(sub, device=inputs.prefix_ids.device)
        part = forward_prefix(model, inputs.prefix_ids.index_select(0, rows)[:, :width])
        place(keys, values, part, rows, width, (len(lengths), inputs.prefix_ids.shape[1]))
    return PrefixCache([PrefixLayer(k, v, inputs.rows) for k, v in zip(keys, values, strict=True)])


def place(keys: list[torch.Tensor], values: list[torch.Tensor], part: list[tuple[torch.Tensor, torch.Tensor]],
          rows: torch.Tensor, width: int, shape: tuple[int, int]) -> None:
    """Write ``part``'s keys and values (len(rows) x heads x width x d per layer) into the rows of the
    groups x heads x Wp x d caches ``keys``/``values`` (made, zeroed, on the first part)."""
    for layer, (k, v) in enumerate(part):
        if layer == len(keys):
            full = (shape[0], k.shape[1], shape[1], k.shape[3])
            keys.append(k.new_zeros(full))
            values.append(v.new_zeros(full))
        keys[layer][rows, :, :width] = k
        values[layer][rows, :, :width] = v


class PromptSource(Protocol):
    """Where a batch's prompt keys and values come from when they were computed before the batch."""

    def cache(self, inputs: BatchInputs) -> PrefixCache: ...


def forward_prefix(model: nn.Module, ids: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Every layer's keys and values of right-padded prompt rows (causal: no mask needed)."""
    from transformers.cache_utils import DynamicCache

    with torch.no_grad():
        cache = DynamicCache(config=model.config)
        model.base_model(input_ids=ids, past_key_values=cache, use_cache=True)
    return [(layer.keys, layer.values) for layer in cache.layers]


def kv_bytes(cache: PrefixCache | None) -> int:
    """The bytes of prompt keys and values one batch holds (group rows, every layer)."""
    if cache is None:
        return 0
    return sum(t.numel() * t.element_size() for layer in cache.layers for t in (layer.keys, layer.values))


def shared_forward(model: nn.Module, inputs: BatchInputs, cache: PrefixCache | None) -> torch.Tensor:
    """The gradient pass: the captured positions only, attending to their prompts' keys and values."""
    out = model.base_model(input_ids=inputs.ids, attention_mask=inputs.mask, position_ids=inputs.positions,
                           past_key_values=cache, use_cache=cache is not None)
    return out[0]
