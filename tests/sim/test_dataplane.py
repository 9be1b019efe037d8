"""The simulator's data plane with the real clients: `gitlab-mci lb apply` builds the load balancer, then real HTTP(S)
goes through the listener the simulator reports for the VIP."""

from __future__ import annotations

import http.client
import itertools
import json
import socket
import ssl
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import requests
from google.cloud import compute_v1
from kubernetes import client as k8s

from gitlab_mci.gcp import Compute
from gitlab_mci.sim.dataplane import DataPlane
from gitlab_mci.sim.spec import parse_spec
from gitlab_mci.sim.urlmap import redirect_target, route
from tests.cli_helpers import run_cli as cli
from tests.conftest import RunningSim
from tests.pki import write_pair

P = "demo-project"
BASE = ["--lb", "shop", "--context", "prod1,prod2", "--check-interval-sec", "1"]
SHOP = [*BASE, "--service", "shop-auto-deploy", "--port", "web"]


@pytest.fixture
def world(make_app_world: Any) -> RunningSim:
    """Two zonal clusters of two nodes, the shop app (2 pods) in each on node port 30999, clients pointed here."""
    running: RunningSim = make_app_world(2, 2)
    return running


def vip(world: RunningSim) -> str:
    address = world.sim.compute.get("globalAddresses", "gmci-ip-shop", project=P)
    assert address is not None
    return str(address["address"])


def apply(world: RunningSim, capsys: pytest.CaptureFixture[str], *args: str) -> str:
    code, _out, err = cli(["lb", "apply", *args], capsys)
    assert code == 0, err
    assert world.sim.dataplane.wait_health("HEALTHY", timeout=5), world.sim.dataplane.health()
    return world.sim.dataplane.url_for(vip(world), 80)


def get(url: str, **kw: Any) -> requests.Response:
    return requests.get(url, timeout=5, allow_redirects=False, **kw)


def test_both_clusters_answer_in_turn_and_the_listener_is_reported(
        world: RunningSim, capsys: pytest.CaptureFixture[str]) -> None:
    url = apply(world, capsys, *SHOP)
    host, _port = url.removeprefix("http://").split(":")
    assert host == vip(world) and host.startswith("127.")  # the VIP itself, on loopback
    answers = [get(f"{url}/items?page=2").json() for _ in range(8)]
    assert Counter(a["cluster"] for a in answers) == {"prod1": 4, "prod2": 4}
    assert [a["cluster"] for a in answers[:2]] in (["prod1", "prod2"], ["prod2", "prod1"])  # round robin
    assert {a["zone"] for a in answers} == {"us-central1-a", "europe-west1-b"}
    assert all(a["pod"].startswith("shop-") and a["path"] == "/items?page=2" and a["host"] == host for a in answers)
    assert len({a["pod"] for a in answers}) == 4  # every pod of both clusters served

    # Reported: Python API, admin API, state files, `sim status` and getHealth.
    listeners = world.sim.dataplane.listeners()
    assert listeners == [{"rule": "gmci-fr-shop-http", "vip": host, "port": 80, "scheme": "http", "url": url,
                          "proxy": "gmci-hp-shop"}]
    admin = requests.get(f"{world.sim.compute_url}/_sim/dataplane", timeout=5).json()
    assert admin["listeners"] == listeners and admin["faults"] == []
    assert {h["healthState"] for h in admin["health"]} == {"HEALTHY"} and len(admin["health"]) == 4
    assert json.loads((world.files.state_dir / "listeners.json").read_text())["listeners"] == listeners
    code, out, _ = cli(["sim", "status", "--state-dir", str(world.files.state_dir)], capsys)
    assert code == 0 and f"{host}:80 → {url}" in out
    code, out, _ = cli(["lb", "status", *BASE[:4]], capsys)
    assert code == 0 and "2/2" in out and "0/2" not in out

    # Destroyed: the listener closes and nothing answers there any more.
    assert cli(["lb", "destroy", *BASE[:4], "--release-ip"], capsys)[0] == 0
    deadline = time.monotonic() + 2
    while world.sim.dataplane.listeners() and time.monotonic() < deadline:
        time.sleep(0.02)
    assert world.sim.dataplane.listeners() == []
    with pytest.raises(requests.ConnectionError):
        get(url)


