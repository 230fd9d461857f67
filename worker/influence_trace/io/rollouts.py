"""Reading and validating the rollouts file (JSONL or Parquet, one row per response).

Reading happens in two steps so the pipeline can fail on a bad row before it loads a model: ``read_rows``
parses and checks every row's structure without a tokenizer, and ``to_responses`` tokenizes text rows
and checks token ids against the model's vocabulary. Every error names the file and the 1-based row
(the line number for JSONL) and says what was expected; nothing is silently dropped or repaired.

Decisions (also in docs/worker.md):
- ``prompt_id`` / ``response_id`` may be strings or integers (integers are common in Parquet exports and
  are converted with ``str``); ``response_id`` defaults to the row's 0-based index among the data rows.
- A row gives its prompt as ``prompt_ids`` or ``prompt`` and its response as ``response_ids`` or
  ``response``; when both forms are present the token ids win (the text is kept for readability only).
- Blank lines in JSONL are skipped (they are not rows, but line numbers still count them).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from influence_trace.api.contract import InvalidInput
from influence_trace.trace.records import Response

STAGE = "load_rollouts"
FORMATS = {".jsonl": "jsonl", ".ndjson": "jsonl", ".parquet": "parquet", ".pq": "parquet"}


@dataclass(frozen=True)
class RawRow:
    """One structurally valid row; the prompt and response are token ids or text, not yet checked
    against a vocabulary."""

    where: str  # "FILE line N" or "FILE row N", for messages
    index: int  # 0-based index among the data rows
    prompt_id: str
    response_id: str
    prompt: tuple[int, ...] | str
    response: tuple[int, ...] | str
    reward: float
    advantage: float | None
    answer: str | None

    @property
    def needs_tokenizer(self) -> bool:
        return isinstance(self.prompt, str) or isinstance(self.response, str)


def rollouts_format(path: Path) -> str:
    """'jsonl' or 'parquet' from the file's extension; anything else is an input error."""
    fmt = FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise InvalidInput(
            f"{path}: unsupported rollouts format {path.suffix or '(no extension)'!r}; "
            f"expected one of {', '.join(sorted(FORMATS))} (JSONL or Parquet, one row per response)",
            stage=STAGE,
        )
    return fmt


def _jsonl_records(path: Path) -> list[tuple[str, dict[str, Any]]]:
    records = []
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            where = f"{path} line {number}"
            try:
                value = json.loads(line)
            except json.JSONDecodeError as err:
                message = f"{where}: not valid JSON ({err.msg} at column {err.colno})"
                raise InvalidInput(message, STAGE) from None
            if not isinstance(value, dict):
                raise InvalidInput(f"{where}: expected a JSON object, got {type(value).__name__}", STAGE)
            records.append((where, value))
    return records


def _parquet_records(path: Path) -> list[tuple[str, dict[str, Any]]]:
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except Exception as err:  # pyarrow raises several types for corrupt or non-Parquet files
        raise InvalidInput(f"{path}: cannot read as Parquet ({err})", STAGE) from None
    return [(f"{path} row {i}", record) for i, record in enumerate(table.to_pylist(), start=1)]


def read_records(path: Path) -> list[tuple[str, dict[str, Any]]]:
    fmt = rollouts_format(path)
    if not path.is_file():
        raise InvalidInput(f"{path}: rollouts file does not exist", STAGE)
    try:
        return _jsonl_records(path) if fmt == "jsonl" else _parquet_records(path)
    except UnicodeDecodeError as err:
        raise InvalidInput(f"{path}: not UTF-8 text ({err.reason} at byte {err.start})", STAGE) from None
    except OSError as err:
        raise InvalidInput(f"{path}: cannot read rollouts file ({err.strerror})", STAGE) from None


def parse_identifier(value: Any, field: str, where: str) -> str:
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise InvalidInput(f"{where}: {field} must be a string (or an integer), got {value!r}", STAGE)
    text = str(value)
    if not text:
        raise InvalidInput(f"{where}: {field} must not be empty", STAGE)
    return text


