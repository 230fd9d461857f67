"""A multi-step trace (spec.training): per step generate -> reward -> trace -> policy update -> next step.

Each step is exactly today's single-step trace on the current weights, written as a complete run in
``<output>/step-<N>/`` (rows.parquet and summary.json, so report and compare read a step as they read
any run); the top-level ``summary.json``, written last, lists every step's timings (under the seed's
stage names), metrics and update figures. Between steps the weights change by ``update_policy``
(trace/update.py) unless ``skipOptimizerStep``; after a step (every ``checkpointEvery`` steps and after
the last) the weights and optimizer state are saved (checkpoint.py), and a relaunched attempt goes on
from the step after the newest checkpoint with the same numbers as a run that was never interrupted.

A step is pipeline.trace_step, the step of every run, with the policy update after its validation.
With several processes every rank holds the whole model: the trace runs on every rank as one process
runs it (trace/ranks.py), and the update is data parallel over the same ranks (each takes a contiguous
share of every mini-batch; gradients are summed with all-reduce before clipping, so the ranks stay
identical).
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from influence_trace.api.contract import GPUOutOfMemory
from influence_trace.api.progress import REPORTER
from influence_trace.api.spec import InfluenceTrace, TrainingSpec
from influence_trace.io import model_io, outputs
from influence_trace.planning.options import WorkerOptions
from influence_trace.run import checkpoint
from influence_trace.run.partition import contiguous_shares
from influence_trace.run.pipeline import Session, check_inputs, step_inputs, trace_step
from influence_trace.run.ranks import gather_resources
from influence_trace.run.resources import resources_used
from influence_trace.run.resume import Resume
from influence_trace.trace.ledger import MemoryLedger
from influence_trace.trace.selection import Selection
from influence_trace.trace.timing import StageTimer
from influence_trace.trace.update import STAGE, PolicyOptimizer, update_policy

log = logging.getLogger("influence_trace.run")
FAIL_ENV = "INFLUENCE_TRACE_TEST_FAIL_STEP"  # tests only: fail at the start of this step, as an OOM would
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


@dataclass(kw_only=True)
class Loop(Session):
    """What every step shares beyond a run's session: the manifest, the optimizer, the records."""

    manifest: InfluenceTrace
    optimizer: PolicyOptimizer
    recipe: dict[str, Any]
    records: list[dict[str, Any]] = field(default_factory=list)

    @property
    def training(self) -> TrainingSpec:
        return self.manifest.spec.training or TrainingSpec()


def _all_reduce(tensors: list[torch.Tensor]) -> None:
    for t in tensors:
        dist.all_reduce(t, op=dist.ReduceOp.SUM)


def _share_of(loop: Loop, selection: Selection):
    """This rank's contiguous share of a mini-batch, balanced by sequence tokens (None: one process)."""
    group = loop.group
    if group is None:
        return None
    responses = selection.responses

    def share(batch: list[int]) -> list[int]:
        weights = [len(responses[i].prompt_ids) + responses[i].num_tokens for i in batch]
        part = contiguous_shares(weights, [responses[i].num_tokens for i in batch], group.world)
        mine = part[group.rank]
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
    """One whole step (pipeline.trace_step, then the update); rank 0 writes step-<N>/ and records it."""
    if os.environ.get(FAIL_ENV) == str(step):
        raise GPUOutOfMemory(f"injected failure ({FAIL_ENV}) at the start of step {step}", "logprob_backward")
    m = step_manifest(loop.manifest, step)
    timer = StepTimer(loop.timer)
    log.info("training step %d of %d", step, loop.training.steps)
    REPORTER.training = (step, loop.training.steps)  # progress lines carry the step (status Step column)
    rollouts_path = step_inputs(loop, m.spec)
    weights = None if step == 1 else {"step": step, "trajectory": loop.recipe}
    resume = Resume(m.spec, loop.options, loop.timer, loop.ledger, weights)

    def update(selection: Selection) -> dict[str, Any]:
        return {"step": step, "update": _update(loop, m, selection)}

    summary = trace_step(loop, m, rollouts_path, resume, timer, after=update)
    if summary:
        loop.records.append(step_record(step, summary))


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
    loop.wait()


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
    loop = Loop(options=options, timer=timer, ledger=ledger, group=group, model=model, manifest=manifest,
                optimizer=PolicyOptimizer(model, training.optimizer), recipe=checkpoint.trajectory(spec))
    loop.open_waiting(spec)
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
