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

from gitlab_mci.errors import UserError
from gitlab_mci.gcp import Compute, retry_transient
from gitlab_mci.kube import Cluster, api_error_message
from gitlab_mci.nodeport import parallel


@dataclass(frozen=True)
class ServicePort:
    name: str | None
    port: int
    node_port: int | None


@dataclass(frozen=True)
class ServiceInfo:
    """One backend Service in one cluster."""

    name: str
    namespace: str
    type: str
    ports: tuple[ServicePort, ...]
    readiness_path: str | None

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


@dataclass
class _Node:
    name: str
    project: str
    zone: str
    instance: str


def _nodes(cluster: Cluster) -> list[_Node]:
    from kubernetes.client.exceptions import ApiException

    try:
        items = cluster.call("list nodes", cluster.core.list_node).items
    except ApiException as exc:
        raise UserError(f"context {cluster.context!r}: cannot list nodes: {api_error_message(exc)}") from None
    if not items:
        raise UserError(f"context {cluster.context!r}: the cluster has no nodes")
    nodes = []
    for item in items:
        pid = (item.spec.provider_id if item.spec else None) or ""
        parts = pid.removeprefix("gce://").split("/")
        if not pid.startswith("gce://") or len(parts) != 3:
            raise UserError(f"context {cluster.context!r}: node {item.metadata.name} has providerID {pid!r}, not "
                            "gce://PROJECT/ZONE/INSTANCE; is this a GKE cluster?")
        nodes.append(_Node(item.metadata.name, *parts))
    return nodes


def _service(cluster: Cluster, namespace: str, name: str) -> ServiceInfo | None:
    from kubernetes.client.exceptions import ApiException

    try:
        svc = cluster.call(f"read Service {namespace}/{name}", cluster.core.read_namespaced_service, name, namespace)
    except ApiException as exc:
        if exc.status == 404:
            return None
        raise UserError(f"context {cluster.context!r}: {api_error_message(exc)}") from None
    ports = tuple(ServicePort(p.name, p.port, p.node_port) for p in svc.spec.ports or [])
    return ServiceInfo(name, namespace, svc.spec.type or "ClusterIP", ports, _readiness_path(cluster, svc))


def _readiness_path(cluster: Cluster, svc: Any) -> str | None:
    """The HTTP readiness probe path of the pods behind the Service (what the health check should ask)."""
    selector = svc.spec.selector or {}
    if not selector:
        return None
    pods = cluster.call("list pods", cluster.core.list_namespaced_pod, svc.metadata.namespace,
                        label_selector=",".join(f"{k}={v}" for k, v in sorted(selector.items())), limit=5).items
    for pod in pods:
        for c in pod.spec.containers or []:
            probe = c.readiness_probe
            if probe is not None and probe.http_get is not None:
                return str(probe.http_get.path or "/")
    return None


def _listed(client: Any, project: str, what: str) -> list[Any]:
    """Every page of an aggregated list, retrying transient errors; others are one line."""
    from google.api_core import exceptions as gexc

    try:
        return retry_transient(lambda: list(client.aggregated_list(project=project)))
    except gexc.GoogleAPICallError as exc:
        raise UserError(f"list the {what} of project {project}: {exc.message}") from None


def discover(clusters: Sequence[Cluster], compute: Compute, namespace: str,
             services: Sequence[str]) -> list[ClusterInfo]:
    """Discover every cluster (in parallel) and resolve its nodes to instance groups (batched)."""
    from google.cloud import compute_v1

    nodes_by_cluster = parallel(clusters, _nodes)
    projects = sorted({n.project for nodes in nodes_by_cluster for n in nodes})
    instances: dict[tuple[str, str, str], Any] = {}
    groups_by_key: dict[tuple[str, str, str], Any] = {}
    for project in projects:
        for scope, listed in _listed(compute.client(compute_v1.InstancesClient), project, "instances"):
            for listed_instance in listed.instances:
                instances[(project, scope.removeprefix("zones/"), listed_instance.name)] = listed_instance
        for scope, listed in _listed(compute.client(compute_v1.InstanceGroupsClient), project, "instance groups"):
            for listed_group in listed.instance_groups:
                groups_by_key[(project, scope.removeprefix("zones/"), listed_group.name)] = listed_group
    svc_infos = parallel(clusters, lambda c: {s: _service(c, namespace, s) for s in services})
    result = []
    for cluster, nodes, found in zip(clusters, nodes_by_cluster, svc_infos, strict=True):
        groups: set[str] = set()
        group_json: dict[str, dict[str, Any]] = {}
        networks: set[str] = set()
        tags: set[str] = set()
        for node in nodes:
            inst = instances.get((node.project, node.zone, node.instance))
            if inst is None:
                raise UserError(f"context {cluster.context!r}: node {node.name} is instance {node.instance} in "
                                f"{node.project}/{node.zone}, which Compute does not list")
            created_by = next((i.value for i in inst.metadata.items if i.key == "created-by"), None)
            if not created_by or "/instanceGroupManagers/" not in created_by:
                raise UserError(f"context {cluster.context!r}: instance {node.instance} was not created by a "
                                "managed instance group (no created-by metadata); only GKE node pools are supported")
            # A zonal managed instance group's instance group carries the manager's name.
            group = groups_by_key.get((node.project, node.zone, created_by.rsplit("/", 1)[1]))
            if group is None:
                raise UserError(f"context {cluster.context!r}: the instance group of manager {created_by} not found")
            groups.add(group.self_link)
            group_json.setdefault(group.self_link, json.loads(compute_v1.InstanceGroup.to_json(
                group, always_print_fields_with_no_presence=False)))
            networks.add(inst.network_interfaces[0].network)
            tags.update(inst.tags.items)
        if len(networks) > 1:
            raise UserError(f"context {cluster.context!r}: nodes are on several networks "
                            f"({', '.join(sorted(networks))})")
        result.append(ClusterInfo(
            context=cluster.context, project=nodes[0].project, groups=tuple(sorted(groups)),
            zones=tuple(sorted({n.zone for n in nodes})), network=networks.pop(), tags=tuple(sorted(tags)),
            services={k: v for k, v in found.items() if v is not None}, group_json=group_json,
        ))
    return result
