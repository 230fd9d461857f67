"""Finished-run directories written with the worker's own writers (the documented output schema)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from influence_trace.io.outputs import Row, write_rows, write_summary

TIMINGS = {"gen": 0.0, "logprob_backward": 187.0, "grad_staging": 36.0, "hessian_solve": 81.0,
           "token_scoring": 4.2, "pop_rows": 122.0, "step_total": 1012.4}
RESOURCES = {"peak_gpu_bytes": 91_000_000_000, "peak_host_bytes": 436_000_000_000}


def write_run(out: Path, rows: list[Row], name: str = "fake-run", model_path: str = "/nonexistent/model",
              metrics: dict[str, Any] | None = None, **trace: Any) -> Path:
    """rows.parquet and summary.json as a finished run leaves them; ``trace`` overrides trace settings."""
    write_rows(out, rows)
    summary: dict[str, Any] = {
        "name": name,
        "config": {
            "model": {"path": model_path, "dtype": "float32"},
            "rollouts": {"path": "/data/rollouts.jsonl"},
            "trace": {"factor": 32, "scope": "per_prompt", "hessianMode": "inverse", "seed": 0, **trace},
            "output": {"path": str(out)},
        },
        "rows_emitted": len(rows),
        "groups": {"total": 3, "selected": 3, "skipped": 0, "skipped_ids": []},
        "timings": dict(TIMINGS),
        "resources": dict(RESOURCES),
    }
    if metrics is not None:
        summary["metrics"] = metrics
    write_summary(out, summary)
    return out


def random_rows(n_prompts: int, per_prompt: int, tokens: int = 12, seed: int = 0) -> list[Row]:
    """Groups of alternating accepted/rejected responses; accepted ones score mostly positive."""
    rng = np.random.default_rng(seed)
    rows = []
    for p in range(n_prompts):
        for r in range(per_prompt):
            accepted = r % 2 == 0
            scores = rng.normal(0.5 if accepted else -0.5, 1.0, tokens)
            ids = tuple(int(t) for t in rng.integers(3, 40, tokens))
            rows.append(Row(f"p{p}", f"p{p}-r{r}", float(accepted), 0.5 if accepted else -0.5, accepted,
                            ids, scores))
    return rows


def write_validation(out: Path, subsets: int = 12, lds: float = 0.875) -> Path:
    """validation.json as spec.validate leaves it (io.outputs.write_validation), with made-up numbers."""
    from influence_trace.io.outputs import write_validation as write

    rng = np.random.default_rng(0)
    predicted = rng.normal(size=subsets)
    detail = [{"predicted": float(p), "actual": float(2 * p + 0.1 * rng.normal()), "kept_tokens": 50}
              for p in predicted]
    removal = {k: {"removed_tokens": 1, "predicted": -0.1, "actual": -0.2}
               for k in ("top_1pct", "bottom_1pct", "random_1pct")}
    return write(out, {"target": "sgd", "subsets": subsets, "fraction": 0.5, "seed": 0, "tokens": 100,
                       "lds": lds, "full_update": {"predicted": 1.0, "actual": 2.0}, "removal": removal,
                       "subsets_detail": detail})
