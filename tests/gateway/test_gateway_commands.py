"""`gitlab-mci gateway …` end to end on the simulator: the real kubernetes and google-cloud-gke-hub clients, the
simulated multi-cluster Services and Gateway controllers, and traffic through the simulated data plane."""

from __future__ import annotations

import json
import threading
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import requests
from kubernetes import client as k8s

from tests.cli_helpers import run_cli as cli
from tests.conftest import RunningSim
from tests.gateway.conftest import CLUSTERS, api

BASE = ["--lb", "shop", "--context", "prod1,prod2,prod3", "--service", "shop-auto-deploy", "--port", "web"]
WHERE = ["--lb", "shop", "--context", "prod1,prod2,prod3"]
GW = ("gateway.networking.k8s.io", "v1")


def custom(running: RunningSim, cluster: str = "prod1") -> k8s.CustomObjectsApi:
    return k8s.CustomObjectsApi(api(running, cluster))


def gateway(running: RunningSim) -> Any:
    return custom(running).get_namespaced_custom_object(*GW, "default", "gateways", "shop")


def url(running: RunningSim, port: int = 80) -> str:
    return running.sim.dataplane.url_for(gateway(running)["status"]["addresses"][0]["value"], port)


def clusters_seen(target: str, n: int, headers: dict[str, str] | None = None, path: str = "/") -> Counter[str]:
    seen: Counter[str] = Counter()
    for _ in range(n):
        answer = requests.get(target + path, headers=headers or {}, timeout=5)
        assert answer.status_code == 200, answer.text
        seen[answer.json()["cluster"]] += 1
    return seen


def serving_everywhere(running: RunningSim, clusters: tuple[str, ...] = CLUSTERS) -> str:
    """The Gateway's URL once every cluster's pods pass their health checks (bounded)."""
    for name in clusters:
        assert running.sim.dataplane.wait_health("HEALTHY", cluster=name, timeout=20), running.sim.dataplane.health()
    return url(running)


def converged(running: RunningSim) -> None:
    """The controllers are done with a change and the data plane serves what they built."""
    assert running.sim.mcs.settle() and running.sim.gateway.settle()
    running.sim.dataplane.rebuild()


def ours(running: RunningSim) -> list[str]:
    """Everything of ours or derived from ours still in the world: Compute (gkemcg1-, the Gateway's NEGs), objects
    labelled for the load balancer, ServiceImports and the controller's derived Services."""
    left = [f"compute {r['name']}" for r in running.sim.compute.resources()
            if r["name"].startswith("gkemcg1-") or '"mcg-neg"' in str(r.get("description", ""))]
    for name in CLUSTERS:
        kube = running.sim.clusters[name]
        for version, kind in (("v1", "Service"), ("net.gke.io/v1", "ServiceExport"),
                              ("net.gke.io/v1", "ServiceImport"), ("gateway.networking.k8s.io/v1", "Gateway"),
                              ("gateway.networking.k8s.io/v1", "HTTPRoute")):
            for obj in kube.list(version, kind, "default"):
                labels = obj["metadata"].get("labels") or {}
                if labels.get("gitlab-mci/lb") == "shop" or kind == "ServiceImport" or \
                        obj["metadata"]["name"].startswith("gkemcg1-"):
                    left.append(f"{name} {kind} {obj['metadata']['name']}")
    return left


