"""``influence-trace estimate MANIFEST... [--pools FILE] [--history FILE] [--json]``: estimate and pool.

``--history`` takes a history the operator recorded (its ConfigMap's ``history.json``): the estimate
and the pool are then the learned ones (planning/history.py), as the operator would choose them.

Several manifests are estimated one after another: the tables each under a ``== FILE ==`` line, the
JSON as a list of answers each with its ``manifest``; the exit code is the highest of theirs.
Exit codes: 0 a pool fits; 3 no allowed pool fits (the reason names a factor or maxHessianDim that
would); 65 the manifest is invalid or gives nothing to estimate from (the message names the field);
78 the pool table or the history is invalid (the message names the file and field). No torch is imported.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from influence_trace.api.spec import InfluenceTraceSpec, ManifestError, load_manifests
from influence_trace.api.units import gb
from influence_trace.planning.capture_plan import PoolCapture, pool_capture
from influence_trace.planning.duration import Duration, predict, readable
from influence_trace.planning.history import History, HistoryError, Learned, load_history, place_with_history
from influence_trace.planning.memory_model import Estimate, ShapesError
from influence_trace.planning.options import DEFAULT_CAPTURE_TOKENS
from influence_trace.planning.placement import (
    DEFAULT_HEADROOM,
    DEFAULT_POOLS,
    Placement,
    PoolsError,
    PoolTable,
    load_pools,
)
from influence_trace.planning.workload import WorkloadError

EXIT_FITS = 0
EXIT_NO_POOL = 3
EXIT_INVALID_MANIFEST = 65
EXIT_INVALID_POOLS = 78


def to_json(est: Estimate, placement: Placement, learned: Learned | None = None,
            duration: Duration | None = None, capture: PoolCapture | None = None) -> dict[str, Any]:
    """The JSON answer: pool, reason, bytes, breakdowns, stages, modules, duration and assumptions."""
    learned = learned or Learned(est, placement.headroom, "model", "")
    return {
        "capture": None if capture is None else {
            "pool": capture.pool, "checkpointedLayers": capture.checkpointed, "layers": capture.layers,
            "batchBytes": capture.batch_bytes, "roomBytes": capture.room,
            "promptStoreBytes": capture.store_bytes},
        "seconds": duration.seconds if duration else None,
        "stageSeconds": duration.stages if duration else {},
        "pool": placement.pool.name if placement.pool else None,
        "reason": placement.reason,
        "source": learned.source,
        "learned": learned.reason,
        "modelGpuBytes": est.gpu_bytes,
        "gpuBytes": learned.estimate.gpu_bytes,
        "hostBytes": est.host_bytes,
        "headroom": placement.headroom,
        "breakdown": {"gpu": est.gpu_breakdown, "host": est.host_breakdown, "stages": est.stages},
        "largestModule": est.largest_module,
        "tokens": est.workload.response_tokens,
        "tokensPerGpu": est.tokens_per_gpu,
        "responses": est.workload.responses,
        "pools": [{"name": f.pool, "fits": f.fits, "why": f.why} for f in placement.fits],
        "modules": [
            {"name": m.name, "kIn": m.k_in, "kOut": m.k_out, "D": m.dim, "hessianBytes": m.hessian_bytes}
            for m in est.modules
        ],
        "assumptions": est.assumptions,
    }


def _gb(n: int) -> str:
    return f"{gb(n, 2):>13}"


def to_table(est: Estimate, placement: Placement, learned: Learned | None = None,
             duration: Duration | None = None, capture: PoolCapture | None = None) -> str:
    """A readable summary: the pool, the two peaks with their parts, and per-suffix module sizes."""
    lines = [f"pool: {placement.pool.name if placement.pool else 'none'}", f"reason: {placement.reason}"]
    if learned is not None and learned.reason:
        lines += [f"source: {learned.source}", f"learned: {learned.reason}"]
    if duration is not None and placement.pool is not None:
        parts = ", ".join(f"{s} {readable(v)}" for s, v in duration.stages.items())
        lines.append(f"time: about {readable(duration.seconds)} on {placement.pool.name} ({parts})"
                     + (f"; {duration.note}" if duration.note else ""))
    lines.append("")
    lines += _gpu_lines(est)
    if capture is not None:
        lines.append(f"  capture on {capture.pool}: {capture.checkpointed} of {capture.layers} decoder "
                     f"layers checkpointed, batch {gb(capture.batch_bytes)}, every prompt's keys and values "
                     f"{gb(capture.store_bytes) if capture.store_bytes else 'not kept (no room)'} "
                     f"(room {gb(capture.room)}; the stage above assumes every layer checkpointed)")
    lines.append(f"host per pod    {_gb(est.host_bytes)}   (the sum of its parts)")
    lines += [f"  {k:<16}{_gb(v)}" for k, v in est.host_breakdown.items()]
    lines += ["", f"modules: {len(est.modules)} (largest: {est.largest_module})",
              f"  {'suffix':<18}{'kIn':>7}{'kOut':>7}{'D':>10}{'Hessian':>14}"]
    seen: set[str] = set()
    for m in est.modules:
        suffix = m.name.split(".", 3)[-1]
        if suffix not in seen:
            seen.add(suffix)
            lines.append(f"  {suffix:<18}{m.k_in:>7}{m.k_out:>7}{m.dim:>10}{_gb(m.hessian_bytes):>14}")
    lines += ["", "pools:"] + [f"  {f.pool:<8} {f.why}" for f in placement.fits]
    lines += ["", "assumptions:"] + [f"  - {a}" for a in est.assumptions]
    return "\n".join(lines)


def _gpu_lines(est: Estimate) -> list[str]:
    """The GPU peak as what it is: the largest stage plus what stays outside the allocator. The
    stages run one after another, so they are shown apart and never add up; the parts below them
    are each held during the stages that use them."""
    outside = est.gpu_bytes - max(est.stages.values())
    lines = [f"GPU per process {_gb(est.gpu_bytes)}   = peak stage {est.peak_stage} + "
             f"{gb(outside)} outside the allocator (CUDA context)",
             "  stages (one at a time; the largest is the peak):"]
    for k, v in est.stages.items():
        lines.append(f"    {k:<18}{_gb(v)}{'   <- peak' if k == est.peak_stage else ''}")
    lines.append("  parts (each held during the stages that use it; not a sum):")
    lines += [f"    {k:<18}{_gb(v)}" for k, v in est.gpu_breakdown.items()]
    return lines


def run(manifest: str, pools_file: str | None, as_json: bool,
        history_file: str | None = None) -> list[tuple[str, int, str]]:
    """(label, exit code, text to print) per trace of the file (a file may hold several documents,
    labelled ``FILE#N``); errors come back as text with their exit code."""
    try:
        table = load_pools(pools_file) if pools_file else None
        history = load_history(history_file) if history_file else None
    except (PoolsError, HistoryError) as err:
        return [(manifest, EXIT_INVALID_POOLS, str(err))]
    try:
        traces = load_manifests(manifest)
    except ManifestError as err:
        return [(manifest, EXIT_INVALID_MANIFEST, str(err))]
    labels = [manifest] if len(traces) == 1 else [f"{manifest}#{i}" for i in range(1, len(traces) + 1)]
    return [(label, *_answer(label, trace.spec, table, history, as_json))
            for label, trace in zip(labels, traces, strict=True)]


def _answer(label: str, spec: InfluenceTraceSpec, table: PoolTable | None, history: History | None,
            as_json: bool) -> tuple[int, str]:
    try:
        pools = table.pools if table else DEFAULT_POOLS
        headroom = table.headroom if table and table.headroom is not None else DEFAULT_HEADROOM
        est, learned, placement = place_with_history(spec, history, pools, headroom)
        duration = predict(spec, est, placement.pool, history) if placement.pool else None
        capture = _capture(spec, est, placement)
    except (ManifestError, ShapesError, WorkloadError, PoolsError, ValueError) as err:
        return EXIT_INVALID_MANIFEST, str(err) if str(err).startswith(label) else f"{label}: {err}"
    text = (json.dumps(to_json(est, placement, learned, duration, capture), indent=2) if as_json
            else to_table(est, placement, learned, duration, capture))
    return (EXIT_FITS if placement.pool else EXIT_NO_POOL), text


def _print(code: int, text: str) -> None:
    print(text, file=sys.stdout if code in (EXIT_FITS, EXIT_NO_POOL) else sys.stderr)


def main(args: argparse.Namespace) -> int:
    history = getattr(args, "history", None)
    answers = [a for manifest in args.manifests for a in run(manifest, args.pools, args.json, history)]
    if len(answers) == 1:
        _, code, text = answers[0]
        _print(code, text)
        return code
    found = []
    for label, code, text in answers:
        if code not in (EXIT_FITS, EXIT_NO_POOL):
            _print(code, text)
        elif args.json:
            found.append({"manifest": label, **json.loads(text)})
        else:
            _print(code, f"== {label} ==\n{text}\n")
    if args.json:
        print(json.dumps(found, indent=2))
    return max(code for _, code, _ in answers)


def _capture(spec: InfluenceTraceSpec, est: Estimate, placement: Placement) -> PoolCapture | None:
    """The chosen pool's capture: how many decoder layers the worker will checkpoint there."""
    if placement.pool is None:
        return None
    return pool_capture(est, est.shapes, spec.model.dtype, placement.pool.name,
                        placement.pool.gpu_memory_bytes, placement.headroom, DEFAULT_CAPTURE_TOKENS)
