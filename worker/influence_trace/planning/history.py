"""What finished attempts measured, and how placement learns from it (pure; no API, no torch).

Every finished attempt leaves one ``Observation``: the model's prediction per stage, the measured peak
(on success) or the pool and stage of a GPU out-of-memory, and durations. Observations are grouped by
a *configuration key*: everything that determines memory apart from the token count (model shapes and
dtype, factor, maxHessianDim, scope, Hessian source and mode, capture and Hessian dtypes, modules,
processes). Tokens per process are kept beside the key, because a measured peak can be carried to
another token count through the model (measured * predicted(new) / predicted(old)).

Rules (docs/operator.md, "Learned placement"):
  seen key      the estimate is the measured peak, carried to this trace's tokens, with ``margin``
                instead of the model's headroom; the largest such figure over the key's runs wins.
  OOM on pool P the same key at the same or more tokens per process never starts on a pool with no
                more GPU memory than P had (zero repeated out-of-memory for one configuration).
  unseen key    each stage of the model is multiplied by the mean ratio measured / predicted of the
                nearest measured keys (same model, fewest differing fields) for that stage; until those
                keys hold two runs, no stage drops below the model's by more than the headroom.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import astuple, dataclass, replace
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from pydantic.alias_generators import to_camel

from influence_trace.api.spec import InfluenceTraceSpec
from influence_trace.api.units import gb
from influence_trace.planning.memory_model import Estimate, EstimateOptions
from influence_trace.planning.placement import (
    DEFAULT_HEADROOM,
    DEFAULT_POOLS,
    Placement,
    Pool,
    choose_pool,
    estimate_and_refit,
)

HISTORY_LIMIT = 200  # observations kept (oldest dropped): ~120 KB of JSON, far below a ConfigMap's 1 MiB
DEFAULT_MARGIN = 0.05  # a measured peak's own margin: the measurement's run-to-run spread, not the model's
MIN_RUNS_TO_LOWER = 2  # nearest-key evidence must hold this many runs before it may lower a stage freely


class HistoryError(ValueError):
    """A history file that cannot be used; the message names the file and the field."""


class _Model(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, validate_by_alias=True, validate_by_name=True,
                              serialize_by_alias=True, extra="ignore")


class Observation(_Model):
    """One finished attempt, as the operator recorded it."""

    id: str = Field(min_length=1, description="trace uid/attempt: recording twice keeps one.")
    key: str = Field(min_length=1, description="Hash of the configuration (config_fields).")
    config: dict[str, str] = Field(default_factory=dict, description="The fields the key hashes.")
    trace: str = ""
    tokens_per_process: int = Field(ge=0)
    pool: str
    pool_gpu_bytes: int = Field(0, ge=0)
    outcome: str
    stage: str | None = None  # the predicted peak stage, or the stage a failure happened in
    predicted_gpu_bytes: int = Field(ge=0)
    predicted_stages: dict[str, int] = Field(default_factory=dict)
    context_bytes: int = Field(0, ge=0)
    measured_gpu_bytes: int | None = Field(None, ge=0)
    measured_host_bytes: int | None = Field(None, ge=0)
    predicted_seconds: float | None = None
    seconds: float | None = None
    finished_at: str | None = None

    @property
    def measured(self) -> bool:
        return self.outcome == "Succeeded" and bool(self.measured_gpu_bytes) and self.predicted_gpu_bytes > 0

    @property
    def gpu_oom(self) -> bool:
        return self.outcome == "GPUOutOfMemory"


class History(_Model):
    """The stored history: newest last, at most ``HISTORY_LIMIT`` observations."""

    version: Literal[1] = 1
    observations: list[Observation] = Field(default_factory=list)

    def record(self, obs: Observation, limit: int = HISTORY_LIMIT) -> bool:
        """Add ``obs`` unless one with its id is there; keep the newest ``limit``. True if added."""
        if any(o.id == obs.id for o in self.observations):
            return False
        self.observations = [*self.observations, obs][-limit:]
        return True

    def to_json(self) -> str:
        return self.model_dump_json(by_alias=True, exclude_none=True)


def parse_history(text: str | None, source: str = "history") -> History:
    """Decode stored history; empty text is an empty history."""
    if not text or not text.strip():
        return History()
    try:
        return History.model_validate(json.loads(text))
    except ValueError as err:  # JSONDecodeError and ValidationError are both ValueErrors
        detail = _errors(err) if isinstance(err, ValidationError) else str(err)
        raise HistoryError(f"{source}: invalid history: {detail}") from None


def _errors(err: ValidationError) -> str:
    return "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in err.errors())


def load_history(path: str | Path) -> History:
    """Read an exported history (the ConfigMap's ``history.json``); errors name the file."""
    path = Path(path)
    try:
        return parse_history(path.read_text(), str(path))
    except OSError as err:
        raise HistoryError(f"{path}: cannot read history ({err.strerror})") from None


# ---- the configuration key -------------------------------------------------------------------------


def config_fields(spec: InfluenceTraceSpec, est: Estimate) -> dict[str, str]:
    """What determines memory besides the token count, as strings (one field differs or not)."""
    t = spec.trace
    return {
        "shapes": _shapes_of(est),
        "modelDtype": spec.model.dtype,
        "factor": str(t.factor),
        "maxHessianDim": str(t.max_hessian_dim),
        "scope": t.scope,
        "hessianSource": t.hessian_source,
        "hessianMode": t.hessian_mode,
        "captureDtype": t.capture_dtype,
        "hessianDtype": t.hessian_dtype,
        "modules": ",".join(sorted(t.modules)),
        "processes": f"{spec.resources.gpus}x{spec.resources.nodes}",
        "generate": "yes" if spec.rollouts.generate else "no",
    }


def _shapes_of(est: Estimate) -> str:
    """The model's dimensions as the estimate resolved them (architecture, preset or config.json)."""
    return "x".join(str(int(v)) for v in astuple(est.shapes))


def config_key(fields: dict[str, str]) -> str:
    """A short stable hash of the configuration fields."""
    return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:16]


