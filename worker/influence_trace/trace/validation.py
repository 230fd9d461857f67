"""Stage validate: the linear datamodeling score (LDS) of a trace's token scores.

After the trace, from the same starting weights, each of ``subsets`` policy updates keeps a random
``fraction`` of the response tokens in the policy-gradient loss (the others' loss weights are zero),
and the change of the contrast objective the scores explain is measured. The LDS is the Spearman
correlation, over the subsets, between that change and the subset's predicted change: the sum of its
tokens' scores, each weighted as the update weighs the token's loss relative to the traced objective.
docs/algorithm.md ("Validation") defines the objective and the outcome exactly.

An *objective unit* is one contrast objective ``J_u = sum_r c_u[r] f_r`` and the responses whose tokens
are scored against it: one unit under ``all_selected`` without leave-one-out, one per group under
``per_prompt``, one per response with leave-one-out. A subset's outcome is
``sum_u [J_u(theta_u) - J_u(theta_0)]``, ``theta_u`` the update from the unit's own kept tokens only.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from influence_trace.api.progress import REPORTER
from influence_trace.api.spec import InfluenceTraceSpec, TrainingSpec, ValidateSpec
from influence_trace.trace.projection import find_traced_linears
from influence_trace.trace.scoring import contrast
from influence_trace.trace.selection import Selection
from influence_trace.trace.update import (
    PolicyOptimizer,
    accumulate,
    response_coefficients,
    update_policy,
    weighted_log_prob,
)

STAGE = "validate"
REMOVED_SHARE = 0.01  # the top / bottom / random 1% of tokens removed from the full update


@dataclass(frozen=True)
class Unit:
    """One contrast objective: the responses whose kept tokens update it, and its coefficients on
    ``sum_t log p_t`` of every response (``c_u[r] * b_r``, b_r the traced output function's factor)."""

    updated: list[int]
    support: list[int]  # responses with a nonzero objective coefficient
    coefs: np.ndarray  # one per selected response (scope order)


@dataclass
class Validation:
    """Every subset's predicted and actual change, and the summary metrics derived from them."""

    settings: dict[str, Any]
    predicted: list[float] = field(default_factory=list)
    actual: list[float] = field(default_factory=list)
    kept_tokens: list[int] = field(default_factory=list)
    full: dict[str, float] = field(default_factory=dict)
    removal: dict[str, dict[str, float]] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def lds(self) -> float | None:
        return spearman(np.array(self.predicted), np.array(self.actual))

    def summary(self) -> dict[str, Any]:
        """What summary.json records (validation.json adds every subset)."""
        return {**self.settings, "lds": self.lds, "full_update": self.full, "removal": self.removal,
                "seconds": round(self.seconds, 6)}

    def document(self) -> dict[str, Any]:
        subsets = [{"predicted": p, "actual": a, "kept_tokens": k}
                   for p, a, k in zip(self.predicted, self.actual, self.kept_tokens, strict=True)]
        return {**self.summary(), "subsets_detail": subsets}


def _ranks(x: np.ndarray) -> np.ndarray:
    """Ranks from 0, ties given their average rank."""
    _, inverse, counts = np.unique(x, return_inverse=True, return_counts=True)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    return (starts + (counts - 1) / 2.0)[inverse]


def spearman(a: np.ndarray, b: np.ndarray) -> float | None:
    """Spearman's rank correlation (None when either side is constant or has fewer than 2 values)."""
    if len(a) < 2:
        return None
    ra, rb = _ranks(np.asarray(a, dtype=np.float64)), _ranks(np.asarray(b, dtype=np.float64))
    ra, rb = ra - ra.mean(), rb - rb.mean()
    denom = float(np.sqrt((ra * ra).sum() * (rb * rb).sum()))
    return None if denom == 0 else float((ra * rb).sum() / denom)


def objective_factors(selection: Selection, spec: InfluenceTraceSpec) -> np.ndarray:
    """b_r, the traced output function's factor on ``sum_t log p_t``: 1/n_r (token_mean) or 1, times
    A_r for log_prob_advantage."""
    trace = spec.trace
    out = []
    for group in selection.groups:
        for response, adv in zip(group.responses, group.advantages, strict=True):
            b = 1.0 / max(response.num_tokens, 1) if trace.loss_aggregation == "token_mean" else 1.0
            out.append(b * float(adv) if trace.output_function == "log_prob_advantage" else b)
    return np.array(out, dtype=np.float64)


def build_units(selection: Selection, spec: InfluenceTraceSpec) -> list[Unit]:
    """The objective units of the trace's scopes (docs/algorithm.md, "Validation")."""
    trace, b = spec.trace, objective_factors(selection, spec)
    groups = selection.groups if trace.scope == "per_prompt" else [None]
    units, first, total = [], 0, len(b)
    for group in groups:
        members = selection.groups if group is None else [group]
        last = first + sum(len(g.responses) for g in members)
        c = contrast(np.concatenate([g.accepted for g in members]),
                     np.concatenate([g.advantages for g in members]), trace).dense()
        rows = [list(range(first, last))] if not trace.exclude_self_response else [[o] for o in
                                                                                     range(first, last)]
        for updated in rows:
            coefs = np.zeros(total)
            coefs[first:last] = c[updated[0] - first] * b[first:last]
            units.append(Unit(updated, [int(i) for i in np.flatnonzero(coefs)], coefs))
        first = last
    return units


def prediction_weights(selection: Selection, spec: InfluenceTraceSpec) -> np.ndarray:
    """Per token (scope order), the update's weight on it relative to the traced objective's:
    A_r / R for log_prob (the update weighs by the advantage, the objective does not), 1 / R for
    log_prob_advantage (both do); the aggregation's 1/n_r is in both and cancels."""
    responses = selection.responses
    advantage_traced = spec.trace.output_function == "log_prob_advantage"
    per = [1.0 if advantage_traced else float(a) for g in selection.groups for a in g.advantages]
    count = len(responses)
    return np.concatenate([np.full(r.num_tokens, w / count) for r, w in zip(responses, per, strict=True)])


@contextmanager
def _only_grad(model: nn.Module, params: list[nn.Parameter]) -> Iterator[None]:
    """Gradients for ``params`` alone; flags restored afterwards."""
    flags = [p.requires_grad for p in model.parameters()]
    chosen = {id(p) for p in params}
    for p in model.parameters():
        p.requires_grad_(id(p) in chosen)
    try:
        yield
    finally:
        for p, flag in zip(model.parameters(), flags, strict=True):
            p.requires_grad_(flag)


class Measure:
    """The actual outcome of a token mask: the policy update(s) it defines, then the objectives."""

    def __init__(self, model: nn.Module, selection: Selection, spec: InfluenceTraceSpec, device: str,
                 capture_tokens: int) -> None:
        self.model, self.selection, self.spec = model, selection, spec
        self.responses = selection.responses
        self.device, self.capture_tokens = torch.device(device), capture_tokens
        self.units = build_units(selection, spec)
        self.update_coefs = response_coefficients(selection, spec.trace.loss_aggregation)
        self.offsets = [int(x) for x in selection.token_offsets]
        self.traced = [m.weight for _, m in find_traced_linears(model, list(spec.trace.modules))]
        settings: ValidateSpec = spec.validation or ValidateSpec()
        self.target = settings.target
        self.params = self.traced if self.target == "sgd" else list(model.parameters())
        self.backup = [p.detach().clone() for p in self.params]
        self.baseline = [self._objective(u) for u in self.units]
        self.lr = self._sgd_rate(settings.step_size) if self.target == "sgd" else 0.0

    @property
    def tokens(self) -> int:
        return self.offsets[-1]

    def _objective(self, unit: Unit) -> float:
        return weighted_log_prob(self.model, self.responses, unit.support, unit.coefs, self.device,
                                 self.capture_tokens)

    def _weights(self, mask: np.ndarray) -> list[np.ndarray]:
        bounds = zip(self.offsets[:-1], self.offsets[1:], strict=True)
        return [mask[a:b].astype(np.float64) for a, b in bounds]

    def _gradient(self, idx: list[int], mask: np.ndarray) -> list[torch.Tensor]:
        """d L_mask / d W of the traced weights, L over the responses ``idx`` (scale 1/R as the update)."""
        for p in self.traced:
            p.grad = None
        with _only_grad(self.model, self.traced), torch.enable_grad():
            accumulate(self.model, self.responses, idx, self.update_coefs, 1.0 / len(self.responses),
                       self.device, self.capture_tokens, self._weights(mask))
        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in self.traced]
        for p in self.traced:
            p.grad = None
        return grads

    def _sgd_rate(self, step_size: float) -> float:
        """The learning rate at which the full update moves the traced weights by step_size * ||W||."""
        grads = self._gradient(list(range(len(self.responses))), np.ones(self.tokens, dtype=bool))
        gnorm = float(torch.sqrt(sum((g.double() ** 2).sum() for g in grads)))
        wnorm = float(torch.sqrt(sum((w.detach().double() ** 2).sum() for w in self.traced)))
        return 0.0 if gnorm == 0 else step_size * wnorm / gnorm

    @torch.no_grad()
    def _restore(self) -> None:
        for p, saved in zip(self.params, self.backup, strict=True):
            p.copy_(saved)

    def _sgd_step(self, unit: Unit, mask: np.ndarray) -> None:
        grads = self._gradient(unit.updated, mask)
        with torch.no_grad():
            for p, g in zip(self.traced, grads, strict=True):
                p.add_(g.to(p.dtype), alpha=-self.lr)

    def _optimizer_step(self, mask: np.ndarray) -> None:
        training = self.spec.training or TrainingSpec()
        optimizer = PolicyOptimizer(self.model, training.optimizer)
        with torch.enable_grad():
            update_policy(self.model, self.selection, training, self.spec.trace.loss_aggregation, optimizer,
                          str(self.device), self.capture_tokens, token_weights=self._weights(mask))

    def outcome(self, mask: np.ndarray) -> float:
        """sum over units of J_u after the update from the unit's own kept tokens, minus J_u before."""
        total = 0.0
        for unit, before in zip(self.units, self.baseline, strict=True):
            if not any(mask[self.offsets[i] : self.offsets[i + 1]].any() for i in unit.updated):
                continue  # nothing kept: no update, no change
            if self.target == "sgd":
                self._sgd_step(unit, mask)
            else:
                self._optimizer_step(mask)
            total += self._objective(unit) - before
            self._restore()
        return total


