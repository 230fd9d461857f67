"""A finished run's outputs as the report and ``compare`` see them, and the tables both print.

The report (HTML, one run) and ``compare`` (markdown/JSON, several runs) show the same timing,
resource and metric tables in the layout of the user's experiment reports; building the rows once here
keeps the two from drifting apart. Reading is tolerant: a summary from an older worker without
``metrics`` gets them computed from rows.parquet, and missing figures show as a dash.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from influence_trace.trace.metrics import METRIC_KEYS, quality_metrics

# Stage timings in the order of the user's report (step total first, generation last).
TIMING_ORDER = ("step_total", "pop_rows", "hessian_solve", "grad_staging", "token_scoring",
                "logprob_backward", "gen")
TIMING_LABELS = {"step_total": "step total", "gen": "gen (rollout)"}
METRIC_LABELS = {
    "auc": "AUC (accepted vs rejected)",
    "sign_consistency": "sign consistency",
    "snr_mean": "SNR mean",
    "snr_median": "SNR median",
    "unscored_token_share": "unscored tokens",
    "lds": "LDS (subset updates, Spearman)",
}
# The quality metrics and, when the run validated (spec.validate), its linear datamodeling score.
REPORT_METRIC_KEYS = (*METRIC_KEYS, "lds")


@dataclass
class Run:
    """One output directory: its summary, its per-response rows, and the quality metrics."""

    path: Path
    summary: dict[str, Any]
    prompt_ids: list[str] = field(default_factory=list)
    response_ids: list[str] = field(default_factory=list)
    rewards: list[float | None] = field(default_factory=list)
    accepted: list[bool] = field(default_factory=list)
    token_ids: list[np.ndarray] = field(default_factory=list)
    scores: list[np.ndarray] = field(default_factory=list)
    metrics: dict[str, float | None] = field(default_factory=dict)
    metrics_source: str = "summary.json"
    validation: dict[str, Any] | None = None  # validation.json, when the run validated

    @property
    def spec(self) -> dict[str, Any]:
        return spec_of(self.summary)

    @property
    def name(self) -> str:
        meta = self.summary.get("metadata") or {}
        return str(self.summary.get("name") or meta.get("name") or self.path.name)


def spec_of(summary: dict[str, Any]) -> dict[str, Any]:
    """The resolved manifest spec inside a summary, wherever the worker put it."""
    for key in ("spec", "config", "configuration", "manifest"):
        value = summary.get(key)
        if isinstance(value, dict):
            return value.get("spec", value) if isinstance(value.get("spec"), dict) else value
    return {}


def expand_steps(dirs: list[str | Path]) -> list[Path]:
    """A multi-step trace's output directory (docs/training.md) stands for its step folders, in order."""
    out: list[Path] = []
    for d in map(Path, dirs):
        steps = None
        if (d / "summary.json").is_file() and not (d / "rows.parquet").exists():
            try:
                steps = json.loads((d / "summary.json").read_text()).get("steps")
            except ValueError:
                steps = None
        out += [d / s["path"] for s in steps] if isinstance(steps, list) else [d]
    return out


def open_run(path: str | Path) -> Run:
    """Read a finished run through the worker's own reader (errors name the missing file)."""
    from influence_trace.io.outputs import load_run

    outputs = load_run(path)
    run = Run(path=Path(path), summary=outputs.summary)
    table = outputs.rows
    run.prompt_ids = [str(p) for p in table.column("prompt_id").to_pylist()]
    run.response_ids = [str(r) for r in table.column("response_id").to_pylist()]
    run.rewards = table.column("reward").to_pylist()
    run.accepted = [bool(a) for a in table.column("accepted").to_pylist()]
    run.token_ids = _list_column(table, "token_ids", np.int64)
    run.scores = _list_column(table, "scores", np.float64)
    if isinstance(run.summary.get("metrics"), dict):
        run.metrics = {k: run.summary["metrics"].get(k) for k in REPORT_METRIC_KEYS}
    else:  # a run from before the worker wrote metrics
        run.metrics = quality_metrics(run.prompt_ids, run.accepted, run.scores)
        run.metrics_source = "rows.parquet (computed here: summary.json has none)"
    run.validation = _validation(Path(path))
    return run


def _validation(path: Path) -> dict[str, Any] | None:
    """validation.json (spec.validate), or None when the run did not validate."""
    from influence_trace.io.outputs import VALIDATION_FILE

    file = path / VALIDATION_FILE
    return json.loads(file.read_text()) if file.is_file() else None


