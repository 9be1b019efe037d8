"""`gitlab-mci sim kubemci`: the recipe's kubemci load balancer, ready to try a takeover on."""

from __future__ import annotations

import json
import ssl
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pytest

from gitlab_mci.sim.kubemci import kubemci_name
from gitlab_mci.sim.spec import parse_spec
from tests.cli_helpers import run_cli
from tests.clients import gcloud
from tests.conftest import RunningSim
from tests.pki import write_pair

P = "demo-project"


def _clusters(url: str, n: int = 20, context: ssl.SSLContext | None = None) -> set[str]:
    seen = set()
    for _ in range(n):
        with urllib.request.urlopen(url + "/", timeout=5, context=context) as resp:
            assert resp.status == 200
            seen.add(json.loads(resp.read())["cluster"])
    return seen


def test_the_recipes_https_kubemci_chain_on_a_reserved_ip_answers_from_both_clusters(
        app_world: RunningSim, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cert, key, key_text = write_pair(tmp_path, "shop")
    code, out, err = run_cli(["sim", "kubemci", "--lb", "shop", "--static-ip", "web-ip", "--certificate-file",
                              str(cert), "--key-file", str(key), "--context", "prod1,prod2",
                              "--state-dir", str(app_world.files.state_dir), "-o", "json"], capsys)
    assert code == 0, err
    made = json.loads(out)
    assert key_text.strip().splitlines()[1] not in out + err, "the private key is never printed"
    assert [r["name"] for r in made["resources"]] == [
        "web-ip", "mci1-hc-30999--shop", "mci1-be-30999--shop", "mci1-um--shop", "mci1-tp--shop", "mci1-fw--shop",
        "mci1-ssl--shop", "mci1-tps--shop", "mci1-fws--shop", "mci1-fr--shop"]
    vip = made["vip"]
    dataplane = app_world.sim.dataplane
    assert dataplane.wait_health("HEALTHY", timeout=10)
    assert _clusters(dataplane.url_for(vip, 80)) == {"prod1", "prod2"}
    insecure = ssl.create_default_context()
    insecure.check_hostname, insecure.verify_mode = False, ssl.CERT_NONE
    assert _clusters(dataplane.url_for(vip, 443), context=insecure) == {"prod1", "prod2"}

    # What a user's gcloud shows of it: kubemci's chain on the user's address, classic, no gitlab-mci marker.
    rules = json.loads(gcloud(app_world, "compute", "forwarding-rules", "list", "--global", "--format=json"))
    assert sorted((r["name"], r["portRange"], r["IPAddress"], r["loadBalancingScheme"]) for r in rules) == [
        ("mci1-fw--shop", "80-80", vip, "EXTERNAL"), ("mci1-fws--shop", "443-443", vip, "EXTERNAL")]
    assert all(not r.get("labels") for r in rules)
    bs = json.loads(gcloud(app_world, "compute", "backend-services", "describe", "mci1-be-30999--shop", "--global",
                            "--format=json"))
    assert (bs["loadBalancingScheme"], bs["protocol"], bs["port"], bs["portName"]) == (
        "EXTERNAL", "HTTP", 30999, "port30999")
    groups = {g["selfLink"] for g in app_world.sim.compute.resources("instanceGroups")}
    assert {b["group"] for b in bs["backends"]} == groups
    assert {(b["balancingMode"], b["maxRatePerInstance"]) for b in bs["backends"]} == {("RATE", 1e14)}
    assert "gitlab-mci" not in json.dumps(bs)
    hc = json.loads(gcloud(app_world, "compute", "health-checks", "describe", "mci1-hc-30999--shop",
                            "--format=json"))
    assert (hc["httpHealthCheck"]["port"], hc["httpHealthCheck"]["requestPath"], hc["checkIntervalSec"]) == (
        30999, "/healthz", 60), "the pods' readiness path, kubemci's 60 s interval"
    address = json.loads(gcloud(app_world, "compute", "addresses", "describe", "web-ip", "--global",
                                 "--format=json"))
    assert address["address"] == vip and address["status"] == "IN_USE"
    firewall = app_world.sim.compute.get("firewalls", "mci1-fr--shop", project=P)
    assert firewall is not None and firewall["allowed"] == [{"IPProtocol": "tcp", "ports": ["30999"]}]
    assert firewall["sourceRanges"] == ["130.211.0.0/22", "35.191.0.0/16"]
    assert sorted(firewall["targetTags"]) == sorted(r.network_tag for r in app_world.sim.records)


def test_an_http_only_kubemci_chain_of_one_cluster_gets_an_ephemeral_ip(
        app_world: RunningSim, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run_cli(["sim", "kubemci", "--lb", "shop", "--context", "prod2",
                              "--state-dir", str(app_world.files.state_dir)], capsys)
    assert code == 0, err
    assert "created forwarding rule mci1-fw--shop\n" in out and "mci1-fws--shop" not in out
    rule = app_world.sim.compute.get("globalForwardingRules", "mci1-fw--shop", project=P)
    assert rule is not None and app_world.sim.compute.get("globalForwardingRules", "mci1-fws--shop", project=P) is None
    assert app_world.sim.dataplane.wait_health("HEALTHY", timeout=10)
    assert _clusters(app_world.sim.dataplane.url_for(rule["IPAddress"], 80)) == {"prod2"}
    # A second `sim kubemci` for the same load balancer: refused before any write, the first chain untouched.
    app_world.sim.journal.reset()
    code, out, err = run_cli(["sim", "kubemci", "--lb", "shop", "--state-dir", str(app_world.files.state_dir)],
                             capsys)
    assert code == 1 and out == "" and "mci1-hc-30999--shop already exists" in err and err.count("\n") == 1, err
    assert app_world.sim.journal.writes("compute") == []


def test_sim_kubemci_before_the_app_is_deployed_is_one_line_and_writes_nothing(
        make_sim: Callable[..., RunningSim], capsys: pytest.CaptureFixture[str]) -> None:
    running = make_sim(parse_spec({"clusters": [{"name": "prod1", "location": "us-central1-a"},
                                                {"name": "prod2", "location": "europe-west1-b"}]}))
    running.sim.journal.reset()
    code, out, err = run_cli(["sim", "kubemci", "--lb", "shop", "--state-dir", str(running.files.state_dir)], capsys)
    assert code == 1 and out == ""
    assert err.startswith("gitlab-mci: error: cluster prod1 has no Service on node port 30999") and \
        err.count("\n") == 1, err
    assert running.sim.journal.writes("compute") == []


def test_sim_kubemci_refuses_a_half_given_certificate_and_https_less_no_http(
        app_world: RunningSim, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cert, _key, _ = write_pair(tmp_path, "shop")
    state = ["--state-dir", str(app_world.files.state_dir)]
    for args, message in ((["--certificate-file", str(cert)], "give both --certificate-file and --key-file"),
                          (["--no-http"], "--no-http needs a certificate"),
                          (["--context", "prod9"], "unknown cluster 'prod9'")):
        code, out, err = run_cli(["sim", "kubemci", "--lb", "shop", *args, *state], capsys)
        assert code == 1 and out == "" and message in err and err.count("\n") == 1, err
    assert app_world.sim.journal.writes("compute") == []


def test_kubemci_names_are_truncated_as_kubemci_truncates_them() -> None:
    long = "a" * 70
    assert kubemci_name("be", "shop", 30999) == "mci1-be-30999--shop"
    assert kubemci_name("be", long, 30999) == ("mci1-be-30999--" + long)[:62] + "0"
