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

from influence_trace.api.spec import ManifestError, load_manifest
from influence_trace.planning.duration import Duration, predict, readable
from influence_trace.planning.history import HistoryError, Learned, load_history, place_with_history
from influence_trace.planning.memory_model import Estimate, ShapesError
from influence_trace.planning.placement import (
    DEFAULT_HEADROOM,
    DEFAULT_POOLS,
    Placement,
    PoolsError,
    load_pools,
)
from influence_trace.planning.workload import WorkloadError

EXIT_FITS = 0
EXIT_NO_POOL = 3
EXIT_INVALID_MANIFEST = 65
EXIT_INVALID_POOLS = 78


def to_json(est: Estimate, placement: Placement, learned: Learned | None = None,
            duration: Duration | None = None) -> dict[str, Any]:
    """The JSON answer: pool, reason, bytes, breakdowns, stages, modules, duration and assumptions."""
    learned = learned or Learned(est, placement.headroom, "model", "")
    return {
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
    return f"{n / 1e9:10.2f} GB"


def to_table(est: Estimate, placement: Placement, learned: Learned | None = None,
             duration: Duration | None = None) -> str:
    """A readable summary: the pool, the two peaks with their parts, and per-suffix module sizes."""
    lines = [f"pool: {placement.pool.name if placement.pool else 'none'}", f"reason: {placement.reason}"]
    if learned is not None and learned.reason:
        lines += [f"source: {learned.source}", f"learned: {learned.reason}"]
    if duration is not None:
        parts = ", ".join(f"{s} {readable(v)}" for s, v in duration.stages.items())
        lines.append(f"time: about {readable(duration.seconds)} on {placement.pool.name} ({parts})"
                     + (f"; {duration.note}" if duration.note else ""))
    lines.append("")
    lines.append(f"GPU per process {_gb(est.gpu_bytes)}   (peak stage: {est.peak_stage})")
    lines += [f"  {k:<16}{_gb(v)}" for k, v in est.gpu_breakdown.items()]
    lines += [f"  stage {k:<10}{_gb(v)}" for k, v in est.stages.items()]
    lines.append(f"host per pod    {_gb(est.host_bytes)}")
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


def run(manifest: str, pools_file: str | None, as_json: bool,
        history_file: str | None = None) -> tuple[int, str]:
    """(exit code, text to print); errors come back as text with their exit code."""
    try:
        table = load_pools(pools_file) if pools_file else None
        history = load_history(history_file) if history_file else None
    except (PoolsError, HistoryError) as err:
        return EXIT_INVALID_POOLS, str(err)
    try:
        spec = load_manifest(manifest).spec
        pools = table.pools if table else DEFAULT_POOLS
        headroom = table.headroom if table and table.headroom is not None else DEFAULT_HEADROOM
        est, learned, placement = place_with_history(spec, history, pools, headroom)
        duration = predict(spec, est, placement.pool, history) if placement.pool else None
    except (ManifestError, ShapesError, WorkloadError) as err:
        return EXIT_INVALID_MANIFEST, f"{manifest}: {err}" if not str(err).startswith(manifest) else str(err)
    except (PoolsError, ValueError) as err:
        return EXIT_INVALID_MANIFEST, f"{manifest}: {err}"
    text = (json.dumps(to_json(est, placement, learned, duration), indent=2) if as_json
            else to_table(est, placement, learned, duration))
    return (EXIT_FITS if placement.pool else EXIT_NO_POOL), text


def _print(code: int, text: str) -> None:
    print(text, file=sys.stdout if code in (EXIT_FITS, EXIT_NO_POOL) else sys.stderr)


def main(args: argparse.Namespace) -> int:
    manifests: list[str] = args.manifests
    history = getattr(args, "history", None)
    if len(manifests) == 1:
        code, text = run(manifests[0], args.pools, args.json, history)
        _print(code, text)
        return code
    codes, answers = [], []
    for manifest in manifests:
        code, text = run(manifest, args.pools, args.json, history)
        codes.append(code)
        if code not in (EXIT_FITS, EXIT_NO_POOL):
            _print(code, text)
        elif args.json:
            answers.append({"manifest": manifest, **json.loads(text)})
        else:
            _print(code, f"== {manifest} ==\n{text}\n")
    if args.json:
        print(json.dumps(answers, indent=2))
    return max(codes)
