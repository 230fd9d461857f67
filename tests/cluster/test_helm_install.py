"""The chart installed by the real helm into the local cluster, and the operator run with its identity.

* Namespaced install: the operator (run on this machine, authenticated only by a token of the chart's
  ServiceAccount, configured from the installed Deployment's environment and pool ConfigMap) carries an
  escalating trace to Succeeded in a namespace enforcing the `restricted` Pod Security level; what the
  account may do is exactly the expected rule set there and nothing elsewhere.
* Cluster-wide install: the ClusterRole gives the same rules in every namespace, and uninstalling
  removes it.
"""

from __future__ import annotations

import json
import re
import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.cluster import kube
from tests.cluster.operator_fixtures import (
    BIG_GPU_BYTES,
    trace_manifest,
    wait_phase,
)

CHART = kube.REPO_ROOT / "charts" / "influence-trace-operator"
RESTRICTED = {
    "pod-security.kubernetes.io/enforce": "restricted",
    "pod-security.kubernetes.io/enforce-version": "latest",
}
# What `kubectl auth can-i --list` shows for the operator beyond an account with no bindings:
# (resource, verbs). Non-resource URLs and self-reviews come from system:authenticated and cancel out.
EXPECTED_CAN_I = {
    ("influencetraces.influencetrace.dev", frozenset({"get", "list", "watch"})),
    ("influencetraces.influencetrace.dev/status", frozenset({"update"})),
    ("jobs.batch", frozenset({"get", "list", "watch", "create", "delete"})),
    ("pods", frozenset({"list", "watch"})),
    ("pods/log", frozenset({"get"})),
    ("configmaps", frozenset({"get", "create", "update"})),  # children checked and replaced on a clash
    ("services", frozenset({"get", "create", "update"})),
    ("networkpolicies.networking.k8s.io", frozenset({"get", "create", "update"})),
    ("persistentvolumeclaims", frozenset({"get"})),  # a missing volume claim is reported before the Job
    ("events", frozenset({"create"})),
}
_ROW = re.compile(r"^\s*(?:(\S+)\s+)?(\[[^\]]*\])\s+(\[[^\]]*\])\s+(\[[^\]]*\])\s*$")


def helm(*args: str, timeout: float = 180) -> str:
    cluster = kube.current_cluster()
    proc = subprocess.run(
        [str(cluster.helm), *args], env=cluster.env(), capture_output=True, text=True, timeout=timeout
    )
    assert proc.returncode == 0, f"helm {' '.join(args)}: {proc.stderr}"
    return proc.stdout


def can_i(account: str, namespace: str) -> set[tuple[str, str, str, frozenset[str]]]:
    """Rows of `kubectl auth can-i --list` for a ServiceAccount ``ns:name``, in ``namespace``."""
    out = kube.kubectl(
        "auth", "can-i", "--list", f"--as=system:serviceaccount:{account}", namespace=namespace
    ).stdout
    rows = set()
    for line in out.splitlines()[1:]:
        match = _ROW.match(line)
        assert match, f"unparsed can-i line: {line!r}"
        resource, urls, names, verbs = match.groups()
        rows.add((resource or "", urls, names, frozenset(verbs.strip("[]").split())))
    return rows


def extra_rights(release_ns: str, sa: str, namespace: str,
                 named: frozenset = frozenset()) -> set[tuple[str, frozenset[str]]]:
    """What ``sa`` may do in ``namespace`` beyond the release namespace's unbound default account;
    the per-name rules must be exactly ``named`` ((resource, "[name]", verbs) rows)."""
    extra = can_i(f"{release_ns}:{sa}", namespace) - can_i(f"{release_ns}:default", namespace)
    assert {(r, n, v) for r, _, n, v in extra if n != "[]"} == set(named), extra
    return {(resource or urls, verbs) for resource, urls, names, verbs in extra if names == "[]"}


def install(release: str, namespace: str, *sets: str) -> None:
    args = ["install", release, str(CHART), "--namespace", namespace, "--wait", "--timeout", "120s"]
    for item in sets:
        args += ["--set", item]
    helm(*args)


