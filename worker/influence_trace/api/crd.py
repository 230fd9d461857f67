"""The InfluenceTrace CustomResourceDefinition, generated from the pydantic models.

``spec.py`` and ``status.py`` are the only definitions of the API; this module turns their JSON
schemas into the structural OpenAPI v3 schema the API server needs (no ``$ref``, no ``anyOf`` with
null, every node typed), fills in what pydantic leaves out (defaults of factory fields), collects
what the models declare through ``rules.py`` (CEL rules, set lists, printer columns), and writes
``crds/influencetraces.yaml``.
A test regenerates it and fails when the committed file is stale, so the two never drift apart.
"""

from __future__ import annotations

import argparse
import copy
import sys
import typing
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel

from influence_trace.api.rules import COLUMN_KEY
from influence_trace.api.spec import (
    API_GROUP,
    API_VERSION,
    KIND,
    NAME_MAX,
    NAME_PATTERN,
    PLURAL,
    InfluenceTraceSpec,
)
from influence_trace.api.status import TraceStatus

SHORT_NAMES = ["itrace", "itraces"]
CRD_PATH = Path(__file__).resolve().parents[3] / "crds" / "influencetraces.yaml"
CHART_CRD_PATH = CRD_PATH.parents[1] / "charts" / "influence-trace-operator" / "crds" / "influencetraces.yaml"
REGENERATE = "influence-trace crd --write-all"  # the CRD, the chart's copy and docs/reference.md

