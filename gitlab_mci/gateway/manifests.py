"""The desired objects, from a :class:`~gitlab_mci.gateway.model.GatewayModel`.

In every serving cluster, per backend Service ``S``: a Service ``S-<cluster>`` (the app's selector and ports) and a
``ServiceExport`` of it, so that each cluster is its own ``ServiceImport`` — GKE's documented way to split traffic
between clusters (weighted ``backendRefs``). In the config cluster: the ``Gateway`` (HTTP listener; HTTPS with the
pre-shared certificates; a reserved address as ``NamedAddress``), the ``HTTPRoute`` ``<lb>`` with the routing,
and with ``--https-redirect`` the ``HTTPRoute`` ``<lb>-redirect`` on the HTTP listener. Every object carries the labels
that mark it as gitlab-mci's for this load balancer.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from gitlab_mci.gateway.model import (
    CLUSTER_LABEL,
    CLUSTERS_ANNOTATION,
    DRAINED_ANNOTATION,
    GATEWAY_API,
    MCS_API,
    PRE_SHARED_CERTS,
    GatewayModel,
    export_name,
)
from gitlab_mci.hosted.manifests import KindInfo

Obj = dict[str, Any]


KINDS: dict[str, KindInfo] = {
    "Service": KindInfo("", "v1", "services"),
    "ServiceExport": KindInfo("net.gke.io", "v1", "serviceexports"),
    "Gateway": KindInfo("gateway.networking.k8s.io", "v1", "gateways"),
    "HTTPRoute": KindInfo("gateway.networking.k8s.io", "v1", "httproutes"),
    "HealthCheckPolicy": KindInfo("networking.gke.io", "v1", "healthcheckpolicies"),
    "GCPBackendPolicy": KindInfo("networking.gke.io", "v1", "gcpbackendpolicies"),
    "GCPGatewayPolicy": KindInfo("networking.gke.io", "v1", "gcpgatewaypolicies"),
    "ServiceImport": KindInfo("net.gke.io", "v1", "serviceimports"),  # GKE's, read only
}
# Apply in this order (what is referred to first), delete in reverse.
APPLY_ORDER = ("Service", "ServiceExport", "HealthCheckPolicy", "GCPBackendPolicy", "GCPGatewayPolicy", "Gateway",
               "HTTPRoute")
CONFIG_KINDS = ("HealthCheckPolicy", "GCPBackendPolicy", "GCPGatewayPolicy", "Gateway", "HTTPRoute")
POLICY_API = "networking.gke.io/v1"  # in the config cluster only


@dataclass(frozen=True)
class Desired:
    """One object and the context of the cluster it goes to."""

    context: str
    obj: Obj

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.context, self.obj["kind"], self.obj["metadata"]["name"])


def _meta(model: GatewayModel, name: str, **extra: Any) -> Obj:
    return {"name": name, "namespace": model.namespace, "labels": dict(model.labels), **extra}


def backend_refs(model: GatewayModel, ref: Obj) -> list[Obj]:
    """A reference to an app Service as one weighted reference per cluster to that cluster's ServiceImport."""
    if "service" not in ref:
        return [ref]
    port = model.services[ref["service"]].port_number(ref["port"])
    return [{"group": "net.gke.io", "kind": "ServiceImport", "name": export_name(ref["service"], c.cluster),
             "port": port, "weight": int(ref.get("weight", 1)) * c.weight} for c in model.clusters]


def route(model: GatewayModel) -> Obj:
    notes = {CLUSTERS_ANNOTATION: json.dumps({c.cluster: c.context for c in model.clusters}, sort_keys=True)}
    if model.drained:
        notes[DRAINED_ANNOTATION] = json.dumps(model.drained, sort_keys=True)
    rules = []
    for rule in model.rules:
        refs = [r for ref in rule.get("backendRefs") or [] for r in backend_refs(model, ref)]
        rules.append({**{k: v for k, v in rule.items() if k != "backendRefs"}, **({"backendRefs": refs} if refs
                                                                                 else {})})
    parent: Obj = {"name": model.lb, **({"sectionName": "https"} if model.https_redirect else {})}
    spec: Obj = {"parentRefs": [parent], **({"hostnames": model.hostnames} if model.hostnames else {}),
                 "rules": rules}
    return {"apiVersion": GATEWAY_API, "kind": "HTTPRoute", "metadata": _meta(model, model.lb, annotations=notes),
            "spec": spec}


