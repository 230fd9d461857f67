"""Stored stage outputs that a later run may reuse: one small interface (path, save, load, exists).

A relaunched trace (the operator moves it to a larger GPU after an out-of-memory) should not redo the
stages that already finished. Reuse is only safe when the stored output was made by the same recipe
(settings, model and inputs) and was written completely, so every artifact is a data file plus a
completion marker beside it (``<file>.done.json``) holding the recipe's fingerprint:

- the marker is removed before the data is rewritten and written (atomically) only after the data
  file has been renamed into place, so a stage interrupted half-way leaves no marker and is redone;
- the marker records the data file's size, so data replaced afterwards is not vouched for;
- a marker with another fingerprint means the recipe changed: the artifact is stale and is redone.

The fingerprint is a SHA-256 of the recipe as canonical JSON. Models are identified by their files:
small files (config, tokenizer, small weights) by content, large ones by name, size and modification
time, which keeps a check of a multi-gigabyte model to milliseconds (a copied model directory with
new timestamps counts as a different model: the safe side).
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar

from influence_trace.io.atomic import write_atomically

MARKER_SUFFIX = ".done.json"
CONTENT_HASH_LIMIT = 64 * 2**20  # files up to this size are identified by a hash of their content
T = TypeVar("T")
State = Literal["missing", "incomplete", "stale", "ready"]


def file_identity(path: str | Path) -> dict[str, Any]:
    """What identifies a file's content: its SHA-256 when small, else its size and mtime."""
    path = Path(path)
    stat = path.stat()
    identity: dict[str, Any] = {"name": path.name, "size": stat.st_size}
    if stat.st_size <= CONTENT_HASH_LIMIT:
        digest = hashlib.sha256()
        with path.open("rb") as handle:
            for block in iter(lambda: handle.read(2**20), b""):
                digest.update(block)
        identity["sha256"] = digest.hexdigest()
    else:
        identity["mtime_ns"] = stat.st_mtime_ns
    return identity


def model_identity(model_dir: str | Path) -> list[dict[str, Any]]:
    """Identities of every regular, non-hidden file directly in a model directory (sorted by name).

    The path itself is left out: the same model mounted elsewhere on a relaunched pod is the same model.
    """
    files = sorted(p for p in Path(model_dir).iterdir() if p.is_file() and not p.name.startswith("."))
    return [file_identity(p) for p in files]


def fingerprint(recipe: dict[str, Any]) -> str:
    """SHA-256 of the recipe as canonical JSON (sorted keys, no whitespace)."""
    text = json.dumps(recipe, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()


@dataclass(frozen=True)
class Artifact:
    """One stage's stored output: ``path`` holds the data, the marker beside it vouches for it."""

    name: str  # the stage's name in the summary ("rollouts", "factors")
    path: Path
    recipe: dict[str, Any] = field(default_factory=dict)  # everything that determines the content

    @property
    def fingerprint(self) -> str:
        return fingerprint({"artifact": self.name, **self.recipe})

    @property
    def marker_path(self) -> Path:
        return self.path.with_name(self.path.name + MARKER_SUFFIX)

    def marker(self) -> dict[str, Any] | None:
        """The completion marker's content, or None when it is absent or unreadable."""
        try:
            value = json.loads(self.marker_path.read_text())
        except (OSError, ValueError):
            return None
        return value if isinstance(value, dict) else None

    def state(self) -> State:
        """missing (nothing there), incomplete (data without a valid marker), stale (another
        recipe) or ready (complete and made by this recipe)."""
        marker = self.marker()
        if marker is None:
            return "incomplete" if self.path.exists() else "missing"
        if marker.get("fingerprint") != self.fingerprint:
            return "stale"
        if not self.path.is_file() or self.path.stat().st_size != marker.get("data_bytes"):
            return "incomplete"
        return "ready"

    def exists(self) -> bool:
        """True only for a complete artifact made by this recipe: the one test for reuse."""
        return self.state() == "ready"

    def save(self, write: Callable[[Path], None], info: dict[str, Any] | None = None) -> dict[str, Any]:
        """Write the data through ``write(tmp_path)`` and then the marker; return the marker."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.marker_path.unlink(missing_ok=True)  # the old marker must not vouch for new data
        write_atomically(self.path, write)
        marker = {
            "artifact": self.name,
            "fingerprint": self.fingerprint,
            "data_file": self.path.name,
            "data_bytes": self.path.stat().st_size,
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "recipe": self.recipe,
            "info": info or {},
        }
        text = json.dumps(marker, indent=2, sort_keys=True, default=str) + "\n"
        write_atomically(self.marker_path, lambda tmp: tmp.write_text(text))
        return marker

    def load(self, read: Callable[[Path], T]) -> T:
        """Read the data through ``read(path)``; only a ready artifact may be loaded."""
        state = self.state()
        if state != "ready":
            raise RuntimeError(f"{self.name} artifact {self.path} is {state}, not ready to load")
        return read(self.path)

    def record(self) -> dict[str, Any]:
        """What the summary says about this artifact (where it is, which recipe, when it was made)."""
        marker = self.marker() or {}
        return {
            "path": str(self.path),
            "fingerprint": self.fingerprint,
            "created": marker.get("created"),
            "info": marker.get("info", {}),
        }
