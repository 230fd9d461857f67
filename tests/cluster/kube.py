"""Helpers for tests that run against the local control plane from hack/cluster.sh.

Everything goes through the real ``kubectl`` built by hack/cluster.sh (the one in ``Cluster.bin_dir``),
so what a test does is what a person would type. The module is shared by the control-plane tests and
the operator tests (tests/cluster/test_operator_*.py).

The kwok simulation contract (labels/annotations that decide how a pod ends) is documented in
hack/README.md; the constants below name those keys.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tempfile
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]
CLUSTER_SH = REPO_ROOT / "hack" / "cluster.sh"
LOGS_ROOT = REPO_ROOT / ".cluster-logs"

# --- node pools (hack/cluster.sh creates them) ---------------------------------------------------
POOL_LABEL = "influencetrace.dev/pool"
GPU_PRODUCT_LABEL = "nvidia.com/gpu.product"
GPU_MEMORY_MIB_LABEL = "nvidia.com/gpu.memory"
GPU_MEMORY_BYTES_LABEL = "influencetrace.dev/gpu-memory-bytes"
GPU_RESOURCE = "nvidia.com/gpu"
GPU_TOLERATION: dict[str, str] = {
    "key": "nvidia.com/gpu",
    "operator": "Equal",
    "value": "present",
    "effect": "NoSchedule",
}

# --- kwok simulation contract (hack/kwok-stages.yaml, documented in hack/README.md) ----------------
SIMULATE_LABEL = "influencetrace.dev/simulate"  # values: succeed | fail | gpu-oom | oom-kill | evict | hang
SIMULATE_EXIT_CODE = "influencetrace.dev/simulate-exit-code"
SIMULATE_REASON = "influencetrace.dev/simulate-reason"
SIMULATE_MESSAGE = "influencetrace.dev/simulate-message"
SIMULATE_STAGE = "influencetrace.dev/simulate-stage"
SIMULATE_DISRUPTION_REASON = "influencetrace.dev/simulate-disruption-reason"
SIMULATE_DURATION = "influencetrace.dev/simulate-duration"
SIMULATE_TERMINATION_MESSAGE = "influencetrace.dev/simulate-termination-message"
SIMULATE_GPU_BYTES = "influencetrace.dev/simulate-gpu-bytes"
POOL_GPU_BYTES = "influencetrace.dev/pool-gpu-bytes"

# Worker exit codes (project-wide contract).
EXIT_INVALID_INPUT = 65
EXIT_ERROR = 70
EXIT_GPU_OOM = 75
EXIT_HOST_OOM = 76
EXIT_OOM_KILLED = 137

T = TypeVar("T")


# --- cluster lifecycle -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Cluster:
    """Where the running cluster's kubeconfig and the built client binaries are."""

    kubeconfig: Path
    bin_dir: Path

    @property
    def kubectl(self) -> Path:
        return self.bin_dir / "kubectl"

    @property
    def helm(self) -> Path:
        return self.bin_dir / "helm"

    @property
    def kwokctl(self) -> Path:
        return self.bin_dir / "kwokctl"

    def env(self) -> dict[str, str]:
        """os.environ with KUBECONFIG set and the cluster's bin dir first on PATH (for subprocesses)."""
        env = dict(os.environ)
        env["KUBECONFIG"] = str(self.kubeconfig)
        env["PATH"] = f"{self.bin_dir}{os.pathsep}{env.get('PATH', '')}"
        return env


def _cluster_sh(*args: str, timeout: float | None = None) -> str:
    proc = subprocess.run(
        [str(CLUSTER_SH), *args], check=True, capture_output=True, text=True, timeout=timeout
    )
    return proc.stdout.strip()


def cluster_info() -> Cluster:
    """Paths of the (possibly not running) cluster, without building or starting anything."""
    return Cluster(kubeconfig=Path(_cluster_sh("kubeconfig")), bin_dir=Path(_cluster_sh("bin")))


def cluster_up(timeout: float = 3600) -> Cluster:
    """``hack/cluster.sh up`` (builds on first use, reuses a running cluster); its log goes to stderr."""
    subprocess.run([str(CLUSTER_SH), "up"], check=True, timeout=timeout)
    return cluster_info()


