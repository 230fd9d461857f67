"""docs/reference.md is the generator's output, and it names every field of the schema."""

from __future__ import annotations

from influence_trace.api import crd, reference


def _paths(node: dict, path: str) -> list[str]:
    out = []
    for name, sub in (node.get("properties") or {}).items():
        out.append(f"{path}.{name}")
        out += _paths(sub, f"{path}.{name}")
        out += _paths(sub.get("items") or {}, f"{path}.{name}[]")
    return out


def test_committed_reference_is_fresh() -> None:
    committed = reference.REFERENCE_PATH.read_text()
    assert committed == reference.render(), f"docs/reference.md is stale: run `{reference.REGENERATE}`"


def test_every_field_has_a_row_with_its_default_and_bounds() -> None:
    text = reference.render()
    schema = crd.openapi_schema()["properties"]
    fields = _paths(schema["spec"], "spec") + _paths(schema["status"], "status")
    assert len(fields) > 60
    for field in fields:
        assert f"| `{field}` |" in text, field
    assert "| `spec.trace.factor` | integer | `32` | >= 1 |" in text
    assert "| `spec.model.path` | string | required | length >= 1, length <= 1024 |" in text
    assert "`spec.rollouts`: " in text  # the CEL rule "path or generate" is listed
