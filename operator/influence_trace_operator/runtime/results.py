"""Getting a trace's logs and outputs off the cluster: ``influence-trace logs`` and ``fetch``.

The worker writes rows.parquet, summary.json and report.html to ``spec.output.path`` on the trace's
PersistentVolumeClaim, which no user pod mounts. ``fetch`` starts a small reader pod in the trace's
namespace that mounts the claim read-only at the worker's own path (so status paths are valid there),
copies the output directory with ``kubectl cp`` and deletes the pod; ``--print`` prints the pod and
the commands instead, for clusters where users apply manifests themselves. ``logs`` prints (or
follows) the worker container's log of the current attempt's pods, rank 0 first.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
from typing import Any

import yaml
from influence_trace.api.spec import API_GROUP, API_VERSION, PLURAL

from influence_trace_operator.adapters.kube import ApiError, configured_client
from influence_trace_operator.rules import labels
from influence_trace_operator.rules.jobs import WORKSPACE, fit_name
from influence_trace_operator.rules.settings import OperatorSettings

READER_SECONDS = 3600  # the reader pod sleeps this long at most: a forgotten one ends by itself


def reader_pod(trace: dict[str, Any], image: str) -> dict[str, Any]:
    """A pod that mounts the trace's claim read-only at the worker's path and waits to be copied from."""
    meta, spec = trace["metadata"], trace.get("spec") or {}
    claim = (spec.get("storage") or {}).get("volumeClaim")
    if not claim:
        raise ValueError(f"InfluenceTrace {meta['name']}: spec.storage.volumeClaim is not set, so its "
                         "outputs were written to the worker pod's own disk and are gone with it")
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": fit_name(meta["name"], "-results"), "namespace": meta["namespace"],
                     "labels": {labels.MANAGED_BY: "influence-trace-fetch", labels.TRACE_NAME: meta["name"]}},
        "spec": {
            "restartPolicy": "Never",
            "automountServiceAccountToken": False,
            "activeDeadlineSeconds": READER_SECONDS,
            "securityContext": {"runAsNonRoot": True, "runAsUser": 65532, "runAsGroup": 65532,
                                "seccompProfile": {"type": "RuntimeDefault"}},
            "containers": [{
                "name": "reader", "image": image, "command": ["sleep", str(READER_SECONDS)],
                "resources": {"requests": {"cpu": "10m", "memory": "32Mi"}, "limits": {"memory": "128Mi"}},
                "securityContext": {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
                                    "capabilities": {"drop": ["ALL"]}},
                "volumeMounts": [{"name": "workspace", "mountPath": WORKSPACE, "readOnly": True}],
            }],
            "volumes": [{"name": "workspace",
                         "persistentVolumeClaim": {"claimName": claim, "readOnly": True}}],
        },
    }


def output_dir(trace: dict[str, Any]) -> str:
    """Where the outputs are: the worker's reported path once Succeeded, else the spec's."""
    result = (trace.get("status") or {}).get("result") or {}
    return result.get("outputPath") or ((trace.get("spec") or {}).get("output") or {}).get("path", "")


def copy_commands(pod: dict[str, Any], source: str, dest: str) -> list[list[str]]:
    """The kubectl commands that copy ``source`` out of the reader pod and then remove the pod."""
    name, ns = pod["metadata"]["name"], pod["metadata"]["namespace"]
    return [
        ["kubectl", "wait", "-n", ns, "--for=condition=Ready", f"pod/{name}", "--timeout=5m"],
        ["kubectl", "cp", "-n", ns, f"{name}:{source}", dest, "-c", "reader"],
        ["kubectl", "delete", "-n", ns, f"pod/{name}", "--wait=false"],
    ]


def _api() -> Any:
    return configured_client()


def _read_trace(client: Any, namespace: str, name: str) -> dict[str, Any]:
    try:
        return client.CustomObjectsApi().get_namespaced_custom_object(API_GROUP, API_VERSION, namespace,
                                                                     PLURAL, name)
    except ApiError as err:
        raise ValueError(f"InfluenceTrace {namespace}/{name}: {err.reason} ({err.status})") from None


def _say(err: ValueError) -> int:
    print(f"influence-trace: {err}", file=sys.stderr)
    return 1


def fetch(args: argparse.Namespace) -> int:
    client = _api()
    try:
        trace = _read_trace(client, args.namespace, args.trace)
        pod = reader_pod(trace, args.image or OperatorSettings().worker_image)
    except ValueError as err:
        return _say(err)
    commands = copy_commands(pod, output_dir(trace), args.to or args.trace)
    if args.print:
        print(yaml.safe_dump(pod, sort_keys=False) + "---\n# then:\n"
              + "\n".join("# " + " ".join(c) for c in commands))
        return 0
    if shutil.which("kubectl") is None:
        print("influence-trace fetch: kubectl is not on PATH (use --print and copy by hand)", file=sys.stderr)
        return 1
    client.CoreV1Api().create_namespaced_pod(args.namespace, pod)
    try:
        for command in commands[:2]:
            subprocess.run(command, check=True)
    finally:
        subprocess.run(commands[2], check=False)
    print(f"copied {output_dir(trace)} of {args.namespace}/{args.trace} to {args.to or args.trace}")
    return 0


def current_pods(client: Any, trace: dict[str, Any]) -> list[str]:
    """The current attempt's pods, rank 0 first (their completion index)."""
    status = trace.get("status") or {}
    attempts = status.get("attempts") or []
    record = next((a for a in attempts if a.get("attempt") == status.get("attempt")), None)
    if record is None:
        return []
    pods = client.CoreV1Api().list_namespaced_pod(trace["metadata"]["namespace"],
                                                  label_selector=f"{labels.JOB_NAME}={record['job']}").items
    return [p.metadata.name for p in sorted(pods, key=lambda p: (_index(p), p.metadata.name))]


def _index(pod: Any) -> int:
    value = (pod.metadata.annotations or {}).get(labels.COMPLETION_INDEX, "0")
    return int(value) if str(value).isdigit() else 0


def logs(args: argparse.Namespace) -> int:
    client = _api()
    try:
        trace = _read_trace(client, args.namespace, args.trace)
    except ValueError as err:
        return _say(err)
    pods = current_pods(client, trace)
    if not pods:
        phase = (trace.get("status") or {}).get("phase") or "not placed yet"
        print(f"{args.namespace}/{args.trace}: no worker pod ({phase})", file=sys.stderr)
        return 1
    core = client.CoreV1Api()
    for name in pods:  # following several pods one after another: rank 0 is the one that reports
        if len(pods) > 1:
            print(f"==> {name} <==")
        resp = core.read_namespaced_pod_log(name, args.namespace, container=labels.WORKER_CONTAINER,
                                            follow=args.follow, _preload_content=False)
        for chunk in resp.stream(4096):
            sys.stdout.write(chunk.decode(errors="replace"))
            sys.stdout.flush()
    return 0
