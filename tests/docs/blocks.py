"""The fenced blocks of the docs, what their markers say, and how a block is run or checked.

A block's kind comes from an HTML comment on the lines just above its fence,
``<!-- docs-test: KIND[: ARGUMENT] -->``:

* ``output``: output or an illustration, not a command; skipped.
* ``skip: REASON``: can be neither run nor checked here; the reason is required.
* ``file: PATH``: written to PATH in the sandbox, for the doc's later blocks (a YAML manifest is also
  validated by the pydantic model).
* ``excerpt: FILE``: a YAML excerpt of FILE; each top-level key must equal FILE's.
* ``check: REASON [; absent: PATH ...]``: cannot run here (REASON); each command is checked instead
  (``check_command``); the ``absent`` paths are what the unrunnable commands would have made.
* ``cluster`` (``cluster: own`` for one that starts and stops a cluster of its own): run with bash on
  the local cluster (tests/cluster/test_docs_cluster.py).
* ``generated: SCRIPT``: output that SCRIPT writes into the doc from a real run.

A shell block (``sh``, ``bash``, ``shell``) without a marker is run with bash in the sandbox. A YAML
(or JSON) block without one must parse; any other block must name its language (``text`` for plain output).
"""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SHELL = {"sh", "bash", "shell"}
KINDS = {"output", "skip", "file", "excerpt", "check", "cluster", "generated"}
_MARKER = re.compile(r"^<!--\s*docs-test:\s*([a-z]+)\s*(?::\s*(.*?))?\s*-->$")
_FENCE = re.compile(r"^(\s*)```(\S*)\s*$")
# copied into the sandbox (blocks may write there); everything else is linked read-only
COPIED = ("charts", "crds", "examples", "docs", "README.md", "Dockerfile", "constraints.txt",
          "pyproject.toml")
LINKED = ("hack", "scripts", "worker", "operator", "tests", "bench")


def docs() -> list[Path]:
    """The documents whose blocks are tested."""
    return [REPO / "README.md", *sorted((REPO / "docs").glob("*.md")), REPO / "hack" / "README.md"]


@dataclass(frozen=True)
class Block:
    doc: Path
    line: int  # 1-based line of the opening fence
    lang: str
    text: str
    kind: str | None
    arg: str

    @property
    def where(self) -> str:
        return f"{self.doc.relative_to(REPO)}:{self.line}"

    @property
    def shell(self) -> bool:
        return self.lang in SHELL


def parse(doc: Path) -> list[Block]:
    """Every fenced block of a Markdown file, with the marker above it (if any)."""
    lines = doc.read_text().splitlines()
    blocks, i = [], 0
    while i < len(lines):
        match = _FENCE.match(lines[i])
        if not match:
            i += 1
            continue
        end = next((j for j in range(i + 1, len(lines)) if lines[j].strip() == "```"), None)
        assert end is not None, f"{doc}:{i + 1}: unclosed code fence"
        kind, arg = _marker_above(lines, i)
        body = "\n".join(line[len(match.group(1)):] for line in lines[i + 1:end])
        blocks.append(Block(doc, i + 1, match.group(2), body + "\n", kind, arg))
        i = end + 1
    return blocks


def _marker_above(lines: list[str], fence: int) -> tuple[str | None, str]:
    j = fence - 1
    while j >= 0 and not lines[j].strip():
        j -= 1
    match = _MARKER.match(lines[j].strip()) if j >= 0 else None
    if not match:
        return None, ""
    return match.group(1), (match.group(2) or "").strip()


def sandbox(root: Path) -> Path:
    """A directory that looks like the repository: small trees copied, the rest linked."""
    for name in COPIED:
        src = REPO / name
        if src.is_dir():
            shutil.copytree(src, root / name)
        else:
            shutil.copy2(src, root / name)
    for name in LINKED:
        (root / name).symlink_to(REPO / name)
    return root


def commands(text: str) -> list[list[str]]:
    """The command lines of a shell block: continuations joined, comments dropped, split like a shell."""
    joined = re.sub(r"\\\n", " ", text)
    out = []
    for line in joined.splitlines():
        words = shlex.split(line, comments=True)
        while words and re.match(r"^[A-Za-z_][A-Za-z0-9_]*=", words[0]):
            words = words[1:]  # environment assignments
        if words:
            out.append(words)
    return out


def check_args(arg: str) -> tuple[str, set[str]]:
    """(reason, absent paths) of a ``check`` marker."""
    reason, _, rest = arg.partition("; absent:")
    return reason.strip(), set(rest.split())


def check_command(words: list[str], cwd: Path, absent: set[str]) -> list[str]:
    """Check one command of a block that cannot run; returns the paths it was allowed to miss."""
    program = words[0]
    if program == "influence-trace":
        return _check_cli(words[1:], cwd, absent)
    if program == "bash" and len(words) >= 2:
        script = cwd / words[1]
        assert script.is_file(), f"`{shlex.join(words)}`: {words[1]} does not exist"
        proc = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)
        assert proc.returncode == 0, f"`{shlex.join(words)}`: {proc.stderr}"
        return []
    if program == "docker" and words[1:2] == ["build"]:
        target = words[words.index("--target") + 1]
        dockerfile = (cwd / words[-1] / "Dockerfile").read_text()
        assert re.search(rf"^FROM .+ AS {re.escape(target)}$", dockerfile, re.M | re.I), (
            f"`{shlex.join(words)}`: the Dockerfile has no stage {target}"
        )
        return []
    raise AssertionError(f"cannot check `{shlex.join(words)}`: run the block, or mark it skip with a reason")


def _check_cli(argv: list[str], cwd: Path, absent: set[str]) -> list[str]:
    """Parse with the real parser; the files it reads must exist; manifests must validate."""
    from influence_trace.api.spec import load_manifest
    from influence_trace.cli import build_parser

    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exc:
        raise AssertionError(f"`influence-trace {shlex.join(argv)}` is refused by the parser") from exc
    paths = [*(getattr(args, "manifests", None) or []), getattr(args, "manifest", None),
             getattr(args, "output_dir", None), *(getattr(args, "dirs", None) or []),
             getattr(args, "pools", None)]
    missed = []
    for path in filter(None, paths):
        if path in absent:
            missed.append(path)
            continue
        full = cwd / path
        assert full.exists(), f"`influence-trace {shlex.join(argv)}`: {path} does not exist"
        if path in (getattr(args, "manifests", None) or [getattr(args, "manifest", None)]):
            load_manifest(full)
    if args.command == "estimate":  # torch-free and quick: run it for real
        proc = run_cli(["estimate", *argv[1:]], cwd)
        assert proc.returncode == 0, f"`influence-trace {shlex.join(argv)}`: {proc.stdout}{proc.stderr}"
    return missed


def run_cli(argv: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "influence_trace.cli", *argv], cwd=cwd,
                          capture_output=True, text=True, timeout=120)


def run_bash(text: str, cwd: Path, env: dict[str, str], timeout: float = 300) -> None:
    """Run a block as the reader would paste it: bash, stopping at the first failing command."""
    proc = subprocess.run(["bash", "-euo", "pipefail", "-c", text], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, (
        f"exit {proc.returncode}\n{text}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}")
