"""Predicted duration of a trace on a pool: a flop/byte count per stage over the pool's GPU peak rates.

A first-order model, to say "about 12 minutes" before anything runs and to turn a progress line into
an ETA; it is not a benchmark. Per process:
  generate  memory-bound decoding: every new token of a batch reads all weights once
            (max response tokens x batches x weight bytes / bandwidth)
  capture   forward and backward without weight gradients: 4 x parameters x padded tokens flops in
            the model dtype
  hessian   per traced module: the Gram matrix 2 T D^2, or 2 T pairs(k_out) pairs(k_in) where the
            worker builds it as a symmetric Gram (token source; response source R D^2), one
            Cholesky D^3 / 3 and triangular solves 2 D^2 R per scope, in the Hessian dtype; plus
            the kernel launches of the strategy the GPU runs (``LAUNCH_SECONDS`` each of host time)
            and its token chunks' memory traffic (planning/launch_plan.py); modules are split over
            the processes
  validate  (spec.validate) per mask a forward and backward over the selected tokens and the
            objectives' forwards, in float32 (planning/validation_plan.py), on one process
  setup     process start and reading the weights (``STARTUP_SECONDS`` + bytes / ``LOAD_BYTES_PER_SECOND``)
Each term runs at ``EFFICIENCY`` of the pool's peak rate. Observed durations correct it through the
history (``planning.history``): seconds / predicted seconds of earlier runs of the configuration.
"""

from __future__ import annotations

from dataclasses import dataclass

from influence_trace.api.architectures import traced_module_dims
from influence_trace.api.spec import InfluenceTraceSpec
from influence_trace.planning.hessian_plan import (
    CHUNK_BYTES,
    cyclic_pairs,
    kernels_for,
    pairs,
    uses_symmetric_gram,
)
from influence_trace.planning.history import History, Observation, config_fields, config_key
from influence_trace.planning.launch_plan import (
    LAUNCH_SECONDS,
    ScopeWork,
    scope_launches,
    scope_traffic_bytes,
)
from influence_trace.planning.memory_model import DTYPE_BYTES, Estimate
from influence_trace.planning.placement import Pool
from influence_trace.planning.validation_plan import validation_flops, work_dtype

EFFICIENCY = {"generate": 0.5, "capture": 0.4, "hessian": 0.5}
# Peak dense rates of an H100 SXM (the h200 has the same compute and 4.8 TB/s), when a pool omits them.
DEFAULT_FLOPS = {"bfloat16": 989e12, "float16": 989e12, "tf32": 494e12, "float32": 67e12, "float64": 67e12}
DEFAULT_BANDWIDTH = 3.35e12
STARTUP_SECONDS = 30.0  # Python, torch and CUDA start, the rollouts read (measured: ~25 s on CPU, demo)
LOAD_BYTES_PER_SECOND = 1e9  # the weights read from the volume


@dataclass(frozen=True)
class Rates:
    """A pool's GPU: peak flop/s per dtype and memory bandwidth in bytes/s."""

    flops: dict[str, float]
    bandwidth: float

    def of(self, dtype: str) -> float:
        return self.flops.get(dtype) or DEFAULT_FLOPS[dtype]


DEFAULT_RATES = Rates(dict(DEFAULT_FLOPS), DEFAULT_BANDWIDTH)


def rates_of(pool: Pool | None) -> Rates:
    """The pool's peak rates, an H100's where it gives none."""
    if pool is None:
        return DEFAULT_RATES
    return Rates({**DEFAULT_FLOPS, **pool.peak_flops}, pool.memory_bandwidth or DEFAULT_BANDWIDTH)


@dataclass(frozen=True)
class Duration:
    """Predicted seconds per stage (corrected), their sum, and what corrected them."""

    stages: dict[str, float]
    seconds: float
    model_seconds: float
    note: str


def _time_ratio(same: list[Observation]) -> tuple[float, int]:
    """Mean observed / predicted duration of the configuration's successful runs."""
    ratios = [o.seconds / o.predicted_seconds for o in same
              if o.outcome == "Succeeded" and o.seconds and o.predicted_seconds]
    return (sum(ratios) / len(ratios), len(ratios)) if ratios else (1.0, 0)


def predict(spec: InfluenceTraceSpec, est: Estimate, pool: Pool | None,
            history: History | None = None) -> Duration:
    """The model's stage seconds on ``pool``, scaled by the observed rate of this configuration's runs."""
    stages = stage_seconds(spec, est, rates_of(pool))
    model = sum(stages.values())
    key = config_key(config_fields(spec, est)) if history else None
    same = [o for o in (history.observations if history else []) if o.key == key]
    ratio, runs = _time_ratio(same)
    if not runs:
        return Duration(stages, model, model, "")
    scaled = {s: v * ratio for s, v in stages.items()}
    note = f"durations x{ratio:.2f} as observed in {runs} run(s) of this configuration"
    return Duration(scaled, model * ratio, model, note)