def parse_number(value: Any, field: str, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidInput(f"{where}: {field} must be a number, got {value!r}", STAGE)
    number = float(value)
    if not math.isfinite(number):
        raise InvalidInput(f"{where}: {field} must be finite, got {number}", STAGE)
    return number


def _token_ids(value: Any, field: str, where: str) -> tuple[int, ...]:
    if not isinstance(value, list | tuple):
        raise InvalidInput(f"{where}: {field} must be a list of token ids, got {type(value).__name__}", STAGE)
    for position, token in enumerate(value):
        if isinstance(token, bool) or not isinstance(token, int):
            message = f"{where}: {field}[{position}] must be an integer token id, got {token!r}"
            raise InvalidInput(message, STAGE)
    return tuple(value)


def parse_text_or_ids(record: dict[str, Any], name: str, where: str) -> tuple[int, ...] | str:
    """The ``<name>_ids`` list when present, else the ``<name>`` text; empty is an error."""
    ids_field = f"{name}_ids"
    if record.get(ids_field) is not None:
        value: tuple[int, ...] | str = _token_ids(record[ids_field], ids_field, where)
        shown = ids_field
    elif record.get(name) is not None:
        value = record[name]
        shown = name
        if not isinstance(value, str):
            raise InvalidInput(f"{where}: {name} must be text, got {type(value).__name__}", STAGE)
    else:
        raise InvalidInput(f"{where}: missing {ids_field} (list of token ids) or {name} (text)", STAGE)
    if len(value) == 0:
        raise InvalidInput(f"{where}: {shown} is empty; every row needs a non-empty {name}", STAGE)
    return value


def parse_row(record: dict[str, Any], where: str, index: int) -> RawRow:
    """Check one decoded row's fields (see the module docstring for the accepted forms)."""
    if record.get("prompt_id") is None:
        raise InvalidInput(f"{where}: missing prompt_id (string naming the row's group)", STAGE)
    if record.get("reward") is None:
        raise InvalidInput(f"{where}: missing reward (finite number)", STAGE)
    response_id = record.get("response_id")
    advantage = record.get("advantage")
    answer = record.get("answer")
    return RawRow(
        where=where,
        index=index,
        prompt_id=parse_identifier(record["prompt_id"], "prompt_id", where),
        response_id=(
            str(index) if response_id is None else parse_identifier(response_id, "response_id", where)
        ),
        prompt=parse_text_or_ids(record, "prompt", where),
        response=parse_text_or_ids(record, "response", where),
        reward=parse_number(record["reward"], "reward", where),
        advantage=None if advantage is None else parse_number(advantage, "advantage", where),
        answer=None if answer is None else str(answer),
    )


def _check_unique_ids(rows: list[RawRow]) -> None:
    seen: dict[str, RawRow] = {}
    for row in rows:
        first = seen.setdefault(row.response_id, row)
        if first is not row:
            raise InvalidInput(
                f"{row.where}: duplicate response_id {row.response_id!r} (first used at {first.where}); "
                "response ids must be unique",
                STAGE,
            )


def read_rows(path: str | Path) -> list[RawRow]:
    """Parse and structurally validate every row of a rollouts file; an empty file is an error."""
    path = Path(path)
    records = read_records(path)
    if not records:
        raise InvalidInput(f"{path}: rollouts file has no rows", STAGE)
    rows = [parse_row(record, where, index) for index, (where, record) in enumerate(records)]
    _check_unique_ids(rows)
    return rows


def _tokenize(row: RawRow, text: str, tokenizer: Any, is_prompt: bool) -> tuple[int, ...]:
    """The prompt keeps the tokenizer's special tokens (as a chat prompt would); the response adds none."""
    if tokenizer is None:
        raise InvalidInput(
            f"{row.where}: has text but no tokenizer is available; give token ids, or a model directory "
            "with a tokenizer",
            STAGE,
        )
    ids = tuple(int(t) for t in tokenizer(text, add_special_tokens=is_prompt)["input_ids"])
    if not ids:
        name = "prompt" if is_prompt else "response"
        raise InvalidInput(f"{row.where}: {name} text tokenizes to no tokens", STAGE)
    return ids


def _in_vocab(ids: tuple[int, ...], field: str, row: RawRow, vocab_size: int | None) -> tuple[int, ...]:
    if vocab_size is None:
        return ids
    for position, token in enumerate(ids):
        if not 0 <= token < vocab_size:
            raise InvalidInput(
                f"{row.where}: {field}[{position}] = {token} is outside the model's vocabulary "
                f"[0, {vocab_size})",
                STAGE,
            )
    return ids


def to_response(row: RawRow, tokenizer: Any = None, vocab_size: int | None = None) -> Response:
    """Tokenize a row's text (if any) and check its token ids against the vocabulary."""
    prompt = row.prompt if isinstance(row.prompt, tuple) else _tokenize(row, row.prompt, tokenizer, True)
    response = (
        row.response if isinstance(row.response, tuple) else _tokenize(row, row.response, tokenizer, False)
    )
    return Response(
        prompt_id=row.prompt_id,
        response_id=row.response_id,
        prompt_ids=_in_vocab(prompt, "prompt_ids", row, vocab_size),
        response_ids=_in_vocab(response, "response_ids", row, vocab_size),
        reward=row.reward,
        advantage=row.advantage,
        row=row.index,
    )


def to_responses(rows: list[RawRow], tokenizer: Any = None, vocab_size: int | None = None) -> list[Response]:
    return [to_response(row, tokenizer, vocab_size) for row in rows]


def load_rollouts(path: str | Path, tokenizer: Any = None, vocab_size: int | None = None) -> list[Response]:
    """Read, validate and tokenize a rollouts file in one call."""
    return to_responses(read_rows(path), tokenizer, vocab_size)
