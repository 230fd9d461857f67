"""Stage gen: sample ``responsesPerPrompt`` responses per prompt with the traced model, and reward them.

This is the user's pipeline's own first stage (about 410 s of each 1,000 to 2,400 s step), done with
``transformers`` generation so the traced rollouts come from the traced model.

Decisions (also in docs/generation.md):
- Only the manifest's settings drive sampling: the model's ``generation_config.json`` (which for
  instruct models often sets top_k, repetition penalties and its own temperature) is set aside for
  the call, keeping only its end-of-sequence ids. Top-k is off; temperature 0 means greedy.
- Sequences are generated ``batchSize`` at a time, a prompt's responses next to each other, left
  padded. Each batch draws from its own seed derived from ``trace.seed`` and the batch's index, so a
  run is reproducible for the same settings and device (batchSize is part of the recipe: it changes
  which random numbers each response draws).
- A response ends at and includes its first end-of-sequence token: the decision to stop is a token
  the policy chose, it is part of what RL training scores, and it keeps a response that stops at once
  non-empty. A response that reaches ``maxResponseTokens`` without one is kept as it is, with
  ``finish_reason: length``.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from influence_trace.api.architectures import shapes_and_dtype
from influence_trace.api.contract import InvalidInput
from influence_trace.api.progress import REPORTER
from influence_trace.api.spec import GenerateSpec
from influence_trace.generate.prompts import STAGE, Prompt
from influence_trace.planning.memory_model import generation_cache_bytes
from influence_trace.trace.ledger import MemoryLedger


@dataclass(frozen=True)
class Generated:
    """One sampled response: its ids (cut after the first EOS) and why it stopped."""

    prompt: int  # index into the prompts
    sample: int  # index within the prompt's group
    ids: tuple[int, ...]
    finish_reason: str  # "eos" | "length"


def eos_token_ids(model: nn.Module, tokenizer: Any) -> list[int]:
    """Every id that ends a response: the model's generation config's, its config's, the tokenizer's."""
    found: list[int] = []
    for source in (getattr(model, "generation_config", None), model.config, tokenizer):
        value = getattr(source, "eos_token_id", None)
        for token in value if isinstance(value, list | tuple) else [value]:
            if token is not None and int(token) not in found:
                found.append(int(token))
    if not found:
        raise InvalidInput(
            "spec.model.path: the model and tokenizer name no end-of-sequence token, so responses could "
            "never stop before maxResponseTokens; set eos_token_id in config.json or generation_config.json",
            STAGE,
        )
    return found


def generation_config(settings: GenerateSpec, eos: list[int], pad: int):
    """Explicit settings for ``generate``: nothing left for the model's defaults to fill in."""
    from transformers import GenerationConfig

    sampling = settings.temperature > 0
    return GenerationConfig(
        max_new_tokens=settings.max_response_tokens,
        do_sample=sampling,
        temperature=settings.temperature if sampling else None,
        top_p=settings.top_p if sampling else None,
        top_k=0 if sampling else None,
        repetition_penalty=1.0,
        eos_token_id=eos,
        pad_token_id=pad,
        use_cache=True,
    )


@contextmanager
def _own_generation_config(model: nn.Module, config) -> Iterator[None]:
    """Replace the model's generation defaults for the call, so none of them leak into sampling."""
    previous = model.generation_config
    model.generation_config = config
    try:
        yield
    finally:
        model.generation_config = previous


def batch_seed(seed: int, batch: int) -> int:
    """A 63-bit seed per (trace seed, batch index): independent streams, no overlap between seeds."""
    digest = hashlib.sha256(f"influence-trace-gen:{seed}:{batch}".encode()).digest()
    return int.from_bytes(digest[:8], "big") >> 1


def left_pad(seqs: list[tuple[int, ...]], pad: int,
             device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Input ids and attention mask with the padding on the left, where generation does not continue."""
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for row, seq in enumerate(seqs):
        ids[row, width - len(seq) :] = torch.tensor(seq, dtype=torch.long)
        mask[row, width - len(seq) :] = 1
    return ids.to(device), mask.to(device)


def cut_at_eos(tokens: list[int], eos: list[int]) -> tuple[tuple[int, ...], str]:
    """The response up to and including its first EOS ("eos"), or all of it ("length")."""
    stops = set(eos)
    for position, token in enumerate(tokens):
        if token in stops:
            return tuple(tokens[: position + 1]), "eos"
    return tuple(tokens), "length"


def cache_bytes(model: nn.Module, batch: int, tokens: int) -> int:
    """Planned device bytes of one batch's KV cache and last-step logits (for the budget check)."""
    shapes, dtype = shapes_and_dtype(model)
    return generation_cache_bytes(shapes, batch, tokens, dtype)


def plan(num_prompts: int, per_prompt: int, batch_size: int) -> list[list[tuple[int, int]]]:
    """(prompt, sample) pairs in group order, cut into batches of ``batch_size``."""
    pairs = [(p, s) for p in range(num_prompts) for s in range(per_prompt)]
    return [pairs[i : i + batch_size] for i in range(0, len(pairs), batch_size)]


def _sample_batch(model: nn.Module, seqs: list[tuple[int, ...]], config, seed: int,
                  device: torch.device) -> list[list[int]]:
    ids, mask = left_pad(seqs, config.pad_token_id, device)
    devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices), torch.no_grad():
        torch.manual_seed(seed)
        out = model.generate(input_ids=ids, attention_mask=mask, generation_config=config)
    return out[:, ids.shape[1] :].tolist()


