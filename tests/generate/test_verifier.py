"""The built-in verifier on a table of tricky answers: extraction, normalisation and the 0/1 reward."""

from __future__ import annotations

import pytest
from influence_trace.generate.verifier import answers_match, extract_answer, normalize_answer, reward

EXTRACTED = [
    # (response text, final answer as extracted)
    (r"so the answer is \boxed{42}.", "42"),
    (r"first \boxed{1}, then corrected: \boxed{2}", "2"),
    (r"\boxed{\frac{\sqrt{3}}{2}}", r"\frac{\sqrt{3}}{2}"),
    (r"nested \boxed{\left\{ 1, \{2\} \right\}} done", r"\left\{ 1, \{2\} \right\}"),
    (r"\boxed {7}", "7"),
    (r"\boxed 7$", "7"),
    (r"\fbox{3}", "3"),
    (r"cut off at \boxed{\frac{1}{", None),  # an unclosed box is no answer, not its digits
    (r"closed \boxed{5} then cut \boxed{6", None),  # the last box decides
    ("the total is 1,234 apples", "1,234"),
    ("x = -3.", "-3"),
    ("5-3 leaves 2, not -2", "-2"),
    ("then 5-3", "3"),  # a binary minus is not a sign
    ("ratio 3/4", "3/4"),
    ("about .5 of it", ".5"),
    ("it is \u22127", "\u22127"),
    ("12 apples and 3.25 pears", "3.25"),
    ("no number here", None),
    ("", None),
]

NORMALIZED = [
    # (answer, canonical form)
    ("42", "42"),
    (" 42 ", "42"),
    ("$42$", "42"),
    ("42.", "42"),
    ("+42", "42"),
    ("42.0", "42"),
    ("1,000", "1000"),
    ("1,000,000.5", "2000001/2"),
    ("1,2", "1,2"),  # not a thousands grouping: left alone
    ("0.5", "1/2"),
    ("1/2", "1/2"),
    ("2/4", "1/2"),
    (r"\frac{1}{2}", "1/2"),
    (r"\dfrac{1}{2}", "1/2"),
    (r"\tfrac12", "1/2"),
    (r"-\frac{3}{4}", "-3/4"),
    (r"\frac{-3}{4}", "-3/4"),
    ("-0", "0"),
    ("\u22127", "-7"),
    ("x = 3", "3"),
    (r"\boxed{12}", "12"),
    (r"\text{Yes}", "yes"),
    (r"\frac{\sqrt3}{2}", r"(\sqrt{3})/2"),
    ("1/0", "1/0"),
]

MATCHES = [
    # (candidate, reference, equal?)
    (r"\frac{1}{2}", "0.5", True),
    ("1/2", r"\dfrac{1}{2}", True),
    ("-3", "-3.0", True),
    ("-3", "3", False),
    ("+3", "3", True),
    ("1,234", "1234", True),
    ("0.33", "1/3", False),  # decimals are exact, not rounded
    (r"\frac{\sqrt{3}}{2}", r"\dfrac{\sqrt3}{2}", True),
    ("YES", "yes", True),
    (None, "3", False),
    ("3", None, False),
    ("", "", False),  # an empty answer matches nothing
]

REWARDS = [
    (r"... so \boxed{\frac{1}{2}}.", "0.5", 1.0),
    (r"... so \boxed{\frac{1}{2}}.", "1/3", 0.0),
    ("the result is -12.", "-12", 1.0),
    ("the result is 12.", "-12", 0.0),
    (r"\boxed{3} hmm, maybe 4", "3", 1.0),  # the box wins over a later number
    (r"\boxed{3", "3", 0.0),  # truncated box
    ("no answer at all", "3", 0.0),
    ("the answer is 1,000", "1000", 1.0),
]


@pytest.mark.parametrize(("text", "expected"), EXTRACTED)
def test_extract_answer(text: str, expected: str | None) -> None:
    assert extract_answer(text) == expected


@pytest.mark.parametrize(("answer", "expected"), NORMALIZED)
def test_normalize_answer(answer: str, expected: str) -> None:
    assert normalize_answer(answer) == expected


@pytest.mark.parametrize(("candidate", "reference", "equal"), MATCHES)
def test_answers_match(candidate: str | None, reference: str | None, equal: bool) -> None:
    assert answers_match(candidate, reference) is equal


@pytest.mark.parametrize(("text", "reference", "expected"), REWARDS)
def test_reward(text: str, reference: str, expected: float) -> None:
    assert reward(text, reference) == expected
