"""GKE's hosted Multi Cluster Ingress controller (simulated) applies a BackendConfig's production options to the
backend service it makes, and a FrontendConfig's SSL policy to its HTTPS proxy, as GKE documents; read back with
gcloud. The manifests are written with the kubernetes client, as a GKE user would."""

from __future__ import annotations

import base64
import hashlib
import json
import time
from typing import Any

import pytest
from google.cloud import compute_v1
from kubernetes import client as k8s

from gitlab_mci.gcp import Compute
from gitlab_mci.sim.listeners import self_signed
from tests.cli_helpers import run_cli as cli
from tests.clients import gcloud
from tests.conftest import RunningSim

P = "demo-project"


@pytest.fixture
def fleet(make_sim: Any, monkeypatch: pytest.MonkeyPatch) -> RunningSim:
    """prod1 (config cluster) and prod2, fleet members with the app's Service, clients pointed here."""
    from tests.hosted.conftest import make_fleet

    return make_fleet(make_sim, monkeypatch)


def controller_backend_service(fleet: RunningSim, **expected: Any) -> dict[str, Any]:
    """The controller's backend service once it holds ``expected`` (it reconciles in the background)."""
    deadline = time.monotonic() + 10
    while True:
        found = [b for b in fleet.sim.compute.resources("backendServices") if b["name"].startswith("mci-")]
        if found and all(found[0].get(k) == v for k, v in expected.items()):
            return found[0]
        assert time.monotonic() < deadline, found
        time.sleep(0.05)


def test_a_gke_users_backend_config_options_reach_the_backend_service_and_frontend_config_the_proxy(
        fleet: RunningSim, capsys: pytest.CaptureFixture[str]) -> None:
    gcloud(fleet, "compute", "security-policies", "create", "shop-armor")
    gcloud(fleet, "compute", "ssl-policies", "create", "shop-tls", "--profile", "RESTRICTED", "--min-tls-version",
           "1.2")
    cert, key = self_signed(["shop.example.com"])
    gc = Compute(P, fleet.sim.compute_url)
    certs = gc.client(compute_v1.SslCertificatesClient)
    gc.wait(certs.insert(project=P, ssl_certificate_resource=compute_v1.SslCertificate(
        name="shop-cert", certificate=cert, private_key=key)))
    code, _, err = cli(["hosted", "apply", "--lb", "shop", "--context", "prod1,prod2", "--service",
                        "shop-auto-deploy", "--port", "web"], capsys)
    assert code == 0, err

    api = k8s.ApiClient(k8s.Configuration(host=fleet.sim.kube_url("prod1")))
    k8s.CoreV1Api(api).create_namespaced_secret("default", {"metadata": {"name": "iap-client"}, "data": {
        "client_id": base64.b64encode(b"cid.apps.googleusercontent.com").decode(),
        "client_secret": base64.b64encode(b"s3cret").decode()}})
    crd = k8s.CustomObjectsApi(api)
    [mcs] = crd.list_namespaced_custom_object("networking.gke.io", "v1", "default", "multiclusterservices")["items"]
    notes = mcs["metadata"].get("annotations") or {}
    bc_name = json.loads(notes["cloud.google.com/backend-config"]).get("default") \
        if "cloud.google.com/backend-config" in notes else None
    features = {"securityPolicy": {"name": "shop-armor"},
                "sessionAffinity": {"affinityType": "GENERATED_COOKIE", "affinityCookieTtlSec": 60},
                "connectionDraining": {"drainingTimeoutSec": 30},
                "customRequestHeaders": {"headers": ["X-Client-Region: {client_region}"]},
                "customResponseHeaders": {"headers": ["X-Frame-Options: DENY"]},
                "logging": {"enable": True, "sampleRate": 0.5}, "timeoutSec": 45,
                "iap": {"enabled": True, "oauthclientCredentials": {"secretName": "iap-client"}}}
    if bc_name:
        crd.patch_namespaced_custom_object("cloud.google.com", "v1", "default", "backendconfigs", bc_name,
                                           {"spec": features})
    else:
        crd.create_namespaced_custom_object("cloud.google.com", "v1", "default", "backendconfigs", {
            "apiVersion": "cloud.google.com/v1", "kind": "BackendConfig", "metadata": {"name": "shop-features"},
            "spec": features})
        crd.patch_namespaced_custom_object("networking.gke.io", "v1", "default", "multiclusterservices",
                                           mcs["metadata"]["name"], {"metadata": {"annotations": {
                                               "cloud.google.com/backend-config": '{"default":"shop-features"}'}}})
    crd.create_namespaced_custom_object("networking.gke.io", "v1beta1", "default", "frontendconfigs", {
        "apiVersion": "networking.gke.io/v1beta1", "kind": "FrontendConfig", "metadata": {"name": "shop-front"},
        "spec": {"sslPolicy": "shop-tls"}})
    [mci] = crd.list_namespaced_custom_object("networking.gke.io", "v1", "default", "multiclusteringresses")["items"]
    crd.patch_namespaced_custom_object("networking.gke.io", "v1", "default", "multiclusteringresses",
                                       mci["metadata"]["name"], {"metadata": {"annotations": {
                                           "networking.gke.io/frontend-config": "shop-front",
                                           "networking.gke.io/pre-shared-certs": "shop-cert"}}})

    bs = controller_backend_service(fleet, sessionAffinity="GENERATED_COOKIE", timeoutSec=45)
    described = json.loads(gcloud(fleet, "compute", "backend-services", "describe", bs["name"], "--global",
                                  "--format=json"))
    assert described["securityPolicy"].endswith("/securityPolicies/shop-armor")
    assert (described["affinityCookieTtlSec"], described["connectionDraining"]) == (60, {"drainingTimeoutSec": 30})
    assert described["customRequestHeaders"] == ["X-Client-Region: {client_region}"]
    assert described["customResponseHeaders"] == ["X-Frame-Options: DENY"]
    assert described["logConfig"] == {"enable": True, "sampleRate": 0.5}
    assert described["iap"] == {"enabled": True, "oauth2ClientId": "cid.apps.googleusercontent.com",
                                "oauth2ClientSecretSha256": hashlib.sha256(b"s3cret").hexdigest()}

    deadline = time.monotonic() + 10
    while not any(p.get("sslPolicy") for p in fleet.sim.compute.resources("targetHttpsProxies")):
        assert time.monotonic() < deadline, fleet.sim.compute.resources("targetHttpsProxies")
        time.sleep(0.05)
    [proxy] = fleet.sim.compute.resources("targetHttpsProxies")
    assert json.loads(gcloud(fleet, "compute", "target-https-proxies", "describe", proxy["name"],
                             "--format=json"))["sslPolicy"].endswith("/sslPolicies/shop-tls")
