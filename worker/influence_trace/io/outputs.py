"""A run's outputs: ``rows.parquet`` (one row per scored response) and ``summary.json``.

Each file is written under a temporary name in the output directory and renamed when complete, so a
crashed run never leaves a file that looks finished. Rows go first and the summary last: the
summary's presence is what marks a finished run, and a stale summary from an earlier run in the same
directory is removed before new rows replace the old ones. This module does not import torch, so the
report and compare tools can read runs without it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from influence_trace.api.contract import InvalidInput
from influence_trace.api.spec import InfluenceTrace
from influence_trace.io.atomic import write_atomically
from influence_trace.trace.metrics import quality_metrics
from influence_trace.trace.records import TraceResult
from influence_trace.trace.selection import Selection

ROWS_FILE = "rows.parquet"
SUMMARY_FILE = "summary.json"
VALIDATION_FILE = "validation.json"

ROWS_SCHEMA = pa.schema(
    [
        pa.field("prompt_id", pa.string(), nullable=False),
        pa.field("response_id", pa.string(), nullable=False),
        pa.field("reward", pa.float64(), nullable=False),
        pa.field("advantage", pa.float64(), nullable=False),  # given, or computed from the group's rewards
        pa.field("accepted", pa.bool_(), nullable=False),
        pa.field("num_tokens", pa.int32(), nullable=False),
        pa.field("mean_score", pa.float64(), nullable=False),
        pa.field("token_ids", pa.list_(pa.int32()), nullable=False),
        pa.field("scores", pa.list_(pa.float32()), nullable=False),
    ]
)


@dataclass
class Row:
    """One scored response as it is written."""

    prompt_id: str
    response_id: str
    reward: float
    advantage: float
    accepted: bool
    token_ids: tuple[int, ...]
    scores: np.ndarray  # float64, one per response token


@dataclass
class RunOutputs:
    """A finished run read back: the rows table and the summary."""

    rows: pa.Table
    summary: dict[str, Any]


def rows_path(output_dir: str | Path) -> Path:
    return Path(output_dir) / ROWS_FILE


def summary_path(output_dir: str | Path) -> Path:
    return Path(output_dir) / SUMMARY_FILE


def is_finished(output_dir: str | Path) -> bool:
    """A run is finished when its summary exists (it is written last)."""
    return summary_path(output_dir).is_file() and rows_path(output_dir).is_file()


def rows_table(rows: list[Row]) -> pa.Table:
    """The rows as an Arrow table with the fixed schema; scores must be one finite value per token."""
    for row in rows:
        if len(row.scores) != len(row.token_ids):
            raise ValueError(
                f"response {row.response_id!r}: {len(row.scores)} scores for {len(row.token_ids)} tokens"
            )
    columns = {
        "prompt_id": [r.prompt_id for r in rows],
        "response_id": [r.response_id for r in rows],
        "reward": [float(r.reward) for r in rows],
        "advantage": [float(r.advantage) for r in rows],
        "accepted": [bool(r.accepted) for r in rows],
        "num_tokens": [len(r.token_ids) for r in rows],
        "mean_score": [float(np.mean(r.scores)) if len(r.scores) else 0.0 for r in rows],
        "token_ids": [list(r.token_ids) for r in rows],
        "scores": [np.asarray(r.scores, dtype=np.float32) for r in rows],
    }
    return pa.Table.from_pydict(columns, schema=ROWS_SCHEMA)


def rows_from_result(selection: Selection, result: TraceResult) -> list[Row]:
    """One row per scored response, in scope order; a selected response without scores is an error
    (rows must equal the selected responses)."""
    rows = []
    for group in selection.groups:
        flagged = zip(group.responses, group.accepted, group.advantages, strict=True)
        for response, accepted, advantage in flagged:
            if response.response_id not in result.scores:
                raise RuntimeError(f"trace returned no scores for selected response {response.response_id!r}")
            rows.append(
                Row(
                    prompt_id=response.prompt_id,
                    response_id=response.response_id,
                    reward=response.reward,
                    advantage=float(advantage),
                    accepted=bool(accepted),
                    token_ids=response.response_ids,
                    scores=np.asarray(result.scores[response.response_id], dtype=np.float64),
                )
            )
    return rows


def module_entries(result: TraceResult) -> list[dict[str, Any]]:
    return [
        {
            "name": m.name,
            "in_features": m.in_features,
            "out_features": m.out_features,
            "k_in": m.k_in,
            "k_out": m.k_out,
            "dim": m.dim,
            "damping": [float(d) for d in m.damping],
            "retries": m.retries,
        }
        for m in result.modules
    ]


def _finite_or_none(value: Any) -> float | None:
    """JSON has no NaN: an undefined diagnostic is written as null."""
    number = float(value)
    return number if np.isfinite(number) else None


def build_summary(
    manifest: InfluenceTrace,
    selection: Selection,
    result: TraceResult,
    rows: list[Row],
    num_rollouts: int,
    timings: dict[str, float],
    resources: dict[str, Any],
) -> dict[str, Any]:
    """summary.json's content: the resolved configuration and what the run did and used."""
    responses = selection.responses
    scores = [np.asarray(r.scores, dtype=np.float32) for r in rows]  # as stored, so a reread agrees
    return {
        "name": manifest.metadata.name,
        "config": manifest.spec.model_dump(mode="json", by_alias=True),
        "rows_emitted": len(rows),
        "groups": {
            "total": selection.total_groups,
            "selected": len(selection.groups),
            "skipped": selection.skipped_groups,
            "skipped_ids": list(selection.skipped_ids),
        },
        "responses": {"read": num_rollouts, "scored": len(responses)},
        "tokens": {
            "scored": selection.num_tokens,
            "prompt": sum(len(r.prompt_ids) for r in responses),
            "accepted": sum(len(r.token_ids) for r in rows if r.accepted),
        },
        "scopes": result.scopes,
        "modules": module_entries(result),
        "timings": {name: round(float(sec), 6) for name, sec in timings.items()},
        "resources": resources,
        "metrics": quality_metrics([r.prompt_id for r in rows], [r.accepted for r in rows], scores),
        "diagnostics": {k: _finite_or_none(v) for k, v in result.diagnostics.items()},
    }


