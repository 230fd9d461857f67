"""Per-namespace pool allow-lists and maxNodes, at placement and at escalation (in-memory Kube)."""

from __future__ import annotations

import json

from influence_trace_operator.reconciler.reconcile import Reconciler
from influence_trace_operator.rules.settings import OperatorSettings

from tests.operator.fake_kube import FakeKube
from tests.operator.operator_builders import H100, H200, pod, trace_dict

NS, NAME = "team-a", "demo"
GPU_OOM = json.dumps({"reason": "GPUOutOfMemory", "stage": "hessian_solve", "message": "CUDA OOM"})


def run(lists: dict, **spec) -> tuple[FakeKube, Reconciler]:
    kube = FakeKube()
    kube.add_trace(trace_dict(**spec))
    rec = Reconciler(kube, OperatorSettings(namespace_pools=lists), [H100, H200])
    rec.reconcile(NS, NAME)
    return kube, rec


def test_escalation_stops_at_the_namespaces_largest_pool() -> None:
    kube, rec = run({NS: ["h100"], "*": ["h100", "h200"]})
    assert list(kube.jobs) == [(NS, "demo-a1")]
    kube.finish_job(NS, "demo-a1", "Failed", pod("Failed", exit_code=75, message=GPU_OOM))
    rec.reconcile(NS, NAME)
    status = kube.status_of(NS, NAME)
    assert status["phase"] == "Failed" and "largest allowed pool" in status["message"]
    assert (NS, "demo-a2") not in kube.jobs


def test_a_namespace_without_any_of_its_pools_is_refused() -> None:
    kube, _ = run({"*": ["h200"]}, resources={"gpus": 2, "pools": ["h100"]})
    status = kube.status_of(NS, NAME)
    failed = next(c for c in status["conditions"] if c["type"] == "Failed")
    assert failed["reason"] == "PoolNotAllowed" and "team-a may not use pools ['h100']" in failed["message"]
    assert kube.jobs == {}


def test_other_namespaces_take_the_star_entry_or_everything() -> None:
    kube, _ = run({"other": ["h100"]})  # team-a is not listed and there is no '*': every pool
    assert kube.jobs[(NS, "demo-a1")]["spec"]["template"]["spec"]["nodeSelector"] == H100.node_selector


def test_more_nodes_than_the_operator_runs_is_refused() -> None:
    kube = FakeKube()
    kube.add_trace(trace_dict(resources={"gpus": 1, "nodes": 17, "pools": ["h100"]}))
    Reconciler(kube, OperatorSettings(), [H100, H200]).reconcile(NS, NAME)
    status = kube.status_of(NS, NAME)
    assert status["phase"] == "Failed" and "spec.resources.nodes: 17" in status["message"]
    assert kube.jobs == {}
