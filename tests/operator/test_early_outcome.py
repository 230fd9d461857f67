"""An attempt's outcome read from its ended pods before the Job controller marks the Job, the
Job events that then carry nothing new, and what a failed trace records for its running attempt.

The in-memory Kube stages what the real control plane produces only by a race: the pod already Failed
while its Job has no Failed condition yet (the Job controller takes seconds under load), a Failed
condition that arrives after the next attempt exists, and a PVC that disappears between two attempts.
tests/cluster/test_operator_outcomes.py runs the same escalation on kwok, where either order happens."""

from __future__ import annotations

import json
from typing import Any

import pytest
from influence_trace_operator.reconciler.reconcile import Reconciler
from influence_trace_operator.rules.classify import ended, ended_before_job
from influence_trace_operator.rules.labels import CANCEL as CANCEL_ANNOTATION
from influence_trace_operator.rules.settings import OperatorSettings
from influence_trace_operator.runtime import on_child, on_trace

from tests.operator.fake_kube import FakeKube
from tests.operator.operator_builders import H100, H200, pod

NS, NAME = "team-a", "demo"


@pytest.fixture()
def reconciler(kube: FakeKube) -> Reconciler:
    return Reconciler(kube, OperatorSettings(), [H100, H200])


def gpu_oom_pod(name: str = "demo-a1-x") -> dict:
    message = {"reason": "GPUOutOfMemory", "stage": "hessian_solve", "message": "CUDA out of memory"}
    return pod("Failed", exit_code=75, message=json.dumps(message), name=name)


def launched(kube: FakeKube, reconciler: Reconciler) -> None:
    reconciler.reconcile(NS, NAME)
    assert list(kube.jobs) == [(NS, "demo-a1")]


def test_a_failed_pod_escalates_before_the_job_controller_fails_its_job(kube: FakeKube,
                                                                        reconciler: Reconciler) -> None:
    launched(kube, reconciler)
    kube.pods[(NS, "demo-a1")] = [gpu_oom_pod()]  # the Job has no Failed condition yet
    reconciler.reconcile(NS, NAME)
    status = kube.status_of(NS, NAME)
    assert (status["phase"], status["attempt"], status["pool"]) == ("Escalating", 2, "h200")
    first = status["attempts"][0]
    assert (first["outcome"], first["exitCode"], first["stage"]) == ("GPUOutOfMemory", 75, "hessian_solve")
    assert first["finishedAt"] == "2025-01-01T00:01:00Z"  # the container's own end, not the pass's time
    assert sorted(kube.jobs) == [(NS, "demo-a1"), (NS, "demo-a2")]  # a1 kept: its pod holds no GPU
    writes, events = kube.status_writes, list(kube.events)
    assert [e[1] for e in events] == ["JobCreated", "GPUOutOfMemory", "JobCreated"]

    kube.finish_job(NS, "demo-a1", "Failed", gpu_oom_pod())  # the Job controller catches up
    reconciler.reconcile(NS, NAME)  # a Job event reaching a pass (e.g. after a restart) is a no-op
    reconciler.reconcile(NS, NAME)
    assert kube.status_writes == writes and kube.events == events
    assert sorted(kube.jobs) == [(NS, "demo-a1"), (NS, "demo-a2")]  # no duplicate, no a3


