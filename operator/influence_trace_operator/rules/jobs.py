"""Pure builders of the worker's Job and its manifest ConfigMap (no API calls, unit-tested).

Everything here is a function of the trace, the attempt number, the pool and the settings, so a
restarted operator builds byte-for-byte the same Job and can adopt the one it created before.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

import yaml
from influence_trace.api.contract import EXIT_CODES, EXIT_KERNEL_OOM_KILL
from influence_trace.api.spec import API_VERSION, KIND, WORKSPACE_MOUNT, InfluenceTrace, duration_seconds

from influence_trace_operator.rules import labels
from influence_trace_operator.rules.settings import OperatorSettings

NAME_LIMIT = 63  # Job names become the value of the job-name label on its pods
MANIFEST_DIR = "/etc/influence-trace"
MANIFEST_KEY = "trace.yaml"
WORKSPACE = WORKSPACE_MOUNT
WORKER_UID = 65532  # the Dockerfile's non-root user
# Exit codes that end the Job at once instead of retrying: the worker's own failures (a retry on the
# same pool fails the same way) and 137 (kernel OOM kill: the host memory request must change).
FAIL_JOB_EXIT_CODES = sorted({*EXIT_CODES.values(), EXIT_KERNEL_OOM_KILL})


@dataclass(frozen=True)
class TraceRef:
    """The identity of a trace object: what owner references and names are built from."""

    name: str
    namespace: str
    uid: str


@dataclass(frozen=True)
class JobPlacement:
    """Where and with how much host memory one attempt runs."""

    attempt: int
    pool: str
    node_selector: dict[str, str]
    tolerations: list[dict[str, Any]]
    gpu_memory_bytes: int
    host_memory_bytes: int


def fit_name(base: str, suffix: str = "", limit: int = NAME_LIMIT) -> str:
    """``base + suffix`` within ``limit`` characters; too long a base is cut and given a hash.

    The hash keeps two long names that share a prefix apart; the result stays a valid DNS label.
    """
    if len(base) + len(suffix) <= limit:
        return base + suffix
    digest = hashlib.sha256(base.encode()).hexdigest()[:8]
    keep = base[: limit - len(suffix) - len(digest) - 1].rstrip("-.")
    return f"{keep}-{digest}{suffix}"


def job_name(name: str, attempt: int) -> str:
    """The deterministic name of attempt N's Job: ``<trace>-a<N>``."""
    return fit_name(name, f"-a{attempt}")


def configmap_name(name: str) -> str:
    """The ConfigMap holding the manifest the worker runs."""
    return fit_name(name, "-manifest")


def service_name(name: str) -> str:
    """The headless Service through which the pods of a multi-node attempt find rank 0's pod."""
    return fit_name(name, "-ranks")


def owner_reference(ref: TraceRef) -> dict[str, Any]:
    """Makes the trace the controller of a child, so deleting it garbage-collects the child."""
    return {
        "apiVersion": f"{labels.PREFIX.rstrip('/')}/{API_VERSION}",
        "kind": KIND,
        "name": ref.name,
        "uid": ref.uid,
        "controller": True,
        "blockOwnerDeletion": True,
    }


def child_labels(ref: TraceRef, attempt: int | None = None, pool: str | None = None) -> dict[str, str]:
    """Labels on every child: selectable by trace (and attempt), recognisable as the operator's."""
    out = {
        labels.TRACE: fit_name(ref.name),
        labels.MANAGED_BY: labels.MANAGER,
        labels.NAME: labels.WORKER_NAME,
    }
    if attempt is not None:
        out[labels.ATTEMPT] = str(attempt)
    if pool is not None:
        out[labels.POOL] = pool
    return out


def child_metadata(ref: TraceRef, name: str) -> dict[str, Any]:
    """Metadata of a per-trace child (ConfigMap, Service, NetworkPolicy): owned by and named for it."""
    return {
        "name": name,
        "namespace": ref.namespace,
        "labels": child_labels(ref),
        "annotations": {labels.TRACE_NAME: ref.name},
        "ownerReferences": [owner_reference(ref)],
    }


