"""The Reconciler's passes against an in-memory Kube (tests/operator/fake_kube.py): races, adoption,
recreation, foreign owners and outcomes, decided without a cluster. The same flows run against the
real control plane in tests/cluster/; these pin the decisions and the faults the API cannot stage."""

from __future__ import annotations

import json

import pytest
from influence_trace_operator.adapters.kube import Kube, KubeClient
from influence_trace_operator.reconciler.reconcile import CONFLICT_RETRIES, Reconciler
from influence_trace_operator.rules.settings import OperatorSettings

from tests.operator.fake_kube import FakeKube, owned_by, trace_name_of
from tests.operator.operator_builders import H100, H200, pod

NS, NAME = "team-a", "demo"


@pytest.fixture()
def reconciler(kube: FakeKube) -> Reconciler:
    return Reconciler(kube, OperatorSettings(), [H100, H200])


def success_pod() -> dict:
    message = {"rowsEmitted": 12, "outputPath": "/workspace/out", "timings": {"step_total": 3.0},
               "peakGpuBytes": 1000, "peakHostBytes": 2000, "metrics": {"auc": 0.75}}
    return pod("Succeeded", exit_code=0, reason="Completed", message=json.dumps(message))


def gpu_oom_pod() -> dict:
    message = {"reason": "GPUOutOfMemory", "stage": "hessian_solve", "message": "CUDA out of memory"}
    return pod("Failed", exit_code=75, message=json.dumps(message))


def test_first_pass_places_launches_and_writes_status_once(kube: FakeKube, reconciler: Reconciler) -> None:
    reconciler.reconcile(NS, NAME)
    status = kube.status_of(NS, NAME)
    assert (status["phase"], status["attempt"], status["pool"]) == ("Pending", 1, "h100")
    assert kube.status_writes == 1
    (job,) = kube.jobs.values()
    assert job["metadata"]["name"] == "demo-a1" and owned_by(job, kube.traces[(NS, NAME)])
    assert trace_name_of(job) == NAME and len(kube.configmaps) == 1
    assert [e[1] for e in kube.events] == ["JobCreated"]


def test_a_second_pass_with_nothing_new_writes_nothing(kube: FakeKube, reconciler: Reconciler) -> None:
    reconciler.reconcile(NS, NAME)
    reconciler.reconcile(NS, NAME)
    assert kube.status_writes == 1 and len(kube.jobs) == 1 and len(kube.events) == 1


def test_a_lost_status_race_rereads_and_converges(kube: FakeKube, reconciler: Reconciler) -> None:
    kube.conflicts_to_inject = 2
    reconciler.reconcile(NS, NAME)
    assert kube.status_writes == 1 and kube.status_of(NS, NAME)["attempt"] == 1
    assert len(kube.jobs) == 1  # the passes that lost adopted the Job the first one created
    assert [e[1] for e in kube.events] == ["JobAdopted"]


def test_endless_conflicts_give_up_after_the_retries_without_writing(kube: FakeKube,
                                                                    reconciler: Reconciler) -> None:
    kube.conflicts_to_inject = CONFLICT_RETRIES
    reconciler.reconcile(NS, NAME)
    assert kube.status_writes == 0 and kube.status_of(NS, NAME) == {} and kube.events == []
    reconciler.reconcile(NS, NAME)  # the next event or resync converges
    assert kube.status_of(NS, NAME)["phase"] == "Pending"


def test_a_job_created_before_a_crash_is_adopted(kube: FakeKube, reconciler: Reconciler) -> None:
    reconciler.reconcile(NS, NAME)
    kube.edit_trace(NS, NAME, lambda t: t.pop("status"))  # it died after creating the Job, before the status
    restarted = Reconciler(kube, OperatorSettings(), [H100, H200])
    restarted.reconcile(NS, NAME)
    assert len(kube.jobs) == 1 and kube.status_of(NS, NAME)["attempt"] == 1
    assert kube.events[-1][1] == "JobAdopted"


def test_a_deleted_job_ends_its_attempt_as_cancelled_and_relaunches(kube: FakeKube,
                                                                     reconciler: Reconciler) -> None:
    """The Job is created before the status names it, so a missing Job was deleted: Cancelled."""
    reconciler.reconcile(NS, NAME)
    kube.jobs.clear()
    reconciler.reconcile(NS, NAME)
    status = kube.status_of(NS, NAME)
    assert [(a["attempt"], a["outcome"], a["pool"]) for a in status["attempts"]] == [
        (1, "Cancelled", "h100"), (2, "Running", "h100")]
    assert list(kube.jobs) == [(NS, "demo-a2")]
    kube.jobs.clear()
    reconciler.reconcile(NS, NAME)
    kube.jobs.clear()
    reconciler.reconcile(NS, NAME)  # the third deletion uses up maxAttempts (3)
    status = kube.status_of(NS, NAME)
    assert status["phase"] == "Failed" and "maxAttempts (3)" in status["message"]


def test_a_job_name_held_by_a_foreign_object_is_never_adopted(kube: FakeKube, reconciler: Reconciler) -> None:
    kube.foreign_job(NS, "demo-a1")
    reconciler.reconcile(NS, NAME)
    status = kube.status_of(NS, NAME)
    failed = next(c for c in status["conditions"] if c["type"] == "Failed")
    assert failed["reason"] == "ChildConflict" and "Job demo-a1 already exists" in failed["message"]
    assert status["attempts"] == []  # nothing is recorded as this trace's Job
    assert kube.jobs[(NS, "demo-a1")]["metadata"]["uid"] == "other"


