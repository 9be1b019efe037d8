"""Build a consistent simulated world from a :class:`~gitlab_mci.sim.spec.WorldSpec`.

Consistency is the point: every GKE node in a cluster's Kubernetes API is also a Compute instance, created by a
managed instance group per node pool and zone, exactly the chain that discovery walks on real GKE
(Node ``spec.providerID`` → instance → ``created-by`` metadata → instance group manager → instance group).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from gitlab_mci.sim.spec import ClusterSpec, NodePoolSpec, WorldSpec

if TYPE_CHECKING:
    from gitlab_mci.sim.compute import ComputeEmulator
    from gitlab_mci.sim.kube import KubeApiServer

API = "https://www.googleapis.com/compute/v1"
KUBE_VERSION = "v1.30.5-gke.1014001"


def _hex(*parts: object, n: int = 8) -> str:
    return hashlib.sha256("/".join(map(str, parts)).encode()).hexdigest()[:n]


@dataclass
class NodeRecord:
    """One simulated GKE node: the Compute instance and the Kubernetes Node are two views of it."""

    cluster: str
    pool: str
    zone: str
    name: str
    internal_ip: str
    group: str  # instance group (and manager) name


@dataclass
class ClusterRecord:
    spec: ClusterSpec
    network_tag: str
    nodes: list[NodeRecord] = field(default_factory=list)
    groups: dict[str, str] = field(default_factory=dict)  # group name -> zone


def network_url(spec: WorldSpec) -> str:
    return f"{API}/projects/{spec.network_project}/global/networks/{spec.network}"


def _node_names(spec: WorldSpec, cluster: ClusterSpec, pool: NodePoolSpec, zone: str) -> tuple[str, list[str]]:
    # GKE names: gke-<cluster>-<pool>-<8 hex>-grp for the group, the same stem plus 4 characters per instance.
    stem = f"gke-{cluster.name}-{pool.name}"[:40] + f"-{_hex(spec.seed, cluster.name, pool.name, zone)}"
    return f"{stem}-grp", [f"{stem}-{_hex(spec.seed, stem, i, n=4)}" for i in range(pool.nodes_per_zone)]


def plan_world(spec: WorldSpec) -> list[ClusterRecord]:
    """Decide every cluster's nodes, groups and addresses (pure, deterministic for a given seed)."""
    records = []
    ip_counter = 2
    for c in spec.clusters:
        rec = ClusterRecord(c, network_tag=f"gke-{c.name}-{_hex(spec.seed, c.name)}-node")
        for pool in c.node_pools:
            for zone in c.zones:
                group, names = _node_names(spec, c, pool, zone)
                rec.groups[group] = zone
                for name in names:
                    ip = f"10.{128 + ip_counter // 65536 % 64}.{ip_counter // 256 % 256}.{ip_counter % 256}"
                    ip_counter += 1
                    rec.nodes.append(NodeRecord(c.name, pool.name, zone, name, ip, group))
        records.append(rec)
    return records


def seed_compute(compute: ComputeEmulator, spec: WorldSpec, records: list[ClusterRecord]) -> None:
    """Create the project(s), network, zones, instances, instance groups and their managers."""
    compute.add_project(spec.project, spec.project_number)
    if spec.network_project != spec.project:
        compute.add_project(spec.network_project, spec.project_number + 1)
    net = network_url(spec)
    compute.seed(
        "networks",
        {"name": spec.network, "autoCreateSubnetworks": True, "routingConfig": {"routingMode": "REGIONAL"}},
        project=spec.network_project,
    )
    zones = sorted({z for r in records for z in r.spec.zones})
    for zone in zones:
        region = zone.rsplit("-", 1)[0]
        compute.seed(
            "zones",
            {"name": zone, "region": f"{API}/projects/{spec.project}/regions/{region}", "status": "UP"},
            project=spec.project,
        )
    for rec in records:
        for group, zone in rec.groups.items():
            members = [n for n in rec.nodes if n.group == group]
            zone_url = f"{API}/projects/{spec.project}/zones/{zone}"
            created_by = f"projects/{spec.project_number}/zones/{zone}/instanceGroupManagers/{group}"
            for node in members:
                compute.seed(
                    "instances",
                    {
                        "name": node.name,
                        "machineType": f"{zone_url}/machineTypes/{rec.spec.node_pools[0].machine_type}",
                        "status": "RUNNING",
                        "tags": {"items": [rec.network_tag]},
                        "labels": {"goog-gke-node": "", "goog-k8s-cluster-name": rec.spec.name},
                        "networkInterfaces": [_nic(spec, rec, node, net, records.index(rec))],
                        "metadata": {
                            "items": [
                                {"key": "created-by", "value": created_by},
                                {"key": "cluster-name", "value": rec.spec.name},
                                {"key": "cluster-location", "value": rec.spec.location},
                            ]
                        },
                    },
                    project=spec.project,
                    zone=zone,
                )
            compute.seed(
                "instanceGroups",
                {
                    "name": group,
                    "network": net,
                    "description": "This instance group is controlled by Instance Group Manager "
                    f"'{group}'. To modify instances in this group, use the Instance Group Manager API.",
                    "instances": [f"{zone_url}/instances/{n.name}" for n in members],
                },
                project=spec.project,
                zone=zone,
            )
            compute.seed(
                "instanceGroupManagers",
                {
                    "name": group,
                    "baseInstanceName": group.removesuffix("-grp"),
                    "targetSize": len(members),
                    "instanceGroup": f"{zone_url}/instanceGroups/{group}",
                    "instanceTemplate": f"{API}/projects/{spec.project}/global/instanceTemplates/{group}",
                },
                project=spec.project,
                zone=zone,
            )