def _flat_scores(selection: Selection, scores: dict[str, np.ndarray]) -> np.ndarray:
    return np.concatenate([np.asarray(scores[r.response_id], dtype=np.float64) for r in selection.responses])


@contextmanager
def working_model(model: nn.Module) -> Iterator[nn.Module]:
    """The model itself when held in float32/float64 (restored by Measure), else a float32 copy: the
    measured changes are far below bfloat16's resolution."""
    dtype = next(model.parameters()).dtype
    if dtype in (torch.float32, torch.float64):
        yield model
        return
    work = copy.deepcopy(model).float()
    try:
        yield work
    finally:
        del work


def _subset_masks(tokens: int, settings: ValidateSpec) -> list[np.ndarray]:
    rng = np.random.default_rng(settings.seed)
    keep = min(tokens, max(1, round(settings.fraction * tokens)))
    masks: list[np.ndarray] = []
    for _ in range(settings.subsets):
        mask: np.ndarray = np.zeros(tokens, dtype=bool)
        mask[rng.choice(tokens, keep, replace=False)] = True
        masks.append(mask)
    return masks


def _removal_masks(contributions: np.ndarray, seed: int) -> dict[str, np.ndarray]:
    """The full mask less the top / bottom / a random 1% of tokens by contribution (at least one)."""
    tokens = len(contributions)
    n = max(1, round(REMOVED_SHARE * tokens))
    order = np.argsort(contributions, kind="stable")
    rng = np.random.default_rng([seed, 1])  # a stream apart from the subsets'
    picks = {"top_1pct": order[-n:], "bottom_1pct": order[:n], "random_1pct": rng.choice(tokens, n,
                                                                                          replace=False)}
    out: dict[str, np.ndarray] = {}
    for name, removed in picks.items():
        kept: np.ndarray = np.ones(tokens, dtype=bool)
        kept[removed] = False
        out[name] = kept
    return out


