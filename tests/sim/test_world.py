"""The simulated world is consistent when walked with real clients, the way discovery walks real GKE."""

from __future__ import annotations

from typing import Any

from google.api_core.client_options import ClientOptions
from google.auth.credentials import AnonymousCredentials
from google.cloud import compute_v1
from kubernetes import client as k8s

from gitlab_mci.sim.spec import parse_spec
from tests.conftest import RunningSim


def _compute(cls: Any, running: RunningSim) -> Any:
    return cls(credentials=AnonymousCredentials(), client_options=ClientOptions(api_endpoint=running.sim.compute_url))


def _core(running: RunningSim, cluster: str) -> k8s.CoreV1Api:
    cfg = k8s.Configuration(host=running.sim.kube_url(cluster))
    return k8s.CoreV1Api(k8s.ApiClient(cfg))


def _walk(running: RunningSim, cluster: str) -> set[tuple[str, str]]:
    """Node → instance → created-by → instance group manager → instance group; returns (zone, group URL) pairs."""
    instances = _compute(compute_v1.InstancesClient, running)
    managers = _compute(compute_v1.InstanceGroupManagersClient, running)
    groups = _compute(compute_v1.InstanceGroupsClient, running)
    found = set()
    for node in _core(running, cluster).list_node().items:
        project, zone, name = node.spec.provider_id.removeprefix("gce://").split("/")
        assert node.metadata.labels["topology.kubernetes.io/zone"] == zone
        inst = instances.get(project=project, zone=zone, instance=name)
        assert inst.network_interfaces[0].network_i_p == next(
            a.address for a in node.status.addresses if a.type == "InternalIP"
        )
        assert inst.tags.items and inst.network_interfaces[0].network.endswith("/global/networks/default") is not None
        created_by = next(i.value for i in inst.metadata.items if i.key == "created-by")
        mig_name = created_by.rsplit("/", 1)[1]
        mig = managers.get(project=project, zone=zone, instance_group_manager=mig_name)
        group_name = mig.instance_group.rsplit("/", 1)[1]
        members = groups.list_instances(
            project=project, zone=zone, instance_group=group_name,
            instance_groups_list_instances_request_resource=compute_v1.InstanceGroupsListInstancesRequest(),
        )
        assert inst.self_link in [m.instance for m in members]
        found.add((zone, mig.instance_group))
    return found


def test_every_node_is_an_instance_of_its_node_pool_group(sim: RunningSim) -> None:
    for cluster, rec in zip(sim.sim.clusters, sim.sim.records, strict=True):
        groups = _walk(sim, cluster)
        assert {z for z, _ in groups} == set(rec.spec.zones)
        assert len(groups) == len(rec.groups)
    assert not sim.sim.journal.writes(), "walking the world must not write"


def test_regional_cluster_and_shared_vpc(make_sim: Any) -> None:
    running = make_sim(parse_spec({
        "project": "app-project",
        "networkProject": "host-project",
        "network": "shared-net",
        "clusters": [{"name": "eu", "location": "europe-west1", "nodes": 1}],
    }))
    groups = _walk(running, "eu")
    # europe-west1 has no zone a: GKE puts a regional cluster there in b, c and d.
    assert {z for z, _ in groups} == {"europe-west1-b", "europe-west1-c", "europe-west1-d"}
    zones = _compute(compute_v1.ZonesClient, running).list(project="app-project")
    assert sorted(z.name for z in zones) == ["europe-west1-b", "europe-west1-c", "europe-west1-d"]
    inst = _compute(compute_v1.InstancesClient, running).list(project="app-project", zone="europe-west1-b")
    (first,) = list(inst)
    assert first.network_interfaces[0].network.endswith("/projects/host-project/global/networks/shared-net")
    net = _compute(compute_v1.NetworksClient, running).get(project="host-project", network="shared-net")
    assert net.name == "shared-net"