def _progress(items: list, enabled: bool):
    if not enabled:
        return items
    from tqdm.auto import tqdm

    return tqdm(items, desc="generate", unit="batch", leave=False)


def generate(model: nn.Module, prompt_ids: list[tuple[int, ...]], settings: GenerateSpec, seed: int,
             eos: list[int], pad: int, device: str, ledger: MemoryLedger,
             progress: bool = False) -> list[Generated]:
    """Every prompt's responses, in group order (prompt by prompt, samples in order)."""
    config = generation_config(settings, eos, pad)
    dev = torch.device(device)
    results: list[Generated] = []
    with _own_generation_config(model, config):
        batches = plan(len(prompt_ids), settings.responses_per_prompt, settings.batch_size)
        tracked = REPORTER.track(_progress(batches, progress), "generate", "batch", len(batches))
        for index, pairs in enumerate(tracked):
            seqs = [prompt_ids[p] for p, _ in pairs]
            width = max(len(s) for s in seqs) + settings.max_response_tokens
            with ledger.hold("generation_cache", cache_bytes(model, len(seqs), width), STAGE):
                new_tokens = _sample_batch(model, seqs, config, batch_seed(seed, index), dev)
            for (p, s), tokens in zip(pairs, new_tokens, strict=True):
                ids, reason = cut_at_eos(tokens, eos)
                results.append(Generated(p, s, ids, reason))
    return results


def rollout_rows(prompts: list[Prompt], prompt_ids: list[tuple[int, ...]], generated: list[Generated],
                 tokenizer: Any) -> list[dict[str, Any]]:
    """The rollouts rows as the worker reads them (token ids included), with the decoded text and the
    reward of each response."""
    rows = []
    for item in generated:
        prompt = prompts[item.prompt]
        text = tokenizer.decode(list(item.ids), skip_special_tokens=True)
        rows.append({
            "prompt_id": prompt.prompt_id,
            "response_id": f"{prompt.prompt_id}-{item.sample}",
            "sample": item.sample,
            "prompt": prompt.text,
            "prompt_ids": list(prompt_ids[item.prompt]),
            "response": text,
            "response_ids": list(item.ids),
            "reward": prompt.reward(text),
            "answer": prompt.answer,
            "finish_reason": item.finish_reason,
        })
    return rows


GENERATION_METADATA_KEY = b"influence_trace.generation"


def _parquet_schema(settings: dict[str, Any]):
    import pyarrow as pa

    fields = [
        pa.field("prompt_id", pa.string(), nullable=False),
        pa.field("response_id", pa.string(), nullable=False),
        pa.field("sample", pa.int32(), nullable=False),
        pa.field("prompt", pa.string()),
        pa.field("prompt_ids", pa.list_(pa.int32()), nullable=False),
        pa.field("response", pa.string(), nullable=False),
        pa.field("response_ids", pa.list_(pa.int32()), nullable=False),
        pa.field("reward", pa.float64(), nullable=False),
        pa.field("answer", pa.string()),
        pa.field("finish_reason", pa.string(), nullable=False),
    ]
    return pa.schema(fields, metadata={GENERATION_METADATA_KEY: json.dumps(settings, sort_keys=True)})


def write_rollouts(path: Path, rows: list[dict[str, Any]], settings: dict[str, Any], fmt: str) -> None:
    """Write the rows as ``fmt`` ("parquet", with ``settings`` in the schema metadata, or "jsonl").

    ``fmt`` is passed in because ``path`` is usually a temporary name without the final extension.
    """
    if fmt == "jsonl":
        with path.open("w", encoding="utf-8") as handle:
            for row in rows:
                handle.write(json.dumps(row, ensure_ascii=False) + "\n")
        return
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.Table.from_pylist(rows, schema=_parquet_schema(settings)), path)
