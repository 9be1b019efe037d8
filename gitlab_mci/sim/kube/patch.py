"""Patch semantics and selectors of the Kubernetes API: merge, strategic merge, JSON patch; label/field selectors."""

from __future__ import annotations

import copy
import re
from typing import Any

import jsonpatch

# Strategic-merge keys of the lists in the kinds we serve (from the API types' `patchMergeKey` tags).
# A list not named here is replaced whole, as for a list without a merge key.
_MERGE_KEYS = {
    "containers": "name",
    "initContainers": "name",
    "ephemeralContainers": "name",
    "env": "name",
    "volumes": "name",
    "volumeMounts": "mountPath",
    "imagePullSecrets": "name",
    "conditions": "type",
    "tolerations": None,
    "hostAliases": "ip",
    "ownerReferences": "uid",
}
# Lists of scalars that strategic merge treats as sets (patchStrategy: merge).
_MERGED_SCALAR_LISTS = {"finalizers"}


class PatchError(ValueError):
    """A patch that cannot be applied (the API server answers 422 or 400)."""


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = copy.deepcopy(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def json_patch(target: Any, ops: Any) -> Any:
    """RFC 6902 JSON patch."""
    if not isinstance(ops, list):
        raise PatchError("json patch must be a list of operations")
    try:
        return jsonpatch.apply_patch(target, ops)
    except (jsonpatch.JsonPatchException, jsonpatch.JsonPointerException) as exc:
        raise PatchError(str(exc)) from None


def _list_key(field: str, items: list[Any]) -> str | None:
    # Container ports merge by containerPort, Service ports by port: the same field name, two keys.
    if field == "ports":
        return "containerPort" if any(isinstance(i, dict) and "containerPort" in i for i in items) else "port"
    return _MERGE_KEYS.get(field)


def strategic_merge(target: Any, patch: Any) -> Any:
    """Strategic merge patch as kubectl and the kubernetes client send it, for the lists we know."""
    if not isinstance(patch, dict) or not isinstance(target, dict):
        return copy.deepcopy(patch)
    directive = patch.get("$patch")
    if directive == "replace":
        return {k: copy.deepcopy(v) for k, v in patch.items() if k != "$patch"}
    if directive == "delete":
        return None
    result = copy.deepcopy(target)
    retain = patch.get("$retainKeys")
    for key, value in patch.items():
        if key in ("$patch", "$retainKeys") or key.startswith("$setElementOrder/"):
            continue
        if key.startswith("$deleteFromPrimitiveList/"):
            field = key.split("/", 1)[1]
            result[field] = [v for v in result.get(field, []) if v not in value]
            continue
        if value is None:
            result.pop(key, None)
        elif isinstance(value, dict):
            merged = strategic_merge(result.get(key) if isinstance(result.get(key), dict) else {}, value)
            if merged is None:
                result.pop(key, None)
            else:
                result[key] = merged
        elif isinstance(value, list):
            result[key] = _merge_list(key, result.get(key), value)
        else:
            result[key] = value
    if isinstance(retain, list):
        result = {k: v for k, v in result.items() if k in retain}
    return result


def _merge_list(field: str, current: Any, patch: list[Any]) -> list[Any]:
    current = current if isinstance(current, list) else []
    if field in _MERGED_SCALAR_LISTS:
        return [*current, *(v for v in patch if v not in current)]
    key = _list_key(field, current + patch)
    if key is None or not all(isinstance(i, dict) for i in patch):
        items: list[Any] = copy.deepcopy(patch)
        return [i for i in items if not (isinstance(i, dict) and i.get("$patch") == "delete")]
    if any(i.get("$patch") == "replace" for i in patch):
        return [copy.deepcopy(i) for i in patch if i.get("$patch") != "replace"]
    result: list[Any] = copy.deepcopy(current)
    for item in patch:
        if key not in item:
            raise PatchError(f"map: {item} does not contain declared merge key: {key}")
        idx = next((n for n, c in enumerate(result) if isinstance(c, dict) and c.get(key) == item[key]), None)
        if item.get("$patch") == "delete":
            if idx is not None:
                result.pop(idx)
        elif idx is None:
            result.append({k: v for k, v in item.items() if k != "$patch"})
        else:
            result[idx] = strategic_merge(result[idx], item)
    return result


# --- selectors ---------------------------------------------------------------------------------------------------

_REQ = re.compile(
    r"^\s*(?P<neg>!)?\s*(?P<key>[A-Za-z0-9._/-]+)\s*"
    r"(?:(?P<op>==|=|!=)\s*(?P<val>[A-Za-z0-9._-]*)|\s+(?P<setop>in|notin)\s*\((?P<set>[^)]*)\))?\s*$"
)


def _split_requirements(selector: str) -> list[str]:
    parts, depth, cur = [], 0, ""
    for ch in selector:
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        if ch == "," and depth == 0:
            parts.append(cur)
            cur = ""
        else:
            cur += ch
    if cur.strip():
        parts.append(cur)
    return parts


def parse_label_selector(selector: str | None) -> list[tuple[str, str, set[str]]]:
    """Parse a label selector into (key, op, values); raises ValueError on bad syntax."""
    reqs: list[tuple[str, str, set[str]]] = []
    for part in _split_requirements(selector or ""):
        m = _REQ.match(part)
        if not m:
            raise ValueError(f"unable to parse requirement: {part.strip()!r}")
        key = m.group("key")
        if m.group("neg"):
            if m.group("op") or m.group("setop"):
                raise ValueError(f"unable to parse requirement: {part.strip()!r}")
            reqs.append((key, "!exists", set()))
        elif m.group("op"):
            reqs.append((key, "!=" if m.group("op") == "!=" else "=", {m.group("val")}))
        elif m.group("setop"):
            values = {v.strip() for v in m.group("set").split(",") if v.strip()}
            reqs.append((key, m.group("setop"), values))
        else:
            reqs.append((key, "exists", set()))
    return reqs


def labels_match(labels: dict[str, str] | None, reqs: list[tuple[str, str, set[str]]]) -> bool:
    labels = labels or {}
    for key, op, values in reqs:
        present = key in labels
        if op == "exists" and not present:
            return False
        if op == "!exists" and present:
            return False
        if op in ("=", "in") and labels.get(key) not in values:
            return False
        if op in ("!=", "notin") and present and labels[key] in values:
            return False
    return True


def parse_field_selector(selector: str | None) -> list[tuple[str, bool, str]]:
    """``metadata.name=x,metadata.namespace!=y`` → (path, equal, value)."""
    out = []
    for part in (selector or "").split(","):
        if not part.strip():
            continue
        m = re.match(r"^\s*([A-Za-z.]+)\s*(==|=|!=)\s*(.*?)\s*$", part)
        if not m:
            raise ValueError(f"invalid field selector: {part!r}")
        out.append((m.group(1), m.group(2) != "!=", m.group(3)))
    return out


def fields_match(obj: dict[str, Any], reqs: list[tuple[str, bool, str]]) -> bool:
    for path, equal, value in reqs:
        cur: Any = obj
        for part in path.split("."):
            cur = cur.get(part) if isinstance(cur, dict) else None
        if ((str(cur) if cur is not None else "") == value) != equal:
            return False
    return True
