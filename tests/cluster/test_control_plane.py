"""The local control plane (hack/cluster.sh) does what the operator tests rely on.

Real kube-apiserver / kube-controller-manager / kube-scheduler / etcd, with kwok standing in for the
kubelets of fake GPU node pools and driving pod lifecycles through the stages in hack/kwok-stages.yaml.
"""

from __future__ import annotations

import json
import re
import subprocess
import time

import pytest

from tests.cluster import kube

GiB = 1024**3


def _pinned(name: str) -> str:
    text = (kube.REPO_ROOT / "hack" / "versions.env").read_text()
    match = re.search(rf"^{name}=(\S+)$", text, re.MULTILINE)
    assert match, f"{name} not in hack/versions.env"
    return match.group(1)


def _run_pod(namespace: str, name: str, timeout: float = 60, **kw) -> dict:
    kube.create(kube.pod_manifest(name, **kw), namespace=namespace)
    return kube.wait_for_pod_phase(name, namespace, timeout=timeout)


# --- versions and nodes ----------------------------------------------------------------------------


def test_kubectl_reports_pinned_server_version(cluster: kube.Cluster) -> None:
    versions = kube.kubectl_json("version")
    assert versions["serverVersion"]["gitVersion"] == _pinned("KUBE_VERSION")
    assert versions["clientVersion"]["gitVersion"] == _pinned("KUBE_VERSION")
    assert versions["serverVersion"]["gitTreeState"] == "clean"


def test_helm_reports_pinned_version(cluster: kube.Cluster) -> None:
    out = subprocess.run(
        [str(cluster.helm), "version", "--template", "{{.Version}}"],
        check=True,
        capture_output=True,
        text=True,
        env=cluster.env(),
    ).stdout.strip()
    assert out == _pinned("HELM_VERSION")


@pytest.mark.parametrize(
    ("pool", "product", "mib"),
    [("h100", "NVIDIA-H100-80GB-HBM3", 81559), ("h200", "NVIDIA-H200", 143771)],
)
def test_gpu_pools_are_ready_tainted_nodes(cluster: kube.Cluster, pool: str, product: str, mib: int) -> None:
    nodes = kube.gpu_nodes(pool)
    assert len(nodes) >= 2
    for node in nodes:
        labels = node["metadata"]["labels"]
        assert labels[kube.GPU_PRODUCT_LABEL] == product
        assert labels[kube.GPU_MEMORY_MIB_LABEL] == str(mib)
        assert int(labels[kube.GPU_MEMORY_BYTES_LABEL]) == mib * 1024 * 1024
        assert node["status"]["allocatable"][kube.GPU_RESOURCE] == "8"
        assert {"key": "nvidia.com/gpu", "value": "present", "effect": "NoSchedule"} in [
            {k: t.get(k) for k in ("key", "value", "effect")} for t in node["spec"]["taints"]
        ]
        assert kube.condition(node, "Ready")["status"] == "True"
    assert kube.pool_gpu_bytes(pool) == mib * 1024 * 1024


def test_cluster_plan_uses_only_local_binaries(cluster: kube.Cluster) -> None:
    plan = subprocess.run(
        [str(kube.CLUSTER_SH), "plan"], check=True, capture_output=True, text=True, timeout=120
    ).stdout
    fetched = [line for line in plan.splitlines() if line.startswith("# Download ")]
    assert len(fetched) == 5, plan  # etcd, kube-apiserver, kube-controller-manager, kube-scheduler, kwok
    for line in fetched:
        source = line.split()[2]
        assert source.startswith(str(cluster.bin_dir)), line
    assert "https://dl.k8s.io" not in plan and "github.com" not in plan


# --- scheduling and the Job controller ---------------------------------------------------------------