def _deploy_cart(running: RunningSim, cluster: str) -> None:
    api = k8s.ApiClient(k8s.Configuration(host=running.sim.kube_url(cluster)))
    labels = {"app": "cart"}
    k8s.AppsV1Api(api).create_namespaced_deployment("default", {
        "metadata": {"name": "cart"},
        "spec": {"replicas": 1, "selector": {"matchLabels": labels}, "template": {"metadata": {"labels": labels},
                 "spec": {"containers": [{"name": "app", "image": "x", "ports": [{"containerPort": 5000}],
                                          "readinessProbe": {"httpGet": {"path": "/healthz", "port": 5000}}}]}}}})
    k8s.CoreV1Api(api).create_namespaced_service("default", {
        "metadata": {"name": "cart"},
        "spec": {"type": "NodePort", "selector": labels,
                 "ports": [{"name": "web", "port": 5000, "targetPort": 5000, "nodePort": 31000}]}})


def test_host_and_path_rules_route_to_different_services(world: RunningSim, capsys: pytest.CaptureFixture[str],
                                                         tmp_path: Path) -> None:
    for name in ("prod1", "prod2"):
        _deploy_cart(world, name)
    ingress = tmp_path / "ingress.yaml"
    ingress.write_text("""\
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: shop}
spec:
  defaultBackend: {service: {name: shop-auto-deploy, port: {name: web}}}
  rules:
    - host: shop.example.com
      http:
        paths:
          - {path: /cart, pathType: Prefix, backend: {service: {name: cart, port: {name: web}}}}
          - {path: /, pathType: Prefix, backend: {service: {name: shop-auto-deploy, port: {name: web}}}}
    - host: cart.example.com
      http:
        paths:
          - {path: /, pathType: Prefix, backend: {service: {name: cart, port: {name: web}}}}
""")
    url = apply(world, capsys, *BASE, "--ingress", str(ingress))

    def app(path: str, host: str) -> str:
        answer = get(url + path, headers={"Host": host}).json()
        assert answer["host"] == host and answer["path"] == path
        return str(answer["pod"]).split("-")[0]

    assert app("/cart", "shop.example.com") == "cart"
    assert app("/cart/items/3", "shop.example.com") == "cart"
    assert app("/cartography", "shop.example.com") == "shop"  # a prefix is a path segment, not a string prefix
    assert app("/", "shop.example.com") == "shop"
    assert app("/anything", "cart.example.com") == "cart"
    assert app("/cart", "other.example.com") == "shop"  # no host rule: the URL map's default service
    assert {get(url + "/", headers={"Host": "cart.example.com"}).json()["cluster"] for _ in range(4)} == {
        "prod1", "prod2"}


def _tls_get(address: tuple[str, int], server_name: str, cafile: Path, path: str = "/") -> tuple[dict[str, Any], str]:
    """GET over TLS verified against ``cafile`` for ``server_name`` (SNI) at a loopback address; JSON and PEM."""
    context = ssl.create_default_context(cafile=str(cafile))
    with socket.create_connection(address, timeout=5) as raw, \
            context.wrap_socket(raw, server_hostname=server_name) as tls:
        der = tls.getpeercert(binary_form=True)
        assert der is not None
        tls.sendall(f"GET {path} HTTP/1.0\r\nHost: {server_name}\r\n\r\n".encode())
        response = http.client.HTTPResponse(tls)  # type: ignore[arg-type]
        response.begin()
        assert response.status == 200
        return json.loads(response.read()), ssl.DER_cert_to_PEM_cert(der)


