"""The informer cache: a pass reads what the watches delivered and only writes, yet never decides from a
stale copy; repeated Job and Pod events that change nothing a pass reads start no pass; a relaunch
does not create-then-read its manifest ConfigMap again."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest
from influence_trace_operator.adapters.informer import Informer, newer
from influence_trace_operator.reconciler import children
from influence_trace_operator.reconciler.passes import parse_trace
from influence_trace_operator.reconciler.reconcile import Reconciler
from influence_trace_operator.rules import labels
from influence_trace_operator.rules.jobs import TraceRef
from influence_trace_operator.rules.settings import OperatorSettings
from influence_trace_operator.runtime import on_child, on_trace

from tests.operator.fake_kube import FakeKube
from tests.operator.operator_builders import H100, H200, pod
from tests.operator.test_load_shortcuts import passes

NS, NAME, JOB = "team-a", "demo", "demo-a1"


@pytest.fixture()
def reconciler(kube: FakeKube) -> Reconciler:
    return Reconciler(kube, OperatorSettings(), [H100, H200])


def reads(kube: FakeKube, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Record every read the Kube serves (trace and Job GETs, pod LISTs)."""
    seen: list[str] = []
    for method in ("get_trace", "get_job", "job_pods"):
        real = getattr(kube, method)
        monkeypatch.setattr(kube, method, lambda *a, _m=method, _r=real: (seen.append(_m), _r(*a))[1])
    return seen


def watched_pod(kube: FakeKube, phase: str, rv: int, **kw: Any) -> dict[str, Any]:
    """A pod of the trace's first Job as its watch delivers it (labels, owner annotation, version)."""
    body = pod(phase, **kw)
    body["metadata"].update(
        namespace=NS, resourceVersion=str(rv), managedFields=[{"manager": "kubelet"}],
        labels={labels.CONTROLLER_UID: kube.jobs[(NS, JOB)]["metadata"]["uid"],
                labels.MANAGED_BY: labels.MANAGER, labels.ATTEMPT: "1"},
        annotations={labels.TRACE_NAME: NAME},
    )
    kube.pods[(NS, JOB)] = [copy.deepcopy(body)]
    return body


def deliver_trace(kube: FakeKube, reconciler: Reconciler, event: str = "MODIFIED") -> None:
    on_trace.on_trace_event(reconciler, event, kube.get_trace(NS, NAME))


def deliver_job(kube: FakeKube, reconciler: Reconciler, event: str = "MODIFIED") -> None:
    on_child.on_job_event(reconciler, event, kube.get_job(NS, JOB))


def launched(kube: FakeKube, reconciler: Reconciler) -> None:
    """The first pass from the trace's ADDED event; its Job's ADDED event and the status echo follow."""
    deliver_trace(kube, reconciler, "ADDED")
    assert list(kube.jobs) == [(NS, JOB)]
    kube.jobs[(NS, JOB)]["metadata"].update(resourceVersion="100", annotations={labels.TRACE_NAME: NAME})
    deliver_job(kube, reconciler, "ADDED")
    deliver_trace(kube, reconciler)  # the echo of the status write: stored, no pass


def test_a_running_attempt_is_followed_from_the_informer_without_reads(
    kube: FakeKube, reconciler: Reconciler, monkeypatch: pytest.MonkeyPatch
) -> None:
    launched(kube, reconciler)
    seen = reads(kube, monkeypatch)
    on_child.on_pod_event(reconciler, "MODIFIED", watched_pod(kube, "Running", 101))
    status = kube.status_of(NS, NAME)
    assert status["phase"] == "Running" and seen == []  # one write, no GET or LIST
    cached = reconciler.informer.pods_of(kube.jobs[(NS, JOB)]["metadata"]["uid"])
    assert [p["metadata"]["name"] for p in cached] == ["demo-a1-x"]
    assert "managedFields" not in cached[0]["metadata"]


def failed_worker(kube: FakeKube) -> dict[str, Any]:
    message = json.dumps({"reason": "GPUOutOfMemory", "stage": "hessian_solve", "message": "CUDA OOM"})
    failed = watched_pod(kube, "Failed", 102, exit_code=75, message=message)
    failed["metadata"]["finalizers"] = ["batch.kubernetes.io/job-tracking"]
    return failed