def test_job_on_h200_pool_is_scheduled_there_and_succeeds(namespace: str) -> None:
    kube.create(kube.job_manifest("train", pool="h200", gpus=8), namespace=namespace)
    job = kube.wait_for_job("train", namespace)
    assert kube.condition(job, "Complete")["status"] == "True"
    (pod,) = kube.job_pods("train", namespace)
    assert pod["status"]["phase"] == "Succeeded"
    node = kube.get("node", pod["spec"]["nodeName"])
    assert node["metadata"]["labels"][kube.POOL_LABEL] == "h200"
    scheduled = kube.condition(pod, "PodScheduled")
    assert scheduled["status"] == "True"
    assert kube.terminated_state(pod)["exitCode"] == 0


def test_pod_asking_for_nine_gpus_is_unschedulable(namespace: str) -> None:
    kube.create(kube.pod_manifest("too-big", pool="h100", gpus=9), namespace=namespace)
    pod = kube.wait_for_condition("pod", "too-big", "PodScheduled", namespace, status="False")
    cond = kube.condition(pod, "PodScheduled")
    assert cond["reason"] == "Unschedulable"
    assert "nvidia.com/gpu" in cond["message"]
    assert pod["status"]["phase"] == "Pending"
    assert not pod["spec"].get("nodeName")


def test_pod_without_toleration_does_not_land_on_gpu_nodes(namespace: str) -> None:
    manifest = kube.pod_manifest("no-toleration", pool="h100", gpus=1)
    del manifest["spec"]["tolerations"]
    kube.create(manifest, namespace=namespace)
    pod = kube.wait_for_condition("pod", "no-toleration", "PodScheduled", namespace, status="False")
    assert "untolerated taint" in kube.condition(pod, "PodScheduled")["message"]


def test_deleting_a_job_garbage_collects_its_pods(namespace: str) -> None:
    kube.create(
        kube.job_manifest("gc", pool="h100", labels={kube.SIMULATE_LABEL: "hang"}), namespace=namespace
    )
    pods = kube.wait_for(lambda: kube.job_pods("gc", namespace), description="job pod")
    assert pods[0]["metadata"]["ownerReferences"][0]["kind"] == "Job"
    kube.kubectl("delete", "job", "gc", "--cascade=background", "--wait=false", namespace=namespace)
    kube.wait_for(lambda: not kube.job_pods("gc", namespace), description="pods of deleted job to be GC'd")


def test_deleting_a_namespace_stops_a_running_job_pod_and_finishes(cluster: kube.Cluster) -> None:
    """A running Job pod keeps the Job controller's job-tracking finalizer until it has terminated, and
    namespaces delete their pods first: the delete stage must stop the containers, as a kubelet does."""
    name = kube.create_namespace(kube.unique_name("t-ns-delete"))
    kube.create(kube.job_manifest("run", pool="h100", labels={kube.SIMULATE_LABEL: "hang"}), namespace=name)
    pod = kube.wait_for(lambda: kube.job_pods("run", name), description="job pod")[0]["metadata"]["name"]
    kube.wait_for_pod_phase(pod, name, phases=["Running"])
    kube.delete_namespace(name)
    kube.wait_for(lambda: kube.get("namespace", name) is None, timeout=90, description="namespace gone")


# --- simulated outcomes (hack/kwok-stages.yaml) -------------------------------------------------------


def test_success_carries_termination_message_from_annotation(namespace: str) -> None:
    summary = {"status": "ok", "tokens_scored": 1234, "output": "s3://bucket/run/influence.parquet"}
    pod = _run_pod(
        namespace,
        "ok",
        pool="h100",
        annotations={kube.SIMULATE_TERMINATION_MESSAGE: json.dumps(summary)},
    )
    assert pod["status"]["phase"] == "Succeeded"
    term = kube.terminated_state(pod)
    assert term["exitCode"] == 0
    assert term["reason"] == "Completed"
    assert json.loads(term["message"]) == summary


def test_oom_kill_exits_137_oomkilled(namespace: str) -> None:
    pod = _run_pod(namespace, "oomkill", pool="h100", labels={kube.SIMULATE_LABEL: "oom-kill"})
    assert pod["status"]["phase"] == "Failed"
    term = kube.terminated_state(pod)
    assert term["exitCode"] == kube.EXIT_OOM_KILLED
    assert term["reason"] == "OOMKilled"


