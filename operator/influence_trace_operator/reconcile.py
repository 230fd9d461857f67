"""One reconcile pass of a trace: read its state, decide, act, write status once, then events.

Level-triggered and idempotent: the pass never trusts the event that woke it, only the trace, its
current Job and that Job's pods as the watches last delivered them (informer.py; what would end an
attempt is read from the API server first). Its only memory is the status, and the Job of
attempt N has a deterministic name, so an operator killed at any point converges on restart: a Job
created before the crash is adopted (409 -> read), a status written before the crash makes the next
pass create the Job it names. The status is written with the resourceVersion it was read at, so two
passes that race (a Job event and a Pod event) cannot overwrite each other; the loser retries.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from influence_trace.api.spec import InfluenceTrace, ManifestError, parse_manifest
from influence_trace.api.status import AttemptRecord, EstimateStatus, ResultStatus, TraceStatus
from influence_trace.api.units import gb
from influence_trace.planning.memory_model import ShapesError
from influence_trace.planning.placement import Pool, suggest_after_oom
from influence_trace.planning.workload import WorkloadError
from kubernetes.client.rest import ApiException
from pydantic import ValidationError

from influence_trace_operator import children, queued
from influence_trace_operator import classify as K
from influence_trace_operator import conditions as C
from influence_trace_operator import escalation as E
from influence_trace_operator import faults as F
from influence_trace_operator import history_store as H
from influence_trace_operator import kueue as Q
from influence_trace_operator import metrics as M
from influence_trace_operator import pending as PD
from influence_trace_operator import progress_reader as P
from influence_trace_operator import tenancy as T
from influence_trace_operator.api import Kube, now
from influence_trace_operator.health import Watchdog
from influence_trace_operator.informer import Informer
from influence_trace_operator.jobs import JobPlacement, TraceRef, build_configmap, build_job, build_service
from influence_trace_operator.netpol import build_network_policy
from influence_trace_operator.pools import allowed_pools
from influence_trace_operator.settings import OperatorSettings

log = logging.getLogger(__name__)
CONFLICT_RETRIES = 5
ECHOES = 4  # own status writes per trace whose watch events are known to carry nothing new
CLUSTER_FIELDS = (
    "the operator places a trace before any pod can read its volume, so on a cluster the trace names "
    "the model's shapes (spec.model.preset or spec.model.architecture) and its response tokens "
    "(spec.rollouts.tokensEstimate); see docs/operator.md, 'Fields a cluster trace needs'"
)
CANCEL_ANNOTATION = "influencetrace.dev/cancel"  # any value: stop the running Job, fail the trace


def one_pod(job: dict[str, Any]) -> bool:
    """A Job of one pod (a one-node trace's): once its pod has ended, no other pod of it follows."""
    spec = job.get("spec") or {}
    return int(spec.get("parallelism") or 1) <= 1 and int(spec.get("completions") or 1) <= 1


class Wait(Exception):
    """Nothing can be done in this pass (e.g. a leftover Job of a deleted namesake); try later."""


@dataclass
class Pass:
    """The working state of one pass: the object as read, the status being built, events to send."""

    obj: dict[str, Any]
    status: TraceStatus
    ref: TraceRef
    generation: int | None
    now: str = field(default_factory=now)
    events: list[tuple[str, str, str]] = field(default_factory=list)
    later: list[Callable[[], None]] = field(default_factory=list)  # after the status write and events

    def event(self, kind: str, reason: str, message: str) -> None:
        self.events.append((kind, reason, message))

    def condition(self, kind: str, value: bool, reason: str, message: str) -> None:
        C.set_condition(self.status, kind, value, reason, message, self.generation, self.now)


def load_status(obj: dict[str, Any]) -> TraceStatus:
    """The status as the operator wrote it; a mangled one starts over rather than crash the pass."""
    try:
        return TraceStatus.model_validate(obj.get("status") or {})
    except ValidationError as err:
        log.warning("ignoring unreadable status of %s: %s", obj["metadata"].get("name"), err)
        return TraceStatus()


def parse_trace(obj: dict[str, Any]) -> InfluenceTrace:
    """The typed trace, metadata reduced to what a manifest carries; ManifestError names each field."""
    meta = obj.get("metadata") or {}
    data = {
        "apiVersion": obj.get("apiVersion"),
        "kind": obj.get("kind"),
        "metadata": {k: meta[k] for k in ("name", "namespace", "labels", "annotations") if meta.get(k)},
        "spec": obj.get("spec"),
    }
    return parse_manifest(data, f"InfluenceTrace {meta.get('namespace')}/{meta.get('name')}")


class Reconciler:
    """Reconciles traces by name; safe to call from many threads (one pass per trace at a time)."""

    def __init__(self, kube: Kube, settings: OperatorSettings, table: list[Pool]) -> None:
        self.kube = kube
        self.settings = settings
        self.table = table
        self.history = H.build_store(kube, settings)
        self.informer = Informer()  # the watch handlers fill it (on_trace, on_child)
        self._locks: defaultdict[tuple[str, str], threading.Lock] = defaultdict(threading.Lock)
        self._guard = threading.Lock()
        self.watchdog = Watchdog(settings.wedged_seconds, settings.resync_seconds)
        self.may_act: Callable[[], bool] = lambda: True  # the Lease guard replaces it (leader.py)
        self.send: Callable[[Callable[[], None]], None] = lambda post: post()  # lifecycle: a thread pool
        self._written: dict[tuple[str, str], tuple[str | None, ...]] = {}  # our last status writes' versions
        self._passed: dict[tuple[str, str], float] = {}  # monotonic end of the last pass
        self._attempt: dict[tuple[str, str], tuple[str, int]] = {}  # (uid, attempt) of our last write
        self._settled: dict[tuple[str, str], set[tuple[str, str, str]]] = {}  # (uid, kind, hash) made
        self.retries = F.Retries(
            self.reconcile, settings.api_backoff_seconds, settings.api_backoff_max_seconds
        )

    def _forget(self, namespace: str, name: str) -> None:
        self._written.pop((namespace, name), None)
        self._passed.pop((namespace, name), None)
        self._attempt.pop((namespace, name), None)
        self._settled.pop((namespace, name), None)

    def forget(self, namespace: str, name: str) -> None:
        """The trace was deleted: a namesake created later starts with nothing remembered."""
        with self._guard:
            self._forget(namespace, name)

    def superseded(self, namespace: str, name: str, uid: str, attempt: int) -> bool:
        """Whether this operator last wrote a later attempt for this trace (same uid) than ``attempt``:
        an event of that older attempt's Job cannot change anything (the pass reads only the current
        attempt). Unknown traces (e.g. after a restart) are never superseded."""
        known = self._attempt.get((namespace, name))
        return known is not None and known[0] == uid and attempt < known[1]

    def own_write(self, namespace: str, name: str, resource_version: str | None) -> bool:
        """True for a trace event that only echoes one of our last status writes: nothing new to act
        on (a Job or Pod change arrives through its own watch). Skipping these halves the passes."""
        return resource_version is not None and resource_version in self._written.get((namespace, name), ())

    def passed_within(self, namespace: str, name: str, seconds: float) -> bool:
        """Whether a pass of this trace started less than ``seconds`` ago (the resync skips it then)."""
        return time.monotonic() - self._passed.get((namespace, name), float("-inf")) < seconds

    def reconcile(self, namespace: str, name: str) -> None:
        """One pass; its first try reads the trace from the informer (a stale copy only costs a 409 on
        the status write), a retry after a conflict from the API server."""
        if not self.may_act():
            return
        if self.retries.waiting((namespace, name)):
            return  # backing off after a refused call; its timer reconciles it when due
        with self._guard:
            lock = self._locks[(namespace, name)]
        with lock, self.watchdog.watch_pass(f"{namespace}/{name}"), M.timed_pass():
            self._passed[(namespace, name)] = time.monotonic()
            for attempt in range(CONFLICT_RETRIES):
                try:
                    self._once(namespace, name, fresh=attempt > 0)
                    return
                except ApiException as err:
                    if err.status != 409:
                        raise
                    log.debug("conflict on %s/%s; re-reading", namespace, name)
                except Wait as why:
                    log.info("%s/%s: %s", namespace, name, why)
                    return

    # ---- the pass ----------------------------------------------------------------------------
    def _read_trace(self, namespace: str, name: str, fresh: bool) -> dict[str, Any] | None:
        """The informer's copy, else (or when ``fresh``) the API server's, which refreshes the copy."""
        obj = None if fresh else self.informer.trace(namespace, name)
        if obj is None:
            obj = self.kube.get_trace(namespace, name)
            if obj is not None:
                self.informer.refresh_trace(obj)
        return obj

    def _once(self, namespace: str, name: str, fresh: bool = False) -> None:
        obj = self._read_trace(namespace, name, fresh)
        if obj is None or obj["metadata"].get("deletionTimestamp"):
            self._forget(namespace, name)
            return
        status = load_status(obj)
        if status.terminal:
            self._forget(namespace, name)
            return
        meta = obj["metadata"]
        p = Pass(obj, status, TraceRef(meta["name"], meta["namespace"], meta["uid"]), meta.get("generation"))
        before = status.wire()
        try:
            self._step(p)
            self.retries.succeeded((namespace, name))
        except ApiException as err:
            if err.status == 409:
                raise
            self._api_fault(p, err)
        except F.ChildConflict as err:
            self._fail(p, C.CHILD_CONFLICT, str(err))
        p.status.observed_generation = p.generation
        p.status.reason = C.headline(p.status)
        after = p.status.wire()
        if after != before:
            written = self.kube.replace_status(obj, after)
            self.informer.refresh_trace(written)
            # the echo of a write can arrive after the next one: remember the last few
            recent = self._written.get((namespace, name), ())[-(ECHOES - 1):]
            self._written[(namespace, name)] = (*recent, written["metadata"].get("resourceVersion"))
            self._attempt[(namespace, name)] = (p.ref.uid, p.status.attempt)
            M.observe_pass(before, after)
        if p.events:
            self.send(lambda: self._post(obj, p.events))
        for step in p.later:
            step()

    def _post(self, obj: dict[str, Any], events: list[tuple[str, str, str]]) -> None:
        """One pass's events, in order (post_event only logs a refusal)."""
        for kind, reason, message in events:
            self.kube.post_event(obj, kind, reason, message)

    def _api_fault(self, p: Pass, err: ApiException) -> None:
        """A refused call: permanent ones fail the trace, others are told and retried with backoff."""
        fault = F.describe(err)
        log.warning("%s/%s: %s", p.ref.namespace, p.ref.name, fault.message)
        if fault.permanent:
            self._fail(p, C.API_REJECTED, fault.message)
            return
        failures, wait = self.retries.failed((p.ref.namespace, p.ref.name))
        F.record_transient(p, fault, wait, failures)

    def _step(self, p: Pass) -> None:
        try:
            trace = parse_trace(p.obj)
        except ManifestError as err:
            self._fail(p, C.INVALID_SPEC, str(err))
            return
        if (p.obj["metadata"].get("annotations") or {}).get(CANCEL_ANNOTATION):
            why = f"cancelled by the annotation {CANCEL_ANNOTATION}"
            self._fail(p, C.CANCELLED, why, K.Finished(outcome="Cancelled", reason=C.CANCELLED, message=why))
            return
        allowed, unknown = allowed_pools(self.table, trace.spec.resources.pools)
        bounds = T.bound(trace, allowed, self.table, self.settings.namespace_pools, p.ref.namespace,
                         self.settings.max_nodes)
        allowed = bounds.pools
        if unknown:
            known = ", ".join(p.name for p in self.table)
            self._fail(p, C.INVALID_SPEC, f"spec.resources.pools: unknown pools {unknown}; known: {known}")
        elif bounds.refusal is not None:
            self._fail(p, *bounds.refusal)
        elif p.status.attempt == 0:
            self._start(p, trace, allowed)
        else:
            self._follow(p, trace, allowed)

    def _start(self, p: Pass, trace: InfluenceTrace, allowed: list[Pool]) -> None:
        """Attempt 1: estimate, choose the pool, create the Job, or fail with no Job."""
        s = self.settings
        try:
            model, learned, chosen, duration = H.place(self.history, trace.spec, allowed, s)
        except (ShapesError, WorkloadError) as err:  # the operator cannot read the trace's volume
            self._fail(p, C.INVALID_SPEC, f"{err}; {CLUSTER_FIELDS}")
            return
        except ValueError as err:  # unknown module suffixes, unknown pools
            self._fail(p, C.INVALID_SPEC, str(err))
            return
        pool = next((x for x in allowed if chosen.pool and x.name == chosen.pool.name), None)
        est = learned.estimate
        decision = E.first_launch(pool, chosen.reason, est.host_bytes, s.headroom, s.min_host_memory_bytes)
        learned_from = f"; {learned.reason}" if learned.reason else ""
        p.status.estimate = EstimateStatus(
            pool=pool.name if pool else None,
            gpu_bytes=est.gpu_bytes,
            host_bytes=est.host_bytes,
            reason=f"peak in stage {model.peak_stage}; {chosen.reason}{learned_from}",
            source=learned.source,
            **H.duration_fields(duration),
        )
        if decision.placement is None:
            self._fail(p, decision.reason, decision.message)
            return
        self._launch(p, trace, decision.placement, decision, relaunch=False)

    def _follow(self, p: Pass, trace: InfluenceTrace, allowed: list[Pool]) -> None:
        """Attempt N exists in status: make sure its Job exists, then act on how it is doing."""
        record = p.status.current()
        if record is None:
            raise Wait(f"status names attempt {p.status.attempt} without a record")
        fresh = record.outcome == "Running"  # the attempt's end is news in this pass (one Warning)
        job = self.informer.job(p.ref.namespace, record.job)
        cached = job is not None
        job = job or self.kube.get_job(p.ref.namespace, record.job)
        if job is None:
            done = self._without_job(p, record)
        else:
            self._check_owner(job, p.ref)
            if queued.follow(self.kube, self.table, self._fail, p, record, job, self._max_attempts(trace)):
                return
            pending_s, run_s = PD.timeouts(trace, self.settings.default_pending_timeout,
                                          self.settings.default_run_timeout)
            pods = self._pods(p, record, job, cached, pending_s)
            if self._note_evictions(p, record, pods, self._max_attempts(trace)):
                return
            ended = PD.deadline_exceeded(job, run_s) or K.classify(job, pods) or self._early(p, job, pods)
            if ended is None:
                ended = PD.timed_out(p.status, pods, pending_s, p.now, PD.started(job, record))
                if ended is None:
                    self._note_progress(p, pods)
                    P.update(self.kube, p.ref.namespace, p.status, pods, p.now)
                    return
                self.kube.delete_job(p.ref.namespace, record.job)
            done = ended
            self._record_outcome(p, record, done)
            finished = p.status.current() or record
            p.later.append(lambda: H.record(self.history, trace.spec, p.ref.uid, p.ref.name, finished,
                                            self.table, done.payload))  # not on the way to the next Job
        decision = self._decide(p, trace, allowed, done)
        if decision.action == "succeed":
            self._succeed(p, done, decision)
        elif decision.action == "fail":
            self._fail(p, decision.reason, decision.message)
        else:
            assert decision.placement is not None
            if fresh:  # not again on each pass that waits to relaunch (e.g. for a missing PVC)
                p.event("Warning", done.outcome, decision.message)
            self._launch(p, trace, decision.placement, decision, relaunch=True)

    def _pods(self, p: Pass, record: AttemptRecord, job: dict[str, Any], cached: bool,
              pending_s: int) -> list[dict[str, Any]]:
        """The Job's pods from the informer while they decide nothing; listed from the API server when
        the Job was not in the informer, or when the cached Job or pods would end the attempt or count
        an eviction. One exception keeps the end of a one-node attempt (out of memory, success) to one
        write: a one-pod Job's ended worker pod is final (a terminal phase never changes, and with
        ``backoffLimit: 0`` and one completion no other pod follows it)."""
        uid = job["metadata"].get("uid")
        if cached and uid:
            pods = self.informer.pods_of(uid)
            early = K.ended_before_job(job, pods) is not None
            decides = (K.job_state(job) is not None or (early and not one_pod(job))
                       or len(K.evictions(pods)) > record.evictions
                       or PD.timed_out(p.status, pods, pending_s, p.now, PD.started(job, record)))
            if not decides:
                return pods
        return self.kube.job_pods(p.ref.namespace, record.job, uid)

    def _early(self, p: Pass, job: dict[str, Any], pods: list[dict[str, Any]]) -> K.Finished | None:
        """The outcome from the ended pods, not waiting for the Job controller's condition (seconds to
        a minute under load); the Job is left as it is (its pods hold no GPU, and keep their logs)."""
        done = K.ended_before_job(job, pods)
        if done is not None:
            log.info("%s/%s: attempt %d ended (%s, exit %s), read from pod %s before the Job controller "
                     "marked Job %s",
                     p.ref.namespace, p.ref.name, p.status.attempt, done.outcome, done.exit_code, done.pod,
                     job["metadata"].get("name"))
        return done

    def _without_job(self, p: Pass, record: AttemptRecord) -> K.Finished:
        """The attempt's Job is gone: deleted while it ran (Cancelled), or after its outcome was recorded."""
        if record.outcome != "Running":
            return K.Finished(outcome=record.outcome, exit_code=record.exit_code, reason=record.reason,
                              stage=record.stage, message=record.message or "")
        done = K.Finished(outcome="Cancelled", reason=C.CANCELLED,
                          message=f"Job {record.job} was deleted before it finished")
        self._record_outcome(p, record, done)
        return done

    def _decide(self, p: Pass, trace: InfluenceTrace, allowed: list[Pool], done: K.Finished) -> E.Decision:
        """The next step after an attempt: the timeouts' and cancellation's rules, else escalation's."""
        max_attempts = self._max_attempts(trace)
        if done.outcome == "Unschedulable":
            return PD.after_unschedulable(p.status, done, allowed, max_attempts)
        if done.reason == C.RUN_TIMEOUT:
            return E.Decision("fail", C.RUN_TIMEOUT, f"attempt {p.status.attempt} on pool {p.status.pool}: "
                              f"{done.message}")
        if done.outcome == "Cancelled":
            record = p.status.current()
            pool = next((x for x in allowed if record and x.name == record.pool), None)
            if record is None or pool is None:
                return E.Decision("fail", C.CANCELLED, done.message)
            relaunch = E.Decision(
                "launch", C.JOB_RELAUNCHED, f"{done.message}; relaunching on pool {pool.name}",
                E.placement_on(pool, record.attempt + 1, record.host_memory_bytes),
            )
            return E.relaunch_within(p.status, max_attempts, relaunch)
        record = p.status.current()
        evicted = record and queued.after_eviction_kill(p.status, done, record, allowed, max_attempts)
        return evicted or E.after_attempt(
            p.status, done, allowed, max_attempts, self.settings.host_memory_growth,
            lambda: self._what_fits(trace, allowed),
        )

    def _max_attempts(self, trace: InfluenceTrace) -> int:
        """spec.resources.maxAttempts, or the operator's default when the trace leaves it unset."""
        return trace.spec.resources.max_attempts or self.settings.default_max_attempts

    def _what_fits(self, trace: InfluenceTrace, allowed: list[Pool]) -> str:
        """The memory model's suggestion after an out-of-memory on the largest allowed pool."""
        try:
            return suggest_after_oom(trace.spec, allowed[-1], self.settings.headroom)
        except ValueError:  # no shapes to re-estimate with
            return E.GENERIC_WHAT_FITS

    # ---- actions -----------------------------------------------------------------------------
    def _launch(
        self, p: Pass, trace: InfluenceTrace, placement: JobPlacement, decision: E.Decision, relaunch: bool
    ) -> None:
        claim = trace.spec.storage.volume_claim
        if claim and not self.kube.volume_claim_exists(p.ref.namespace, claim):
            self._wait_for_claim(p, claim)
            return
        self._ensure(build_configmap(trace, p.ref), p.ref)
        if trace.spec.resources.nodes > 1:  # the pods of an Indexed Job meet through it
            self._ensure(build_service(trace, p.ref), p.ref)
            if self.settings.network_policy:
                self._ensure(build_network_policy(p.ref), p.ref)
        job, created = self.kube.create_job(self._job(trace, p.ref, placement))
        self._check_owner(job, p.ref)
        name = job["metadata"]["name"]
        p.status.attempts.append(
            AttemptRecord(
                attempt=placement.attempt,
                pool=placement.pool,
                job=name,
                host_memory_bytes=placement.host_memory_bytes,
                started_at=p.now,
            )
        )
        p.status.attempt, p.status.pool = placement.attempt, placement.pool
        P.restart(p.status)  # the new attempt starts from the beginning
        p.status.phase = "Escalating" if relaunch else "Pending"
        p.status.message = decision.message
        p.condition(C.PLACED, True, decision.reason, f"attempt {placement.attempt}: {decision.message}")
        p.condition(C.RUNNING, False, C.POD_PENDING, f"Job {name} waits for a node in pool {placement.pool}")
        queued.after_launch(p, Q.queue_of(trace, self.settings), self.table)
        verb = "Created" if created else "Adopted existing"
        p.event(
            "Normal",
            "JobCreated" if created else "JobAdopted",
            f"{verb} Job {name} on pool {placement.pool} (attempt {placement.attempt}, "
            f"{gb(placement.host_memory_bytes)} host memory)",
        )

    def _ensure(self, body: dict[str, Any], ref: TraceRef) -> None:
        """Create or settle a child, once per trace and content in this process: a relaunch skips the
        create-409-read round trip for the ConfigMap its first attempt made (a restart checks again)."""
        made = (body["kind"], children.content_hash(body))
        settled = self._settled.setdefault((ref.namespace, ref.name), set())
        if (ref.uid, *made) in settled:
            return
        children.ensure(self.kube, body, ref)
        settled.add((ref.uid, *made))

    def _wait_for_claim(self, p: Pass, claim: str) -> None:
        """No Job until the PVC exists: the scheduler would only say so on a pod that holds a GPU slot."""
        message = (f"PersistentVolumeClaim {claim} (spec.storage.volumeClaim) does not exist in namespace "
                   f"{p.ref.namespace}; waiting for it")
        old = C.get_condition(p.status, C.PLACED)
        if old is None or old.reason != C.VOLUME_CLAIM_MISSING:
            p.event("Warning", C.VOLUME_CLAIM_MISSING, message)
        p.condition(C.PLACED, False, C.VOLUME_CLAIM_MISSING, message)
        p.status.phase = p.status.phase or "Pending"
        p.status.message = message

    def _job(self, trace: InfluenceTrace, ref: TraceRef, placement: JobPlacement) -> dict[str, Any]:
        """The attempt's Job; suspended and labelled for its LocalQueue when the trace queues in Kueue."""
        return Q.queue_job(build_job(trace, ref, placement, self.settings), Q.queue_of(trace, self.settings))

    def _check_owner(self, job: dict[str, Any], ref: TraceRef) -> None:
        """This trace's Job, or Wait (a deleted namesake's, collected soon), or ChildConflict (foreign)."""
        verdict = children.owner_verdict(job, ref)
        if verdict == "namesake":
            raise Wait(f"Job {job['metadata']['name']} belongs to a deleted trace of the same name")
        if verdict == "foreign":
            raise children.conflict(job, "Job")

    def _note_evictions(
        self, p: Pass, record: AttemptRecord, pods: list[dict[str, Any]], max_attempts: int
    ) -> bool:
        """Count evicted pods; True when evictions used up maxAttempts and the trace failed."""
        evicted = K.evictions(pods)
        if len(evicted) <= record.evictions:
            return False
        for pod in evicted[record.evictions :]:
            why = (pod.get("status") or {}).get("message") or "evicted"
            p.event(
                "Warning",
                "PodEvicted",
                f"Pod {pod['metadata']['name']} was evicted on pool {record.pool} ({why}); the Job "
                "relaunches it on the same pool (no escalation spent)",
            )
        self._replace_record(p, record.model_copy(update={"evictions": len(evicted)}))
        p.condition(C.RUNNING, False, C.POD_EVICTED, f"{len(evicted)} eviction(s) on pool {record.pool}")
        stop = E.evictions_exhausted(p.status, max_attempts)
        if stop is None:
            return False
        ended = K.Finished(outcome="Evicted", reason="Evicted", message=stop.message)
        self._fail(p, stop.reason, stop.message, ended)  # deletes the Job
        return True

    def _note_progress(self, p: Pass, pods: list[dict[str, Any]]) -> None:
        running = [pod for pod in pods if K.is_running(pod)]
        if not running:
            self._note_pending(p, pods)
            return
        pod = running[0]
        node = (pod.get("spec") or {}).get("nodeName") or "?"
        if p.status.phase != "Running":
            p.event(
                "Normal",
                "Running",
                f"Pod {pod['metadata']['name']} runs on node {node} "
                f"(pool {p.status.pool}, attempt {p.status.attempt})",
            )
        p.status.phase = "Running"
        p.status.message = f"attempt {p.status.attempt} running on pool {p.status.pool}"
        p.condition(C.RUNNING, True, C.POD_RUNNING, f"pod {pod['metadata']['name']} on node {node}")

    def _note_pending(self, p: Pass, pods: list[dict[str, Any]]) -> None:
        """The scheduler's reason in the Running condition, and one Warning event when it changes."""
        why = PD.scheduler_reason(pods)
        if why is None:
            return
        old = C.get_condition(p.status, C.RUNNING)
        if old is None or old.message != why:
            p.event("Warning", C.UNSCHEDULABLE, why)
        p.condition(C.RUNNING, False, C.POD_PENDING, why)
        p.status.message = f"attempt {p.status.attempt} waits for a node in pool {p.status.pool}: {why}"

    def _record_outcome(self, p: Pass, record: AttemptRecord, done: K.Finished) -> None:
        peak = done.payload.get("peakGpuBytes")
        self._replace_record(
            p,
            record.model_copy(
                update={
                    "running_at": done.started_at,
                    "finished_at": done.finished_at or p.now,
                    "outcome": done.outcome,
                    "exit_code": done.exit_code,
                    "reason": done.reason,
                    "stage": done.stage,
                    "message": done.message or None,
                    "peak_gpu_bytes": peak if isinstance(peak, int) and peak >= 0 else None,
                }
            ),
        )
        p.condition(C.RUNNING, False, C.ATTEMPT_FINISHED, f"attempt {record.attempt} ended: {done.outcome}")

    def _replace_record(self, p: Pass, record: AttemptRecord) -> None:
        p.status.attempts = [record if r.attempt == record.attempt else r for r in p.status.attempts]

    def _succeed(self, p: Pass, done: K.Finished, decision: E.Decision) -> None:
        try:
            result = ResultStatus.model_validate(done.payload)
        except ValidationError:
            result = ResultStatus()
        if done.pod is not None and not result.output_path:  # the contract's result is missing
            self._fail(p, C.NO_RESULT, f"{decision.message}, but exited 0 without a result in its "
                       "termination message (rows, output path): its outputs cannot be trusted")
            return
        if done.pod is None:
            p.event("Warning", C.NO_RESULT, "the Job completed but no pod is left to read its result from")
        p.status.result = result
        took = P.finish(p.status)
        p.status.phase = "Succeeded"
        p.status.message = decision.message
        p.condition(C.SUCCEEDED, True, C.WORKER_SUCCEEDED, decision.message)
        p.event(
            "Normal",
            "Succeeded",
            f"{decision.message}: {result.rows_emitted} rows in {result.output_path or 'the output path'}"
            + (f"; {took}" if took else ""),
        )

    def _fail(self, p: Pass, reason: str, message: str, ended: K.Finished | None = None) -> None:
        """Fail the trace; a running attempt's Job is deleted, its outcome ``ended`` (what stopped it:
        the cancel annotation, evictions) or else Cancelled because the trace failed."""
        record = p.status.current()
        if record is not None and record.outcome == "Running":  # no GPU stays held by a finished trace
            self.kube.delete_job(p.ref.namespace, record.job)
            done = ended or K.Finished(
                outcome="Cancelled", reason=reason, message=f"stopped: the trace failed ({reason})"
            )
            self._record_outcome(p, record, done)
        p.status.phase = "Failed"
        p.status.message = message
        if reason in (C.INVALID_SPEC, C.INFEASIBLE):
            p.condition(C.PLACED, False, reason, message)
        p.condition(C.FAILED, True, reason, message)
        p.event("Warning", reason, message)