def test_the_late_failed_condition_of_an_older_attempt_wakes_no_pass(kube: FakeKube, reconciler: Reconciler,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    launched(kube, reconciler)
    kube.pods[(NS, "demo-a1")] = [gpu_oom_pod()]
    reconciler.reconcile(NS, NAME)
    woken: list[tuple[str, str]] = []
    monkeypatch.setattr(reconciler, "reconcile", lambda ns, name: woken.append((ns, name)))
    kube.finish_job(NS, "demo-a1", "Failed", gpu_oom_pod())
    on_child.on_job_event(reconciler, "MODIFIED", kube.jobs[(NS, "demo-a1")])
    assert woken == []
    kube.finish_job(NS, "demo-a2", "Complete", pod("Succeeded", exit_code=0, name="demo-a2-x"))
    on_child.on_job_event(reconciler, "MODIFIED", kube.jobs[(NS, "demo-a2")])
    assert woken == [(NS, NAME)]  # the current attempt's Job still wakes its trace


def test_a_restarted_operator_remembers_nothing_and_still_wakes(kube: FakeKube,
                                                               reconciler: Reconciler) -> None:
    launched(kube, reconciler)
    kube.pods[(NS, "demo-a1")] = [gpu_oom_pod()]
    reconciler.reconcile(NS, NAME)
    fresh = Reconciler(kube, OperatorSettings(), [H100, H200])
    uid = kube.traces[(NS, NAME)]["metadata"]["uid"]
    assert reconciler.memory.superseded(NS, NAME, uid, 1) and not fresh.memory.superseded(NS, NAME, uid, 1)
    assert not reconciler.memory.superseded(NS, NAME, "a-namesake-uid", 1)


def job(**spec: Any) -> dict:
    return {"metadata": {"name": "demo-a1"}, "spec": spec, "status": {}}


def test_no_early_outcome_while_another_pod_is_active_or_the_job_is_suspended() -> None:
    running = pod("Running", name="demo-a1-1")
    assert ended_before_job(job(), [gpu_oom_pod(), running]) is None  # a rank still runs
    assert ended_before_job(job(suspend=True), [pod("Failed", exit_code=137)]) is None  # Kueue's kill
    evicted = pod("Failed", exit_code=137, evicted=True)
    assert ended_before_job(job(), [evicted]) is None  # the Job replaces an evicted pod
    assert ended_before_job(job(), [pod("Failed")]) is None  # no container state: the Job decides
    done = ended_before_job(job(), [evicted, gpu_oom_pod()])
    assert done is not None and (done.outcome, done.exit_code) == ("GPUOutOfMemory", 75)
    kill = ended_before_job(job(), [pod("Failed", exit_code=137, reason="OOMKilled")])
    assert kill is not None and kill.outcome == "KernelOOMKilled"


def test_success_is_read_once_every_rank_succeeded(kube: FakeKube, reconciler: Reconciler) -> None:
    payload = {"rowsEmitted": 7, "outputPath": "/out/x"}
    rank = [pod("Succeeded", exit_code=0, message=json.dumps(payload), name=f"demo-a1-{i}") for i in (0, 1)]
    rank[1]["metadata"]["annotations"] = {"batch.kubernetes.io/job-completion-index": "1"}
    two = job(completions=2, parallelism=2)
    assert ended_before_job(two, [rank[1]]) is None  # rank 0's pod not there: the Job decides
    assert ended_before_job(two, [rank[0]]) is None  # rank 1 has not succeeded yet
    done = ended_before_job(two, rank)
    assert done is not None and (done.outcome, done.pod, done.payload) == ("Succeeded", "demo-a1-0", payload)
    failed_rank = pod("Failed", exit_code=75, name="demo-a1-1")
    first = ended_before_job(two, [rank[0], failed_rank])
    assert first is not None and first.outcome == "GPUOutOfMemory"

    launched(kube, reconciler)
    kube.pods[(NS, "demo-a1")] = [rank[0]]  # the Job has no Complete condition yet
    reconciler.reconcile(NS, NAME)
    status = kube.status_of(NS, NAME)
    assert (status["phase"], status["result"]["rowsEmitted"]) == ("Succeeded", 7)
    assert status["attempts"][0]["outcome"] == "Succeeded" and list(kube.jobs) == [(NS, "demo-a1")]


def test_a_pod_that_ended_by_itself_counts_whether_or_not_the_job_controller_counted_it() -> None:
    failed = gpu_oom_pod()
    assert ended(failed) and ended(pod("Succeeded", exit_code=0))  # no tracking finalizer: counted
    failed["metadata"]["finalizers"] = ["batch.kubernetes.io/job-tracking"]
    assert ended(failed)
    failed["metadata"]["deletionTimestamp"] = "2025-01-01T00:02:00Z"
    assert not ended(failed)  # a deleted Job's pod: the deletion decides
    assert not ended(pod("Failed", exit_code=137, evicted=True)) and not ended(pod("Running"))


# ---- what a failed trace records for its running attempt, and one Warning per change -------------
def test_the_cancel_annotation_says_so_in_the_attempt(kube: FakeKube, reconciler: Reconciler) -> None:
    launched(kube, reconciler)
    on_trace.on_trace_event(reconciler, "MODIFIED", kube.annotate(NS, NAME, CANCEL_ANNOTATION, "true"))
    (first,) = kube.status_of(NS, NAME)["attempts"]
    assert (first["outcome"], first["reason"]) == ("Cancelled", "Cancelled")
    assert kube.status_of(NS, NAME)["reason"] == "Cancelled"  # the REASON column tells it from an OOM
    assert first["message"] == "cancelled by the annotation influencetrace.dev/cancel"
    assert kube.jobs == {}


def test_evictions_that_use_up_the_attempts_record_evicted(kube: FakeKube, reconciler: Reconciler) -> None:
    launched(kube, reconciler)
    kube.pods[(NS, "demo-a1")] = [
        pod("Failed", exit_code=137, evicted=True, name=f"demo-a1-{i}", created=f"2025-01-01T00:0{i}:00Z")
        for i in range(3)
    ]
    reconciler.reconcile(NS, NAME)
    status = kube.status_of(NS, NAME)
    (first,) = status["attempts"]
    assert status["phase"] == "Failed" and (first["outcome"], first["evictions"]) == ("Evicted", 3)
    assert "evicted 3 times" in first["message"] and kube.jobs == {}


def test_a_relaunch_waiting_for_its_claim_warns_once(kube: FakeKube, reconciler: Reconciler) -> None:
    launched(kube, reconciler)
    kube.missing_claims.add((NS, "influence-data"))  # deleted while attempt 1 ran
    kube.finish_job(NS, "demo-a1", "Failed", gpu_oom_pod())
    for _ in range(3):  # the Job event, then resyncs
        reconciler.reconcile(NS, NAME)
    status = kube.status_of(NS, NAME)
    assert status["attempt"] == 1 and status["attempts"][0]["outcome"] == "GPUOutOfMemory"
    assert [e[1] for e in kube.events] == ["JobCreated", "GPUOutOfMemory", "VolumeClaimMissing"]
    kube.missing_claims.clear()
    reconciler.reconcile(NS, NAME)
    reconciler.reconcile(NS, NAME)
    assert [e[1] for e in kube.events][3:] == ["JobCreated"]
    assert kube.status_of(NS, NAME)["pool"] == "h200"
