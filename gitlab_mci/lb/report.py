"""Show a plan the way a person approves it (``+ ~ - -/+``), or as JSON for machines."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from gitlab_mci.lb.engine import Change

_SYMBOL = {"create": "+", "update": "~", "delete": "-", "replace": "-/+"}


def _short(value: Any) -> str:
    text = json.dumps(value, sort_keys=True) if not isinstance(value, str) else value
    text = text.replace("https://www.googleapis.com/compute/v1/", "")
    return text if len(text) <= 100 else text[:97] + "..."


def render(changes: Sequence[Change]) -> str:
    lines = []
    for c in changes:
        lines.append(f"{_SYMBOL[c.action]} {c.collection}/{c.name}")
        for field_name, (old, new) in sorted(c.fields.items()):
            lines.append(f"    {field_name}: {_short(old)} → {_short(new)}")
    lines.append(summary(changes))
    return "\n".join(lines)


def summary(changes: Sequence[Change]) -> str:
    if not changes:
        return "No changes. The load balancer matches the desired state."
    add = sum(c.action in ("create", "replace") for c in changes)
    change = sum(c.action == "update" for c in changes)
    destroy = sum(c.action in ("delete", "replace") for c in changes)
    return f"Plan: {add} to add, {change} to change, {destroy} to destroy."


def as_json(changes: Sequence[Change]) -> list[dict[str, Any]]:
    return [{"action": c.action, "collection": c.collection, "name": c.name,
             "fields": {k: {"old": o, "new": n} for k, (o, n) in c.fields.items()}} for c in changes]
