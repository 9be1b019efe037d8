"""What the user asked for, checked offline, and the model the manifests are made from.

Inputs are the self-managed mode's (``--lb``, ``--context``, ``--ingress`` or ``--service``/``--port``,
``--namespace``, ``--static-ip``, ``--ssl-certificate``, ``--https-redirect``, ``--health-check-path``) plus
``--config-context`` for the fleet's config cluster. Everything here is pure: no cluster or cloud is read.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from gitlab_mci.errors import UserError
from gitlab_mci.features.model import Features
from gitlab_mci.features.sources import Flags
from gitlab_mci.ingress import Backend, IngressModel

RESERVED_PREFIX = "mci-"  # GKE's Multi Cluster Ingress controller owns mci- names (derived Services, Compute)
MANAGED_BY = "app.kubernetes.io/managed-by"
LB_LABEL = "gitlab-mci/lb"
FIELD_MANAGER = "gitlab-mci"
_DNS1035 = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
_DNS1123 = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")

# Annotations gitlab-mci sets (and removes again when no longer asked for) on each kind.
STATIC_IP = "networking.gke.io/static-ip"
PRE_SHARED_CERTS = "networking.gke.io/pre-shared-certs"
FRONTEND_CONFIG = "networking.gke.io/frontend-config"
# Read from the Ingress by the self-managed mode too; GKE's Multi Cluster Ingress has no equivalent (see check_http).
ALLOW_HTTP = "kubernetes.io/ingress.allow-http"
BACKEND_CONFIG = "beta.cloud.google.com/backend-config"
MANAGED_ANNOTATIONS = {
    "MultiClusterIngress": (STATIC_IP, PRE_SHARED_CERTS, FRONTEND_CONFIG),
    "MultiClusterService": (BACKEND_CONFIG,),
    "BackendConfig": (),
    "FrontendConfig": (),
}


@dataclass
class Inputs:
    """Everything the user gave, as given (strings from flags or environment variables)."""

    lb: str
    contexts: Sequence[str] = ()
    config_context: str | None = None
    ingress: Path | None = None
    service: str | None = None
    port: str = "5000"
    namespace: str = "default"
    project: str | None = None
    static_ip: str | None = None
    https_redirect: bool = False
    ssl_certificates: Sequence[str] = ()
    health_check_path: str | None = None
    kubeconfig: Path | None = None
    adopt: bool = False
    feature_flags: Flags = field(default_factory=Flags)  # production options (docs/features.md)
    features_file: Path | None = None


@dataclass(frozen=True)
class ServicePort:
    name: str | None
    port: int
    target_port: int | str
    protocol: str = "TCP"


@dataclass(frozen=True)
class McsModel:
    """One MultiClusterService: the backend Service's pod selector and ports."""

    name: str
    selector: tuple[tuple[str, str], ...]
    ports: tuple[ServicePort, ...]

    def port_number(self, port: int | str) -> int | None:
        for p in self.ports:
            if p.port == port or (p.name is not None and p.name == port):
                return p.port
        return None


@dataclass(frozen=True)
class HostedModel:
    """The checked model: names, routing, backends and the cluster selection."""

    lb: str
    namespace: str
    routing: IngressModel
    mcs: tuple[McsModel, ...]
    links: tuple[str, ...] | None  # spec.clusters of every MCS; None: every fleet member
    static_ip_address: str | None = None
    pre_shared_certs: tuple[str, ...] = ()
    tls_secrets: tuple[str, ...] = ()  # the Ingress's spec.tls Secrets, read by GKE from the config cluster
    https_redirect: bool = False
    health_check_path: str | None = None
    notes: dict[str, str] = field(default_factory=dict)
    features: Features = field(default_factory=Features)  # backend options: our BackendConfig
    frontend: Features = field(default_factory=Features)  # frontend options: our FrontendConfig

    @property
    def labels(self) -> dict[str, str]:
        return {MANAGED_BY: "gitlab-mci", LB_LABEL: self.lb}

    @property
    def backend_config(self) -> str | None:
        from gitlab_mci.features.hosted import backend_spec

        return self.lb if self.health_check_path or backend_spec(self.features) else None

    @property
    def frontend_config(self) -> str | None:
        from gitlab_mci.features.hosted import frontend_spec

        return self.lb if self.https_redirect or frontend_spec(self.frontend) else None

    def mcs_for(self, backend: Backend) -> McsModel:
        return next(m for m in self.mcs if m.name == backend.service)


def check_object_name(name: str, what: str) -> str:
    """A name gitlab-mci gives an object in the config cluster: a DNS label that is not GKE's."""
    if not _DNS1035.match(name) or len(name) > 63:
        raise UserError(f"{what} {name!r} must be lowercase letters, digits and hyphens, start with a letter and "
                        "be at most 63 characters")
    if name.startswith(RESERVED_PREFIX):
        raise UserError(f"{what} {name!r} starts with {RESERVED_PREFIX!r}, which GKE's Multi Cluster Ingress "
                        "controller reserves for the objects it derives (mci-<name>-svc-… Services, mci-… Compute "
                        "resources); rename it (for an Auto DevOps app: a HELM_RELEASE_NAME without mci-)")
    return name


def check_namespace(namespace: str) -> str:
    if not _DNS1123.match(namespace) or len(namespace) > 63:
        raise UserError(f"--namespace {namespace!r} is not a valid namespace name")
    return namespace


def check_health_path(path: str | None) -> str | None:
    if path is not None and (not path.startswith("/") or any(c.isspace() for c in path)):
        raise UserError(f"--health-check-path {path!r} must be an absolute URL path like /healthz")
    return path


def check_http(annotations: dict[str, str], https_redirect: bool) -> None:
    """Refuse an HTTPS-only Ingress (``kubernetes.io/ingress.allow-http: "false"``) that hosted mode would serve on
    port 80 anyway: GKE's Multi Cluster Ingress always makes the port-80 forwarding rule and documents no way to
    close it (the annotation belongs to the single-cluster Ingress). What it supports is a FrontendConfig that
    answers port 80 with a redirect to HTTPS, which is what ``--https-redirect`` writes; with it, the app is never
    served over plain HTTP, so the annotation is then honoured as far as GKE allows."""
    value = annotations.get(ALLOW_HTTP)
    if value is not None and value.strip().lower() == "false" and not https_redirect:
        raise UserError(f'the Ingress says {ALLOW_HTTP}: "false", but GKE\'s Multi Cluster Ingress always serves '
                        "port 80 and cannot close it: add --https-redirect (port 80 then only redirects to HTTPS) or "
                        "use the self-managed mode (gitlab-mci lb), which opens no port 80")


def ingress_paths(path: str, path_type: str) -> list[str]:
    """An Ingress path as the old (MultiClusterIngress) shape's glob paths: Prefix /api is /api and /api/*."""
    if path_type != "Prefix" or path.endswith("*"):
        return [path]
    if path == "/":
        return ["/*"]
    stem = path.rstrip("/")
    return [stem, f"{stem}/*"]
