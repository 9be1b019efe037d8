"""The desired objects in the fleet's config cluster, from a :class:`~gitlab_mci.hosted.model.HostedModel`.

One ``MultiClusterService`` per backend Service (its pod selector and ports, ``spec.clusters`` when a subset of the
fleet is selected), an optional ``BackendConfig`` (health-check path) and ``FrontendConfig`` (HTTP→HTTPS redirect),
and the ``MultiClusterIngress`` with the routing, the TLS Secrets (``spec.tls``) and the static-IP /
pre-shared-certificate annotations.
Every object carries the labels that mark it as gitlab-mci's for this load balancer.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from gitlab_mci.features import hosted as features_hosted
from gitlab_mci.hosted.model import (
    BACKEND_CONFIG,
    FRONTEND_CONFIG,
    PRE_SHARED_CERTS,
    STATIC_IP,
    HostedModel,
    ingress_paths,
)
from gitlab_mci.ingress import Backend

Obj = dict[str, Any]


@dataclass(frozen=True)
class KindInfo:
    group: str
    version: str
    plural: str

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}"


KINDS: dict[str, KindInfo] = {
    "BackendConfig": KindInfo("cloud.google.com", "v1", "backendconfigs"),
    "FrontendConfig": KindInfo("networking.gke.io", "v1beta1", "frontendconfigs"),
    "MultiClusterService": KindInfo("networking.gke.io", "v1", "multiclusterservices"),
    "MultiClusterIngress": KindInfo("networking.gke.io", "v1", "multiclusteringresses"),
}
# Apply in this order (what is referred to first), delete in reverse.
APPLY_ORDER = ("BackendConfig", "FrontendConfig", "MultiClusterService", "MultiClusterIngress")


def _meta(model: HostedModel, name: str, annotations: dict[str, str] | None = None) -> Obj:
    meta: Obj = {"name": name, "namespace": model.namespace, "labels": dict(model.labels)}
    if annotations:
        meta["annotations"] = annotations
    return meta


def _backend(model: HostedModel, backend: Backend) -> Obj:
    mcs = model.mcs_for(backend)
    return {"serviceName": mcs.name, "servicePort": mcs.port_number(backend.port)}


def multicluster_service(model: HostedModel, index: int) -> Obj:
    mcs = model.mcs[index]
    ports = []
    for p in mcs.ports:
        port: Obj = {"protocol": p.protocol, "port": p.port, "targetPort": p.target_port}
        if p.name:
            port = {"name": p.name, **port}
        ports.append(port)
    spec: Obj = {"template": {"spec": {"selector": dict(mcs.selector), "ports": ports}}}
    if model.links is not None:
        spec["clusters"] = [{"link": link} for link in model.links]
    notes = {BACKEND_CONFIG: json.dumps({"default": model.backend_config})} if model.backend_config else {}
    notes.update(features_hosted.app_protocols(model.features, [p.name for p in mcs.ports], mcs.name))
    return {"apiVersion": KINDS["MultiClusterService"].api_version, "kind": "MultiClusterService",
            "metadata": _meta(model, mcs.name, notes or None), "spec": spec}


def multicluster_ingress(model: HostedModel) -> Obj:
    routing = model.routing
    template: Obj = {}
    if routing.default_backend is not None:
        template["backend"] = _backend(model, routing.default_backend)
    rules = []
    for rule in routing.rules:
        paths = [{"path": glob, "backend": _backend(model, p.backend)}
                 for p in rule.paths for glob in ingress_paths(p.path, p.path_type)]
        entry: Obj = {"http": {"paths": paths}}
        if rule.host:
            entry = {"host": rule.host, **entry}
        rules.append(entry)
    if rules:
        template["rules"] = rules
    if model.tls_secrets:  # GKE reads these kubernetes.io/tls Secrets from the config cluster, same namespace
        template["tls"] = [{"secretName": name} for name in model.tls_secrets]
    notes: dict[str, str] = {}
    if model.static_ip_address:
        notes[STATIC_IP] = model.static_ip_address
    if model.pre_shared_certs:
        notes[PRE_SHARED_CERTS] = ",".join(model.pre_shared_certs)
    if model.frontend_config:
        notes[FRONTEND_CONFIG] = model.frontend_config
    return {"apiVersion": KINDS["MultiClusterIngress"].api_version, "kind": "MultiClusterIngress",
            "metadata": _meta(model, model.lb, notes or None), "spec": {"template": {"spec": template}}}


def backend_config(model: HostedModel) -> Obj | None:
    if not model.backend_config:
        return None
    return {"apiVersion": KINDS["BackendConfig"].api_version, "kind": "BackendConfig",
            "metadata": _meta(model, model.backend_config), "spec": {
                **({"healthCheck": {"type": model.features.get("backendProtocol") or "HTTP",
                                 "requestPath": model.health_check_path}}
                   if model.health_check_path else {}),
                **features_hosted.backend_spec(model.features)}}


def frontend_config(model: HostedModel) -> Obj | None:
    if not model.frontend_config:
        return None
    return {"apiVersion": KINDS["FrontendConfig"].api_version, "kind": "FrontendConfig",
            "metadata": _meta(model, model.frontend_config), "spec": {
                **({"redirectToHttps": {"enabled": True, "responseCodeName": "MOVED_PERMANENTLY_DEFAULT"}}
                   if model.https_redirect else {}),
                **features_hosted.frontend_spec(model.frontend)}}


def desired(model: HostedModel) -> list[Obj]:
    """Every object, in apply order."""
    out = [o for o in (backend_config(model), frontend_config(model)) if o is not None]
    for obj in out:
        features_hosted.validate_manifest(obj)
    out += [multicluster_service(model, i) for i in range(len(model.mcs))]
    out.append(multicluster_ingress(model))
    return out
