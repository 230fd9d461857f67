"""The Job builder: every field the issue asks for, deterministic names, owner references."""

from __future__ import annotations

import yaml
from influence_trace_operator.rules import labels
from influence_trace_operator.rules.jobs import build_configmap, build_job, configmap_name, fit_name, job_name
from influence_trace_operator.rules.policies import placement_on
from influence_trace_operator.rules.settings import OperatorSettings

from tests.operator.operator_builders import H100, REF, TOLERATION, trace

SETTINGS = OperatorSettings(worker_image="registry.example/worker:1", service_account="worker")


def _job() -> dict:
    return build_job(trace(), REF, placement_on(H100, 2, 8 * 2**30), SETTINGS)


def test_names_are_deterministic_and_fit_63() -> None:
    assert job_name("demo", 3) == "demo-a3"
    long = "x" * 80
    a, b = job_name(long, 1), job_name(long + "y", 1)
    assert len(a) <= 63 and len(b) <= 63 and a != b and a.endswith("-a1")
    assert job_name(long, 1) == a
    assert fit_name("a" * 70).replace("-", "").isalnum()
    assert len(configmap_name(long)) <= 63


def test_job_identity_and_owner() -> None:
    job = _job()
    meta = job["metadata"]
    assert meta["name"] == "demo-a2" and meta["namespace"] == "team-a"
    owner = meta["ownerReferences"][0]
    assert owner == {
        "apiVersion": "influencetrace.dev/v1alpha1",
        "kind": "InfluenceTrace",
        "name": "demo",
        "uid": "1234-uid",
        "controller": True,
        "blockOwnerDeletion": True,
    }
    assert meta["labels"][labels.TRACE] == "demo" and meta["labels"][labels.ATTEMPT] == "2"
    assert meta["labels"][labels.POOL] == "h100" and meta["labels"][labels.MANAGED_BY] == labels.MANAGER


def test_failure_policy_and_no_retries() -> None:
    spec = _job()["spec"]
    assert spec["backoffLimit"] == 0
    rules = spec["podFailurePolicy"]["rules"]
    assert rules[0] == {
        "action": "Ignore",
        "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}],
    }
    assert rules[1]["action"] == "FailJob"
    assert {75, 137} <= set(rules[1]["onExitCodes"]["values"])
    assert rules[1]["onExitCodes"]["operator"] == "In"


def test_pod_placement_resources_and_security() -> None:
    template = _job()["spec"]["template"]
    pod = template["spec"]
    assert pod["restartPolicy"] == "Never"
    assert pod["nodeSelector"] == {"influencetrace.dev/pool": "h100"}
    assert pod["tolerations"] == [TOLERATION]
    assert pod["serviceAccountName"] == "worker" and pod["automountServiceAccountToken"] is False
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    (c,) = pod["containers"]
    assert c["name"] == "worker" and c["image"] == "registry.example/worker:1"
    assert c["command"] == ["influence-trace", "run", "/etc/influence-trace/trace.yaml"]
    assert (
        c["resources"]["requests"]["nvidia.com/gpu"] == "2"
        and c["resources"]["limits"]["nvidia.com/gpu"] == "2"
    )
    assert c["resources"]["requests"]["memory"] == str(8 * 2**30)
    sc = c["securityContext"]
    assert sc["allowPrivilegeEscalation"] is False and sc["capabilities"] == {"drop": ["ALL"]}
    assert sc["runAsNonRoot"] is True and sc["seccompProfile"] == {"type": "RuntimeDefault"}
    assert sc["readOnlyRootFilesystem"] is True
    assert c["resources"]["requests"]["ephemeral-storage"] == "16Gi"
    assert c["terminationMessagePolicy"] == "FallbackToLogsOnError"
    mounts = {m["name"]: m["mountPath"] for m in c["volumeMounts"]}
    assert mounts["workspace"] == "/workspace" and mounts["manifest"] == "/etc/influence-trace"
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["workspace"]["persistentVolumeClaim"] == {"claimName": "influence-data"}
    assert volumes["manifest"]["configMap"]["name"] == "demo-manifest"
    assert volumes["tmp"]["emptyDir"] == {"sizeLimit": "16Gi"}
    assert volumes["dshm"]["emptyDir"] == {"medium": "Memory", "sizeLimit": "8Gi"}


def test_pod_labels_and_annotations() -> None:
    meta = _job()["spec"]["template"]["metadata"]
    assert meta["labels"]["team"] == "rl" and meta["labels"][labels.TRACE] == "demo"
    ann = meta["annotations"]
    assert ann["owner"] == "alice"
    assert ann[labels.POOL_GPU_BYTES] == str(80 * 2**30)
    assert ann["influencetrace.dev/simulate-gpu-bytes"] == "100000000000"
    assert "unrelated.example/x" not in ann


def test_no_pvc_without_storage() -> None:
    job = build_job(trace(storage={}), REF, placement_on(H100, 1, 2**30), SETTINGS)
    pod = job["spec"]["template"]["spec"]
    assert all(v["name"] != "workspace" for v in pod["volumes"])


def test_configmap_holds_the_manifest() -> None:
    cm = build_configmap(trace(), REF)
    assert cm["metadata"]["ownerReferences"][0]["uid"] == "1234-uid"
    manifest = yaml.safe_load(cm["data"]["trace.yaml"])
    assert manifest["kind"] == "InfluenceTrace" and manifest["metadata"]["name"] == "demo"
    assert manifest["spec"]["resources"]["gpus"] == 2 and manifest["spec"]["trace"]["factor"] == 32