def validate(model: nn.Module, selection: Selection, scores: dict[str, np.ndarray], spec: InfluenceTraceSpec,
             device: str, capture_tokens: int) -> Validation:
    """Measure the trace's scores against ``spec.validate.subsets`` subset updates (see module doc)."""
    settings = spec.validation or ValidateSpec()
    began = time.perf_counter()
    model.eval()  # no dropout: every update's gradient is the traced objective's
    with working_model(model) as work:
        measure = Measure(work, selection, spec, device, capture_tokens)
        contributions = prediction_weights(selection, spec) * _flat_scores(selection, scores)
        scale = measure.lr if settings.target == "sgd" else 1.0
        result = Validation(_settings(settings, measure))

        def record(mask: np.ndarray) -> tuple[float, float]:
            return scale * float(contributions[mask].sum()), measure.outcome(mask)

        masks = _subset_masks(measure.tokens, settings)
        for mask in REPORTER.track(masks, STAGE, "update", len(masks)):  # the status' progress column
            predicted, actual = record(mask)
            result.predicted.append(predicted)
            result.actual.append(actual)
            result.kept_tokens.append(int(mask.sum()))
        full_pred, full_actual = record(np.ones(measure.tokens, dtype=bool))
        result.full = {"predicted": full_pred, "actual": full_actual}
        for name, mask in _removal_masks(contributions, settings.seed).items():
            predicted, actual = record(mask)
            result.removal[name] = {"removed_tokens": int((~mask).sum()), "predicted": predicted - full_pred,
                                    "actual": actual - full_actual}
    result.seconds = time.perf_counter() - began
    return result


def _settings(settings: ValidateSpec, measure: Measure) -> dict[str, Any]:
    return {"target": settings.target, "subsets": settings.subsets, "fraction": settings.fraction,
            "seed": settings.seed, "step_size": settings.step_size if settings.target == "sgd" else None,
            "learning_rate": measure.lr if settings.target == "sgd" else None, "tokens": measure.tokens,
            "objective_units": len(measure.units)}
