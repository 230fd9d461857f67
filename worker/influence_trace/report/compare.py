"""``influence-trace compare DIR [DIR ...]``: several finished runs side by side.

Prints the markdown the user pastes into an experiment report (the layout of their factor-64-versus-32
write-up: a common-config line, then tables with one column per run) or, with ``--json``, the same
content for scripts. Only settings that differ get a row of their own; the rest go in the common line,
so the table says at once what each run changed.
"""

from __future__ import annotations

import argparse
import json
from collections import Counter
from typing import Any

from influence_trace.report.run_view import (
    Row,
    Run,
    expand_steps,
    flatten,
    fmt_setting,
    metric_rows,
    open_run,
    resource_rows,
    timing_rows,
)

IGNORED_SETTINGS = ("output.path",)  # differs for every run and says nothing about the method
COMMON_PREFIXES = ("model.", "trace.")  # the common line lists these, as the user's reports do


def main(args: argparse.Namespace) -> int:
    runs = [open_run(d) for d in expand_steps(args.dirs)]
    print(json.dumps(comparison(runs), indent=2) if args.json else markdown(runs))
    return 0


def labels(runs: list[Run]) -> list[str]:
    """Column names: run names, falling back to directory names, then numbering, to stay distinct."""
    names = [r.name for r in runs]
    if len(set(names)) < len(names):
        names = [r.path.name for r in runs]
    counts = Counter(names)
    return [f"{n} ({i + 1})" if counts[n] > 1 else n for i, n in enumerate(names)]


def split_settings(runs: list[Run]) -> tuple[dict[str, Any], list[str]]:
    """(settings equal in every run, keys of settings that differ), over the flattened specs."""
    flats = [flatten(r.spec) for r in runs]
    keys = list(dict.fromkeys(k for f in flats for k in f if k not in IGNORED_SETTINGS))
    common, differing = {}, []
    for key in keys:
        values = [f.get(key) for f in flats]
        if all(v == values[0] for v in values):
            common[key] = values[0]
        else:
            differing.append(key)
    return common, differing


def comparison(runs: list[Run]) -> dict[str, Any]:
    """The machine-readable comparison (``--json``)."""
    common, differing = split_settings(runs)
    return {
        "runs": [
            {
                "name": name,
                "path": str(run.path),
                "settings": {k: flatten(run.spec).get(k) for k in differing},
                "timings": run.summary.get("timings") or {},
                "resources": run.summary.get("resources") or {},
                "rows_emitted": run.summary.get("rows_emitted"),
                "metrics": run.metrics,
                "metrics_source": run.metrics_source,
            }
            for name, run in zip(labels(runs), runs, strict=True)
        ],
        "differing_settings": differing,
        "common_settings": common,
    }


def markdown(runs: list[Run]) -> str:
    names = labels(runs)
    common, differing = split_settings(runs)
    shown = {k: v for k, v in common.items() if k.startswith(COMMON_PREFIXES)}
    lines = [f"### Comparison of {len(runs)} runs", ""]
    lines.append("**Common config**: " + (", ".join(f"`{k}={fmt_setting(v)}`" for k, v in shown.items())
                                         or "(nothing in common)"))
    setting_rows: list[Row] = [(k, [fmt_setting(flatten(r.spec).get(k)) for r in runs], False)
                               for k in differing]
    for title, rows in (("Settings that differ", setting_rows), ("Timing (seconds)", timing_rows(runs)),
                        ("Resources", resource_rows(runs)), ("Quality metrics", metric_rows(runs))):
        lines += ["", f"#### {title}", ""]
        lines += md_table(["Setting" if title.startswith("Settings") else "Metric", *names], rows)
    return "\n".join(lines)


def md_table(header: list[str], rows: list[Row]) -> list[str]:
    if not rows:
        return ["(none)"]
    out = ["| " + " | ".join(map(_cell, header)) + " |", "|" + " --- |" * len(header)]
    for label, cells, bold in rows:
        wrap = (lambda s: f"**{s}**") if bold else (lambda s: s)
        out.append("| " + " | ".join(wrap(_cell(c)) for c in [label, *cells]) + " |")
    return out


def _cell(text: str) -> str:
    """Markdown table cells cannot hold '|' or line breaks."""
    return str(text).replace("|", "\\|").replace("\n", " ")
