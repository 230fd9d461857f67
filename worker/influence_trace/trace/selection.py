"""Which groups are traced: accepted/rejected flags, advantages, and the groups without contrast.

A group is the responses that share a prompt_id. Only groups with a contrast between accepted and
rejected responses carry a learning signal, so the rest are skipped (and counted). The order here is
the *scope order* every later step uses: groups by first appearance, responses in input order.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from influence_trace.api.contract import InvalidInput
from influence_trace.api.spec import TraceSettings
from influence_trace.planning.workload import Workload
from influence_trace.trace.records import Response

ADVANTAGE_EPS = 1e-6


@dataclass
class ResponseGroup:
    """One prompt's responses with their accepted flags and advantages (float64)."""

    prompt_id: str
    responses: list[Response]
    accepted: np.ndarray  # bool, one per response
    advantages: np.ndarray  # float64, one per response

    @property
    def num_tokens(self) -> int:
        return sum(r.num_tokens for r in self.responses)


@dataclass
class Selection:
    """The traced groups in scope order, and what was skipped for lack of contrast."""

    groups: list[ResponseGroup]
    skipped_groups: int
    skipped_ids: list[str]
    total_groups: int

    @property
    def responses(self) -> list[Response]:
        """Every selected response, flattened in scope order."""
        return [r for g in self.groups for r in g.responses]

    @property
    def num_tokens(self) -> int:
        return sum(g.num_tokens for g in self.groups)

    @property
    def token_offsets(self) -> np.ndarray:
        """R + 1 token row offsets (int64) in scope order: response i owns rows [off[i], off[i + 1])."""
        counts = [r.num_tokens for r in self.responses]
        return np.concatenate([[0], np.cumsum(counts, dtype=np.int64)]).astype(np.int64)


def selection_workload(selection: Selection) -> Workload:
    """The selection's exact counts, as the memory model takes them (per_prompt's largest scope is the
    largest group by tokens and, apart, by responses)."""
    responses = selection.responses
    return Workload(
        response_tokens=selection.num_tokens,
        responses=len(responses),
        scope_tokens=max((g.num_tokens for g in selection.groups), default=0),
        scope_responses=max((len(g.responses) for g in selection.groups), default=0),
        max_sequence_tokens=max((len(r.prompt_ids) + r.num_tokens for r in responses), default=0),
        prompt_tokens=sum(len(r.prompt_ids) for r in responses),
        source="the selected responses",
    )


def group_advantages(responses: list[Response]) -> np.ndarray:
    """Given advantages, or (r - mean) / (std + 1e-6) with Bessel's correction when none are given."""
    given = [r.advantage is not None for r in responses]
    if all(given):
        return np.array([r.advantage for r in responses], dtype=np.float64)
    if any(given):
        missing = [r.response_id for r in responses if r.advantage is None]
        raise InvalidInput(
            f"prompt_id {responses[0].prompt_id!r}: advantage is given for some responses but not for "
            f"{missing[:5]}; give it for every response of a group or for none"
        )
    rewards = np.array([r.reward for r in responses], dtype=np.float64)
    std = rewards.std(ddof=1) if len(rewards) > 1 else 0.0
    return (rewards - rewards.mean()) / (std + ADVANTAGE_EPS)


def _by_prompt(responses: list[Response]) -> dict[str, list[Response]]:
    groups: dict[str, list[Response]] = {}
    for response in responses:
        groups.setdefault(response.prompt_id, []).append(response)
    return groups


def _has_contrast(members: list[Response], advantages: np.ndarray | None) -> bool:
    rewards = [r.reward for r in members]
    if min(rewards) == max(rewards):
        return False
    return advantages is None or bool(np.any(advantages != 0.0))


def select_groups(responses: list[Response], trace: TraceSettings, max_prompts: int = 0) -> Selection:
    """Group, flag and filter the responses; ``max_prompts > 0`` keeps the first N selected groups.

    ``skipped_groups`` counts the groups without contrast (all rewards equal, or with
    ``contrastiveAgg: advantage`` all advantages zero); groups dropped by ``max_prompts`` are not
    counted there (``total_groups`` still includes them).
    """
    by_prompt = _by_prompt(responses)
    selected: list[ResponseGroup] = []
    skipped: list[str] = []
    for prompt_id, members in by_prompt.items():
        rewards = np.array([r.reward for r in members], dtype=np.float64)
        contrast_checked = min(rewards) != max(rewards)
        advantages = group_advantages(members) if contrast_checked else None
        use_adv = advantages if trace.contrastive_agg == "advantage" else None
        if advantages is None or not _has_contrast(members, use_adv):
            skipped.append(prompt_id)
            continue
        if max_prompts > 0 and len(selected) >= max_prompts:
            continue
        accepted = rewards == rewards.max()
        selected.append(ResponseGroup(prompt_id, list(members), accepted, advantages))
    return Selection(selected, len(skipped), skipped, len(by_prompt))
