"""Run outputs: fixed rows schema, atomic writes, and a run that looks finished only when it is."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from influence_trace.api.contract import InvalidInput
from influence_trace.io import outputs
from influence_trace.io.outputs import Row, is_finished, load_run, write_rows, write_summary


def make_rows() -> list[Row]:
    return [
        Row("p0", "a", 1.0, 0.7, True, (5, 6, 7), np.array([0.5, -1.0, 2.0])),
        Row("p0", "b", 0.0, -0.7, False, (8,), np.array([3.25])),
    ]


def test_rows_schema_and_values(tmp_path: Path) -> None:
    write_rows(tmp_path, make_rows())
    table = pq.read_table(tmp_path / "rows.parquet")
    assert table.schema.field("token_ids").type == pa.list_(pa.int32())
    assert table.schema.field("scores").type == pa.list_(pa.float32())
    assert table.schema.field("num_tokens").type == pa.int32()
    assert table.schema.field("accepted").type == pa.bool_()
    assert table.column_names[:4] == ["prompt_id", "response_id", "reward", "advantage"]
    rows = table.to_pylist()
    assert rows[0]["token_ids"] == [5, 6, 7] and rows[0]["scores"] == [0.5, -1.0, 2.0]
    assert rows[0]["num_tokens"] == 3 and rows[0]["mean_score"] == pytest.approx(0.5)
    assert rows[1]["accepted"] is False and rows[1]["advantage"] == -0.7


def test_scores_must_match_tokens(tmp_path: Path) -> None:
    bad = [Row("p0", "a", 1.0, 0.0, True, (5, 6), np.array([1.0]))]
    with pytest.raises(ValueError, match=r"response 'a': 1 scores for 2 tokens"):
        write_rows(tmp_path, bad)
    assert not (tmp_path / "rows.parquet").exists()


def test_round_trip_with_load_run(tmp_path: Path) -> None:
    assert not is_finished(tmp_path)
    write_rows(tmp_path, make_rows())
    assert not is_finished(tmp_path)  # rows alone are not a finished run
    write_summary(tmp_path, {"rows_emitted": 2, "timings": {"pop_rows": np.float64(0.25)}})
    assert is_finished(tmp_path)
    run = load_run(tmp_path)
    assert run.rows.num_rows == 2 and run.summary == {"rows_emitted": 2, "timings": {"pop_rows": 0.25}}


def test_load_run_of_unfinished_dir_names_it(tmp_path: Path) -> None:
    write_rows(tmp_path, make_rows())
    with pytest.raises(InvalidInput, match="not a finished run"):
        load_run(tmp_path)


def test_failed_rows_write_leaves_nothing_finished(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_rows(tmp_path, make_rows())
    write_summary(tmp_path, {"rows_emitted": 2})  # an earlier, finished run in the same directory

    def crash(table: pa.Table, path: Path) -> None:
        Path(path).write_bytes(b"PAR1 partial")
        raise OSError("disk full")

    monkeypatch.setattr(outputs.pq, "write_table", crash)
    with pytest.raises(OSError, match="disk full"):
        write_rows(tmp_path, make_rows()[:1])
    assert not is_finished(tmp_path)  # the old summary no longer vouches for these rows
    assert sorted(p.name for p in tmp_path.iterdir()) == ["rows.parquet"]  # no temporary left
    assert pq.read_table(tmp_path / "rows.parquet").num_rows == 2  # the old rows are intact, not partial


def test_failed_summary_write_leaves_no_summary(tmp_path: Path) -> None:
    write_rows(tmp_path, make_rows())
    with pytest.raises(TypeError, match="not JSON serializable"):
        write_summary(tmp_path, {"rows_emitted": 2, "bad": object()})
    assert not is_finished(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["rows.parquet"]
    with pytest.raises(ValueError, match="Out of range float"):
        write_summary(tmp_path, {"timings": {"gen": float("nan")}})
    assert not (tmp_path / "summary.json").exists()
