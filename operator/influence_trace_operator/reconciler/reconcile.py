"""One reconcile pass of a trace: read its state, decide, act, write status once, then events.

Level-triggered and idempotent: the pass never trusts the event that woke it, only the trace, its
current Job and that Job's pods as the watches last delivered them (adapters/informer.py; what would
end an attempt is read from the API server first, reconciler/attempt.py). Its only memory is the
status (reconciler/memory.py holds shortcuts a restart may lose), and the Job of attempt N has a
deterministic name, so an operator killed at any point converges on restart: a Job created before
the crash is adopted (409 -> read), a status written before the crash makes the next pass create the
Job it names. The status is written with the resourceVersion it was read at, so two passes that race
(a Job event and a Pod event) cannot overwrite each other; the loser retries.

Every decision is a pure rule (rules/policies.py, rules/tenancy.py, adapters/history_store.place);
this class reads, dispatches, acts (Jobs and their children) and records (reconciler/record.py).
"""

from __future__ import annotations

import logging
import threading
from collections import defaultdict
from collections.abc import Callable
from typing import Any

from influence_trace.api.spec import InfluenceTrace, ManifestError
from influence_trace.api.status import EstimateStatus
from influence_trace.planning.memory_model import ShapesError
from influence_trace.planning.placement import Pool, suggest_after_oom
from influence_trace.planning.workload import WorkloadError

from influence_trace_operator.adapters import faults, history_store, kueue, metrics
from influence_trace_operator.adapters.health import Watchdog
from influence_trace_operator.adapters.informer import Informer
from influence_trace_operator.adapters.kube import ApiError, KubeClient
from influence_trace_operator.reconciler import attempt, children, queued, record
from influence_trace_operator.reconciler.memory import PassMemory
from influence_trace_operator.reconciler.passes import Pass, Wait, parse_trace, start_pass
from influence_trace_operator.rules import conditions, labels, policies, tenancy
from influence_trace_operator.rules.children import ChildConflict
from influence_trace_operator.rules.classify import Finished
from influence_trace_operator.rules.jobs import JobPlacement
from influence_trace_operator.rules.policies import Decision
from influence_trace_operator.rules.pools import allowed_pools
from influence_trace_operator.rules.settings import OperatorSettings

log = logging.getLogger(__name__)
CONFLICT_RETRIES = 5
CLUSTER_FIELDS = (
    "the operator places a trace before any pod can read its volume, so on a cluster the trace names "
    "the model's shapes (spec.model.preset or spec.model.architecture) and its response tokens "
    "(spec.rollouts.tokensEstimate); see docs/operator.md, 'Fields a cluster trace needs'"
)


