"""Google's Compute Engine discovery document: request routing and validation for the emulator.

The document ships in google-api-python-client; it names every method's path, parameters and body schema, so the
emulator rejects exactly what the real API would reject as malformed, without a hand-written list of fields.
"""

from __future__ import annotations

import functools
import importlib.util
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gitlab_mci.errors import UserError

PREFIX = "/compute/v1/"
_GLOBAL_PARAMS = {"$.xgafv", "access_token", "alt", "callback", "fields", "key", "oauth_token", "prettyPrint",
                  "quotaUser", "uploadType", "upload_protocol", "userIp",
                  # gcloud 528 sends it on list calls; earlier revisions of the document defined it and the live
                  # API still accepts it.
                  "returnPartialSuccess"}


# Methods sent with POST that read: their names do not start with get or list.
_READ_METHODS = frozenset({"aggregatedList", "wait", "testIamPermissions", "validate", "preview", "calendarMode"})


@dataclass(frozen=True)
class Method:
    """One discovery method: ``compute.<resource>.<name>``."""

    resource: str
    name: str
    http_method: str
    path: str
    pattern: re.Pattern[str]
    parameters: dict[str, Any]
    request: str | None
    response: str | None

    @property
    def id(self) -> str:
        return f"compute.{self.resource}.{self.name}"

    @property
    def mutates(self) -> bool:
        """Whether the method changes state (insert, delete, patch, set*, add*, remove*, attach…) or only reads
        (get*, list*, aggregatedList, operations' wait, testIamPermissions…), whatever its HTTP verb."""
        if self.http_method == "GET":
            return False
        return not (self.name.startswith(("get", "list")) or self.name in _READ_METHODS)


class ValidationError(ValueError):
    """A request the real API answers with HTTP 400."""

    def __init__(self, message: str, reason: str = "invalid") -> None:
        super().__init__(message)
        self.reason = reason


def _document_path() -> Path:
    spec = importlib.util.find_spec("googleapiclient")
    if spec is None or spec.origin is None:
        raise UserError("the simulator needs google-api-python-client (install gitlab-mci[sim])")
    return Path(spec.origin).parent / "discovery_cache" / "documents" / "compute.v1.json"


@functools.cache
def document() -> dict[str, Any]:
    """The parsed discovery document, loaded once per process."""
    doc: dict[str, Any] = json.loads(_document_path().read_text())
    return doc


@functools.cache
def methods() -> tuple[Method, ...]:
    out = []
    for resource, body in document()["resources"].items():
        for name, m in body.get("methods", {}).items():
            regex = re.sub(r"\{(\w+)\}", r"(?P<\1>[^/]+)", m["path"])
            out.append(Method(resource, name, m["httpMethod"], m["path"], re.compile(f"^{regex}$"),
                              m.get("parameters", {}), (m.get("request") or {}).get("$ref"),
                              (m.get("response") or {}).get("$ref")))
    # Literal segments first, so `.../instanceGroups/{g}/listInstances` wins over a pattern with a variable there.
    out.sort(key=lambda m: (m.path.count("{"), -len(m.path)))
    return tuple(out)


def route(http_method: str, path: str) -> tuple[Method, dict[str, str]] | None:
    """The discovery method for a request path (without the ``/compute/v1/`` prefix)."""
    for m in methods():
        if m.http_method == http_method:
            match = m.pattern.match(path)
            if match:
                return m, match.groupdict()
    return None


def path_exists(path: str) -> bool:
    return any(m.pattern.match(path) for m in methods())


def schema(name: str) -> dict[str, Any]:
    found: dict[str, Any] = document()["schemas"][name]
    return found


