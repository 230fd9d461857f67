"""What a pass reads about a trace and its current attempt: the trace, the attempt's Job and pods (from
the informer while they decide nothing, from the API server when they would), and how it ended."""

from __future__ import annotations

import logging
from typing import Any

from influence_trace.api.spec import InfluenceTrace
from influence_trace.api.status import AttemptRecord

from influence_trace_operator.adapters import progress_reader
from influence_trace_operator.adapters.informer import Informer
from influence_trace_operator.adapters.kube import KubeClient
from influence_trace_operator.reconciler import record
from influence_trace_operator.reconciler.passes import Pass
from influence_trace_operator.rules import classify, conditions, pending, policies
from influence_trace_operator.rules.classify import Finished
from influence_trace_operator.rules.policies import Decision
from influence_trace_operator.rules.settings import OperatorSettings

log = logging.getLogger(__name__)


def read_trace(kube: KubeClient, informer: Informer, namespace: str, name: str,
               fresh: bool) -> dict[str, Any] | None:
    """The informer's copy, else (or when ``fresh``) the API server's, which refreshes the copy."""
    obj = None if fresh else informer.trace(namespace, name)
    if obj is None:
        obj = kube.get_trace(namespace, name)
        if obj is not None:
            informer.refresh_trace(obj)
    return obj


def job_of(kube: KubeClient, informer: Informer, p: Pass,
           current: AttemptRecord) -> tuple[dict[str, Any] | None, bool]:
    """The attempt's Job (None: it is gone), and whether it is the informer's copy (else the API's)."""
    job = informer.job(p.ref.namespace, current.job)
    if job is not None:
        return job, True
    return kube.get_job(p.ref.namespace, current.job), False


def without_job(p: Pass, current: AttemptRecord) -> Finished:
    """The attempt's Job is gone: deleted while it ran (Cancelled), or after its outcome was recorded."""
    if current.outcome != "Running":
        return Finished(outcome=current.outcome, exit_code=current.exit_code, reason=current.reason,
                        stage=current.stage, message=current.message or "")
    done = Finished(outcome="Cancelled", reason=conditions.CANCELLED,
                    message=f"Job {current.job} was deleted before it finished")
    record.outcome(p, current, done)
    return done


def observe(kube: KubeClient, informer: Informer, p: Pass, current: AttemptRecord, job: dict[str, Any],
            cached: bool, resource: InfluenceTrace, settings: OperatorSettings) -> Finished | Decision | None:
    """How the running attempt ended (a deadline, the Job's or its pods' verdict, or no node in time),
    None while it runs (progress recorded), or the Decision to fail when evictions used up maxAttempts."""
    pending_s, run_s = pending.timeouts(resource, settings.default_pending_timeout,
                                        settings.default_run_timeout)
    pods = _pods(kube, informer, p, current, job, cached, pending_s)
    max_attempts = policies.max_attempts_of(resource, settings.default_max_attempts)
    stop = record.evictions(p, current, pods, max_attempts)
    if stop is not None:
        return stop
    ended = pending.deadline_exceeded(job, run_s) or classify.classify(job, pods) or _early(p, job, pods)
    if ended is None:
        ended = pending.timed_out(p.status, pods, pending_s, p.now, pending.started(job, current))
    if ended is None:
        record.progress(p, pods)
        progress_reader.update(kube, p.ref.namespace, p.status, pods, p.now)
    return ended


def _pods(kube: KubeClient, informer: Informer, p: Pass, current: AttemptRecord, job: dict[str, Any],
          cached: bool, pending_s: int) -> list[dict[str, Any]]:
    """The Job's pods from the informer while they decide nothing; listed from the API server when
    the Job was not in the informer, or when the cached Job or pods would end the attempt or count
    an eviction. One exception keeps the end of a one-node attempt (out of memory, success) to one
    write: a one-pod Job's ended worker pod is final (a terminal phase never changes, and with
    ``backoffLimit: 0`` and one completion no other pod follows it)."""
    uid = job["metadata"].get("uid")
    if cached and uid:
        pods = informer.pods_of(uid)
        early = classify.ended_before_job(job, pods) is not None
        decides = (classify.job_state(job) is not None or (early and not classify.one_pod(job))
                   or len(classify.evictions(pods)) > current.evictions
                   or pending.timed_out(p.status, pods, pending_s, p.now, pending.started(job, current)))
        if not decides:
            return pods
    return kube.job_pods(p.ref.namespace, current.job, uid)


def _early(p: Pass, job: dict[str, Any], pods: list[dict[str, Any]]) -> Finished | None:
    """The outcome from the ended pods, not waiting for the Job controller's condition (seconds to
    a minute under load); the Job is left as it is (its pods hold no GPU, and keep their logs)."""
    done = classify.ended_before_job(job, pods)
    if done is not None:
        log.info("%s/%s: attempt %d ended (%s, exit %s), read from pod %s before the Job controller "
                 "marked Job %s", p.ref.namespace, p.ref.name, p.status.attempt, done.outcome,
                 done.exit_code, done.pod, job["metadata"].get("name"))
    return done
