"""Issue 12: setups users bring to `gitlab-mci lb` — a kubemci chain on the address, a failed write half way, a
pre-shared certificate in status, an Ingress without a default backend, a switch to --static-ip — driven with the
real clients against the simulator (HTTP through its data plane)."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import pytest
import requests
from google.cloud import compute_v1

from gitlab_mci.gcp import Compute
from gitlab_mci.sim.httpd import FaultRule
from tests.cli_helpers import run_cli as cli
from tests.conftest import RunningSim
from tests.lb.test_lb_commands import owned
from tests.pki import write_pair

P = "demo-project"
WHERE = ["--lb", "shop", "--context", "prod1,prod2"]
BASE = [*WHERE, "--check-interval-sec", "1"]
SHOP = [*BASE, "--service", "shop-auto-deploy", "--port", "web"]


@pytest.fixture
def world(app_world: RunningSim) -> RunningSim:
    return app_world


def _kubemci_chain(world: RunningSim, address: str, port: str) -> None:
    """What the recipe's kubemci made for `shop`: health check → backend service → URL map → proxy → rule, on the
    user's reserved address; made with the google-cloud-compute client."""
    gc = Compute(P, world.sim.compute_url)
    g = "https://www.googleapis.com/compute/v1/projects/demo-project/global"
    gc.wait(gc.client(compute_v1.GlobalAddressesClient).insert(
        project=P, address_resource=compute_v1.Address(name=address)))
    gc.wait(gc.client(compute_v1.HealthChecksClient).insert(project=P, health_check_resource=compute_v1.HealthCheck(
        name="mci1-hc-30999--shop", type_="HTTP", http_health_check=compute_v1.HTTPHealthCheck(port=30999))))
    gc.wait(gc.client(compute_v1.BackendServicesClient).insert(
        project=P, backend_service_resource=compute_v1.BackendService(
            name="mci1-be-30999--shop", protocol="HTTP", load_balancing_scheme="EXTERNAL",
            health_checks=[f"{g}/healthChecks/mci1-hc-30999--shop"])))
    gc.wait(gc.client(compute_v1.UrlMapsClient).insert(project=P, url_map_resource=compute_v1.UrlMap(
        name="mci1-um--shop", default_service=f"{g}/backendServices/mci1-be-30999--shop")))
    gc.wait(gc.client(compute_v1.TargetHttpProxiesClient).insert(
        project=P, target_http_proxy_resource=compute_v1.TargetHttpProxy(
            name="mci1-tp--shop", url_map=f"{g}/urlMaps/mci1-um--shop")))
    gc.wait(gc.client(compute_v1.GlobalForwardingRulesClient).insert(
        project=P, forwarding_rule_resource=compute_v1.ForwardingRule(
            name="mci1-fw--shop", I_p_address=f"{g}/addresses/{address}", I_p_protocol="TCP", port_range=port,
            target=f"{g}/targetHttpProxies/mci1-tp--shop", load_balancing_scheme="EXTERNAL")))


def _answers_within(url: str, headers: dict[str, str], status: int, timeout: float = 5.0) -> bool:
    """Whether ``url`` answers ``status`` once the data plane has read the change (it looks every 100 ms)."""
    deadline = time.monotonic() + timeout
    while True:
        if requests.get(url, headers=headers, timeout=5).status_code == status:
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.05)


# --- 6: a forwarding rule we do not own already serves the address and port ----------------------------------------

@pytest.mark.parametrize("command", ["plan", "apply"])
def test_kubemci_still_serving_port_80_on_the_static_ip_is_named_before_any_write(
        world: RunningSim, capsys: pytest.CaptureFixture[str], command: str) -> None:
    _kubemci_chain(world, "shop-ip", "80")
    world.sim.journal.reset()
    code, _, err = cli(["lb", command, *SHOP, "--static-ip", "shop-ip"], capsys)
    assert code == 1
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "mci1-fw--shop" in lines[0] and "port 80" in lines[0], err
    assert "--static-ip" in lines[0] and "remove" in lines[0]
    assert world.sim.journal.writes() == []


def test_a_users_rule_on_another_port_of_the_static_ip_is_no_conflict(
        world: RunningSim, capsys: pytest.CaptureFixture[str]) -> None:
    _kubemci_chain(world, "shop-ip", "8080")
    code, _, err = cli(["lb", "apply", *SHOP, "--static-ip", "shop-ip"], capsys)
    assert code == 0, err


# --- 7: one failed write: exactly it failed, what depends on it skipped --------------------------------------------

