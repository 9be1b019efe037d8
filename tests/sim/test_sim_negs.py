"""GKE's NEG controller in the simulator, seen through the real clients: a Service annotated
``cloud.google.com/neg`` gets standalone zonal NEGs of its pods, which a hand-built load balancer serves from."""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Callable
from typing import Any

import pytest
from google.api_core import exceptions as gexc
from google.cloud import compute_v1
from kubernetes import client as k8s

from gitlab_mci.gcp import Compute
from gitlab_mci.sim.mci import gke_neg_name
from gitlab_mci.sim.negs import NEG_STATUS_ANNOTATION, READINESS_GATE
from gitlab_mci.sim.spec import parse_spec
from tests.conftest import RunningSim

P = "demo-project"
LABELS = {"app": "shop"}
REGIONAL = ("us-central1-a", "us-central1-b", "us-central1-c")


def wait_for(what: Callable[[], Any], timeout: float = 10.0, message: str = "") -> Any:
    """Poll ``what`` until it returns something truthy (bounded)."""
    deadline = time.monotonic() + timeout
    while True:
        value = what()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting: {message or what}")
        time.sleep(0.05)


def api(running: RunningSim, cluster: str) -> k8s.ApiClient:
    return k8s.ApiClient(k8s.Configuration(host=running.sim.kube_url(cluster)))


def deploy(running: RunningSim, cluster: str, *, replicas: int = 3, neg: str | None = '{"exposed_ports": '
           '{"5000": {"name": "shop-neg"}}}', service: str = "shop", target: int | str = 8080) -> None:
    """The app on container port 8080 and a ClusterIP Service on 5000 annotated for a standalone NEG."""
    c = api(running, cluster)
    k8s.AppsV1Api(c).create_namespaced_deployment("default", {
        "metadata": {"name": "shop"},
        "spec": {"replicas": replicas, "selector": {"matchLabels": LABELS},
                 "template": {"metadata": {"labels": LABELS},
                              "spec": {"containers": [{"name": "app", "image": "shop:1",
                                                       "ports": [{"name": "http", "containerPort": 8080}]}]}}}})
    k8s.CoreV1Api(c).create_namespaced_service("default", {
        "metadata": {"name": service, "annotations": {"cloud.google.com/neg": neg} if neg else {}},
        "spec": {"type": "ClusterIP", "selector": LABELS, "ports": [{"port": 5000, "targetPort": target}]}})


@pytest.fixture
def world(make_sim: Callable[[Any], RunningSim]) -> RunningSim:
    """prod1: regional (3 zones, 1 node each); prod2: zonal with 2 nodes; the NEG controller quick."""
    return make_sim(parse_spec({"negSyncDelay": 0.05, "clusters": [
        {"name": "prod1", "location": "us-central1", "nodes": 1},
        {"name": "prod2", "location": "europe-west1-b", "nodes": 2}]}))


@pytest.fixture
def gc(world: RunningSim) -> Compute:
    return Compute(P, world.sim.compute_url)


def negs_by_zone(gc: Compute, name: str) -> dict[str, compute_v1.NetworkEndpointGroup]:
    client = gc.client(compute_v1.NetworkEndpointGroupsClient)
    out = {}
    for scope, listing in client.aggregated_list(project=P):
        for neg in listing.network_endpoint_groups:
            if neg.name == name:
                out[scope.removeprefix("zones/")] = neg
    return out


def endpoints(gc: Compute, zone: str, name: str) -> set[tuple[str, str, int]]:
    client = gc.client(compute_v1.NetworkEndpointGroupsClient)
    try:
        return {(i.network_endpoint.instance, i.network_endpoint.ip_address, i.network_endpoint.port)
                for i in client.list_network_endpoints(project=P, zone=zone, network_endpoint_group=name)}
    except gexc.NotFound:
        return set()