def test_gateway_over_three_clusters_serves_from_all_and_delete_leaves_nothing(
        gateway_world: RunningSim, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code, out, err = cli(["gateway", "plan", *BASE, "--detailed-exitcode"], capsys)
    assert code == 2, err
    assert out.splitlines()[0] == ("config cluster prod1; serving from prod1 (prod1, weight 1), prod2 (prod2, "
                                   "weight 1), prod3 (prod3, weight 1)")
    assert "+ ServiceExport default/shop-auto-deploy-prod3 (prod3)" in out
    assert out.splitlines()[-1] == "Plan: 8 to add, 0 to change, 0 to destroy."
    assert gateway_world.sim.journal.writes() == []

    dotenv = tmp_path / "gw.env"
    code, out, err = cli(["gateway", "apply", *BASE, "--dotenv", str(dotenv)], capsys)
    assert code == 0, err
    gw = gateway(gateway_world)
    address = gw["status"]["addresses"][0]["value"]
    assert f"ready at http://{address}/" in out
    assert dotenv.read_text() == f"MCI_VIP={address}\nMCI_URL=http://{address}/\n"
    assert gw["metadata"]["finalizers"] == ["gateway.finalizer.networking.gke.io"]
    route = custom(gateway_world).get_namespaced_custom_object(*GW, "default", "httproutes", "shop")
    assert route["spec"]["rules"] == [{"backendRefs": [
        {"group": "net.gke.io", "kind": "ServiceImport", "name": f"shop-auto-deploy-{c}", "port": 5000, "weight": 1}
        for c in CLUSTERS]}]
    # Every member imports every cluster's export; the regional cluster's NEGs are one per zone.
    imports = custom(gateway_world, "prod2").list_namespaced_custom_object("net.gke.io", "v1", "default",
                                                                           "serviceimports")["items"]
    assert sorted(i["metadata"]["name"] for i in imports) == [f"shop-auto-deploy-{c}" for c in CLUSTERS]
    prod3_zones = gateway_world.sim.records[2].spec.zones
    negs = [r for r in gateway_world.sim.compute.resources("networkEndpointGroups")
            if r["zone"].rsplit("/", 1)[-1] in prod3_zones]
    assert len(prod3_zones) == 3 and len(negs) == 3
    seen = clusters_seen(serving_everywhere(gateway_world), 30)
    assert set(seen) == set(CLUSTERS), seen

    code, out, err = cli(["gateway", "plan", *BASE, "--detailed-exitcode"], capsys)
    assert (code, out.splitlines()[-1]) == (0, "No changes. The Gateway, HTTPRoutes and exports match the inputs.")
    code, out, err = cli(["gateway", "status", *WHERE, "-o", "json", "--wait", "5"], capsys)
    assert code == 0, err
    state = json.loads(out)
    assert state["address"] == address and state["conditions"]["Programmed"]["status"] == "True"
    assert state["weights"] == {"prod1": 1, "prod2": 1, "prod3": 1}

    gateway_world.sim.journal.reset()
    # Given only the config cluster, delete finds the serving clusters on the HTTPRoute.
    code, out, err = cli(["gateway", "delete", "--lb", "shop", "--context", "prod1"], capsys)
    assert code == 0, err
    assert "load balancer shop deleted (8 object(s)" in out
    assert gateway_world.sim.mcs.settle() and gateway_world.sim.gateway.settle()
    assert ours(gateway_world) == []
    assert cli(["gateway", "delete", *WHERE], capsys)[1].startswith("nothing to delete")


def test_weights_nine_to_one_are_what_the_data_plane_serves(gateway_world: RunningSim,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    assert cli(["gateway", "apply", *BASE], capsys)[0] == 0
    target = serving_everywhere(gateway_world)
    gateway_world.sim.journal.reset()
    code, out, err = cli(["gateway", "weight", "prod1=9", "prod2=1", "prod3=0", *WHERE], capsys)
    assert code == 0, err
    assert out.strip() == "shop: prod1=9 (90 %), prod2=1 (10 %), prod3=0 (0 %)"
    assert [(e.service, e.method) for e in gateway_world.sim.journal.writes()] == [("kube:prod1", "PATCH")]
    converged(gateway_world)
    seen = clusters_seen(target, 1000)
    assert abs(seen["prod1"] / 1000 - 0.9) <= 0.05 and abs(seen["prod2"] / 1000 - 0.1) <= 0.05, seen
    assert seen["prod3"] == 0
    code, out, _ = cli(["gateway", "status", *WHERE], capsys)
    assert code == 0
    lines = out.splitlines()
    assert lines[0] == "Gateway default/shop (class gke-l7-global-external-managed-mc, context prod1)"
    assert lines[1] == f"  address: {gateway(gateway_world)['status']['addresses'][0]['value']}"
    assert "  Programmed: True (Programmed)" in lines
    shares = [line for line in lines if line.startswith("  cluster ")]
    assert shares == ["  cluster prod1: weight 9 (90 %)", "  cluster prod2: weight 1 (10 %)",
                      "  cluster prod3: weight 0 (0 %)"]
    # apply keeps the weights: nothing to change.
    code, out, _ = cli(["gateway", "plan", *BASE, "--detailed-exitcode"], capsys)
    assert code == 0 and "prod1 (prod1, weight 9)" in out
    assert cli(["gateway", "delete", *WHERE], capsys)[0] == 0


def test_drain_moves_traffic_away_without_a_failed_request(gateway_world: RunningSim,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    assert cli(["gateway", "apply", *BASE], capsys)[0] == 0
    target = serving_everywhere(gateway_world)
    results: list[tuple[int, str]] = []
    stop = threading.Event()

    def load() -> None:
        while not stop.is_set():
            try:
                answer = requests.get(target, timeout=5)
                results.append((answer.status_code, answer.json().get("cluster", "") if answer.ok else ""))
            except requests.RequestException as exc:
                results.append((0, str(exc)))

    worker = threading.Thread(target=load)
    worker.start()
    try:
        code, out, err = cli(["gateway", "drain", "prod1", *WHERE], capsys)
        assert code == 0, err
        converged(gateway_world)
        drained_from = len(results)
        after = clusters_seen(target, 60)
    finally:
        stop.set()
        worker.join()
    assert [r for r in results if r[0] != 200] == []
    assert drained_from > 0 and after["prod1"] == 0 and set(after) == {"prod2", "prod3"}, after
    code, out, err = cli(["gateway", "drain", "prod2", *WHERE], capsys)
    assert code == 0, err
    code, out, err = cli(["gateway", "drain", "prod3", *WHERE], capsys)
    assert code == 1 and "sum to 0" in err and len(err.strip().splitlines()) == 1
    code, out, err = cli(["gateway", "undrain", "prod1", *WHERE], capsys)
    assert code == 0 and "prod1=1" in out, err
    converged(gateway_world)
    assert set(clusters_seen(target, 30)) == {"prod1", "prod3"}
    assert cli(["gateway", "delete", *WHERE], capsys)[0] == 0


ROUTE = """\
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: shop}
spec:
  rules:
  - matches:
    - headers: [{name: x-canary, value: "true"}]
    backendRefs: [{group: net.gke.io, kind: ServiceImport, name: shop-auto-deploy-prod2, port: 5000}]
  - matches:
    - path: {type: PathPrefix, value: /api}
    backendRefs: [{group: net.gke.io, kind: ServiceImport, name: shop-auto-deploy-prod3, port: 5000}]
  - backendRefs: [{name: shop-auto-deploy, port: 5000}]
"""


def test_path_and_header_matches_of_the_users_httproute_route_by_cluster(
        gateway_world: RunningSim, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    route = tmp_path / "route.yaml"
    route.write_text(ROUTE)
    args = ["--lb", "shop", "--context", "prod1,prod2,prod3", "--httproute-file", str(route)]
    code, _out, err = cli(["gateway", "apply", *args], capsys)
    assert code == 0, err
    target = serving_everywhere(gateway_world)
    assert set(clusters_seen(target, 10, {"X-Canary": "true"})) == {"prod2"}
    assert set(clusters_seen(target, 10, path="/api/cart")) == {"prod3"}
    assert set(clusters_seen(target, 10, path="/api")) == {"prod3"}
    assert set(clusters_seen(target, 30, path="/apix")) == set(CLUSTERS)  # a prefix is whole path segments
    assert set(clusters_seen(target, 30, {"X-Canary": "no"})) == set(CLUSTERS)
    assert cli(["gateway", "delete", *WHERE], capsys)[0] == 0


def test_https_with_a_named_address_and_a_redirect_from_http(gateway_world: RunningSim,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    from tests.pki import self_signed

    cert, key = self_signed("shop.example.com")
    gateway_world.sim.compute.seed("sslCertificates", {"name": "shop-cert", "certificate": cert, "privateKey": key},
                                   project="demo-project")
    ip = gateway_world.sim.compute.seed("globalAddresses", {"name": "web-ip"}, project="demo-project")["address"]
    code, out, err = cli(["gateway", "apply", *BASE, "--static-ip", "web-ip", "--ssl-certificate", "shop-cert",
                          "--https-redirect"], capsys)
    assert code == 0, err
    assert f"ready at https://{ip}/" in out
    gw = gateway(gateway_world)
    assert gw["spec"]["addresses"] == [{"type": "NamedAddress", "value": "web-ip"}]
    assert gw["status"]["addresses"] == [{"type": "IPAddress", "value": ip}]
    for name in CLUSTERS:
        assert gateway_world.sim.dataplane.wait_health("HEALTHY", cluster=name, timeout=20)
    plain = gateway_world.sim.dataplane.url_for(ip, 80)
    answer = requests.get(plain + "/cart?x=1", headers={"Host": "shop.example.com"}, timeout=5,
                          allow_redirects=False)
    assert answer.status_code == 301 and answer.headers["Location"] == "https://shop.example.com/cart?x=1"
    secure = gateway_world.sim.dataplane.url_for(ip, 443)
    cafile = Path(gateway_world.files.state_dir) / "shop-ca.pem"
    cafile.write_text(cert)
    host, port = secure.removeprefix("https://").split(":")
    import http.client
    import socket
    import ssl

    context = ssl.create_default_context(cadata=cert)
    with socket.create_connection((host, int(port)), timeout=5) as raw, \
            context.wrap_socket(raw, server_hostname="shop.example.com") as tls:
        tls.sendall(b"GET /cart HTTP/1.0\r\nHost: shop.example.com\r\n\r\n")
        response = http.client.HTTPResponse(tls)  # type: ignore[arg-type]
        response.begin()
        assert response.status == 200 and json.loads(response.read())["path"] == "/cart"
    assert cli(["gateway", "delete", *WHERE], capsys)[0] == 0
    assert gateway_world.sim.compute.get("globalAddresses", "web-ip", project="demo-project") is not None


def _no_mcs(running: RunningSim) -> list[str]:
    running.sim.gkehub.disable_feature("multiclusterservicediscovery")
    return BASE


def _no_crd(running: RunningSim) -> list[str]:
    k8s.ApiextensionsV1Api(api(running, "prod1")).delete_custom_resource_definition(
        "httproutes.gateway.networking.k8s.io")
    return BASE


def _route_to(name: str) -> Any:
    def setup(running: RunningSim) -> list[str]:
        path = Path(running.files.state_dir) / "route.yaml"
        path.write_text(f"apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {{name: shop}}\n"
                        f"spec:\n  rules:\n  - backendRefs: [{{group: net.gke.io, kind: ServiceImport, name: {name},"
                        f" port: 5000}}]\n")
        return ["--lb", "shop", "--context", "prod1,prod2,prod3", "--httproute-file", str(path)]
    return setup


@pytest.mark.parametrize(("setup", "extra", "said"), [
    (_no_mcs, [], "multi-cluster Services (multiclusterservicediscovery) are not enabled"),
    (_no_crd, [], "has no CRD httproutes.gateway.networking.k8s.io"),
    (lambda r: BASE, ["--gateway-class", "gke-l7-nope-mc"], "GatewayClass 'gke-l7-nope-mc' does not exist"),
    (_route_to("billing"), [], "the Service billing is not exported"),
    (lambda r: ["--lb", "gkemcg-shop", *BASE[2:]], [], "starts with 'gkemcg'"),
    (lambda r: BASE, ["--static-ip", "nope-ip"], "no global address of that name"),
], ids=["feature-not-enabled", "missing-crd", "no-such-gatewayclass", "backendref-not-exported", "gkemcg-name",
        "missing-address"])
def test_bad_inputs_are_one_line_errors_with_no_write(gateway_world: RunningSim, capsys: pytest.CaptureFixture[str],
                                                      setup: Any, extra: list[str], said: str) -> None:
    args = setup(gateway_world)
    gateway_world.sim.journal.reset()
    code, _out, err = cli(["gateway", "apply", *args, *extra], capsys)
    assert code == 1 and said in err, err
    assert len(err.strip().splitlines()) == 1 and err.startswith("gitlab-mci: error: ")
    assert gateway_world.sim.journal.writes() == []


def test_weights_summing_to_zero_are_refused_with_no_write(gateway_world: RunningSim,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    assert cli(["gateway", "apply", *BASE, "--no-wait"], capsys)[0] == 0
    gateway_world.sim.journal.reset()
    code, _, err = cli(["gateway", "weight", "prod1=0", "prod2=0", "prod3=0", *WHERE], capsys)
    assert code == 1 and "sum to 0" in err and len(err.strip().splitlines()) == 1, err
    code, _, err = cli(["gateway", "weight", "prod9=1", *WHERE], capsys)
    assert code == 1 and "'prod9' is not a cluster of load balancer shop" in err, err
    assert gateway_world.sim.journal.writes() == []
    assert cli(["gateway", "delete", *WHERE], capsys)[0] == 0


INGRESS = """\
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: shop}
spec:
  defaultBackend: {service: {name: shop-auto-deploy, port: {number: 5000}}}
  rules:
  - host: shop.example.com
    http:
      paths:
      - {path: /api, pathType: Prefix, backend: {service: {name: shop-auto-deploy, port: {name: web}}}}
      - {path: /healthz, pathType: Exact, backend: {service: {name: shop-auto-deploy, port: {name: web}}}}
"""


def test_an_ingress_becomes_httproute_matches_split_per_cluster(gateway_world: RunningSim,
                                                                 capsys: pytest.CaptureFixture[str],
                                                                 tmp_path: Path) -> None:
    ingress = tmp_path / "ingress.yaml"
    ingress.write_text(INGRESS)
    args = ["--lb", "shop", "--context", "prod1,prod2,prod3", "--ingress", str(ingress)]
    code, out, err = cli(["gateway", "apply", *args, "-o", "json"], capsys)
    assert code == 0, err
    assert json.loads(out)["url"].startswith("http://")
    route = custom(gateway_world).get_namespaced_custom_object(*GW, "default", "httproutes", "shop")
    refs = [{"group": "net.gke.io", "kind": "ServiceImport", "name": f"shop-auto-deploy-{c}", "port": 5000,
             "weight": 1} for c in CLUSTERS]
    assert route["spec"]["hostnames"] == ["shop.example.com"]
    assert route["spec"]["rules"] == [
        {"matches": [{"path": {"type": "PathPrefix", "value": "/api"}}], "backendRefs": refs},
        {"matches": [{"path": {"type": "Exact", "value": "/healthz"}}], "backendRefs": refs},
        {"backendRefs": refs}]
    target = serving_everywhere(gateway_world)
    seen = clusters_seen(target, 30, {"Host": "shop.example.com"}, path="/api/cart")
    assert set(seen) == set(CLUSTERS)
    code, out, _ = cli(["gateway", "plan", *args, "--detailed-exitcode"], capsys)
    assert code == 0, out
    assert cli(["gateway", "delete", *WHERE], capsys)[0] == 0


def test_a_health_check_path_is_a_health_check_policy_per_cluster_that_gke_follows(
        gateway_world: RunningSim, capsys: pytest.CaptureFixture[str]) -> None:
    def paths() -> set[str]:
        return {r["httpHealthCheck"]["requestPath"] for r in gateway_world.sim.compute.resources("healthChecks")
                if r["name"].startswith("gkemcg1-")}

    code, _, err = cli(["gateway", "apply", *BASE, "--health-check-path", "/healthz"], capsys)
    assert code == 0, err
    policy = custom(gateway_world).get_namespaced_custom_object("networking.gke.io", "v1", "default",
                                                                "healthcheckpolicies", "shop-auto-deploy-prod2")
    assert policy["spec"] == {"default": {"config": {"type": "HTTP", "httpHealthCheck": {"requestPath": "/healthz"}}},
                              "targetRef": {"group": "net.gke.io", "kind": "ServiceImport",
                                            "name": "shop-auto-deploy-prod2"}}
    converged(gateway_world)
    assert paths() == {"/healthz"}
    code, _out, err = cli(["gateway", "apply", *BASE], capsys)
    assert code == 0 and "- HealthCheckPolicy default/shop-auto-deploy-prod1 (prod1)" in err, err
    converged(gateway_world)
    assert paths() == {"/"}
    code, _, err = cli(["gateway", "plan", *BASE, "--health-check-path", "healthz"], capsys)
    assert code == 1 and "must be an absolute URL path" in err
    assert cli(["gateway", "delete", *WHERE], capsys)[0] == 0
    assert custom(gateway_world).list_namespaced_custom_object("networking.gke.io", "v1", "default",
                                                               "healthcheckpolicies")["items"] == []


def test_a_cluster_dropped_from_context_loses_its_exports_and_a_rerun_writes_nothing(
        gateway_world: RunningSim, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli(["gateway", "apply", *BASE], capsys)[0] == 0
    two = ["--lb", "shop", "--context", "prod1,prod2", "--service", "shop-auto-deploy", "--port", "web"]
    code, _, err = cli(["gateway", "apply", *two], capsys)
    assert code == 0, err
    assert "- ServiceExport default/shop-auto-deploy-prod3 (prod3)" in err
    assert "- Service default/shop-auto-deploy-prod3 (prod3)" in err
    prod3 = gateway_world.sim.clusters["prod3"]
    assert prod3.get("net.gke.io/v1", "ServiceExport", "shop-auto-deploy-prod3", "default") is None
    assert prod3.get("v1", "Service", "shop-auto-deploy-prod3", "default") is None
    assert prod3.get("v1", "Service", "shop-auto-deploy", "default") is not None  # the app's own: not ours
    converged(gateway_world)
    assert set(clusters_seen(serving_everywhere(gateway_world, ("prod1", "prod2")), 60)) == {"prod1", "prod2"}
    gateway_world.sim.journal.reset()
    code, out, _ = cli(["gateway", "apply", *two], capsys)
    assert code == 0 and "No changes" in out, out
    assert gateway_world.sim.journal.writes() == []
    assert cli(["gateway", "delete", "--lb", "shop", "--context", "prod1,prod2"], capsys)[0] == 0
    assert gateway_world.sim.mcs.settle() and gateway_world.sim.gateway.settle()
    assert ours(gateway_world) == []


def test_each_environment_exports_its_cluster_and_the_one_apply_after_writes_no_export(
        gateway_world: RunningSim, capsys: pytest.CaptureFixture[str]) -> None:
    """The CI template's mode gateway: `gateway export` in each production environment's job after its deploy,
    then `gateway apply` once over every cluster."""
    route = ["--lb", "shop", "--service", "shop-auto-deploy", "--port", "web"]
    for name in CLUSTERS:
        code, out, err = cli(["gateway", "export", *route, "--context", name], capsys)
        assert code == 0, err
        assert f"+ ServiceExport default/shop-auto-deploy-{name} ({name})" in out
        kube = gateway_world.sim.clusters[name]
        assert kube.get("net.gke.io/v1", "ServiceExport", f"shop-auto-deploy-{name}", "default") is not None
        others = [c for c in CLUSTERS if c != name]
        assert all(kube.get("v1", "Service", f"shop-auto-deploy-{c}", "default") is None for c in others)
    gateway_world.sim.journal.reset()
    code, out, _ = cli(["gateway", "export", *route, "--context", "prod2"], capsys)
    assert code == 0 and "No changes" in out, out
    assert gateway_world.sim.journal.writes() == []
    code, _, err = cli(["gateway", "apply", *BASE], capsys)
    assert code == 0 and "ServiceExport" not in err and "+ Gateway default/shop (prod1)" in err, err
    converged(gateway_world)
    assert set(clusters_seen(serving_everywhere(gateway_world), 60)) == set(CLUSTERS)
    # The app not deployed there (yet): one line, nothing written.
    k8s.CoreV1Api(api(gateway_world, "prod3")).delete_namespaced_service("shop-auto-deploy", "default")
    gateway_world.sim.journal.reset()
    code, _, err = cli(["gateway", "export", *route, "--context", "prod3"], capsys)
    assert code == 1 and "Service default/shop-auto-deploy (routed to) does not exist in context 'prod3'" in err
    assert len(err.strip().splitlines()) == 1 and gateway_world.sim.journal.writes() == []
    assert cli(["gateway", "delete", *WHERE], capsys)[0] == 0


def test_a_project_without_backend_service_quota_for_every_export_is_refused_before_any_write(
        gateway_world: RunningSim, capsys: pytest.CaptureFixture[str]) -> None:
    """GKE's controller would make one gkemcg1- backend service (and health check) per cluster's export and fail
    half-way in Compute; gitlab-mci reads the project's quotas (projects.get, as `gcloud compute project-info
    describe` shows them) first."""
    from tests.sim.test_compute_gcloud import gcloud

    gateway_world.sim.compute.quota_limits["BACKEND_SERVICES"] = 4
    gateway_world.sim.compute.seed("backendServices", {"name": "someone-elses", "protocol": "HTTP"},
                                   project="demo-project")
    gateway_world.sim.compute.seed("backendServices", {"name": "someone-elses-2", "protocol": "HTTP"},
                                   project="demo-project")
    quotas = json.loads(gcloud(gateway_world, "compute", "project-info", "describe", "--format", "json"))["quotas"]
    assert {"metric": "BACKEND_SERVICES", "limit": 4.0, "usage": 2.0} in quotas
    gateway_world.sim.journal.reset()
    code, _, err = cli(["gateway", "apply", *BASE], capsys)
    assert code == 1, err
    assert "quota BACKEND_SERVICES of project demo-project: 2 of 4 used, and the Gateway needs 3 more" in err
    assert len(err.strip().splitlines()) == 1 and gateway_world.sim.journal.writes() == []
    gateway_world.sim.compute.quota_limits["BACKEND_SERVICES"] = 5
    assert cli(["gateway", "apply", *BASE, "--no-wait"], capsys)[0] == 0
    converged(gateway_world)
    # Once built, its own backend services are counted as used, not needed again.
    code, out, err = cli(["gateway", "apply", *BASE, "--no-wait"], capsys)
    assert code == 0 and "No changes" in out, err
    assert cli(["gateway", "delete", *WHERE], capsys)[0] == 0
