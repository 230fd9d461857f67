"""Pure: the NetworkPolicy of a multi-node trace. Rank 0's rendezvous port (the TCP store that
``gather_object`` and the process group use) admits only the trace's own worker pods.

The store authenticates no one: any process that reaches the port can join the group or feed
``gather_object`` pickled objects. The policy selects the trace's pods by its trace label, so once
a pod is selected every other ingress to it is refused (worker pods serve nothing else).
"""

from __future__ import annotations

from typing import Any

from influence_trace_operator.rules import labels
from influence_trace_operator.rules.jobs import (
    RENDEZVOUS_PORT,
    TraceRef,
    child_labels,
    child_metadata,
    fit_name,
)


def network_policy_name(trace: str) -> str:
    return fit_name(trace, "-ranks")


def build_network_policy(ref: TraceRef) -> dict[str, Any]:
    own = {labels.TRACE: child_labels(ref)[labels.TRACE], labels.MANAGED_BY: labels.MANAGER}
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": child_metadata(ref, network_policy_name(ref.name)),
        "spec": {
            "podSelector": {"matchLabels": own},
            "policyTypes": ["Ingress"],
            "ingress": [{
                "from": [{"podSelector": {"matchLabels": own}}],
                "ports": [{"protocol": "TCP", "port": RENDEZVOUS_PORT}],
            }],
        },
    }
