"""A stand-in for Auto DevOps's deploy step, for the simulator (no Helm and no container images here).

It renders what the ``auto-deploy-app`` chart renders for the objects a load balancer cares about — the Deployment
``<release>`` and the Service ``<release>-auto-deploy`` with the chart's names, labels, selector, ports and probes
(REFERENCE §1) — from the chart's defaults, the ``--values`` files and ``--set`` flags of a Helm command line
(``HELM_UPGRADE_EXTRA_ARGS``), and applies them with the kubernetes client. So the demo and the pipeline test deploy
"the way the pipeline would": the node port comes from the values gitlab-mci wrote, not from a test shortcut.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from gitlab_mci.errors import UserError
from gitlab_mci.helm import resolve_values, upgrade_inputs
from gitlab_mci.kube import Cluster, api_error_message

# The chart's defaults that matter here (auto-deploy-app 2.100.x).
CHART_DEFAULTS: dict[str, Any] = {
    "replicaCount": 1,
    "application": {"track": "stable", "tier": "web"},
    "service": {"type": "ClusterIP", "name": "web", "externalPort": 5000, "internalPort": 5000},
    "readinessProbe": {"path": "/"},
    "livenessProbe": {"path": "/"},
}


@dataclass(frozen=True)
class Release:
    name: str
    namespace: str
    values: dict[str, Any]

    @property
    def track(self) -> str:
        return str(self.values["application"]["track"])

    @property
    def deployment_name(self) -> str:
        return self.name if self.track == "stable" else f"{self.name}-{self.track}"

    @property
    def service_name(self) -> str:
        return f"{self.deployment_name}-auto-deploy"


def values_for(extra_args: str, values_files: list[str] | None = None) -> dict[str, Any]:
    """The values Helm renders with: the chart's defaults, then ``values_files`` (auto-deploy's values file) and the
    ``--values``/``-f`` files of ``extra_args`` in order, then its ``--set*`` flags in order; the last wins."""
    files, sets = upgrade_inputs(extra_args)
    return resolve_values(CHART_DEFAULTS, [*(values_files or []), *files], sets)


def manifests(release: Release) -> tuple[dict[str, Any], dict[str, Any]]:
    """The Deployment and Service the chart renders for this release."""
    v, track, tier = release.values, release.track, release.values["application"]["tier"]
    # The chart writes the ports unquoted into YAML, so a port given as a string (--set-string) renders as a number.
    svc = {**v["service"], "externalPort": int(v["service"]["externalPort"]),
           "internalPort": int(v["service"]["internalPort"])}
    labels = {"app": release.name, "release": release.deployment_name, "track": track, "tier": tier}
    selector = {"app": release.name, "track": track, "tier": tier}
    probe: dict[str, Any] = {"httpGet": {"path": v["readinessProbe"].get("path", "/"), "port": svc["internalPort"],
                         "scheme": "HTTP"}, "periodSeconds": 10, "timeoutSeconds": 2}
    deployment = {
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": release.deployment_name, "namespace": release.namespace, "labels": labels},
        "spec": {"replicas": int(v["replicaCount"]), "selector": {"matchLabels": selector},
                 "template": {"metadata": {"labels": labels,
                                           "annotations": {"app.gitlab.com/app": release.name}},
                              "spec": {"containers": [{
                                  "name": "auto-deploy-app", "image": "registry.example.com/app:latest",
                                  "ports": [{"name": svc["name"], "containerPort": svc["internalPort"]}],
                                  "readinessProbe": probe,
                                  "livenessProbe": {**probe, "httpGet": {
                                      **probe["httpGet"], "path": v["livenessProbe"].get("path", "/")}}}]}}},
    }
    port: dict[str, Any] = {"name": svc["name"], "port": svc["externalPort"], "targetPort": svc["internalPort"],
                            "protocol": "TCP"}
    # Like the chart (auto-deploy-image v2.19.0+): nodePort only when the type is NodePort.
    if svc["type"] == "NodePort" and svc.get("nodePort") not in (None, ""):
        port["nodePort"] = int(svc["nodePort"])
    service: dict[str, Any] = {
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": release.service_name, "namespace": release.namespace, "labels": labels},
        "spec": {"type": svc["type"], "selector": selector, "ports": [port]},
    }
    # Like the chart: `annotations: {{ toYaml .Values.service.annotations }}` when there are any (values are
    # strings in YAML, as Kubernetes requires).
    if svc.get("annotations"):
        service["metadata"]["annotations"] = {str(k): _annotation(v) for k, v in svc["annotations"].items()}
    return deployment, service


def _annotation(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def deploy(cluster: Cluster, release: Release) -> dict[str, Any]:
    """Create or replace the Deployment and Service (like ``helm upgrade --install``); returns the Service."""
    from kubernetes.client.exceptions import ApiException

    deployment, service = manifests(release)
    chart_keys = sorted(service["metadata"].get("annotations") or {})
    ns = release.namespace
    try:
        try:
            cluster.call("read the Deployment", cluster.apps.read_namespaced_deployment, release.deployment_name, ns)
            cluster.call("replace the Deployment", cluster.apps.replace_namespaced_deployment,
                         release.deployment_name, ns, deployment)
        except ApiException as exc:
            if exc.status != 404:
                raise
            cluster.call("create the Deployment", cluster.apps.create_namespaced_deployment, ns, deployment)
        try:
            current = cluster.call("read the Service", cluster.core.read_namespaced_service, release.service_name, ns)
            # A Service keeps its clusterIP and, unless set, its node port across upgrades (Helm patches).
            service["spec"]["clusterIP"] = current.spec.cluster_ip
            service["metadata"]["resourceVersion"] = current.metadata.resource_version
            # Helm's three-way merge: what the previous release set and this one does not is removed; what others
            # wrote on the live object (GKE's neg-status) stays.
            previous = _previous_annotations(cluster, release)
            chart = service["metadata"].get("annotations", {})
            live = {k: v for k, v in (current.metadata.annotations or {}).items() if k not in previous}
            if live or chart:
                service["metadata"]["annotations"] = {**live, **chart}
            if "nodePort" not in service["spec"]["ports"][0] and current.spec.type == service["spec"]["type"]:
                node_port = current.spec.ports[0].node_port
                if node_port:
                    service["spec"]["ports"][0]["nodePort"] = node_port
            result = cluster.call("replace the Service", cluster.core.replace_namespaced_service,
                                  release.service_name, ns, service)
        except ApiException as exc:
            if exc.status != 404:
                raise
            result = cluster.call("create the Service", cluster.core.create_namespaced_service, ns, service)
        _record(cluster, release, chart_keys)
    except ApiException as exc:
        raise UserError(f"deploy {release.name} to context {cluster.context!r}: {api_error_message(exc)}") from None
    created: dict[str, Any] = cluster.api.sanitize_for_serialization(result)
    return created


def _record_name(release: Release) -> str:
    # What Helm keeps in its release Secret, reduced to what the three-way merge here needs.
    return f"{release.service_name}-sim-release"


def _previous_annotations(cluster: Cluster, release: Release) -> set[str]:
    """The Service annotations the previous deploy of this release rendered (none before the first)."""
    from kubernetes.client.exceptions import ApiException

    try:
        found = cluster.call("read the release record", cluster.core.read_namespaced_config_map,
                             _record_name(release), release.namespace)
    except ApiException as exc:
        if exc.status != 404:
            raise
        return set()
    return set(json.loads((found.data or {}).get("serviceAnnotations", "[]")))


def _record(cluster: Cluster, release: Release, keys: list[str]) -> None:
    from kubernetes.client.exceptions import ApiException

    body = {"metadata": {"name": _record_name(release), "namespace": release.namespace,
                         "labels": {"app": release.name, "owner": "gitlab-mci-sim"}},
            "data": {"serviceAnnotations": json.dumps(keys)}}
    try:
        cluster.call("record the release", cluster.core.replace_namespaced_config_map, _record_name(release),
                     release.namespace, body)
    except ApiException as exc:
        if exc.status != 404:
            raise
        cluster.call("record the release", cluster.core.create_namespaced_config_map, release.namespace, body)