def desired(model: GatewayModel, config_context: str) -> list[Desired]:
    """Every object, in apply order."""
    out: list[Desired] = []
    for c in model.clusters:
        for svc in model.services.values():
            name = export_name(svc.name, c.cluster)
            labels = {**model.labels, CLUSTER_LABEL: c.cluster}
            out.append(Desired(c.context, {
                "apiVersion": "v1", "kind": "Service",
                "metadata": {**_meta(model, name), "labels": labels},
                "spec": {"type": "ClusterIP", "selector": dict(svc.selector), "ports": [dict(p) for p in svc.ports]}}))
    for c in model.clusters:
        for svc in model.services.values():
            out.append(Desired(c.context, {
                "apiVersion": MCS_API, "kind": "ServiceExport",
                "metadata": {**_meta(model, export_name(svc.name, c.cluster)),
                             "labels": {**model.labels, CLUSTER_LABEL: c.cluster}}}))
    if model.health_check_path:  # GKE's HealthCheckPolicy, one per ServiceImport (each cluster's export)
        for c in model.clusters:
            for svc in model.services.values():
                name = export_name(svc.name, c.cluster)
                out.append(Desired(config_context, {
                    "apiVersion": "networking.gke.io/v1", "kind": "HealthCheckPolicy", "metadata": _meta(model, name),
                    "spec": {"default": {"config": {"type": "HTTP", "httpHealthCheck": {
                                 "requestPath": model.health_check_path}}},
                             "targetRef": {"group": "net.gke.io", "kind": "ServiceImport", "name": name}}}))
    if model.backend_policy:  # GKE's GCPBackendPolicy, one per ServiceImport: the production options
        for c in model.clusters:
            for svc in model.services.values():
                name = export_name(svc.name, c.cluster)
                out.append(Desired(config_context, {
                    "apiVersion": POLICY_API, "kind": "GCPBackendPolicy", "metadata": _meta(model, name),
                    "spec": {"default": dict(model.backend_policy),
                             "targetRef": {"group": "net.gke.io", "kind": "ServiceImport", "name": name}}}))
    if model.gateway_policy:
        out.append(Desired(config_context, {
            "apiVersion": POLICY_API, "kind": "GCPGatewayPolicy", "metadata": _meta(model, model.lb),
            "spec": {"default": dict(model.gateway_policy),
                     "targetRef": {"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": model.lb}}}))
    listeners: list[Obj] = [{"name": "http", "protocol": "HTTP", "port": 80}]
    if model.pre_shared_certs:
        listeners.append({"name": "https", "protocol": "HTTPS", "port": 443, "tls": {
            "mode": "Terminate", "options": {PRE_SHARED_CERTS: ",".join(model.pre_shared_certs)}}})
    spec: Obj = {"gatewayClassName": model.gateway_class, "listeners": listeners}
    if model.static_ip:
        spec["addresses"] = [{"type": "NamedAddress", "value": model.static_ip}]
    out.append(Desired(config_context, {"apiVersion": GATEWAY_API, "kind": "Gateway",
                                        "metadata": _meta(model, model.lb), "spec": spec}))
    out.append(Desired(config_context, route(model)))
    if model.https_redirect:
        out.append(Desired(config_context, {
            "apiVersion": GATEWAY_API, "kind": "HTTPRoute", "metadata": _meta(model, f"{model.lb}-redirect"),
            "spec": {"parentRefs": [{"name": model.lb, "sectionName": "http"}],
                     **({"hostnames": model.hostnames} if model.hostnames else {}),
                     "rules": [{"filters": [{"type": "RequestRedirect",
                                             "requestRedirect": {"scheme": "https", "statusCode": 301}}]}]}}))
    return out
