"""The production options in gateway mode: GKE's GCPBackendPolicy (one per exported Service) and GCPGatewayPolicy,
rendered from the same flags and ``--features-file`` as ``lb``/``hosted``, applied by the simulated Gateway
controller to its ``gkemcg1-`` backend services and proxy, and seen in the data plane."""

from __future__ import annotations

from pathlib import Path

import pytest
import requests

from tests.cli_helpers import run_cli as cli
from tests.conftest import RunningSim
from tests.gateway.test_gateway_commands import BASE, WHERE, converged, custom, serving_everywhere

P = "demo-project"


def gateway_backend_services(running: RunningSim) -> list[dict[str, object]]:
    return [r for r in running.sim.compute.resources("backendServices") if r["name"].startswith("gkemcg1-")]


def test_backend_options_become_a_gcp_backend_policy_per_export_that_gke_puts_on_its_backend_services(
        gateway_world: RunningSim, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    from tests.sim.test_compute_gcloud import gcloud

    gcloud(gateway_world, "compute", "security-policies", "create", "shop-armor")
    gcloud(gateway_world, "compute", "security-policies", "rules", "create", "1000", "--security-policy",
           "shop-armor", "--src-ip-ranges", "127.0.0.1/32", "--action", "deny-403")
    features = tmp_path / "features.yaml"
    features.write_text("sessionAffinity: {affinityType: GENERATED_COOKIE, affinityCookieTtlSec: 60}\n")
    args = [*BASE, "--timeout-sec", "45", "--draining-timeout-sec", "20", "--log-sample-rate", "0.5",
            "--features-file", str(features)]
    code, _, err = cli(["gateway", "apply", *args], capsys)
    assert code == 0, err
    policy = custom(gateway_world).get_namespaced_custom_object("networking.gke.io", "v1", "default",
                                                                "gcpbackendpolicies", "shop-auto-deploy-prod2")
    assert policy["spec"] == {
        "default": {"timeoutSec": 45, "connectionDraining": {"drainingTimeoutSec": 20},
                    "logging": {"enabled": True, "sampleRate": 500000},
                    "sessionAffinity": {"type": "GENERATED_COOKIE", "cookieTtlSec": 60}},
        "targetRef": {"group": "net.gke.io", "kind": "ServiceImport", "name": "shop-auto-deploy-prod2"}}
    converged(gateway_world)
    services = gateway_backend_services(gateway_world)
    assert len(services) == 3
    for bs in services:
        assert (bs["timeoutSec"], bs["connectionDraining"], bs["sessionAffinity"], bs["affinityCookieTtlSec"]) == \
            (45, {"drainingTimeoutSec": 20}, "GENERATED_COOKIE", 60), bs
        assert bs["logConfig"] == {"enable": True, "sampleRate": 0.5}
    target = serving_everywhere(gateway_world)
    # The affinity is each export's (a backend service per cluster): the weighted split between clusters comes
    # first, so the cookie pins a client to a pod only within the cluster the split picks. With all the weight on
    # prod1, it pins to one of prod1's two pods.
    assert cli(["gateway", "weight", "prod2=0", "prod3=0", *WHERE], capsys)[0] == 0
    converged(gateway_world)
    first = requests.get(target + "/", timeout=5)
    assert first.status_code == 200 and "GCLB" in first.cookies, first.headers
    pods = {requests.get(target + "/", cookies=first.cookies, timeout=5).json()["pod"] for _ in range(20)}
    assert pods == {first.json()["pod"]}
    assert len({requests.get(target + "/", timeout=5).json()["pod"] for _ in range(20)}) == 2  # without: both

    # Cloud Armor too: the deny of 127.0.0.1 answers 403; a re-run with the same inputs writes nothing.
    code, _, err = cli(["gateway", "apply", *args, "--security-policy", "shop-armor"], capsys)
    assert code == 0, err
    converged(gateway_world)
    assert {str(bs.get("securityPolicy", "")).rsplit("/", 1)[-1] for bs in gateway_backend_services(gateway_world)} \
        == {"shop-armor"}
    assert requests.get(target + "/", timeout=5).status_code == 403
    gateway_world.sim.journal.reset()
    code, out, err = cli(["gateway", "apply", *args, "--security-policy", "shop-armor"], capsys)
    assert code == 0 and "No changes" in out, out
    assert [w for w in gateway_world.sim.journal.writes() if "gkemcg1" not in str(w)] == []

    # Options dropped: the policies go, and GKE's defaults come back.
    code, _, err = cli(["gateway", "apply", *BASE], capsys)
    assert code == 0 and "- GCPBackendPolicy default/shop-auto-deploy-prod1 (prod1)" in err, err
    converged(gateway_world)
    assert all("securityPolicy" not in bs and bs.get("sessionAffinity", "NONE") == "NONE"
               for bs in gateway_backend_services(gateway_world))
    assert requests.get(target + "/", timeout=5).status_code == 200
    assert cli(["gateway", "delete", *WHERE], capsys)[0] == 0


def test_an_ssl_policy_is_a_gcp_gateway_policy_on_the_https_proxy(gateway_world: RunningSim,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    from tests.pki import self_signed
    from tests.sim.test_compute_gcloud import gcloud

    cert, key = self_signed("shop.example.com")
    gateway_world.sim.compute.seed("sslCertificates", {"name": "shop-cert", "certificate": cert, "privateKey": key},
                                   project=P)
    gcloud(gateway_world, "compute", "ssl-policies", "create", "shop-tls", "--min-tls-version", "1.2",
           "--profile", "MODERN")
    code, _, err = cli(["gateway", "apply", *BASE, "--ssl-certificate", "shop-cert", "--ssl-policy", "shop-tls"],
                       capsys)
    assert code == 0, err
    policy = custom(gateway_world).get_namespaced_custom_object("networking.gke.io", "v1", "default",
                                                                "gcpgatewaypolicies", "shop")
    assert policy["spec"] == {"default": {"sslPolicy": "shop-tls"},
                              "targetRef": {"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": "shop"}}
    converged(gateway_world)
    proxies = [p for p in gateway_world.sim.compute.resources("targetHttpsProxies") if p["name"].startswith("gkemcg1-")]
    assert [p["sslPolicy"].rsplit("/", 1)[-1] for p in proxies] == ["shop-tls"]
    assert cli(["gateway", "delete", *WHERE], capsys)[0] == 0


@pytest.mark.parametrize(("extra", "said"), [
    (["--cdn"], "cdn (from flags) is not available in gateway mode"),
    (["--locality-lb-policy", "MAGLEV"], "localityLbPolicy (from flags) is not available in gateway"),
    (["--session-affinity", "HEADER_FIELD", "--affinity-header", "x-user"], "sessionAffinity HEADER_FIELD"),
    (["--security-policy", "nope"], "security policy 'nope' (from flags) not found"),
    (["--ssl-policy", "shop-tls"], "sslPolicy (from flags) applies to HTTPS"),
    (["--timeout-sec", "0"], "--timeout-sec 0"),
], ids=["cdn", "locality", "header-affinity", "missing-armor", "ssl-policy-without-https", "timeout"])
def test_options_the_gateway_cannot_express_are_refused_by_name_with_no_write(
        gateway_world: RunningSim, capsys: pytest.CaptureFixture[str], extra: list[str], said: str) -> None:
    gateway_world.sim.journal.reset()
    code, _, err = cli(["gateway", "apply", *BASE, *extra], capsys)
    assert code == 1 and said in err, err
    assert len(err.strip().splitlines()) == 1
    assert gateway_world.sim.journal.writes() == []


def test_a_gke_ingress_users_backend_config_becomes_the_gcp_backend_policy(
        gateway_world: RunningSim, capsys: pytest.CaptureFixture[str]) -> None:
    """Moving from GKE Ingress: the Service's cloud.google.com/backend-config names a BackendConfig, which GKE's
    Gateway controller ignores; gateway mode carries what it can say into the GCPBackendPolicy, and refuses the rest
    by name."""
    import json

    from kubernetes import client as k8s

    from tests.gateway.conftest import api

    bc = {"apiVersion": "cloud.google.com/v1", "kind": "BackendConfig", "metadata": {"name": "shop-bc"},
          "spec": {"connectionDraining": {"drainingTimeoutSec": 33}, "sessionAffinity": {"affinityType": "CLIENT_IP"},
                   "timeoutSec": 40}}
    for name in ("prod1", "prod2", "prod3"):
        k8s.CustomObjectsApi(api(gateway_world, name)).create_namespaced_custom_object(
            "cloud.google.com", "v1", "default", "backendconfigs", bc)
        k8s.CoreV1Api(api(gateway_world, name)).patch_namespaced_service("shop-auto-deploy", "default", {
            "metadata": {"annotations": {"cloud.google.com/backend-config": json.dumps({"default": "shop-bc"})}}})
    code, out, err = cli(["gateway", "plan", *BASE, "-o", "json"], capsys)
    assert code == 0, err
    policies = [d for d in json.loads(out)["desired"] if d["kind"] == "GCPBackendPolicy"]
    assert len(policies) == 3
    assert policies[0]["spec"]["default"] == {"connectionDraining": {"drainingTimeoutSec": 33},
                                              "sessionAffinity": {"type": "CLIENT_IP"}}
    code, _, err = cli(["gateway", "plan", *BASE, "--draining-timeout-sec", "5"], capsys)
    assert code == 1 and "flags" in err and "BackendConfig default/shop-bc" in err, err
    k8s.CustomObjectsApi(api(gateway_world, "prod1")).patch_namespaced_custom_object(
        "cloud.google.com", "v1", "default", "backendconfigs", "shop-bc", {"spec": {"cdn": {"enabled": True}}})
    gateway_world.sim.journal.reset()
    code, _, err = cli(["gateway", "apply", *BASE], capsys)
    assert code == 1 and "cdn (from BackendConfig default/shop-bc" in err and "not available in gateway mode" in err
    assert gateway_world.sim.journal.writes() == []
