"""Container-native load balancing in the simulator: a load balancer built by hand with google-cloud-compute over the
standalone NEGs GKE's NEG controller made in two clusters (one regional), serving real HTTP from their pods."""

from __future__ import annotations

import json
import os
import subprocess
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
import requests
from google.api_core import exceptions as gexc
from google.cloud import compute_v1
from kubernetes import client as k8s

from gitlab_mci.gcp import Compute
from gitlab_mci.sim.negs import READINESS_GATE
from gitlab_mci.sim.spec import parse_spec
from tests.conftest import RunningSim
from tests.sim.test_sim_negs import REGIONAL, P, all_endpoints, api, deploy, pods, wait_for, warnings

ZONES = {"prod1": REGIONAL, "prod2": ("europe-west1-b",)}
INTERVAL = 1
UNHEALTHY_THRESHOLD = 2
EPSILON = 0.5  # thread scheduling and request round trips on a loaded machine
G = f"https://www.googleapis.com/compute/v1/projects/{P}/global"


@pytest.fixture
def world(make_sim: Callable[[Any], RunningSim]) -> RunningSim:
    """prod1 regional (3 zones, 1 node each), prod2 zonal (2 nodes); shop (3 pods) with NEG `shop-neg` in both."""
    running = make_sim(parse_spec({"negSyncDelay": 0.05, "clusters": [
        {"name": "prod1", "location": "us-central1", "nodes": 1},
        {"name": "prod2", "location": "europe-west1-b", "nodes": 2}]}))
    for cluster in ZONES:
        deploy(running, cluster)
    gc = Compute(P, running.sim.compute_url)
    for cluster, zones in ZONES.items():
        wait_for(lambda c=cluster, z=zones: all_endpoints(gc, z, "shop-neg") and  # type: ignore[misc]
                 all_endpoints(gc, z, "shop-neg") == {(p.spec.node_name, p.status.pod_ip, 8080)
                                                      for p in pods(running, c).values()})
    return running


@pytest.fixture
def gc(world: RunningSim) -> Compute:
    return Compute(P, world.sim.compute_url)


def neg_urls() -> list[str]:
    return [f"https://www.googleapis.com/compute/v1/projects/{P}/zones/{z}/networkEndpointGroups/shop-neg"
            for zones in ZONES.values() for z in zones]


def firewall(gc: Compute, world: RunningSim, *ports: str) -> None:
    """Google's health checkers (and proxies) to the pods' port (8080) on both clusters' nodes."""
    gc.wait(gc.client(compute_v1.FirewallsClient).insert(project=P, firewall_resource=compute_v1.Firewall(
        name="shop-neg-hc", network=f"{G}/networks/default", direction="INGRESS",
        source_ranges=["130.211.0.0/22", "35.191.0.0/16"],
        target_tags=[r.network_tag for r in world.sim.records],
        allowed=[compute_v1.Allowed(I_p_protocol="tcp", ports=list(ports or ["8080"]))])))