def test_a_one_pod_jobs_failed_pod_escalates_from_the_informer_alone(
    kube: FakeKube, reconciler: Reconciler, monkeypatch: pytest.MonkeyPatch
) -> None:
    launched(kube, reconciler)
    seen = reads(kube, monkeypatch)
    on_child.on_pod_event(reconciler, "MODIFIED", failed_worker(kube))
    assert seen == []  # a one-pod Job's failed pod is final: no LIST on the way to the next Job
    status = kube.status_of(NS, NAME)
    outcome = status["attempts"][0]["outcome"]
    assert (status["attempt"], status["pool"], outcome) == (2, "h200", "GPUOutOfMemory")


def test_a_multi_pod_jobs_failed_pod_is_decided_from_the_api_servers_pods(
    kube: FakeKube, reconciler: Reconciler, monkeypatch: pytest.MonkeyPatch
) -> None:
    launched(kube, reconciler)
    job = kube.jobs[(NS, JOB)]
    job["spec"].update(parallelism=2, completions=2)
    job["metadata"]["resourceVersion"] = "101"
    deliver_job(kube, reconciler)
    seen = reads(kube, monkeypatch)
    failed = failed_worker(kube)
    running = pod("Running", name="demo-a1-y")  # rank 1, not yet in the informer
    kube.pods[(NS, JOB)].append(running)
    on_child.on_pod_event(reconciler, "MODIFIED", failed)
    assert seen == ["job_pods"]  # the listed pods show rank 1 still running: no decision yet
    assert kube.status_of(NS, NAME)["attempt"] == 1 and list(kube.jobs) == [(NS, JOB)]


def test_a_one_pod_jobs_succeeded_pod_succeeds_the_trace_from_the_informer_alone(
    kube: FakeKube, reconciler: Reconciler, monkeypatch: pytest.MonkeyPatch
) -> None:
    launched(kube, reconciler)
    on_child.on_pod_event(reconciler, "MODIFIED", watched_pod(kube, "Running", 101))
    deliver_trace(kube, reconciler)
    seen = reads(kube, monkeypatch)
    result = json.dumps({"rowsEmitted": 3, "outputPath": "/out/x"})
    succeeded = watched_pod(kube, "Succeeded", 102, exit_code=0, message=result)
    # no tracking finalizer: the Job controller counted the pod, and kopf skipped the event between
    on_child.on_pod_event(reconciler, "MODIFIED", succeeded)  # the Job has no Complete condition yet
    status = kube.status_of(NS, NAME)
    assert seen == [] and (status["phase"], status["result"]["rowsEmitted"]) == ("Succeeded", 3)


def test_a_completed_job_reads_its_result_even_when_the_cached_pod_still_runs(
    kube: FakeKube, reconciler: Reconciler
) -> None:
    launched(kube, reconciler)
    on_child.on_pod_event(reconciler, "MODIFIED", watched_pod(kube, "Running", 101))
    deliver_trace(kube, reconciler)
    payload = {"rowsEmitted": 7, "outputPath": "/out/x"}
    kube.finish_job(NS, JOB, "Complete", pod("Succeeded", exit_code=0, message=json.dumps(payload)))
    deliver_job(kube, reconciler)  # the Job's verdict arrives before the pod's own event
    status = kube.status_of(NS, NAME)
    assert status["phase"] == "Succeeded" and status["result"]["rowsEmitted"] == 7


def test_events_that_change_nothing_a_pass_reads_start_no_pass(
    kube: FakeKube, reconciler: Reconciler, monkeypatch: pytest.MonkeyPatch
) -> None:
    launched(kube, reconciler)
    calls = passes(reconciler, monkeypatch)
    running = watched_pod(kube, "Running", 101)
    on_child.on_pod_event(reconciler, "MODIFIED", running)
    again = copy.deepcopy(running)
    again["metadata"]["resourceVersion"] = "103"
    again["status"]["conditions"] = [{"type": "Ready", "status": "True"}]
    on_child.on_pod_event(reconciler, "MODIFIED", again)  # a condition changed, the phase did not
    assert calls == [NAME]
    kube.finish_job(NS, JOB, "Failed", pod("Failed", exit_code=1))
    deliver_job(kube, reconciler)
    kube.jobs[(NS, JOB)]["status"]["active"] = 0
    kube.jobs[(NS, JOB)]["metadata"]["resourceVersion"] = "104"
    deliver_job(kube, reconciler)  # the same verdict again
    assert calls == [NAME, NAME]


