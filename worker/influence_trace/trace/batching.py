"""Which responses share a capture batch: few padded tokens, and a group's responses kept together.

Padding is the waste to bound: a batch is right-padded to its longest member, so every batch here has
at most ``MAX_PADDING`` (10%) padded tokens per real token. It is done by sorting, not by packing
several sequences into one row: packing needs variable-length attention (flash-attention's varlen
kernels on CUDA only, or a dense block mask that grows with the square of the packed row), while
sorting keeps the model's own batched attention on every device and costs nothing but the order.

With shared prompts (trace/shared_prompts.py) an item has two parts: the part computed with
gradients (the last prompt token and the response) and its group's prompt prefix, computed once per
batch without gradients. The prefixes run in their own sub-batches, sorted and cut the same way
(``prefix_batches``), so prompts of different lengths in one batch pad neither each other nor the
responses; only the attention over the gathered prompt keys sees the batch's longest prompt (masked).
Items are ordered by length band (lengths within a factor ``1 + MAX_PADDING``), then group, so a
group's responses of similar length share a batch and its prompt runs once for them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

MAX_PADDING = 0.10  # padded tokens per real token of a batch, at most


@dataclass(frozen=True)
class Item:
    """One response as the planner sees it."""

    width: int  # tokens computed with gradients (prompt + response without sharing)
    group: int = 0  # its prompt's group (shared prompts), else 0
    prefix: int = 0  # its group's prompt tokens computed without gradients (0 without sharing)


@dataclass
class _Open:
    """The batch being filled: its members, real tokens, width and its groups' prefixes."""

    members: list[int] = field(default_factory=list)
    real: int = 0
    width: int = 0
    prefixes: dict[int, int] = field(default_factory=dict)  # group -> prefix tokens

    def cost_with(self, item: Item) -> tuple[int, int, int]:
        """(padded tokens of the gradient pass, its real tokens, prefix tokens held) if ``item`` joined."""
        width = max(self.width, item.width)
        prefix = sum(self.prefixes.values()) + (0 if item.group in self.prefixes else item.prefix)
        return (len(self.members) + 1) * width, self.real + item.width, prefix

    def add(self, index: int, item: Item) -> None:
        self.real += item.width
        self.prefixes[item.group] = item.prefix
        self.width = max(self.width, item.width)
        self.members.append(index)


def _band(width: int) -> int:
    return int(math.log(max(width, 1)) / math.log1p(MAX_PADDING))


def order(items: list[Item]) -> list[int]:
    """Length band, then group (a group's responses together), then length."""
    return sorted(range(len(items)), key=lambda i: (_band(items[i].width), items[i].group, items[i].width))


def plan_batches(items: list[Item], capture_tokens: int, max_padding: float = MAX_PADDING) -> list[list[int]]:
    """Item indices in batches of at most ``capture_tokens`` tokens (padded, with their prompts'; a
    longer item alone) whose gradient pass pads at most ``max_padding`` of its real tokens."""
    batches: list[list[int]] = []
    current = _Open()
    for i in order(items):
        if current.members:
            padded, real, prefix = current.cost_with(items[i])
            if padded + prefix > capture_tokens or padded - real > max_padding * real:
                batches.append(current.members)
                current = _Open()
        current.add(i, items[i])
    if current.members:
        batches.append(current.members)
    return batches


def prefix_batches(prefixes: list[int], capture_tokens: int) -> list[list[int]]:
    """The prompt prefixes of one batch's groups in sub-batches of the same padding bound."""
    return plan_batches([Item(p) for p in prefixes], capture_tokens)


@dataclass(frozen=True)
class Shape:
    """One planned batch: rows x width with gradients; its groups' prompt prefixes run apart."""

    rows: int
    width: int
    groups: int
    prefix: int  # the longest prefix: the gathered keys' width
    real: int  # real tokens: every row's width, and each group's prefix once
    padded: int  # tokens computed: the gradient pass's rows x width and the prefix sub-batches'


def shape_of(items: list[Item], batch: list[int], capture_tokens: int) -> Shape:
    """The shape the capture runs ``batch`` in (trace/shared_prompts.py builds exactly this)."""
    prefixes = list({items[i].group: items[i].prefix for i in batch}.values())
    width = max(items[i].width for i in batch)
    real = sum(items[i].width for i in batch) + sum(prefixes)
    sub = prefix_batches(prefixes, capture_tokens)
    prefix_padded = sum(len(b) * max(prefixes[j] for j in b) for b in sub)
    return Shape(len(batch), width, len(prefixes), max(prefixes), real, len(batch) * width + prefix_padded)
