"""Which GPU node pool a trace goes to: the pool table, headroom, the choice and the escalation.

The operator places a trace on the smallest allowed pool where the memory model's prediction, plus
headroom, fits the pool's GPUs and host memory; after a GPU out-of-memory it moves to the next larger
allowed pool. When nothing fits, the refusal names a factor (or maxHessianDim) that would fit the
largest pool, found by re-estimating. Pure Python: the operator image carries no torch.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from pydantic.alias_generators import to_camel

from influence_trace.api.architectures import Shapes
from influence_trace.api.spec import InfluenceTraceSpec
from influence_trace.api.units import gb
from influence_trace.planning.memory_model import Estimate, EstimateOptions, estimate, resolve_shapes

MIB = 2**20
DEFAULT_HEADROOM = 0.10  # fits when predicted * (1 + headroom) <= what the pool has


class PoolsError(ValueError):
    """A pool table that cannot be used; the message names the file and the field."""


class _Model(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, validate_by_alias=True, validate_by_name=True,
                              serialize_by_alias=True, extra="forbid", frozen=True)


class Toleration(_Model):
    """A Kubernetes toleration for the pool's taint."""

    key: str | None = None
    operator: str = Field("Equal", pattern="^(Equal|Exists)$")
    value: str | None = None
    effect: str | None = Field(None, pattern="^(NoSchedule|PreferNoSchedule|NoExecute)$")


class Pool(_Model):
    """One node pool: how to land on it and what each node offers."""

    name: str = Field(min_length=1, description="Name used in spec.resources.pools and status.pool.")
    node_selector: dict[str, str] = Field(default_factory=dict, description="Labels of the pool's nodes.")
    tolerations: list[Toleration] = Field(default_factory=list, description="Tolerations for its taints.")
    gpu_memory_bytes: int = Field(gt=0, description="Memory of one GPU, as GPU feature discovery reports.")
    gpus_per_node: int = Field(gt=0, description="GPUs of one node.")
    host_memory_bytes: int = Field(gt=0, description="Allocatable host memory of one node.")
    gpu_product: str | None = Field(None, description="nvidia.com/gpu.product, for people reading.")
    peak_flops: dict[str, float] = Field(
        default_factory=dict, description="Peak dense flop/s of one GPU per dtype (bfloat16, float32, "
        "float64, tf32), for the predicted duration; missing ones: an H100's.")
    memory_bandwidth: float | None = Field(None, gt=0, description="GPU memory bandwidth, bytes/s.")
    kueue_flavor: str | None = Field(
        None, min_length=1,
        description="Kueue ResourceFlavor of the pool's nodes (default: the pool's name); its nodeLabels "
        "must match node_selector, which is how Kueue admits a Job on it.",
    )


class PoolTable(_Model):
    """The file format: ``pools: [...]`` (and optionally ``headroom``)."""

    pools: list[Pool] = Field(min_length=1)
    headroom: float | None = Field(None, ge=0.0, le=1.0)


_GPU_TOLERATION = Toleration(key="nvidia.com/gpu", operator="Exists", effect="NoSchedule")

# GPU memory as GPU feature discovery's nvidia.com/gpu.memory label gives it (MiB), the same numbers
# hack/cluster.sh puts on its fake nodes; host memory is an 8-GPU HGX node's 2 TiB.
DEFAULT_POOLS: tuple[Pool, ...] = (
    Pool(name="h100", node_selector={"influencetrace.dev/pool": "h100"}, tolerations=[_GPU_TOLERATION],
         gpu_memory_bytes=81559 * MIB, gpus_per_node=8, host_memory_bytes=2 * 2**40,
         gpu_product="NVIDIA-H100-80GB-HBM3", memory_bandwidth=3.35e12),
    Pool(name="h200", node_selector={"influencetrace.dev/pool": "h200"}, tolerations=[_GPU_TOLERATION],
         gpu_memory_bytes=143771 * MIB, gpus_per_node=8, host_memory_bytes=2 * 2**40,
         gpu_product="NVIDIA-H200", memory_bandwidth=4.8e12),
)


def _format_error(err: ValidationError, source: str) -> str:
    lines = [f"{source}: invalid pool table"]
    for item in err.errors():
        path = ".".join(str(p) for p in item["loc"]) or "(root)"
        lines.append(f"  {path}: {item['msg']}")
    return "\n".join(lines)


