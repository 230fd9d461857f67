"""A multi-step trace (spec.training): per step generate -> reward -> trace -> policy update -> next step.

Each step is exactly today's single-step trace on the current weights, written as a complete run in
``<output>/step-<N>/`` (rows.parquet and summary.json, so report and compare read a step as they read
any run); the top-level ``summary.json``, written last, lists every step's timings (under the seed's
stage names), metrics and update figures. Between steps the weights change by ``update_policy``
(trace/update.py) unless ``skipOptimizerStep``; after a step (every ``checkpointEvery`` steps and after
the last) the weights and optimizer state are saved (checkpoint.py), and a relaunched attempt goes on
from the step after the newest checkpoint with the same numbers as a run that was never interrupted.

With several processes every rank holds the whole model: the trace runs as run_trace_parallel does it,
and the update is data parallel over the same ranks (each takes a contiguous share of every
mini-batch; gradients are summed with all-reduce before clipping, so the ranks stay identical).
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from influence_trace.api.contract import GPUOutOfMemory
from influence_trace.api.progress import REPORTER
from influence_trace.api.spec import InfluenceTrace, TrainingSpec
from influence_trace.io import model_io, outputs
from influence_trace.io.rollouts import read_rows, to_responses
from influence_trace.planning.options import WorkerOptions
from influence_trace.run import checkpoint
from influence_trace.run.parallel_trace import gather_resources, run_trace_parallel
from influence_trace.run.partition import contiguous_shares
from influence_trace.run.pipeline import check_inputs, run_pipeline, run_validation, select, write_outputs
from influence_trace.run.resources import resources_used
from influence_trace.run.resume import Resume
from influence_trace.trace.engine import run_trace
from influence_trace.trace.ledger import MemoryLedger
from influence_trace.trace.selection import Selection
from influence_trace.trace.timing import StageTimer
from influence_trace.trace.update import STAGE, PolicyOptimizer, update_policy

log = logging.getLogger("influence_trace.run")
FAIL_ENV = "INFLUENCE_TRACE_TEST_FAIL_STEP"  # tests only: fail at the start of this step, as an OOM would
GENERATION_WAIT = timedelta(hours=24)  # as launch.GENERATION_WAIT: sampling outlasts any collective
STEP_STAGES = ("gen", "logprob_backward", "grad_staging", "hessian_solve", "token_scoring", "pop_rows",
               STAGE, "step_total")


def step_dir(output: str | Path, step: int) -> Path:
    return Path(output) / f"step-{step}"


def step_manifest(manifest: InfluenceTrace, step: int) -> InfluenceTrace:
    """The single-step manifest of one step: its own output folder and its own rollouts file.

    Per-step files come from rollouts.stepPaths; with generation and several steps each step's
    rollouts are written into its folder (rollouts.path would be overwritten by every step)."""
    spec = manifest.spec
    rollouts = spec.rollouts
    steps = spec.training.steps if spec.training else 1
    if rollouts.step_paths is not None:
        rollouts = rollouts.model_copy(update={"path": rollouts.step_paths[step - 1], "step_paths": None})
    elif rollouts.generate is not None and steps > 1:
        rollouts = rollouts.model_copy(update={"path": None})
    output = spec.output.model_copy(update={"path": str(step_dir(spec.output.path, step))})
    step_spec = spec.model_copy(update={"rollouts": rollouts, "output": output})
    return manifest.model_copy(update={"spec": step_spec})


@dataclass
class Loop:
    """What every step shares: the model, its optimizer, and this process's place in the group."""

    manifest: InfluenceTrace
    options: WorkerOptions
    timer: StageTimer
    ledger: MemoryLedger
    group: Any  # distributed.RankGroup or None
    model: Any
    optimizer: PolicyOptimizer
    recipe: dict[str, Any]
    tokenizer: Any = None
    waiting: Any = None  # a long-timeout group the other ranks wait in while rank 0 generates
    records: list[dict[str, Any]] = field(default_factory=list)

    @property
    def training(self) -> TrainingSpec:
        return self.manifest.spec.training or TrainingSpec()

    @property
    def writer(self) -> bool:
        return self.group is None or self.group.is_writer


def _barrier(loop: Loop, group: Any = None) -> None:
    if loop.group is not None:
        dist.barrier(group=group)


def _tokenizer(loop: Loop) -> Any:
    if loop.tokenizer is None:
        loop.tokenizer = model_io.load_tokenizer(loop.manifest.spec.model)
    return loop.tokenizer


def _rollouts(loop: Loop, m: InfluenceTrace, step: int, resume: Resume) -> None:
    """Stage gen on rank 0 with the current weights (every other rank waits), when the step generates."""
    if m.spec.rollouts.generate is None:
        return
    if loop.writer:
        resume.rollouts(loop.model, _tokenizer(loop))
    _barrier(loop, loop.waiting)