def pods(running: RunningSim, cluster: str) -> dict[str, Any]:
    return {str(p.metadata.name): p for p in k8s.CoreV1Api(api(running, cluster)).list_namespaced_pod(
        "default", label_selector="app=shop").items}


def pod_endpoints(running: RunningSim, cluster: str) -> set[tuple[str, str, int]]:
    return {(p.spec.node_name, p.status.pod_ip, 8080) for p in pods(running, cluster).values()}


def all_endpoints(gc: Compute, zones: tuple[str, ...], name: str) -> set[tuple[str, str, int]]:
    return set().union(*(endpoints(gc, z, name) for z in zones))


def warnings(running: RunningSim, cluster: str, service: str) -> list[str]:
    events = k8s.CoreV1Api(api(running, cluster)).list_namespaced_event("default").items
    return [str(e.message) for e in events if e.type == "Warning" and e.involved_object.name == service]


# --- the controller -----------------------------------------------------------------------------------------------


def test_annotated_service_gets_a_neg_in_every_zone_of_a_regional_cluster(world: RunningSim, gc: Compute) -> None:
    deploy(world, "prod1")
    found = wait_for(lambda: len(negs_by_zone(gc, "shop-neg")) == 3 and negs_by_zone(gc, "shop-neg"))
    assert sorted(found) == list(REGIONAL)
    for neg in found.values():
        assert neg.network_endpoint_type == "GCE_VM_IP_PORT"
        assert neg.network.endswith("/projects/demo-project/global/networks/default")
        assert neg.subnetwork.endswith("/regions/us-central1/subnetworks/default")
        assert json.loads(neg.description) == {"cluster-uid": json.loads(neg.description)["cluster-uid"],
                                               "namespace": "default", "service-name": "shop", "port": "5000"}
    # Endpoints: every pod of the Service, in its node's zone, on the container port the Service targets.
    assert wait_for(lambda: all_endpoints(gc, REGIONAL, "shop-neg") == pod_endpoints(world, "prod1"))
    assert sum(negs_by_zone(gc, "shop-neg")[z].size for z in REGIONAL) == 3
    svc = k8s.CoreV1Api(api(world, "prod1")).read_namespaced_service("shop", "default")
    status = json.loads(wait_for(lambda: k8s.CoreV1Api(api(world, "prod1")).read_namespaced_service(
        "shop", "default").metadata.annotations.get(NEG_STATUS_ANNOTATION)))
    assert status == {"network_endpoint_groups": {"5000": "shop-neg"}, "zones": list(REGIONAL)}
    assert svc.spec.type == "ClusterIP"
    assert world.sim.journal.writes("compute") == []  # the controller is Google's, not a client of the API


def test_a_neg_without_a_name_is_named_as_gke_names_it(world: RunningSim, gc: Compute) -> None:
    deploy(world, "prod2", neg='{"exposed_ports": {"5000": {}}}', target="http")
    name = gke_neg_name(P, "prod2", "default", "shop", 5000)
    assert name.startswith("k8s1-") and len(name) <= 63
    neg = wait_for(lambda: negs_by_zone(gc, name).get("europe-west1-b"))
    assert neg.zone.endswith("/zones/europe-west1-b")
    # targetPort "http" is the container port's name: endpoints are on 8080.
    assert wait_for(lambda: endpoints(gc, "europe-west1-b", name) == pod_endpoints(world, "prod2"))


