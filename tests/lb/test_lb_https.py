"""HTTPS on the load balancer: every certificate kind, rotation, redirect, and bad certificates refused before writes."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client as k8s

from tests.cli_helpers import run_cli as cli
from tests.conftest import RunningSim
from tests.lb.test_lb_commands import BASE, WHERE, owned
from tests.lb.test_lb_commands import world as world  # the fixture
from tests.pki import self_signed, write_pair
from tests.sim.test_compute_gcloud import gcloud

P = "demo-project"


def _get(world: RunningSim, collection: str, name: str) -> dict[str, Any]:
    found: dict[str, Any] | None = world.sim.compute.get(collection, name, project=P)
    assert found is not None
    return found


def test_self_managed_certificate_from_files_serves_https_and_rotates(
        world: RunningSim, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    crt, key, key_text = write_pair(tmp_path, "one")
    code, out, err = cli(["lb", "apply", *BASE, "--certificate-file", str(crt), "--key-file", str(key)], capsys)
    assert code == 0, err
    assert key_text.splitlines()[1] not in out + err  # the key is never printed
    certs = [n for n in owned(world) if n.startswith("gmci-crt-shop-")]
    assert len(certs) == 1
    proxy = _get(world, "targetHttpsProxies", "gmci-sp-shop")
    assert [u.rsplit("/", 1)[1] for u in proxy["sslCertificates"]] == certs
    rule = _get(world, "globalForwardingRules", "gmci-fr-shop-https")
    assert rule["portRange"] == "443-443" and rule["IPAddress"] == _get(world, "globalAddresses", "gmci-ip-shop")[
        "address"]
    assert _get(world, "sslCertificates", certs[0])["subjectAlternativeNames"] == ["shop.example.com"]

    world.sim.journal.reset()
    assert cli(["lb", "apply", *BASE, "--certificate-file", str(crt), "--key-file", str(key)], capsys)[0] == 0
    assert world.sim.journal.writes() == []

    # Rotation: the new certificate exists before the proxy switches to it; the old one goes after.
    crt2, key2, _ = write_pair(tmp_path, "two")
    world.sim.journal.reset()
    code, out, err = cli(["lb", "apply", *BASE, "--certificate-file", str(crt2), "--key-file", str(key2)], capsys)
    assert code == 0, err
    # (setSslCertificates is one of the few global methods whose path has no /global/ segment.)
    writes = [(e.method, e.path.split("?")[0].split("/projects/demo-project/", 1)[1].removeprefix("global/"))
              for e in world.sim.journal.writes()]
    assert [w[1].split("/")[0] for w in writes] == ["sslCertificates", "targetHttpsProxies", "sslCertificates"]
    assert writes[0][0] == "POST" and writes[1][1].endswith("/setSslCertificates") and writes[2][0] == "DELETE"
    new = [n for n in owned(world) if n.startswith("gmci-crt-shop-")]
    assert len(new) == 1 and new != certs
    assert cli(["lb", "destroy", *WHERE, "--release-ip"], capsys)[0] == 0
    assert owned(world) == []


def test_managed_certificate_redirect_and_no_plain_http(world: RunningSim, capsys: pytest.CaptureFixture[str],
                                                        tmp_path: Path) -> None:
    dotenv = tmp_path / "lb.env"
    code, _, err = cli(["lb", "apply", *BASE, "--managed-domain", "shop.example.com,www.shop.example.com",
                        "--https-redirect", "--dotenv", str(dotenv)], capsys)
    assert code == 0, err
    cert = next(n for n in owned(world) if n.startswith("gmci-crt-shop-m"))
    assert _get(world, "sslCertificates", cert)["managed"]["domains"] == ["shop.example.com", "www.shop.example.com"]
    http_proxy = _get(world, "targetHttpProxies", "gmci-hp-shop")
    assert http_proxy["urlMap"].endswith("/urlMaps/gmci-rd-shop")
    assert _get(world, "urlMaps", "gmci-rd-shop")["defaultUrlRedirect"]["httpsRedirect"] is True
    assert "MCI_URL=https://shop.example.com/" in dotenv.read_text()

    # Turning plain HTTP off removes the HTTP listener and the redirect, keeps HTTPS.
    code, _, err = cli(["lb", "apply", *BASE, "--managed-domain", "shop.example.com,www.shop.example.com",
                        "--no-http"], capsys)
    assert code == 0, err
    assert not {"gmci-fr-shop-http", "gmci-hp-shop", "gmci-rd-shop"} & set(owned(world))
    assert "gmci-fr-shop-https" in owned(world)


def test_pre_shared_certificate_and_static_ip_made_with_gcloud_are_used_and_kept(
        world: RunningSim, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    crt, key, _ = write_pair(tmp_path, "users")
    gcloud(world, "compute", "ssl-certificates", "create", "users-cert", "--certificate", str(crt),
           "--private-key", str(key), "--global")
    gcloud(world, "compute", "addresses", "create", "users-ip", "--global")
    code, _, err = cli(["lb", "apply", *BASE, "--ssl-certificate", "users-cert", "--static-ip", "users-ip"], capsys)
    assert code == 0, err
    proxy = json.loads(gcloud(world, "compute", "target-https-proxies", "describe", "gmci-sp-shop", "--global",
                              "--format=json"))
    assert [u.rsplit("/", 1)[1] for u in proxy["sslCertificates"]] == ["users-cert"]
    ip = json.loads(gcloud(world, "compute", "addresses", "describe", "users-ip", "--global", "--format=json"))
    rules = json.loads(gcloud(world, "compute", "forwarding-rules", "list", "--global", "--format=json",
                              "--filter=name~^gmci-fr-shop"))
    assert {r["IPAddress"] for r in rules} == {ip["address"]} and len(rules) == 2
    um = json.loads(gcloud(world, "compute", "url-maps", "describe", "gmci-um-shop", "--format=json"))
    bs = json.loads(gcloud(world, "compute", "backend-services", "describe", "gmci-bs-shop-30999", "--global",
                           "--format=json"))
    assert um["defaultService"] == bs["selfLink"] and bs["portName"] == "gmci-30999-shop"
    assert len(bs["backends"]) == 2 and bs["loadBalancingScheme"] == "EXTERNAL_MANAGED"
    assert cli(["lb", "destroy", *WHERE, "--release-ip"], capsys)[0] == 0
    names = gcloud(world, "compute", "ssl-certificates", "list", "--format=value(name)").split()
    assert names == ["users-cert"]
    assert gcloud(world, "compute", "addresses", "list", "--global", "--format=value(name)").split() == ["users-ip"]


def test_tls_secret_in_the_first_cluster_becomes_the_certificate(world: RunningSim,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    cert, key = self_signed("secret.example.com")
    api = k8s.ApiClient(k8s.Configuration(host=world.sim.kube_url("prod1")))
    k8s.CoreV1Api(api).create_namespaced_secret("default", {
        "metadata": {"name": "shop-tls"}, "type": "kubernetes.io/tls",
        "data": {"tls.crt": base64.b64encode(cert.encode()).decode(),
                 "tls.key": base64.b64encode(key.encode()).decode()}})
    code, out, err = cli(["lb", "apply", *BASE, "--tls-secret", "shop-tls"], capsys)
    assert code == 0, err
    name = next(n for n in owned(world) if n.startswith("gmci-crt-shop-"))
    assert _get(world, "sslCertificates", name)["subjectAlternativeNames"] == ["secret.example.com"]
    assert key.splitlines()[1] not in out + err


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda d: ["--certificate-file", str(write_pair(d, "a")[0])], "--certificate-file and --key-file go together"),
        (lambda d: ["--certificate-file", str(write_pair(d, "a")[0]), "--key-file", str(write_pair(d, "b")[1])],
         "the private key does not match the certificate"),
        (lambda d: ["--certificate-file", str(write_pair(d, "a", expired=True)[0]),
                    "--key-file", str(write_pair(d, "a", expired=True)[1])], "the certificate expired"),
        (lambda d: ["--certificate-file", str(write_pair(d, "a")[1]), "--key-file", str(write_pair(d, "a")[1])],
         "not a PEM certificate"),
        (lambda d: ["--certificate-file", str(write_pair(d, "a")[0]), "--key-file", str(write_pair(d, "a")[0])],
         "is not an unencrypted PEM private key"),
        (lambda d: ["--certificate-file", str(d / "missing.crt"), "--key-file", str(d / "missing.key")],
         "cannot read the certificate"),
        (lambda d: ["--managed-domain", "*.example.com"], "is not a fully qualified domain name"),
        (lambda d: ["--ssl-certificate", "no-such-cert"], "pre-shared certificate 'no-such-cert' not found"),
        (lambda d: ["--ssl-certificate", ",".join(f"c{i}" for i in range(16))], "at most 15"),
        (lambda d: ["--tls-secret", "absent"], "Secret default/absent in context 'prod1' not found"),
        (lambda d: ["--no-http"], "--no-http needs HTTPS"),
        (lambda d: ["--https-redirect"], "--https-redirect needs both HTTP and HTTPS"),
    ],
)
def test_bad_certificate_input_is_one_line_and_writes_nothing(world: RunningSim, capsys: pytest.CaptureFixture[str],
                                                              tmp_path: Path, make: Any, message: str) -> None:
    code, out, err = cli(["lb", "apply", *BASE, *make(tmp_path)], capsys)
    assert code == 1 and message in err and len(err.splitlines()) == 1, err
    assert "PRIVATE KEY" not in out + err
    assert world.sim.journal.writes() == []
