"""Jobs and Pods are filtered by the API server (a label selector on the watch and the initial list),
not by kopf after streaming every pod of the cluster; traces are not filtered at all."""

from __future__ import annotations

import kopf
from influence_trace_operator.lifecycle import filter_children


def test_children_are_watched_by_the_operators_label_only() -> None:
    settings = kopf.OperatorSettings()
    filter_children(settings)
    selectors = settings.watching.label_selectors
    pods = kopf.Resource("", "v1", "pods", namespaced=True)
    jobs = kopf.Resource("batch", "v1", "jobs", namespaced=True)
    traces = kopf.Resource("influencetrace.dev", "v1alpha1", "influencetraces", namespaced=True)
    services = kopf.Resource("", "v1", "services", namespaced=True)
    wanted = ["app.kubernetes.io/managed-by=influencetrace-operator"]
    assert list(selectors.collect(pods)) == wanted and list(selectors.collect(jobs)) == wanted
    assert list(selectors.collect(traces)) == [] and list(selectors.collect(services)) == []
