"""The Helm chart, rendered offline by the real helm (built by hack/cluster.sh; no cluster needed).

Checks what the chart promises: lint-clean; the objects and their key fields; the operator's
environment read back through OperatorSettings and its pools file through the placement loader;
least-privilege RBAC in both modes; the CRD copy identical to crds/; a strict values schema.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from influence_trace.planning.placement import DEFAULT_POOLS, load_pools
from influence_trace_operator.rules.settings import OperatorSettings

from tests.cluster import kube

CHART = kube.REPO_ROOT / "charts" / "influence-trace-operator"
REGENERATE = "influence-trace crd --write-all"
# (apiGroup, resource, verbs): every API call of influence_trace_operator.adapters.kube.Kube and
# kopf's watches.
EXPECTED_RULES = {
    ("influencetrace.dev", "influencetraces", ("get", "list", "watch")),
    ("influencetrace.dev", "influencetraces/status", ("update",)),
    ("batch", "jobs", ("get", "list", "watch", "create", "delete")),
    ("", "pods", ("list", "watch")),
    ("", "pods/log", ("get",)),
    ("", "configmaps", ("get", "create", "update")),
    ("", "services", ("get", "create", "update")),
    ("", "persistentvolumeclaims", ("get",)),
    ("networking.k8s.io", "networkpolicies", ("get", "create", "update")),
    ("", "events", ("create",)),
}
RESTRICTED_CONTAINER = {
    "allowPrivilegeEscalation": False,
    "readOnlyRootFilesystem": True,
    "runAsNonRoot": True,
    "runAsUser": 65532,
    "runAsGroup": 65532,
    "capabilities": {"drop": ["ALL"]},
    "seccompProfile": {"type": "RuntimeDefault"},
}


@pytest.fixture(scope="module")
def helm() -> Path:
    path = kube.cluster_info().bin_dir / "helm"
    if not path.exists():
        pytest.skip(f"helm not built yet ({path}); run hack/cluster.sh build")
    return path


def run_helm(helm: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(helm), *args], capture_output=True, text=True, timeout=120)


def render(helm: Path, *sets: str, namespace: str = "ops") -> dict[tuple[str, str, str], dict[str, Any]]:
    """helm template with ``--set`` pairs; objects keyed by (kind, namespace, name)."""
    args = ["template", "rel", str(CHART), "--namespace", namespace]
    for item in sets:
        args += ["--set-json" if item.startswith("json:") else "--set", item.removeprefix("json:")]
    proc = run_helm(helm, *args)
    assert proc.returncode == 0, proc.stderr
    docs = [d for d in yaml.safe_load_all(proc.stdout) if d]
    return {(d["kind"], d["metadata"].get("namespace", ""), d["metadata"]["name"]): d for d in docs}


def rules_of(role: dict[str, Any]) -> set[tuple[str, str, tuple[str, ...]]]:
    out = set()
    for rule in role["rules"]:
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                out.add((group, resource, tuple(rule["verbs"])))
    return out


def deployment(objects: dict) -> dict[str, Any]:
    return objects[("Deployment", "ops", "rel-influence-trace-operator")]


def env_of(objects: dict) -> dict[str, str]:
    container = deployment(objects)["spec"]["template"]["spec"]["containers"][0]
    return {e["name"]: e["value"] for e in container["env"]}


def test_lint_is_clean(helm: Path) -> None:
    proc = run_helm(helm, "lint", "--strict", str(CHART))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "0 chart(s) failed" in proc.stdout
    meta = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert (meta["version"], meta["appVersion"]) == ("0.1.0", "0.1.0")


def test_default_objects_and_deployment(helm: Path) -> None:
    objects = render(helm)
    name = "rel-influence-trace-operator"
    assert set(objects) == {
        ("ServiceAccount", "ops", name),
        ("ConfigMap", "ops", f"{name}-pools"),
        ("ClusterRole", "", name),
        ("ClusterRoleBinding", "", name),
        ("Role", "ops", f"{name}-history"),
        ("RoleBinding", "ops", f"{name}-history"),
        ("Role", "ops", f"{name}-lease"),
        ("RoleBinding", "ops", f"{name}-lease"),
        ("Deployment", "ops", name),
    }
    dep = deployment(objects)["spec"]
    assert dep["replicas"] == 1 and dep["strategy"] == {"type": "Recreate"}
    pod = dep["template"]["spec"]
    assert pod["serviceAccountName"] == name
    assert pod["securityContext"] == {
        "runAsNonRoot": True,
        "runAsUser": 65532,
        "runAsGroup": 65532,
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    (container,) = pod["containers"]
    assert container["image"] == "influence-trace-operator:0.1.0"
    assert container["args"] == ["operator"]
    assert container["securityContext"] == RESTRICTED_CONTAINER
    assert container["ports"] == [{"name": "health", "containerPort": 8080, "protocol": "TCP"}]
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "health"}
    assert container["resources"]["limits"]["memory"] == "512Mi"
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    assert mounts["/etc/influence-trace-operator"]["readOnly"] is True and "/tmp" in mounts
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["pools"]["configMap"]["name"] == f"{name}-pools"
    assert dep["selector"]["matchLabels"].items() <= dep["template"]["metadata"]["labels"].items()


def test_cluster_wide_rbac_is_minimal(helm: Path) -> None:
    objects = render(helm)
    role = objects[("ClusterRole", "", "rel-influence-trace-operator")]
    assert rules_of(role) == EXPECTED_RULES
    text = json.dumps(role["rules"])
    assert "*" not in text and "secrets" not in text
    binding = objects[("ClusterRoleBinding", "", "rel-influence-trace-operator")]
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "ClusterRole",
        "name": "rel-influence-trace-operator",
    }
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": "rel-influence-trace-operator", "namespace": "ops"}
    ]


def test_watched_namespaces_get_roles_and_nothing_cluster_wide(helm: Path) -> None:
    objects = render(helm, "watchNamespaces={team-a,team-b}")
    kinds = sorted(
        (k, ns) for k, ns, _ in objects if k in {"Role", "RoleBinding", "ClusterRole", "ClusterRoleBinding"}
    )
    assert kinds == [
        ("Role", "ops"),  # the history ConfigMap in the release namespace
        ("Role", "ops"),  # the Lease in the release namespace
        ("Role", "team-a"),
        ("Role", "team-b"),
        ("RoleBinding", "ops"),
        ("RoleBinding", "ops"),
        ("RoleBinding", "team-a"),
        ("RoleBinding", "team-b"),
    ]
    for ns in ("team-a", "team-b"):
        assert rules_of(objects[("Role", ns, "rel-influence-trace-operator")]) == EXPECTED_RULES
        binding = objects[("RoleBinding", ns, "rel-influence-trace-operator")]
        assert binding["roleRef"]["kind"] == "Role"
        assert binding["subjects"][0]["namespace"] == "ops"
    assert json.loads(env_of(objects)["INFLUENCETRACE_NAMESPACES"]) == ["team-a", "team-b"]


def test_owner_reference_enforcement_adds_only_finalizers(helm: Path) -> None:
    role = render(helm, "rbac.ownerReferencesPermissionEnforcement=true")[
        ("ClusterRole", "", "rel-influence-trace-operator")
    ]
    assert rules_of(role) - EXPECTED_RULES == {
        ("influencetrace.dev", "influencetraces/finalizers", ("update",))
    }


def test_kueue_adds_only_reading_workloads_and_the_default_queue(
    helm: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    plain = render(helm, "kueue.defaultQueue=ignored-when-disabled")
    assert "INFLUENCETRACE_DEFAULT_QUEUE" not in env_of(plain)
    objects = render(helm, "kueue.enabled=true", "kueue.defaultQueue=team-queue")
    role = objects[("ClusterRole", "", "rel-influence-trace-operator")]
    assert rules_of(role) - EXPECTED_RULES == {("kueue.x-k8s.io", "workloads", ("list",))}
    env = env_of(objects)
    assert env["INFLUENCETRACE_DEFAULT_QUEUE"] == "team-queue"
    monkeypatch.setenv("INFLUENCETRACE_DEFAULT_QUEUE", env["INFLUENCETRACE_DEFAULT_QUEUE"])
    assert OperatorSettings().default_queue == "team-queue"


def test_rbac_and_service_account_can_be_external(helm: Path) -> None:
    objects = render(helm, "rbac.create=false", "serviceAccount.create=false", "serviceAccount.name=mine")
    assert {k for k, _, _ in objects} == {"ConfigMap", "Deployment"}
    assert deployment(objects)["spec"]["template"]["spec"]["serviceAccountName"] == "mine"


def test_environment_reaches_operator_settings(
    helm: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    objects = render(
        helm,
        "worker.image.repository=registry.example/worker",
        "worker.image.tag=1.2.3",
        "worker.image.pullPolicy=Always",
        "worker.serviceAccountName=trace-runner",
        "worker.cpuPerGpu=6",
        "worker.hostMemoryGrowth=1.5",
        "worker.minHostMemoryBytes=8589934592",
        "headroom=0.25",
        "maxAttempts=5",
        "pendingTimeout=10m",
        "maxNodes=8",
        "namespacePools.team-a={h100}",
        "networkPolicy=false",
        "runTimeout=2h",
        "operator.resyncSeconds=45",
        "operator.workers=4",
        "operator.livenessPort=9090",
        "watchNamespaces={team-a}",
    )
    env = env_of(objects)
    assert all(key.startswith("INFLUENCETRACE_") for key in env)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    settings = OperatorSettings()
    assert settings.worker_image == "registry.example/worker:1.2.3"
    assert settings.image_pull_policy == "Always"
    assert settings.service_account == "trace-runner"
    assert (settings.cpu_per_gpu, settings.host_memory_growth, settings.min_host_memory_bytes) == (
        6,
        1.5,
        8 * 2**30,
    )
    assert (settings.headroom, settings.resync_seconds, settings.workers) == (0.25, 45.0, 4)
    assert settings.default_max_attempts == 5
    assert (settings.default_pending_timeout, settings.default_run_timeout) == ("10m", "2h")
    assert (settings.max_nodes, settings.namespace_pools, settings.network_policy) == (
        8, {"team-a": ["h100"]}, False)
    assert (settings.tmp_size_limit, settings.shm_size_limit) == ("16Gi", "8Gi")
    assert settings.namespaces == ["team-a"] and settings.liveness_port == 9090
    assert settings.pools_file == "/etc/influence-trace-operator/pools.yaml"
    container = deployment(objects)["spec"]["template"]["spec"]["containers"][0]
    assert container["ports"][0]["containerPort"] == 9090


def test_history_role_and_switch(helm: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The history ConfigMap: get/update on its name only, create in the release namespace; off: none."""
    name = "rel-influence-trace-operator-history"
    objects = render(helm, "history.margin=0.1", "history.limit=50")
    rules = objects[("Role", "ops", name)]["rules"]
    assert rules == [
        {"apiGroups": [""], "resources": ["configmaps"], "resourceNames": [name], "verbs": ["get", "update"]},
        {"apiGroups": [""], "resources": ["configmaps"], "verbs": ["create"]},
    ]
    for key, value in env_of(objects).items():
        monkeypatch.setenv(key, value)
    settings = OperatorSettings()
    assert (settings.history, settings.history_namespace, settings.history_configmap) == (True, "ops", name)
    assert (settings.history_margin, settings.history_limit) == (0.1, 50)
    off = render(helm, "history.enabled=false")
    assert ("Role", "ops", name) not in off and env_of(off)["INFLUENCETRACE_HISTORY"] == "false"
    monkeypatch.setenv("INFLUENCETRACE_HISTORY", "false")
    assert OperatorSettings().history is False


