"""What a tenant may set: reserved label/annotation prefixes, name format and length, output under the
mounted volume. Pydantic here; the same manifests against the API server's CEL in
tests/cluster/test_operator_tenancy.py."""

from __future__ import annotations

import pytest
from influence_trace.api.spec import ManifestError, parse_manifest

from tests.api.invalid_manifests import pydantic_refusal, with_field
from tests.cluster.operator_fixtures import trace_manifest


@pytest.mark.parametrize("key", ["kubernetes.io/hostname", "batch.kubernetes.io/job-name",
                                 "node.k8s.io/x", "influencetrace.dev/trace", "a.influencetrace.dev/x"])
def test_reserved_label_keys_are_refused(key: str) -> None:
    message = pydantic_refusal(with_field(trace_manifest("t"), "spec.pod.labels", {key: "v"}))
    assert message is not None and "reserved prefixes" in message and "spec.pod" in message


@pytest.mark.parametrize("key", ["team", "example.com/owner", "influencetrace.dev/simulate",
                                 "influencetrace.dev/simulate-gpu-bytes", "notkubernetes.io/x"])
def test_other_keys_and_the_simulation_keys_are_allowed(key: str) -> None:
    assert pydantic_refusal(with_field(trace_manifest("t"), "spec.pod.annotations", {key: "v"})) is None


def test_at_most_32_pod_labels() -> None:
    labels = {f"k{i}": "v" for i in range(33)}
    message = pydantic_refusal(with_field(trace_manifest("t"), "spec.pod.labels", labels))
    assert message is not None and "spec.pod.labels" in message


@pytest.mark.parametrize("name", ["a" * 53, "1abc", "Upper", "under_score", "trailing-"])
def test_names_that_would_make_invalid_children_are_refused(name: str) -> None:
    message = pydantic_refusal(trace_manifest(name))
    assert message is not None and "metadata.name" in message


def test_a_52_character_name_is_accepted() -> None:
    assert pydantic_refusal(trace_manifest("a" * 52)) is None


def test_output_must_lie_under_the_mounted_volume() -> None:
    body = with_field(trace_manifest("t"), "spec.storage", {"volumeClaim": "data"})
    body["spec"]["output"] = {"path": "/tmp/out"}
    with pytest.raises(ManifestError, match=r"output\.path must lie under /workspace/"):
        parse_manifest(body)
    body["spec"]["output"] = {"path": "/workspace/out"}
    parse_manifest(body)
