"""Every group's prompt keys and values, computed once for the whole capture when the device has room.

Batches are sorted by response length (trace/batching.py), so a group whose responses differ in
length lands in several batches; without a store its prompt runs once per such batch. With one, each
distinct prompt runs exactly once, in length-sorted sub-batches before the first capture batch, and is
kept, trimmed to its own length, until the capture ends: ``prompt_store`` bytes, the prompt tokens of
every group times every layer's key and value width (``planning.capture_plan.kv_bytes_per_token``).
Each batch gathers its groups' keys and values into the padded groups x Wp cache the gradient pass
reads (trace/shared_prompts.py). Where the store does not fit beside the largest batch, the capture
computes each batch's prompts itself instead: the same numbers, more prompt work.
"""

from __future__ import annotations

import torch
from torch import nn

from influence_trace.trace.batching import prefix_batches
from influence_trace.trace.shared_prompts import BatchInputs, PrefixCache, PrefixLayer, forward_prefix, place


def distinct_prompts(responses) -> dict[str, tuple[int, ...]]:
    """Each group's prompt prefix (all but the last prompt token), by prompt id, in first-seen order."""
    out: dict[str, tuple[int, ...]] = {}
    for r in responses:
        out.setdefault(r.prompt_id, tuple(r.prompt_ids[:-1]))
    return out


class PromptStore:
    """Per prompt id, every layer's keys and values (1 x heads x its length x d)."""

    def __init__(self) -> None:
        self.kv: dict[str, list[tuple[torch.Tensor, torch.Tensor]]] = {}

    @property
    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for layers in self.kv.values() for kv in layers for t in kv)

    def fill(self, model: nn.Module, prompts: dict[str, tuple[int, ...]], device: torch.device,
             capture_tokens: int) -> None:
        """Run every non-empty prompt once, forward only, in sub-batches of similar length."""
        names = [name for name, ids in prompts.items() if ids]
        lengths = [len(prompts[name]) for name in names]
        for sub in prefix_batches(lengths, capture_tokens):
            width = max(lengths[j] for j in sub)
            ids = torch.zeros((len(sub), width), dtype=torch.long)
            for row, j in enumerate(sub):
                ids[row, : lengths[j]] = torch.tensor(prompts[names[j]], dtype=torch.long)
            part = forward_prefix(model, ids.to(device))
            for row, j in enumerate(sub):  # cloned: the padded sub-batch is not kept
                self.kv[names[j]] = [(k[row : row + 1, :, : lengths[j]].clone(),
                                      v[row : row + 1, :, : lengths[j]].clone()) for k, v in part]

    def cache(self, inputs: BatchInputs) -> PrefixCache:
        """The batch's groups x Wp cache, gathered from the store (zeros past each prompt's end)."""
        keys: list[torch.Tensor] = []
        values: list[torch.Tensor] = []
        assert inputs.prefix_ids is not None  # a batch that shares prompts has their ids
        shape = (len(inputs.prefix_names), inputs.prefix_ids.shape[1])
        for g, (name, length) in enumerate(zip(inputs.prefix_names, inputs.prefix_lengths, strict=True)):
            if length:
                rows = torch.tensor([g], device=inputs.prefix_ids.device)
                place(keys, values, self.kv[name], rows, length, shape)
        return PrefixCache([PrefixLayer(k, v, inputs.rows) for k, v in zip(keys, values, strict=True)])
