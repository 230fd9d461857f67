"""One trace from a validated manifest to its outputs: inputs, model, selection, trace, rows, summary.

Cheap checks come first (files exist, the output directory can be made, every rollouts row is well
formed) so a bad input fails in seconds with InvalidInput instead of after the model has loaded.
"""

from __future__ import annotations

import logging
import resource
import sys
from pathlib import Path
from typing import Any

import torch

from influence_trace.contract import InvalidInput
from influence_trace.spec import InfluenceTrace, InfluenceTraceSpec
from influence_trace.worker import model_io, outputs
from influence_trace.worker.ledger import MemoryLedger
from influence_trace.worker.options import WorkerOptions
from influence_trace.worker.resume import Resume, rollouts_destination
from influence_trace.worker.rollouts import read_rows, rollouts_format, to_responses
from influence_trace.worker.selection import Selection, select_groups
from influence_trace.worker.timing import StageTimer

log = logging.getLogger("influence_trace.worker")
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


def peak_host_bytes() -> int:
    """Peak resident set size of this process.

    Linux's VmHWM is this process's own high-water mark; ru_maxrss is kept across exec, so a worker
    started by a large parent (pytest, a launcher) would report the parent's peak. ru_maxrss is the
    fallback elsewhere (KiB on Linux, bytes on macOS).
    """
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024)


def peak_gpu_bytes(device: str) -> int:
    if torch.device(device).type != "cuda" or not torch.cuda.is_available():
        return 0
    return int(torch.cuda.max_memory_allocated(torch.device(device)))


def device_name(device: str) -> str:
    return torch.cuda.get_device_name(torch.device(device)) if torch.device(device).type == "cuda" else "cpu"


def resources_used(options: WorkerOptions, ledger: MemoryLedger) -> dict[str, Any]:
    import transformers

    return {
        "peak_gpu_bytes": peak_gpu_bytes(options.device),
        "peak_host_bytes": peak_host_bytes(),
        "ledger_peak_bytes": ledger.peak_bytes,
        "ledger_peak_breakdown": dict(ledger.peak_breakdown),
        "gpu_budget_bytes": options.gpu_budget_bytes,
        "device": options.device,
        "device_name": device_name(options.device),
        "torch_version": torch.__version__,
        "transformers_version": transformers.__version__,
    }


def run_pipeline(
    manifest: InfluenceTrace,
    options: WorkerOptions,
    timer: StageTimer | None = None,
    ledger: MemoryLedger | None = None,
    group: Any = None,
) -> dict[str, Any]:
    """Run the whole trace and write its outputs; return the summary (as written to summary.json).

    ``group`` (a distributed.Group) makes this one rank of a multi-process trace: every rank prepares
    the same selection, and rank 0 alone writes the outputs (the other ranks return ``{}``).
    """
    from influence_trace.worker.trace import run_trace

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
    if group is not None:
        from influence_trace.worker.parallel_trace import trace_and_write

        def hooks(share: Selection) -> dict[str, Any]:
            return resume.trace_hooks(rollouts_path, share, (group.rank, group.world))

        return trace_and_write(manifest, selection, len(responses), model, options, ledger, timer, group,
                               hooks, resume.summary)
    hooks = resume.trace_hooks(rollouts_path, selection)
    result = run_trace(model, selection, spec.trace, options, ledger, timer, **hooks)
    with timer.stage("pop_rows"):
        rows = outputs.rows_from_result(selection, result)
        outputs.write_rows(spec.output.path, rows)
    summary = outputs.build_summary(
        manifest, selection, result, rows, len(responses), timer.totals(), resources_used(options, ledger)
    )
    summary.update(resume.summary())
    outputs.write_summary(spec.output.path, summary)
    log.info("wrote %d rows to %s", len(rows), outputs.rows_path(spec.output.path))
    return summary