def test_gcloud_lists_the_negs_and_their_endpoints(world: RunningSim) -> None:
    deploy(world, "prod2", replicas=2)
    world.sim.negs.settle()
    env = {**os.environ, "CLOUDSDK_CONFIG": str(world.files.gcloud_config)}

    def gcloud(*args: str) -> Any:
        done = subprocess.run(["gcloud", "compute", "network-endpoint-groups", *args, "--format=json", "--quiet"],
                              capture_output=True, text=True, env=env, timeout=120)
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout)

    wait_for(lambda: endpoints(Compute(P, world.sim.compute_url), "europe-west1-b", "shop-neg"))
    listed = gcloud("list")
    assert [(n["name"], n["zone"].rsplit("/", 1)[-1], n["size"]) for n in listed] == \
        [("shop-neg", "europe-west1-b", 2)]
    items = gcloud("list-network-endpoints", "shop-neg", "--zone", "europe-west1-b")
    assert {(i["networkEndpoint"]["instance"], i["networkEndpoint"]["ipAddress"], i["networkEndpoint"]["port"])
            for i in items} == pod_endpoints(world, "prod2")
    # A NEG made and filled by hand with gcloud, as autoneg users do.
    node = world.sim.records[1].nodes[0].name
    gcloud("create", "by-hand", "--zone", "europe-west1-b", "--network-endpoint-type", "gce-vm-ip-port",
           "--default-port", "8080", "--network", "default")
    gcloud("update", "by-hand", "--zone", "europe-west1-b", "--add-endpoint", f"instance={node},ip=10.4.0.99")
    items = gcloud("list-network-endpoints", "by-hand", "--zone", "europe-west1-b")
    assert [i["networkEndpoint"] for i in items] == [{"instance": node, "ipAddress": "10.4.0.99", "port": 8080}]
    gcloud("update", "by-hand", "--zone", "europe-west1-b", "--remove-endpoint", f"instance={node},ip=10.4.0.99")
    assert gcloud("list-network-endpoints", "by-hand", "--zone", "europe-west1-b") == []
    gcloud("delete", "by-hand", "--zone", "europe-west1-b")


def test_neg_endpoints_follow_a_rollout_and_pods_wait_for_the_readiness_gate(world: RunningSim, gc: Compute) -> None:
    deploy(world, "prod1")
    wait_for(lambda: all_endpoints(gc, REGIONAL, "shop-neg") == pod_endpoints(world, "prod1"))
    before = set(pods(world, "prod1"))
    apps = k8s.AppsV1Api(api(world, "prod1"))
    apps.patch_namespaced_deployment("shop", "default", {"spec": {"template": {"spec": {"containers": [
        {"name": "app", "image": "shop:2", "ports": [{"name": "http", "containerPort": 8080}]}]}}}})
    # No backend service uses the NEG: each new pod's gate opens once its endpoint is attached, and the rollout
    # goes on, one pod at a time.
    wait_for(lambda: not set(pods(world, "prod1")) & before, message="every pod replaced")
    after = pods(world, "prod1")
    assert len(after) == 3
    for pod in after.values():
        assert {"condition_type": READINESS_GATE} in [g.to_dict() for g in pod.spec.readiness_gates]
        gate = next(c for c in pod.status.conditions if c.type == READINESS_GATE)
        assert gate.status == "True" and gate.reason == "LoadBalancerNegWithoutHealthCheck"
    assert wait_for(lambda: all_endpoints(gc, REGIONAL, "shop-neg") == pod_endpoints(world, "prod1"))
    status = apps.read_namespaced_deployment_status("shop", "default").status
    assert (status.replicas, status.updated_replicas, status.ready_replicas) == (3, 3, 3)


def test_removing_the_annotation_deletes_the_negs_and_the_status(world: RunningSim, gc: Compute) -> None:
    deploy(world, "prod1")
    wait_for(lambda: len(negs_by_zone(gc, "shop-neg")) == 3)
    core = k8s.CoreV1Api(api(world, "prod1"))
    core.patch_namespaced_service("shop", "default", {"metadata": {"annotations": {"cloud.google.com/neg": None}}})
    wait_for(lambda: not negs_by_zone(gc, "shop-neg"), message="NEGs deleted")
    wait_for(lambda: NEG_STATUS_ANNOTATION not in (core.read_namespaced_service("shop", "default").metadata
                                                   .annotations or {}))