def _list_column(table: Any, name: str, dtype: type) -> list[np.ndarray]:
    """A list<> column as one numpy array per row, split from the flat values (no per-item Python)."""
    col = table.column(name).combine_chunks()
    offsets = col.offsets.to_numpy()
    values = col.values.to_numpy(zero_copy_only=False).astype(dtype)
    return [values[offsets[i]:offsets[i + 1]] for i in range(len(col))]


# ---- tables: each row is (label, [cell per run], bold) --------------------------------------------

Row = tuple[str, list[str], bool]


def timing_rows(runs: list[Run]) -> list[Row]:
    """Seconds per pipeline stage, in the user's order, then any other stage the worker timed. A run of
    several processes shows each stage's slowest rank and the spread over ranks."""
    keys = list(TIMING_ORDER)
    for run in runs:
        keys += [k for k in (run.summary.get("timings") or {}) if k not in keys]
    present = [k for k in keys if any(k in (r.summary.get("timings") or {}) for r in runs)]
    return [(TIMING_LABELS.get(k, k), [_timing_cell(r, k) for r in runs], k == "step_total") for k in present]


def _timing_cell(run: Run, stage: str) -> str:
    ranks = ((run.summary.get("resources") or {}).get("stage_seconds") or {}).get(stage)
    if not ranks:
        return fmt_seconds((run.summary.get("timings") or {}).get(stage))
    count = len(ranks["per_rank"])
    return f"{fmt_seconds(ranks['max'])} (slowest of {count} ranks; spread {fmt_seconds(ranks['spread'])})"


def resource_rows(runs: list[Run]) -> list[Row]:
    """Rows emitted and peak memory, as in the user's resources table (GB = 10^9 bytes)."""
    def res(key: str) -> Callable[[Run], Any]:
        return lambda r: (r.summary.get("resources") or {}).get(key)

    rows: list[Row] = [
        ("device", [str(res("device_name")(r) or res("device")(r) or DASH) for r in runs], False),
        ("rows_emitted", [fmt_count(r.summary.get("rows_emitted")) for r in runs], False),
        ("GPU mem (GB)", [fmt_gb(res("peak_gpu_bytes")(r)) for r in runs], False),
        ("CPU mem (GB)", [fmt_gb(res("peak_host_bytes")(r)) for r in runs], False),
    ]
    if not any(res("peak_gpu_bytes")(r) for r in runs):  # no GPU ran: no "GPU mem 0"
        rows = [row for row in rows if row[0] != "GPU mem (GB)"]
    return rows


def metric_rows(runs: list[Run]) -> list[Row]:
    return [(METRIC_LABELS[k], [fmt_metric(r.metrics.get(k), k) for r in runs], k in ("auc", "lds"))
            for k in REPORT_METRIC_KEYS]


def flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    """Nested settings as dotted keys (``trace.factor``); lists stay whole values."""
    if not isinstance(value, dict):
        return {prefix: value}
    out: dict[str, Any] = {}
    for key, item in value.items():
        out.update(flatten(item, f"{prefix}.{key}" if prefix else str(key)))
    return out


def fmt_setting(value: Any) -> str:
    if isinstance(value, list | tuple):
        return ", ".join(str(v) for v in value)
    return "null" if value is None else str(value).lower() if isinstance(value, bool) else str(value)


# ---- number formatting ---------------------------------------------------------------------------

DASH = "–"


def fmt_seconds(value: Any) -> str:
    """Thousands separators for long stages (as the user writes them), more digits for short ones."""
    if not isinstance(value, int | float):
        return DASH
    if value >= 10:
        return f"{value:,.0f}"
    return f"{value:.2f}" if value >= 1 else f"{value:.3f}"


def fmt_gb(value: Any) -> str:
    if not isinstance(value, int | float):
        return DASH
    gb = value / 1e9
    if gb == 0:
        return "0"
    return f"{gb:,.0f}" if gb >= 10 else f"{gb:.2f}" if gb >= 0.01 else f"{gb:.4f}"


def fmt_count(value: Any) -> str:
    return f"{value:,}" if isinstance(value, int) else DASH


def fmt_metric(value: Any, key: str = "") -> str:
    if not isinstance(value, int | float):
        return DASH
    return f"{100 * value:.1f}%" if key == "unscored_token_share" else f"{value:.3f}"
