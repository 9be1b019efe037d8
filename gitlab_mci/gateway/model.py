"""What the user asked for, checked offline, and the model the manifests are made from.

Inputs are hosted mode's (``--lb``, ``--context``, ``--config-context``, ``--ingress`` or ``--service``/``--port``,
``--namespace``, ``--static-ip``, ``--ssl-certificate``, ``--https-redirect``) plus ``--gateway-class`` and
``--httproute-file`` (the user's own HTTPRoute rules: path and header matches, filters). Everything here is pure.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

from gitlab_mci.errors import UserError
from gitlab_mci.hosted.model import Inputs as HostedInputs

Obj = dict[str, Any]
RESERVED_PREFIXES = ("gkemcg", "gkegw", "mci-")  # GKE's controllers own these names (Compute, derived Services)
DEFAULT_CLASS = "gke-l7-global-external-managed-mc"
MANAGED_BY = "app.kubernetes.io/managed-by"
LB_LABEL = "gitlab-mci/lb"
CLUSTER_LABEL = "gitlab-mci/cluster"
CLUSTERS_ANNOTATION = "gitlab-mci/clusters"  # on the HTTPRoutes: {cluster: context}, what weight/drain accept
DRAINED_ANNOTATION = "gitlab-mci/drained"  # {cluster: weight before the drain}, what undrain restores
FIELD_MANAGER = "gitlab-mci"
PRE_SHARED_CERTS = "networking.gke.io/pre-shared-certs"
GATEWAY_API = "gateway.networking.k8s.io/v1"
MCS_API = "net.gke.io/v1"
MAX_WEIGHT = 1000
_DNS1035 = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
_SCHEMAS = Path(__file__).parent / "schemas"


@dataclass
class Inputs(HostedInputs):
    """Everything the user gave, as given: hosted mode's inputs, and what only the Gateway takes."""

    gateway_class: str = DEFAULT_CLASS
    httproute_file: Path | None = None
    timeout_sec: int | None = None  # GCPBackendPolicy timeoutSec (GKE's 30 s: no policy)


@dataclass(frozen=True)
class AppService:
    """A backend Service as found in every serving cluster: its pod selector and ports."""

    name: str
    selector: dict[str, str]
    ports: tuple[Obj, ...]  # name, port, targetPort, protocol

    def port_number(self, port: int | str) -> int | None:
        for p in self.ports:
            if str(p["port"]) == str(port) or (p.get("name") and p["name"] == port):
                return int(p["port"])
        return None


@dataclass(frozen=True)
class Serving:
    """One serving cluster: its kubeconfig context, GKE cluster name (fleet link's name) and weight."""

    context: str
    cluster: str
    weight: int = 1


@dataclass
class GatewayModel:
    """The checked model the manifests are rendered from."""

    lb: str
    namespace: str
    gateway_class: str
    clusters: list[Serving]
    services: dict[str, AppService]  # app Service name -> shape
    rules: list[Obj]  # HTTPRoute rules; backendRefs to app Services are {"service": NAME, "port": N, "weight": W}
    hostnames: list[str] = field(default_factory=list)
    static_ip: str | None = None
    pre_shared_certs: tuple[str, ...] = ()
    https_redirect: bool = False
    drained: dict[str, int] = field(default_factory=dict)
    health_check_path: str | None = None
    backend_policy: Obj = field(default_factory=dict)  # GCPBackendPolicy spec.default per export (empty: none)
    gateway_policy: Obj = field(default_factory=dict)  # GCPGatewayPolicy spec.default (empty: none)

    @property
    def labels(self) -> dict[str, str]:
        return {MANAGED_BY: "gitlab-mci", LB_LABEL: self.lb}


def export_name(service: str, cluster: str) -> str:
    """The per-cluster Service and ServiceExport name: ``<service>-<cluster>`` (GKE's way to weight clusters)."""
    return f"{service}-{cluster}"


def check_name(name: str, what: str) -> str:
    """A name gitlab-mci gives an object: a DNS label GKE's controllers do not reserve."""
    if not _DNS1035.match(name) or len(name) > 63:
        raise UserError(f"{what} {name!r} must be lowercase letters, digits and hyphens, start with a letter and "
                        "be at most 63 characters")
    for prefix in RESERVED_PREFIXES:
        if name.startswith(prefix):
            raise UserError(f"{what} {name!r} starts with {prefix!r}, which GKE's controllers reserve for what they "
                            "derive (gkemcg1-… Compute resources and Services, mci-… for Multi Cluster Ingress); "
                            "rename it")
    return name


