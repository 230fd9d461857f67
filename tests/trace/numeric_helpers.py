"""Shared pieces of the worker's numerical tests: a float64 model, selections and a runner."""

from __future__ import annotations

import numpy as np
from influence_trace.api.spec import TraceSettings
from influence_trace.planning.options import WorkerOptions
from influence_trace.trace.ledger import MemoryLedger
from influence_trace.trace.records import TraceResult
from influence_trace.trace.selection import Selection
from influence_trace.trace.timing import StageTimer

# Small capture batches and chunks, so the tests exercise batching and chunking too.
SMALL = WorkerOptions(device="cpu", chunk_bytes=4096, capture_tokens=40, progress=False)


def run(model, selection: Selection, trace: TraceSettings, options: WorkerOptions = SMALL,
        ledger: MemoryLedger | None = None) -> TraceResult:
    from influence_trace.trace.engine import run_trace

    return run_trace(model, selection, trace, options, ledger or MemoryLedger(), StageTimer())


def assert_scores_close(got: dict[str, np.ndarray], want: dict[str, np.ndarray], rel: float) -> None:
    """Every response's scores agree to ``rel`` relative to the largest score (scores near zero too)."""
    assert got.keys() == want.keys()
    scale = max(float(np.abs(v).max()) for v in want.values() if v.size)
    assert scale > 0
    for key, expected in want.items():
        np.testing.assert_allclose(got[key], expected, rtol=rel, atol=rel * scale, err_msg=key)