def test_gpu_oom_exits_75_with_json_message(namespace: str) -> None:
    pod = _run_pod(namespace, "gpuoom", pool="h100", labels={kube.SIMULATE_LABEL: "gpu-oom"})
    assert pod["status"]["phase"] == "Failed"
    term = kube.terminated_state(pod)
    assert term["exitCode"] == kube.EXIT_GPU_OOM
    message = json.loads(term["message"])
    assert message["reason"] == "GPUOutOfMemory"
    assert message["stage"] == "hessian_solve"
    assert message["message"]


def test_eviction_fails_pod_with_disruption_target(namespace: str) -> None:
    pod = _run_pod(namespace, "evicted", pool="h200", labels={kube.SIMULATE_LABEL: "evict"})
    assert pod["status"]["phase"] == "Failed"
    assert pod["status"]["reason"] == "Evicted"
    cond = kube.condition(pod, "DisruptionTarget")
    assert cond["status"] == "True"
    assert cond["reason"] == "TerminationByKubelet"


def test_generic_failure_uses_annotations(namespace: str) -> None:
    pod = _run_pod(
        namespace,
        "bad-input",
        pool="h100",
        labels={kube.SIMULATE_LABEL: "fail"},
        annotations={
            kube.SIMULATE_EXIT_CODE: str(kube.EXIT_INVALID_INPUT),
            kube.SIMULATE_REASON: "Error",
            kube.SIMULATE_MESSAGE: '{"reason":"InvalidInput","message":"rollouts file is empty"}',
        },
    )
    term = kube.terminated_state(pod)
    assert term["exitCode"] == kube.EXIT_INVALID_INPUT
    assert term["reason"] == "Error"
    assert json.loads(term["message"])["reason"] == "InvalidInput"


def test_hang_keeps_pod_running(namespace: str) -> None:
    kube.create(
        kube.pod_manifest("hang", pool="h100", labels={kube.SIMULATE_LABEL: "hang"}), namespace=namespace
    )
    kube.wait_for_pod_phase("hang", namespace, phases=["Running"])
    time.sleep(3)
    assert kube.get("pod", "hang", namespace)["status"]["phase"] == "Running"


@pytest.mark.parametrize(("pool", "expect_oom"), [("h100", True), ("h200", False)])
def test_simulate_gpu_bytes_decides_by_pool_gpu_memory(namespace: str, pool: str, expect_oom: bool) -> None:
    """Same pod needing 100 GiB per GPU: fails with 75 on 80 GB H100s, succeeds on 141 GB H200s."""
    need = 100 * GiB
    have = kube.pool_gpu_bytes(pool)
    assert (have < need) == expect_oom
    kube.create(
        kube.job_manifest(
            "trace",
            pool=pool,
            annotations={kube.SIMULATE_GPU_BYTES: str(need), kube.POOL_GPU_BYTES: str(have)},
        ),
        namespace=namespace,
    )
    job = kube.wait_for_job("trace", namespace)
    (pod,) = kube.job_pods("trace", namespace)
    term = kube.terminated_state(pod)
    if expect_oom:
        assert kube.condition(job, "Failed")["status"] == "True"
        assert pod["status"]["phase"] == "Failed"
        assert term["exitCode"] == kube.EXIT_GPU_OOM
        assert json.loads(term["message"])["reason"] == "GPUOutOfMemory"
    else:
        assert kube.condition(job, "Complete")["status"] == "True"
        assert pod["status"]["phase"] == "Succeeded"
        assert term["exitCode"] == 0


# --- API server: RBAC, admission, CRDs --------------------------------------------------------------


