"""How a multi-process trace divides its work: responses for the capture, modules for the Hessians.

Both splits are pure functions of the selection and the traced modules, so every rank computes the
same answer without talking to the others. The capture split keeps responses contiguous in scope
order: an owner then assembles a module's factors by stacking the ranks' pieces in rank order, which
is exactly the row order of a single-process run (and so gives it exactly the same Hessian).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

from influence_trace.api.spec import TraceSettings


@dataclass(frozen=True)
class Share:
    """One rank's contiguous run of responses [first, last) and its token rows [row_first, row_last)."""

    first: int
    last: int
    row_first: int
    row_last: int

    @property
    def rows(self) -> int:
        return self.row_last - self.row_first


def _fill(weights: list[int], capacity: int) -> list[int]:
    """Cut points of a greedy front-to-back fill where no part passes ``capacity``."""
    cuts, load = [0], 0
    for i, w in enumerate(weights):
        if load and load + w > capacity:
            cuts.append(i)
            load = 0
        load += w
    return cuts


def contiguous_shares(weights: list[int], rows: list[int], parts: int) -> list[Share]:
    """Cut the responses into ``parts`` contiguous runs so that the heaviest run is as light as possible.

    ``weights`` is each response's capture cost (its sequence tokens: the forward/backward work);
    ``rows`` its response tokens (its factor rows). The smallest feasible largest load is found by
    bisection; ranks past the last cut get no response (possible with fewer responses than ranks).
    """
    low, high = max(weights, default=0), sum(weights)
    while low < high:
        mid = (low + high) // 2
        if len(_fill(weights, mid)) <= parts:
            high = mid
        else:
            low = mid + 1
    cuts = _fill(weights, low) if weights else [0]
    cuts += [len(weights)] * (parts + 1 - len(cuts))
    offsets = [0]
    for n in rows:
        offsets.append(offsets[-1] + n)
    return [Share(a, b, offsets[a], offsets[b]) for a, b in itertools.pairwise(cuts)]


def module_cost(dim: int, tokens: int, responses: int, trace: TraceSettings) -> float:
    """Relative cost of one module's Hessian stage: D^2 per token (or response) plus D^3/3 (Cholesky).

    With hessianMode identity there is no Hessian: the scoring work, D per token, is what remains.
    """
    if trace.hessian_mode == "identity":
        return float(dim) * tokens
    rows = tokens if trace.hessian_source == "token" else responses
    return float(dim) ** 2 * rows + float(dim) ** 3 / 3 + float(dim) * tokens


def assign_modules(costs: list[float], parts: int) -> list[list[int]]:
    """Longest processing time first: each module, largest first, to the least loaded rank.

    Ties go to the lower rank and equal costs keep module order, so the result is deterministic.
    Each rank's list is returned in module order (the order a single process would use).
    """
    loads = [0.0] * parts
    owned: list[list[int]] = [[] for _ in range(parts)]
    for index in sorted(range(len(costs)), key=lambda m: (-costs[m], m)):
        rank = min(range(parts), key=lambda r: (loads[r], r))
        loads[rank] += costs[index]
        owned[rank].append(index)
    return [sorted(mods) for mods in owned]


def owner_of(assignment: list[list[int]]) -> dict[int, int]:
    """Module index -> owning rank."""
    return {m: rank for rank, mods in enumerate(assignment) for m in mods}
