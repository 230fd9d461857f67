"""``influence-trace fetch``'s reader pod and commands, and ``logs``' choice of pods, without a cluster
(tests/cluster/test_operator_progress.py runs ``logs`` against the local control plane)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from influence_trace_operator.rules import labels
from influence_trace_operator.runtime.results import copy_commands, current_pods, output_dir, reader_pod

from tests.operator.operator_builders import trace_dict


def stored(**status: object) -> dict:
    trace = trace_dict()
    trace["status"] = status
    return trace


def test_the_reader_pod_mounts_the_claim_read_only_where_the_worker_wrote() -> None:
    pod = reader_pod(stored(), "influence-trace-worker:0.1.0")
    (container,) = pod["spec"]["containers"]
    assert pod["metadata"] == {"name": "demo-results", "namespace": "team-a",
                               "labels": {labels.MANAGED_BY: "influence-trace-fetch",
                                          labels.TRACE_NAME: "demo"}}
    assert container["volumeMounts"] == [{"name": "workspace", "mountPath": "/workspace", "readOnly": True}]
    assert pod["spec"]["volumes"][0]["persistentVolumeClaim"] == {"claimName": "influence-data",
                                                                  "readOnly": True}
    assert pod["spec"]["securityContext"]["runAsNonRoot"] and pod["spec"]["activeDeadlineSeconds"] > 0
    assert not pod["spec"]["automountServiceAccountToken"]


def test_the_copy_takes_the_reported_output_path_then_removes_the_pod() -> None:
    assert output_dir(stored()) == "/workspace/out"  # not finished: the spec's path
    done = stored(result={"outputPath": "/workspace/out/run-7"})
    wait, copy, delete = copy_commands(reader_pod(done, "img"), output_dir(done), "here")
    source = "demo-results:/workspace/out/run-7"
    assert copy == ["kubectl", "cp", "-n", "team-a", source, "here", "-c", "reader"]
    assert wait[:2] == ["kubectl", "wait"] and delete[:2] == ["kubectl", "delete"]


def test_without_a_claim_there_is_nothing_to_fetch_and_it_says_why() -> None:
    trace = stored()
    trace["spec"]["storage"] = {}
    with pytest.raises(ValueError, match=r"spec\.storage\.volumeClaim is not set"):
        reader_pod(trace, "img")


def test_logs_follow_the_current_attempts_pods_rank_0_first() -> None:
    def pod(name: str, index: str) -> SimpleNamespace:
        meta = SimpleNamespace(name=name, annotations={labels.COMPLETION_INDEX: index})
        return SimpleNamespace(metadata=meta)

    asked: list[str] = []

    class Core:
        def list_namespaced_pod(self, namespace: str, label_selector: str) -> SimpleNamespace:
            asked.append(label_selector)
            return SimpleNamespace(items=[pod("demo-a2-1-x", "1"), pod("demo-a2-0-y", "0")])

    client = SimpleNamespace(CoreV1Api=Core)
    trace = stored(attempt=2, attempts=[{"attempt": 1, "job": "demo-a1"}, {"attempt": 2, "job": "demo-a2"}])
    assert current_pods(client, trace) == ["demo-a2-0-y", "demo-a2-1-x"]
    assert asked == [f"{labels.JOB_NAME}=demo-a2"]
    assert current_pods(client, stored()) == []  # not placed yet


def test_a_missing_trace_is_said_in_one_line_not_a_traceback(capsys, monkeypatch) -> None:
    import argparse

    from influence_trace_operator.runtime import results
    from kubernetes.client.rest import ApiException

    class Custom:
        def get_namespaced_custom_object(self, *args: object) -> dict:
            raise ApiException(status=404, reason="Not Found")

    monkeypatch.setattr(results, "_api", lambda: SimpleNamespace(CustomObjectsApi=Custom))  # no kubeconfig
    code = results.logs(argparse.Namespace(trace="gone", namespace="team-a", follow=False))
    assert code == 1
    assert capsys.readouterr().err == "influence-trace: InfluenceTrace team-a/gone: Not Found (404)\n"