def subnetwork_url(spec: WorldSpec, region: str) -> str:
    """The subnet of an auto mode network in a region: named like the network."""
    return f"{API}/projects/{spec.network_project}/regions/{region}/subnetworks/{spec.network}"


def pod_range_name(spec: WorldSpec, cluster: str) -> str:
    """The subnet's secondary range a VPC-native cluster's pods take their IPs from, named as GKE names it."""
    return f"gke-{cluster}-pods-{_hex(spec.seed, cluster, 'pods')}"


def _nic(spec: WorldSpec, rec: ClusterRecord, node: NodeRecord, net: str, cluster_index: int) -> dict[str, Any]:
    """A node's network interface. A VPC-native cluster's nodes carry an alias IP range of the pods' secondary range
    (GKE gives each node a /24 of it): that is how Compute shows a cluster is VPC-native (container-native load
    balancing needs it); a routes-based cluster's nodes have none."""
    nic: dict[str, Any] = {"name": "nic0", "network": net, "subnetwork": subnetwork_url(spec, rec.spec.region),
                           "networkIP": node.internal_ip}
    if rec.spec.vpc_native:
        index = rec.nodes.index(node)
        second = 64 + (cluster_index * 4 + index // 256) % 128
        nic["aliasIpRanges"] = [{"ipCidrRange": f"10.{second}.{index % 256}.0/24",
                                 "subnetworkRangeName": pod_range_name(spec, rec.spec.name)}]
    return nic


def node_object(spec: WorldSpec, rec: ClusterRecord, node: NodeRecord) -> dict[str, Any]:
    """The Kubernetes Node for a simulated instance, labelled like GKE labels its nodes."""
    region = node.zone.rsplit("-", 1)[0]
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": node.name,
            "labels": {
                "kubernetes.io/hostname": node.name,
                "kubernetes.io/os": "linux",
                "kubernetes.io/arch": "amd64",
                "topology.kubernetes.io/zone": node.zone,
                "topology.kubernetes.io/region": region,
                "cloud.google.com/gke-nodepool": node.pool,
                "node.kubernetes.io/instance-type": rec.spec.node_pools[0].machine_type,
            },
        },
        "spec": {"providerID": f"gce://{spec.project}/{node.zone}/{node.name}"},
        "status": {
            "addresses": [
                {"type": "InternalIP", "address": node.internal_ip},
                {"type": "Hostname", "address": node.name},
            ],
            "conditions": [
                {"type": "Ready", "status": "True", "reason": "KubeletReady", "message": "kubelet is posting ready"}
            ],
            "nodeInfo": {
                "kubeletVersion": KUBE_VERSION, "kubeProxyVersion": KUBE_VERSION,
                "osImage": "Container-Optimized OS from Google", "architecture": "amd64", "operatingSystem": "linux",
                "kernelVersion": "6.1.100+", "containerRuntimeVersion": "containerd://1.7.22",
                "machineID": _hex(node.name, n=32), "systemUUID": _hex("uuid", node.name, n=32),
                "bootID": _hex("boot", node.name, n=32),
            },
        },
    }


def seed_cluster(kube: KubeApiServer, spec: WorldSpec, rec: ClusterRecord) -> None:
    """Register the cluster's nodes and the GKE custom resource definitions."""
    for node in rec.nodes:
        kube.seed(node_object(spec, rec, node))
    kube.install_gke_crds()