def worker_manifest(resource: InfluenceTrace, ref: TraceRef) -> str:
    """The manifest handed to ``influence-trace run``: the trace's spec, as stored, as YAML."""
    body = {
        "apiVersion": resource.api_version,
        "kind": resource.kind,
        "metadata": {"name": ref.name, "namespace": ref.namespace},
        "spec": resource.spec.model_dump(mode="json", by_alias=True, exclude_none=True),
    }
    return yaml.dump(body, Dumper=yaml.CSafeDumper, sort_keys=False)  # libyaml: 20x the pure dumper


def build_configmap(resource: InfluenceTrace, ref: TraceRef) -> dict[str, Any]:
    """The ConfigMap mounted read-only at /etc/influence-trace in every attempt's pods."""
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": child_metadata(ref, configmap_name(ref.name)),
        "data": {MANIFEST_KEY: worker_manifest(resource, ref)},
    }


def _pod_annotations(resource: InfluenceTrace, ref: TraceRef, placement: JobPlacement) -> dict[str, str]:
    """User annotations, the simulation annotations of the trace itself, then the operator's own."""
    annotations = resource.metadata.annotations
    simulate = {k: v for k, v in annotations.items() if k.startswith(labels.SIMULATE_PREFIX)}
    return {
        **resource.spec.pod.annotations,
        **simulate,
        labels.TRACE_NAME: ref.name,
        labels.POOL_GPU_BYTES: str(placement.gpu_memory_bytes),
        labels.HOST_MEMORY_BYTES: str(placement.host_memory_bytes),
    }


CONTAINER_SECURITY: dict[str, Any] = {
    "allowPrivilegeEscalation": False,
    "readOnlyRootFilesystem": True,  # writes go to /tmp, /dev/shm and the volume only
    "capabilities": {"drop": ["ALL"]},
    "runAsNonRoot": True,
    "seccompProfile": {"type": "RuntimeDefault"},
}


def _container(resource: InfluenceTrace, placement: JobPlacement,
               settings: OperatorSettings) -> dict[str, Any]:
    gpus = resource.spec.resources.gpus
    mounts = [
        {"name": "manifest", "mountPath": MANIFEST_DIR, "readOnly": True},
        {"name": "tmp", "mountPath": "/tmp"},
        {"name": "dshm", "mountPath": "/dev/shm"},
    ]
    if resource.spec.storage.volume_claim:
        mounts.append({"name": "workspace", "mountPath": WORKSPACE})
    memory = str(placement.host_memory_bytes)
    return {
        "name": labels.WORKER_CONTAINER,
        "image": settings.worker_image,
        "imagePullPolicy": settings.image_pull_policy,
        "command": [*settings.worker_command, f"{MANIFEST_DIR}/{MANIFEST_KEY}"],
        "env": [
            {"name": "HOME", "value": "/tmp"},
            {"name": "PYTHONUNBUFFERED", "value": "1"},
            {"name": "INFLUENCE_TRACE_POOL", "value": placement.pool},
            {"name": "INFLUENCE_TRACE_ATTEMPT", "value": str(placement.attempt)},
        ],
        "resources": {
            "requests": {
                "cpu": str(settings.cpu_per_gpu * gpus),
                "memory": memory,
                "nvidia.com/gpu": str(gpus),
                "ephemeral-storage": settings.tmp_size_limit,  # /tmp is on the node's disk
            },
            "limits": {"memory": memory, "nvidia.com/gpu": str(gpus)},
        },
        "securityContext": CONTAINER_SECURITY,
        "terminationMessagePath": "/dev/termination-log",
        "terminationMessagePolicy": "FallbackToLogsOnError",
        "volumeMounts": mounts,
    }


def _volumes(resource: InfluenceTrace, ref: TraceRef, settings: OperatorSettings) -> list[dict[str, Any]]:
    """The manifest, bounded scratch space (a pod past a sizeLimit is evicted, not the node filled;
    /dev/shm counts against the memory limit) and the trace's PVC."""
    volumes: list[dict[str, Any]] = [
        {"name": "manifest", "configMap": {"name": configmap_name(ref.name)}},
        {"name": "tmp", "emptyDir": {"sizeLimit": settings.tmp_size_limit}},
        {"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": settings.shm_size_limit}},
    ]
    if resource.spec.storage.volume_claim:
        volumes.append(
            {"name": "workspace", "persistentVolumeClaim": {"claimName": resource.spec.storage.volume_claim}}
        )
    return volumes