def chain(gc: Compute, *, serving_port_check: bool = True) -> str:
    """Health check → backend service (RATE, every NEG of both clusters) → URL map → HTTP proxy → rule; its VIP."""
    checks = gc.client(compute_v1.HealthChecksClient)
    http = compute_v1.HTTPHealthCheck(port_specification="USE_SERVING_PORT", request_path="/healthz") \
        if serving_port_check else compute_v1.HTTPHealthCheck(port=8080, request_path="/healthz")
    gc.wait(checks.insert(project=P, health_check_resource=compute_v1.HealthCheck(
        name="shop-hc", type_="HTTP", http_health_check=http, check_interval_sec=INTERVAL, timeout_sec=INTERVAL,
        healthy_threshold=1, unhealthy_threshold=UNHEALTHY_THRESHOLD)))
    gc.wait(gc.client(compute_v1.BackendServicesClient).insert(
        project=P, backend_service_resource=compute_v1.BackendService(
            name="shop-bs", protocol="HTTP", load_balancing_scheme="EXTERNAL_MANAGED",
            health_checks=[f"{G}/healthChecks/shop-hc"],
            backends=[compute_v1.Backend(group=url, balancing_mode="RATE", max_rate_per_endpoint=100)
                      for url in neg_urls()])))
    gc.wait(gc.client(compute_v1.UrlMapsClient).insert(project=P, url_map_resource=compute_v1.UrlMap(
        name="shop-um", default_service=f"{G}/backendServices/shop-bs")))
    gc.wait(gc.client(compute_v1.TargetHttpProxiesClient).insert(
        project=P, target_http_proxy_resource=compute_v1.TargetHttpProxy(name="shop-px",
                                                                           url_map=f"{G}/urlMaps/shop-um")))
    rules = gc.client(compute_v1.GlobalForwardingRulesClient)
    gc.wait(rules.insert(project=P, forwarding_rule_resource=compute_v1.ForwardingRule(
        name="shop-fr", load_balancing_scheme="EXTERNAL_MANAGED", port_range="80",
        target=f"{G}/targetHttpProxies/shop-px")))
    return str(rules.get(project=P, forwarding_rule="shop-fr").I_p_address)


def health(gc: Compute) -> list[tuple[str, str, int, str]]:
    """getHealth of every NEG backend: (instance, ipAddress, port, healthState) per endpoint."""
    services = gc.client(compute_v1.BackendServicesClient)
    out = []
    for url in neg_urls():
        got = services.get_health(project=P, backend_service="shop-bs",
                                  resource_group_reference_resource=compute_v1.ResourceGroupReference(group=url))
        out += [(s.instance.rsplit("/", 1)[-1], s.ip_address, s.port, s.health_state) for s in got.health_status]
    return sorted(out)


def who(url: str, session: requests.Session | None = None) -> str:
    try:
        answer = (session or requests).get(url, timeout=5)
    except requests.RequestException as exc:
        return type(exc).__name__
    return str(answer.json()["cluster"]) if answer.status_code == 200 else f"{answer.status_code}"


def test_neg_chain_serves_pods_of_both_clusters_once_the_firewall_lets_health_checks_in(
        world: RunningSim, gc: Compute) -> None:
    vip = chain(gc)
    url = world.sim.dataplane.url_for(vip, 80)
    # No firewall rule for Google's health checkers: every endpoint stays UNHEALTHY, nothing is served.
    # The probes time out (UNKNOWN → UNHEALTHY after the threshold), where they would pass if the pods were reached.
    wait_for(lambda: [h["healthState"] for h in world.sim.dataplane.health()] == ["UNHEALTHY"] * 6,
             timeout=INTERVAL * UNHEALTHY_THRESHOLD + INTERVAL + INTERVAL + EPSILON)
    states = health(gc)
    assert len(states) == 6 and {s[3] for s in states} == {"UNHEALTHY"}
    assert who(url) == "502"
    firewall(gc, world)
    assert wait_for(lambda: {s[3] for s in health(gc)} == {"HEALTHY"}, timeout=INTERVAL * 3 + EPSILON)
    # getHealth: one status per endpoint, the pod's IP and port on its node.
    expected = sorted((p.spec.node_name, p.status.pod_ip, 8080, "HEALTHY")
                      for c in ZONES for p in pods(world, c).values())
    assert health(gc) == expected
    answers = [who(url) for _ in range(24)]
    assert set(answers) == {"prod1", "prod2"}, answers
    # listNetworkEndpoints with health: each endpoint's state in the backend service.
    negs = gc.client(compute_v1.NetworkEndpointGroupsClient)
    listed = list(negs.list_network_endpoints(
        project=P, zone="europe-west1-b", network_endpoint_group="shop-neg",
        network_endpoint_groups_list_endpoints_request_resource=compute_v1.NetworkEndpointGroupsListEndpointsRequest(
            health_status="SHOW")))
    assert len(listed) == 3
    assert all([h.health_state for h in i.healths] == ["HEALTHY"] and
               i.healths[0].backend_service.backend_service.endswith("/backendServices/shop-bs") for i in listed)


