"""One trace step, from a rollouts file to its outputs: every run's step, alone or in a training loop.

``run_pipeline`` runs one step on a manifest; the training loop (training.py) runs one per training
step with the weights it updates. Either way a step reads, selects, traces (trace/engine.py, on one
process or on every rank), validates, and writes rows and summary (rank 0 alone with several ranks).

Cheap checks come first (files exist, the output directory can be made, every rollouts row is well
formed) so a bad input fails in seconds with InvalidInput instead of after the model has loaded.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import torch.distributed as dist

from influence_trace.api.contract import InvalidInput
from influence_trace.api.spec import InfluenceTrace, InfluenceTraceSpec
from influence_trace.io import model_io, outputs
from influence_trace.io.rollouts import read_rows, rollouts_format, to_responses
from influence_trace.planning.options import WorkerOptions
from influence_trace.run.distributed import RankGroup
from influence_trace.run.ranks import ProcessRanks, gather_resources
from influence_trace.run.resources import resources_used
from influence_trace.run.resume import Resume, rollouts_destination
from influence_trace.trace.engine import run_trace
from influence_trace.trace.ledger import MemoryLedger
from influence_trace.trace.ranks import ONE_PROCESS, Ranks
from influence_trace.trace.records import TraceResult
from influence_trace.trace.selection import Selection, select_groups
from influence_trace.trace.timing import StageTimer, Timer
from influence_trace.trace.validation import STAGE as VALIDATE
from influence_trace.trace.validation import Validation, validate

log = logging.getLogger("influence_trace.run")
SETUP = "setup"
GENERATION_WAIT = timedelta(hours=24)  # the others' wait while rank 0 generates or validates


@dataclass(kw_only=True)
class Session:
    """What every step of one run shares: the knobs, timer and ledger, this process's place among the
    ranks (``group`` None: alone), the model and tokenizer once loaded, and ``waiting``: a gloo group
    without the collectives' timeout, for the others' wait while rank 0 generates or validates."""

    options: WorkerOptions
    timer: StageTimer
    ledger: MemoryLedger
    group: RankGroup | None = None
    model: Any = None
    tokenizer: Any = None
    waiting: Any = None

    @property
    def writer(self) -> bool:
        return self.group is None or self.group.is_writer

    @property
    def ranks(self) -> Ranks:
        return ONE_PROCESS if self.group is None else ProcessRanks(self.group, self.options)

    def open_waiting(self, spec: InfluenceTraceSpec) -> None:
        """Make ``waiting`` (every rank, in the same order) when rank 0 will work alone for long."""
        if self.group is not None and (spec.rollouts.generate is not None or spec.validation is not None):
            self.waiting = dist.new_group(backend="gloo", timeout=GENERATION_WAIT)

    def wait(self, group: Any = None) -> None:
        """Every rank meets here (nothing to do alone)."""
        if self.group is not None:
            dist.barrier(group=group)


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
    group: RankGroup | None = None,
) -> dict[str, Any]:
    """Run the whole trace and write its outputs; return the summary (as written to summary.json).

    ``group`` (a distributed.RankGroup) makes this one rank of a multi-process trace: every rank prepares
    the same selection, and rank 0 alone writes the outputs (the other ranks return ``{}``).
    """
    timer = timer or StageTimer()
    session = Session(options=options, timer=timer, ledger=ledger or MemoryLedger(options.gpu_budget_bytes),
                      group=group)
    session.open_waiting(manifest.spec)
    rollouts_path = step_inputs(session, manifest.spec)
    resume = Resume(manifest.spec, options, timer, session.ledger)
    return trace_step(session, manifest, rollouts_path, resume, timer)


def step_inputs(session: Session, spec: InfluenceTraceSpec) -> Path:
    """Rank 0 checks the inputs (and makes the output folder); every rank gets the rollouts path."""
    path = check_inputs(spec) if session.writer else None
    if session.group is None:
        assert path is not None
        return path
    box = [str(path) if path is not None else None]
    dist.broadcast_object_list(box, src=0)
    assert box[0] is not None, "rank 0 sent no rollouts path"
    return Path(box[0])


def trace_step(session: Session, manifest: InfluenceTrace, rollouts_path: Path, resume: Resume, timer: Timer,
               extra: dict[str, Any] | None = None,
               after: Callable[[Selection], dict[str, Any]] | None = None) -> dict[str, Any]:
    """One step: generate (rank 0), read, select, trace, validate (rank 0), ``after`` (the training
    loop's policy update, on every rank), then rows and summary; return the summary (``{}`` off rank 0).

    ``timer`` is the step's view of the session's timer (a training step times its own stages);
    ``extra`` and what ``after`` returns join the summary.
    """
    spec = manifest.spec
    _rollouts(session, spec, resume)
    selection, read = load_selection(session, spec, rollouts_path)
    ranks = session.ranks
    shard = None if session.group is None else (session.group.rank, session.group.world)
    hooks = resume.trace_hooks(rollouts_path, ranks.share(selection), shard)
    result = run_trace(session.model, selection, spec.trace, session.options, session.ledger, session.timer,
                       ranks=ranks, **hooks)
    checked = _validate(session, spec, selection, result, timer)
    more = {**(extra or {}), **(after(selection) if after is not None else {})}
    mine = resources_used(session.options, session.ledger)
    resources = mine if session.group is None else gather_resources(session.group, mine, timer)
    if result is None or resources is None:  # not rank 0: rank 0 writes the outputs
        return {}
    return write_outputs(manifest, selection, result, read, timer, resources, {**resume.summary(), **more},
                         checked)


def _rollouts(session: Session, spec: InfluenceTraceSpec, resume: Resume) -> None:
    """Stage gen on rank 0, with the session's model when it has one (every other rank waits)."""
    if spec.rollouts.generate is None:
        return
    if session.writer:
        model, tokenizer = resume.rollouts(session.model, session.tokenizer)
        session.model = session.model if session.model is not None else model
        session.tokenizer = session.tokenizer if session.tokenizer is not None else tokenizer
    session.wait(session.waiting)


def load_selection(session: Session, spec: InfluenceTraceSpec, rollouts_path: Path) -> tuple[Selection, int]:
    """The rollouts read, tokenized and checked against the model (loaded here on first use), and the
    selected groups; also how many rows were read."""
    timer = session.timer
    with timer.stage("load_rollouts"):
        raw = read_rows(rollouts_path)
        log.info("read %d rollouts rows from %s", len(raw), rollouts_path)
    needs_tokenizer = session.tokenizer is None and any(r.needs_tokenizer for r in raw)
    if session.model is None or needs_tokenizer:
        with timer.stage("load_model"):
            if session.model is None:
                session.model = model_io.load_model(spec.model, session.options.device)
            if needs_tokenizer:
                session.tokenizer = model_io.load_tokenizer(spec.model)
    with timer.stage("load_rollouts"):
        responses = to_responses(raw, session.tokenizer, model_io.vocab_size(session.model))
    with timer.stage("select_groups"):
        selection = select(responses, spec)
    log.info(
        "tracing %d groups (%d skipped without contrast), %d responses, %d response tokens",
        len(selection.groups), selection.skipped_groups, len(selection.responses), selection.num_tokens,
    )
    return selection, len(responses)


def _validate(session: Session, spec: InfluenceTraceSpec, selection: Selection, result: TraceResult | None,
              timer: Timer) -> Validation | None:
    """Stage validate on rank 0, which has every score; the others wait without the collectives'
    timeout (after the trace every rank holds the same weights)."""
    if spec.validation is None:
        return None
    checked = None
    if result is not None:
        checked = run_validation(spec, session.model, selection, result, session.options, timer)
    session.wait(session.waiting)
    return checked


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
