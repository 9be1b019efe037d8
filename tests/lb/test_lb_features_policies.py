"""Options that name what a team made beforehand with gcloud — a Cloud Armor policy, an SSL policy, a Certificate
Manager map — applied by name, seen in the data plane where it can be (a deny of 127.0.0.1/32 answers 403), and
refused with 0 writes when what they name does not exist (docs/features.md)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import requests

from tests.cli_helpers import run_cli as cli
from tests.conftest import RunningSim
from tests.lb.test_lb_features import (
    BASE,
    BS,
    P,
    apply,
    backend_service,
    gcloud_json,
    reapply_writes_nothing,
    serving_url,
    writes,
)


@pytest.fixture
def world(app_world: RunningSim) -> RunningSim:
    return app_world


def gcloud_ok(world: RunningSim, *args: str) -> None:
    from tests.sim.test_compute_gcloud import gcloud

    gcloud(world, *args)


def status_within(world: RunningSim, url: str, wanted: int, seconds: float = 2.0) -> bool:
    """Whether ``url`` answers ``wanted`` within ``seconds`` (the data plane's next looks at Compute)."""
    deadline = time.monotonic() + seconds
    world.sim.dataplane.refresh()
    while True:
        if requests.get(f"{url}/", timeout=5).status_code == wanted:
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)


def tls(tmp_path: Path) -> list[str]:
    from tests.pki import self_signed

    cert, key = self_signed("shop.example.com")
    (tmp_path / "tls.crt").write_text(cert)
    (tmp_path / "tls.key").write_text(key)
    return ["--certificate-file", str(tmp_path / "tls.crt"), "--key-file", str(tmp_path / "tls.key")]


def test_a_cloud_armor_policy_denying_the_client_answers_403_and_removing_it_serves_again(
        world: RunningSim, capsys: pytest.CaptureFixture[str]) -> None:
    gcloud_ok(world, "compute", "security-policies", "create", "shop-armor")
    gcloud_ok(world, "compute", "security-policies", "rules", "create", "1000", "--security-policy", "shop-armor",
              "--src-ip-ranges", "127.0.0.1/32", "--action", "deny-403")
    apply(world, capsys, "--security-policy", "shop-armor")
    described = gcloud_json(world, "compute", "backend-services", "describe", BS, "--global")
    assert described["securityPolicy"].endswith("/global/securityPolicies/shop-armor")
    url = serving_url(world)
    # The policy is attached after the backend service is created (setSecurityPolicy): the data plane may have
    # looked at Compute during the apply; it applies the change on its next look (every 0.1 s).
    assert status_within(world, url, 403)
    reapply_writes_nothing(world, capsys, "--security-policy", "shop-armor")
    world.sim.journal.reset()
    apply(world, capsys)
    assert [w for w in writes(world) if BS in w[1]] == [("POST", f"/compute/v1/projects/{P}/global/backendServices/"
                                                                 f"{BS}/setSecurityPolicy")]
    assert not backend_service(world).get("securityPolicy")
    assert status_within(world, url, 200)