def test_a_fixed_port_health_check_probes_that_port(world: RunningSim, gc: Compute) -> None:
    firewall(gc, world, "8080", "9090")
    chain(gc, serving_port_check=True)
    assert wait_for(lambda: {s[3] for s in health(gc)} == {"HEALTHY"}, timeout=INTERVAL * 3 + EPSILON)
    checks = gc.client(compute_v1.HealthChecksClient)
    gc.wait(checks.patch(project=P, health_check="shop-hc", health_check_resource=compute_v1.HealthCheck(
        http_health_check=compute_v1.HTTPHealthCheck(port=9090, port_specification="USE_FIXED_PORT"))))
    # The pods listen on their container port 8080 only: probes of 9090 are refused.
    assert wait_for(lambda: {s[3] for s in health(gc)} == {"UNHEALTHY"},
                    timeout=INTERVAL * UNHEALTHY_THRESHOLD + INTERVAL + INTERVAL + EPSILON)
    gc.wait(checks.patch(project=P, health_check="shop-hc", health_check_resource=compute_v1.HealthCheck(
        http_health_check=compute_v1.HTTPHealthCheck(port=8080, port_specification="USE_FIXED_PORT"))))
    assert wait_for(lambda: {s[3] for s in health(gc)} == {"HEALTHY"}, timeout=INTERVAL * 2 + EPSILON)


def test_compute_refuses_mixed_backends_utilization_and_deleting_a_neg_in_use(world: RunningSim,
                                                                              gc: Compute) -> None:
    firewall(gc, world)
    chain(gc)
    services = gc.client(compute_v1.BackendServicesClient)
    group = world.sim.compute.resources("instanceGroups")[0]["selfLink"]
    with pytest.raises(gexc.BadRequest, match="cannot mix instance group backends and network endpoint group"):
        services.patch(project=P, backend_service="shop-bs", backend_service_resource=compute_v1.BackendService(
            fingerprint=services.get(project=P, backend_service="shop-bs").fingerprint, backends=[compute_v1.Backend(group=neg_urls()[0], balancing_mode="RATE", max_rate_per_endpoint=10),
                      compute_v1.Backend(group=group, balancing_mode="UTILIZATION")]))
    with pytest.raises(gexc.BadRequest, match=r"'UTILIZATION'\. Balancing mode must be RATE or CONNECTION"):
        services.insert(project=P, backend_service_resource=compute_v1.BackendService(
            name="shop-bs2", health_checks=[f"{G}/healthChecks/shop-hc"],
            backends=[compute_v1.Backend(group=neg_urls()[0], balancing_mode="UTILIZATION", max_utilization=0.8)]))
    with pytest.raises(gexc.BadRequest, match="maxRatePerEndpoint"):
        services.insert(project=P, backend_service_resource=compute_v1.BackendService(
            name="shop-bs2", health_checks=[f"{G}/healthChecks/shop-hc"],
            backends=[compute_v1.Backend(group=neg_urls()[0], balancing_mode="RATE")]))
    gc.wait(services.insert(project=P, backend_service_resource=compute_v1.BackendService(
        name="shop-bs2", health_checks=[f"{G}/healthChecks/shop-hc"],
        backends=[compute_v1.Backend(group=neg_urls()[0], balancing_mode="CONNECTION", max_connections_per_endpoint=5)])))
    negs = gc.client(compute_v1.NetworkEndpointGroupsClient)
    with pytest.raises(gexc.BadRequest, match="already being used by") as caught:
        negs.delete(project=P, zone="europe-west1-b", network_endpoint_group="shop-neg")
    assert caught.value.errors[0]["reason"] == "resourceInUseByAnotherResource"
    assert world.sim.journal.writes("compute")[-1].status == 400


