"""A manifest to its run: the training loop for spec.training (or rollouts.stepPaths), else one step.

Both are made of pipeline.trace_step; this module only chooses, so that neither imports the other.
"""

from __future__ import annotations

from typing import Any

from influence_trace.api.spec import InfluenceTrace
from influence_trace.planning.options import WorkerOptions
from influence_trace.run.distributed import RankGroup
from influence_trace.run.pipeline import run_pipeline
from influence_trace.run.training import run_training
from influence_trace.trace.ledger import MemoryLedger
from influence_trace.trace.timing import StageTimer


def is_multistep(manifest: InfluenceTrace) -> bool:
    return manifest.spec.training is not None or manifest.spec.rollouts.step_paths is not None


def run_manifest(manifest: InfluenceTrace, options: WorkerOptions, timer: StageTimer,
                 group: RankGroup | None = None) -> dict[str, Any]:
    """The worker's one entry: the training loop for a multi-step manifest, else one trace step."""
    if not is_multistep(manifest):
        return run_pipeline(manifest, options, timer=timer, group=group)
    return run_training(manifest, options, timer, MemoryLedger(options.gpu_budget_bytes), group)