def collect_logs(dest: Path) -> Path:
    """Write every component's log plus nodes/pods/events listings into ``dest``; never raises."""
    dest.mkdir(parents=True, exist_ok=True)
    try:
        subprocess.run(
            [str(CLUSTER_SH), "logs", str(dest)], check=False, capture_output=True, text=True, timeout=120
        )
    except (OSError, subprocess.SubprocessError) as exc:  # logs are best effort
        (dest / "collect-error.txt").write_text(repr(exc))
    return dest


def _current() -> Cluster:
    kubeconfig = os.environ.get("KUBECONFIG")
    info = cluster_info()
    return Cluster(kubeconfig=Path(kubeconfig) if kubeconfig else info.kubeconfig, bin_dir=info.bin_dir)


_CLUSTER: Cluster | None = None


def use_cluster(cluster: Cluster) -> None:
    """Make the helpers below talk to ``cluster`` (the session fixture calls this)."""
    global _CLUSTER
    _CLUSTER = cluster


def current_cluster() -> Cluster:
    global _CLUSTER
    if _CLUSTER is None:
        _CLUSTER = _current()
    return _CLUSTER


# --- kubectl ---------------------------------------------------------------------------------------


class KubectlError(subprocess.CalledProcessError):
    def __str__(self) -> str:
        return f"{' '.join(map(str, self.cmd))} exited {self.returncode}: {(self.stderr or '').strip()}"