def test_deleting_the_service_deletes_its_negs(world: RunningSim, gc: Compute) -> None:
    deploy(world, "prod2")
    wait_for(lambda: negs_by_zone(gc, "shop-neg"))
    k8s.CoreV1Api(api(world, "prod2")).delete_namespaced_service("shop", "default")
    wait_for(lambda: not negs_by_zone(gc, "shop-neg"), message="NEGs deleted")


def test_a_routes_based_cluster_gets_a_warning_and_no_neg(make_sim: Callable[[Any], RunningSim]) -> None:
    running = make_sim(parse_spec({"negSyncDelay": 0.05, "clusters": [
        {"name": "legacy", "location": "us-central1-a", "nodes": 1, "vpcNative": False},
        {"name": "modern", "location": "us-central1-b", "nodes": 1}]}))
    # How a client tells them apart in Compute: VPC-native nodes carry the pods' alias IP range.
    for inst in running.sim.compute.resources("instances"):
        nic = inst["networkInterfaces"][0]
        if "legacy" in inst["name"]:
            assert "aliasIpRanges" not in nic
        else:
            assert nic["aliasIpRanges"][0]["subnetworkRangeName"].startswith("gke-modern-pods-")
    deploy(running, "legacy")
    message = wait_for(lambda: warnings(running, "legacy", "shop"))
    assert "VPC-native" in message[0] and "legacy" in message[0]
    running.sim.negs.settle()
    assert running.sim.compute.resources("networkEndpointGroups") == []
    assert NEG_STATUS_ANNOTATION not in (k8s.CoreV1Api(api(running, "legacy")).read_namespaced_service(
        "shop", "default").metadata.annotations or {})


def test_two_services_asking_for_one_neg_name_the_second_gets_a_warning(world: RunningSim, gc: Compute) -> None:
    deploy(world, "prod2")
    wait_for(lambda: negs_by_zone(gc, "shop-neg"))
    k8s.CoreV1Api(api(world, "prod2")).create_namespaced_service("default", {
        "metadata": {"name": "copy", "annotations": {"cloud.google.com/neg":
                                                      '{"exposed_ports": {"5000": {"name": "shop-neg"}}}'}},
        "spec": {"selector": LABELS, "ports": [{"port": 5000, "targetPort": 8080}]}})
    message = wait_for(lambda: warnings(world, "prod2", "copy"))
    assert "shop-neg is already in use" in message[0]
    neg = negs_by_zone(gc, "shop-neg")["europe-west1-b"]
    assert json.loads(neg.description)["service-name"] == "shop"


def test_a_port_the_service_does_not_have_gets_a_warning(world: RunningSim, gc: Compute) -> None:
    deploy(world, "prod2", neg='{"exposed_ports": {"6000": {"name": "nope"}}}')
    message = wait_for(lambda: warnings(world, "prod2", "shop"))
    assert message == ['error processing service "default/shop": port 6000 specified in "cloud.google.com/neg" '
                       "doesn't exist in the service"]  # ingress-gce's wording
    assert not negs_by_zone(gc, "nope")


# --- the Compute API ----------------------------------------------------------------------------------------------


