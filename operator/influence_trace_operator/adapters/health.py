"""Liveness that sees a wedged reconcile loop, and the health port that serves it beside the metrics.

kopf's own /healthz only proves that its event loop answers; our reconciles run in worker threads and
in the resync thread, which can block (a hung API call, a deadlock) while kopf looks fine. The
``Watchdog`` records when each reconcile pass started and when the resync loop last went round;
``/healthz`` answers 500 when a pass has run longer than ``wedged_seconds`` or the resync loop has not
gone round for ``wedged_seconds`` past its period, so the kubelet restarts the operator.
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from influence_trace_operator.adapters import metrics

log = logging.getLogger(__name__)


class Watchdog:
    """Start times of the passes in flight and the resync loop's last round, read by /healthz."""

    def __init__(self, wedged_seconds: float, resync_seconds: float) -> None:
        self.wedged_seconds = wedged_seconds
        self.resync_seconds = resync_seconds
        self._inflight: dict[int, tuple[str, float]] = {}
        self._ids = itertools.count()
        self._lock = threading.Lock()
        self.last_resync = time.monotonic()

    @contextmanager
    def watch_pass(self, what: str) -> Iterator[None]:
        key = next(self._ids)
        with self._lock:
            self._inflight[key] = (what, time.monotonic())
        try:
            yield
        finally:
            with self._lock:
                self._inflight.pop(key, None)

    def wait_idle(self, timeout: float) -> bool:
        """Wait until no pass is in flight (at stop, before the Lease is handed back); False on timeout."""
        deadline = time.monotonic() + timeout
        while True:
            with self._lock:
                if not self._inflight:
                    return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.05)

    def resync_tick(self) -> None:
        """Called by the resync loop each round and after each trace it reconciled."""
        self.last_resync = time.monotonic()

    def problem(self) -> str | None:
        """Why the operator is wedged, or None when every loop moves."""
        now = time.monotonic()
        with self._lock:
            oldest = min(self._inflight.values(), key=lambda x: x[1], default=None)
        if oldest is not None and now - oldest[1] > self.wedged_seconds:
            return f"reconcile of {oldest[0]} running for {now - oldest[1]:.0f} s"
        quiet = now - self.last_resync
        if quiet > self.resync_seconds + self.wedged_seconds:
            return f"resync loop has not gone round for {quiet:.0f} s"
        return None


class _Handler(BaseHTTPRequestHandler):
    watchdog: Watchdog

    def do_GET(self) -> None:
        if self.path.split("?")[0] == "/healthz":
            problem = self.watchdog.problem()
            code, body, ctype = (500, problem, "text/plain") if problem else (200, "ok", "text/plain")
            self._reply(code, (body or "").encode() + b"\n", ctype)
        elif self.path.split("?")[0] == "/metrics":
            self._reply(200, metrics.exposition(), metrics.CONTENT_TYPE)
        else:
            self._reply(404, b"not found: try /healthz or /metrics\n", "text/plain")

    def _reply(self, code: int, body: bytes, ctype: str) -> None:
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        log.debug(format, *args)


def serve(watchdog: Watchdog, port: int, host: str = "0.0.0.0") -> ThreadingHTTPServer:
    """Serve /healthz and /metrics on ``port`` (0: any free port) from a daemon thread."""
    handler = type("Handler", (_Handler,), {"watchdog": watchdog})
    server = ThreadingHTTPServer((host, port), handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name="health", daemon=True).start()
    log.info("health and metrics on :%d (/healthz, /metrics)", server.server_address[1])
    return server