def kubectl(
    *args: str,
    namespace: str | None = None,
    input: str | None = None,
    check: bool = True,
    timeout: float = 60,
    kubeconfig: Path | str | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run the cluster's kubectl; raises KubectlError (with stderr) when ``check`` and it fails."""
    cluster = current_cluster()
    cmd = [str(cluster.kubectl), "--kubeconfig", str(kubeconfig or cluster.kubeconfig)]
    if namespace:
        cmd += ["--namespace", namespace]
    cmd += list(args)
    proc = subprocess.run(cmd, input=input, capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise KubectlError(proc.returncode, cmd, proc.stdout, proc.stderr)
    return proc


def kubectl_json(*args: str, namespace: str | None = None, **kw: Any) -> Any:
    """kubectl ... -o json, parsed."""
    return json.loads(kubectl(*args, "-o", "json", namespace=namespace, **kw).stdout)


def _to_yaml(manifest: Mapping[str, Any] | Iterable[Mapping[str, Any]] | str) -> str:
    if isinstance(manifest, str):
        return manifest
    if isinstance(manifest, Mapping):
        return yaml.safe_dump(dict(manifest), sort_keys=False)
    return yaml.safe_dump_all([dict(m) for m in manifest], sort_keys=False)


def apply(
    manifest: Mapping[str, Any] | Iterable[Mapping[str, Any]] | str, namespace: str | None = None
) -> subprocess.CompletedProcess[str]:
    """kubectl apply -f - (a dict, a list of dicts or YAML text)."""
    return kubectl("apply", "-f", "-", namespace=namespace, input=_to_yaml(manifest))


def create(
    manifest: Mapping[str, Any] | Iterable[Mapping[str, Any]] | str,
    namespace: str | None = None,
    check: bool = True,
) -> subprocess.CompletedProcess[str]:
    """kubectl create -f -; with check=False the caller inspects returncode/stderr (admission tests)."""
    return kubectl("create", "-f", "-", namespace=namespace, input=_to_yaml(manifest), check=check)


def get(kind: str, name: str, namespace: str | None = None) -> dict[str, Any] | None:
    """The object as a dict, or None when it does not exist."""
    proc = kubectl("get", kind, name, "-o", "json", namespace=namespace, check=False)
    if proc.returncode != 0:
        if "NotFound" in proc.stderr or "not found" in proc.stderr:
            return None
        raise KubectlError(proc.returncode, ["kubectl", "get", kind, name], proc.stdout, proc.stderr)
    return json.loads(proc.stdout)


def list_objects(
    kind: str, namespace: str | None = None, selector: str | None = None
) -> list[dict[str, Any]]:
    args = ["get", kind]
    if selector:
        args += ["-l", selector]
    return kubectl_json(*args, namespace=namespace)["items"]


def delete(kind: str, name: str, namespace: str | None = None, wait: bool = False) -> None:
    kubectl("delete", kind, name, "--ignore-not-found", f"--wait={str(wait).lower()}", namespace=namespace)


# --- waiting ---------------------------------------------------------------------------------------


def wait_for(
    probe: Callable[[], T | None],
    timeout: float = 60,
    interval: float = 0.25,
    description: str = "condition",
) -> T:
    """Call ``probe`` until it returns something truthy and return that; TimeoutError otherwise."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while True:
        last = probe()
        if last:
            return last
        if time.monotonic() >= deadline:
            raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {description}; last: {last!r}")
        time.sleep(interval)


def condition(obj: Mapping[str, Any] | None, type_: str) -> dict[str, Any] | None:
    """The status condition of that type, or None."""
    for cond in ((obj or {}).get("status") or {}).get("conditions") or []:
        if cond.get("type") == type_:
            return cond
    return None


def wait_for_condition(
    kind: str, name: str, type_: str, namespace: str | None = None, status: str = "True", timeout: float = 60
) -> dict[str, Any]:
    """Wait until the object has condition ``type_`` with ``status``; returns the object."""

    def probe() -> dict[str, Any] | None:
        obj = get(kind, name, namespace)
        cond = condition(obj, type_)
        return obj if cond and cond.get("status") == status else None

    return wait_for(probe, timeout, description=f"{kind}/{name} condition {type_}={status}")


def wait_for_pod_phase(
    name: str,
    namespace: str,
    phases: Iterable[str] = ("Succeeded", "Failed"),
    timeout: float = 60,
) -> dict[str, Any]:
    """Wait until the pod is in one of ``phases``; returns the pod."""
    wanted = set(phases)

    def probe() -> dict[str, Any] | None:
        pod = get("pod", name, namespace)
        return pod if pod and (pod.get("status") or {}).get("phase") in wanted else None

    return wait_for(probe, timeout, description=f"pod {namespace}/{name} phase in {sorted(wanted)}")


def wait_for_job(name: str, namespace: str, timeout: float = 60) -> dict[str, Any]:
    """Wait until the Job has a Complete or Failed condition (status True); returns the Job."""

    def probe() -> dict[str, Any] | None:
        job = get("job", name, namespace)
        for type_ in ("Complete", "Failed"):
            cond = condition(job, type_)
            if cond and cond.get("status") == "True":
                return job
        return None

    return wait_for(probe, timeout, description=f"job {namespace}/{name} to finish")


def job_pods(job_name: str, namespace: str) -> list[dict[str, Any]]:
    return list_objects("pods", namespace, selector=f"batch.kubernetes.io/job-name={job_name}")


def container_status(pod: Mapping[str, Any], container: str | None = None) -> dict[str, Any]:
    """The status of the named container (default: the first)."""
    statuses = (pod.get("status") or {}).get("containerStatuses") or []
    for st in statuses:
        if container is None or st.get("name") == container:
            return st
    raise KeyError(f"no status for container {container!r} in pod {pod['metadata']['name']}")


def terminated_state(pod: Mapping[str, Any], container: str | None = None) -> dict[str, Any]:
    """``state.terminated`` of a container (exitCode, reason, message, ...); {} if not terminated."""
    return (container_status(pod, container).get("state") or {}).get("terminated") or {}


# --- namespaces, identities ------------------------------------------------------------------------


def unique_name(prefix: str) -> str:
    """A DNS-1123 name: ``prefix`` (sanitised, truncated) plus a random suffix."""
    clean = re.sub(r"[^a-z0-9-]+", "-", prefix.lower()).strip("-")[:40].strip("-") or "x"
    return f"{clean}-{uuid.uuid4().hex[:6]}"


def create_namespace(name: str, labels: Mapping[str, str] | None = None, timeout: float = 60) -> str:
    """Create a namespace and wait for its ``default`` ServiceAccount (pods are refused before that)."""
    manifest = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}
    if labels:
        manifest["metadata"]["labels"] = dict(labels)
    create(manifest)
    wait_for(
        lambda: get("serviceaccount", "default", name), timeout, description=f"serviceaccount {name}/default"
    )
    return name


def delete_namespace(name: str, wait: bool = False) -> None:
    delete("namespace", name, wait=wait)


def create_token(service_account: str, namespace: str, duration: str = "10m") -> str:
    """A bound ServiceAccount token (TokenRequest API, ``kubectl create token``)."""
    return kubectl(
        "create", "token", service_account, "--duration", duration, namespace=namespace
    ).stdout.strip()


def token_kubeconfig(token: str, path: Path | None = None) -> Path:
    """A kubeconfig that authenticates ONLY with ``token`` (no admin client certificate)."""
    raw = kubectl_json("config", "view", "--raw", "--minify")
    cluster = raw["clusters"][0]["cluster"]
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "c", "cluster": cluster}],
        "users": [{"name": "u", "user": {"token": token}}],
        "contexts": [{"name": "ctx", "context": {"cluster": "c", "user": "u"}}],
        "current-context": "ctx",
    }
    if path is None:
        fd, name = tempfile.mkstemp(prefix="token-kubeconfig-", suffix=".yaml")
        os.close(fd)
        path = Path(name)
    path.write_text(yaml.safe_dump(config))
    path.chmod(0o600)
    return path


def kubectl_as(token: str, *args: str, namespace: str | None = None, check: bool = False, **kw: Any):
    """Run kubectl authenticated by a bearer token only (returns the CompletedProcess)."""
    path = token_kubeconfig(token)
    try:
        return kubectl(*args, namespace=namespace, check=check, kubeconfig=path, **kw)
    finally:
        path.unlink(missing_ok=True)


# --- nodes and workload manifests ------------------------------------------------------------------


def gpu_nodes(pool: str | None = None) -> list[dict[str, Any]]:
    selector = f"{POOL_LABEL}={pool}" if pool else f"{POOL_LABEL} in (h100,h200)"
    return list_objects("nodes", selector=selector)


def pool_gpu_bytes(pool: str) -> int:
    """GPU memory per GPU of a pool, in bytes (from its nodes' label)."""
    nodes = gpu_nodes(pool)
    if not nodes:
        raise LookupError(f"no nodes in pool {pool!r}")
    return int(nodes[0]["metadata"]["labels"][GPU_MEMORY_BYTES_LABEL])


def pod_spec(
    *,
    pool: str | None = None,
    gpus: int = 1,
    image: str = "registry.invalid/influencetrace/worker:test",
    restart_policy: str = "Never",
    container: str = "worker",
    command: list[str] | None = None,
) -> dict[str, Any]:
    """A pod spec for one container; with ``pool`` it selects that node pool and tolerates GPU nodes."""
    resources: dict[str, Any] = {}
    if gpus:
        resources = {"limits": {GPU_RESOURCE: str(gpus)}, "requests": {GPU_RESOURCE: str(gpus)}}
    spec: dict[str, Any] = {
        "restartPolicy": restart_policy,
        "containers": [
            {
                "name": container,
                "image": image,
                "command": command or ["influence-trace", "run"],
                "resources": resources,
            }
        ],
    }
    if pool:
        spec["nodeSelector"] = {POOL_LABEL: pool}
    if pool or gpus:
        spec["tolerations"] = [dict(GPU_TOLERATION)]
    return spec


def pod_manifest(
    name: str,
    *,
    labels: Mapping[str, str] | None = None,
    annotations: Mapping[str, str] | None = None,
    **spec_kw: Any,
) -> dict[str, Any]:
    """A bare Pod (see pod_spec for the keyword arguments)."""
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": dict(labels or {}), "annotations": dict(annotations or {})},
        "spec": pod_spec(**spec_kw),
    }


def job_manifest(
    name: str,
    *,
    labels: Mapping[str, str] | None = None,
    annotations: Mapping[str, str] | None = None,
    backoff_limit: int = 0,
    **spec_kw: Any,
) -> dict[str, Any]:
    """A Job with one pod; ``labels``/``annotations`` go on the pod template (where kwok reads them)."""
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name},
        "spec": {
            "backoffLimit": backoff_limit,
            "template": {
                "metadata": {"labels": dict(labels or {}), "annotations": dict(annotations or {})},
                "spec": pod_spec(**spec_kw),
            },
        },
    }


def which(binary: str) -> str | None:
    """Path of a binary from the cluster's bin dir, else from PATH."""
    candidate = current_cluster().bin_dir / binary
    return str(candidate) if candidate.exists() else shutil.which(binary)