def parse_weights(values: Sequence[str]) -> dict[str, int]:
    """``CLUSTER=WEIGHT`` pairs (repeated or comma-separated); weights are integers 0..1000."""
    out: dict[str, int] = {}
    for raw in values:
        for item in str(raw).split(","):
            if not item.strip():
                continue
            key, sep, value = item.strip().partition("=")
            if not sep or not key or not value.strip().isdigit():
                raise UserError(f"weight {item.strip()!r} is not CLUSTER=WEIGHT with WEIGHT a whole number 0..1000")
            weight = int(value)
            if weight > MAX_WEIGHT:
                raise UserError(f"weight {item.strip()!r}: at most {MAX_WEIGHT}")
            out[key.strip()] = weight
    if not out:
        raise UserError("no weights: give CLUSTER=WEIGHT for at least one cluster (e.g. prod1=9 prod2=1)")
    return out


def check_weights(weights: dict[str, int]) -> None:
    if sum(weights.values()) == 0:
        raise UserError(f"weights {', '.join(f'{k}={v}' for k, v in weights.items())} sum to 0: every request "
                        "would fail; keep at least one cluster above 0")


@cache
def schema(kind: str) -> Obj:
    loaded: Obj = json.loads((_SCHEMAS / f"{kind.lower()}.json").read_text())
    return loaded


def validate(obj: Obj, where: str) -> None:
    """A Gateway or HTTPRoute against the Gateway API schema kept in ``schemas/``; the first problem as a UserError."""
    import jsonschema

    validator = jsonschema.Draft202012Validator(schema(str(obj.get("kind"))))
    errors = sorted(validator.iter_errors(obj), key=lambda e: list(e.absolute_path))
    if errors:
        err = errors[0]
        path = ".".join(str(p) for p in err.absolute_path) or "(top)"
        raise UserError(f"{where}: {obj.get('kind')} {path}: {err.message} (Gateway API {GATEWAY_API} schema)")


def rules_from_ingress(routing: Any) -> tuple[list[str], list[Obj]]:
    """An Ingress (or --service/--port) as HTTPRoute hostnames and rules. Hosts go to ``hostnames`` when every rule
    names the same one; several hosts in one Ingress need one HTTPRoute each, which gitlab-mci does not render."""
    hosts = sorted({r.host for r in routing.rules if r.host})
    if len(hosts) > 1:
        raise UserError(f"the Ingress has rules for several hosts ({', '.join(hosts)}): gateway mode renders one "
                        "HTTPRoute; give the routing with --httproute-file, or use hosted or lb mode")
    rules: list[Obj] = []
    for host_rule in routing.rules:
        for p in host_rule.paths:
            kind = "Exact" if p.path_type == "Exact" else "PathPrefix"
            value = p.path.rstrip("*") or "/"
            if value != "/" and kind == "PathPrefix":
                value = value.rstrip("/") or "/"
            rules.append({"matches": [{"path": {"type": kind, "value": value}}],
                          "backendRefs": [{"service": p.backend.service, "port": p.backend.port, "weight": 1}]})
    if routing.default_backend is not None:
        b = routing.default_backend
        rules.append({"backendRefs": [{"service": b.service, "port": b.port, "weight": 1}]})
    return hosts, rules


def rules_from_httproute(path: Path) -> tuple[list[str], list[Obj]]:
    """The user's own HTTPRoute: its hostnames and rules; backendRefs to Services become per-cluster refs."""
    import yaml

    try:
        doc = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise UserError(f"--httproute-file {path}: cannot read it: {exc}") from None
    if not isinstance(doc, dict) or doc.get("kind") != "HTTPRoute":
        raise UserError(f"--httproute-file {path}: not an HTTPRoute manifest (kind: HTTPRoute)")
    doc.setdefault("metadata", {}).setdefault("name", "route")
    validate(doc, f"--httproute-file {path}")
    rules = []
    for rule in (doc.get("spec") or {}).get("rules") or []:
        refs = []
        for ref in rule.get("backendRefs") or []:
            if ref.get("kind", "Service") == "Service" and ref.get("group", "") == "":
                if ref.get("port") is None:
                    raise UserError(f"--httproute-file {path}: backendRef Service {ref['name']} needs a port")
                refs.append({"service": ref["name"], "port": ref["port"], "weight": int(ref.get("weight", 1))})
            else:
                refs.append(dict(ref))  # e.g. a ServiceImport the user exports: kept as it is (and checked)
        rules.append({**{k: v for k, v in rule.items() if k != "backendRefs"}, **({"backendRefs": refs} if refs
                                                                                 else {})})
    return list((doc.get("spec") or {}).get("hostnames") or []), rules