def test_a_missing_cloud_armor_policy_is_refused_before_any_write(world: RunningSim,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = cli(["lb", "apply", *BASE, "--security-policy", "no-such-policy"], capsys)
    assert code == 1
    assert "security policy 'no-such-policy'" in err and "flags" in err and len(err.strip().splitlines()) == 1, err
    assert writes(world) == []


def test_an_ssl_policy_made_with_gcloud_goes_on_the_https_proxy(world: RunningSim, tmp_path: Path,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    gcloud_ok(world, "compute", "ssl-policies", "create", "modern-tls", "--profile", "MODERN",
              "--min-tls-version", "1.2")
    certificate = tls(tmp_path)
    extra = [*certificate, "--ssl-policy", "modern-tls"]
    apply(world, capsys, *extra)
    proxy = gcloud_json(world, "compute", "target-https-proxies", "describe", "gmci-sp-shop", "--global")
    assert proxy["sslPolicy"].endswith("/global/sslPolicies/modern-tls")
    reapply_writes_nothing(world, capsys, *extra)
    code, _, err = cli(["lb", "apply", *BASE, *certificate, "--ssl-policy", "old-tls"], capsys)
    assert code == 1 and "SSL policy 'old-tls'" in err, err
    # The option removed: one write (setSslPolicy) detaches it; the certificate stays.
    world.sim.journal.reset()
    apply(world, capsys, *certificate)
    assert [w[1].rsplit("/", 1)[1] for w in writes(world)] == ["setSslPolicy"]
    proxy = gcloud_json(world, "compute", "target-https-proxies", "describe", "gmci-sp-shop", "--global")
    assert not proxy.get("sslPolicy")


def test_a_certificate_map_instead_of_certificates(world: RunningSim, capsys: pytest.CaptureFixture[str]) -> None:
    world.sim.journal.reset()
    code, _, err = cli(["lb", "apply", *BASE, "--certificate-map", "shop-map"], capsys)
    assert code == 1 and "certificate map 'shop-map'" in err, err
    assert writes(world) == []
    made = requests.post(f"{world.sim.certmanager_url}/v1/projects/{P}/locations/global/certificateMaps",
                         params={"certificateMapId": "shop-map"}, json={}, timeout=5)
    assert made.status_code == 200, made.text
    apply(world, capsys, "--certificate-map", "shop-map")
    proxy = gcloud_json(world, "compute", "target-https-proxies", "describe", "gmci-sp-shop", "--global")
    assert proxy["certificateMap"] == \
        f"//certificatemanager.googleapis.com/projects/{P}/locations/global/certificateMaps/shop-map"
    reapply_writes_nothing(world, capsys, "--certificate-map", "shop-map")


def test_a_gke_ingress_users_frontend_config_carries_its_ssl_policy_over(
        world: RunningSim, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from kubernetes import client as k8s

    gcloud_ok(world, "compute", "ssl-policies", "create", "modern-tls", "--profile", "MODERN",
              "--min-tls-version", "1.2")
    api = k8s.ApiClient(k8s.Configuration(host=world.sim.kube_url("prod1")))
    k8s.CustomObjectsApi(api).create_namespaced_custom_object(
        "networking.gke.io", "v1beta1", "default", "frontendconfigs",
        {"apiVersion": "networking.gke.io/v1beta1", "kind": "FrontendConfig", "metadata": {"name": "shop-fc"},
         "spec": {"sslPolicy": "modern-tls", "redirectToHttps": {"enabled": False}}})
    ingress = tmp_path / "ingress.yaml"
    ingress.write_text(
        "apiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata:\n  name: shop\n  annotations:\n"
        "    networking.gke.io/v1beta1.FrontendConfig: shop-fc\nspec:\n  defaultBackend:\n    service:\n"
        "      name: shop-auto-deploy\n      port: {name: web}\n")
    where = ["--lb", "shop", "--context", "prod1,prod2", "--ingress", str(ingress), *tls(tmp_path)]
    code, _, err = cli(["lb", "apply", *where], capsys)
    assert code == 0, err
    proxy = gcloud_json(world, "compute", "target-https-proxies", "describe", "gmci-sp-shop", "--global")
    assert proxy["sslPolicy"].endswith("/global/sslPolicies/modern-tls")
    world.sim.journal.reset()
    code, _, err = cli(["lb", "apply", *where], capsys)
    assert code == 0 and writes(world) == [], err
    code, _, err = cli(["lb", "plan", *where, "--ssl-policy", "other"], capsys)
    assert code == 1 and "FrontendConfig default/shop-fc" in err and "flags" in err, err


def test_an_edge_security_policy_beside_the_backend_policy(world: RunningSim,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    gcloud_ok(world, "compute", "security-policies", "create", "shop-edge", "--type", "CLOUD_ARMOR_EDGE")
    gcloud_ok(world, "compute", "security-policies", "create", "shop-armor")
    extra = ["--security-policy", "shop-armor", "--edge-security-policy", "shop-edge", "--cdn"]
    apply(world, capsys, *extra)
    described = gcloud_json(world, "compute", "backend-services", "describe", BS, "--global")
    assert described["edgeSecurityPolicy"].endswith("/global/securityPolicies/shop-edge")
    assert described["securityPolicy"].endswith("/global/securityPolicies/shop-armor")
    reapply_writes_nothing(world, capsys, *extra)


def test_a_certificate_map_beside_ssl_certificates(world: RunningSim, tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    made = requests.post(f"{world.sim.certmanager_url}/v1/projects/{P}/locations/global/certificateMaps",
                         params={"certificateMapId": "shop-map"}, json={}, timeout=5)
    assert made.status_code == 200, made.text
    extra = [*tls(tmp_path), "--certificate-map", "shop-map"]
    apply(world, capsys, *extra)
    proxy = gcloud_json(world, "compute", "target-https-proxies", "describe", "gmci-sp-shop", "--global")
    assert proxy["certificateMap"].endswith("/certificateMaps/shop-map") and len(proxy["sslCertificates"]) == 1
    reapply_writes_nothing(world, capsys, *extra)