def _selection(loop: Loop, m: InfluenceTrace, rollouts_path: Path) -> tuple[Selection, int]:
    with loop.timer.stage("load_rollouts"):
        raw = read_rows(rollouts_path)
        tokenizer = _tokenizer(loop) if any(r.needs_tokenizer for r in raw) else None
        responses = to_responses(raw, tokenizer, model_io.vocab_size(loop.model))
    with loop.timer.stage("select_groups"):
        return select(responses, m.spec), len(responses)


def _trace(loop: Loop, m: InfluenceTrace, selection: Selection, rollouts_path: Path, resume: Resume):
    spec, options = m.spec, loop.options
    if loop.group is None:
        hooks = resume.trace_hooks(rollouts_path, selection)
        return run_trace(loop.model, selection, spec.trace, options, loop.ledger, loop.timer, **hooks)
    group = loop.group

    def share_hooks(share: Selection) -> dict[str, Any]:
        return resume.trace_hooks(rollouts_path, share, (group.rank, group.world))

    return run_trace_parallel(loop.model, selection, spec.trace, options, loop.ledger, loop.timer, group,
                              share_hooks)


def _all_reduce(tensors: list[torch.Tensor]) -> None:
    for t in tensors:
        dist.all_reduce(t, op=dist.ReduceOp.SUM)


def _share_of(loop: Loop, selection: Selection):
    """This rank's contiguous share of a mini-batch, balanced by sequence tokens (None: one process)."""
    if loop.group is None:
        return None
    responses = selection.responses

    def share(batch: list[int]) -> list[int]:
        weights = [len(responses[i].prompt_ids) + responses[i].num_tokens for i in batch]
        part = contiguous_shares(weights, [responses[i].num_tokens for i in batch], loop.group.world)
        mine = part[loop.group.rank]
        return batch[mine.first : mine.last]

    return share


def _update(loop: Loop, m: InfluenceTrace, selection: Selection) -> dict[str, Any]:
    if loop.training.skip_optimizer_step:
        return {"optimizer_steps": 0, "skipped": True}
    for name, nbytes in loop.optimizer.nbytes().items():
        loop.ledger.allocate(name, nbytes, STAGE)
    with loop.timer.stage(STAGE):
        reduce = _all_reduce if loop.group is not None else None
        done = update_policy(loop.model, selection, loop.training, m.spec.trace.loss_aggregation,
                             loop.optimizer, loop.options.device, loop.options.capture_tokens, reduce,
                             _share_of(loop, selection))
    loop.ledger.free("gradients")  # set to None after every optimizer step; the moments stay
    return done


def _step_timings(before: dict[str, float], after: dict[str, float], wall: float) -> dict[str, float]:
    """This step's seconds per stage: the seed's stage names always, any other stage it spent time in."""
    delta = {k: after.get(k, 0.0) - before.get(k, 0.0) for k in after}
    out = {k: round(delta.get(k, 0.0), 6) for k in STEP_STAGES}
    out.update({k: round(v, 6) for k, v in delta.items() if k not in out and v > 0})
    out["step_total"] = round(wall, 6)
    return out


def _resources(loop: Loop) -> dict[str, Any] | None:
    mine = resources_used(loop.options, loop.ledger)
    return mine if loop.group is None else gather_resources(loop.group, mine)


class StepTimer:
    """The run's timer seen from one step: stages go to the run's timer, totals are this step's."""

    def __init__(self, timer: StageTimer) -> None:
        self.timer, self.began, self.before = timer, time.perf_counter(), dict(timer.seconds)

    def stage(self, name: str):
        return self.timer.stage(name)

    def totals(self) -> dict[str, float]:
        return _step_timings(self.before, self.timer.seconds, time.perf_counter() - self.began)


def run_step(loop: Loop, step: int) -> None:
    """One whole step; rank 0 writes step-<N>/ and records the step."""
    if os.environ.get(FAIL_ENV) == str(step):
        raise GPUOutOfMemory(f"injected failure ({FAIL_ENV}) at the start of step {step}", "logprob_backward")
    m = step_manifest(loop.manifest, step)
    timer = StepTimer(loop.timer)
    log.info("training step %d of %d", step, loop.training.steps)
    REPORTER.training = (step, loop.training.steps)  # progress lines carry the step (status Step column)
    rollouts_path = check_inputs(m.spec) if loop.writer else None
    if loop.group is not None:
        rollouts_path = _broadcast_path(rollouts_path)
    assert rollouts_path is not None  # the writer checked it; other ranks received it
    weights = None if step == 1 else {"step": step, "trajectory": loop.recipe}
    resume = Resume(m.spec, loop.options, loop.timer, loop.ledger, weights)
    _rollouts(loop, m, step, resume)
    selection, read = _selection(loop, m, rollouts_path)
    result = _trace(loop, m, selection, rollouts_path, resume)
    checked = _validate(loop, m, selection, result, timer)
    update = _update(loop, m, selection)
    resources = _resources(loop)
    if loop.writer:
        assert resources is not None  # the writer gathers every rank's
        extra = {**resume.summary(), "step": step, "update": update}
        summary = write_outputs(m, selection, result, read, timer, resources, extra, checked)
        loop.records.append(step_record(step, summary))


