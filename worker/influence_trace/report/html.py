"""``influence-trace report OUTPUT_DIR``: one self-contained HTML file to judge a trace by eye.

Researchers decide whether a trace is any good by looking at which tokens light up in accepted versus
rejected responses, so the page shows every scored response with its tokens coloured on a diverging
scale, next to the run's configuration, timings, resources and quality metrics. Everything is inline
(styles, script, SVG figures, data) and a Content-Security-Policy forbids any request, so the file
can be mailed around or opened offline. The responses travel as compact JSON (token ids, a table of
the token texts used, scores at 4 significant digits) and the page's script renders 50 at a time, so
large traces stay small on disk and quick to open.
"""

from __future__ import annotations

import argparse
import json
import math
from html import escape
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from influence_trace.api.architectures import read_config_shapes
from influence_trace.io.rollouts import read_rows
from influence_trace.report import svg as report_svg
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

PAGE_SIZE = 50  # responses per page
RANDOM_MARKER = "RANDOM_WEIGHTS"  # demo/tiny_model.py writes it beside a random model's weights
TINY_HIDDEN = 256  # below this hidden size a model is a toy whatever its weights
COLLAPSE_AT = 400  # tokens shown before a response's "show all" button
CLIP_PERCENTILE = 99.0
SUMMARY_SECTIONS = ("spec", "config", "configuration", "manifest", "timings", "resources", "metrics")


def main(args: argparse.Namespace) -> int:
    out = build_report(args.output_dir, args.out)
    print(f"wrote {out} ({out.stat().st_size / 1e6:.2f} MB)")
    return 0


def build_report(output_dir: str | Path, out: str | Path | None = None) -> Path:
    """Render the report of a finished run to ``out`` (default OUTPUT_DIR/report.html).

    A multi-step trace's directory (docs/training.md) gets its last step's page, headed by a table of
    every step (metrics, update, top tokens)."""
    dirs = expand_steps([output_dir])
    run = open_run(dirs[-1])
    tokenizer = load_tokenizer(run)
    steps = steps_section([open_run(d) for d in dirs], tokenizer) if dirs != [Path(output_dir)] else ""
    target = Path(out) if out else Path(output_dir) / "report.html"
    target.write_text(render(run, tokenizer, steps), encoding="utf-8")
    return target


def top_tokens(run: Run, tokenizer: Any, count: int = 5) -> str:
    """The token ids with the largest summed score over the step's responses, as text when decodable."""
    ids = np.concatenate(run.token_ids) if run.token_ids else np.zeros(0, dtype=np.int64)
    scores = np.concatenate(run.scores) if run.scores else np.zeros(0)
    keep = np.isfinite(scores)
    totals: dict[int, float] = {}
    for t, v in zip(ids[keep].tolist(), scores[keep].tolist(), strict=True):
        totals[t] = totals.get(t, 0.0) + v
    best = sorted(totals, key=lambda t: -totals[t])[:count]
    return ", ".join(repr(tokenizer.decode([t])) if tokenizer is not None else str(t) for t in best)


def steps_section(runs: list[Run], tokenizer: Any) -> str:
    """One row per training step: AUC, sign consistency, update loss, seconds, top tokens."""
    def cell(value: Any) -> str:
        return "" if value is None else f"{value:.4g}" if isinstance(value, float) else str(value)

    header = ["Step", "AUC", "Sign consistency", "Update loss (last)", "update_actor s", "step_total s",
              "Top tokens (summed score)"]
    rows = []
    for run in runs:
        update = run.summary.get("update") or {}
        timings = run.summary.get("timings") or {}
        values = [run.summary.get("step"), run.metrics.get("auc"), run.metrics.get("sign_consistency"),
                  update.get("loss_last"), timings.get("update_actor"), timings.get("step_total")]
        rows.append("<tr>" + "".join(f"<td>{escape(cell(v))}</td>" for v in values)
                    + f"<td>{escape(top_tokens(run, tokenizer))}</td></tr>")
    head = "<tr>" + "".join(f"<th>{escape(h)}</th>" for h in header) + "</tr>"
    return (f"<h2>Training steps</h2><table>{head}{''.join(rows)}</table>"
            f'<p class="sub">The page below is step {escape(cell(runs[-1].summary.get("step")))}; '
            "each step-N folder is a run of its own (docs/training.md).</p>")


def render(run: Run, tokenizer: Any = None, steps: str = "") -> str:
    """The whole page as a string; ``tokenizer`` (or None: token ids are shown) decodes token texts."""
    all_scores = np.concatenate(run.scores) if run.scores else np.zeros(0)
    clip = clip_value(all_scores)
    template = resources.files("influence_trace.report").joinpath("template.html").read_text("utf-8")
    fields = {
        "TITLE": escape(f"InfluenceTrace report: {run.name}"),
        "SUBTITLE": escape(subtitle(run)),
        "TOP": steps + model_note(run) + top(run),
        "BOTTOM": bottom(run, all_scores, clip),
        "CLIP": f"{clip:.3g}",
        "CLIP_NEG": f"{-clip:.3g}",
        "CLIP_POS": f"{clip:.3g}",
        "DATA": script_json(payload(run, clip, tokenizer)),
    }
    for key, value in fields.items():
        template = template.replace("{{" + key + "}}", value)
    return template


