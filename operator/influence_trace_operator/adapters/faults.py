"""API errors a pass meets: which are worth retrying, how they are told, and when to retry.

A refused call other than a conflict (409: re-read and decide again) never goes only to the log:

- transient (403 quota, 429, 5xx, timeouts): the ``Placed`` condition becomes False with reason
  ``APIError`` and the API's message, one Warning event is posted when that starts (not one per
  retry), and the trace is retried with exponential backoff (``Retries``);
- permanent (400/422: the API will refuse the same object again; a child name held by an object the
  trace does not own): the trace fails with the API's message.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from kubernetes.client.rest import ApiException

log = logging.getLogger(__name__)

PERMANENT_STATUSES = frozenset({400, 422})
MESSAGE_LIMIT = 1024


@dataclass(frozen=True)
class ApiFault:
    """One refused call, as the trace's status tells it."""

    permanent: bool
    code: int
    message: str


def api_message(err: ApiException) -> str:
    """The API server's own message (the Status body), else the HTTP reason."""
    text = ""
    try:
        text = json.loads(err.body or "{}").get("message") or ""
    except (TypeError, ValueError):
        text = str(err.body or "")
    text = text or str(err.reason or "no message")
    return text if len(text) <= MESSAGE_LIMIT else text[: MESSAGE_LIMIT - 3] + "..."


def is_conflict(err: Exception) -> bool:
    """A 409: the object changed since it was read (re-read and decide again) or the name is taken."""
    return isinstance(err, ApiException) and err.status == 409


def describe(err: ApiException) -> ApiFault:
    code = int(err.status or 0)
    return ApiFault(code in PERMANENT_STATUSES, code, f"HTTP {code}: {api_message(err)}")


class Retries:
    """Per-trace exponential backoff: base * 2^(n-1) seconds after the n-th failure, capped.

    While a trace is backing off, events and resyncs skip it; a timer reconciles it when due.
    """

    def __init__(self, retry: Callable[[str, str], Any], base: float = 2.0, cap: float = 300.0) -> None:
        self._retry = retry
        self.base, self.cap = base, cap
        self._failures: dict[tuple[str, str], int] = {}
        self._due: dict[tuple[str, str], float] = {}
        self._timers: dict[tuple[str, str], threading.Timer] = {}
        self._lock = threading.Lock()

    def delay(self, failures: int) -> float:
        return min(self.cap, self.base * 2 ** max(0, failures - 1))

    def failures(self, key: tuple[str, str]) -> int:
        return self._failures.get(key, 0)

    def waiting(self, key: tuple[str, str]) -> bool:
        """True while the trace's backoff has not run out (its timer will reconcile it)."""
        with self._lock:
            return self._due.get(key, 0.0) > time.monotonic()

    def failed(self, key: tuple[str, str]) -> tuple[int, float]:
        """Count a failure and arm the timer; returns (failures, delay)."""
        with self._lock:
            n = self._failures.get(key, 0) + 1
            self._failures[key] = n
            wait = self.delay(n)
            self._due[key] = time.monotonic() + wait
            old = self._timers.pop(key, None)
            if old is not None:
                old.cancel()
            timer = threading.Timer(wait + 0.05, self._fire, args=(key,))
            timer.daemon = True
            self._timers[key] = timer
            timer.start()
            return n, wait

    def succeeded(self, key: tuple[str, str]) -> None:
        with self._lock:
            self._failures.pop(key, None)
            self._due.pop(key, None)
            timer = self._timers.pop(key, None)
        if timer is not None:
            timer.cancel()

    def close(self) -> None:
        """Cancel every armed timer (at stop: no retry starts a pass after it)."""
        with self._lock:
            timers, self._timers = list(self._timers.values()), {}
        for timer in timers:
            timer.cancel()

    def _fire(self, key: tuple[str, str]) -> None:
        with self._lock:
            self._timers.pop(key, None)
            self._due.pop(key, None)
        try:
            self._retry(*key)
        except Exception:
            log.exception("retry of %s/%s failed", *key)
