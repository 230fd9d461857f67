"""Cross-field rules are declared once (api/rules.py) and refuse the same manifests in pydantic as the
CEL in the CRD does on the API server (the cluster half is tests/cluster/test_operator_validation.py)."""

from __future__ import annotations

import re
from typing import Any

import pytest
from influence_trace.api import crd
from influence_trace.api.spec import PATH_OR_GENERATE, SELF_SCALE_NEEDS_EXCLUSION, RolloutsSpec

from tests.api.invalid_manifests import CASES, IDS, names_field, pydantic_refusal, with_field
from tests.cluster.operator_fixtures import trace_manifest


@pytest.mark.parametrize(("path", "value", "field"), CASES, ids=IDS)
def test_pydantic_refuses_and_names_the_field(path: str, value: Any, field: str) -> None:
    message = pydantic_refusal(with_field(trace_manifest("invalid"), path, value))
    assert message is not None, f"{path}={value!r} was accepted"
    assert names_field(message, field), message


def test_the_valid_base_is_accepted() -> None:
    assert pydantic_refusal(trace_manifest("valid")) is None


def test_each_rule_reaches_the_crd_once_with_the_pydantic_message() -> None:
    schema = crd.openapi_schema()
    spec = schema["properties"]["spec"]["properties"]
    assert spec["rollouts"]["x-kubernetes-validations"].count(PATH_OR_GENERATE.openapi()) == 1
    assert spec["trace"]["x-kubernetes-validations"] == [SELF_SCALE_NEEDS_EXCLUSION.openapi()]
    with pytest.raises(ValueError, match=re.escape(PATH_OR_GENERATE.message)):
        RolloutsSpec()


def test_printer_columns_come_from_the_models_in_order() -> None:
    columns = crd.build_crd()["spec"]["versions"][0]["additionalPrinterColumns"]
    assert [c["name"] for c in columns][:3] == ["Phase", "Reason", "Pool"] and columns[-1]["name"] == "Age"
    by_name = {c["name"]: c for c in columns}
    assert by_name["Factor"] == {"name": "Factor", "type": "integer", "jsonPath": ".spec.trace.factor"}
    assert by_name["Est-GPU"]["jsonPath"] == ".status.estimate.gpu"
    assert "x-printer-column" not in str(crd.openapi_schema())  # the marks never reach the API server
