"""Conditions with a fixed set of types and paired reasons (jobset's pattern), pure.

Four types tell the story: ``Placed`` (a Job exists on a pool), ``Running`` (a worker pod runs),
``Succeeded`` and ``Failed`` (terminal; exactly one becomes True). A condition counts as changed
only when its status, reason or message differ; lastTransitionTime moves only when status does.
"""

from __future__ import annotations

from influence_trace.api.status import Condition, TraceStatus

PLACED = "Placed"
RUNNING = "Running"
SUCCEEDED = "Succeeded"
FAILED = "Failed"
TYPES = (PLACED, RUNNING, SUCCEEDED, FAILED)

# Placed
JOB_CREATED = "JobCreated"  # True: attempt N's Job exists on a pool
ESCALATED = "EscalatedToLargerPool"  # True: GPU out of memory, moved to a larger pool
HOST_MEMORY_RAISED = "HostMemoryRaised"  # True: kernel OOM kill, same or other pool, more host memory
INVALID_SPEC = "InvalidSpec"  # False (and Failed): the spec cannot be run
INFEASIBLE = "Infeasible"  # False (and Failed): no allowed pool fits the estimate
# Running
POD_PENDING = "PodPending"  # False: the Job's pod waits for a node
POD_RUNNING = "PodRunning"  # True
POD_EVICTED = "PodEvicted"  # False: evicted; the Job relaunches it on the same pool
ATTEMPT_FINISHED = "AttemptFinished"  # False: the attempt's Job has finished
# Succeeded
WORKER_SUCCEEDED = "WorkerSucceeded"
# Failed (the reason says why; these pair with the Placed reasons above where they overlap)
OUT_OF_GPU_MEMORY = "OutOfGPUMemory"  # GPU OOM on the largest allowed pool
OUT_OF_HOST_MEMORY = "OutOfHostMemory"  # kernel OOM kill with no more host memory anywhere allowed
WORKER_FAILED = "WorkerFailed"  # invalid input or an error in the worker: retrying would not help
ATTEMPTS_EXHAUSTED = "AttemptsExhausted"  # resources.maxAttempts reached
NO_RESULT = "NoResult"  # the worker exited 0 without the result the contract requires

# Reasons of the rules beside the phases above: API faults, Kueue, pending and run timeouts, cancellation,
# relaunch, the volume claim, tenancy
API_ERROR = "APIError"  # Placed False: a call was refused; retried with backoff
API_REJECTED = "APIRejected"  # Failed: the API refuses the trace's object for good (400, 422)
CHILD_CONFLICT = "ChildConflict"  # Failed: a child's name is held by an object the trace does not own
QUEUED_IN_KUEUE = "QueuedInKueue"  # False: the Job waits in its LocalQueue for quota
ADMITTED_BY_KUEUE = "AdmittedByKueue"  # False: quota reserved on a flavor; the pods wait for a node
EVICTED_BY_KUEUE = "EvictedByKueue"  # False: Kueue evicted the Workload; it is requeued on the same pool
UNSCHEDULABLE = "Unschedulable"  # Running False while waiting; Failed when the timeout ends it
PENDING_TIMEOUT = "PendingTimeout"  # Placed True: moved to a larger pool after waiting too long
RUN_TIMEOUT = "RunTimeout"  # Failed: the Job ran past resources.runTimeout (activeDeadlineSeconds)
CANCELLED = "Cancelled"  # Failed: cancelled by the annotation; attempt outcome when its Job was deleted
JOB_RELAUNCHED = "JobRelaunched"  # Placed True: a deleted Job's attempt relaunched on the same pool
VOLUME_CLAIM_MISSING = "VolumeClaimMissing"  # Placed False: no Job until the PVC exists
POOL_NOT_ALLOWED = "PoolNotAllowed"  # Failed: the trace's namespace may use none of its pools

TERMINAL_REASONS = {
    INVALID_SPEC,
    INFEASIBLE,
    OUT_OF_GPU_MEMORY,
    OUT_OF_HOST_MEMORY,
    WORKER_FAILED,
    ATTEMPTS_EXHAUSTED,
    NO_RESULT,
}


def set_condition(
    status: TraceStatus, kind: str, value: bool, reason: str, message: str, generation: int | None, now: str
) -> bool:
    """Set one condition in place; True when status, reason or message changed."""
    if kind not in TYPES:
        raise ValueError(f"unknown condition type {kind!r}")
    wanted = "True" if value else "False"
    old = get_condition(status, kind)
    if old is not None and (old.status, old.reason, old.message) == (wanted, reason, message):
        return False
    moved = old.last_transition_time if old is not None and old.status == wanted else now
    cond = Condition(type=kind, status=wanted, reason=reason, message=message,
                     last_transition_time=moved, observed_generation=generation)
    if old is None:
        status.conditions.append(cond)
    else:
        status.conditions[status.conditions.index(old)] = cond
    return True


def get_condition(status: TraceStatus, kind: str) -> Condition | None:
    return next((c for c in status.conditions if c.type == kind), None)


# The conditions whose reason explains each phase, first present wins (status.reason, the REASON column).
EXPLAINS = {
    "Failed": (FAILED,),
    "Succeeded": (SUCCEEDED,),
    "Running": (RUNNING, PLACED),
    "Pending": (RUNNING, PLACED),
    "Escalating": (PLACED,),
}


def headline(status: TraceStatus) -> str | None:
    """The reason shown beside the phase: e.g. a Failed trace's OutOfGPUMemory, Cancelled or InvalidSpec."""
    for kind in EXPLAINS.get(status.phase or "", ()):
        cond = get_condition(status, kind)
        if cond is not None:
            return cond.reason
    return None
