"""Traces that queue under Kueue: suspended, labelled Jobs, and what the Job's Workload says.

With a queue (``spec.queue`` or the operator's ``default_queue``) every attempt's Job is created
suspended with the ``kueue.x-k8s.io/queue-name`` label; Kueue creates a Workload for it (one per Job,
so a multi-node Indexed Job is admitted as one unit), reserves quota on a ResourceFlavor whose
nodeLabels match the Job's node selector (the pool's), and unsuspends it. The operator never
unsuspends a Job itself. While the Job waits, the Workload's ``QuotaReserved`` condition says why
(Kueue's own message); each Kueue eviction (preemption, deactivation, ...) is counted in
``status.schedulingStats.evictions`` and is an eviction for the trace: same pool, no escalation,
counted against maxAttempts.

Pure functions of dicts here, plus one read of the Workloads of a Job.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from influence_trace.api.spec import InfluenceTrace
from influence_trace.planning.placement import Pool
from kubernetes.client.rest import ApiException

from influence_trace_operator.rules.settings import OperatorSettings

GROUP = "kueue.x-k8s.io"
VERSION = "v1beta2"
WORKLOADS = "workloads"
QUEUE_LABEL = f"{GROUP}/queue-name"
JOB_UID_LABEL = f"{GROUP}/job-uid"  # Kueue's label on the Workload it made for a Job

# Running-condition reasons (conditions.py keeps the core ones; these exist only under Kueue).


def queue_of(resource: InfluenceTrace, settings: OperatorSettings) -> str | None:
    """The LocalQueue that admits this trace's Jobs, or None (no Kueue)."""
    return resource.spec.queue or settings.default_queue or None


def flavor_of(pool: Pool) -> str:
    """The ResourceFlavor a pool's Jobs are expected to be admitted on."""
    return pool.kueue_flavor or pool.name


def queue_job(job: dict[str, Any], queue: str | None) -> dict[str, Any]:
    """The Job, suspended and labelled for ``queue`` (unchanged without a queue).

    Kueue's webhook would suspend a labelled Job on create; the operator does not rely on it (it may
    not be registered), so the Job is created suspended and only Kueue's admission starts it."""
    if not queue:
        return job
    meta = {**job["metadata"], "labels": {**job["metadata"].get("labels", {}), QUEUE_LABEL: queue}}
    return {**job, "metadata": meta, "spec": {**job["spec"], "suspend": True}}


def is_queued_job(job: dict[str, Any]) -> bool:
    return QUEUE_LABEL in ((job.get("metadata") or {}).get("labels") or {})


def is_suspended(job: dict[str, Any]) -> bool:
    return bool((job.get("spec") or {}).get("suspend"))


NO_WORKLOAD = "waiting for Kueue to create the Job's Workload"


@dataclass(frozen=True)
class WorkloadState:
    """What the operator reads from a Job's Workload."""

    exists: bool
    admitted: bool = False
    flavor: str | None = None
    evictions: int = 0
    message: str = ""  # why it waits, or why it was evicted last
    eviction: str = ""  # why it was evicted last (reason: message)


def _condition(workload: dict[str, Any], kind: str) -> dict[str, Any]:
    for cond in (workload.get("status") or {}).get("conditions") or []:
        if cond.get("type") == kind:
            return cond
    return {}


def _flavor(workload: dict[str, Any]) -> str | None:
    """The flavor of the GPUs (or of any resource) in the Workload's admission, if admitted."""
    assignments = ((workload.get("status") or {}).get("admission") or {}).get("podSetAssignments") or []
    for assignment in assignments:
        flavors = assignment.get("flavors") or {}
        if flavors:
            return flavors.get("nvidia.com/gpu") or next(iter(flavors.values()))
    return None


def workload_state(workload: dict[str, Any] | None) -> WorkloadState:
    """Pure: a Workload (camelCase dict) as the operator needs it; None: Kueue has not made it yet."""
    if workload is None:
        return WorkloadState(exists=False, message=NO_WORKLOAD)
    status = workload.get("status") or {}
    stats = (status.get("schedulingStats") or {}).get("evictions") or []
    evictions = sum(int(e.get("count") or 0) for e in stats)
    reserved = _condition(workload, "QuotaReserved")
    evicted = _condition(workload, "Evicted")
    admitted = _condition(workload, "Admitted").get("status") == "True"
    message = reserved.get("message") or ""
    if not admitted and evicted.get("status") == "True":
        message = f"evicted by Kueue ({evicted.get('reason')}): {evicted.get('message')}"
    causes = ", ".join(f"{e.get('reason')} x{e.get('count')}" for e in stats)
    last = f"{evicted.get('reason')}: {evicted.get('message')}" if evicted else f"evictions: {causes}"
    return WorkloadState(
        exists=True,
        eviction=last,
        admitted=admitted,
        flavor=_flavor(workload),  # kept in status.admission after the Workload finished
        evictions=evictions,
        message=message or "waiting for Kueue to reserve quota",
    )


def newest(workloads: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The Job's current Workload (Kueue replaces it when the Job's pod template changes)."""
    items = [w for w in workloads if not (w.get("metadata") or {}).get("deletionTimestamp")]
    return max(items, key=lambda w: w["metadata"].get("creationTimestamp") or "", default=None)


class WorkloadApiMissing(Exception):
    """Kueue's CRDs are not installed: a queued Job would stay suspended forever."""


def read_workload(custom: Any, namespace: str, job_uid: str) -> dict[str, Any] | None:
    """The Workload Kueue made for the Job with this uid, or None; raises WorkloadApiMissing."""
    try:
        resp = custom.list_namespaced_custom_object(
            GROUP, VERSION, namespace, WORKLOADS, label_selector=f"{JOB_UID_LABEL}={job_uid}",
            _preload_content=False,
        )
    except ApiException as err:
        if err.status == 404:
            raise WorkloadApiMissing(
                f"the Kueue API ({GROUP}/{VERSION} workloads) is not installed, so nothing will admit "
                "the suspended Job: install Kueue or remove spec.queue (and the operator's default queue)"
            ) from None
        raise
    return newest(json.loads(resp.data).get("items") or [])
