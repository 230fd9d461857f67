"""Cross-field rules and printer columns, declared once on the pydantic models.

A ``Rule`` holds the CEL expression the API server evaluates and the Python predicate pydantic
evaluates, with one message: ``kubectl apply`` and ``influence-trace run`` refuse the same manifests
with the same words (tests/cluster/test_operator_validation.py runs every case through both).
``column`` marks a field as a ``kubectl get`` printer column. ``crd.py`` only collects what the models
carry (``x-kubernetes-validations`` and ``x-printer-column`` in their JSON schemas).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

COLUMN_KEY = "x-printer-column"
SET: dict[str, Any] = {"x-kubernetes-list-type": "set"}  # items must not repeat (checked by the API server)


@dataclass(frozen=True)
class Rule:
    """One cross-field rule: CEL for the API server, ``holds`` for pydantic, one message for both."""

    cel: str
    holds: Callable[[Any], bool]
    message: str
    reason: str = "FieldValueInvalid"
    field_path: str | None = None

    def openapi(self) -> dict[str, str]:
        out = {"rule": self.cel, "message": self.message}
        if self.field_path:
            out["fieldPath"] = self.field_path
        out["reason"] = self.reason
        return out


def check_rules(model: Any, rules: tuple[Rule, ...]) -> None:
    """Raise the first broken rule's message (pydantic turns it into a located validation error)."""
    for rule in rules:
        if not rule.holds(model):
            raise ValueError(rule.message)


def validations(*rules: Rule) -> dict[str, Any]:
    """A model's ``json_schema_extra`` carrying its rules as ``x-kubernetes-validations``."""
    return {"x-kubernetes-validations": [r.openapi() for r in rules]}


def column(name: str, order: float, description: str | None = None, kind: str | None = None,
           priority: int = 0) -> dict[str, Any]:
    """A field's ``json_schema_extra`` making it the ``order``-th printer column, called ``name``.

    ``kind`` overrides the column type taken from the field's schema (e.g. ``date``); ``priority`` 1
    shows the column only in ``kubectl get -o wide``."""
    spec: dict[str, Any] = {"name": name, "order": order}
    if description:
        spec["description"] = description
    if priority:
        spec["priority"] = priority
    if kind:
        spec["type"] = kind
    return {COLUMN_KEY: spec}
