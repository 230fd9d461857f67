"""The operator's view of GPU node pools, and the memory model's placement behind it.

The pool table, the fit rule (with headroom) and the suggestions belong to
``influence_trace.placement`` (the memory model's module); this adapter turns its pools into the
small frozen record the pure builders take, and adds the escalation orders the operator needs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class PoolInfo:
    """One GPU node pool: how to land on it and what its nodes hold."""

    name: str
    gpu_memory_bytes: int
    host_memory_bytes: int
    gpus_per_node: int = 8
    node_selector: dict[str, str] = field(default_factory=dict)
    tolerations: list[dict[str, Any]] = field(default_factory=list)


def _get(obj: Any, *names: str, default: Any = None) -> Any:
    """Read a field of a placement pool whichever way it is spelled (attribute or mapping)."""
    for name in names:
        if isinstance(obj, dict) and name in obj:
            return obj[name]
        if hasattr(obj, name):
            return getattr(obj, name)
    return default


def _plain(value: Any) -> Any:
    if hasattr(value, "model_dump"):
        return value.model_dump(mode="json", by_alias=True, exclude_none=True)
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def pool_info(pool: Any) -> PoolInfo:
    """A PoolInfo from a placement pool (pydantic model, dataclass or dict)."""
    return PoolInfo(
        name=str(_get(pool, "name")),
        gpu_memory_bytes=int(_get(pool, "gpu_memory_bytes", "gpuMemoryBytes")),
        host_memory_bytes=int(_get(pool, "host_memory_bytes", "hostMemoryBytes", default=0) or 0),
        gpus_per_node=int(_get(pool, "gpus_per_node", "gpusPerNode", default=8) or 8),
        node_selector=dict(_plain(_get(pool, "node_selector", "nodeSelector", default={}) or {})),
        tolerations=list(_plain(_get(pool, "tolerations", default=[]) or [])),
    )


def load_table(path: str | None) -> list[PoolInfo]:
    """The pool table: the file given, or placement's defaults (the local cluster's pools)."""
    from influence_trace.placement import DEFAULT_POOLS, load_pools

    pools = load_pools(path).pools if path else DEFAULT_POOLS
    return [pool_info(p) for p in pools]


def allowed_pools(table: list[PoolInfo], wanted: list[str] | None) -> tuple[list[PoolInfo], list[str]]:
    """The pools a trace may use, smallest GPU memory first (placement's order), and unknown names."""
    known = {p.name for p in table}
    unknown = [name for name in wanted or [] if name not in known]
    chosen = [p for p in table if wanted is None or p.name in wanted]
    return sorted(chosen, key=lambda p: p.gpu_memory_bytes), unknown


def to_placement_pools(pools: list[PoolInfo]) -> list[Any]:
    """The same pools as placement.Pool objects, for the memory model's fit and suggestions."""
    from influence_trace.placement import Pool

    return [
        Pool.model_validate(
            {
                "name": p.name,
                "nodeSelector": p.node_selector,
                "tolerations": p.tolerations,
                "gpuMemoryBytes": p.gpu_memory_bytes,
                "gpusPerNode": p.gpus_per_node,
                "hostMemoryBytes": p.host_memory_bytes,
            }
        )
        for p in pools
    ]


def larger_gpu_pool(pools: list[PoolInfo], current: str) -> PoolInfo | None:
    """The next allowed pool after ``current`` whose GPUs hold more memory."""
    names = [p.name for p in pools]
    if current not in names:
        return None
    here = pools[names.index(current)]
    return next(
        (p for p in pools[names.index(current) + 1 :] if p.gpu_memory_bytes > here.gpu_memory_bytes), None
    )


def larger_host_pool(pools: list[PoolInfo], current: str, host_bytes: int) -> PoolInfo | None:
    """The next allowed pool after ``current`` whose nodes hold more host memory than asked so far."""
    names = [p.name for p in pools]
    start = names.index(current) + 1 if current in names else 0
    return next((p for p in pools[start:] if p.host_memory_bytes > host_bytes), None)
