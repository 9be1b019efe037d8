"""`lb takeover` with traffic flowing through the simulated data plane, from before the takeover until after the old
chain is gone: every request answered 200, whichever chain and front end (classic or managed path) served it.

Each test prints the request count and the seconds of each phase (build, wait, adopt, switch, migrate, delete,
finish) from the takeover's progress lines."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.cli_helpers import run_cli
from tests.conftest import RunningSim
from tests.lb.app_clusters import app_clusters
from tests.lb.takeover_world import Traffic, kubemci, leftovers, phases, takeover
from tests.pki import self_signed

P = "demo-project"


def _rule(running: RunningSim, name: str) -> dict[str, Any]:
    rule = running.sim.compute.get("globalForwardingRules", name, project=P)
    assert rule is not None, name
    return rule


def _taken_over_with_traffic(running: RunningSim, capsys: pytest.CaptureFixture[str], label: str, ports: tuple[int, ...],
                             contexts: str = "prod1,prod2", scheme: str = "EXTERNAL_MANAGED") -> Traffic:
    vip = running.sim.compute.get("globalAddresses", "web-ip", project=P)["address"]
    running.sim.compute.operation_latency = 0.05  # every write takes a while, as on Google (faster)
    with Traffic(running, vip, ports) as traffic:
        traffic.served(30)  # the old chain serves before anything is touched
        # Each migration state held 0.3 s: about 15 requests served in each (the data plane follows in 0.1 s).
        code, _out, err = takeover(capsys, contexts, "--scheme", scheme, "--step-wait", "0.3")
        assert code == 0, err
        running.sim.dataplane.refresh()
        traffic.served(30)  # and gitlab-mci's after the old chain is gone
    with capsys.disabled():
        traffic.report(f"\n{label}", phases(err))
    assert len(traffic.results) / traffic.seconds >= 20, "at least 20 requests/s"
    assert not traffic.failed, traffic.failed[:5]
    assert leftovers(running) == []
    return traffic


def test_takeover_of_a_kubemci_https_chain_to_external_managed_drops_no_request(
        app_world: RunningSim, capsys: pytest.CaptureFixture[str]) -> None:
    cert, key = self_signed("shop.example.com")
    kubemci(app_world, certificate=cert, private_key=key)
    traffic = _taken_over_with_traffic(app_world, capsys, "kubemci HTTPS → EXTERNAL_MANAGED", (80, 443))
    paths = [r[2] for r in traffic.results]
    assert paths[0] == "classic" and paths[-1] == "managed", "served classic before, managed after"
    switch = next(i for i, p in enumerate(paths) if p == "managed")
    assert {"classic", "managed"} <= set(paths[switch:switch + 40]), "TEST_BY_PERCENTAGE split the requests"
    for name, port in (("mci1-fw--shop", "80-80"), ("mci1-fws--shop", "443-443")):
        rule = _rule(app_world, name)
        assert (rule["portRange"], rule["loadBalancingScheme"], rule["labels"]["gitlab-mci-lb"]) == (
            port, "EXTERNAL_MANAGED", "shop")
    code, out, err = run_cli(["lb", "status", "--lb", "shop", "--context", "prod1,prod2"], capsys)
    assert code == 0 and "listener mci1-fws--shop (taken over): " in out, out + err
    proxy = app_world.sim.compute.get("targetHttpsProxies", "gmci-sp-shop", project=P)
    assert [c.rsplit("/", 1)[1] for c in proxy["sslCertificates"]] == ["mci1-ssl--shop"], "the user's certificate"


def test_takeover_of_a_kubemci_https_chain_staying_classic_drops_no_request(
        app_world: RunningSim, capsys: pytest.CaptureFixture[str]) -> None:
    cert, key = self_signed("shop.example.com")
    kubemci(app_world, certificate=cert, private_key=key)
    traffic = _taken_over_with_traffic(app_world, capsys, "kubemci HTTPS → EXTERNAL", (80, 443), scheme="EXTERNAL")
    assert {r[2] for r in traffic.results} == {"classic"}
    assert _rule(app_world, "mci1-fws--shop")["loadBalancingScheme"] == "EXTERNAL"
    bs = app_world.sim.compute.get("backendServices", "gmci-bs-shop-30999", project=P)
    assert bs["loadBalancingScheme"] == "EXTERNAL" and "externalManagedMigrationState" not in bs


def test_takeover_of_an_http_only_chain_drops_no_request(
        app_world: RunningSim, capsys: pytest.CaptureFixture[str]) -> None:
    kubemci(app_world)
    _taken_over_with_traffic(app_world, capsys, "kubemci HTTP only → EXTERNAL_MANAGED", (80,))
    assert _rule(app_world, "mci1-fw--shop")["target"].endswith("/targetHttpProxies/gmci-hp-shop")


def test_takeover_of_a_two_cluster_chain_onto_three_clusters_drops_no_request(
        make_sim: Callable[[Any], RunningSim], monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    running = app_clusters(make_sim, monkeypatch)
    kubemci(running, ("prod1", "prod2"))
    traffic = _taken_over_with_traffic(running, capsys, "two clusters → three", (80,), "prod1,prod2,prod3")
    clusters = [r[3] for r in traffic.results]
    assert set(clusters[:30]) == {"prod1", "prod2"}
    assert set(clusters[-30:]) == {"prod1", "prod2", "prod3"}, "the third cluster serves after the takeover"


def test_takeover_of_a_hand_made_https_chain_with_an_http_redirect_drops_no_request(
        app_world: RunningSim, capsys: pytest.CaptureFixture[str]) -> None:
    """What a Terraform user runs: their own names, HTTP answered with a redirect to HTTPS, a named port `http`, and a
    firewall rule that also opens SSH (shared: kept)."""
    from gitlab_mci.gcp import Compute
    from gitlab_mci.lb.engine import ComputeApi

    api = ComputeApi(Compute(P, app_world.sim.compute_url))
    g = f"https://www.googleapis.com/compute/v1/projects/{P}"
    groups = app_world.sim.compute.resources("instanceGroups")
    for group in groups:
        zone = group["zone"].rsplit("/", 1)[1]
        api.wait("named port", api.rest.post(f"zones/{zone}/instanceGroups/{group['name']}/setNamedPorts", {
            "namedPorts": [{"name": "http", "port": 30999}], "fingerprint": group["fingerprint"]}))
    cert, key = self_signed("shop.example.com")
    for coll, body in (
            ("globalAddresses", {"name": "tf-ip"}),
            ("firewalls", {"name": "allow-google-hc", "network": f"{g}/global/networks/default",
                           "sourceRanges": ["130.211.0.0/22", "35.191.0.0/16"],
                           "allowed": [{"IPProtocol": "tcp", "ports": ["30999", "22"]}]}),
            ("healthChecks", {"name": "tf-hc", "type": "HTTP",
                              "httpHealthCheck": {"port": 30999, "requestPath": "/healthz"}}),
            ("backendServices", {"name": "tf-backend", "protocol": "HTTP", "portName": "http",
                                 "loadBalancingScheme": "EXTERNAL", "healthChecks": [f"{g}/global/healthChecks/tf-hc"],
                                 "backends": [{"group": x["selfLink"]} for x in groups]}),
            ("urlMaps", {"name": "tf-urlmap", "defaultService": f"{g}/global/backendServices/tf-backend"}),
            ("urlMaps", {"name": "tf-redirect", "defaultUrlRedirect": {"httpsRedirect": True}}),
            ("sslCertificates", {"name": "tf-cert", "certificate": cert, "privateKey": key}),
            ("targetHttpsProxies", {"name": "tf-https", "urlMap": f"{g}/global/urlMaps/tf-urlmap",
                                    "sslCertificates": [f"{g}/global/sslCertificates/tf-cert"]}),
            ("targetHttpProxies", {"name": "tf-http", "urlMap": f"{g}/global/urlMaps/tf-redirect"}),
            ("globalForwardingRules", {"name": "tf-https-rule", "IPAddress": f"{g}/global/addresses/tf-ip",
                                       "portRange": "443", "loadBalancingScheme": "EXTERNAL",
                                       "target": f"{g}/global/targetHttpsProxies/tf-https"}),
            ("globalForwardingRules", {"name": "tf-http-rule", "IPAddress": f"{g}/global/addresses/tf-ip",
                                       "portRange": "80", "loadBalancingScheme": "EXTERNAL",
                                       "target": f"{g}/global/targetHttpProxies/tf-http"})):
        api.insert(coll, body)
    assert app_world.sim.dataplane.wait_health("HEALTHY", timeout=20)
    vip = (api.get("globalAddresses", "tf-ip") or {})["address"]
    with Traffic(app_world, vip, (443,)) as traffic:
        traffic.served(30)
        code, out, err = takeover(capsys, "prod1,prod2", "--step-wait", "0.3", address="tf-ip")
        assert code == 0, err
        traffic.served(30)
    with capsys.disabled():
        traffic.report("\nhand-made HTTPS + redirect → EXTERNAL_MANAGED", phases(err))
    assert not traffic.failed, traffic.failed[:5]
    assert "--ssl-certificate tf-cert --https-redirect --scheme EXTERNAL_MANAGED" in out
    left = sorted(f"{c}/{r['name']}" for c in ("globalForwardingRules", "targetHttpProxies", "targetHttpsProxies",
                                               "urlMaps", "backendServices", "healthChecks", "firewalls",
                                               "sslCertificates", "globalAddresses")
                  for r in app_world.sim.compute.resources(c) if not r["name"].startswith("gmci-"))
    assert left == ["firewalls/allow-google-hc", "globalAddresses/tf-ip", "globalForwardingRules/tf-http-rule",
                    "globalForwardingRules/tf-https-rule", "sslCertificates/tf-cert"], left
    assert all("http" not in [p["name"] for p in x.get("namedPorts", [])]
               for x in app_world.sim.compute.resources("instanceGroups")), "the old chain's named port went"
    um = app_world.sim.compute.get("urlMaps", "gmci-rd-shop", project=P)
    assert um is not None and um["defaultUrlRedirect"]["httpsRedirect"]
    app_world.sim.journal.reset()
    code, _, err = run_cli(["lb", "apply", "--lb", "shop", "--context", "prod1,prod2", "--static-ip", "tf-ip",
                            "--ssl-certificate", "tf-cert", "--https-redirect", "--service", "shop-auto-deploy",
                            "--port", "web", "--check-interval-sec", "1"], capsys)
    assert code == 0 and app_world.sim.journal.writes("compute") == [], err
