"""One active replica: a coordination.k8s.io Lease held by the operator that acts.

Every replica runs the watches, but a reconcile pass (from an event or the resync) only acts while
this process holds the Lease. The holder renews it every third of ``lease_seconds``; a replica that
could not renew within two thirds of it stops acting before anyone else may take over. Another
replica takes the Lease once it has seen the same holder and renew time unchanged for a whole
``lease_seconds`` (measured on its own clock, so clock skew between nodes does not matter), then
resyncs every unfinished trace at once. A clean stop releases the Lease (after its passes ended) so
a successor starts at once.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from kubernetes import client
from kubernetes.client.rest import ApiException

log = logging.getLogger(__name__)


def identity() -> str:
    """Pod name (the hostname in a pod) plus a random suffix, so a restarted pod is a new holder."""
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


def _micro_now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class LeaseGuard:
    """Acquire and renew one Lease; ``acting()`` says whether this replica may act now."""

    def __init__(self, namespace: str, name: str, seconds: float, coord: Any = None) -> None:
        self.namespace, self.name, self.seconds = namespace, name, seconds
        self.coord: Any = coord or client.CoordinationV1Api()  # Any: Lease bodies are sent as dicts
        self.me = identity()
        self._renewed_at: float | None = None  # monotonic time of our last successful write
        self._seen: tuple[Any, Any] | None = None  # (holder, renewTime) last read
        self._seen_at = 0.0

    def _timeout(self) -> tuple[float, float]:
        """A renewal call that has not answered within a third of the Lease is given up and retried:
        without a timeout one hung call would stop the loop, and the replica would stop acting for
        good without a word (``acting`` lapses on its own)."""
        return (self.seconds / 3, self.seconds / 3)

    def acting(self) -> bool:
        return self._renewed_at is not None and time.monotonic() - self._renewed_at < self.seconds * 2 / 3

    def step(self) -> bool:
        """One try to acquire or renew; True when we hold the Lease afterwards."""
        try:
            lease = self.coord.read_namespaced_lease(self.name, self.namespace,
                                                     _request_timeout=self._timeout())
        except ApiException as err:
            if err.status != 404:
                raise
            return self._write(None, transitions=0, acquired=_micro_now())
        spec = lease.spec
        seen = (spec.holder_identity, spec.renew_time)
        if seen != self._seen:
            self._seen, self._seen_at = seen, time.monotonic()
        duration = spec.lease_duration_seconds or self.seconds
        mine = spec.holder_identity == self.me
        if spec.holder_identity and not mine and time.monotonic() - self._seen_at < duration:
            self._renewed_at = None
            return False
        transitions = (spec.lease_transitions or 0) + (0 if mine else 1)
        acquired = spec.acquire_time.strftime("%Y-%m-%dT%H:%M:%S.%fZ") if mine and spec.acquire_time else None
        return self._write(lease.metadata.resource_version, transitions, acquired or _micro_now())

    def _write(self, resource_version: str | None, transitions: int, acquired: str) -> bool:
        meta: dict[str, str] = {"name": self.name, "namespace": self.namespace}
        body = {
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": meta,
            "spec": {
                "holderIdentity": self.me,
                "leaseDurationSeconds": max(1, round(self.seconds)),
                "acquireTime": acquired,
                "renewTime": _micro_now(),
                "leaseTransitions": transitions,
            },
        }
        start = time.monotonic()
        try:
            if resource_version is None:
                self.coord.create_namespaced_lease(self.namespace, body, _request_timeout=self._timeout())
            else:
                meta["resourceVersion"] = resource_version
                self.coord.replace_namespaced_lease(self.name, self.namespace, body,
                                                    _request_timeout=self._timeout())
        except ApiException as err:
            if err.status == 409:  # another replica wrote first
                self._renewed_at = None
                return False
            raise
        was_acting = self.acting()
        self._renewed_at = start
        if not was_acting:
            log.info("holding Lease %s/%s as %s: this replica acts", self.namespace, self.name, self.me)
        return True

    def release(self) -> None:
        """Hand the Lease back (holder cleared) so another replica takes over without waiting."""
        if not self.acting():
            return
        self._renewed_at = None
        try:
            lease = self.coord.read_namespaced_lease(self.name, self.namespace)
            if lease.spec.holder_identity == self.me:
                lease.spec.holder_identity = None
                lease.spec.lease_duration_seconds = 1
                self.coord.replace_namespaced_lease(self.name, self.namespace, lease)
        except ApiException as err:
            log.warning("could not release Lease %s/%s: %s", self.namespace, self.name, err.reason)

    def run(self, stop: threading.Event, on_acquired: Callable[[], None]) -> None:
        """Renew or try to acquire every third of the lease (at most 2 s) until ``stop``; call
        ``on_acquired`` on gain (a lapse of our own included: events were ignored meanwhile). The
        Lease is not released here: ``lifecycle.shutdown`` does, once the passes in flight ended."""
        while not stop.is_set():
            before = self.acting()
            try:
                held = self.step()
            except Exception:  # API down: keep trying; acting() lapses on its own
                log.exception("Lease %s/%s: renewal failed", self.namespace, self.name)
                held = self.acting()
            if held and not before:
                on_acquired()
            elif before and not held:
                log.warning("lost Lease %s/%s: this replica stops acting", self.namespace, self.name)
            stop.wait(min(self.seconds / 3, 2.0))
