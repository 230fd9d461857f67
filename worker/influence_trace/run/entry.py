"""``influence-trace run``: the worker's process entry point and its failure contract.

Every run ends with a documented exit code (contract.EXIT_CODES) and a termination message: the
headline figures on success, ``{"reason", "stage", "message"}`` on failure. Out-of-memory errors are
mapped to their reasons so the operator can escalate to a larger GPU pool instead of retrying blindly.
"""

from __future__ import annotations

import argparse
import sys
import traceback
from typing import Any

from pydantic.alias_generators import to_camel

from influence_trace.api.contract import (
    EXIT_OK,
    InvalidInput,
    WorkerFailure,
    failure_message,
    write_termination_message,
)
from influence_trace.api.spec import InfluenceTrace, ManifestError, load_manifest
from influence_trace.run.process import (
    GroupFailure,
    as_failure,
    format_timings,
    log,
    select_device,
    setup_logging,
    synchronize_cuda,
)
from influence_trace.trace.timing import StageTimer


def choose_device(requested: str | None) -> str:
    import torch

    if requested:
        if requested.startswith("cuda") and not torch.cuda.is_available():
            raise InvalidInput(f"--device {requested}: CUDA is not available on this machine", "setup")
        return requested
    return "cuda" if torch.cuda.is_available() else "cpu"


def process_count(manifest: InfluenceTrace, nproc: int | None, device: str) -> int:
    """Processes on this node: --nproc, else one per GPU of resources.gpus on CUDA, else one."""
    if nproc is not None:
        wanted, source = nproc, f"--nproc {nproc}"
    elif device.startswith("cuda"):
        wanted, source = manifest.spec.resources.gpus, f"spec.resources.gpus: {manifest.spec.resources.gpus}"
    else:
        if manifest.spec.resources.gpus > 1:
            log.warning("spec.resources.gpus is %d, but this run is on the CPU: one process "
                        "(--nproc N runs N CPU processes)", manifest.spec.resources.gpus)
        return 1
    if wanted < 1:
        raise InvalidInput(f"{source}: expected a positive number of processes", "setup")
    if device.startswith("cuda") and wanted > 1:
        import torch

        if wanted > torch.cuda.device_count():
            raise InvalidInput(
                f"{source}: one process per GPU, but this machine has {torch.cuda.device_count()} GPUs; "
                "lower the count or run where the GPUs are", "setup")
    return wanted


def write_report(summary: dict[str, Any]) -> str:
    """report.html beside the outputs (as ``influence-trace report`` writes it); "" if that fails, since
    the outputs themselves are complete and the report can be made again."""
    from influence_trace.report.html import build_report

    try:
        return str(build_report(summary["config"]["output"]["path"]))
    except Exception as err:  # any failure here must not fail a finished trace
        log.warning("could not write report.html: %s: %s", type(err).__name__, err)
        return ""


def success_message(summary: dict[str, Any], report: str = "") -> dict[str, Any]:
    """The headline figures, named like the CRD's status.result."""
    resources = summary["resources"]
    training = summary.get("training")
    steps = {"steps": f"{training['completed']}/{training['steps']}"} if training else {}
    return {**steps, "report": report,
        "rowsEmitted": summary["rows_emitted"],
        "outputPath": summary["config"]["output"]["path"],
        "timings": {name: round(sec, 3) for name, sec in summary["timings"].items()},
        "peakGpuBytes": resources["peak_gpu_bytes"],
        "peakHostBytes": resources["peak_host_bytes"],
        "metrics": {to_camel(k): v for k, v in summary.get("metrics", {}).items() if v is not None},
    }


def execute(args: argparse.Namespace, timer: StageTimer) -> dict[str, Any]:
    from influence_trace.planning.options import WorkerOptions
    from influence_trace.run.dispatch import run_manifest
    from influence_trace.run.launch import launch, topology_from_env

    try:
        manifest = load_manifest(args.manifest)
    except ManifestError as err:
        raise InvalidInput(str(err), "load_manifest") from None
    device = choose_device(args.device)
    nproc = process_count(manifest, args.nproc, device)
    try:
        options = WorkerOptions.from_env(device)  # checked here too, so a bad variable fails before launch
    except ValueError as err:
        raise InvalidInput(str(err), "setup") from None
    topo = topology_from_env(nproc)
    if topo.world > 1:  # one process per GPU (or per --nproc), on one node or several
        return launch(str(args.manifest), "cuda" if device.startswith("cuda") else "cpu", topo)
    log.info("tracing %s on %s", args.manifest, device)
    select_device(device)
    return run_manifest(manifest, options, timer=timer)


def main(args: argparse.Namespace) -> int:
    """Run the worker; always write the termination message; return the contract's exit code."""
    timer = StageTimer(synchronize=synchronize_cuda)
    setup_logging(timer)
    try:
        summary = execute(args, timer)
    except GroupFailure as err:  # the ranks' root cause, already mapped to the contract
        log.error("%s", err)
        write_termination_message(err.payload)
        return err.exit_code
    except Exception as err:  # every failure must reach the contract (MemoryError included)
        failure = as_failure(err, timer)
        if not isinstance(err, WorkerFailure):
            traceback.print_exception(err, file=sys.stderr)
        log.error("%s in stage %s: %s", failure.reason, failure.stage, failure)
        write_termination_message(failure_message(failure))
        return failure.exit_code
    if not summary:  # a node without rank 0: the outputs and figures are rank 0's node's to report
        write_termination_message({"rowsEmitted": 0, "outputPath": "", "timings": {}})
        return EXIT_OK
    report = write_report(summary)
    write_termination_message(success_message(summary, report))
    print(format_timings(summary["timings"]))
    log.info("done: %d rows in %s%s", summary["rows_emitted"], summary["config"]["output"]["path"],
             f"; report: {report}" if report else "")
    return EXIT_OK
