"""How much work a trace is, for the memory model: tokens, responses and the largest scope.

The operator sees only the manifest, so the workload comes from ``rollouts.tokensEstimate`` when it is
given (the trace's response tokens in total, over every GPU and pod). Where a file can be read (the CLI,
the worker) and no estimate is given, the rollouts file is counted exactly; failing that, the
generation settings give an upper bound. Nothing here imports torch.
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from influence_trace.api.spec import InfluenceTraceSpec

# Assumptions where the manifest is silent; each lands in the estimate's list of assumptions.
ASSUMED_TOKENS_PER_RESPONSE = 128  # a short mean response means more responses: more R x D buffers
DEFAULT_PROMPT_TOKENS = 1024  # prompt length when unknown: only the capture pass's sequences depend on it
DEFAULT_MAX_RESPONSE_TOKENS = 8192  # longest response when no generation settings bound it


class WorkloadError(ValueError):
    """The workload cannot be estimated; the message says which manifest field would fix it."""


@dataclass(frozen=True)
class Workload:
    """Token and response counts the memory model needs (totals over the whole trace)."""

    response_tokens: int  # T: response tokens over every GPU and pod
    responses: int  # R: responses (rows)
    scope_tokens: int  # tokens of the largest per-prompt group (T when unknown)
    scope_responses: int  # responses of the largest per-prompt group (R when unknown)
    max_sequence_tokens: int  # longest prompt + response: a capture batch holds at least one
    prompt_tokens: int  # prompt tokens over all rows (each row keeps its own copy)
    source: str  # where the numbers came from, in words


def from_estimate(spec: InfluenceTraceSpec) -> Workload:
    """tokensEstimate as the total; responses from an assumed mean length (the safe side: more)."""
    tokens = int(spec.rollouts.tokens_estimate or 0)
    gen = spec.rollouts.generate
    mean = min(ASSUMED_TOKENS_PER_RESPONSE, gen.max_response_tokens if gen else ASSUMED_TOKENS_PER_RESPONSE)
    responses = max(1, math.ceil(tokens / mean))
    longest = gen.max_response_tokens if gen else DEFAULT_MAX_RESPONSE_TOKENS
    group_r = min(responses, gen.responses_per_prompt) if gen else responses
    group_t = min(tokens, group_r * longest) if gen else tokens
    return Workload(
        response_tokens=tokens,
        responses=responses,
        scope_tokens=group_t,
        scope_responses=group_r,
        max_sequence_tokens=DEFAULT_PROMPT_TOKENS + min(longest, tokens),
        prompt_tokens=responses * DEFAULT_PROMPT_TOKENS,
        source=f"rollouts.tokensEstimate={tokens} (responses assumed {mean} tokens long on average)",
    )


def _token_rows(path: Path) -> list[tuple[str, int, int]] | None:
    """(prompt_id, prompt tokens, response tokens) per row, or None if the file has text rows."""
    rows: list[tuple[str, int, int]] = []
    for raw in _read_rows(path):
        if "response_ids" not in raw or "prompt_ids" not in raw:
            return None
        rows.append((str(raw["prompt_id"]), len(raw["prompt_ids"]), len(raw["response_ids"])))
    return rows


def _read_rows(path: Path) -> list[dict]:
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq  # optional: the operator image may lack it

        return pq.read_table(path, columns=["prompt_id", "prompt_ids", "response_ids"]).to_pylist()
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def from_rollouts_file(path: str | Path) -> Workload | None:
    """Exact counts from a token-id rollouts file; None when unreadable or text (needs a tokenizer)."""
    try:
        rows = _token_rows(Path(path))
    except (OSError, ValueError, KeyError, TypeError, ImportError):
        return None
    if not rows:
        return None
    group_t: dict[str, int] = defaultdict(int)
    group_r: dict[str, int] = defaultdict(int)
    for pid, _, resp in rows:
        group_t[pid] += resp
        group_r[pid] += 1
    return Workload(
        response_tokens=sum(r for _, _, r in rows),
        responses=len(rows),
        scope_tokens=max(group_t.values()),
        scope_responses=max(group_r.values()),
        max_sequence_tokens=max(p + r for _, p, r in rows),
        prompt_tokens=sum(p for _, p, _ in rows),
        source=f"counted in {path}",
    )


def _count_prompts(path: str) -> int | None:
    try:
        text = Path(path).read_text()
    except OSError:
        return None
    return sum(1 for line in text.splitlines() if line.strip())


def from_generate(spec: InfluenceTraceSpec) -> Workload | None:
    """Upper bound: every prompt's responses run to maxResponseTokens (needs the prompts file)."""
    gen = spec.rollouts.generate
    prompts = _count_prompts(gen.prompts_path) if gen else None
    if gen is None or not prompts:
        return None
    rpp, longest = gen.responses_per_prompt, gen.max_response_tokens
    return Workload(
        response_tokens=prompts * rpp * longest,
        responses=prompts * rpp,
        scope_tokens=rpp * longest,
        scope_responses=rpp,
        max_sequence_tokens=DEFAULT_PROMPT_TOKENS + longest,
        prompt_tokens=prompts * rpp * DEFAULT_PROMPT_TOKENS,
        source=f"upper bound from {prompts} prompts x {rpp} responses x {longest} tokens",
    )


def resolve_workload(spec: InfluenceTraceSpec, read_files: bool = True) -> Workload:
    """tokensEstimate, else the rollouts file, else the generation bound; else a clear error."""
    if spec.rollouts.tokens_estimate:
        return from_estimate(spec)
    found = None
    if read_files and spec.rollouts.path and not spec.rollouts.generate:
        found = from_rollouts_file(spec.rollouts.path)
    if found is None and read_files:
        found = from_generate(spec)
    if found is None:
        raise WorkloadError(
            "spec.rollouts.tokensEstimate is needed: the rollouts"
            + (" or prompts file cannot be read or counted here" if read_files else " are not readable here")
            + " (give the trace's total response tokens, over every GPU)"
        )
    return found