def write_rows(output_dir: str | Path, rows: list[Row]) -> Path:
    """Write rows.parquet atomically, first removing any earlier run's summary (which would make the
    directory look finished with rows that are not its own)."""
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    summary_path(output_dir).unlink(missing_ok=True)
    table = rows_table(rows)
    path = rows_path(output_dir)
    write_atomically(path, lambda tmp: pq.write_table(table, tmp))
    return path


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"summary field of type {type(value).__name__} is not JSON serializable")


def write_summary(output_dir: str | Path, summary: dict[str, Any]) -> Path:
    """Write summary.json atomically; call it last, after write_rows."""
    path = summary_path(output_dir)
    text = json.dumps(summary, indent=2, sort_keys=False, default=_json_default, allow_nan=False) + "\n"
    write_atomically(path, lambda tmp: tmp.write_text(text))
    return path


def write_validation(output_dir: str | Path, document: dict[str, Any]) -> Path:
    """validation.json (spec.validate): every subset's predicted and actual change, atomically."""
    path = Path(output_dir) / VALIDATION_FILE
    text = json.dumps(document, indent=2, default=_json_default, allow_nan=False) + "\n"
    write_atomically(path, lambda tmp: tmp.write_text(text))
    return path


def load_summary(output_dir: str | Path) -> dict[str, Any]:
    path = summary_path(output_dir)
    if not path.is_file():
        raise InvalidInput(f"{output_dir}: not a finished run (no {SUMMARY_FILE})", stage="load_run")
    try:
        return json.loads(path.read_text())
    except ValueError as err:
        raise InvalidInput(f"{path}: not valid JSON ({err})", stage="load_run") from None


def load_run(output_dir: str | Path) -> RunOutputs:
    """Read a finished run's rows and summary (for report and compare)."""
    summary = load_summary(output_dir)
    path = rows_path(output_dir)
    if not path.is_file():
        raise InvalidInput(f"{output_dir}: summary.json present but {ROWS_FILE} is missing", stage="load_run")
    return RunOutputs(rows=pq.read_table(path), summary=summary)
