"""One model for the routing a load balancer needs, from any Ingress shape users have.

Accepted: ``networking.k8s.io/v1`` Ingress, the older ``extensions/v1beta1`` and ``networking.k8s.io/v1beta1``
shapes, a ``MultiClusterIngress`` (``networking.gke.io/v1``, whose ``spec.template.spec`` is the old shape), or
plain flags (one Service and port). Unlike kubemci, a default backend is optional.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gitlab_mci.errors import UserError
from gitlab_mci.files import load_yaml, read_text

_OLD_SHAPES = {"extensions/v1beta1", "networking.k8s.io/v1beta1"}
_PATH_TYPES = {"Prefix", "Exact", "ImplementationSpecific"}


@dataclass(frozen=True)
class Backend:
    """A Service and its port (a number, or the port's name)."""

    service: str
    port: int | str

    def __str__(self) -> str:
        return f"{self.service}:{self.port}"


@dataclass(frozen=True)
class PathRule:
    path: str
    path_type: str
    backend: Backend


@dataclass(frozen=True)
class HostRule:
    host: str | None  # None: every host
    paths: tuple[PathRule, ...]


@dataclass(frozen=True)
class IngressModel:
    """Routing from an Ingress: default backend, host/path rules, TLS secrets, annotations."""

    name: str
    default_backend: Backend | None = None
    rules: tuple[HostRule, ...] = ()
    tls_secrets: tuple[str, ...] = ()
    annotations: dict[str, str] = field(default_factory=dict)

    def backends(self) -> list[Backend]:
        """Every backend referenced, default first, each once, in order of appearance."""
        seen: list[Backend] = []
        candidates = [self.default_backend] if self.default_backend else []
        candidates += [p.backend for r in self.rules for p in r.paths]
        for b in candidates:
            if b is not None and b not in seen:
                seen.append(b)
        return seen


def from_service(service: str, port: int | str, name: str | None = None) -> IngressModel:
    """The model for plain flags: everything goes to one Service."""
    if not service:
        raise UserError("--service: a Service name is required")
    return IngressModel(name=name or service, default_backend=Backend(service, port))


def from_inputs(ingress: str | Path | None, service: str | None, port: int | str, name: str) -> IngressModel:
    """The routing from the commands' flags: ``--ingress FILE`` or ``--service NAME --port P``, exactly one."""
    if ingress and service:
        raise UserError("give either --ingress or --service, not both")
    if ingress:
        return load_ingress(ingress)
    if service:
        number: int | str = int(port) if str(port).isdigit() else port
        return from_service(service, number, name)
    raise UserError("no routing: pass --ingress FILE or --service NAME (or set MCI_INGRESS_FILE / MCI_SERVICE)")


def load_ingress(source: str | Path) -> IngressModel:
    """Read an Ingress (or MultiClusterIngress) manifest file; errors name the file and the field."""
    return parse_ingress(read_text(source, "the Ingress file"), str(source))


def parse_ingress(text: str, where: str = "ingress") -> IngressModel:
    docs = load_yaml(text, where, all_documents=True)
    ingresses = [d for d in docs if isinstance(d, dict) and d.get("kind") in ("Ingress", "MultiClusterIngress")]
    if not ingresses:
        kinds = ", ".join(str(d.get("kind")) for d in docs if isinstance(d, dict)) or "nothing"
        raise UserError(f"{where}: no Ingress or MultiClusterIngress found (found {kinds})")
    if len(ingresses) > 1:
        raise UserError(f"{where}: {len(ingresses)} Ingress documents; give one load balancer's Ingress per file")
    return _model(ingresses[0], where)


def _need(cond: bool, where: str, message: str) -> None:
    if not cond:
        raise UserError(f"{where}: {message}")


def _model(doc: dict[str, Any], where: str) -> IngressModel:
    meta = doc.get("metadata") or {}
    name = meta.get("name")
    _need(isinstance(name, str) and bool(name), f"{where}: metadata.name", "is required")
    api = str(doc.get("apiVersion", ""))
    spec = doc.get("spec") or {}
    at = "spec"
    if doc["kind"] == "MultiClusterIngress":
        spec = ((spec.get("template") or {}).get("spec")) or {}
        at = "spec.template.spec"
        old = True
    else:
        _need(api in _OLD_SHAPES or api == "networking.k8s.io/v1", f"{where}: apiVersion",
              f"{api!r} is not an Ingress API version (networking.k8s.io/v1 or extensions/v1beta1)")
        old = api in _OLD_SHAPES
    default_raw = spec.get("defaultBackend") if not old else spec.get("backend")
    default = _backend(default_raw, f"{where}: {at}.{'backend' if old else 'defaultBackend'}", old) \
        if default_raw is not None else None
    rules = []
    for i, rule in enumerate(spec.get("rules") or []):
        rat = f"{where}: {at}.rules[{i}]"
        _need(isinstance(rule, dict), rat, "must be a mapping")
        host = rule.get("host")
        _need(host is None or (isinstance(host, str) and bool(host)), f"{rat}.host", "must be a host name")
        paths = []
        for j, p in enumerate((rule.get("http") or {}).get("paths") or []):
            pat = f"{rat}.http.paths[{j}]"
            value = p.get("path", "/")
            _need(isinstance(value, str) and value.startswith("/"), f"{pat}.path", f"{value!r} must start with /")
            ptype = p.get("pathType", "ImplementationSpecific")
            _need(ptype in _PATH_TYPES, f"{pat}.pathType", f"{ptype!r} is not Prefix, Exact or ImplementationSpecific")
            paths.append(PathRule(value, ptype, _backend(p.get("backend"), f"{pat}.backend", old)))
        _need(bool(paths), rat, "has no http.paths")
        rules.append(HostRule(host, tuple(paths)))
    _need(default is not None or bool(rules), f"{where}: {at}", "routes nowhere: give a default backend or rules")
    tls = tuple(str(t.get("secretName")) for t in spec.get("tls") or [] if isinstance(t, dict) and t.get("secretName"))
    annotations = {str(k): str(v) for k, v in (meta.get("annotations") or {}).items()}
    return IngressModel(str(name), default, tuple(rules), tls, annotations)


def _backend(raw: Any, where: str, old: bool) -> Backend:
    _need(isinstance(raw, dict), where, "must be a mapping naming a Service and a port")
    if old:
        service, port = raw.get("serviceName"), raw.get("servicePort")
        _need(isinstance(service, str) and bool(service), f"{where}.serviceName", "is required")
        _need(isinstance(port, int | str) and port != "", f"{where}.servicePort", "is required")
        return Backend(service, _port(port, f"{where}.servicePort"))
    svc = raw.get("service")
    _need(isinstance(svc, dict), f"{where}.service", "is required (resource backends are not supported)")
    service = svc.get("name")
    _need(isinstance(service, str) and bool(service), f"{where}.service.name", "is required")
    port = svc.get("port") or {}
    number, name = port.get("number"), port.get("name")
    _need((number is None) != (name is None), f"{where}.service.port", "needs exactly one of number and name")
    return Backend(service, _port(number if number is not None else name, f"{where}.service.port"))


def _port(value: Any, where: str) -> int | str:
    if isinstance(value, int) or (isinstance(value, str) and value.isdigit()):
        number = int(value)
        _need(1 <= number <= 65535, where, f"{number} is not a port (1-65535)")
        return number
    _need(isinstance(value, str) and bool(value), where, "must be a port number or name")
    return str(value)