def _pod_spec(
    resource: InfluenceTrace, ref: TraceRef, placement: JobPlacement, settings: OperatorSettings
) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "restartPolicy": "Never",
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "nodeSelector": dict(placement.node_selector),
        "tolerations": [dict(t) for t in placement.tolerations],
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": WORKER_UID,
            "runAsGroup": WORKER_UID,
            "fsGroup": WORKER_UID,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "containers": [_container(resource, placement, settings)],
        "volumes": _volumes(resource, ref, settings),
    }
    if settings.service_account:
        spec["serviceAccountName"] = settings.service_account
    return spec


# Evictions and preemptions are not the trace's fault: the Job replaces the pod on the same pool, and
# the failure does not count against backoffLimit. The worker's own exit codes fail the Job at once.
POD_FAILURE_POLICY: dict[str, Any] = {"rules": [
    {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}]},
    {"action": "FailJob", "onExitCodes": {"containerName": labels.WORKER_CONTAINER, "operator": "In",
                                          "values": FAIL_JOB_EXIT_CODES}},
]}


def build_job(
    resource: InfluenceTrace, ref: TraceRef, placement: JobPlacement, settings: OperatorSettings
) -> dict[str, Any]:
    """The batch/v1 Job of one attempt, owned by the trace."""
    nodes = resource.spec.resources.nodes
    own = child_labels(ref, placement.attempt, placement.pool)
    pod_labels = {**resource.spec.pod.labels, **own}
    job_spec: dict[str, Any] = {
        "backoffLimit": 0,  # no retry storm: every relaunch is the operator's decision
        "activeDeadlineSeconds": duration_seconds(
            resource.spec.resources.run_timeout or settings.default_run_timeout
        ),
        "completions": nodes,
        "parallelism": nodes,
        "podFailurePolicy": POD_FAILURE_POLICY,
        "template": {
            "metadata": {"labels": pod_labels, "annotations": _pod_annotations(resource, ref, placement)},
            "spec": _pod_spec(resource, ref, placement, settings),
        },
    }
    if nodes > 1:
        job_spec["completionMode"] = "Indexed"
        _add_rendezvous(job_spec["template"]["spec"], resource, job_name(ref.name, placement.attempt), ref)
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": job_name(ref.name, placement.attempt),
            "namespace": ref.namespace,
            "labels": own,
            "annotations": {
                labels.TRACE_NAME: ref.name,
                labels.POOL_GPU_BYTES: str(placement.gpu_memory_bytes),
                labels.HOST_MEMORY_BYTES: str(placement.host_memory_bytes),
            },
            "ownerReferences": [owner_reference(ref)],
        },
        "spec": job_spec,
    }


RENDEZVOUS_PORT = 29500  # rank 0's pod: the static rendezvous and the process group's TCP store


def _add_rendezvous(pod: dict[str, Any], resource: InfluenceTrace, job: str, ref: TraceRef) -> None:
    """Pods of an Indexed Job get the hostname ``<job>-<index>``; with the Service as subdomain, index
    0 is ``<job>-0.<service>``: the address every node's launcher meets at (JOB_COMPLETION_INDEX, set
    by the Job controller, is the node rank)."""
    service = service_name(ref.name)
    pod["subdomain"] = service
    pod["containers"][0]["env"] += [
        {"name": "INFLUENCE_TRACE_NNODES", "value": str(resource.spec.resources.nodes)},
        {"name": "MASTER_ADDR", "value": f"{job}-0.{service}"},
        {"name": "MASTER_PORT", "value": str(RENDEZVOUS_PORT)},
        {"name": "JOB_NAME", "value": job},
    ]


def build_service(resource: InfluenceTrace, ref: TraceRef) -> dict[str, Any]:
    """The headless Service of a multi-node trace (one per trace, so every attempt's Job reuses it).

    It selects the trace's worker pods and publishes them before they are ready, since the ranks
    must resolve each other while they start (the pattern PyTorchJob and JobSet use).
    """
    own = child_labels(ref)
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": child_metadata(ref, service_name(ref.name)),
        "spec": {
            "clusterIP": "None",
            "publishNotReadyAddresses": True,
            "selector": own,
            "ports": [{"name": "rendezvous", "port": RENDEZVOUS_PORT, "targetPort": RENDEZVOUS_PORT}],
        },
    }
