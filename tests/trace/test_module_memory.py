"""The worker's Hessian-stage ledger, module by module, against the memory model's module peak.

The operator places a trace by ``module_peak(module_stage_bytes(...))``; the worker declares every
large buffer to its MemoryLedger before allocating it. Both must follow the same rules, so for every
traced module the ledger's largest total while the module is worked on (above what was resident
before its factors were staged) must equal the model's prediction for the same workload.
"""

from __future__ import annotations

import itertools

import pytest
from influence_trace.api.architectures import ModuleDims
from influence_trace.demo.rollouts import make_rollouts
from influence_trace.planning.memory_model import module_peak, module_stage_bytes
from influence_trace.trace.ledger import MemoryLedger
from influence_trace.trace.selection import select_groups, selection_workload

from tests.trace.bruteforce import read_rollouts, settings
from tests.trace.numeric_helpers import SMALL, run


class ModuleLedger(MemoryLedger):
    """Records, per module (from "factors" allocated to freed), the largest total above the base."""

    def __init__(self) -> None:
        super().__init__()
        self.peaks: list[int] = []
        self.base: int | None = None

    def allocate(self, name: str, nbytes: int, stage: str) -> None:
        if name == "factors":
            self.base = self.total
            self.peaks.append(0)
        super().allocate(name, nbytes, stage)
        if self.base is not None:
            self.peaks[-1] = max(self.peaks[-1], self.total - self.base)

    def free(self, name: str) -> None:
        super().free(name)
        if name == "factors":
            self.base = None


@pytest.fixture(scope="module")
def responses(tmp_path_factory: pytest.TempPathFactory):
    # Equal group sizes, so per_prompt's largest group by tokens is also its largest by responses.
    path = make_rollouts(tmp_path_factory.mktemp("rollouts") / "r.jsonl", num_prompts=3,
                         responses_per_prompt=6, seed=5)
    return read_rollouts(path)


CASES = [
    *itertools.product(["all_selected", "per_prompt"], ["token", "response"], ["inverse"], [False, True]),
    ("all_selected", "token", "identity", False),
    ("per_prompt", "response", "identity", False),
    ("all_selected", "token", "identity", True),
]


@pytest.mark.parametrize(("scope", "source", "mode", "debug"), CASES)
def test_ledger_module_peaks_equal_the_model(model, responses, scope, source, mode, debug, kernels) -> None:
    trace = settings(factor=8, modules=["mlp.down_proj", "self_attn.k_proj"], scope=scope,
                     hessian_source=source, hessian_mode=mode, debug_hessian_similarity=debug)
    selection = select_groups(responses, trace)
    ledger = ModuleLedger()
    result = run(model, selection, trace, ledger=ledger)
    work = selection_workload(selection)
    predicted = [
        module_peak(module_stage_bytes(ModuleDims(m.name, m.in_features, m.out_features, m.k_in, m.k_out),
                                       work, trace, SMALL.chunk_bytes, kernels))
        for m in result.modules
    ]
    assert len(ledger.peaks) == len(predicted) == 4
    assert ledger.peaks == predicted

