"""Jobs and Pods are filtered by the API server (a label selector on the watch and the initial list),
not by kopf after streaming every pod of the cluster; traces are not filtered at all."""

from __future__ import annotations

import importlib

import kopf
from influence_trace_operator.runtime.lifecycle import EventsOnlyDiffBase, filter_children


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


def test_only_event_handlers_so_kopfs_essence_of_an_object_is_never_read() -> None:
    """lifecycle.EventsOnlyDiffBase skips kopf's copy of every object; only on.create/on.update/
    on.field handlers, daemons and timers would read it, and the operator registers none."""
    importlib.import_module("influence_trace_operator.runtime.handlers")  # registers the decorators
    registry = kopf.get_default_registry()
    assert not registry._changing.get_all_handlers() and not registry._spawning.get_all_handlers()
    watching = {h.fn.__name__ for h in registry._watching.get_all_handlers()}
    assert {"trace_event", "job_event", "pod_event"} <= watching
    body = kopf.Body({"metadata": {"name": "x", "labels": {"a": "b"}}, "spec": {"rows": list(range(99))}})
    assert EventsOnlyDiffBase(prefix="influencetrace.dev").build(body=body) == {}
    assert kopf.AnnotationsDiffBaseStorage(prefix="influencetrace.dev").build(body=body) != {}
