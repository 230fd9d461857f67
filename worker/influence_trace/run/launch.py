"""Starting one worker process per GPU (or per --nproc on the CPU) and turning their end into one result.

The ``influence-trace run`` process becomes a torch elastic agent (``elastic_launch``, the API under
``torchrun``): it spawns the ranks of this node, restarts nothing (max_restarts 0: a failed attempt
is the operator's to escalate), and stops the other ranks as soon as one fails. Nodes meet through a
static rendezvous at MASTER_ADDR:MASTER_PORT (rank 0's pod behind the headless Service).

Each rank reports through a small JSON file in a directory the agent made: its failure (reason, stage,
message, time) or, for rank 0, the run's summary. The agent then writes the one termination message
and exits with one contract code: the root cause's, not the follow-on errors of the peers it broke.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from influence_trace.api.contract import EXIT_KERNEL_OOM_KILL, InvalidInput, WorkerFailure
from influence_trace.run.process import GroupFailure, as_failure, log, setup_logging, synchronize_cuda

NNODES_ENV = "INFLUENCE_TRACE_NNODES"
NODE_RANK_ENV = "INFLUENCE_TRACE_NODE_RANK"  # defaults to JOB_COMPLETION_INDEX (an Indexed Job's pod)
DEFAULT_PORT = 29500
RENDEZVOUS_TIMEOUT_S = 900  # every node's pod must start within this (image pulls included)
SHUTDOWN_TIMEOUT_S = 10  # SIGTERM, then SIGKILL after this, for the ranks left when one fails


@dataclass(frozen=True)
class Topology:
    """How many processes on how many nodes, this node's index, and where rank 0's node listens."""

    nproc: int
    nnodes: int = 1
    node_rank: int = 0
    master_addr: str = "127.0.0.1"
    master_port: int = 0

    @property
    def world(self) -> int:
        return self.nproc * self.nnodes


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name, "")
    try:
        return int(value) if value else default
    except ValueError:
        message = f"environment variable {name}: expected an integer, got {value!r}"
        raise InvalidInput(message, "setup") from None


def topology_from_env(nproc: int) -> Topology:
    """Single node by default; the operator's Indexed Job sets the multi-node variables."""
    nnodes = _env_int(NNODES_ENV, 1)
    node_rank = _env_int(NODE_RANK_ENV, _env_int("JOB_COMPLETION_INDEX", 0))
    if nnodes < 1 or not 0 <= node_rank < nnodes:
        message = f"{NNODES_ENV}={nnodes}, {NODE_RANK_ENV}={node_rank}: expected 0 <= node rank < nodes"
        raise InvalidInput(message, "setup")
    addr = os.environ.get("MASTER_ADDR") or "127.0.0.1"
    port = _env_int("MASTER_PORT", DEFAULT_PORT if nnodes > 1 else 0)
    return Topology(nproc, nnodes, node_rank, addr, port)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass(frozen=True)
class RankJob:
    """What every rank needs (picklable: ranks are spawned, not forked)."""

    manifest: str
    device_kind: str  # "cpu" or "cuda"
    report_dir: str
    threads: int


def rank_main(job: RankJob) -> None:
    """One rank: join the group, run the pipeline, report success or failure through a file."""
    import torch

    from influence_trace.api.contract import failure_message
    from influence_trace.api.spec import load_manifest
    from influence_trace.planning.options import WorkerOptions
    from influence_trace.run.dispatch import run_manifest
    from influence_trace.run.distributed import close_group, init_group, rank_device
    from influence_trace.trace.timing import StageTimer

    rank = int(os.environ["RANK"])
    timer = StageTimer(synchronize=synchronize_cuda)
    setup_logging(timer, prefix=f"rank {rank}")
    torch.set_num_threads(job.threads)
    try:
        device = rank_device(job.device_kind, int(os.environ["LOCAL_RANK"]))
        group = init_group(device)
        options = replace(WorkerOptions.from_env(device), progress=False)
        manifest = load_manifest(job.manifest)
        summary = run_manifest(manifest, options, timer=timer, group=group)
        if group.is_writer:
            _write_report(job.report_dir, "summary", summary)
        close_group()
    except Exception as err:  # every failure must reach the agent as this rank's contract failure
        failure = as_failure(err, timer)
        log.error("%s in stage %s: %s", failure.reason, failure.stage, failure)
        payload = {**failure_message(failure), "rank": rank, "time": time.time()}
        _write_report(job.report_dir, f"rank-{rank}", {**payload, "exit_code": failure.exit_code})
        sys.exit(failure.exit_code)  # os-level exit code: the agent sees the failure at once