def _validate(loop: Loop, m: InfluenceTrace, selection: Selection, result: Any, timer: StepTimer):
    """Stage validate on the writer, before the update changes the weights (the others wait without the
    collectives' timeout, as they do for generation)."""
    if m.spec.validation is None:
        return None
    checked = None
    if loop.writer:
        checked = run_validation(m.spec, loop.model, selection, result, loop.options, timer)
    _barrier(loop, loop.waiting)
    return checked


def _broadcast_path(path: Path | None) -> Path:
    """Rank 0's rollouts path (it alone checked the inputs and made the step's folder) on every rank."""
    box = [str(path) if path is not None else None]
    dist.broadcast_object_list(box, src=0)
    assert box[0] is not None, "rank 0 sent no rollouts path"
    return Path(box[0])


def step_record(step: int, summary: dict[str, Any]) -> dict[str, Any]:
    """A step's line in the top-level summary."""
    keys = ("rows_emitted", "timings", "metrics", "update", "groups", "tokens")
    return {"step": step, "path": f"step-{step}", **{k: summary.get(k) for k in keys}}


def _restore(loop: Loop) -> int:
    """Load the newest matching checkpoint; return the last finished step (0: start at step 1)."""
    output = Path(loop.manifest.spec.output.path)
    done, folder = checkpoint.latest(output, checkpoint.fingerprint(loop.recipe), loop.training.steps + 1)
    if folder is None:
        return 0
    with loop.timer.stage("load_checkpoint"):
        checkpoint.load(folder, loop.model, loop.optimizer)
    for step in range(1, done + 1):
        loop.records.append(step_record(step, outputs.load_summary(step_dir(output, step))))
    log.info("resuming after step %d from %s", done, folder)
    return done


def _save(loop: Loop, step: int) -> None:
    training = loop.training
    if step % training.checkpoint_every and step != training.steps:
        return
    if loop.writer:
        with loop.timer.stage("save_checkpoint"):
            checkpoint.save(Path(loop.manifest.spec.output.path), step, loop.model, loop.optimizer,
                            checkpoint.fingerprint(loop.recipe))
    _barrier(loop)


def is_multistep(manifest: InfluenceTrace) -> bool:
    return manifest.spec.training is not None or manifest.spec.rollouts.step_paths is not None


def run_manifest(manifest: InfluenceTrace, options: WorkerOptions, timer: StageTimer,
                 group: Any = None) -> dict[str, Any]:
    """The worker's one entry: the training loop for spec.training (or stepPaths), else one trace."""
    if not is_multistep(manifest):
        return run_pipeline(manifest, options, timer=timer, group=group)
    return run_training(manifest, options, timer, MemoryLedger(options.gpu_budget_bytes), group)


def run_training(manifest: InfluenceTrace, options: WorkerOptions, timer: StageTimer, ledger: MemoryLedger,
                 group: Any = None) -> dict[str, Any]:
    """Every step from the one after the newest checkpoint; return the top-level summary (rank 0)."""
    spec = manifest.spec
    if group is None or group.is_writer:
        check_inputs(step_manifest(manifest, 1).spec)
        outputs.summary_path(spec.output.path).unlink(missing_ok=True)  # finished only when rewritten
    with timer.stage("load_model"):
        model = model_io.load_model(spec.model, options.device)
    training = spec.training or TrainingSpec()
    loop = Loop(manifest, options, timer, ledger, group, model, PolicyOptimizer(model, training.optimizer),
                checkpoint.trajectory(spec))
    if group is not None and (spec.rollouts.generate is not None or spec.validation is not None):
        loop.waiting = dist.new_group(backend="gloo", timeout=GENERATION_WAIT)
    first = _restore(loop) + 1
    for step in range(first, training.steps + 1):
        run_step(loop, step)
        _save(loop, step)
    resources = _resources(loop)
    if not loop.writer or resources is None:  # only the writer gathers every rank's
        return {}
    return write_top_summary(loop, first - 1, resources)


def write_top_summary(loop: Loop, resumed_after: int, resources: dict[str, Any]) -> dict[str, Any]:
    """The top-level summary.json: the configuration, every step's record, and the run's totals."""
    spec = loop.manifest.spec
    last = loop.records[-1]
    summary = {
        "name": loop.manifest.metadata.name,
        "config": spec.model_dump(mode="json", by_alias=True),
        "rows_emitted": last["rows_emitted"],
        "timings": {k: round(float(v), 6) for k, v in loop.timer.totals().items()},
        "resources": resources,
        "metrics": last["metrics"],
        "training": {"steps": loop.training.steps, "completed": len(loop.records),
                     "resumed_after_step": resumed_after,
                     "optimizer_steps": sum(r["update"].get("optimizer_steps", 0) for r in loop.records)},
        "steps": loop.records,
    }
    outputs.write_summary(spec.output.path, summary)
    return summary
