"""The options as one model: a mapping of ``--features-file`` keys to values, each remembering where it came from."""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gitlab_mci.errors import UserError

BACKEND_KEYS = ("securityPolicy", "edgeSecurityPolicy", "logging", "sessionAffinity", "connectionDraining",
                "customRequestHeaders", "customResponseHeaders", "backendProtocol", "localityLbPolicy",
                "outlierDetection", "cdn", "iap")
FRONTEND_KEYS = ("sslPolicy", "quicOverride", "certificateMap", "ipv6")


@functools.cache
def schema() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((Path(__file__).parent / "schema.json").read_text())
    return loaded


def validate(values: dict[str, Any], source: str) -> None:
    """One line naming the first key the schema refuses, and the source it came from."""
    import jsonschema

    _check_headers(values, source)
    errors = sorted(jsonschema.Draft202012Validator(schema()).iter_errors(values),
                    key=lambda e: [str(p) for p in e.absolute_path])
    if not errors:
        return
    error = errors[0]
    where = ".".join(str(p) for p in error.absolute_path)
    if error.validator == "additionalProperties":
        known = set(error.schema.get("properties") or {})
        extra = sorted(k for k in (error.instance or {}) if k not in known)
        key = ".".join([*(str(p) for p in error.absolute_path), extra[0]]) if extra else where
        raise UserError(f"{source}: unknown option {key!r} (docs/features.md lists them)")
    message = error.message if len(error.message) <= 120 else error.message[:117] + "..."
    raise UserError(f"{source}: {where or 'top level'}: {message}")


# Headers the load balancer may not set (Google's "Creating custom headers"): hop-by-hop and its own.
_FORBIDDEN = {"host", "authority", "x-user-ip", "connection", "keep-alive", "proxy-authenticate",
              "proxy-authorization", "te", "trailer", "transfer-encoding", "upgrade"}
_FORBIDDEN_PREFIXES = ("x-google", "x-goog-", "x-gfe", "x-amz-")


def _check_headers(values: dict[str, Any], source: str) -> None:
    for key in ("customRequestHeaders", "customResponseHeaders"):
        headers = (values.get(key) or {}).get("headers") if isinstance(values.get(key), dict) else None
        seen: set[str] = set()
        for header in headers if isinstance(headers, list) else []:
            name = str(header).split(":", 1)[0].strip().lower()
            if name in _FORBIDDEN or name.startswith(_FORBIDDEN_PREFIXES):
                raise UserError(f"{source}: {key}: the load balancer may not set header {name!r} (Google's custom "
                                "headers rules)")
            if name in seen:
                raise UserError(f"{source}: {key}: header {name!r} given twice")
            seen.add(name)


@dataclass
class Features:
    """The options in effect, and which source gave each (for errors that name both sides of a disagreement)."""

    values: dict[str, Any] = field(default_factory=dict)
    origin: dict[str, str] = field(default_factory=dict)

    def get(self, key: str) -> Any:
        return self.values.get(key)

    def __bool__(self) -> bool:
        return bool(self.values)

    def add(self, values: dict[str, Any], source: str) -> Features:
        """These values from ``source``, checked; the same key from two sources must agree."""
        validate(values, source)
        out = Features(dict(self.values), dict(self.origin))
        for key, value in values.items():
            if key in out.values and out.values[key] != value:
                raise UserError(f"{key}: {out.origin[key]} says {_short(out.values[key])} but {source} says "
                                f"{_short(value)}; give it in one place or make them agree")
            out.values.setdefault(key, value)
            out.origin.setdefault(key, source)
        return out

    def backend(self) -> Features:
        return Features({k: v for k, v in self.values.items() if k in BACKEND_KEYS},
                        {k: v for k, v in self.origin.items() if k in BACKEND_KEYS})

    def merged(self, other: Features) -> Features:
        out = self
        by_source: dict[str, dict[str, Any]] = {}
        for key, value in other.values.items():
            by_source.setdefault(other.origin[key], {})[key] = value
        for source, values in by_source.items():
            out = out.add(values, source)
        return out


def _short(value: Any) -> str:
    text = json.dumps(value, sort_keys=True)
    return text if len(text) <= 80 else text[:77] + "..."
