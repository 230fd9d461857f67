"""What the reconciler remembers between passes of a trace, all of it a shortcut (a restart loses it
and converges from the status): its own last status writes, when a pass last ran, the attempt it last
wrote, and the children it already settled."""

from __future__ import annotations

import threading
import time
from typing import Any

ECHOES = 4  # own status writes per trace whose watch events are known to carry nothing new
Key = tuple[str, str]  # (namespace, name)


class PassMemory:
    """Per-trace memory shared by the reconcile threads (each trace's passes run one at a time)."""

    def __init__(self) -> None:
        self._guard = threading.Lock()
        self._written: dict[Key, tuple[str | None, ...]] = {}  # our last status writes' versions
        self._passed: dict[Key, float] = {}  # monotonic start of the last pass
        self._attempt: dict[Key, tuple[str, int]] = {}  # (uid, attempt) of our last write
        self._settled: dict[Key, set[tuple[str, str, str]]] = {}  # (uid, kind, hash) made

    def forget(self, namespace: str, name: str) -> None:
        """The trace was deleted or ended: a namesake created later starts with nothing remembered."""
        with self._guard:
            for table in (self._written, self._passed, self._attempt, self._settled):
                table.pop((namespace, name), None)

    def started(self, key: Key) -> None:
        self._passed[key] = time.monotonic()

    def wrote(self, key: Key, written: dict[str, Any], uid: str, attempt: int) -> None:
        """Remember a status write; the echo of a write can arrive after the next one, so keep a few."""
        recent = self._written.get(key, ())[-(ECHOES - 1):]
        self._written[key] = (*recent, written["metadata"].get("resourceVersion"))
        self._attempt[key] = (uid, attempt)

    def superseded(self, namespace: str, name: str, uid: str, attempt: int) -> bool:
        """Whether this operator last wrote a later attempt for this trace (same uid) than ``attempt``:
        an event of that older attempt's Job cannot change anything (the pass reads only the current
        attempt). Unknown traces (e.g. after a restart) are never superseded."""
        known = self._attempt.get((namespace, name))
        return known is not None and known[0] == uid and attempt < known[1]

    def own_write(self, namespace: str, name: str, resource_version: str | None) -> bool:
        """True for a trace event that only echoes one of our last status writes: nothing new to act
        on (a Job or Pod change arrives through its own watch). Skipping these halves the passes."""
        return resource_version is not None and resource_version in self._written.get((namespace, name), ())

    def passed_within(self, namespace: str, name: str, seconds: float) -> bool:
        """Whether a pass of this trace started less than ``seconds`` ago (the resync skips it then)."""
        return time.monotonic() - self._passed.get((namespace, name), float("-inf")) < seconds

    def settled(self, key: Key, made: tuple[str, str, str]) -> bool:
        """Whether this child (uid, kind, content hash) was already created or settled in this process."""
        return made in self._settled.get(key, set())

    def settle(self, key: Key, made: tuple[str, str, str]) -> None:
        self._settled.setdefault(key, set()).add(made)
