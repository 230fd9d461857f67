"""Rollouts reading: every bad row is named by file and row, JSONL and Parquet read the same."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from influence_trace.api.contract import InvalidInput
from influence_trace.api.spec import ModelSpec
from influence_trace.io.model_io import load_tokenizer
from influence_trace.io.rollouts import load_rollouts, read_rows


def good(**overrides: Any) -> dict[str, Any]:
    row = {"prompt_id": "p0", "response_id": "r0", "prompt_ids": [5, 6], "response_ids": [7, 8, 9]}
    row["reward"] = 1.0
    row.update(overrides)
    return {k: v for k, v in row.items() if v is not ...}


def write_jsonl(path: Path, rows: list[Any]) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


def failure(path: Path, **kwargs: Any) -> str:
    with pytest.raises(InvalidInput) as info:
        load_rollouts(path, **kwargs)
    assert info.value.stage == "load_rollouts"
    assert info.value.exit_code == 65
    return str(info.value)


def test_reads_token_id_rows(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "r.jsonl", [good(), good(response_id="r1", reward=0, advantage=-0.5)])
    first, second = load_rollouts(path, vocab_size=10)
    assert first.prompt_ids == (5, 6) and first.response_ids == (7, 8, 9)
    assert first.reward == 1.0 and first.advantage is None and first.row == 0
    assert second.response_id == "r1" and second.advantage == -0.5 and second.row == 1


def test_ids_default_and_integer_ids_are_converted(tmp_path: Path) -> None:
    rows = [good(prompt_id=3, response_id=...), good(prompt_id=3, response_id=...)]
    path = write_jsonl(tmp_path / "r.jsonl", rows)
    responses = load_rollouts(path)
    assert [r.prompt_id for r in responses] == ["3", "3"]
    assert [r.response_id for r in responses] == ["0", "1"]


def test_blank_lines_are_skipped_but_counted(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "r.jsonl", [good(), "", good(response_id="r1", reward="high")])
    assert "r.jsonl line 3: reward must be a number" in failure(path)


@pytest.mark.parametrize(
    ("row", "expected"),
    [
        (good(prompt_id=...), "missing prompt_id"),
        (good(reward=...), "missing reward"),
        (good(response_ids=...), "missing response_ids (list of token ids) or response (text)"),
        (good(prompt_ids=[]), "prompt_ids is empty"),
        (good(response_ids=[]), "response_ids is empty"),
        (good(response="") | {"response_ids": None}, "response is empty"),
        (good(response_ids=[1, 2.5]), "response_ids[1] must be an integer token id, got 2.5"),
        (good(response_ids=[1, True]), "response_ids[1] must be an integer token id"),
        (good(prompt_ids="5 6"), "prompt_ids must be a list of token ids"),
        (good(reward=True), "reward must be a number"),
        (good(reward=float("nan")), "reward must be finite, got nan"),
        (good(advantage=float("inf")), "advantage must be finite, got inf"),
        (good(prompt_id=""), "prompt_id must not be empty"),
        (good(prompt_id=[1]), "prompt_id must be a string"),
        (good(response_ids=[1, 99]), "response_ids[1] = 99 is outside the model's vocabulary [0, 10)"),
        (good(prompt_ids=[-1]), "prompt_ids[0] = -1 is outside the model's vocabulary [0, 10)"),
    ],
)
def test_bad_row_names_file_and_line(tmp_path: Path, row: dict[str, Any], expected: str) -> None:
    path = write_jsonl(tmp_path / "bad.jsonl", [good(response_id="ok"), row])
    message = failure(path, vocab_size=10)
    assert f"{path} line 2: " in message
    assert expected in message


def test_bad_json_and_non_object(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "r.jsonl", [good(), '{"prompt_id": "p0",'])
    assert f"{path} line 2: not valid JSON" in failure(path)
    path = write_jsonl(tmp_path / "s.jsonl", [[1, 2]])
    assert f"{path} line 1: expected a JSON object, got list" in failure(path)


def test_duplicate_response_ids_name_both_rows(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "r.jsonl", [good(), good(response_id="r1"), good()])
    message = failure(path)
    assert f"{path} line 3: duplicate response_id 'r0' (first used at {path} line 1)" in message


def test_empty_missing_and_unknown_format(tmp_path: Path) -> None:
    empty = tmp_path / "e.jsonl"
    empty.write_text("\n\n")
    assert f"{empty}: rollouts file has no rows" in failure(empty)
    missing = tmp_path / "missing.jsonl"
    assert f"{missing}: rollouts file does not exist" in failure(missing)
    csv = tmp_path / "r.csv"
    csv.write_text("a,b\n")
    message = failure(csv)
    assert f"{csv}: unsupported rollouts format '.csv'" in message
    assert ".jsonl" in message and ".parquet" in message


def test_parquet_reads_like_jsonl_and_names_rows(tmp_path: Path) -> None:
    rows = [good(), good(response_id="r1", reward=0.0)]
    path = tmp_path / "r.parquet"
    pq.write_table(pa.Table.from_pylist(rows), path)
    responses = load_rollouts(path, vocab_size=10)
    assert [r.response_id for r in responses] == ["r0", "r1"]
    assert responses[1].response_ids == (7, 8, 9) and responses[1].reward == 0.0
    bad = tmp_path / "bad.parquet"
    pq.write_table(pa.Table.from_pylist([*rows, good(response_id="r2", reward=float("inf"))]), bad)
    assert f"{bad} row 3: reward must be finite" in failure(bad)
    junk = tmp_path / "junk.parquet"
    junk.write_text("not parquet")
    assert f"{junk}: cannot read as Parquet" in failure(junk)


def test_text_rows_use_the_tokenizer(tmp_path: Path, tiny_model_dir: Path) -> None:
    tokenizer = load_tokenizer(ModelSpec(path=str(tiny_model_dir)))
    rows = [{"prompt_id": "p", "prompt": "compute one plus 2", "response": "the answer is 3", "reward": 1}]
    path = write_jsonl(tmp_path / "t.jsonl", rows)
    (response,) = load_rollouts(path, tokenizer=tokenizer, vocab_size=len(tokenizer))
    assert tokenizer.convert_ids_to_tokens(list(response.response_ids)) == ["the", "answer", "is", "3"]
    assert response.prompt_ids == tuple(tokenizer("compute one plus 2")["input_ids"])
    assert f"{path} line 1: has text but no tokenizer" in failure(path)


def test_ids_win_over_text_and_rows_report_tokenizer_need(tmp_path: Path) -> None:
    rows = [good(response="ignored text"), good(response_id="r1", prompt="hi")]
    path = write_jsonl(tmp_path / "r.jsonl", rows)
    first, second = read_rows(path)
    assert not first.needs_tokenizer and first.response == (7, 8, 9)
    assert second.needs_tokenizer is False  # prompt_ids present, so the text is not used
    path = write_jsonl(tmp_path / "s.jsonl", [good(prompt_ids=..., prompt="hi")])
    assert read_rows(path)[0].needs_tokenizer
