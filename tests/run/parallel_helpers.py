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
from influence_trace.trace.records import Response, TraceResult

from tests.trace.numeric_helpers import SMALL


@dataclass(frozen=True)
class ParallelJob:
    model_dir: str
    cases: list[tuple[TraceSettings, list[Response]]]  # settings and the responses to select from
    out: str


def rank_cases(job: ParallelJob) -> None:
    """One rank: every case in turn in the same process group; rank 0 pickles the results."""
    from influence_trace.run.distributed import close_group, init_group
    from influence_trace.run.ranks import ProcessRanks
    from influence_trace.trace.engine import run_trace
    from influence_trace.trace.ledger import MemoryLedger
    from influence_trace.trace.selection import select_groups
    from influence_trace.trace.timing import StageTimer

    from tests.trace.bruteforce import load_model

    torch.set_num_threads(1)
    group = init_group("cpu")
    model = load_model(Path(job.model_dir))
    results = []
    for trace, responses in job.cases:
        selection = select_groups(responses, trace)
        result = run_trace(model, selection, trace, SMALL, MemoryLedger(), StageTimer(),
                           ranks=ProcessRanks(group))
        results.append(result)
    if group.is_writer:
        Path(job.out).write_bytes(pickle.dumps(results))
    close_group()


def run_parallel(nproc: int, model_dir: Path, cases: list, out: Path) -> list[TraceResult]:
    from influence_trace.run.launch import Topology, launch_config
    from torch.distributed.launcher.api import elastic_launch

    elastic_launch(launch_config(Topology(nproc)), rank_cases)(ParallelJob(str(model_dir), cases, str(out)))
    return pickle.loads(out.read_bytes())