def clip_value(scores: np.ndarray) -> float:
    """Colour-scale limit: the 99th percentile of |score|, so one outlier does not wash out the rest."""
    finite = np.abs(scores[np.isfinite(scores)])
    clip = float(np.percentile(finite, CLIP_PERCENTILE)) if finite.size else 0.0
    return clip if clip > 0 else (float(finite.max()) if finite.size and finite.max() > 0 else 1.0)


def subtitle(run: Run) -> str:
    trace = run.spec.get("trace") or {}
    n_acc = sum(run.accepted)
    settings = ", ".join(f"{k}={trace[k]}" for k in ("hessianMode", "factor", "scope") if k in trace)
    return (f"{run.path} · {len(run.accepted)} responses ({n_acc} accepted, {len(run.accepted) - n_acc} "
            f"rejected) over {len(set(run.prompt_ids))} prompts · {settings}")


# ---- the static part: tables and figures ---------------------------------------------------------


def top(run: Run) -> str:
    """Above the responses: only the headline metrics (a page opens on what was found)."""
    return "\n".join([
        "<h2>Quality metrics</h2>",
        html_table(["Metric", run.name], metric_rows([run])),
        f'<p class="sub">Metrics from {escape(run.metrics_source)}; definitions in docs/report.md.</p>',
    ])


def model_note(run: Run) -> str:
    """A warning when the model is random or tiny: its scores and metrics show the mechanics only."""
    model = run.spec.get("model")
    path = Path(str(model.get("path") or "")) if isinstance(model, dict) else Path()
    shapes = read_config_shapes(path)
    if (path / RANDOM_MARKER).is_file():
        why = "has random weights (made by influence-trace demo or a test)"
    elif shapes is not None and shapes.hidden_size < TINY_HIDDEN:
        why = f"is tiny (hidden size {shapes.hidden_size})"
    else:
        return ""
    return (f'<p class="note">The model {escape(why)}: the scores and metrics below show the mechanics '
            "of the trace, not what a trained model learns.</p>")


def bottom(run: Run, all_scores: np.ndarray, clip: float) -> str:
    """Below the responses: figures, timings, resources, and the configuration folded."""
    means = np.array([s[np.isfinite(s)].mean() if np.isfinite(s).any() else np.nan for s in run.scores])
    acc = np.array(run.accepted, dtype=bool)
    runs = [run]
    return "\n".join([
        "<h2>Timing and resources</h2>",
        '<div class="tables">',
        "<div><h3>Timing (seconds)</h3>" + html_table(["Metric", run.name], timing_rows(runs)) + "</div>",
        "<div><h3>Resources</h3>" + html_table(["Metric", run.name], resource_rows(runs)) + "</div>",
        "</div>",
        "<h2>Scores</h2>",
        report_svg.token_histogram(all_scores, clip),
        report_svg.mean_histogram(means[acc], means[~acc]) if means.size else "",
        validation_section(run.validation),
        "<h2>Configuration</h2>",
        details("The manifest's settings", settings_table(flatten(run.spec), "Setting")),
        details("Everything else in summary.json", settings_table(other_summary(run.summary), "Field")),
    ])


def validation_section(document: dict[str, Any] | None) -> str:
    """spec.validate's subsets as a scatter with the LDS, and the 1% removals (empty without it)."""
    if not document:
        return ""
    subsets = document.get("subsets_detail") or []
    predicted = [float(s["predicted"]) for s in subsets]
    actual = [float(s["actual"]) for s in subsets]
    rows = [(name.replace("_1pct", " 1% removed"), [f"{v['predicted']:.4g}", f"{v['actual']:.4g}"], False)
            for name, v in (document.get("removal") or {}).items()]
    full = document.get("full_update") or {}
    if full:
        rows.insert(0, ("every token kept", [f"{full['predicted']:.4g}", f"{full['actual']:.4g}"], True))
    return "\n".join([
        '<h2 id="validation">Validation (subset updates)</h2>',
        report_svg.validation_scatter(predicted, actual, document.get("lds")),
        html_table(["Change of the objective", "predicted", "actual"], rows),
        f'<p class="sub">target {escape(str(document.get("target")))}, {len(subsets)} subsets keeping '
        f'{escape(str(document.get("fraction")))} of {escape(str(document.get("tokens")))} tokens; '
        "removals are differences from every token kept; definitions in docs/algorithm.md.</p>",
    ])


