"""Invalid manifests are refused by the API server itself, with a message that names the field, and by
pydantic alike (the cases are shared with tests/api/test_rules.py)."""

from __future__ import annotations

from typing import Any

import pytest

from tests.api.invalid_manifests import CASES, IDS, names_field, pydantic_refusal, with_field
from tests.cluster import kube
from tests.cluster.operator_fixtures import trace_manifest


@pytest.mark.parametrize(("path", "value", "field"), CASES, ids=IDS)
def test_api_server_and_pydantic_refuse_alike(crd: None, namespace: str, path: str, value: Any,
                                              field: str) -> None:
    body = with_field(trace_manifest("invalid"), path, value)
    proc = kube.kubectl("create", "-f", "-", input=kube._to_yaml(body), namespace=namespace, check=False)
    assert proc.returncode != 0, f"{path}={value!r} was accepted by the API server"
    assert field in proc.stderr, proc.stderr
    assert kube.get("influencetrace", "invalid", namespace) is None
    refusal = pydantic_refusal(body)
    assert refusal is not None and names_field(refusal, field), refusal


def test_valid_manifest_is_accepted_with_defaults(crd: None, namespace: str) -> None:
    kube.create(trace_manifest("valid"), namespace)
    obj = kube.get("influencetrace", "valid", namespace)
    assert obj["spec"]["trace"]["factor"] == 32 and obj["spec"]["resources"]["gpus"] == 1
    assert "maxAttempts" not in obj["spec"]["resources"]  # unset: the operator's default applies
    assert obj["spec"]["trace"]["modules"][0] == "self_attn.q_proj"
    assert pydantic_refusal(trace_manifest("valid")) is None