@pytest.fixture()
def release_ns(cluster: kube.Cluster) -> Iterator[str]:
    """A fresh namespace for the chart's release, enforcing `restricted` like the trace namespace."""
    name = kube.create_namespace(kube.unique_name("it-release"), labels=RESTRICTED)
    try:
        yield name
    finally:
        for line in helm("list", "--short", "--namespace", name).split():
            helm("uninstall", line, "--namespace", name, "--wait")
        kube.delete_namespace(name)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_healthy(port: int, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as resp:
                if resp.status == 200:
                    return
        except OSError:
            pass
        assert time.monotonic() < deadline, f"no /healthz on port {port}"
        time.sleep(0.5)


def test_namespaced_install_runs_an_escalating_trace_with_the_chart_identity(
    namespace: str, release_ns: str, op, tmp_path: Path
) -> None:
    kube.kubectl("label", "namespace", namespace, *(f"{k}={v}" for k, v in RESTRICTED.items()))
    install("it", release_ns, f"watchNamespaces={{{namespace}}}", "operator.resyncSeconds=2")
    name = "it-influence-trace-operator"

    # The operator pod itself was admitted under `restricted` and became ready (--wait).
    pods = kube.list_objects("pods", release_ns, selector="app.kubernetes.io/instance=it")
    assert [p["status"]["phase"] for p in pods] == ["Running"]

    # Configure the local operator exactly as the Deployment does, but authenticated by a token.
    deployment = kube.get("deployment", name, release_ns)
    env = {e["name"]: e["value"] for e in deployment["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert json.loads(env["INFLUENCETRACE_NAMESPACES"]) == [namespace]
    pools = tmp_path / "pools.yaml"
    pools.write_text(kube.get("configmap", f"{name}-pools", release_ns)["data"]["pools.yaml"])
    token = kube.create_token(name, release_ns, duration="20m")
    port = free_port()
    env |= {
        "INFLUENCETRACE_POOLS_FILE": str(pools),
        "INFLUENCETRACE_LIVENESS_PORT": str(port),
        "KUBECONFIG": str(kube.token_kubeconfig(token, tmp_path / "sa-kubeconfig.yaml")),
    }
    op.start(**env)
    wait_healthy(port)

    trace = trace_manifest("esc", pod={"annotations": {kube.SIMULATE_GPU_BYTES: BIG_GPU_BYTES}})
    kube.apply(trace, namespace)
    status = wait_phase("esc", namespace, ("Succeeded", "Failed"), timeout=120)["status"]
    assert status["phase"] == "Succeeded", status
    assert (status["pool"], status["attempt"]) == ("h200", 2)
    assert [(a["pool"], a["outcome"]) for a in status["attempts"]] == [
        ("h100", "GPUOutOfMemory"),
        ("h200", "Succeeded"),
    ]
    # Both attempts' worker pods passed `restricted` admission (a refused pod never exists).
    for job in ("esc-a1", "esc-a2"):
        assert len(kube.job_pods(job, namespace)) == 1, job
    refused = [
        e["message"]
        for e in kube.list_objects("events", namespace)
        if e["reason"] == "FailedCreate" or "forbidden" in e.get("message", "").lower()
    ]
    assert refused == []
    logs = op.logs()
    for text in ("Forbidden", "Not enough permissions"):
        assert text not in logs, logs[-4000:]

    # The account can do exactly what the operator needs in the watched namespace, nothing elsewhere.
    assert extra_rights(release_ns, name, namespace) == EXPECTED_CAN_I
    # In its own namespace: the history ConfigMap and the replicas' Lease (get/update by name; create
    # cannot be limited to one name).
    named = frozenset({("configmaps", f"[{name}-history]", frozenset({"get", "update"})),
                       ("leases.coordination.k8s.io", f"[{name}]", frozenset({"get", "update"}))})
    assert extra_rights(release_ns, name, release_ns, named) == {
        ("configmaps", frozenset({"create"})), ("leases.coordination.k8s.io", frozenset({"create"}))}
    assert kube.get("configmap", f"{name}-history", release_ns) is not None  # the two attempts' record
    assert extra_rights(release_ns, name, "default") == set()


def test_cluster_wide_install_grants_the_same_rules_everywhere(release_ns: str, namespace: str) -> None:
    install("cw", release_ns)
    name = "cw-influence-trace-operator"
    assert kube.get("clusterrole", name) is not None
    for ns in (namespace, "default"):
        assert extra_rights(release_ns, name, ns) == EXPECTED_CAN_I
    helm("uninstall", "cw", "--namespace", release_ns, "--wait")
    assert kube.get("clusterrole", name) is None and kube.get("clusterrolebinding", name) is None
    assert kube.get("crd", "influencetraces.influencetrace.dev") is not None  # Helm keeps CRDs