def test_a_relaunch_does_not_create_its_configmap_again_until_a_restart(
    kube: FakeKube, reconciler: Reconciler, monkeypatch: pytest.MonkeyPatch
) -> None:
    made: list[str] = []
    real = kube.ensure_configmap
    monkeypatch.setattr(kube, "ensure_configmap", lambda body: (made.append(body["metadata"]["name"]),
                                                                real(body))[1])
    reconciler.reconcile(NS, NAME)
    kube.finish_job(NS, JOB, "Failed", pod("Failed", exit_code=75))
    reconciler.reconcile(NS, NAME)
    assert sorted(kube.jobs) == [(NS, JOB), (NS, "demo-a2")] and len(made) == 1
    restarted = Reconciler(kube, OperatorSettings(), [H100, H200])
    trace = parse_trace(kube.traces[(NS, NAME)])
    children.ensure_all(kube, restarted.memory, trace, reconciler_ref(kube), restarted.settings)
    assert len(made) == 2  # a new process checks the existing ConfigMap once


def reconciler_ref(kube: FakeKube) -> TraceRef:
    meta = kube.traces[(NS, NAME)]["metadata"]
    return TraceRef(meta["name"], meta["namespace"], meta["uid"])


def test_a_job_missing_from_the_informer_is_read_from_the_api_server(
    kube: FakeKube, reconciler: Reconciler, monkeypatch: pytest.MonkeyPatch
) -> None:
    reconciler.reconcile(NS, NAME)
    seen = reads(kube, monkeypatch)
    result = json.dumps({"rowsEmitted": 1, "outputPath": "/out/x"})
    kube.finish_job(NS, JOB, "Complete", pod("Succeeded", exit_code=0, message=result))
    reconciler.reconcile(NS, NAME)
    assert seen == ["get_job", "job_pods"]  # the trace is the answer to the first pass's status write
    assert kube.status_of(NS, NAME)["phase"] == "Succeeded"


def test_late_events_never_replace_a_newer_copy_and_deletion_unindexes() -> None:
    informer = Informer()
    pod_v5 = {"metadata": {"namespace": NS, "name": "p", "resourceVersion": "5",
                           "labels": {labels.CONTROLLER_UID: "u1"}}, "status": {"phase": "Running"}}
    pod_v4 = copy.deepcopy(pod_v5)
    pod_v4["metadata"]["resourceVersion"] = "4"
    pod_v4["status"]["phase"] = "Pending"
    assert informer.put("pod", "MODIFIED", pod_v5) is None
    informer.put("pod", "MODIFIED", pod_v4)
    assert informer.pods_of("u1")[0]["status"]["phase"] == "Running"
    informer.put("pod", "DELETED", pod_v5)
    assert informer.pods_of("u1") == []
    assert informer.put("pod", "MODIFIED", pod_v4) is None  # the deleted copy is gone from the store
    assert newer({"metadata": {"resourceVersion": "9"}}, {"metadata": {"resourceVersion": "10"}})
    assert not newer({"metadata": {"resourceVersion": "10"}}, {"metadata": {"resourceVersion": "9"}})
    assert newer({"metadata": {"resourceVersion": "x"}}, {"metadata": {"resourceVersion": "1"}})


def test_the_operators_own_write_is_the_next_passs_copy_until_a_newer_event(
    kube: FakeKube, reconciler: Reconciler, monkeypatch: pytest.MonkeyPatch
) -> None:
    deliver_trace(kube, reconciler, "ADDED")  # the first pass writes Pending
    written = reconciler.informer.trace(NS, NAME)
    assert written is not None and written["status"]["phase"] == "Pending"
    assert written["metadata"]["resourceVersion"] == kube.traces[(NS, NAME)]["metadata"]["resourceVersion"]
    seen = reads(kube, monkeypatch)
    reconciler.reconcile(NS, NAME)  # e.g. a pod event before the write's echo: the trace is not read
    assert "get_trace" not in seen and kube.status_writes == 1
    older = copy.deepcopy(written)
    older["metadata"]["resourceVersion"] = "1"
    del older["status"]
    reconciler.informer.put("trace", "MODIFIED", older)  # the creation's event, delivered late
    assert reconciler.informer.trace(NS, NAME) == written