def test_https_serves_the_configured_certificate_and_http_redirects(
        world: RunningSim, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    crt, key, _ = write_pair(tmp_path, "shop")
    url = apply(world, capsys, *SHOP, "--certificate-file", str(crt), "--key-file", str(key), "--https-redirect")
    um = world.sim.compute.get("urlMaps", "gmci-rd-shop", project=P) or {}
    assert um.get("defaultUrlRedirect", {}).get("httpsRedirect") is True, um

    # HTTP answers with Google's redirect to the same host and path over HTTPS.
    moved = get(url + "/checkout?step=2", headers={"Host": "shop.example.com"})
    assert moved.status_code == 301 and moved.headers["Location"] == "https://shop.example.com/checkout?step=2"
    assert get(url + "/", headers={"Host": "shop.example.com"}).status_code == 301

    # HTTPS: the self-managed certificate, verified by a client that trusts only it, and traffic to both clusters.
    https = world.sim.dataplane.url_for(vip(world), 443)
    host, port = https.removeprefix("https://").split(":")
    clusters = set()
    for _ in range(4):
        answer, pem = _tls_get((host, int(port)), "shop.example.com", crt, "/checkout")
        assert pem.strip() == crt.read_text().strip()
        assert answer["path"] == "/checkout" and answer["host"] == "shop.example.com"
        clusters.add(answer["cluster"])
    assert clusters == {"prod1", "prod2"}
    with pytest.raises(ssl.SSLCertVerificationError):
        _tls_get((host, int(port)), "other.example.com", crt)  # the certificate does not name it


def test_get_health_follows_failures_of_pods_and_of_a_zones_nodes(
        world: RunningSim, capsys: pytest.CaptureFixture[str]) -> None:
    url = apply(world, capsys, *SHOP)
    client = Compute(P, world.sim.compute_url).client(compute_v1.BackendServicesClient)
    groups = {rec.spec.name: f"https://www.googleapis.com/compute/v1/projects/{P}/zones/{rec.spec.zones[0]}/"
                             f"instanceGroups/{next(iter(rec.groups))}" for rec in world.sim.records}

    def states(cluster: str) -> list[str]:
        answer = client.get_health(project=P, backend_service="gmci-bs-shop-30999",
                                   resource_group_reference_resource=compute_v1.ResourceGroupReference(
                                       group=groups[cluster]))
        assert all(h.port == 30999 and h.ip_address.startswith("10.") for h in answer.health_status)
        return sorted(h.health_state for h in answer.health_status)

    assert states("prod1") == states("prod2") == ["HEALTHY", "HEALTHY"]
    world.sim.dataplane.fail("prod1")  # its pods stop answering: probes are refused at once
    assert world.sim.dataplane.wait_health("UNHEALTHY", cluster="prod1", timeout=4)
    assert states("prod1") == ["UNHEALTHY", "UNHEALTHY"] and states("prod2") == ["HEALTHY", "HEALTHY"]
    assert {get(url).json()["cluster"] for _ in range(4)} == {"prod2"}

    world.sim.dataplane.fail("europe-west1-b")  # that zone's nodes: probes time out (timeout = interval here)
    assert world.sim.dataplane.faults() == [{"target": "europe-west1-b", "kind": "zone", "mode": "nodes"},
                                            {"target": "prod1", "kind": "cluster", "mode": "pods"}]
    assert world.sim.dataplane.wait_health("UNHEALTHY", cluster="prod2", timeout=5)
    assert states("prod2") == ["UNHEALTHY", "UNHEALTHY"]
    down = get(url)
    assert down.status_code == 502 and down.text == "no healthy upstream"  # like Google with no healthy backend

    # (Coming back after `heal` is measured in test_failover.)
    assert [f["target"] for f in world.sim.dataplane.heal()] == ["europe-west1-b", "prod1"]
    assert world.sim.dataplane.faults() == []


class _Clock:
    """A simulated monotonic clock the test moves by hand."""

    def __init__(self, start: float) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now


# How late a loaded machine wakes the probing loop each time (seconds): varying, up to LATE.
LATENESS = (0.3, 0.05, 0.2, 0.0, 0.25, 0.1, 0.3, 0.0)
LATE = max(LATENESS)


def test_a_zone_of_many_nodes_that_stop_answering_is_unhealthy_within_the_detection_time_on_a_loaded_machine(
        make_app_world: Any, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """Eight nodes of one zone stop answering: every probe to them times out. Each must be UNHEALTHY within
    interval × unhealthy threshold + one interval (3 s here) of the failure, while the probing loop wakes late by
    varying amounts as on a busy CI machine (the detection may lag by that lateness, twice: the probe and its
    timeout), and the other zone's nodes keep being probed every interval. Deterministic: the data plane runs on
    a simulated clock, over the load balancer `lb apply` built."""
    running: RunningSim = make_app_world(2, 8)
    code, _, err = cli(["lb", "apply", *SHOP, "--unhealthy-threshold", "2"], capsys)
    assert code == 0, err
    hc = running.sim.compute.get("healthChecks", "gmci-hc-shop-30999", project=P) or {}
    interval, threshold = hc["checkIntervalSec"], hc["unhealthyThreshold"]
    assert (interval, threshold, hc["timeoutSec"]) == (1, 2, 1)

    clock = _Clock(1000.0)
    plane = DataPlane(running.sim.compute, running.sim.clusters, running.sim.records, project=P, clock=clock)
    probed: dict[str, list[float]] = {}  # prod1 instance -> when it was probed
    forward = plane._forward

    def record(backend: Any, *args: Any, **kw: Any) -> tuple[int, bytes]:
        if kw.get("probe") and backend.node.cluster == "prod1":
            probed.setdefault(backend.node.name, []).append(clock.now)
        return forward(backend, *args, **kw)

    monkeypatch.setattr(plane, "_forward", record)
    late = itertools.cycle(LATENESS)

    def run(seconds: float, watch: Callable[[], None] = lambda: None) -> None:
        end = clock.now + seconds
        while clock.now < end:
            due = plane.tick(clock.now)
            watch()
            clock.now = max(due, clock.now) + next(late)

    try:
        plane.rebuild()
        run(5)
        states = {(h["cluster"], h["instance"]): h["healthState"] for h in plane.health()}
        assert len(states) == 10 and set(states.values()) == {"HEALTHY"}, states

        failed_at = clock.now
        plane.fail("europe-west1-b")
        probed.clear()
        detected: dict[str, float] = {}

        def watch() -> None:
            for h in plane.health():
                if h["cluster"] == "prod2" and h["healthState"] == "UNHEALTHY":
                    detected.setdefault(h["instance"], clock.now - failed_at)

        run(10, watch)
    finally:
        plane.stop()
    limit = interval * threshold + interval
    assert len(detected) == 8, f"still HEALTHY after 10 s: {8 - len(detected)} of 8 nodes"
    assert max(detected.values()) <= limit + 2 * LATE, detected
    # The zone's timed-out probes held up nobody: prod1's nodes were probed every interval all along.
    assert sorted(probed) == sorted(n.name for r in running.sim.records if r.spec.name == "prod1" for n in r.nodes)
    for times in probed.values():
        gaps = [b - a for a, b in itertools.pairwise(times)]
        assert len(times) >= 9 and all(interval - LATE <= g <= interval + LATE for g in gaps), times
    assert {h["healthState"] for h in plane.health() if h["cluster"] == "prod1"} == {"HEALTHY"}


def test_fail_and_heal_commands_name_clusters_and_zones(world: RunningSim,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    where = ["--state-dir", str(world.files.state_dir)]
    code, out, _ = cli(["sim", "fail", "prod1", *where], capsys)
    assert code == 0 and out == "cluster prod1: pods stopped answering\n"
    code, out, _ = cli(["sim", "fail", "us-central1-a", "--mode", "pods", *where], capsys)
    assert code == 0 and out == "zone us-central1-a: pods stopped answering\n"
    code, _, err = cli(["sim", "fail", "prod9", *where], capsys)
    assert code == 1 and len(err.strip().splitlines()) == 1
    assert "'prod9' is neither a simulated cluster (prod1, prod2) nor a zone" in err
    code, out, _ = cli(["sim", "heal", "prod1", *where], capsys)
    assert code == 0 and out == "cluster prod1: pods answer again\n"
    assert world.sim.dataplane.faults() == [{"target": "us-central1-a", "kind": "zone", "mode": "pods"}]
    code, out, _ = cli(["sim", "heal", "--all", *where], capsys)
    assert code == 0 and world.sim.dataplane.faults() == []
    code, _, err = cli(["sim", "heal", *where], capsys)
    assert code == 1 and "name a cluster or zone to heal, or use --all" in err
    for command in ("fail", "heal"):
        code, out, _ = cli(["sim", command, "--help"], capsys)
        assert code == 0 and "--mode [pods|nodes]" in out


def test_fail_and_heal_reach_a_detached_simulator(tmp_path: Path) -> None:
    state = tmp_path / "sim"
    run = [sys.executable, "-m", "gitlab_mci", "sim"]
    up = subprocess.run([*run, "up", "--detach", "--state-dir", str(state)], capture_output=True, text=True,
                        timeout=60)
    assert up.returncode == 0, up.stderr
    try:
        failed = subprocess.run([*run, "fail", "europe-west1-b", "--state-dir", str(state)], capture_output=True,
                                text=True, timeout=30)
        assert failed.returncode == 0 and failed.stdout == "zone europe-west1-b: nodes stopped answering\n"
        compute = json.loads((state / "state.json").read_text())["compute"]
        assert requests.get(f"{compute}/_sim/dataplane", timeout=5).json()["faults"] == [
            {"target": "europe-west1-b", "kind": "zone", "mode": "nodes"}]
        healed = subprocess.run([*run, "heal", "europe-west1-b", "--state-dir", str(state)], capture_output=True,
                                text=True, timeout=30)
        assert healed.returncode == 0 and healed.stdout == "zone europe-west1-b: nodes answer again\n"
    finally:
        subprocess.run([*run, "down", "--state-dir", str(state)], capture_output=True, timeout=30)


# --- URL map evaluation (pure) ---------------------------------------------------------------------------------

UM = {
    "defaultService": "default",
    "hostRules": [{"hosts": ["shop.example.com"], "pathMatcher": "shop"},
                  {"hosts": ["*.example.com"], "pathMatcher": "wild"}],
    "pathMatchers": [
        {"name": "shop", "defaultService": "shop",
         "pathRules": [{"paths": ["/api", "/api/*"], "service": "api"}, {"paths": ["/api/v2/*"], "service": "v2"},
                       {"paths": ["/old/*"], "urlRedirect": {"prefixRedirect": "/new", "redirectResponseCode":
                                                             "FOUND"}}]},
        {"name": "wild", "defaultUrlRedirect": {"httpsRedirect": True, "stripQuery": True}},
    ],
}


@pytest.mark.parametrize(("host", "path", "service"), [
    ("shop.example.com", "/", "shop"),
    ("shop.example.com", "/api", "api"),
    ("shop.example.com", "/api/x", "api"),
    ("shop.example.com", "/api/v2/x", "v2"),  # the longest matching path rule wins
    ("shop.example.com", "/apix", "shop"),
    ("SHOP.example.com", "/api", "api"),
    ("example.org", "/api", "default"),
])
def test_url_map_routes_by_host_then_most_specific_path(host: str, path: str, service: str) -> None:
    assert route(UM, host, path).service == service


def test_url_map_redirects() -> None:
    found = route(UM, "shop.example.com", "/old/a/b")
    assert found.redirect is not None
    assert redirect_target(found.redirect, scheme="http", host="shop.example.com", path="/old/a/b", query="x=1",
                           matched_prefix=found.matched_prefix) == (302, "http://shop.example.com/new/a/b?x=1")
    wild = route(UM, "www.example.com", "/p")
    assert wild.redirect is not None and wild.service is None
    assert redirect_target(wild.redirect, scheme="http", host="www.example.com", path="/p", query="x=1") == (
        301, "https://www.example.com/p")


def test_hosted_multi_cluster_ingress_routes_to_the_pods_of_its_network_endpoint_groups(
        make_sim: Any, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    from tests.hosted.conftest import LABELS, deploy_service

    running: RunningSim = make_sim(parse_spec({"clusters": [
        {"name": "prod1", "location": "us-central1-a", "nodes": 1},
        {"name": "prod2", "location": "europe-west1-b", "nodes": 1}], "mciProvisioningDelay": 0.05}))
    for name in ("prod1", "prod2"):
        deploy_service(running, name)
        running.sim.gkehub.register(name)
        api = k8s.ApiClient(k8s.Configuration(host=running.sim.kube_url(name)))
        k8s.AppsV1Api(api).create_namespaced_deployment("default", {
            "metadata": {"name": "shop"},
            "spec": {"replicas": 2, "selector": {"matchLabels": LABELS}, "template": {
                "metadata": {"labels": LABELS}, "spec": {"containers": [{"name": "app", "image": "x"}]}}}})
    running.sim.gkehub.enable_mci("prod1")
    for key, value in running.env.items():
        monkeypatch.setenv(key, value)
    code, _, err = cli(["hosted", "apply", "--lb", "shop", "--context", "prod1,prod2", "--service",
                        "shop-auto-deploy", "--port", "web"], capsys)
    assert code == 0, err
    # GKE's health checks run every 15 s; make them quick, as a user could through the BackendConfig.
    gc = Compute(P, running.sim.compute_url)
    checks = gc.client(compute_v1.HealthChecksClient)
    [hc] = [h for h in checks.list(project=P) if h.name.startswith("mci-")]
    gc.wait(checks.patch(project=P, health_check=hc.name, health_check_resource=compute_v1.HealthCheck(
        check_interval_sec=1, timeout_sec=1)))
    assert running.sim.dataplane.wait_health("HEALTHY", timeout=5), running.sim.dataplane.health()
    [rule] = running.sim.compute.resources("globalForwardingRules")
    url = running.sim.dataplane.url_for(rule["IPAddress"], 80)
    answers = [get(url + "/").json() for _ in range(8)]
    assert Counter(a["cluster"] for a in answers) == {"prod1": 4, "prod2": 4}
    assert len({a["pod"] for a in answers}) == 4  # container-native: every pod is its own endpoint
    [bs] = running.sim.compute.resources("backendServices")
    health = gc.client(compute_v1.BackendServicesClient).get_health(
        project=P, backend_service=bs["name"], resource_group_reference_resource=compute_v1.ResourceGroupReference(
            group=bs["backends"][0]["group"]))
    assert [h.health_state for h in health.health_status] == ["HEALTHY", "HEALTHY"]
    assert all(h.port == 5000 and h.ip_address.startswith("10.4.") for h in health.health_status)