def _snake(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


def check_query(method: Method, query: dict[str, list[str]]) -> None:
    """Unknown query parameters and values of the wrong type are a 400, as on the real API."""
    for key, values in query.items():
        param = method.parameters.get(key)
        if param is None:
            if key in _GLOBAL_PARAMS:
                continue
            raise ValidationError(f'Invalid JSON payload received. Unknown name "{key}": Cannot bind query '
                                  "parameter. Field '" + key + "' could not be found in request message.")
        for value in values:
            ptype = param.get("type")
            if ptype == "integer" and not re.fullmatch(r"-?\d+", value):
                raise ValidationError(f"Invalid value at '{_snake(key)}' (TYPE_UINT32), \"{value}\"")
            if ptype == "boolean" and value.lower() not in ("true", "false", "1", "0"):
                raise ValidationError(f"Invalid value at '{_snake(key)}' (TYPE_BOOL), \"{value}\"")
            if "enum" in param and value not in param["enum"]:
                raise ValidationError(f"Invalid value at '{_snake(key)}', \"{value}\"")


def check_body(schema_name: str, body: Any) -> None:
    """Validate a request body against a discovery schema, recursively (unknown field, type, enum)."""
    if not isinstance(body, dict):
        raise ValidationError(f"Invalid JSON payload received. Expected an object for '{_snake(schema_name)}'.")
    _check(schema(schema_name), body, _snake(schema_name), schema_name)


def _check(sch: dict[str, Any], value: Any, where: str, type_name: str) -> None:
    if "$ref" in sch:
        ref = sch["$ref"]
        _check(schema(ref), value, where, ref)
        return
    stype = sch.get("type")
    if value is None:
        return  # proto3 JSON: null is accepted for every field and means the default (gcloud sends some)
    if stype == "object":
        if not isinstance(value, dict):
            raise ValidationError(f"Invalid value at '{where}' (type.googleapis.com/google.cloud.compute.v1."
                                  f"{type_name}), {json.dumps(value)}")
        props = sch.get("properties")
        extra = sch.get("additionalProperties")
        for key, item in value.items():
            if props is not None and key in props:
                _check(props[key], item, f"{where}.{_snake(key)}", type_name)
            elif extra is not None:
                _check(extra, item, f"{where}[{key}]", type_name)
            else:
                raise ValidationError(f'Invalid JSON payload received. Unknown name "{key}" at \'{where}\': '
                                      "Cannot find field.")
        return
    if value is None:
        return
    if stype == "array":
        if not isinstance(value, list):
            raise ValidationError(f"Invalid value at '{where}' (TYPE_MESSAGE), {json.dumps(value)}")
        for i, item in enumerate(value):
            _check(sch.get("items", {}), item, f"{where}[{i}]", type_name)
        return
    if stype == "string":
        fmt = sch.get("format")
        if fmt in ("int64", "uint64"):
            if isinstance(value, bool) or not (isinstance(value, int) or
                                               (isinstance(value, str) and re.fullmatch(r"-?\d+", value))):
                raise ValidationError(f"Invalid value at '{where}' (TYPE_{fmt.upper()}), {json.dumps(value)}")
            return
        if not isinstance(value, str):
            raise ValidationError(f"Invalid value at '{where}' (TYPE_STRING), {json.dumps(value)}")
        if "enum" in sch and value not in sch["enum"]:
            raise ValidationError(f"Invalid value at '{where}' (type.googleapis.com/google.cloud.compute.v1."
                                  f"{type_name}), \"{value}\"")
        return
    if stype == "integer":
        if isinstance(value, bool) or not (isinstance(value, int) or
                                           (isinstance(value, str) and re.fullmatch(r"-?\d+", value))):
            raise ValidationError(f"Invalid value at '{where}' (TYPE_INT32), {json.dumps(value)}")
        return
    if stype == "number":
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ValidationError(f"Invalid value at '{where}' (TYPE_DOUBLE), {json.dumps(value)}")
        return
    if stype == "boolean" and not isinstance(value, bool):
        raise ValidationError(f"Invalid value at '{where}' (TYPE_BOOL), {json.dumps(value)}")


def kind_default(schema_name: str) -> str | None:
    default: str | None = schema(schema_name).get("properties", {}).get("kind", {}).get("default")
    return default


def has_property(schema_name: str, prop: str) -> bool:
    return prop in schema(schema_name).get("properties", {})