def test_a_failed_url_map_insert_is_one_failure_and_its_dependents_are_skipped(
        world: RunningSim, capsys: pytest.CaptureFixture[str]) -> None:
    world.sim.faults.add(FaultRule(action="operation_error", service="compute", method="POST",
                                   path="/global/urlMaps$", times=1))
    code, out, err = cli(["lb", "apply", *SHOP, "-o", "json"], capsys)
    assert code == 1
    result = json.loads(out)
    assert list(result["failed"]) == ["urlMaps/gmci-um-shop"]
    assert sorted(result["skipped"]) == ["globalForwardingRules/gmci-fr-shop-http", "targetHttpProxies/gmci-hp-shop"]
    assert "cycle" not in out + err
    assert "1 change(s) failed, 2 skipped" in err


# --- 13: status reports every certificate and says unhealthy in its exit code ---------------------------------------

def test_status_lists_the_pre_shared_certificate_and_exits_3_while_a_cluster_is_down(
        world: RunningSim, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    crt, key, _ = write_pair(tmp_path, "users")
    gc = Compute(P, world.sim.compute_url)
    gc.wait(gc.client(compute_v1.SslCertificatesClient).insert(
        project=P, ssl_certificate_resource=compute_v1.SslCertificate(
            name="users-cert", certificate=crt.read_text(), private_key=key.read_text())))
    owned_crt, owned_key, _ = write_pair(tmp_path, "ours")
    code, _, err = cli(["lb", "apply", *SHOP, "--ssl-certificate", "users-cert", "--certificate-file", str(owned_crt),
                        "--key-file", str(owned_key)], capsys)
    assert code == 0, err
    assert world.sim.dataplane.wait_health("HEALTHY", timeout=10)
    code, out, _ = cli(["lb", "status", *WHERE], capsys)
    assert code == 0 and out.rstrip().endswith("healthy")
    certs = [line.split()[1].rstrip(":") for line in out.splitlines() if line.strip().startswith("certificate ")]
    assert "users-cert" in certs and any(c.startswith("gmci-crt-shop") or c.startswith("gmci-") for c in certs)
    assert len(certs) == 2
    assert "users-cert: SELF_MANAGED (pre-shared) ACTIVE" in out

    world.sim.dataplane.fail("prod1")
    try:
        assert world.sim.dataplane.wait_health("UNHEALTHY", cluster="prod1", timeout=10)
        code, out, _ = cli(["lb", "status", *WHERE], capsys)
        assert code == 3 and "NOT healthy" in out
    finally:
        world.sim.dataplane.heal()


# --- 15: an Ingress with rules and no default backend answers 404 for what matches no rule -------------------------

INGRESS = """apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: shop}
spec:
  rules:
  - host: shop.example.com
    http:
      paths:
      - {path: /api, pathType: Prefix, backend: {service: {name: shop-auto-deploy, port: {name: web}}}}
"""


def test_an_ingress_without_default_backend_answers_404_off_its_paths_like_gke(
        world: RunningSim, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    ingress = tmp_path / "ingress.yaml"
    ingress.write_text(INGRESS)
    code, _, err = cli(["lb", "apply", *BASE, "--ingress", str(ingress)], capsys)
    assert code == 0, err
    assert world.sim.dataplane.wait_health("HEALTHY", timeout=10)
    vip = world.sim.compute.get("globalAddresses", "gmci-ip-shop", project=P)["address"]
    url = world.sim.dataplane.url_for(vip, 80)
    on = {"Host": "shop.example.com"}
    assert requests.get(f"{url}/api/items", headers=on, timeout=5).status_code == 200
    assert requests.get(f"{url}/other", headers=on, timeout=5).status_code == 404  # the host's unmatched path
    assert requests.get(f"{url}/api", headers={"Host": "elsewhere.example"}, timeout=5).status_code == 404
    world.sim.journal.reset()
    assert cli(["lb", "plan", *BASE, "--ingress", str(ingress), "--detailed-exitcode"], capsys)[0] == 0

    # The user adds a default backend (the same Service): the 404s go, though the default service stays the same.
    ingress.write_text(INGRESS.replace("spec:\n", "spec:\n  defaultBackend: {service: {name: shop-auto-deploy, "
                                                 "port: {name: web}}}\n"))
    code, _, err = cli(["lb", "apply", *BASE, "--ingress", str(ingress)], capsys)
    assert code == 0, err
    assert _answers_within(f"{url}/other", on, 200), "the data plane kept answering 404"


def test_classic_scheme_plan_says_where_unmatched_requests_go(
        world: RunningSim, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    ingress = tmp_path / "ingress.yaml"
    ingress.write_text(INGRESS)
    code, out, err = cli(["lb", "plan", *BASE, "--ingress", str(ingress), "--scheme", "EXTERNAL"], capsys)
    assert code == 0, err
    note = [line for line in out.splitlines() if "unmatched" in line]
    assert len(note) == 1 and "gmci-bs-shop-30999" in note[0] and "EXTERNAL_MANAGED" in note[0]


# --- 16: switching to --static-ip keeps the address gitlab-mci reserved, unless --release-ip ------------------------

def test_switching_to_a_static_ip_keeps_the_address_dns_points_at(
        world: RunningSim, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli(["lb", "apply", *SHOP], capsys)[0] == 0
    gc = Compute(P, world.sim.compute_url)
    gc.wait(gc.client(compute_v1.GlobalAddressesClient).insert(
        project=P, address_resource=compute_v1.Address(name="web-ip")))
    code, out, _ = cli(["lb", "plan", *SHOP, "--static-ip", "web-ip"], capsys)
    assert code == 0 and "- globalAddresses/gmci-ip-shop" not in out
    assert re.search(r"gmci-ip-shop.*kept.*--release-ip", out), out
    code, _, err = cli(["lb", "apply", *SHOP, "--static-ip", "web-ip"], capsys)
    assert code == 0, err
    assert "gmci-ip-shop" in owned(world)
    web = world.sim.compute.get("globalAddresses", "web-ip", project=P)["address"]
    rule = world.sim.compute.get("globalForwardingRules", "gmci-fr-shop-http", project=P)
    assert rule["IPAddress"] == web
    assert f"VIP {web}" in cli(["lb", "status", *WHERE], capsys)[1]  # the address served, not the one kept
    world.sim.journal.reset()
    assert cli(["lb", "apply", *SHOP, "--static-ip", "web-ip"], capsys)[0] == 0
    assert world.sim.journal.writes() == []
    code, out, err = cli(["lb", "apply", *SHOP, "--static-ip", "web-ip", "--release-ip"], capsys)
    assert code == 0, err
    assert "gmci-ip-shop" not in owned(world)


# --- 17: each change shows its own duration, the total once at the end ----------------------------------------------

def test_progress_shows_each_changes_own_time_not_time_since_start(
        world: RunningSim, capsys: pytest.CaptureFixture[str]) -> None:
    # The health check takes a second; the URL map, proxy and rule after it take milliseconds each.
    world.sim.faults.add(FaultRule(action="latency", latency=1.0, service="compute", method="POST",
                                   path="/global/healthChecks$", times=1))
    code, out, err = cli(["lb", "apply", *SHOP], capsys)
    assert code == 0, err
    took = {m[1]: float(m[2]) for m in re.finditer(r"✓ \w+ (\S+) \((\d+\.\d)s\)", out)}
    assert took["healthChecks/gmci-hc-shop-30999"] >= 1.0
    assert took["globalForwardingRules/gmci-fr-shop-http"] < 1.0
    assert took["urlMaps/gmci-um-shop"] < 1.0
    assert len(re.findall(r"\d+\.\ds total|in \d+\.\ds", out)) == 1, out


# --- 18: plain words, and a URL that answers ------------------------------------------------------------------------

def test_apply_prints_a_url_that_answers_under_the_simulator(
        world: RunningSim, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    dotenv = tmp_path / "mci.env"
    code, out, err = cli(["lb", "apply", *SHOP, "--dotenv", str(dotenv)], capsys)
    assert code == 0, err
    assert world.sim.dataplane.wait_health("HEALTHY", timeout=10)
    url = re.search(r"ready at (\S+)", out)
    assert url is not None, out
    assert requests.get(url[1], timeout=5).status_code == 200
    vip = world.sim.compute.get("globalAddresses", "gmci-ip-shop", project=P)["address"]
    assert f"MCI_VIP={vip}\n" in dotenv.read_text()


def test_destroying_twice_says_there_is_nothing_to_delete(
        world: RunningSim, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli(["lb", "apply", *SHOP], capsys)[0] == 0
    assert cli(["lb", "destroy", *WHERE], capsys)[0] == 0
    code, out, _ = cli(["lb", "destroy", *WHERE], capsys)
    assert code == 0
    assert "Nothing to delete" in out and "0 change(s)" not in out and "matches the desired state" not in out
