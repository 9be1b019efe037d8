"""A small renderer of GitLab CI ``spec: inputs`` for the tests (GitLab does this on the server).

It reads the header document, checks the given inputs the way GitLab does (unknown input, missing value, type,
``options``, ``regex``), and interpolates ``$[[ inputs.name ]]`` in the body: a scalar that is exactly one
interpolation block becomes the typed value (an array stays an array), one inside a longer string is replaced by its
text. ``!reference`` tags are kept as :class:`Reference` values so the result can be dumped and validated.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

import yaml

_BLOCK = re.compile(r"\$\[\[\s*inputs\.([\w-]+)\s*\]\]")
_TYPES = {"string": str, "number": (int, float), "boolean": bool, "array": list}


class InputError(ValueError):
    """An input GitLab would refuse."""


@dataclass(frozen=True)
class Reference:
    path: list[str]


class _Loader(yaml.SafeLoader):
    pass


class _Dumper(yaml.SafeDumper):
    pass


_Loader.add_constructor("!reference", lambda loader, node: Reference(loader.construct_sequence(node)))
_Dumper.add_representer(Reference, lambda dumper, ref: dumper.represent_sequence("!reference", ref.path))


def split(text: str) -> tuple[dict[str, Any], str]:
    """The header's ``spec`` and the body's text of a ``spec:`` + ``---`` file."""
    head, sep, body = text.partition("\n---\n")
    if not sep:
        raise InputError("no `---` after the spec header")
    spec = yaml.load(head, Loader=_Loader)["spec"]
    return spec, body


def load(text: str) -> Any:
    return yaml.load(text, Loader=_Loader)


def dump(data: Any) -> str:
    return yaml.dump(data, Dumper=_Dumper, sort_keys=False, width=1000)


def resolve(spec: dict[str, Any], given: dict[str, Any]) -> dict[str, Any]:
    declared: dict[str, Any] = spec.get("inputs") or {}
    unknown = sorted(set(given) - set(declared))
    if unknown:
        raise InputError(f"unknown input(s): {', '.join(unknown)}")
    values: dict[str, Any] = {}
    for name, decl in declared.items():
        decl = decl or {}
        if name in given:
            value = given[name]
        elif "default" in decl:
            value = decl["default"]
        else:
            raise InputError(f"`{name}` input: required value has not been provided")
        kind = decl.get("type", "string")
        if not isinstance(value, _TYPES[kind]) or (kind == "number" and isinstance(value, bool)):
            raise InputError(f"`{name}` input: provided value is not a {kind}")
        if "options" in decl and value not in decl["options"]:
            raise InputError(f"`{name}` input: `{value}` cannot be used because it is not in the list of allowed options")
        if "regex" in decl and not re.search(decl["regex"], str(value)):
            raise InputError(f"`{name}` input: `{value}` does not match required regex: {decl['regex']}")
        values[name] = value
    return values


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return json.dumps(value)
    return str(value)


def _interpolate(node: Any, values: dict[str, Any]) -> Any:
    if isinstance(node, dict):
        return {_interpolate(k, values): _interpolate(v, values) for k, v in node.items()}
    if isinstance(node, list):
        return [_interpolate(v, values) for v in node]
    if isinstance(node, str):
        whole = _BLOCK.fullmatch(node.strip())
        if whole:
            return values[whole.group(1)]
        return _BLOCK.sub(lambda m: _text(values[m.group(1)]), node)
    return node


def render(text: str, inputs: dict[str, Any] | None = None) -> Any:
    """The body of a template with inputs, as GitLab would see it after interpolation."""
    spec, body = split(text)
    values = resolve(spec, inputs or {})
    data = load(body)
    used = set(_BLOCK.findall(body))
    missing = sorted(used - set(values))
    if missing:
        raise InputError(f"unknown interpolation key(s): {', '.join(missing)}")
    return _interpolate(data, values)


def expand_references(data: Any, node: Any = None) -> Any:
    """Replace ``!reference [job, key…]`` with what it points to, splicing lists into lists like GitLab.

    A reference to what another file defines (e.g. Auto DevOps' ``.production``) stays a :class:`Reference`.
    """
    if node is None:
        node = data
    if isinstance(node, Reference):
        target = data
        for part in node.path:
            if not isinstance(target, dict) or part not in target:
                return node
            target = target[part]
        return expand_references(data, target)
    if isinstance(node, dict):
        return {k: expand_references(data, v) for k, v in node.items()}
    if isinstance(node, list):
        out: list[Any] = []
        for item in node:
            value = expand_references(data, item)
            if isinstance(item, Reference) and isinstance(value, list):
                out.extend(value)
            else:
                out.append(value)
        return out
    return node
