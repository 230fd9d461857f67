"""One trace from a validated manifest to its outputs: inputs, model, selection, trace, rows, summary.

Cheap checks come first (files exist, the output directory can be made, every rollouts row is well
formed) so a bad input fails in seconds with InvalidInput instead of after the model has loaded.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from influence_trace.api.contract import InvalidInput
from influence_trace.api.spec import InfluenceTrace, InfluenceTraceSpec
from influence_trace.io import model_io, outputs
from influence_trace.io.rollouts import read_rows, rollouts_format, to_responses
from influence_trace.planning.options import WorkerOptions
from influence_trace.run.parallel_trace import gather_resources, run_trace_parallel
from influence_trace.run.resources import resources_used
from influence_trace.run.resume import Resume, rollouts_destination
from influence_trace.trace.engine import run_trace
from influence_trace.trace.ledger import MemoryLedger
from influence_trace.trace.records import TraceResult
from influence_trace.trace.selection import Selection, select_groups
from influence_trace.trace.timing import StageTimer, Timer
from influence_trace.trace.validation import STAGE as VALIDATE
from influence_trace.trace.validation import Validation, validate

log = logging.getLogger("influence_trace.run")
SETUP = "setup"


def check_inputs(spec: InfluenceTraceSpec) -> Path:
    """Fail fast on missing inputs or an unusable output directory; return the rollouts path (where
    generation writes them, when the manifest asks for generation)."""
    gen = spec.rollouts.generate
    if gen is not None:
        if not Path(gen.prompts_path).is_file():
            where = f"spec.rollouts.generate.promptsPath: {gen.prompts_path}"
            raise InvalidInput(f"{where} does not exist (expected a JSONL or Parquet)", SETUP)
        rollouts_format(rollouts_destination(spec))  # an unsupported extension fails now, not after gen
    elif spec.rollouts.path is None or not Path(spec.rollouts.path).is_file():
        path = spec.rollouts.path
        raise InvalidInput(f"spec.rollouts.path: {path} does not exist (expected a JSONL or Parquet)", SETUP)
    model_io.check_model_dir(spec.model.path)
    try:
        Path(spec.output.path).mkdir(parents=True, exist_ok=True)
    except OSError as err:
        message = f"spec.output.path: cannot create {spec.output.path} ({err.strerror})"
        raise InvalidInput(message, SETUP) from None
    return rollouts_destination(spec)


def select(responses: list, spec: InfluenceTraceSpec) -> Selection:
    """Selected groups; none at all is an input error (there would be nothing to trace)."""
    selection = select_groups(responses, spec.trace, spec.rollouts.max_prompts)
    if not selection.groups:
        what = "all advantages zero" if spec.trace.contrastive_agg == "advantage" else "all rewards equal"
        raise InvalidInput(
            f"spec.rollouts.path: none of the {selection.total_groups} groups (responses sharing a "
            f"prompt_id) has contrast ({what} in every group), so there is no learning signal to "
            "trace; each group needs responses with different rewards",
            "select_groups",
        )
    return selection


def run_pipeline(
    manifest: InfluenceTrace,
    options: WorkerOptions,
    timer: StageTimer | None = None,
    ledger: MemoryLedger | None = None,
    group: Any = None,
) -> dict[str, Any]:
    """Run the whole trace and write its outputs; return the summary (as written to summary.json).

    ``group`` (a distributed.RankGroup) makes this one rank of a multi-process trace: every rank prepares
    the same selection, and rank 0 alone writes the outputs (the other ranks return ``{}``).
    """
    spec = manifest.spec
    timer = timer or StageTimer()
    ledger = ledger or MemoryLedger(options.gpu_budget_bytes)
    rollouts_path = check_inputs(spec)
    resume = Resume(spec, options, timer, ledger)
    model, tokenizer = resume.rollouts()  # stage gen: loads the model only when it generates
    with timer.stage("load_rollouts"):
        raw = read_rows(rollouts_path)
        log.info("read %d rollouts rows from %s", len(raw), rollouts_path)
    with timer.stage("load_model"):
        if model is None:
            model = model_io.load_model(spec.model, options.device)
        if tokenizer is None and any(r.needs_tokenizer for r in raw):
            tokenizer = model_io.load_tokenizer(spec.model)
    with timer.stage("load_rollouts"):
        responses = to_responses(raw, tokenizer, model_io.vocab_size(model))
    with timer.stage("select_groups"):
        selection = select(responses, spec)
    log.info(
        "tracing %d groups (%d skipped without contrast), %d responses, %d response tokens",
        len(selection.groups), selection.skipped_groups, len(selection.responses), selection.num_tokens,
    )
    if group is None:
        hooks = resume.trace_hooks(rollouts_path, selection)
        result = run_trace(model, selection, spec.trace, options, ledger, timer, **hooks)
        resources = resources_used(options, ledger)
    else:
        def share_hooks(share: Selection) -> dict[str, Any]:
            return resume.trace_hooks(rollouts_path, share, (group.rank, group.world))

        shared = run_trace_parallel(model, selection, spec.trace, options, ledger, timer, group, share_hooks)
        gathered = gather_resources(group, resources_used(options, ledger), timer)
        if shared is None or gathered is None:  # not rank 0: rank 0 writes the outputs
            return {}
        result, resources = shared, gathered
    checked = run_validation(spec, model, selection, result, options, timer)
    return write_outputs(manifest, selection, result, len(responses), timer, resources, resume.summary(),
                         checked)


def run_validation(spec: InfluenceTraceSpec, model: Any, selection: Selection, result: TraceResult,
                   options: WorkerOptions, timer: Timer) -> Validation | None:
    """Stage validate (spec.validate): the scores against subset policy updates, on the writer alone
    (after the trace every rank holds the same weights and the writer has every score)."""
    if spec.validation is None:
        return None
    with timer.stage(VALIDATE):
        checked = validate(model, selection, result.scores, spec, options.device, options.capture_tokens)
    log.info("validation: LDS %s over %d subsets (%s)", checked.lds, len(checked.actual),
             spec.validation.target)
    return checked


def write_outputs(manifest: InfluenceTrace, selection: Selection, result: TraceResult, num_rollouts: int,
                  timer: Timer, resources: dict[str, Any], stages: dict[str, Any],
                  checked: Validation | None = None) -> dict[str, Any]:
    """The one tail of every run (one process, or rank 0 of several): rows (and validation.json), then
    the summary last."""
    spec = manifest.spec
    with timer.stage("pop_rows"):
        rows = outputs.rows_from_result(selection, result)
        outputs.write_rows(spec.output.path, rows)
    timings = timer.totals()
    summary = outputs.build_summary(manifest, selection, result, rows, num_rollouts, timings, resources)
    summary.update(stages)
    if checked is not None:
        outputs.write_validation(spec.output.path, checked.document())
        summary["metrics"]["lds"] = checked.lds
        summary["validation"] = checked.summary()
    outputs.write_summary(spec.output.path, summary)
    log.info("wrote %d rows to %s", len(rows), outputs.rows_path(spec.output.path))
    return summary
