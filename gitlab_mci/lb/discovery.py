"""What the load balancer needs to know about each cluster, read from the clusters and Compute themselves.

Node ``spec.providerID`` (``gce://PROJECT/ZONE/INSTANCE``) → the instance → its ``created-by`` metadata (the managed
instance group) → the instance group the manager created, which has the manager's name: the backend to use. The
instances also give the network (which may live in another project under Shared VPC) and the node tags the firewall
must target. No Ingress object is created in the clusters and nothing waits on an in-cluster controller.

Reads are batched: one node list per cluster, and per project one aggregated list of instances and one of instance
groups, however many clusters there are. The groups are kept (with their named ports and fingerprint) so that
``lb apply`` need not read them again.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

from gitlab_mci.compute_rest import ComputeApiError
from gitlab_mci.errors import UserError
from gitlab_mci.gcp import Compute, retry_transient
from gitlab_mci.kube import Cluster, api_error_message
from gitlab_mci.nodeport import parallel


@dataclass(frozen=True)
class ServicePort:
    name: str | None
    port: int
    node_port: int | None
    target_port: int | str | None = None  # the pods' port (a name is resolved by desired, from the pods)


@dataclass(frozen=True)
class ServiceInfo:
    """One backend Service in one cluster."""

    name: str
    namespace: str
    type: str
    ports: tuple[ServicePort, ...]
    readiness_path: str | None
    annotations: dict[str, str] = field(default_factory=dict, compare=False)
    container_ports: dict[str, int] = field(default_factory=dict, compare=False)  # named container ports

    def pod_port(self, port: ServicePort) -> int:
        """The port the pods serve ``port`` on: where NEG endpoints (and health checks of them) connect."""
        target = port.target_port if port.target_port not in (None, "") else port.port
        if isinstance(target, int) or str(target).isdigit():
            return int(target)
        if str(target) in self.container_ports:
            return self.container_ports[str(target)]
        why = "" if self.container_ports else " (no pod of it runs: is the app deployed?)"
        raise UserError(f"Service {self.namespace}/{self.name}: targetPort {target!r} names no container port of "
                        f"its pods{why}")

    def port(self, wanted: int | str) -> ServicePort | None:
        for p in self.ports:
            if p.port == wanted or (p.name is not None and p.name == wanted):
                return p
        return None


@dataclass(frozen=True)
class ClusterInfo:
    """One cluster as the load balancer sees it."""

    context: str
    project: str
    groups: tuple[str, ...]  # instance group URLs, one per node pool and zone
    zones: tuple[str, ...]
    network: str
    tags: tuple[str, ...]
    services: dict[str, ServiceInfo] = field(default_factory=dict)
    group_json: dict[str, dict[str, Any]] = field(default_factory=dict, compare=False, repr=False)
    # NEGs need alias IP ranges for pods (a VPC-native cluster): whether the nodes have them.
    vpc_native: bool = True
    # (Service, Service port) → the zonal NEG URLs of that port, once negs.wait_for_negs has found them all.
    negs: dict[tuple[str, int], tuple[str, ...]] = field(default_factory=dict, compare=False)


@dataclass
class _Node:
    name: str
    project: str
    zone: str
    instance: str


def _get(cluster: Cluster, what: str, path: str, **query: Any) -> Any:
    """GET ``path`` on the cluster's API server, as JSON. Through the ApiClient (its auth, TLS and timeouts), not
    ``CoreV1Api``: importing that imports its 39 model modules and their pydantic classes (+0.24 s, +22 MB), and
    building V1Node from the answer costs more still; discovery reads a few fields once (docs/performance.md)."""
    from kubernetes.client.exceptions import ApiException

    api = cluster.api
    method, url, headers, _, _ = api.param_serialize(
        "GET", path, query_params=list(query.items()) or None, header_params={"Accept": "application/json"},
        auth_settings=["BearerToken"])
    resp = cluster.call(what, api.call_api, method, url, header_params=headers)
    data = resp.read()
    if not 200 <= resp.status <= 299:
        raise ApiException.from_response(http_resp=resp, body=data.decode("utf-8", "replace"), data=None)
    return json.loads(data)


def kube_get(cluster: Cluster, what: str, path: str, **query: Any) -> Any:
    """GET ``path`` on the cluster's API server, as JSON (for :mod:`gitlab_mci.lb.negs`)."""
    return _get(cluster, what, path, **query)


def _nodes(cluster: Cluster) -> list[_Node]:
    from kubernetes.client.exceptions import ApiException

    try:
        items = _get(cluster, "list nodes", "/api/v1/nodes").get("items") or []
    except ApiException as exc:
        raise UserError(f"context {cluster.context!r}: cannot list nodes: {api_error_message(exc)}") from None
    if not items:
        raise UserError(f"context {cluster.context!r}: the cluster has no nodes")
    nodes = []
    for item in items:
        pid = (item.get("spec") or {}).get("providerID") or ""
        parts = pid.removeprefix("gce://").split("/")
        name = item["metadata"]["name"]
        if not pid.startswith("gce://") or len(parts) != 3:
            raise UserError(f"context {cluster.context!r}: node {name} has providerID {pid!r}, not "
                            "gce://PROJECT/ZONE/INSTANCE; is this a GKE cluster?")
        nodes.append(_Node(name, *parts))
    return nodes