def test_removing_the_annotation_of_a_neg_in_use_warns_and_deletes_it_once_unused(world: RunningSim,
                                                                                   gc: Compute) -> None:
    firewall(gc, world)
    chain(gc)
    core = k8s.CoreV1Api(api(world, "prod2"))
    core.patch_namespaced_service("shop", "default", {"metadata": {"annotations": {"cloud.google.com/neg": None}}})
    message = wait_for(lambda: warnings(world, "prod2", "shop"))
    assert "resourceInUseByAnotherResource" in message[0] and "shop-neg" in message[0]
    assert world.sim.compute.get("networkEndpointGroups", "shop-neg", project=P, zone="europe-west1-b")
    services = gc.client(compute_v1.BackendServicesClient)
    keep = [compute_v1.Backend(group=u, balancing_mode="RATE", max_rate_per_endpoint=100)
            for u in neg_urls() if "europe-west1" not in u]
    gc.wait(services.patch(project=P, backend_service="shop-bs",
                           backend_service_resource=compute_v1.BackendService(
                               backends=keep, fingerprint=services.get(project=P, backend_service="shop-bs").fingerprint)))
    wait_for(lambda: world.sim.compute.get("networkEndpointGroups", "shop-neg", project=P,
                                           zone="europe-west1-b") is None, message="the unused NEG deleted")


def _load(url: str, stop: threading.Event, log: list[tuple[float, str]], rate: float = 20.0) -> None:
    """Requests at ``rate`` per second on a fixed schedule: (time sent, cluster or the failure)."""
    with requests.Session() as s:
        began, i = time.monotonic(), 0
        while not stop.is_set():
            log.append((time.monotonic(), who(f"{url}/", s)))
            i += 1
            stop.wait(max(0.0, began + i / rate - time.monotonic()))


def test_a_rollout_in_both_clusters_under_20_requests_per_second_fails_no_request(
        world: RunningSim, gc: Compute, capsys: pytest.CaptureFixture[str]) -> None:
    firewall(gc, world)
    url = world.sim.dataplane.url_for(chain(gc), 80)
    wait_for(lambda: {s[3] for s in health(gc)} == {"HEALTHY"}, timeout=INTERVAL * 3 + EPSILON)
    # A new endpoint needs two passed probes, a second apart: each pod of the rollout waits for them.
    checks = gc.client(compute_v1.HealthChecksClient)
    gc.wait(checks.patch(project=P, health_check="shop-hc",
                         health_check_resource=compute_v1.HealthCheck(healthy_threshold=2)))
    before = {c: set(pods(world, c)) for c in ZONES}
    stop, log = threading.Event(), []  # type: ignore[var-annotated]
    load = threading.Thread(target=_load, args=(url, stop, log), daemon=True)
    load.start()
    try:
        time.sleep(1.0)
        began = time.monotonic()
        for cluster in ZONES:
            k8s.AppsV1Api(api(world, cluster)).patch_namespaced_deployment("shop", "default", {"spec": {"template": {
                "spec": {"containers": [{"name": "app", "image": "shop:2",
                                         "ports": [{"name": "http", "containerPort": 8080}]}]}}}})
        wait_for(lambda: all(not set(pods(world, c)) & before[c] and len(pods(world, c)) == 3 for c in ZONES),
                 timeout=30, message="both rollouts done")
        took = time.monotonic() - began
        time.sleep(1.0)
    finally:
        stop.set()
        load.join(timeout=10)
    failed = [e for e in log if e[1] not in ("prod1", "prod2")]
    with capsys.disabled():
        print(f"\nrollout of 3 pods in each cluster under 20 requests/s: {len(log)} requests, {len(failed)} failed, "
              f"rollouts took {took:.1f}s")
    assert failed == [], failed[:5]
    assert took >= 3 * INTERVAL  # three pods one after the other, each healthy only after its second probe
    assert {c for _t, c in log if _t > began + took} == {"prod1", "prod2"}
    for cluster in ZONES:  # every new pod waited for the load balancer's health check
        for pod in pods(world, cluster).values():
            gate = next(c for c in pod.status.conditions if c.type == READINESS_GATE)
            assert gate.reason == "LoadBalancerNegReady", gate
    expected = sorted((p.spec.node_name, p.status.pod_ip, 8080, "HEALTHY")
                      for c in ZONES for p in pods(world, c).values())
    assert wait_for(lambda: health(gc) == expected, timeout=INTERVAL * 2 + EPSILON)


