"""Commit messages since the rule was set (issue 25, 2026-12-07): a subject of at most 72 characters,
then a blank line and a body that says why. Commits before RULE_SINCE are history and not checked."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
RULE_SINCE = "6a4211c"  # the last commit before the rule; everything after it is checked
MAX_SUBJECT = 72


def problems(message: str) -> list[str]:
    """What is wrong with one commit message (empty when nothing is)."""
    lines = message.rstrip("\n").split("\n")
    found = []
    if len(lines[0]) > MAX_SUBJECT:
        found.append(f"subject of {len(lines[0])} characters (at most {MAX_SUBJECT})")
    if len(lines) < 3 or lines[1].strip() or not any(line.strip() for line in lines[2:]):
        found.append("no body after a blank line (say why)")
    return found


def messages_since(base: str) -> list[tuple[str, str]] | None:
    """(hash, message) of every commit after ``base``; None where the history does not reach it."""
    git = ["git", "-C", str(ROOT)]
    if subprocess.run([*git, "cat-file", "-e", f"{base}^{{commit}}"], capture_output=True).returncode:
        return None
    out = subprocess.run([*git, "log", "--format=%h%x00%B%x01", f"{base}..HEAD"], capture_output=True,
                         text=True, check=True).stdout
    pairs = [entry.strip("\n").split("\0", 1) for entry in out.split("\1") if entry.strip()]
    return [(sha, message) for sha, message in pairs]


def test_the_check_finds_a_long_subject_and_a_missing_body() -> None:
    assert problems("Short subject\n\nWhy it was needed.\n") == []
    assert problems("x" * 73 + "\n\nwhy") == ["subject of 73 characters (at most 72)"]
    assert problems("Only a subject\n") == ["no body after a blank line (say why)"]


def test_every_commit_since_the_rule_has_a_short_subject_and_a_body() -> None:
    commits = messages_since(RULE_SINCE)
    if commits is None:
        pytest.skip(f"the history does not reach {RULE_SINCE} (a shallow clone)")
    bad = [f"{sha} {message.splitlines()[0]!r}: {'; '.join(why)}"
           for sha, message in commits if (why := problems(message))]
    assert bad == []