# ---- learning ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Learned:
    """The estimate placement should use, how much margin it gets, and what it came from."""

    estimate: Estimate
    margin: float  # replaces the headroom when placing
    source: str  # "model" or "observed (n runs)"
    reason: str  # what was learned, in words ("" when nothing)
    min_pool_gpu_bytes: int = 0  # pools with no more GPU memory than this are ruled out (past OOMs)
    runs: int = 0


def _carried(obs: Observation, est: Estimate) -> int:
    """The measured peak carried to this trace's tokens through the model's own scaling."""
    assert obs.measured_gpu_bytes is not None
    return round(obs.measured_gpu_bytes * est.gpu_bytes / obs.predicted_gpu_bytes)


def _oom_floor(same: list[Observation], tokens: int) -> tuple[int, list[Observation]]:
    """The largest GPU memory that ran out for this key at no more tokens than this trace has."""
    ooms = [o for o in same if o.gpu_oom and o.tokens_per_process <= tokens and o.pool_gpu_bytes]
    return max((o.pool_gpu_bytes for o in ooms), default=0), ooms


def _distance(a: dict[str, str], b: dict[str, str]) -> int:
    return sum(a.get(k) != b.get(k) for k in set(a) | set(b))


def _nearest(history: Iterable[Observation], fields: dict[str, str]) -> list[Observation]:
    """Measured observations of the same model with the fewest differing fields."""
    pool = [o for o in history if o.measured and o.config.get("shapes") == fields["shapes"]
            and o.config.get("modelDtype") == fields["modelDtype"]]
    if not pool:
        return []
    best = min(_distance(o.config, fields) for o in pool)
    return [o for o in pool if _distance(o.config, fields) == best]


def _stage_ratios(near: list[Observation]) -> dict[str, float]:
    """Mean measured / predicted of each observation's peak stage (device bytes without the context)."""
    per: dict[str, list[float]] = {}
    for o in (o for o in near if o.predicted_stages):
        stages = o.predicted_stages
        stage = o.stage if o.stage in stages else max(stages, key=lambda s: stages[s])
        predicted = o.predicted_stages[stage]
        measured = (o.measured_gpu_bytes or 0) - o.context_bytes
        if predicted > 0 and measured > 0:
            per.setdefault(stage, []).append(measured / predicted)
    return {s: sum(r) / len(r) for s, r in per.items()}


def _corrected(est: Estimate, ratios: dict[str, float], floor_share: float) -> Estimate:
    """The model's stages times their ratios, none below ``floor_share`` of the model's."""
    stages = {s: max(round(v * ratios.get(s, 1.0)), round(v * floor_share)) for s, v in est.stages.items()}
    context = est.gpu_bytes - max(est.stages.values())
    return replace(est, stages=stages, gpu_bytes=max(stages.values()) + context)


