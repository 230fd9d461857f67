"""Pure: what a namespace may use. The chart's per-namespace pool allow-lists (``namespacePools``)
and its ``maxNodes`` bound every trace, at placement and at every escalation.

A trace's pools are its ``spec.resources.pools`` (or all) restricted to its namespace's list; when
nothing is left the trace fails with ``PoolNotAllowed`` and no Job. A namespace that is not listed
takes the ``'*'`` entry, or every pool when there is none.
"""

from __future__ import annotations

from dataclasses import dataclass

from influence_trace.api.spec import InfluenceTrace
from influence_trace.planning.placement import Pool

from influence_trace_operator.rules import conditions


@dataclass(frozen=True)
class Bounds:
    """The pools a trace may use, and why it may not run at all (reason, message) if so."""

    pools: list[Pool]
    refused: list[str]  # pools the spec allowed that the namespace does not
    refusal: tuple[str, str] | None = None


def namespace_pools(table: list[Pool], lists: dict[str, list[str]], namespace: str) -> list[Pool]:
    names = lists.get(namespace, lists.get("*"))
    return list(table) if names is None else [p for p in table if p.name in names]


def bound(
    resource: InfluenceTrace, allowed: list[Pool], table: list[Pool], lists: dict[str, list[str]],
    namespace: str, max_nodes: int,
) -> Bounds:
    """``allowed`` (the spec's pools, smallest first) within the namespace's list and maxNodes."""
    nodes = resource.spec.resources.nodes
    if nodes > max_nodes:
        return Bounds([], [], (conditions.INVALID_SPEC, f"spec.resources.nodes: {nodes} is more than this "
                               f"operator runs ({max_nodes}, the chart's maxNodes)"))
    mine = {p.name for p in namespace_pools(table, lists, namespace)}
    kept = [p for p in allowed if p.name in mine]
    refused = [p.name for p in allowed if p.name not in mine]
    if not kept:
        return Bounds([], refused, (conditions.POOL_NOT_ALLOWED, f"namespace {namespace} may not use pools "
                                    f"{refused}; it may use {sorted(mine) or 'none'} (chart namespacePools)"))
    return Bounds(kept, refused)