def test_serviceaccount_token_is_denied_without_role_and_allowed_with_one(namespace: str) -> None:
    kube.kubectl("create", "serviceaccount", "robot", namespace=namespace)
    token = kube.create_token("robot", namespace)

    denied = kube.kubectl_as(token, "get", "pods", namespace=namespace)
    assert denied.returncode != 0
    assert "Forbidden" in denied.stderr
    assert f"system:serviceaccount:{namespace}:robot" in denied.stderr

    kube.kubectl("create", "role", "pod-reader", "--verb=get,list", "--resource=pods", namespace=namespace)
    kube.kubectl(
        "create",
        "rolebinding",
        "robot-reads",
        "--role=pod-reader",
        f"--serviceaccount={namespace}:robot",
        namespace=namespace,
    )
    allowed = kube.wait_for(
        lambda: (p := kube.kubectl_as(token, "get", "pods", namespace=namespace)).returncode == 0 and p,
        timeout=20,
        description="RoleBinding to take effect",
    )
    assert allowed.returncode == 0
    still_denied = kube.kubectl_as(token, "get", "secrets", namespace=namespace)
    assert still_denied.returncode != 0 and "Forbidden" in still_denied.stderr


def test_restricted_pod_security_rejects_privileged_pod(cluster: kube.Cluster) -> None:
    ns = kube.create_namespace(
        kube.unique_name("t-psa"), labels={"pod-security.kubernetes.io/enforce": "restricted"}
    )
    try:
        privileged = kube.pod_manifest("privileged", pool="h100")
        privileged["spec"]["containers"][0]["securityContext"] = {"privileged": True}
        result = kube.create(privileged, namespace=ns, check=False)
        assert result.returncode != 0
        assert "violates PodSecurity" in result.stderr
        assert "privileged" in result.stderr

        compliant = kube.pod_manifest("compliant", pool="h100")
        compliant["spec"]["securityContext"] = {
            "runAsNonRoot": True,
            "runAsUser": 1000,
            "seccompProfile": {"type": "RuntimeDefault"},
        }
        compliant["spec"]["containers"][0]["securityContext"] = {
            "allowPrivilegeEscalation": False,
            "capabilities": {"drop": ["ALL"]},
        }
        kube.create(compliant, namespace=ns)
    finally:
        kube.delete_namespace(ns)


def test_crd_schema_validation_and_status_subresource(namespace: str) -> None:
    group = "cptest.influencetrace.dev"
    crd = {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"widgets.{group}"},
        "spec": {
            "group": group,
            "scope": "Namespaced",
            "names": {"plural": "widgets", "singular": "widget", "kind": "Widget"},
            "versions": [
                {
                    "name": "v1",
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": [
                        {"name": "Size", "type": "integer", "jsonPath": ".spec.size"},
                        {"name": "Phase", "type": "string", "jsonPath": ".status.phase"},
                    ],
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "properties": {
                                "spec": {
                                    "type": "object",
                                    "required": ["size"],
                                    "properties": {"size": {"type": "integer", "minimum": 1}},
                                },
                                "status": {"type": "object", "properties": {"phase": {"type": "string"}}},
                            },
                        }
                    },
                }
            ],
        },
    }
    kube.apply(crd)
    kube.wait_for_condition("crd", f"widgets.{group}", "Established")

    def widget(name: str, size: int) -> dict:
        return {
            "apiVersion": f"{group}/v1",
            "kind": "Widget",
            "metadata": {"name": name},
            "spec": {"size": size},
        }

    bad = kube.create(widget("bad", 0), namespace=namespace, check=False)
    assert bad.returncode != 0 and "spec.size" in bad.stderr

    kube.create(widget("good", 3), namespace=namespace)
    # status is a subresource: a plain update cannot set it, the /status endpoint can.
    kube.kubectl(
        "patch",
        "widget",
        "good",
        "--subresource=status",
        "--type=merge",
        "-p",
        '{"status":{"phase":"Ready"}}',
        namespace=namespace,
    )
    table = kube.kubectl("get", "widget", "good", namespace=namespace).stdout
    assert re.search(r"good\s+3\s+Ready", table), table