def learn(spec: InfluenceTraceSpec, est: Estimate, history: History | None, headroom: float,
          margin: float = DEFAULT_MARGIN) -> Learned:
    """Apply the history's rules to the model's estimate of ``spec``."""
    if history is None or not history.observations:
        return Learned(est, headroom, "model", "")
    fields = config_fields(spec, est)
    key = config_key(fields)
    same = [o for o in history.observations if o.key == key]
    floor, ooms = _oom_floor(same, est.tokens_per_gpu)
    oom_note = ""
    if ooms:
        pools = sorted({o.pool for o in ooms})
        oom_note = f"; ran out of GPU memory on {', '.join(pools)} before: starts above {gb(floor)}"
    measured = [o for o in same if o.measured]
    if measured:
        gpu = max(_carried(o, est) for o in measured)
        learned = replace(est, gpu_bytes=gpu)
        n = len(measured)
        reason = (f"observed {gb(gpu)} peak in {n} run{'s' if n > 1 else ''} of this configuration "
                  f"(key {key}, model {gb(est.gpu_bytes)}), {margin:.0%} margin{oom_note}")
        return Learned(learned, margin, f"observed ({n} runs)", reason, floor, n)
    near = _nearest(history.observations, fields)
    if near:
        ratios = _stage_ratios(near)
        floor_share = 0.0 if len(near) >= MIN_RUNS_TO_LOWER else 1 - headroom
        learned = _corrected(est, ratios, floor_share)
        said = ", ".join(f"{s} x{r:.2f}" for s, r in sorted(ratios.items()))
        reason = (f"model corrected by {len(near)} run(s) of the nearest configuration(s) ({said}; "
                  f"model {gb(est.gpu_bytes)}){oom_note}")
        return Learned(learned, headroom, "model", reason, floor, 0)
    return Learned(est, headroom, "model", oom_note.lstrip("; "), floor, 0)


def observation(spec: InfluenceTraceSpec, est: Estimate, *, id: str, trace: str, pool: str,
                pool_gpu_bytes: int, outcome: str, stage: str | None, measured_gpu_bytes: int | None,
                measured_host_bytes: int | None, context_bytes: int, seconds: float | None = None,
                predicted_seconds: float | None = None, finished_at: str | None = None) -> Observation:
    """One attempt's observation, against the model's (not the learned) estimate."""
    fields = config_fields(spec, est)
    return Observation(
        id=id, key=config_key(fields), config=fields, trace=trace, tokens_per_process=est.tokens_per_gpu,
        pool=pool, pool_gpu_bytes=pool_gpu_bytes, outcome=outcome,
        stage=stage if outcome != "Succeeded" else est.peak_stage,
        predicted_gpu_bytes=est.gpu_bytes, predicted_stages=dict(est.stages), context_bytes=context_bytes,
        measured_gpu_bytes=measured_gpu_bytes, measured_host_bytes=measured_host_bytes,
        predicted_seconds=predicted_seconds, seconds=seconds, finished_at=finished_at,
    )



def place_with_history(spec: InfluenceTraceSpec, history: History | None,
                       pools: list[Pool] | tuple[Pool, ...] = DEFAULT_POOLS,
                       headroom: float = DEFAULT_HEADROOM, margin: float = DEFAULT_MARGIN,
                       options: EstimateOptions | None = None) -> tuple[Estimate, Learned, Placement]:
    """The model's estimate, what the history makes of it, and the pool chosen from the latter."""
    est, refit = estimate_and_refit(spec, None, options)
    learned = learn(spec, est, history, headroom, margin)
    above = [p for p in pools if p.gpu_memory_bytes > learned.min_pool_gpu_bytes]
    names = {p.name for p in above}
    allowed = None if spec.resources.pools is None else [n for n in spec.resources.pools if n in names]
    if not above or allowed == []:
        why = f"no allowed pool has more GPU memory than {gb(learned.min_pool_gpu_bytes)}: {learned.reason}"
        return est, learned, Placement(None, why, [], learned.margin)
    placement = choose_pool(learned.estimate, above, allowed, learned.margin, refit, spec.trace.factor)
    return est, learned, placement