def _service(cluster: Cluster, namespace: str, name: str) -> ServiceInfo | None:
    from kubernetes.client.exceptions import ApiException

    path = f"/api/v1/namespaces/{quote(namespace, safe='')}/services/{quote(name, safe='')}"
    try:
        svc = _get(cluster, f"read Service {namespace}/{name}", path)
    except ApiException as exc:
        if exc.status == 404:
            return None
        raise UserError(f"context {cluster.context!r}: {api_error_message(exc)}") from None
    spec = svc.get("spec") or {}
    ports = tuple(ServicePort(p.get("name"), p["port"], p.get("nodePort"), p.get("targetPort"))
                  for p in spec.get("ports") or [])
    probe, named = _readiness_path(cluster, namespace, spec.get("selector") or {})
    return ServiceInfo(name, namespace, spec.get("type") or "ClusterIP", ports, probe,
                       dict((svc.get("metadata") or {}).get("annotations") or {}), named)


def read_service(cluster: Cluster, namespace: str, name: str) -> ServiceInfo | None:
    """The Service as discovery sees it (None when absent): read again while waiting for its NEGs."""
    return _service(cluster, namespace, name)


def _readiness_path(cluster: Cluster, namespace: str, selector: dict[str, str]) -> tuple[str | None, dict[str, int]]:
    """The HTTP readiness probe path of the pods behind the Service (what the health check should ask), and
    their named container ports (a NEG's endpoints are on the pods' port, which a targetPort may name)."""
    if not selector:
        return None, {}
    pods = _get(cluster, "list pods", f"/api/v1/namespaces/{quote(namespace, safe='')}/pods",
                labelSelector=",".join(f"{k}={v}" for k, v in sorted(selector.items())), limit=5)
    path: str | None = None
    named: dict[str, int] = {}
    for pod in pods.get("items") or []:
        for c in (pod.get("spec") or {}).get("containers") or []:
            named.update({str(p["name"]): int(p["containerPort"]) for p in c.get("ports") or [] if p.get("name")})
            http_get = (c.get("readinessProbe") or {}).get("httpGet")
            if http_get is not None and path is None:
                path = str(http_get.get("path") or "/")
    return path, named


_WHAT = {"instances": "instances", "instanceGroups": "instance groups"}


def _listed(compute: Compute, kind: str, project: str, what: str) -> list[tuple[str, dict[str, Any]]]:
    """Every item of an aggregated list (all pages), retrying transient errors; others are one line."""
    try:
        return retry_transient(lambda: compute.rest.aggregated(kind, project=project))
    except ComputeApiError as exc:
        raise UserError(f"list the {what} of project {project}: {exc.message}") from None


def discover(clusters: Sequence[Cluster], compute: Compute, namespace: str,
             services: Sequence[str]) -> list[ClusterInfo]:
    """Discover every cluster (in parallel) and resolve its nodes to instance groups (batched)."""
    nodes_by_cluster = parallel(clusters, _nodes)
    projects = sorted({n.project for nodes in nodes_by_cluster for n in nodes})
    instances: dict[tuple[str, str, str], dict[str, Any]] = {}
    groups_by_key: dict[tuple[str, str, str], dict[str, Any]] = {}
    # Both aggregated lists of every project at once: round trips, not CPU.
    kinds = [(project, kind) for project in projects for kind in ("instances", "instanceGroups")]
    answers = parallel(kinds, lambda pk: _listed(compute, pk[1], pk[0], _WHAT[pk[1]]))
    for (project, kind), listed in zip(kinds, answers, strict=True):
        into = instances if kind == "instances" else groups_by_key
        for scope, item in listed:
            into[(project, scope.removeprefix("zones/"), item["name"])] = item
    svc_infos = parallel(clusters, lambda c: {s: _service(c, namespace, s) for s in services})
    result = []
    for cluster, nodes, found in zip(clusters, nodes_by_cluster, svc_infos, strict=True):
        groups: set[str] = set()
        group_json: dict[str, dict[str, Any]] = {}
        networks: set[str] = set()
        tags: set[str] = set()
        aliased = False
        for node in nodes:
            inst = instances.get((node.project, node.zone, node.instance))
            if inst is None:
                raise UserError(f"context {cluster.context!r}: node {node.name} is instance {node.instance} in "
                                f"{node.project}/{node.zone}, which Compute does not list")
            created_by = next((i.get("value") for i in (inst.get("metadata") or {}).get("items", [])
                               if i.get("key") == "created-by"), None)
            if not created_by or "/instanceGroupManagers/" not in created_by:
                raise UserError(f"context {cluster.context!r}: instance {node.instance} was not created by a "
                                "managed instance group (no created-by metadata); only GKE node pools are supported")
            # A zonal managed instance group's instance group carries the manager's name.
            group = groups_by_key.get((node.project, node.zone, created_by.rsplit("/", 1)[1]))
            if group is None:
                raise UserError(f"context {cluster.context!r}: the instance group of manager {created_by} not found")
            groups.add(group["selfLink"])
            group_json.setdefault(group["selfLink"], group)
            networks.add(inst["networkInterfaces"][0]["network"])
            aliased = aliased or bool(inst["networkInterfaces"][0].get("aliasIpRanges"))
            tags.update((inst.get("tags") or {}).get("items", []))
        if len(networks) > 1:
            raise UserError(f"context {cluster.context!r}: nodes are on several networks "
                            f"({', '.join(sorted(networks))})")
        result.append(ClusterInfo(
            context=cluster.context, project=nodes[0].project, groups=tuple(sorted(groups)),
            zones=tuple(sorted({n.zone for n in nodes})), network=networks.pop(), tags=tuple(sorted(tags)),
            services={k: v for k, v in found.items() if v is not None}, group_json=group_json, vpc_native=aliased,
        ))
    return result
