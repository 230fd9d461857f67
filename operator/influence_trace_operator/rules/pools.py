"""The operator's pool table: the memory model's ``placement.Pool`` records, and the two questions
escalation asks of them that placement does not (which pools a trace may use; where more host memory
is). The fit rule, headroom, suggestions and the next larger GPU pool belong to placement."""

from __future__ import annotations

from influence_trace.planning.placement import DEFAULT_POOLS, Pool, load_pools


def load_table(path: str | None) -> list[Pool]:
    """The pool table: the file given, or placement's defaults (the local cluster's pools)."""
    return list(load_pools(path).pools if path else DEFAULT_POOLS)


def allowed_pools(table: list[Pool], wanted: list[str] | None) -> tuple[list[Pool], list[str]]:
    """The pools a trace may use, smallest GPU memory first (placement's order), and unknown names."""
    known = {p.name for p in table}
    unknown = [name for name in wanted or [] if name not in known]
    chosen = [p for p in table if wanted is None or p.name in wanted]
    return sorted(chosen, key=lambda p: p.gpu_memory_bytes), unknown


def larger_host_pool(pools: list[Pool], current: str, host_bytes: int) -> Pool | None:
    """The next allowed pool after ``current`` whose nodes hold more host memory than asked so far."""
    names = [p.name for p in pools]
    start = names.index(current) + 1 if current in names else 0
    return next((p for p in pools[start:] if p.host_memory_bytes > host_bytes), None)
