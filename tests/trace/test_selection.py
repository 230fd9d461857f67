"""Selection edge cases: ties for the maximum, groups without contrast, advantages, maxPrompts."""

from __future__ import annotations

import numpy as np
import pytest
from influence_trace.api.contract import InvalidInput
from influence_trace.api.spec import TraceSettings
from influence_trace.trace.records import Response
from influence_trace.trace.selection import select_groups
from pydantic.alias_generators import to_camel


def settings(**fields: object) -> TraceSettings:
    """TraceSettings from snake_case keywords (the model only accepts the camelCase wire names)."""
    return TraceSettings.model_validate({to_camel(k): v for k, v in fields.items()})


def resp(prompt: str, idx: int, reward: float, advantage: float | None = None, n: int = 2) -> Response:
    return Response(prompt, f"{prompt}-{idx}", (1, 2), tuple(range(3, 3 + n)), reward, advantage)


def test_ties_for_the_maximum_are_all_accepted() -> None:
    rows = [resp("a", 0, 1.0), resp("a", 1, 0.5), resp("a", 2, 1.0), resp("a", 3, 0.0)]
    sel = select_groups(rows, TraceSettings())
    assert [g.prompt_id for g in sel.groups] == ["a"]
    np.testing.assert_array_equal(sel.groups[0].accepted, [True, False, True, False])


def test_all_equal_groups_are_skipped_and_counted() -> None:
    rows = [resp("a", 0, 1.0), resp("a", 1, 1.0), resp("b", 0, 1.0), resp("b", 1, 0.0), resp("c", 0, 0.3)]
    sel = select_groups(rows, TraceSettings())
    assert [g.prompt_id for g in sel.groups] == ["b"]
    assert sel.skipped_groups == 2 and sel.skipped_ids == ["a", "c"] and sel.total_groups == 3


def test_advantage_uses_bessel_std() -> None:
    rewards = [1.0, 0.0, 0.0, 2.0]
    sel = select_groups([resp("a", i, r) for i, r in enumerate(rewards)], TraceSettings())
    r = np.array(rewards)
    expected = (r - r.mean()) / (np.sqrt(((r - r.mean()) ** 2).sum() / (len(r) - 1)) + 1e-6)
    np.testing.assert_allclose(sel.groups[0].advantages, expected, rtol=1e-12)


def test_given_advantages_are_kept_and_all_zero_skipped_for_advantage_agg() -> None:
    rows = [resp("a", 0, 1.0, 0.0), resp("a", 1, 0.0, 0.0), resp("b", 0, 1.0, 0.7), resp("b", 1, 0.0, -0.2)]
    adv = select_groups(rows, settings(contrastive_agg="advantage"))
    assert [g.prompt_id for g in adv.groups] == ["b"] and adv.skipped_ids == ["a"]
    np.testing.assert_array_equal(adv.groups[0].advantages, [0.7, -0.2])
    mean = select_groups(rows, settings(contrastive_agg="mean"))
    assert [g.prompt_id for g in mean.groups] == ["a", "b"]


def test_mixed_given_and_missing_advantages_is_invalid() -> None:
    with pytest.raises(InvalidInput, match="prompt_id 'a'"):
        select_groups([resp("a", 0, 1.0, 0.5), resp("a", 1, 0.0)], TraceSettings())


def test_order_of_first_appearance_and_max_prompts() -> None:
    rows = [resp("z", 0, 1.0), resp("y", 0, 1.0), resp("z", 1, 0.0), resp("x", 0, 0.0), resp("y", 1, 0.0),
            resp("x", 1, 1.0), resp("w", 0, 1.0), resp("w", 1, 1.0)]
    sel = select_groups(rows, TraceSettings())
    assert [g.prompt_id for g in sel.groups] == ["z", "y", "x"]
    assert [r.response_id for r in sel.responses] == ["z-0", "z-1", "y-0", "y-1", "x-0", "x-1"]
    assert sel.num_tokens == 12
    capped = select_groups(rows, TraceSettings(), max_prompts=2)
    assert [g.prompt_id for g in capped.groups] == ["z", "y"]
    assert capped.skipped_ids == ["w"] and capped.total_groups == 4
