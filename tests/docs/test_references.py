"""Every repository file the prose cites exists: paths in the docstrings and comments of the worker's and
the operator's Python files, and in docs/*.md and README.md.

A citation is a path-like word ending in .py, .md or .sh: ``trace/staging.py``, ``docs/worker.md``,
``bench/gpu_check.sh``, ``README.md``. It is found when a tracked file's path is that path or ends with
``/`` + it, so a path relative to the package (``run/exchange.py``) or a bare file name counts too.
Absolute paths and URLs are not the repository's and are passed over.
"""

from __future__ import annotations

import ast
import io
import re
import subprocess
import tokenize
from pathlib import Path

import pytest

from tests.docs import blocks

REPO = blocks.REPO
PACKAGES = {"worker": REPO / "worker" / "influence_trace", "operator": REPO / "operator"}
# A path-like word, not inside a longer path (so "/abs/x.py" and "a.b/x.py" are not read as "x.py").
CITED = re.compile(r"(?<![\w./~-])((?:[\w-]+/)*[\w-]+(?:\.[\w-]+)*\.(?:py|md|sh))(?![\w/-])")
URL = re.compile(r"[a-z][a-z0-9+.-]*://\S+")
def cited_paths(text: str) -> set[str]:
    """The repository paths ``text`` cites (URLs left out)."""
    return set(CITED.findall(URL.sub(" ", text)))


def tracked_files() -> list[str]:
    """Files git tracks, and the untracked ones it does not ignore (a change's new files)."""
    out = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"], cwd=REPO,
                         capture_output=True, text=True, check=True).stdout
    return [line for line in out.splitlines() if (REPO / line).exists()]


def missing(cited: set[str], files: list[str]) -> set[str]:
    """The cited paths no file's path equals or ends with."""
    return {c for c in cited if not any(f == c or f.endswith("/" + c) for f in files)}


def python_prose(source: str) -> str:
    """The docstrings and comments of one Python file."""
    parts = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            doc = ast.get_docstring(node, clean=False)
            if doc:
                parts.append(doc)
    tokens = tokenize.generate_tokens(io.StringIO(source).readline)
    parts += [tok.string for tok in tokens if tok.type == tokenize.COMMENT]
    return "\n".join(parts)


def broken(paths: list[Path], prose, files: list[str]) -> list[str]:
    found = []
    for path in sorted(paths):
        for cited in sorted(missing(cited_paths(prose(path.read_text())), files)):
            found.append(f"{path.relative_to(REPO)}: {cited}")
    return found


def test_the_finder_reports_a_missing_path_and_passes_a_present_one() -> None:
    files = tracked_files()
    sample = ("The order of work is trace/engine.py's; see docs/distributed.md and README.md, not "
              "trace/no_such_module.py, docs/never-written.md or bench/nothing.sh. Read "
              "https://example.org/x/gone.py and /etc/outside.py as what they are, and summary.json "
              "as a run's file.")
    assert cited_paths(sample) == {"trace/engine.py", "docs/distributed.md", "README.md",
                                   "trace/no_such_module.py", "docs/never-written.md", "bench/nothing.sh"}
    assert missing(cited_paths(sample), files) == {"trace/no_such_module.py", "docs/never-written.md",
                                                    "bench/nothing.sh"}
    assert python_prose('"""Cites gone/file.py."""\nx = "strings/are.py not prose"  # nor.md\n') == \
        "Cites gone/file.py.\n# nor.md"


@pytest.mark.parametrize("package", ["worker", "operator"])
def test_python_docstrings_and_comments_cite_existing_files(package: str) -> None:
    files = tracked_files()
    paths = [p for p in PACKAGES[package].rglob("*.py") if str(p.relative_to(REPO)) in files]
    assert paths
    assert broken(paths, python_prose, files) == []


def test_docs_and_readme_cite_existing_files() -> None:
    files = tracked_files()
    pages = [*(REPO / "docs").glob("*.md"), REPO / "README.md"]
    found = broken(pages, lambda text: text, files)
    assert found == []
