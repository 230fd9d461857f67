"""The objects an attempt needs besides its Job (ConfigMap; for several nodes a Service and a
NetworkPolicy), created or settled once per trace and content, and the ownership check on every child."""

from __future__ import annotations

from typing import Any

from influence_trace.api.spec import InfluenceTrace

from influence_trace_operator.adapters import kueue
from influence_trace_operator.adapters.kube import KubeClient
from influence_trace_operator.reconciler.memory import PassMemory
from influence_trace_operator.reconciler.passes import Wait
from influence_trace_operator.rules.children import SPEC_HASH, conflict, content_hash, owner_verdict, stamped
from influence_trace_operator.rules.jobs import (
    JobPlacement,
    TraceRef,
    build_configmap,
    build_job,
    build_service,
)
from influence_trace_operator.rules.netpol import build_network_policy
from influence_trace_operator.rules.settings import OperatorSettings


def ensure(kube: KubeClient, body: dict[str, Any], ref: TraceRef) -> str:
    """Create the ConfigMap, Service or NetworkPolicy, or settle the existing one (rules/children.py):
    'created', 'kept' or 'replaced'; ChildConflict when it belongs to something else."""
    body = stamped(body)
    kind = body["kind"]
    create, replace = {
        "ConfigMap": (kube.ensure_configmap, kube.replace_configmap),
        "Service": (kube.ensure_service, kube.replace_service),
        "NetworkPolicy": (kube.ensure_network_policy, kube.replace_network_policy),
    }[kind]
    existing = create(body)
    if existing is None:
        return "created"
    verdict = owner_verdict(existing, ref)
    if verdict == "foreign":
        raise conflict(existing, kind)
    annotations = existing["metadata"].get("annotations") or {}
    if verdict == "ours" and annotations.get(SPEC_HASH) == body["metadata"]["annotations"][SPEC_HASH]:
        return "kept"
    replace(body, existing)
    return "replaced"


def ensure_all(kube: KubeClient, memory: PassMemory, resource: InfluenceTrace, ref: TraceRef,
               settings: OperatorSettings) -> None:
    """Every child of the trace, each once per content in this process: a relaunch skips the
    create-409-read round trip for the ConfigMap its first attempt made (a restart checks again)."""
    bodies = [build_configmap(resource, ref)]
    if resource.spec.resources.nodes > 1:  # the pods of an Indexed Job meet through it
        bodies.append(build_service(resource, ref))
        if settings.network_policy:
            bodies.append(build_network_policy(ref))
    for body in bodies:
        made = (ref.uid, body["kind"], content_hash(body))
        if not memory.settled((ref.namespace, ref.name), made):
            ensure(kube, body, ref)
            memory.settle((ref.namespace, ref.name), made)


def job(resource: InfluenceTrace, ref: TraceRef, placement: JobPlacement, settings: OperatorSettings,
        queue: str | None) -> dict[str, Any]:
    """The attempt's Job; suspended and labelled for its LocalQueue when the trace queues in Kueue."""
    return kueue.queue_job(build_job(resource, ref, placement, settings), queue)


def check_owner(obj: dict[str, Any], ref: TraceRef) -> None:
    """This trace's Job, or Wait (a deleted namesake's, collected soon), or ChildConflict (foreign)."""
    verdict = owner_verdict(obj, ref)
    if verdict == "namesake":
        raise Wait(f"Job {obj['metadata']['name']} belongs to a deleted trace of the same name")
    if verdict == "foreign":
        raise conflict(obj, "Job")
