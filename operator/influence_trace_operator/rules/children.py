"""Pure: a trace's ConfigMap, Service and NetworkPolicy are its own, checked on a 409.

reconciler/children.py creates them and acts on these verdicts.

A child is created with a ``spec-hash`` annotation (a hash of its data or spec). When the name is
taken, the existing object is

- kept when this trace owns it (controller uid) and its hash is this content's;
- replaced (PUT) when this trace owns it with other content, or when a deleted trace of the same
  name owns it (a namesake the garbage collector has not removed yet): a re-created trace must never
  run the old manifest;
- never touched when anything else owns it (or nothing does): the trace fails with ChildConflict.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any, Literal

from influence_trace.api.spec import KIND

from influence_trace_operator.rules import labels
from influence_trace_operator.rules.jobs import TraceRef

SPEC_HASH = labels.PREFIX + "spec-hash"
Verdict = Literal["ours", "namesake", "foreign"]


class ChildConflict(Exception):
    """A Job, ConfigMap or Service of the trace's name belongs to something else: never adopted."""


def content_hash(body: dict[str, Any]) -> str:
    """A hash of what the child carries: a ConfigMap's data, a Service's spec."""
    content = body.get("data") if body.get("kind") == "ConfigMap" else body.get("spec")
    return hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest()[:16]


def stamped(body: dict[str, Any]) -> dict[str, Any]:
    """The body with its spec-hash annotation."""
    meta = body["metadata"]
    return {**body, "metadata": {**meta, "annotations": {**meta.get("annotations", {}),
                                                         SPEC_HASH: content_hash(body)}}}


def owner_verdict(obj: dict[str, Any], ref: TraceRef) -> Verdict:
    """Whose child an existing object is: this trace's, a deleted namesake's, or someone else's."""
    owners = (obj.get("metadata") or {}).get("ownerReferences") or []
    if any(o.get("uid") == ref.uid for o in owners):
        return "ours"
    if any(o.get("kind") == KIND and o.get("name") == ref.name for o in owners):
        return "namesake"
    return "foreign"


def describe_owners(obj: dict[str, Any]) -> str:
    owners = (obj.get("metadata") or {}).get("ownerReferences") or []
    return ", ".join(f"{o.get('kind')}/{o.get('name')}" for o in owners) or "no owner"


def conflict(obj: dict[str, Any], kind: str) -> ChildConflict:
    name = (obj.get("metadata") or {}).get("name")
    return ChildConflict(
        f"{kind} {name} already exists and is not this trace's ({describe_owners(obj)}); the operator "
        "never adopts or overwrites it: delete or rename it, then re-create the trace"
    )