def test_attach_and_detach_network_endpoints_by_hand(world: RunningSim, gc: Compute) -> None:
    client = gc.client(compute_v1.NetworkEndpointGroupsClient)
    zone = "europe-west1-b"
    node = next(n for n in world.sim.records[1].nodes)
    gc.wait(client.insert(project=P, zone=zone, network_endpoint_group_resource=compute_v1.NetworkEndpointGroup(
        name="by-hand", network_endpoint_type="GCE_VM_IP_PORT", default_port=8080)))
    endpoint = compute_v1.NetworkEndpoint(instance=node.name, ip_address="10.4.0.99")
    gc.wait(client.attach_network_endpoints(
        project=P, zone=zone, network_endpoint_group="by-hand",
        network_endpoint_groups_attach_endpoints_request_resource=compute_v1.NetworkEndpointGroupsAttachEndpointsRequest(
            network_endpoints=[endpoint])))
    assert endpoints(gc, zone, "by-hand") == {(node.name, "10.4.0.99", 8080)}
    with pytest.raises(gexc.BadRequest, match="instance"):
        client.attach_network_endpoints(
            project=P, zone=zone, network_endpoint_group="by-hand",
            network_endpoint_groups_attach_endpoints_request_resource=compute_v1.
            NetworkEndpointGroupsAttachEndpointsRequest(network_endpoints=[
                compute_v1.NetworkEndpoint(instance="no-such-vm", ip_address="10.4.0.98", port=80)]))
    gc.wait(client.detach_network_endpoints(
        project=P, zone=zone, network_endpoint_group="by-hand",
        network_endpoint_groups_detach_endpoints_request_resource=compute_v1.NetworkEndpointGroupsDetachEndpointsRequest(
            network_endpoints=[endpoint])))
    assert endpoints(gc, zone, "by-hand") == set()
    gc.wait(client.delete(project=P, zone=zone, network_endpoint_group="by-hand"))


def test_moving_a_neg_name_to_another_port_recreates_it_for_that_port(world: RunningSim, gc: Compute) -> None:
    deploy(world, "prod2")
    wait_for(lambda: negs_by_zone(gc, "shop-neg"))
    core = k8s.CoreV1Api(api(world, "prod2"))
    core.patch_namespaced_service("shop", "default", {
        "metadata": {"annotations": {"cloud.google.com/neg": '{"exposed_ports": {"6000": {"name": "shop-neg"}}}'}},
        "spec": {"ports": [{"name": "a", "port": 5000, "targetPort": 8080},
                           {"name": "b", "port": 6000, "targetPort": 8080}]}})
    wait_for(lambda: json.loads(negs_by_zone(gc, "shop-neg").get("europe-west1-b", compute_v1.NetworkEndpointGroup(
        description="{}")).description).get("port") == "6000", message="the NEG made again for port 6000")
    status = wait_for(lambda: json.loads(core.read_namespaced_service("shop", "default").metadata.annotations.get(
        NEG_STATUS_ANNOTATION, "{}")).get("network_endpoint_groups") == {"6000": "shop-neg"})
    assert status
    assert wait_for(lambda: endpoints(gc, "europe-west1-b", "shop-neg") == pod_endpoints(world, "prod2"))


def test_world_spec_fields_for_negs_are_checked() -> None:
    from gitlab_mci.errors import UserError

    spec = parse_spec({"negSyncDelay": 1, "clusters": [{"name": "a", "vpcNative": False}, {"name": "b"}]})
    assert (spec.neg_delay, [c.vpc_native for c in spec.clusters]) == (1.0, [False, True])
    with pytest.raises(UserError, match=r"clusters\[0\]\.vpcNative: must be true or false"):
        parse_spec({"clusters": [{"name": "a", "vpcNative": "no"}]})
    with pytest.raises(UserError, match="negSyncDelay"):
        parse_spec({"negSyncDelay": -1, "clusters": [{"name": "a"}]})


def test_a_neg_status_someone_else_wrote_is_left_alone(world: RunningSim, gc: Compute) -> None:
    """Google's hosted controllers write neg-status on their own Services, without the neg annotation."""
    theirs = '{"network_endpoint_groups":{"80":"k8s1-theirs"},"zones":["europe-west1-b"]}'
    core = k8s.CoreV1Api(api(world, "prod2"))
    core.create_namespaced_service("default", {
        "metadata": {"name": "derived", "annotations": {NEG_STATUS_ANNOTATION: theirs}},
        "spec": {"selector": LABELS, "ports": [{"port": 80}]}})
    deploy(world, "prod2")  # a change the controller reconciles
    wait_for(lambda: negs_by_zone(gc, "shop-neg"))
    world.sim.negs.settle()
    assert core.read_namespaced_service("derived", "default").metadata.annotations[NEG_STATUS_ANNOTATION] == theirs