def _write_report(directory: str, name: str, payload: dict[str, Any]) -> None:
    path = Path(directory) / f"{name}.json"
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(payload))
    tmp.rename(path)


def _read_reports(directory: str, prefix: str) -> list[dict[str, Any]]:
    return [json.loads(p.read_text()) for p in sorted(Path(directory).glob(f"{prefix}*.json"))]


Exits = dict[int, tuple[int, str]]  # global rank -> (exit code, signal name) of the ranks that failed


def root_cause(reports: list[dict[str, Any]], exits: Exits, world: int) -> tuple[int, dict[str, Any]]:
    """(exit code, termination payload) of the failure that started it.

    A rank's own specific failure (GPUOutOfMemory, InvalidInput, ...) wins, the earliest first; then a
    rank killed by SIGKILL without a report (the kernel's OOM killer: exit 137, as for a pod); then the
    earliest plain Error (often a peer noticing a dead rank); then a bare non-zero exit.
    """
    specific = sorted((r for r in reports if r["reason"] != "Error"), key=lambda r: r["time"])
    generic = sorted((r for r in reports if r["reason"] == "Error"), key=lambda r: r["time"])
    reported = {r["rank"] for r in reports}
    killed = [rank for rank, (_, sig) in sorted(exits.items()) if sig == "SIGKILL" and rank not in reported]
    if specific or (generic and not killed):
        r = (specific or generic)[0]
        message = f"rank {r['rank']} of {world}, stage {r['stage']}: {r['message']}"
        return r["exit_code"], {**{k: r[k] for k in ("reason", "stage", "rank")}, "message": message}
    if killed:
        message = (f"rank {killed[0]} of {world} was killed (SIGKILL) without reporting: most likely the "
                   "kernel's out-of-memory killer; give the pod more host memory or use fewer processes")
        return EXIT_KERNEL_OOM_KILL, {"reason": "HostOutOfMemory", "stage": "unknown", "message": message,
                                      "rank": killed[0]}
    rank, (code, sig) = sorted(exits.items())[0] if exits else (0, (1, ""))
    message = f"rank {rank} of {world} exited with code {code} {sig}".strip()
    payload = {"reason": "Error", "stage": "unknown", "message": message, "rank": rank}
    return WorkerFailure("").exit_code, payload


def _exits(err: BaseException) -> Exits:
    failures = getattr(err, "failures", {}) or {}
    return {rank: (f.exitcode, f.signal_name() if f.exitcode < 0 else "") for rank, f in failures.items()}


def launch_config(topo: Topology):
    """The elastic agent's settings: fixed size, no restarts, static rendezvous, quick failure detection."""
    from torch.distributed.launcher.api import LaunchConfig

    return LaunchConfig(
        min_nodes=topo.nnodes, max_nodes=topo.nnodes, nproc_per_node=topo.nproc,
        run_id=os.environ.get("JOB_NAME") or uuid.uuid4().hex[:12],
        rdzv_backend="static", rdzv_endpoint=f"{topo.master_addr}:{topo.master_port or _free_port()}",
        rdzv_configs={"rank": topo.node_rank, "timeout": RENDEZVOUS_TIMEOUT_S},
        max_restarts=0, monitor_interval=0.2, start_method="spawn", shutdown_timeout=SHUTDOWN_TIMEOUT_S,
    )


def available_cpus() -> int:
    """CPUs this process may run on (the pod's cpuset where one is set), else the machine's count."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def rank_threads(nproc: int, cpus: int | None = None) -> int:
    """Each rank's share of the cores, on GPUs too: the host-side fills, copies and the exchange of the
    factors are on a GPU rank's critical path, and one thread would serialise them."""
    return max(1, (cpus or available_cpus()) // nproc)


def launch(manifest: str, device_kind: str, topo: Topology) -> dict[str, Any]:
    """Run the ranks of this node; return rank 0's summary (``{}`` on nodes without rank 0).

    Raises GroupFailure with the root cause when any rank fails.
    """
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.launcher.api import elastic_launch

    config = launch_config(topo)
    threads = rank_threads(topo.nproc)
    with tempfile.TemporaryDirectory(prefix="influence-trace-ranks-") as reports:
        job = RankJob(manifest, device_kind, reports, threads)
        log.info("starting %d processes on node %d of %d (%s, world %d)", topo.nproc, topo.node_rank,
                 topo.nnodes, device_kind, topo.world)
        try:
            elastic_launch(config, rank_main)(job)
        except ChildFailedError as err:
            cause = root_cause(_read_reports(reports, "rank-"), _exits(err), topo.world)
            raise GroupFailure(*cause) from None
        summaries = _read_reports(reports, "summary")
        return summaries[0] if summaries else {}