def test_lease_role_settings_and_replicas(helm: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The Lease: get/update on its name only, create in the release namespace; settings reach the
    operator; more replicas are allowed because only the Lease holder acts."""
    name = "rel-influence-trace-operator"
    objects = render(helm, "operator.replicas=2", "operator.leaseSeconds=20", "operator.wedgedSeconds=90")
    assert objects[("Role", "ops", f"{name}-lease")]["rules"] == [
        {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "resourceNames": [name],
         "verbs": ["get", "update"]},
        {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": ["create"]},
    ]
    binding = objects[("RoleBinding", "ops", f"{name}-lease")]
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": name, "namespace": "ops"}]
    assert deployment(objects)["spec"]["replicas"] == 2
    for key, value in env_of(objects).items():
        monkeypatch.setenv(key, value)
    settings = OperatorSettings()
    assert (settings.lease, settings.lease_name, settings.lease_namespace) == (True, name, "ops")
    assert (settings.lease_seconds, settings.wedged_seconds) == (20.0, 90.0)


def test_grace_period_outlasts_the_operators_shutdown_bound(
    helm: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SIGKILL comes terminationGracePeriodSeconds after SIGTERM: the operator's own stop bound
    (INFLUENCETRACE_SHUTDOWN_SECONDS, lifecycle.shutdown) ends 10 s before it, default and set."""
    for args, bound in (((), 20), (("operator.shutdownSeconds=45",), 45)):
        objects = render(helm, *args)
        env = env_of(objects)["INFLUENCETRACE_SHUTDOWN_SECONDS"]
        monkeypatch.setenv("INFLUENCETRACE_SHUTDOWN_SECONDS", env)
        assert OperatorSettings().shutdown_seconds == bound
        assert deployment(objects)["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] == bound + 10


def test_service_monitor_is_off_by_default_and_scrapes_the_health_port(helm: Path) -> None:
    name = "rel-influence-trace-operator"
    assert not {k for k in render(helm) if k[0] in ("ServiceMonitor", "Service")}
    objects = render(helm, "metrics.serviceMonitor.enabled=true", "metrics.serviceMonitor.interval=15s",
                     "metrics.serviceMonitor.labels.release=prom", "operator.livenessPort=9090")
    service = objects[("Service", "ops", f"{name}-metrics")]
    monitor = objects[("ServiceMonitor", "ops", name)]
    pod_labels = deployment(objects)["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= pod_labels.items()
    port = {"name": "health", "port": 9090, "targetPort": "health", "protocol": "TCP"}
    assert service["spec"]["ports"] == [port]
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    assert monitor["spec"]["endpoints"] == [{"port": "health", "path": "/metrics", "interval": "15s"}]
    assert monitor["metadata"]["labels"]["release"] == "prom"


def test_pool_table_is_the_placement_default_and_loads(helm: Path, tmp_path: Path) -> None:
    objects = render(helm)
    data = objects[("ConfigMap", "ops", "rel-influence-trace-operator-pools")]["data"]["pools.yaml"]
    path = tmp_path / "pools.yaml"
    path.write_text(data)
    table = load_pools(path)
    assert list(table.pools) == list(DEFAULT_POOLS)
    assert [p.name for p in table.pools] == ["h100", "h200"]


def test_changed_pools_change_the_pod_checksum(helm: Path) -> None:
    def checksum(*sets: str) -> str:
        return deployment(render(helm, *sets))["spec"]["template"]["metadata"]["annotations"][
            "checksum/pools"
        ]

    pools = yaml.safe_load((CHART / "values.yaml").read_text())["pools"]
    assert checksum(f"json:pools={json.dumps(pools)}") == checksum()
    pools[0]["gpusPerNode"] = 4
    assert checksum(f"json:pools={json.dumps(pools)}") != checksum()


def test_chart_crd_is_identical_to_the_generated_one() -> None:
    chart_copy = CHART / "crds" / "influencetraces.yaml"
    top_level = kube.REPO_ROOT / "crds" / "influencetraces.yaml"
    assert chart_copy.read_bytes() == top_level.read_bytes(), f"chart CRD differs; regenerate: {REGENERATE}"
    assert sorted(p.name for p in (CHART / "crds").iterdir()) == ["influencetraces.yaml"]


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("headroom=1.5", "/headroom"),
        ("maxAttempts=0", "/maxAttempts"),
        ("json:headroom=1", "/headroom"),
        ("operator.replicas=-1", "/operator/replicas"),
        ("metrics.serviceMonitor.interval=often", "/metrics/serviceMonitor/interval"),
        ("json:pools=[]", "/pools"),
        ('json:pools=[{"name": "a100", "gpuMemoryBytes": 42949672960}]', "missing properties"),
        ("pools[0].gpuMemoryBytes=-1", "/pools/0/gpuMemoryBytes"),
        ("watchNamespaces={Team_A}", "/watchNamespaces/0"),
        ("operator.image.pullPolicy=Sometimes", "/operator/image/pullPolicy"),
        ("operator.livenessPort=0", "/operator/livenessPort"),
        ("worker.hostMemoryGrowth=1.0", "/worker/hostMemoryGrowth"),
        ("kueue.defaultQueue=Team_Q", "/kueue/defaultQueue"),
    ],
)
def test_schema_rejects_bad_values(helm: Path, value: str, message: str) -> None:
    flag = "--set-json" if value.startswith("json:") else "--set"
    proc = run_helm(helm, "template", "rel", str(CHART), flag, value.removeprefix("json:"))
    assert proc.returncode != 0, f"{value} was accepted"
    assert "schema" in proc.stderr and message in proc.stderr, proc.stderr