def test_sim_fail_of_a_clusters_pods_moves_traffic_within_the_detection_time(
        world: RunningSim, gc: Compute, capsys: pytest.CaptureFixture[str]) -> None:
    firewall(gc, world)
    url = world.sim.dataplane.url_for(chain(gc), 80)
    wait_for(lambda: {s[3] for s in health(gc)} == {"HEALTHY"}, timeout=INTERVAL * 3 + EPSILON)
    detection = INTERVAL * UNHEALTHY_THRESHOLD + INTERVAL
    world.sim.dataplane.fail("prod1")
    started, seen = time.monotonic(), []
    while (now := time.monotonic() - started) < detection + 1.5:
        seen.append((now, who(url)))
        time.sleep(0.02)
    switched = None
    for at, answer in seen:
        switched = (at if switched is None else switched) if answer == "prod2" else None
    with capsys.disabled():
        print(f"\nNEG failover: all traffic on prod2 {switched or 0:.2f}s after prod1's pods failed (limit "
              f"{detection}s + {EPSILON}s), {sum(a not in ('prod1', 'prod2') for _t, a in seen)} failed before")
    assert switched is not None and switched <= detection + EPSILON, seen[-5:]
    assert {s[3] for s in health(gc) if s[0].startswith("gke-prod1")} == {"UNHEALTHY"}


def _tool(world: RunningSim, *args: str) -> str:
    env = {**os.environ, "KUBECONFIG": str(world.files.kubeconfig), "CLOUDSDK_CONFIG": str(world.files.gcloud_config)}
    done = subprocess.run(list(args), capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_kubectl_rollout_restart_waits_for_the_load_balancer_and_gcloud_shows_endpoint_health(
        world: RunningSim, gc: Compute) -> None:
    firewall(gc, world)
    url = world.sim.dataplane.url_for(chain(gc), 80)
    wait_for(lambda: {s[3] for s in health(gc)} == {"HEALTHY"}, timeout=INTERVAL * 3 + EPSILON)
    status = _tool(world, "kubectl", "--context", "prod1", "get", "service", "shop", "-o",
                   r"jsonpath={.metadata.annotations.cloud\.google\.com/neg-status}")
    assert json.loads(status) == {"network_endpoint_groups": {"5000": "shop-neg"}, "zones": list(REGIONAL)}
    before = set(pods(world, "prod2"))
    _tool(world, "kubectl", "--context", "prod2", "rollout", "restart", "deployment/shop")
    done = _tool(world, "kubectl", "--context", "prod2", "rollout", "status", "deployment/shop", "--timeout=30s")
    assert "successfully rolled out" in done
    assert not set(pods(world, "prod2")) & before and len(pods(world, "prod2")) == 3
    assert who(url) in ("prod1", "prod2")
    shown = json.loads(_tool(world, "gcloud", "compute", "backend-services", "get-health", "shop-bs", "--global",
                             "--format=json", "--quiet"))
    by_group = {g["backend"].rsplit("/zones/", 1)[-1]: g["status"]["healthStatus"] for g in shown}
    assert set(by_group) == {f"{z}/networkEndpointGroups/shop-neg" for zones in ZONES.values() for z in zones}
    prod2 = by_group["europe-west1-b/networkEndpointGroups/shop-neg"]
    assert sorted((s["ipAddress"], s["port"]) for s in prod2) == sorted(
        (p.status.pod_ip, 8080) for p in pods(world, "prod2").values())