def parse_pools(data: object, source: str = "pools") -> PoolTable:
    """Validate a decoded table; a bare list of pools is accepted too. Names must be unique."""
    if isinstance(data, list):
        data = {"pools": data}
    try:
        table = PoolTable.model_validate(data)
    except ValidationError as err:
        raise PoolsError(_format_error(err, source)) from None
    names = [p.name for p in table.pools]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise PoolsError(f"{source}: pools: names must be unique, repeated: {', '.join(dupes)}")
    return table


def load_pools(path: str | Path) -> PoolTable:
    """Read a YAML pool table; errors name the file and the field."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except OSError as err:
        raise PoolsError(f"{path}: cannot read pool table ({err.strerror})") from None
    except yaml.YAMLError as err:
        raise PoolsError(f"{path}: not valid YAML: {err}") from None
    return parse_pools(data, str(path))


@dataclass(frozen=True)
class PoolFit:
    """How one pool compares with the estimate."""

    pool: str
    fits: bool
    why: str  # what does not fit, or "fits"


@dataclass(frozen=True)
class Placement:
    """The chosen pool (None when none fits) and why."""

    pool: Pool | None
    reason: str
    fits: list[PoolFit]
    headroom: float


def ordered(pools: list[Pool] | tuple[Pool, ...], allowed: list[str] | None = None) -> list[Pool]:
    """Allowed pools, smallest GPU memory first (ties keep the table's order)."""
    if allowed is not None:
        known = {p.name for p in pools}
        unknown = [a for a in allowed if a not in known]
        if unknown:
            raise PoolsError(f"spec.resources.pools: unknown pool(s) {unknown}; known: {sorted(known)}")
        pools = [p for p in pools if p.name in allowed]
    return sorted(pools, key=lambda p: p.gpu_memory_bytes)


def fit(est: Estimate, pool: Pool, headroom: float) -> PoolFit:
    """GPUs per node, GPU memory and host memory, each with headroom."""
    need_gpu = est.gpu_bytes * (1 + headroom)
    need_host = est.host_bytes * (1 + headroom)
    problems = []
    if est.gpus > pool.gpus_per_node:
        problems.append(f"needs {est.gpus} GPUs per pod, nodes have {pool.gpus_per_node}")
    if need_gpu > pool.gpu_memory_bytes:
        problems.append(f"GPU {gb(need_gpu)} (with headroom) > {gb(pool.gpu_memory_bytes)}")
    if need_host > pool.host_memory_bytes:
        problems.append(f"host {gb(need_host)} (with headroom) > {gb(pool.host_memory_bytes)}")
    return PoolFit(pool.name, not problems, "; ".join(problems) or "fits")


Refit = Callable[[int, int], Estimate]  # (factor, maxHessianDim) -> estimate


def choose_pool(est: Estimate, pools: list[Pool] | tuple[Pool, ...] = DEFAULT_POOLS,
                allowed: list[str] | None = None, headroom: float = DEFAULT_HEADROOM,
                refit: Refit | None = None, factor: int | None = None) -> Placement:
    """The first allowed pool, smallest first, where the estimate fits; else None and a reason.

    ``refit`` re-estimates at another (factor, maxHessianDim) so a refusal can name one that fits.
    """
    candidates = ordered(pools, allowed)
    fits = [fit(est, p, headroom) for p in candidates]
    for pool, f in zip(candidates, fits, strict=True):
        if f.fits:
            return Placement(pool, f"fits {pool.name}: {_need(est, headroom)}", fits, headroom)
    if not candidates:
        return Placement(None, "no pool is allowed", fits, headroom)
    largest = max(candidates, key=lambda p: (p.gpu_memory_bytes, p.host_memory_bytes))
    reason = f"no allowed pool fits ({fits[candidates.index(largest)].why} on {largest.name})"
    if refit is not None and factor is not None:
        reason += "; " + suggest(refit, factor, est, largest, headroom)
    return Placement(None, reason, fits, headroom)


def _need(est: Estimate, headroom: float) -> str:
    return (f"predicted {gb(est.gpu_bytes)} GPU per process, {gb(est.host_bytes)} host per pod, "
            f"{headroom:.0%} headroom")


def _first_fitting(lo: int, hi: int, fits_at: Callable[[int], bool]) -> int | None:
    """Smallest x in [lo, hi] with fits_at(x), assuming fits_at is monotone (False..False True..True)."""
    if lo > hi or not fits_at(hi):
        return None
    while lo < hi:
        mid = (lo + hi) // 2
        if fits_at(mid):
            hi = mid
        else:
            lo = mid + 1
    return lo


def suggest(refit: Refit, factor: int, est: Estimate, pool: Pool, headroom: float) -> str:
    """Name the smallest factor, and the largest maxHessianDim at this factor, that fit ``pool``."""
    if est.gpus > pool.gpus_per_node:
        return f"resources.gpus {est.gpus} is more than {pool.name}'s {pool.gpus_per_node} GPUs per node"
    widest = (max(max(m.k_in, m.k_out) for m in est.modules) + 1) * factor  # every k is 1 beyond
    best_factor = _first_fitting(factor + 1, max(widest, factor + 1),
                                 lambda f: fit(refit(f, -1), pool, headroom).fits)
    largest_dim = max(m.dim for m in est.modules)
    dims = _first_fitting(-(largest_dim - 1), -1, lambda neg: fit(refit(factor, -neg), pool, headroom).fits)
    parts = []
    if best_factor is not None:
        parts.append(f"trace.factor {best_factor} would fit {pool.name}")
    if dims is not None:
        parts.append(f"trace.maxHessianDim {-dims} (at factor {factor}) would fit {pool.name}")
    if not parts:
        return (f"no factor or maxHessianDim fits {pool.name}: the weights and the capture pass alone "
                "need more; use fewer tokens per GPU (more resources.gpus) or a larger pool")
    return " or ".join(parts)


def estimate_and_refit(spec: InfluenceTraceSpec, shapes: Shapes | None,
                        options: EstimateOptions | None) -> tuple[Estimate, Refit]:
    """The estimate of ``spec``, and a function that re-estimates it at another factor/maxHessianDim."""
    shapes = shapes or resolve_shapes(spec)
    est = estimate(spec, shapes, options)

    def refit(factor: int, max_dim: int) -> Estimate:
        trace = spec.trace.model_copy(update={"factor": factor, "max_hessian_dim": max_dim})
        return estimate(spec.model_copy(update={"trace": trace}), shapes, options, est.workload)

    return est, refit


def place(spec: InfluenceTraceSpec, pools: list[Pool] | tuple[Pool, ...] = DEFAULT_POOLS,
          headroom: float = DEFAULT_HEADROOM, shapes: Shapes | None = None,
          options: EstimateOptions | None = None) -> tuple[Estimate, Placement]:
    """Estimate ``spec`` and choose its pool; a refusal names a factor or maxHessianDim that fits."""
    est, refit = estimate_and_refit(spec, shapes, options)
    placement = choose_pool(est, pools, spec.resources.pools, headroom, refit, spec.trace.factor)
    return est, placement


def suggest_after_oom(spec: InfluenceTraceSpec, pool: Pool, headroom: float = DEFAULT_HEADROOM,
                      shapes: Shapes | None = None, options: EstimateOptions | None = None) -> str:
    """What would fit ``pool`` after the worker really ran out of GPU memory there.

    The estimate said the trace fits, so it under-predicts this trace by at least pool / estimate.
    Assuming it does so by that ratio, a setting fits when its estimate with headroom stays within
    the estimate that failed: the suggestion searches a pool of exactly that size.
    """
    est, refit = estimate_and_refit(spec, shapes, options)
    observed = pool.model_copy(update={"gpu_memory_bytes": est.gpu_bytes})
    return (f"the memory model predicted {gb(est.gpu_bytes)} per GPU; scaled by the shortfall, "
            + suggest(refit, spec.trace.factor, est, observed, headroom))


def next_pool(current: str, pools: list[Pool] | tuple[Pool, ...] = DEFAULT_POOLS,
              allowed: list[str] | None = None) -> Pool | None:
    """The escalation after an out-of-memory on ``current``: the next allowed pool with more GPU memory."""
    candidates = ordered(pools, allowed)
    now = next((p for p in pools if p.name == current), None)
    if now is None:
        return candidates[0] if candidates else None
    return next((p for p in candidates if p.gpu_memory_bytes > now.gpu_memory_bytes), None)