def stage_seconds(spec: InfluenceTraceSpec, est: Estimate, rates: Rates = DEFAULT_RATES) -> dict[str, float]:
    """Predicted seconds of each stage (generate only when the trace generates), per process."""
    shapes = est.shapes
    w = est.workload
    procs = spec.resources.gpus * spec.resources.nodes
    weights = shapes.parameter_count() * DTYPE_BYTES[spec.model.dtype]
    out: dict[str, float] = {"setup": STARTUP_SECONDS + weights / LOAD_BYTES_PER_SECOND}
    gen = spec.rollouts.generate
    if gen is not None:
        batches = -(-w.responses // gen.batch_size)
        reads = gen.max_response_tokens * batches * weights
        out["generate"] = reads / rates.bandwidth / EFFICIENCY["generate"]
    padded = -(-(w.response_tokens + w.prompt_tokens) // procs)
    flops = 4 * shapes.parameter_count() * padded
    out["capture"] = flops / rates.of(spec.model.dtype) / EFFICIENCY["capture"]
    hessian_rate = rates.of(_hessian_dtype(spec)) * EFFICIENCY["hessian"]
    out["hessian"] = (_hessian_flops(spec, est) / hessian_rate + _kernel_overhead(spec, est, rates)) / procs
    if spec.validation is not None:  # on the writer alone, in float32 or the model's wider dtype
        update_flops = validation_flops(spec, shapes.parameter_count(), w)
        out["validate"] = update_flops / rates.of(work_dtype(spec.model.dtype)) / EFFICIENCY["capture"]
    return out


def _hessian_dtype(spec: InfluenceTraceSpec) -> str:
    if spec.trace.hessian_dtype == "float32" and spec.trace.tf32:
        return "tf32"
    return spec.trace.hessian_dtype


def _scopes(spec: InfluenceTraceSpec, est: Estimate) -> tuple[int, int, int]:
    """(scopes, tokens, responses of each): one scope, or the largest group repeated."""
    w = est.workload
    if spec.trace.scope == "all_selected":
        return 1, w.response_tokens, w.responses
    return max(1, w.responses // max(1, w.scope_responses)), w.scope_tokens, w.scope_responses


def _kernel_overhead(spec: InfluenceTraceSpec, est: Estimate, rates: Rates) -> float:
    """Seconds of kernel launches and of the GPU strategy's chunk traffic, over every module."""
    t = spec.trace
    kernels = kernels_for("cuda")
    scopes, tokens, responses = _scopes(spec, est)
    launches = traffic = 0
    for d in traced_module_dims(est.shapes, t.modules, t.factor, t.max_hessian_dim):
        work = ScopeWork(d.k_out, d.k_in, tokens, responses, DTYPE_BYTES[t.hessian_dtype],
                         CHUNK_BYTES[kernels], kernels, t.hessian_source, t.hessian_mode == "inverse")
        launches += scopes * sum(scope_launches(work).values())
        traffic += scopes * scope_traffic_bytes(work)
    return launches * LAUNCH_SECONDS + traffic / rates.bandwidth


def _hessian_flops(spec: InfluenceTraceSpec, est: Estimate) -> float:
    t = spec.trace
    w = est.workload
    dims = traced_module_dims(est.shapes, t.modules, t.factor, t.max_hessian_dim)
    scopes = _scopes(spec, est)[0]
    pair = cyclic_pairs if kernels_for("cuda") == "gpu" else pairs
    total = 0.0
    for d in dims:
        dim = float(d.dim)
        rows = w.response_tokens if t.hessian_source == "token" else w.responses
        build = 2 * rows * dim * dim
        if t.hessian_source == "token" and uses_symmetric_gram(d.k_out, d.k_in):
            build = 2 * rows * pair(d.k_out) * pair(d.k_in)  # the symmetric Gram: about T D^2 / 2
        total += build + 4 * w.response_tokens * dim  # the build (or response rows); gradients and scores
        if t.hessian_mode == "inverse":
            total += scopes * dim**3 / 3 + 2 * dim * dim * w.responses
    return total


def readable(seconds: float | None) -> str | None:
    """'45s', '12m', '3h05m'."""
    if seconds is None:
        return None
    if seconds < 90:
        return f"{seconds:.0f}s"
    if seconds < 5400:
        return f"{seconds / 60:.0f}m"
    return f"{int(seconds // 3600)}h{int(seconds % 3600 // 60):02d}m"
