"""Capture whose memory grows neither with the vocabulary nor with every layer's activations.

Two things made one capture batch large: the response positions' ``tokens x vocab`` logits (float32,
with their log-softmax and gradient), and every layer's activations kept for backward. Here:

- log-probabilities are computed in chunks of response tokens (``lm_head``, log-softmax, gather), each
  chunk checkpointed: its forward keeps only its hidden rows, and backward recomputes its logits, so at
  most one chunk's logits exist (``planning.memory_model.logit_chunk_tokens``);
- decoder layers are checkpointed (the weights are frozen, so backward needs only activations): forward
  keeps each such layer's input, backward recomputes one layer at a time. How many is the memory
  model's choice (``planning.capture_plan.checkpoint_count``): none when the batch fits without.

Both are non-reentrant ``torch.utils.checkpoint`` regions, so the autograd graph keeps its shape and the
capture's tensor hooks registered during the forward fire once, in backward, as before. The recomputed
forward runs the traced modules' forward hooks a second time; ``Recompute`` marks that phase so the
hooks store ``v`` (and register the ``u`` hook) only in the first forward: each factor exactly once.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from functools import partial

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint


class Recompute:
    """Whether the forward hooks are running inside backward's recomputation (not the first forward)."""

    def __init__(self) -> None:
        self.active = False

    @contextmanager
    def backward(self) -> Iterator[None]:
        """Around ``objective.backward()``: every forward hook that fires in here is a recomputation."""
        self.active = True
        try:
            yield
        finally:
            self.active = False


def decoder_layers(model: nn.Module) -> list[nn.Module]:
    """The decoder layers of a Hugging Face causal LM (``model.base_model.layers``); [] if it has none."""
    layers = getattr(model.base_model, "layers", None)
    return list(layers) if isinstance(layers, nn.ModuleList) else []


def _checkpointed(forward, *args, **kwargs):
    return checkpoint(forward, *args, use_reentrant=False, **kwargs)


@contextmanager
def checkpointed_layers(model: nn.Module, count: int | None = None) -> Iterator[int]:
    """Checkpoint the first ``count`` decoder layers' forward for the block (None: every one; yields
    how many); restored afterwards. The rest keep their activations for backward."""
    layers = decoder_layers(model)
    layers = layers if count is None else layers[: max(count, 0)]
    saved = [layer.__dict__.get("forward") for layer in layers]
    for layer in layers:
        layer.forward = partial(_checkpointed, layer.forward)
    try:
        yield len(layers)
    finally:
        for layer, own in zip(layers, saved, strict=True):
            if own is None:
                del layer.forward
            else:
                layer.forward = own


def _chunk_log_probs(lm_head: nn.Module, hidden: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    logits = lm_head(hidden)
    logits = logits.to(torch.promote_types(logits.dtype, torch.float32))
    return torch.log_softmax(logits, dim=-1).gather(1, targets[:, None])[:, 0]


def response_log_probs(lm_head: nn.Module, hidden: torch.Tensor, targets: torch.Tensor,
                       chunk_tokens: int) -> torch.Tensor:
    """log p(target | position) for each row of hidden (n x h), one checkpointed chunk of rows at a time."""
    chunks = [(hidden[a : a + chunk_tokens], targets[a : a + chunk_tokens])
              for a in range(0, hidden.shape[0], chunk_tokens)]
    if not hidden.requires_grad:  # nothing to recompute for: plain chunks
        return torch.cat([_chunk_log_probs(lm_head, h, t) for h, t in chunks])
    return torch.cat([checkpoint(_chunk_log_probs, lm_head, h, t, use_reentrant=False) for h, t in chunks])