class Reconciler:
    """Reconciles traces by name; safe to call from many threads (one pass per trace at a time)."""

    def __init__(self, kube: KubeClient, settings: OperatorSettings, table: list[Pool]) -> None:
        self.kube = kube
        self.settings = settings
        self.table = table
        self.history = history_store.build_store(kube, settings)
        self.informer = Informer()  # the watch handlers fill it (runtime/on_trace.py, on_child.py)
        self.memory = PassMemory()
        self.watchdog = Watchdog(settings.wedged_seconds, settings.resync_seconds)
        self.may_act: Callable[[], bool] = lambda: True  # the Lease guard replaces it (adapters/leader.py)
        self.send: Callable[[Callable[[], None]], None] = lambda post: post()  # lifecycle: a thread pool
        self.retries = faults.Retries(self.reconcile, settings.api_backoff_seconds,
                                      settings.api_backoff_max_seconds)
        self._locks: defaultdict[tuple[str, str], threading.Lock] = defaultdict(threading.Lock)
        self._guard = threading.Lock()

    def reconcile(self, namespace: str, name: str) -> None:
        """One pass; its first try reads the trace from the informer (a stale copy only costs a 409 on
        the status write), a retry after a conflict from the API server."""
        if not self.may_act() or self.retries.waiting((namespace, name)):
            return  # not the leader; or backing off after a refused call (its timer reconciles it)
        with self._guard:
            lock = self._locks[(namespace, name)]
        with lock, self.watchdog.watch_pass(f"{namespace}/{name}"), metrics.timed_pass():
            self.memory.started((namespace, name))
            for tries in range(CONFLICT_RETRIES):
                try:
                    self._once(namespace, name, fresh=tries > 0)
                    return
                except ApiError as err:
                    if not faults.is_conflict(err):
                        raise
                    log.debug("conflict on %s/%s; re-reading", namespace, name)
                except Wait as why:
                    log.info("%s/%s: %s", namespace, name, why)
                    return

    def _once(self, namespace: str, name: str, fresh: bool) -> None:
        """Read, step, then write the status (only when it changed), send the events, run what waits."""
        obj = attempt.read_trace(self.kube, self.informer, namespace, name, fresh)
        p = start_pass(obj) if obj is not None and not obj["metadata"].get("deletionTimestamp") else None
        if p is None or p.status.terminal:  # gone, being deleted, or finished: nothing to do
            self.memory.forget(namespace, name)
            return
        before = p.status.wire()
        try:
            self._step(p)
            self.retries.succeeded((namespace, name))
        except ApiError as err:
            if faults.is_conflict(err):
                raise
            self._api_fault(p, err)
        except ChildConflict as err:
            self._fail(p, Decision("fail", conditions.CHILD_CONFLICT, str(err)))
        self._write(p, before)
        if p.events:
            self.send(lambda: self._post(p.obj, p.events))
        for step in p.later:
            step()

    def _write(self, p: Pass, before: dict[str, Any]) -> None:
        """The one status write of the pass, with the resourceVersion it read (a race costs a 409)."""
        p.status.observed_generation = p.generation
        p.status.reason = conditions.headline(p.status)
        after = p.status.wire()
        if after == before:
            return
        written = self.kube.replace_status(p.obj, after)
        self.informer.refresh_trace(written)
        self.memory.wrote((p.ref.namespace, p.ref.name), written, p.ref.uid, p.status.attempt)
        metrics.observe_pass(before, after)

    def _post(self, obj: dict[str, Any], events: list[tuple[str, str, str]]) -> None:
        """One pass's events, in order (post_event only logs a refusal)."""
        for kind, reason, message in events:
            self.kube.post_event(obj, kind, reason, message)

    def _api_fault(self, p: Pass, err: ApiError) -> None:
        """A refused call: permanent ones fail the trace, others are told and retried with backoff."""
        fault = faults.describe(err)
        log.warning("%s/%s: %s", p.ref.namespace, p.ref.name, fault.message)
        if fault.permanent:
            self._fail(p, Decision("fail", conditions.API_REJECTED, fault.message))
            return
        failures, wait = self.retries.failed((p.ref.namespace, p.ref.name))
        record.api_trouble(p, fault, wait, failures)

    def _step(self, p: Pass) -> None:
        """Validate, then either place attempt 1 or follow the current attempt."""
        try:
            resource = parse_trace(p.obj)
        except ManifestError as err:
            self._fail(p, Decision("fail", conditions.INVALID_SPEC, str(err)))
            return
        if (p.obj["metadata"].get("annotations") or {}).get(labels.CANCEL):
            why = f"cancelled by the annotation {labels.CANCEL}"
            self._fail(p, Decision("fail", conditions.CANCELLED, why),
                       Finished(outcome="Cancelled", reason=conditions.CANCELLED, message=why))
            return
        allowed, unknown = allowed_pools(self.table, resource.spec.resources.pools)
        bounds = tenancy.bound(resource, allowed, self.table, self.settings.namespace_pools, p.ref.namespace,
                               self.settings.max_nodes)
        if unknown:
            known = ", ".join(x.name for x in self.table)
            message = f"spec.resources.pools: unknown pools {unknown}; known: {known}"
            self._fail(p, Decision("fail", conditions.INVALID_SPEC, message))
        elif bounds.refusal is not None:
            self._fail(p, Decision("fail", *bounds.refusal))
        elif p.status.attempt == 0:
            self._start(p, resource, bounds.pools)
        else:
            self._follow(p, resource, bounds.pools)

    def _start(self, p: Pass, resource: InfluenceTrace, allowed: list[Pool]) -> None:
        """Attempt 1: estimate, choose the pool, create the Job, or fail with no Job."""
        s = self.settings
        try:
            plan = history_store.place(self.history, resource.spec, allowed, s)
        except (ShapesError, WorkloadError) as err:  # the operator cannot read the trace's volume
            self._fail(p, Decision("fail", conditions.INVALID_SPEC, f"{err}; {CLUSTER_FIELDS}"))
            return
        except ValueError as err:  # unknown module suffixes, unknown pools
            self._fail(p, Decision("fail", conditions.INVALID_SPEC, str(err)))
            return
        pool = next((x for x in allowed if plan.chosen.pool and x.name == plan.chosen.pool.name), None)
        est = plan.learned.estimate
        learned_from = f"; {plan.learned.reason}" if plan.learned.reason else ""
        p.status.estimate = EstimateStatus(
            pool=pool.name if pool else None, gpu_bytes=est.gpu_bytes, host_bytes=est.host_bytes,
            reason=f"peak in stage {plan.model.peak_stage}; {plan.chosen.reason}{learned_from}",
            source=plan.learned.source, **history_store.duration_fields(plan.duration),
        )
        self._act(p, resource, policies.first_launch(pool, plan.chosen.reason, est.host_bytes, s.headroom,
                                                  s.min_host_memory_bytes), relaunch=False)

    def _follow(self, p: Pass, resource: InfluenceTrace, allowed: list[Pool]) -> None:
        """Attempt N exists in status: read how it is doing; once it ended, decide and act."""
        current = p.status.current()
        if current is None:
            raise Wait(f"status names attempt {p.status.attempt} without a record")
        news = current.outcome == "Running"  # the attempt's end is news in this pass (one Warning)
        done = self._ended(p, resource, current)
        if done is None:
            return
        max_attempts = policies.max_attempts_of(resource, self.settings.default_max_attempts)
        decision = policies.decide(p.status, done, allowed, max_attempts, self.settings.host_memory_growth,
                                   lambda: self._what_fits(resource, allowed))
        if decision.action == "launch" and news:  # not again on each pass that waits to relaunch
            p.event("Warning", done.outcome, decision.message)
        self._act(p, resource, decision, relaunch=True, done=done)

    def _ended(self, p: Pass, resource: InfluenceTrace, current: Any) -> Finished | None:
        """How the current attempt ended (recorded, and the history told), or None while it runs (or
        the pass already failed the trace for evictions)."""
        job, cached = attempt.job_of(self.kube, self.informer, p, current)
        if job is None:
            return attempt.without_job(p, current)
        children.check_owner(job, p.ref)
        max_attempts = policies.max_attempts_of(resource, self.settings.default_max_attempts)
        stop = queued.follow(self.kube, self.table, p, current, job, max_attempts)
        if isinstance(stop, Decision):
            self._fail(p, stop, Finished(outcome="Evicted", reason=conditions.EVICTED_BY_KUEUE,
                                         message=stop.message))
            return None
        if stop == queued.WAIT:
            return None
        seen = attempt.observe(self.kube, self.informer, p, current, job, cached, resource, self.settings)
        if isinstance(seen, Decision):
            self._fail(p, seen, Finished(outcome="Evicted", reason="Evicted", message=seen.message))
            return None
        if seen is None:
            return None
        if seen.outcome == "Unschedulable":  # timed out waiting for a node: its pods hold GPU slots
            self.kube.delete_job(p.ref.namespace, current.job)
        record.outcome(p, current, seen)
        finished = p.status.current() or current
        p.later.append(lambda: history_store.record(self.history, resource.spec, p.ref.uid, p.ref.name,
                                                    finished, self.table, seen.payload))
        return seen

    def _what_fits(self, resource: InfluenceTrace, allowed: list[Pool]) -> str:
        """The memory model's suggestion after an out-of-memory on the largest allowed pool."""
        try:
            return suggest_after_oom(resource.spec, allowed[-1], self.settings.headroom)
        except ValueError:  # no shapes to re-estimate with
            return policies.GENERIC_WHAT_FITS

    def _act(self, p: Pass, resource: InfluenceTrace, decision: Decision, relaunch: bool,
             done: Finished | None = None) -> None:
        """Carry out a decision: launch the next attempt, or finish the trace."""
        if decision.action == "succeed" and done is not None:
            record.succeeded(p, done, decision)
        elif decision.action != "launch" or decision.placement is None:
            self._fail(p, decision)
        else:
            self._launch(p, resource, decision.placement, decision, relaunch)

    def _launch(self, p: Pass, resource: InfluenceTrace, placement: JobPlacement, decision: Decision,
                relaunch: bool) -> None:
        """The attempt's children and Job (adopted when they exist), then its record."""
        claim = resource.spec.storage.volume_claim
        if claim and not self.kube.volume_claim_exists(p.ref.namespace, claim):
            record.waiting_for_claim(p, claim)
            return
        queue = kueue.queue_of(resource, self.settings)
        children.ensure_all(self.kube, self.memory, resource, p.ref, self.settings)
        job, created = self.kube.create_job(children.job(resource, p.ref, placement, self.settings, queue))
        children.check_owner(job, p.ref)
        record.launched(p, placement, decision, job["metadata"]["name"], created, relaunch)
        queued.after_launch(p, queue, self.table)

    def _fail(self, p: Pass, decision: Decision, ended: Finished | None = None) -> None:
        """Fail the trace; a running attempt's Job is deleted (record.failed says which)."""
        job = record.failed(p, decision.reason, decision.message, ended)
        if job is not None:
            self.kube.delete_job(p.ref.namespace, job)
