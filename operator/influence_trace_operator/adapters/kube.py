"""The few Kubernetes API calls the operator makes, as plain camelCase dicts.

Responses are read raw (``_preload_content=False``) and decoded with ``json``: the client's model
deserialisation costs far more than the calls themselves when hundreds of traces move at once. A raw
response whose body is not needed is still read to its end (``_release``): urllib3 returns a
connection to its pool only then, and an unread one was dropped, so every event, ConfigMap create
and delete opened a new TLS connection (a handshake's CPU on both sides; most of the operator's
connection time under a burst of 1,000 traces).
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from collections.abc import Callable
from typing import Any, Protocol, runtime_checkable

from influence_trace.api.spec import API_GROUP, API_VERSION, KIND, PLURAL
from kubernetes import client, config
from kubernetes.client.rest import ApiException

from influence_trace_operator.rules import labels

log = logging.getLogger(__name__)
EVENT_MESSAGE_LIMIT = 1024
ApiError = ApiException  # what a refused call raises; the layers above name it from here


@runtime_checkable
class KubeClient(Protocol):
    """The API calls the reconciler makes: ``Kube`` below against a cluster, tests/operator/fake_kube.py's
    ``FakeKube`` in unit tests (mypy checks both against this protocol). ``custom`` and ``core`` are the
    raw APIs the Kueue and log adapters and the history store read (None in a fake without them)."""

    custom: Any
    core: Any

    def close(self) -> None: ...
    def get_trace(self, namespace: str, name: str) -> dict[str, Any] | None: ...
    def list_traces(self, namespaces: list[str] | None) -> list[dict[str, Any]]: ...
    def replace_status(self, trace: dict[str, Any], status: dict[str, Any]) -> dict[str, Any]: ...
    def get_job(self, namespace: str, name: str) -> dict[str, Any] | None: ...
    def create_job(self, body: dict[str, Any]) -> tuple[dict[str, Any], bool]: ...
    def delete_job(self, namespace: str, name: str) -> None: ...
    def ensure_configmap(self, body: dict[str, Any]) -> dict[str, Any] | None: ...
    def replace_configmap(self, body: dict[str, Any], existing: dict[str, Any]) -> None: ...
    def ensure_service(self, body: dict[str, Any]) -> dict[str, Any] | None: ...
    def replace_service(self, body: dict[str, Any], existing: dict[str, Any]) -> None: ...
    def ensure_network_policy(self, body: dict[str, Any]) -> dict[str, Any] | None: ...
    def replace_network_policy(self, body: dict[str, Any], existing: dict[str, Any]) -> None: ...
    def job_pods(self, namespace: str, job: str, uid: str | None = None) -> list[dict[str, Any]]: ...
    def volume_claim_exists(self, namespace: str, name: str) -> bool: ...
    def post_event(self, trace: dict[str, Any], kind: str, reason: str, message: str) -> None: ...


def load_config() -> None:
    """The in-cluster config in a pod, else the current kubeconfig."""
    try:
        config.load_incluster_config()
    except config.ConfigException:
        config.load_kube_config()


def api_client(connections: int) -> client.ApiClient:
    """An API client whose connection pool fits its threads: the default pool of 10 makes 16 reconcile
    threads open and discard a connection per call under load."""
    cfg = client.Configuration.get_default_copy()
    cfg.connection_pool_maxsize = connections
    return client.ApiClient(cfg)


def coordination_api(connections: int) -> Any:
    """The Lease API on its own connections (never queued behind reconciles); Any: Leases are dicts."""
    return client.CoordinationV1Api(api_client(connections))


def configured_client() -> Any:
    """The client module, configured (``influence-trace logs``/``fetch`` build their APIs from it)."""
    load_config()
    return client


def now() -> str:
    """RFC 3339 UTC, seconds precision, as Kubernetes writes times."""
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _json(resp: Any) -> dict[str, Any]:
    return json.loads(resp.data)


def _release(resp: Any) -> None:
    """Read the rest of a raw response and hand its connection back to the pool for the next call."""
    resp.drain_conn()
    resp.release_conn()


class Kube:
    """Typed access to traces, Jobs, Pods, ConfigMaps and Events."""

    def __init__(self, api_client: client.ApiClient | None = None) -> None:
        self.api_client = api_client or client.ApiClient()
        # Typed as Any: the operator sends and reads plain dicts (manifests), which the client accepts
        # though its stubs name its model classes.
        self.custom: Any = client.CustomObjectsApi(self.api_client)
        self.batch: Any = client.BatchV1Api(self.api_client)
        self.core: Any = client.CoreV1Api(self.api_client)
        self.networking: Any = client.NetworkingV1Api(self.api_client)

    # ---- traces ------------------------------------------------------------------------------
    def close(self) -> None:
        """Close the connection pool (at stop: no socket is left to the interpreter's finalization)."""
        self.api_client.close()

    def get_trace(self, namespace: str, name: str) -> dict[str, Any] | None:
        try:
            return _json(
                self.custom.get_namespaced_custom_object(
                    API_GROUP, API_VERSION, namespace, PLURAL, name, _preload_content=False
                )
            )
        except ApiException as err:
            if err.status == 404:
                return None
            raise

    def list_traces(self, namespaces: list[str] | None) -> list[dict[str, Any]]:
        if not namespaces:
            return _json(
                self.custom.list_cluster_custom_object(API_GROUP, API_VERSION, PLURAL, _preload_content=False)
            )["items"]
        items: list[dict[str, Any]] = []
        for ns in namespaces:
            items += _json(
                self.custom.list_namespaced_custom_object(
                    API_GROUP, API_VERSION, ns, PLURAL, _preload_content=False
                )
            )["items"]
        return items

    def replace_status(self, trace: dict[str, Any], status: dict[str, Any]) -> dict[str, Any]:
        """PUT the status subresource; the resourceVersion makes a concurrent change fail with 409.
        Returns the trace as written (its resourceVersion's watch event then carries nothing new)."""
        meta = trace["metadata"]
        body = {
            "apiVersion": f"{API_GROUP}/{API_VERSION}",
            "kind": KIND,
            "metadata": {
                "name": meta["name"],
                "namespace": meta["namespace"],
                "resourceVersion": meta["resourceVersion"],
            },
            "spec": trace.get("spec") or {},
            "status": status,
        }
        resp = self.custom.replace_namespaced_custom_object_status(
            API_GROUP, API_VERSION, meta["namespace"], PLURAL, meta["name"], body, _preload_content=False
        )
        return _json(resp)

    # ---- children ----------------------------------------------------------------------------
    def get_job(self, namespace: str, name: str) -> dict[str, Any] | None:
        try:
            return _json(self.batch.read_namespaced_job(name, namespace, _preload_content=False))
        except ApiException as err:
            if err.status == 404:
                return None
            raise

    def create_job(self, body: dict[str, Any]) -> tuple[dict[str, Any], bool]:
        """Create the Job, or return the existing one of that name: (job, created)."""
        ns, name = body["metadata"]["namespace"], body["metadata"]["name"]
        try:
            return _json(self.batch.create_namespaced_job(ns, body, _preload_content=False)), True
        except ApiException as err:
            if err.status != 409:
                raise
        existing = self.get_job(ns, name)
        if existing is None:  # deleted between the two calls: the next pass creates it
            raise RuntimeError(f"Job {ns}/{name} exists and vanished; retrying later")
        return existing, False

    def delete_job(self, namespace: str, name: str) -> None:
        """Delete a Job and (foreground) its pods before it, so no GPU stays held once it is gone."""
        try:
            _release(self.batch.delete_namespaced_job(
                name, namespace, propagation_policy="Foreground", _preload_content=False
            ))
        except ApiException as err:
            if err.status != 404:
                raise

    def ensure_configmap(self, body: dict[str, Any]) -> dict[str, Any] | None:
        """Create the manifest ConfigMap; None when created, the existing object when the name is taken."""
        return _create_or_read(self.core.create_namespaced_config_map,
                               self.core.read_namespaced_config_map, body)

    def replace_configmap(self, body: dict[str, Any], existing: dict[str, Any]) -> None:
        """PUT at the existing object's resourceVersion (a concurrent change answers 409)."""
        _replace_at(self.core.replace_namespaced_config_map, body, existing)

    def ensure_service(self, body: dict[str, Any]) -> dict[str, Any] | None:
        """Create the rendezvous Service; None when created, the existing object when the name is taken."""
        return _create_or_read(self.core.create_namespaced_service, self.core.read_namespaced_service, body)

    def replace_service(self, body: dict[str, Any], existing: dict[str, Any]) -> None:
        _replace_at(self.core.replace_namespaced_service, body, existing)

    def ensure_network_policy(self, body: dict[str, Any]) -> dict[str, Any] | None:
        """Create a multi-node trace's NetworkPolicy; None when created, else the existing object."""
        return _create_or_read(self.networking.create_namespaced_network_policy,
                               self.networking.read_namespaced_network_policy, body)

    def replace_network_policy(self, body: dict[str, Any], existing: dict[str, Any]) -> None:
        _replace_at(self.networking.replace_namespaced_network_policy, body, existing)

    def job_pods(self, namespace: str, job: str, uid: str | None = None) -> list[dict[str, Any]]:
        """The Job's pods: by its controller uid when known (a namesake Job's pods share the name)."""
        selector = f"{labels.CONTROLLER_UID}={uid}" if uid else f"{labels.JOB_NAME}={job}"
        pods = self.core.list_namespaced_pod(namespace, label_selector=selector, _preload_content=False)
        return _json(pods)["items"]

    def volume_claim_exists(self, namespace: str, name: str) -> bool:
        """Whether the PVC exists in the namespace (needs get on persistentvolumeclaims there)."""
        try:
            _release(self.core.read_namespaced_persistent_volume_claim(name, namespace,
                                                                       _preload_content=False))
            return True
        except ApiException as err:
            if err.status == 404:
                return False
            raise

    # ---- events ------------------------------------------------------------------------------
    def post_event(self, trace: dict[str, Any], kind: str, reason: str, message: str) -> None:
        """A core/v1 Event on the trace (what ``kubectl describe`` lists); failures are only logged."""
        meta = trace["metadata"]
        stamp = now()
        body = {
            "metadata": {"generateName": f"{meta['name'][:200]}.", "namespace": meta["namespace"]},
            "involvedObject": {
                "apiVersion": f"{API_GROUP}/{API_VERSION}",
                "kind": KIND,
                "name": meta["name"],
                "namespace": meta["namespace"],
                "uid": meta.get("uid"),
            },
            "reason": reason,
            "message": message[:EVENT_MESSAGE_LIMIT],
            "type": kind,
            "source": {"component": labels.MANAGER},
            "reportingComponent": labels.MANAGER,
            "reportingInstance": labels.MANAGER,
            "firstTimestamp": stamp,
            "lastTimestamp": stamp,
            "count": 1,
        }
        try:
            _release(self.core.create_namespaced_event(meta["namespace"], body, _preload_content=False))
        except ApiException as err:
            log.warning(
                "could not post event %s on %s/%s: %s", reason, meta["namespace"], meta["name"], err.reason
            )


def _create_or_read(create: Callable[..., Any], read: Callable[..., Any],
                    body: dict[str, Any]) -> dict[str, Any] | None:
    """POST ``body``; None when created, the existing object when its name is taken (409)."""
    ns, name = body["metadata"]["namespace"], body["metadata"]["name"]
    try:
        _release(create(ns, body, _preload_content=False))
        return None
    except ApiException as err:
        if err.status != 409:
            raise
    return _json(read(name, ns, _preload_content=False))


def _replace_at(replace: Callable[..., Any], body: dict[str, Any], existing: dict[str, Any]) -> None:
    """PUT ``body`` at the existing object's resourceVersion (a concurrent change answers 409)."""
    meta = {**body["metadata"], "resourceVersion": existing["metadata"]["resourceVersion"]}
    _release(replace(meta["name"], meta["namespace"], {**body, "metadata": meta}, _preload_content=False))


def _satisfies(kube: Kube) -> KubeClient:
    return kube  # mypy checks here that Kube implements the whole protocol