def test_kueue_admission_of_a_suspended_job_starts_a_pass(
    kube: FakeKube, reconciler: Reconciler, monkeypatch: pytest.MonkeyPatch
) -> None:
    launched(kube, reconciler)
    calls = passes(reconciler, monkeypatch)
    job = kube.get_job(NS, JOB)
    for rv, suspend, active in ((101, True, 0), (102, False, 0), (103, False, 1)):
        job = copy.deepcopy(job)
        job["spec"]["suspend"], job["status"]["active"] = suspend, active
        job["metadata"]["resourceVersion"] = str(rv)
        on_child.on_job_event(reconciler, "MODIFIED", job)
    assert calls == [NAME, NAME]  # suspended, admitted; the pod count that follows starts none


def test_an_attempt_its_trace_moved_past_leaves_the_informer_and_wakes_no_pass(
    kube: FakeKube, reconciler: Reconciler, monkeypatch: pytest.MonkeyPatch
) -> None:
    launched(kube, reconciler)
    uid = kube.jobs[(NS, JOB)]["metadata"]["uid"]
    failed = failed_worker(kube)
    assert reconciler.informer.put("pod", "MODIFIED", failed) is None
    assert reconciler.informer.pods_of(uid) and reconciler.informer.job(NS, JOB) is not None
    reconciler.reconcile(NS, NAME)  # out of memory: the write names attempt 2, attempt 1 is dropped
    assert kube.status_of(NS, NAME)["attempt"] == 2
    assert reconciler.informer.pods_of(uid) == [] and reconciler.informer.job(NS, JOB) is None
    restarted = Reconciler(kube, OperatorSettings(), [H100, H200])
    deliver_trace(kube, restarted)  # a restart: the trace arrives first, remembering nothing else
    calls = passes(restarted, monkeypatch)
    kube.finish_job(NS, JOB, "Failed", failed)  # the Job controller's late verdict on attempt 1
    kube.jobs[(NS, JOB)]["metadata"]["resourceVersion"] = "120"
    deliver_job(kube, restarted)
    on_child.on_pod_event(restarted, "MODIFIED", failed)
    assert calls == [] and restarted.informer.job(NS, JOB) is None and restarted.informer.pods_of(uid) == []


def test_a_finished_traces_children_are_dropped_and_every_index_emptied() -> None:
    informer = Informer()

    def child(kind: str, name: str, attempt: int, job_uid: str) -> dict[str, Any]:
        own = {labels.ATTEMPT: str(attempt), **({labels.CONTROLLER_UID: job_uid} if kind == "pod" else {})}
        meta = {"namespace": NS, "name": name, "resourceVersion": "5", "uid": f"{name}-uid",
                "labels": own, "annotations": {labels.TRACE_NAME: NAME}}
        return {"metadata": meta, "status": {}}

    def trace(phase: str, attempt: int, rv: str) -> dict[str, Any]:
        meta = {"namespace": NS, "name": NAME, "resourceVersion": rv}
        return {"metadata": meta, "status": {"phase": phase, "attempt": attempt}}

    informer.put("trace", "ADDED", trace("Running", 2, "10"))
    for kind, name, attempt, uid in (("job", "demo-a1", 1, ""), ("pod", "demo-a1-x", 1, "j1"),
                                     ("job", "demo-a2", 2, ""), ("pod", "demo-a2-x", 2, "j2")):
        informer.put(kind, "ADDED", child(kind, name, attempt, uid))
    assert informer.job(NS, "demo-a1") is None and informer.pods_of("j1") == []  # attempt 1 is past
    assert informer.job(NS, "demo-a2") is not None and len(informer.pods_of("j2")) == 1
    assert not informer.moved_past(child("pod", "demo-a2-x", 2, "j2"))
    informer.put("trace", "MODIFIED", trace("Succeeded", 2, "11"))
    assert informer.job(NS, "demo-a2") is None and informer.pods_of("j2") == []
    assert informer.moved_past(child("job", "demo-a2", 2, ""))
    assert informer._jobs == {} and informer._pods == {} and informer._pods_by_job == {}
    assert informer._children == {}  # nothing of the finished trace is left but the trace itself
    unlabelled = child("job", "other", 1, "")
    del unlabelled["metadata"]["labels"][labels.ATTEMPT]
    informer.put("job", "ADDED", unlabelled)  # no attempt label: kept (a pass decides what it is)
    assert informer.job(NS, "other") is not None
