"""resources.nodes > 1: an Indexed Job whose pods meet at index 0 through a headless Service."""

from __future__ import annotations

from influence_trace_operator.rules import labels
from influence_trace_operator.rules.jobs import RENDEZVOUS_PORT, build_job, build_service, service_name
from influence_trace_operator.rules.policies import placement_on
from influence_trace_operator.rules.settings import OperatorSettings

from tests.operator.operator_builders import H100, REF, trace

SETTINGS = OperatorSettings(worker_image="registry.example/worker:1")
TWO_NODES = {"gpus": 2, "nodes": 2, "pools": ["h100"]}


def test_two_nodes_make_an_indexed_job_with_the_rendezvous_env() -> None:
    job = build_job(trace(resources=TWO_NODES), REF, placement_on(H100, 1, 8 * 2**30), SETTINGS)
    spec = job["spec"]
    assert (spec["completionMode"], spec["completions"], spec["parallelism"]) == ("Indexed", 2, 2)
    assert spec["backoffLimit"] == 0  # one failing pod fails the Job, which stops the other pods
    pod = spec["template"]["spec"]
    assert pod["subdomain"] == service_name(REF.name)
    env = {e["name"]: e["value"] for e in pod["containers"][0]["env"]}
    name = job["metadata"]["name"]
    assert env["MASTER_ADDR"] == f"{name}-0.{service_name(REF.name)}"
    assert (env["INFLUENCE_TRACE_NNODES"], env["MASTER_PORT"], env["JOB_NAME"]) == ("2", "29500", name)


def test_one_node_has_no_rendezvous() -> None:
    job = build_job(trace(), REF, placement_on(H100, 1, 8 * 2**30), SETTINGS)
    pod = job["spec"]["template"]["spec"]
    assert "completionMode" not in job["spec"] and "subdomain" not in pod
    assert "MASTER_ADDR" not in {e["name"] for e in pod["containers"][0]["env"]}


def test_headless_service_selects_the_traces_pods_and_is_owned_by_it() -> None:
    service = build_service(trace(resources=TWO_NODES), REF)
    assert service["metadata"]["name"] == service_name(REF.name) == "demo-ranks"
    assert service["metadata"]["ownerReferences"][0]["uid"] == REF.uid
    spec = service["spec"]
    assert spec["clusterIP"] == "None" and spec["publishNotReadyAddresses"] is True
    assert spec["ports"][0]["port"] == RENDEZVOUS_PORT
    job = build_job(trace(resources=TWO_NODES), REF, placement_on(H100, 3, 8 * 2**30), SETTINGS)
    pod_labels = job["spec"]["template"]["metadata"]["labels"]
    assert spec["selector"].items() <= pod_labels.items()  # every attempt's pods, by trace label
    assert labels.ATTEMPT not in spec["selector"]


def test_network_policy_admits_only_the_traces_own_pods_to_the_rendezvous_port() -> None:
    from influence_trace_operator.rules.netpol import build_network_policy

    policy = build_network_policy(REF)
    own = {labels.TRACE: "demo", labels.MANAGED_BY: labels.MANAGER}
    assert policy["spec"]["podSelector"] == {"matchLabels": own}
    assert policy["spec"]["policyTypes"] == ["Ingress"]
    (rule,) = policy["spec"]["ingress"]
    assert rule == {"from": [{"podSelector": {"matchLabels": own}}],
                    "ports": [{"protocol": "TCP", "port": 29500}]}
    assert policy["metadata"]["ownerReferences"][0]["uid"] == REF.uid
