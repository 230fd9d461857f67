"""The passes' dispatcher: the watch handlers hand it a trace and how urgent its pass is, and a bounded
set of threads (``WORKERS``) serves the most urgent first.

Three classes, served strictly in this order, first come first served within each:

- ``first``: a trace with no attempt yet, waiting for its first Job;
- ``failure``: an attempt's pod failed (out of memory, evicted) or its Job failed or vanished: the
  pass decides the next Job;
- ``other``: bookkeeping of running traces (a pod started, a success, Kueue's suspension or
  admission, a user's edit of a placed trace).

Before, kopf ran every handler's pass in its own executor, first come first served: a wave of
successes read from the pods (hundreds of passes) queued ahead of the traces still being created,
which then waited up to 13.6 s for their Job at 1,000 traces (bench/RESULTS.md). Now the handlers
only file the trace here and return.

Like client-go's work queue, the queue is level-triggered and holds each trace once: a pass reads the
trace's current state, never the event that filed it, so events for a trace that is already waiting
only raise its class when they are more urgent; an event for a trace whose pass is running files it
again once that pass ends (the running pass may have read the state before the event). No two threads
of the dispatcher pass the same trace at once (the Reconciler's per-trace lock also orders them with
the resync, progress and retry passes, which run in their own threads).

``close`` drops what waits (a restart, or the Lease's successor, passes every unfinished trace) and
lets each thread end after its pass; ``join`` waits for them within the stop's bound
(runtime/lifecycle.py).
"""

from __future__ import annotations

import heapq
import itertools
import logging
import threading
import time
from collections.abc import Callable

from influence_trace_operator.adapters import metrics

log = logging.getLogger(__name__)

FIRST, FAILURE, OTHER = 0, 1, 2
CLASSES = ("first", "failure", "other")  # names in metrics, by class
Key = tuple[str, str]  # (namespace, name)
Submit = Callable[[str, str, int], None]  # (namespace, name, class): file a pass


class Dispatcher:
    """A priority queue of traces, one entry per trace, served by ``threads`` threads."""

    def __init__(self, run: Callable[[str, str], None], threads: int, name: str = "pass") -> None:
        self._run = run
        self._size = threads
        self._name = name
        self._cond = threading.Condition()
        self._heap: list[tuple[int, int, Key]] = []  # (class, sequence, key); stale entries skipped
        self._queued: dict[Key, tuple[int, int, float]] = {}  # key -> live entry's class, sequence, since
        self._busy: set[Key] = set()  # traces whose pass runs now
        self._again: dict[Key, int] = {}  # busy traces filed again meanwhile: most urgent class
        self._seq = itertools.count()
        self._closed = False
        self.threads: list[threading.Thread] = []

    def submit(self, namespace: str, name: str, cls: int) -> None:
        """File a pass of the trace (a no-op once closed)."""
        key = (namespace, name)
        with self._cond:
            if self._closed:
                return
            if key in self._busy:
                self._again[key] = min(cls, self._again.get(key, cls))
            else:
                self._push(key, cls)

    def _push(self, key: Key, cls: int) -> None:
        """Queue ``key`` at ``cls`` unless it waits already at that class or a more urgent one
        (caller holds the lock)."""
        known = self._queued.get(key)
        if known is not None and known[0] <= cls:
            return
        seq = next(self._seq)
        self._queued[key] = (cls, seq, known[2] if known else time.monotonic())
        heapq.heappush(self._heap, (cls, seq, key))
        self._cond.notify()

    def _take(self) -> Key | None:
        """The most urgent waiting trace, marked busy; None once closed."""
        with self._cond:
            while not self._closed:
                while self._heap:
                    cls, seq, key = heapq.heappop(self._heap)
                    live = self._queued.get(key)
                    if live is not None and live[:2] == (cls, seq):
                        del self._queued[key]
                        self._busy.add(key)
                        metrics.PASS_WAIT.labels(CLASSES[cls]).observe(time.monotonic() - live[2])
                        return key
                self._cond.wait()
            return None

    def _done(self, key: Key) -> None:
        with self._cond:
            self._busy.discard(key)
            again = self._again.pop(key, None)
            if again is not None and not self._closed:
                self._push(key, again)

    def _serve(self) -> None:
        while (key := self._take()) is not None:
            try:
                self._run(*key)
            except Exception:  # one bad trace must not stop the thread
                log.exception("pass of %s/%s failed", *key)
            finally:
                self._done(key)

    def start(self) -> None:
        """Start the threads (once: a retried start-up starts none again)."""
        with self._cond:
            if self.threads or self._closed:
                return
            self.threads = [threading.Thread(target=self._serve, name=f"{self._name}-{i}", daemon=True)
                            for i in range(self._size)]
        for thread in self.threads:
            thread.start()
        log.info("started %d %s threads", self._size, self._name)

    def close(self) -> None:
        """No pass starts from now on: what waits is dropped, each thread ends after its pass."""
        with self._cond:
            self._closed = True
            self._heap.clear()
            self._queued.clear()
            self._again.clear()
            self._cond.notify_all()

    def join(self, seconds: float) -> bool:
        """Wait for every thread to end, at most ``seconds`` in all; False if one is still alive."""
        deadline = time.monotonic() + seconds
        for thread in self.threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        return not any(t.is_alive() for t in self.threads)

    def depths(self) -> dict[str, int]:
        """Traces waiting for a thread, by class name (the ``influencetrace_pass_queue`` gauge)."""
        with self._cond:
            counts = [0] * len(CLASSES)
            for cls, _, _ in self._queued.values():
                counts[cls] += 1
        return dict(zip(CLASSES, counts, strict=True))


def at_once(run: Callable[[str, str], None]) -> Submit:
    """A ``Submit`` that runs the pass in the caller's thread (the handlers' default, used by tests)."""
    return lambda namespace, name, _cls: run(namespace, name)