def test_a_job_of_a_deleted_namesake_is_waited_for(kube: FakeKube, reconciler: Reconciler) -> None:
    kube.foreign_job(NS, "demo-a1", {"kind": "InfluenceTrace", "name": NAME, "uid": "old-uid"})
    reconciler.reconcile(NS, NAME)
    assert kube.status_writes == 0  # the garbage collector removes it; then the Job is created
    del kube.jobs[(NS, "demo-a1")]
    kube.traces[(NS, NAME)].pop("status", None)
    reconciler.reconcile(NS, NAME)
    assert owned_by(kube.jobs[(NS, "demo-a1")], kube.traces[(NS, NAME)])


def test_success_records_the_worker_result(kube: FakeKube, reconciler: Reconciler) -> None:
    reconciler.reconcile(NS, NAME)
    kube.finish_job(NS, "demo-a1", "Complete", success_pod())
    reconciler.reconcile(NS, NAME)
    status = kube.status_of(NS, NAME)
    assert (status["phase"], status["reason"]) == ("Succeeded", "WorkerSucceeded")
    assert status["result"]["rowsEmitted"] == 12 and status["result"]["metrics"] == {"auc": 0.75}
    assert status["attempts"][0]["outcome"] == "Succeeded"


def test_exit_0_without_a_result_fails_with_its_own_reason(kube: FakeKube, reconciler: Reconciler) -> None:
    """A worker that exits 0 but writes no result (no termination message) is not a success: its
    outputs cannot be trusted, and kubectl get says NoResult."""
    reconciler.reconcile(NS, NAME)
    kube.finish_job(NS, "demo-a1", "Complete", pod("Succeeded", exit_code=0, reason="Completed"))
    reconciler.reconcile(NS, NAME)
    status = kube.status_of(NS, NAME)
    assert (status["phase"], status["reason"]) == ("Failed", "NoResult")
    assert "without a result" in status["message"] and "result" not in status


def test_run_time_counts_from_the_workers_start_not_the_jobs_creation(kube: FakeKube,
                                                                      reconciler: Reconciler) -> None:
    """The pod waited for a node: actualSeconds is the container's run, not the wait before it."""
    reconciler.reconcile(NS, NAME)
    done = success_pod()
    term = done["status"]["containerStatuses"][0]["state"]["terminated"]
    term.update(startedAt="2025-01-01T00:00:20Z", finishedAt="2025-01-01T00:01:00Z")
    kube.finish_job(NS, "demo-a1", "Complete", done)
    reconciler.reconcile(NS, NAME)
    status = kube.status_of(NS, NAME)
    assert status["attempts"][0]["runningAt"] == "2025-01-01T00:00:20Z"
    assert status["progress"]["actualSeconds"] == 40.0


def test_gpu_oom_escalates_to_the_next_pool(kube: FakeKube, reconciler: Reconciler) -> None:
    reconciler.reconcile(NS, NAME)
    kube.finish_job(NS, "demo-a1", "Failed", gpu_oom_pod())
    reconciler.reconcile(NS, NAME)
    status = kube.status_of(NS, NAME)
    assert (status["phase"], status["attempt"], status["pool"]) == ("Escalating", 2, "h200")
    assert status["reason"] == "EscalatedToLargerPool"
    assert [a["outcome"] for a in status["attempts"]] == ["GPUOutOfMemory", "Running"]
    assert (NS, "demo-a2") in kube.jobs
    kube.finish_job(NS, "demo-a2", "Failed", gpu_oom_pod())
    reconciler.reconcile(NS, NAME)
    status = kube.status_of(NS, NAME)
    assert (status["phase"], status["reason"]) == ("Failed", "OutOfGPUMemory")  # no larger pool is left


def test_an_unparseable_spec_fails_with_a_reason_and_no_job(kube: FakeKube, reconciler: Reconciler) -> None:
    kube.traces[(NS, NAME)]["spec"]["trace"] = {"factor": 0}
    reconciler.reconcile(NS, NAME)
    status = kube.status_of(NS, NAME)
    assert status["phase"] == "Failed" and "spec.trace.factor" in status["message"]
    assert status["reason"] == "InvalidSpec" and kube.jobs == {}
    assert any(c["type"] == "Failed" and c["reason"] == "InvalidSpec" for c in status["conditions"])


@pytest.mark.parametrize(("section", "body", "field"), [
    ("model", {"path": "/workspace/models/tiny"}, "spec.model.preset"),
    ("rollouts", {"path": "/workspace/data/rollouts.jsonl"}, "spec.rollouts.tokensEstimate"),
])
def test_a_trace_without_shapes_or_tokens_says_what_a_cluster_trace_needs(
    kube: FakeKube, reconciler: Reconciler, section: str, body: dict, field: str
) -> None:
    """The operator never reads the trace's volume: the message names the field and says why, instead
    of asking to make config.json 'readable here'."""
    kube.traces[(NS, NAME)]["spec"][section] = body
    reconciler.reconcile(NS, NAME)
    status = kube.status_of(NS, NAME)
    assert (status["phase"], status["reason"]) == ("Failed", "InvalidSpec") and kube.jobs == {}
    assert field in status["message"] and "before any pod can read its volume" in status["message"]


def test_a_deleted_trace_is_left_alone(kube: FakeKube, reconciler: Reconciler) -> None:
    kube.traces.clear()
    reconciler.reconcile(NS, NAME)
    assert kube.jobs == {} and kube.events == []


def test_the_client_protocol_names_every_call_of_the_real_kube() -> None:
    """A call added to Kube must join KubeClient, and then mypy (scripts/test.sh) holds FakeKube to it."""
    real = {n for n, f in vars(Kube).items() if callable(f) and not n.startswith("_")}
    protocol = {n for n in vars(KubeClient) if not n.startswith("_")} | set(KubeClient.__annotations__)
    assert real == protocol - {"custom", "core"}
    assert isinstance(FakeKube(), KubeClient) and not isinstance(object(), KubeClient)
