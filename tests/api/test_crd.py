"""The committed CRD is the generator's output, and the generated schema is structural."""

from __future__ import annotations

from typing import Any

import yaml
from influence_trace.api import crd
from influence_trace.api.status import TraceStatus


def _walk(node: Any, path: str = ""):
    if isinstance(node, dict):
        yield path, node
        for key, value in node.items():
            yield from _walk(value, f"{path}.{key}")
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from _walk(value, f"{path}[{i}]")


def test_committed_crd_is_fresh() -> None:
    committed = crd.CRD_PATH.read_text()
    assert committed == crd.render(), f"crds/influencetraces.yaml is stale: run `{crd.REGENERATE}`"


def test_schema_is_structural() -> None:
    schema = crd.openapi_schema()
    for path, node in _walk(schema):
        assert "$ref" not in node and "anyOf" not in node and "$defs" not in node, path
        if "properties" in node or "additionalProperties" in node:
            assert node.get("type") == "object", path
        if "items" in node:
            assert node.get("type") == "array", path
        assert node.get("type") != "null" and node.get("default", 0) is not None, path
        assert node.get("additionalProperties") is not False, path


def test_bounds_enums_and_defaults() -> None:
    spec = crd.openapi_schema()["properties"]["spec"]["properties"]
    trace = spec["trace"]["properties"]
    assert trace["factor"] == {**trace["factor"], "minimum": 1, "default": 32, "type": "integer"}
    assert trace["scope"]["enum"] == ["per_prompt", "all_selected"]
    assert trace["modules"]["default"][0] == "self_attn.q_proj"
    assert spec["trace"]["default"] == {}
    top_p = spec["rollouts"]["properties"]["generate"]["properties"]["topP"]
    assert top_p["minimum"] == 0.0 and top_p["exclusiveMinimum"] is True and top_p["maximum"] == 1.0
    assert spec["resources"]["properties"]["maxAttempts"]["maximum"] == 20
    labels = spec["pod"]["properties"]["labels"]
    assert labels["additionalProperties"] == {"type": "string", "maxLength": 63}
    assert labels["maxProperties"] == 32
    assert trace["modules"]["x-kubernetes-list-type"] == "set"


def test_cel_rules() -> None:
    schema = crd.openapi_schema()
    root_rules = [r["rule"] for r in schema["x-kubernetes-validations"]]
    assert any("self.spec == oldSelf.spec" in r for r in root_rules)
    spec = schema["properties"]["spec"]["properties"]
    assert "has(self.generate)" in spec["rollouts"]["x-kubernetes-validations"][0]["rule"]
    assert "excludeSelfResponse" in spec["trace"]["x-kubernetes-validations"][0]["rule"]


def test_status_schema_allows_every_field_the_operator_writes() -> None:
    status = crd.openapi_schema()["properties"]["status"]["properties"]
    for field in TraceStatus.model_fields.values():
        assert field.alias in status
    attempt = status["attempts"]["items"]["properties"]
    for name in (
        "attempt",
        "pool",
        "job",
        "startedAt",
        "finishedAt",
        "outcome",
        "exitCode",
        "reason",
        "stage",
        "message",
        "peakGpuBytes",
        "evictions",
        "hostMemoryBytes",
    ):
        assert name in attempt
    assert set(status["result"]["properties"]) == {
        "rowsEmitted",
        "outputPath",
        "timings",
        "peakGpuBytes",
        "peakHostBytes",
        "metrics",
        "steps",
        "report",
    }
    assert status["result"]["properties"]["metrics"]["additionalProperties"]["type"] == "number"
    assert status["estimate"]["properties"]["gpu"]["type"] == "string"
    assert status["phase"]["enum"] == ["Pending", "Running", "Escalating", "Succeeded", "Failed"]


def test_names_columns_and_subresource() -> None:
    doc = yaml.safe_load(crd.render())
    assert doc["metadata"]["name"] == "influencetraces.influencetrace.dev"
    names = doc["spec"]["names"]
    assert names["kind"] == "InfluenceTrace" and names["plural"] == "influencetraces"
    assert "itrace" in names["shortNames"]
    version = doc["spec"]["versions"][0]
    assert version["name"] == "v1alpha1" and version["subresources"] == {"status": {}}
    columns = [c["name"] for c in version["additionalPrinterColumns"]]
    assert columns == ["Phase", "Reason", "Pool", "Factor", "Scope", "Attempt", "Est-GPU", "Rows", "Queue",
                       "Step", "Stage", "Progress", "Est-Time", "Message", "Age"]
    wide = [c["name"] for c in version["additionalPrinterColumns"] if c.get("priority")]
    assert wide == ["Message"]  # kubectl get -o wide only
