"""The records passed between the worker's steps: one validated response, and a run's results."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class Response:
    """One rollout row after validation and tokenization (token ids are the model's vocabulary)."""

    prompt_id: str
    response_id: str
    prompt_ids: tuple[int, ...]
    response_ids: tuple[int, ...]
    reward: float
    advantage: float | None = None
    row: int = -1  # row index in the rollouts file, for error messages

    @property
    def num_tokens(self) -> int:
        return len(self.response_ids)


@dataclass
class ModuleReport:
    """Per traced module: projection sizes and the damping each scope ended up with."""

    name: str
    in_features: int
    out_features: int
    k_in: int
    k_out: int
    damping: list[float] = field(default_factory=list)  # one per scope, after retries
    retries: int = 0  # Cholesky retries with ten times the damping, over all scopes

    @property
    def dim(self) -> int:
        return self.k_in * self.k_out


@dataclass
class TraceResult:
    """What the computation returns: scores per scored response, and what it did to get them."""

    scores: dict[str, np.ndarray]  # response_id -> float64 scores, one per response token
    accepted: dict[str, bool]
    modules: list[ModuleReport]
    scopes: int
    diagnostics: dict[str, float] = field(default_factory=dict)  # HINV_DOT summary when asked
