"""The prompts file that generation samples from (JSONL or Parquet, one row per prompt).

Rows are read and checked with the rollouts reader's own helpers (same formats, same messages naming
the file and row), so the two input files follow one set of rules. A row has ``prompt_id``, the prompt
as ``prompt_ids`` or ``prompt`` text (ids win when both are given, as in rollouts), and what rewards
its responses: the reference ``answer`` for the built-in verifier, or, when
``generate.rewardColumn`` names a column, a per-prompt mapping ``{answer: reward}``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from influence_trace.api.contract import InvalidInput
from influence_trace.generate import verifier
from influence_trace.io import rollouts

STAGE = "gen"


@dataclass(frozen=True)
class Prompt:
    """One validated prompt row; exactly one of ``text`` / ``ids`` is set."""

    where: str  # "FILE line N" or "FILE row N", for messages
    prompt_id: str
    text: str | None
    ids: tuple[int, ...] | None
    answer: str | None
    reward_table: dict[str, float] | None = None  # from generate.rewardColumn

    def reward(self, response_text: str) -> float:
        """The response's reward: the table's entry for its final answer, or the 0/1 verifier."""
        if self.reward_table is None:
            return verifier.reward(response_text, self.answer)
        answer = verifier.extract_answer(response_text)
        for reference, value in self.reward_table.items():
            if verifier.answers_match(answer, reference):
                return value
        return 0.0


def _reward_table(value: Any, column: str, where: str) -> dict[str, float]:
    """A mapping {answer: reward} given as an object, a JSON string or Parquet map pairs."""
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            value = None
    if isinstance(value, list) and all(isinstance(p, list | tuple) and len(p) == 2 for p in value):
        value = dict(value)
    if not isinstance(value, dict) or not value:
        raise InvalidInput(
            f"{where}: {column} must be a non-empty mapping {{answer: reward}} (an object or its JSON text)",
            STAGE,
        )
    return {str(k): rollouts.parse_number(v, f"{column}[{k!r}]", where) for k, v in value.items()}


def parse_prompt(record: dict[str, Any], where: str, reward_column: str | None) -> Prompt:
    """Check one prompts row; a row that cannot be rewarded is an error, not a silent zero."""
    if record.get("prompt_id") is None:
        raise InvalidInput(f"{where}: missing prompt_id (string naming the prompt's group)", STAGE)
    prompt_id = rollouts.parse_identifier(record["prompt_id"], "prompt_id", where)
    prompt = rollouts.parse_text_or_ids(record, "prompt", where)
    answer = None if record.get("answer") is None else str(record["answer"])
    table = None
    if reward_column is not None:
        if record.get(reward_column) is None:
            raise InvalidInput(f"{where}: missing {reward_column} (generate.rewardColumn)", STAGE)
        table = _reward_table(record[reward_column], reward_column, where)
    elif answer is None or not answer.strip():
        raise InvalidInput(
            f"{where}: missing answer; the built-in verifier needs each prompt's reference answer "
            "(or set generate.rewardColumn to a column of per-prompt rewards)",
            STAGE,
        )
    text, ids = (prompt, None) if isinstance(prompt, str) else (None, prompt)
    return Prompt(where, prompt_id, text, ids, answer, table)


def read_prompts(path: str | Path, reward_column: str | None = None) -> list[Prompt]:
    """Every prompt of the file, validated; an empty file or a repeated prompt_id is an error."""
    path = Path(path)
    try:
        records = rollouts.read_records(path)
        prompts = [parse_prompt(record, where, reward_column) for where, record in records]
    except InvalidInput as err:
        err.stage = STAGE
        raise
    if not prompts:
        raise InvalidInput(f"{path}: prompts file has no rows", STAGE)
    seen: dict[str, str] = {}
    for prompt in prompts:
        first = seen.setdefault(prompt.prompt_id, prompt.where)
        if first != prompt.where:
            raise InvalidInput(
                f"{prompt.where}: duplicate prompt_id {prompt.prompt_id!r} (first used at {first}); each "
                "prompt's responses form one group, so prompt ids must be unique",
                STAGE,
            )
    return prompts


def uses_chat_template(tokenizer: Any, wanted: bool) -> bool:
    """Apply the template only when asked and the tokenizer has one (base models often do not)."""
    return bool(wanted and getattr(tokenizer, "chat_template", None))


def prompt_token_ids(prompt: Prompt, tokenizer: Any, chat: bool, vocab_size: int) -> tuple[int, ...]:
    """The ids generation continues: given ids as they are, text through the chat template (as one
    user turn, with the assistant's opening) or with the tokenizer's special tokens."""
    if prompt.ids is not None:
        ids = prompt.ids
    elif chat:
        messages = [{"role": "user", "content": prompt.text}]
        text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        ids = tuple(int(t) for t in tokenizer(text, add_special_tokens=False)["input_ids"])
    else:
        ids = tuple(int(t) for t in tokenizer(prompt.text, add_special_tokens=True)["input_ids"])
    if not ids:
        raise InvalidInput(f"{prompt.where}: prompt tokenizes to no tokens", STAGE)
    bad = [t for t in ids if not 0 <= t < vocab_size]
    if bad:
        raise InvalidInput(
            f"{prompt.where}: prompt token id {bad[0]} is outside the model's vocabulary [0, {vocab_size})",
            STAGE,
        )
    return ids