# The one rule about the resource rather than the manifest (rules of the spec's own fields live on the
# pydantic models, see rules.py): the spec is immutable once the operator has acted on the trace. With
# the status subresource, a write to the main resource keeps the old status, so oldSelf.status is what
# the operator wrote, and a status write never changes the spec.
SPEC_IMMUTABLE = {
    "rule": "!has(oldSelf.status) || !has(oldSelf.status.phase) || self.spec == oldSelf.spec",
    "message": "spec is immutable once the operator has started the trace; "
    "delete and re-create the InfluenceTrace to change it",
    "fieldPath": ".spec",
    "reason": "FieldValueForbidden",
}
# The trace's name, refused by the API server when a derived child name would be invalid (spec.py).
NAME_VALID = {
    "rule": f"size(self.metadata.name) <= {NAME_MAX} && self.metadata.name.matches('{NAME_PATTERN}')",
    "message": f"metadata.name must be a DNS-1035 label (lower case letters, digits, '-', starting with "
    f"a letter) of at most {NAME_MAX} characters, so that the Job, Service and ConfigMap names derived "
    "from it stay valid",
    "reason": "FieldValueInvalid",
}
AGE_COLUMN = {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"}


def _models_by_name(root: type[BaseModel]) -> dict[str, type[BaseModel]]:
    """Every pydantic model reachable from root's fields, by class name (= the $defs key)."""
    found: dict[str, type[BaseModel]] = {}

    def visit(tp: Any) -> None:
        if isinstance(tp, type) and issubclass(tp, BaseModel):
            if tp.__name__ in found:
                return
            found[tp.__name__] = tp
            for info in tp.model_fields.values():
                visit(info.annotation)
        for arg in typing.get_args(tp):
            visit(arg)

    visit(root)
    return found


def _factory_defaults(model: type[BaseModel]) -> dict[str, Any]:
    """Defaults pydantic leaves out of its schema (default_factory), as the wire would carry them.

    Nested models default to ``{}`` so that the API server then fills in their own fields' defaults.
    """
    out: dict[str, Any] = {}
    for name, info in model.model_fields.items():
        if info.default_factory is None:
            continue
        value = info.default_factory()  # type: ignore[call-arg]
        out[info.alias or name] = {} if isinstance(value, BaseModel) else copy.deepcopy(value)
    return out


def _strip_null(node: dict[str, Any]) -> dict[str, Any]:
    """``anyOf: [X, null]`` (an Optional field) becomes X; absence is how the API says None."""
    options = node.get("anyOf")
    if not options:
        return node
    kept = [o for o in options if o.get("type") != "null"]
    if len(kept) != 1:
        raise ValueError(f"cannot express anyOf {options} structurally")
    merged = {k: v for k, v in node.items() if k != "anyOf"}
    merged.update(kept[0])
    if merged.get("default", 0) is None:
        del merged["default"]
    return merged


def _structural(node: dict[str, Any], defs: dict[str, Any]) -> dict[str, Any]:
    """One JSON-schema node as a structural OpenAPI v3 node (recursively)."""
    node = _strip_null(node)
    if "$ref" in node:
        target = defs[node["$ref"].rsplit("/", 1)[-1]]
        node = {**target, **{k: v for k, v in node.items() if k != "$ref"}}
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key in {"title", "$defs"}:
            continue
        if key == "additionalProperties":
            if isinstance(value, dict):  # a map; `false` is what pruning already does
                out[key] = _structural(value, defs)
        elif key == "properties":
            out[key] = {name: _structural(sub, defs) for name, sub in value.items()}
        elif key == "items":
            out[key] = _structural(value, defs)
        elif key == "const":
            out["enum"] = [value]
        elif key in {"exclusiveMinimum", "exclusiveMaximum"} and not isinstance(value, bool):
            out["minimum" if key == "exclusiveMinimum" else "maximum"] = value
            out[key] = True  # OpenAPI v3.0 spells an exclusive bound as a flag beside the bound
        else:
            out[key] = value
    if "enum" in out and "type" not in out:
        out["type"] = "string"
    return out


def _schema_of(model: type[BaseModel]) -> dict[str, Any]:
    """The structural schema of one pydantic model tree, factory defaults included."""
    schema = model.model_json_schema(by_alias=True, mode="validation")
    defs = schema.pop("$defs", {})
    models = _models_by_name(model)
    for name, node in [(model.__name__, schema), *defs.items()]:
        for alias, default in _factory_defaults(models[name]).items():
            node["properties"][alias]["default"] = default
    return _structural(schema, defs)


def _marked_schema() -> dict[str, Any]:
    """The openAPIV3Schema with the fields' printer-column marks still in it."""
    schema: dict[str, Any] = {
        "type": "object",
        "description": "A token-influence trace of an LLM's RL rollouts, run by the operator.",
        "required": ["spec"],
        "properties": {
            "apiVersion": {"type": "string"},
            "kind": {"type": "string"},
            "metadata": {"type": "object"},
            "spec": _schema_of(InfluenceTraceSpec),
            "status": _schema_of(TraceStatus),
        },
    }
    schema["x-kubernetes-validations"] = [dict(SPEC_IMMUTABLE), dict(NAME_VALID)]
    return schema


def openapi_schema() -> dict[str, Any]:
    """The openAPIV3Schema of the CRD's one version."""
    schema = _marked_schema()
    pop_printer_columns(schema)
    return schema


def printer_columns() -> list[dict[str, Any]]:
    """``kubectl get`` columns: the fields marked with rules.column, in their order, then Age."""
    return [*pop_printer_columns(_marked_schema()), AGE_COLUMN]


def pop_printer_columns(node: dict[str, Any]) -> list[dict[str, Any]]:
    """Remove the fields' column marks (rules.column) from the schema; return them as printer columns."""
    return [column for _, column in sorted(_marked_columns(node, ""), key=lambda oc: oc[0])]


def _marked_columns(node: dict[str, Any], path: str) -> list[tuple[float, dict[str, Any]]]:
    """(order, column) of every field marked at or below ``node`` (at ``path``), marks removed."""
    found: list[tuple[float, dict[str, Any]]] = []
    mark = node.pop(COLUMN_KEY, None)
    if mark is not None:
        kind = mark.get("type", node.get("type", "string"))
        column = {"name": mark["name"], "type": kind, "jsonPath": path}
        column.update({key: mark[key] for key in ("description", "priority") if key in mark})
        found.append((mark["order"], column))
    for name, sub in (node.get("properties") or {}).items():
        found.extend(_marked_columns(sub, f"{path}.{name}"))
    return found


def build_crd() -> dict[str, Any]:
    """The whole CustomResourceDefinition object."""
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{PLURAL}.{API_GROUP}"},
        "spec": {
            "group": API_GROUP,
            "scope": "Namespaced",
            "names": {
                "kind": KIND,
                "listKind": f"{KIND}List",
                "plural": PLURAL,
                "singular": KIND.lower(),
                "shortNames": SHORT_NAMES,
                "categories": ["all"],
            },
            "versions": [
                {
                    "name": API_VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": printer_columns(),
                    "schema": {"openAPIV3Schema": openapi_schema()},
                }
            ],
        },
    }


def render() -> str:
    """The YAML text of the CRD, as committed in crds/."""
    header = f"# Generated by `{REGENERATE}` from worker/influence_trace/api/spec.py and status.py.\n"
    header += "# Do not edit by hand: change the pydantic models and regenerate.\n"
    return header + yaml.safe_dump(build_crd(), sort_keys=False, width=100)


def emit(text: str, out: str | None) -> int:
    """Write a generated document to ``out``, or print it; the exit code of the commands that do."""
    if out:
        Path(out).write_text(text)
    else:
        sys.stdout.write(text)
    return 0


def main(args: argparse.Namespace) -> int:
    """``influence-trace crd [--out FILE]``: print or write the generated CRD."""
    return emit(render(), getattr(args, "out", None))
