"""The built-in verifier: does a response's final answer equal the reference answer?

Generation (``spec.rollouts.generate``) rewards each sampled response with ``reward(text, answer)``:
1.0 when the response's final answer equals the reference after normalisation, else 0.0. It mirrors
the math-RL pipelines this tool traces, whose learning signal is exactly this 0/1 reward, so a
verifier that is stricter or looser than theirs would trace a different signal. Pure Python (no
torch), so it is cheap to test on a table of strings.

Rules (also in docs/generation.md):
- The final answer is the content of the last *closed* ``\\boxed{...}`` (or ``\\fbox{...}``), braces
  nested to any depth. A response that opens a box but never closes it (cut off by the token limit)
  has no answer: a truncated box is not a committed answer, and its digits must not earn a reward.
- Without any box, the final answer is the last number in the text (``-3``, ``1,234``, ``0.5``, ``3/4``).
- Normalisation removes what does not change the value: whitespace, ``$``, ``\\left``/``\\right``,
  LaTeX spacing, ``\\text{}``/``\\mathrm{}`` wrappers, a leading ``x =``, trailing periods, a leading
  ``+``, thousands commas; ``\\dfrac``/``\\tfrac``/``\\frac{a}{b}``/``\\frac12`` become ``a/b``; the
  Unicode minus becomes ``-``. A numeric answer (integer, decimal or fraction of those) is then written
  as an exact reduced fraction, so ``\\frac{1}{2}``, ``1/2``, ``2/4`` and ``0.5`` are equal and ``5.0``
  equals ``5``. Decimals are compared exactly (``0.33`` is not ``1/3``). Other answers are compared as
  normalised strings, ignoring case when they contain no LaTeX command.
"""

from __future__ import annotations

import re
from fractions import Fraction

_BOX = re.compile(r"\\(?:boxed|fbox)\b")
# A sign counts only where it cannot be a binary operator ("5-3" ends with the number 3, not -3).
_NUMBER = re.compile(
    r"(?:(?<![\w)\]}.])[-+\u2212])?(?<![\w.,])(?:\d{1,3}(?:,\d{3})+|\d+|(?=\.\d))(?:\.\d+)?(?:/\d+(?:\.\d+)?)?"
)
_THOUSANDS = re.compile(r"^-?\d{1,3}(?:,\d{3})+(?:\.\d+)?$")
_DECIMAL = r"-?(?:\d+(?:\.\d*)?|\.\d+)"
_NUMERIC = re.compile(rf"^\(?({_DECIMAL})\)?(?:/\(?({_DECIMAL})\)?)?$")
_DROP = ("\\left", "\\right", "\\!", "\\,", "\\;", "\\:", "\\displaystyle", "$", "\\$")
_WRAPPERS = re.compile(r"\\(?:text|textbf|mathrm|mathbf|operatorname)\{([^{}]*)\}")
_FRAC_SHORT = re.compile(r"\\frac(\d)(\d)")
_ASSIGNMENT = re.compile(r"^[a-zA-Z]\w*=")
_SQRT_SHORT = re.compile(r"\\sqrt(\d+)")


def _closing_brace(text: str, start: int) -> int | None:
    """Index of the brace closing the one at ``start``, or None when it never closes."""
    depth = 0
    for i in range(start, len(text)):
        if text[i] == "{":
            depth += 1
        elif text[i] == "}":
            depth -= 1
            if depth == 0:
                return i
    return None


def _box_content(text: str, end_of_command: int) -> str | None:
    """What a box at ``end_of_command`` holds: ``{...}`` (nested), or ``\\boxed 5``'s single token."""
    rest = text[end_of_command:]
    stripped = rest.lstrip()
    if stripped.startswith("{"):
        start = end_of_command + len(rest) - len(stripped)
        close = _closing_brace(text, start)
        return None if close is None else text[start + 1 : close]
    token = re.match(r"\s+([^\s$]+)", rest)
    return token.group(1) if token else None


def last_boxed(text: str) -> str | None:
    """Content of the last closed box; None when there is no box or the last one never closes."""
    matches = list(_BOX.finditer(text))
    if not matches:
        return None
    return _box_content(text, matches[-1].end())


def extract_answer(text: str) -> str | None:
    """The response's final answer (see the module docstring), not yet normalised; None if none."""
    if _BOX.search(text):
        return last_boxed(text)
    numbers = _NUMBER.findall(text)
    return numbers[-1] if numbers else None


def _replace_fracs(text: str) -> str:
    """``\\frac{a}{b}`` -> ``(a)/(b)``, innermost first, so nested fractions survive."""
    text = re.sub(r"\\[dt]frac", r"\\frac", text)
    text = _FRAC_SHORT.sub(r"(\1)/(\2)", text)
    while (start := text.rfind("\\frac{")) != -1:
        num_end = _closing_brace(text, start + 5)
        if num_end is None or num_end + 1 >= len(text) or text[num_end + 1] != "{":
            return text
        den_end = _closing_brace(text, num_end + 1)
        if den_end is None:
            return text
        numerator, denominator = text[start + 6 : num_end], text[num_end + 2 : den_end]
        text = f"{text[:start]}({numerator})/({denominator}){text[den_end + 1:]}"
    return text


def _as_fraction(text: str) -> Fraction | None:
    match = _NUMERIC.match(text)
    if match is None:
        return None
    try:
        value = Fraction(match.group(1))
        return value / Fraction(match.group(2)) if match.group(2) else value
    except ZeroDivisionError:
        return None


def _canonical_number(value: Fraction) -> str:
    return str(value.numerator) if value.denominator == 1 else f"{value.numerator}/{value.denominator}"


def normalize_answer(answer: str) -> str:
    """A canonical form of an answer: equal forms mean equal answers (see the module docstring)."""
    text = answer.strip()
    boxed = last_boxed(text)
    text = boxed if boxed is not None else text  # a reference may itself be written boxed
    for token in _DROP:
        text = text.replace(token, "")
    text = _WRAPPERS.sub(r"\1", text).replace("\\ ", "")
    text = re.sub(r"\s+", "", text).replace("\u2212", "-")
    text = _ASSIGNMENT.sub("", text).rstrip(".")
    text = text.removeprefix("+")
    if _THOUSANDS.match(text):
        text = text.replace(",", "")
    text = _replace_fracs(_SQRT_SHORT.sub(r"\\sqrt{\1}", text))
    text = re.sub(r"\((-?[\d.]+)\)", r"\1", text)  # (1)/(2) -> 1/2
    number = _as_fraction(text)
    if number is not None:
        return _canonical_number(number)
    return text if "\\" in text else text.casefold()


def answers_match(candidate: str | None, reference: str | None) -> bool:
    """True when both are present and normalise to the same form (an empty answer matches nothing)."""
    if candidate is None or reference is None:
        return False
    normalized = normalize_answer(candidate)
    return normalized != "" and normalized == normalize_answer(reference)


def reward(response_text: str, reference: str | None) -> float:
    """1.0 when the response's final answer equals the reference after normalisation, else 0.0."""
    return 1.0 if answers_match(extract_answer(response_text), reference) else 0.0
