"""Run engine.run_trace on ProcessRanks in N spawned CPU processes (gloo) and bring rank 0's results back.

The ranks are started by the same elastic agent settings `influence-trace run` uses
(launch.launch_config), so the tests exercise the real rendezvous and process group.
"""

from __future__ import annotations

import pickle
from dataclasses import dataclass
from pathlib import Path

import torch
from influence_trace.api.spec import TraceSettings
from influence_trace.planning.options import WorkerOptions
from influence_trace.trace.records import Response, TraceResult

from tests.trace.numeric_helpers import SMALL


@dataclass(frozen=True)
class ParallelJob:
    model_dir: str
    cases: list[tuple[TraceSettings, list[Response]]]  # settings and the responses to select from
    out: str
    options: list[WorkerOptions] | None = None  # per case; SMALL when not given


def rank_cases(job: ParallelJob) -> None:
    """One rank: every case in turn in the same process group; rank 0 pickles the results and, per
    case, the names its ledger was given."""
    from influence_trace.run.distributed import close_group, init_group
    from influence_trace.run.ranks import ProcessRanks
    from influence_trace.trace.engine import run_trace
    from influence_trace.trace.ledger import MemoryLedger
    from influence_trace.trace.selection import select_groups
    from influence_trace.trace.timing import StageTimer

    from tests.trace.bruteforce import load_model

    class Ledger(MemoryLedger):
        def __init__(self) -> None:
            super().__init__()
            self.names: set[str] = set()

        def allocate(self, name: str, nbytes: int, stage: str) -> None:
            self.names.add(name)
            super().allocate(name, nbytes, stage)

    torch.set_num_threads(1)
    group = init_group("cpu")
    model = load_model(Path(job.model_dir))
    results, claims = [], []
    for i, (trace, responses) in enumerate(job.cases):
        options = job.options[i] if job.options else SMALL
        selection = select_groups(responses, trace)
        ledger = Ledger()
        result = run_trace(model, selection, trace, options, ledger, StageTimer(),
                           ranks=ProcessRanks(group, options))
        results.append(result)
        claims.append(ledger.names)
    if group.is_writer:
        Path(job.out).write_bytes(pickle.dumps((results, claims)))
    close_group()


def run_parallel(nproc: int, model_dir: Path, cases: list, out: Path,
                 options: list[WorkerOptions] | None = None) -> list[TraceResult]:
    return run_parallel_claims(nproc, model_dir, cases, out, options)[0]


def run_parallel_claims(nproc: int, model_dir: Path, cases: list, out: Path,
                        options: list[WorkerOptions] | None = None) -> tuple[list[TraceResult], list[set]]:
    """The results, and per case the ledger names rank 0 declared."""
    from influence_trace.run.launch import Topology, launch_config
    from torch.distributed.launcher.api import elastic_launch

    job = ParallelJob(str(model_dir), cases, str(out), options)
    elastic_launch(launch_config(Topology(nproc)), rank_cases)(job)
    return pickle.loads(out.read_bytes())