def html_table(header: list[str], rows: list[Row]) -> str:
    head = "".join(f"<th>{escape(h)}</th>" for h in header)
    lines = []
    for label, cells, bold in rows:
        wrap = (lambda s: f"<b>{s}</b>") if bold else (lambda s: s)
        tds = "".join(f'<td class="num">{wrap(escape(c))}</td>' for c in cells)
        lines.append(f"<tr><td>{wrap(escape(label))}</td>{tds}</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(lines)}</tbody></table>"


def settings_table(flat: dict[str, Any], key_name: str) -> str:
    if not flat:
        return '<p class="sub">(none recorded)</p>'
    rows = "".join(f"<tr><td>{escape(k)}</td><td>{escape(fmt_setting(v))}</td></tr>" for k, v in flat.items())
    return f"<table><thead><tr><th>{key_name}</th><th>Value</th></tr></thead><tbody>{rows}</tbody></table>"


def other_summary(summary: dict[str, Any], limit: int = 300) -> dict[str, Any]:
    """Summary fields not shown elsewhere (rows, skipped groups, module sizes, damping...), capped."""
    rest = {k: v for k, v in summary.items() if k not in SUMMARY_SECTIONS}
    flat = flatten(rest)
    return dict(list(flat.items())[:limit])


def details(title: str, inner: str) -> str:
    return f"<details><summary>{escape(title)}</summary>{inner}</details>"


# ---- the data the page's script renders ----------------------------------------------------------


def payload(run: Run, clip: float, tokenizer: Any = None) -> dict[str, Any]:
    """Compact response data: prompts indexed once, token texts once per distinct id."""
    prompts = list(dict.fromkeys(run.prompt_ids))
    prompt_index = {p: i for i, p in enumerate(prompts)}
    vocab, sep = token_texts(tokenizer, run.token_ids)
    responses = [
        {
            "p": prompt_index[pid],
            "r": rid,
            "w": _num(reward),
            "a": bool(acc),
            "m": _num(float(s[np.isfinite(s)].mean()) if np.isfinite(s).any() else None),
            "i": [int(t) for t in ids],
            "s": [_num(x) for x in s.tolist()],
        }
        for pid, rid, reward, acc, ids, s in zip(run.prompt_ids, run.response_ids, run.rewards, run.accepted,
                                                 run.token_ids, run.scores, strict=True)
    ]
    texts = prompt_texts(run, tokenizer)
    return {"clip": clip, "page_size": PAGE_SIZE, "collapse_at": COLLAPSE_AT, "prompts": prompts,
            "prompt_texts": [texts.get(p, "") for p in prompts], "vocab": vocab, "sep": sep,
            "responses": responses}


def prompt_texts(run: Run, tokenizer: Any) -> dict[str, str]:
    """Each prompt's text, from the rollouts file the run read while it is readable here (token-id
    prompts decoded with the tokenizer); {} when it is not."""
    rollouts = run.spec.get("rollouts")
    path = Path(str(rollouts.get("path") or "")) if isinstance(rollouts, dict) else Path()
    if not path.is_file():
        return {}
    try:
        rows = read_rows(path)
    except Exception:  # moved, rewritten or unreadable: the page shows prompt ids only
        return {}
    texts: dict[str, str] = {}
    for row in rows:
        if row.prompt_id not in texts:
            prompt = row.prompt
            texts[row.prompt_id] = prompt if isinstance(prompt, str) else (
                tokenizer.decode(list(prompt)) if tokenizer is not None else "")
    return texts


def _num(x: Any) -> float | None:
    """4 significant digits (what the eye can use) keeps the file small; non-finite becomes null."""
    if x is None or not math.isfinite(x):
        return None
    return float(f"{x:.4g}")


def script_json(data: dict[str, Any]) -> str:
    """JSON safe inside a <script> element: no '<' can close the element or open a comment."""
    return json.dumps(data, separators=(",", ":"), allow_nan=False).replace("<", "\\u003c")


def token_texts(tokenizer: Any, token_ids: list[np.ndarray]) -> tuple[dict[str, str], str]:
    """Text of every distinct token id, and the separator to put between tokens.

    Byte-level BPE pieces carry their own spaces (separator ""); word-level tokenizers decode each
    word bare and join words with spaces, which a sample response tells apart.
    """
    if tokenizer is None:
        return {}, " "
    distinct = sorted({int(t) for ids in token_ids for t in ids})
    vocab = {str(t): tokenizer.decode([t]) for t in distinct}
    sample = next((ids for ids in token_ids if len(ids) > 1), None)
    sep = ""
    if sample is not None:
        whole = tokenizer.decode([int(t) for t in sample])
        pieces = [vocab[str(int(t))] for t in sample]
        sep = " " if "".join(pieces) != whole and " ".join(pieces) == whole else ""
    return vocab, sep


def load_tokenizer(run: Run) -> Any:
    """The run's tokenizer from spec.model.path (local files only), or None: the page shows ids."""
    model = run.spec.get("model")
    if not isinstance(model, dict) or not model.get("path") or not Path(model["path"]).is_dir():
        return None
    try:
        from influence_trace.api.spec import ModelSpec
        from influence_trace.io.model_io import load_tokenizer as load

        return load(ModelSpec.model_validate(model))
    except Exception:  # no transformers, no tokenizer files, an unreadable spec: fall back to ids
        return None
