"""The operator's API wrapper against the real API server: every call hands its connection back.

urllib3 returns a connection to its pool only once a raw response is read to its end; the calls whose
body the operator does not need (events, child creates, replaces, deletes) used to drop theirs, so
each opened a new TLS connection.
"""

from __future__ import annotations

from influence_trace_operator.adapters.kube import Kube
from kubernetes import client, config

from tests.cluster import kube

CALLS = 6


def _connections(k: Kube) -> int:
    """TLS connections the client's pools have opened so far."""
    pools = k.api_client.rest_client.pool_manager.pools
    return sum(pools[key].num_connections for key in pools.keys())  # noqa: SIM118 (no __iter__)


def test_calls_without_a_body_to_read_reuse_one_connection(namespace: str) -> None:
    cfg = client.Configuration()
    config.load_kube_config(str(kube.cluster_info().kubeconfig), client_configuration=cfg)
    k = Kube(client.ApiClient(cfg))
    trace = {"metadata": {"name": "conn", "namespace": namespace, "uid": "0"}}
    for i in range(CALLS):  # one thread, one call at a time: one connection suffices
        k.post_event(trace, "Normal", "Test", f"event {i}")
        body = {"apiVersion": "v1", "kind": "ConfigMap", "data": {"i": str(i)},
                "metadata": {"name": f"cm-{i}", "namespace": namespace}}
        assert k.ensure_configmap(body) is None
        existing = k.ensure_configmap(body)  # 409: the existing object is read
        assert existing is not None
        k.replace_configmap({**body, "data": {"i": "again"}}, existing)
        k.delete_job(namespace, f"no-such-job-{i}")  # 404 is fine
        assert not k.volume_claim_exists(namespace, "none")
    assert kube.get("configmap", f"cm-{CALLS - 1}", namespace)["data"] == {"i": "again"}
    assert _connections(k) == 1
