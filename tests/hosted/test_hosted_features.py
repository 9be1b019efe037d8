"""Production load balancer options in hosted mode (docs/features.md): the same flags, file and GKE annotations as
the self-managed mode, rendered as our BackendConfig/FrontendConfig (validated against gitlab_mci/hosted/schemas),
referenced by the MultiClusterService and MultiClusterIngress; refusals before any write; the IAP secret never
printed."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client as k8s

from tests.cli_helpers import run_cli as cli
from tests.conftest import RunningSim

BASE = ["--lb", "shop", "--context", "prod1,prod2", "--service", "shop-auto-deploy", "--port", "web"]
OPTIONS = ["--logging", "--log-sample-rate", "0.25", "--session-affinity", "CLIENT_IP",
           "--draining-timeout-sec", "30", "--response-header", "X-Served-By:gitlab-mci"]
SPEC = {"logging": {"enable": True, "sampleRate": 0.25}, "sessionAffinity": {"affinityType": "CLIENT_IP"},
        "connectionDraining": {"drainingTimeoutSec": 30},
        "customResponseHeaders": {"headers": ["X-Served-By:gitlab-mci"]}}


def get(running: RunningSim, kind: str, name: str) -> Any:
    version = "cloud.google.com/v1" if kind == "BackendConfig" else \
        "networking.gke.io/v1beta1" if kind == "FrontendConfig" else "networking.gke.io/v1"
    return running.sim.clusters["prod1"].get(version, kind, name, "default")


def kube(running: RunningSim, cluster: str = "prod1") -> k8s.ApiClient:
    return k8s.ApiClient(k8s.Configuration(host=running.sim.kube_url(cluster)))


def writes(running: RunningSim) -> list[Any]:
    return running.sim.journal.writes()


def test_options_from_flags_become_our_backend_config_referenced_by_the_mcs_and_reapply_writes_nothing(
        fleet: RunningSim, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = cli(["hosted", "apply", *BASE, *OPTIONS, "--no-wait"], capsys)
    assert code == 0, err
    bc = get(fleet, "BackendConfig", "shop")
    assert bc["spec"] == SPEC
    mcs = get(fleet, "MultiClusterService", "shop-auto-deploy")
    assert json.loads(mcs["metadata"]["annotations"]["beta.cloud.google.com/backend-config"]) == {"default": "shop"}
    fleet.sim.journal.reset()
    code, _, err = cli(["hosted", "apply", *BASE, *OPTIONS, "--no-wait"], capsys)
    assert code == 0, err
    assert writes(fleet) == []


def test_the_file_and_the_users_backend_config_annotation_give_the_same_backend_config(
        fleet: RunningSim, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import yaml

    path = tmp_path / "features.yaml"
    path.write_text(yaml.safe_dump(SPEC))
    code, out, err = cli(["hosted", "plan", *BASE, "--features-file", str(path), "-o", "json"], capsys)
    assert code == 0, err
    from_file = next(o for o in json.loads(out)["desired"] if o["kind"] == "BackendConfig")["spec"]
    # A GKE Ingress user's BackendConfig in prod1, named by their Service's annotation.
    k8s.CustomObjectsApi(kube(fleet)).create_namespaced_custom_object(
        "cloud.google.com", "v1", "default", "backendconfigs",
        {"apiVersion": "cloud.google.com/v1", "kind": "BackendConfig", "metadata": {"name": "shop-bc"},
         "spec": SPEC})
    k8s.CoreV1Api(kube(fleet)).patch_namespaced_service("shop-auto-deploy", "default", {"metadata": {
        "annotations": {"cloud.google.com/backend-config": json.dumps({"default": "shop-bc"})}}})
    code, out, err = cli(["hosted", "plan", *BASE, "-o", "json"], capsys)
    assert code == 0, err
    from_annotation = next(o for o in json.loads(out)["desired"] if o["kind"] == "BackendConfig")["spec"]
    assert from_file == from_annotation == SPEC
    code, _, err = cli(["hosted", "plan", *BASE, "--session-affinity", "GENERATED_COOKIE"], capsys)
    assert code == 1 and "flags" in err and "BackendConfig default/shop-bc" in err, err


@pytest.mark.parametrize(("flag", "named"), [
    (["--outlier-consecutive-errors", "3"], "outlierDetection"),
    (["--locality-lb-policy", "MAGLEV"], "localityLbPolicy"),
    (["--quic-override", "ENABLE"], "quicOverride"),
    (["--edge-security-policy", "edge"], "edgeSecurityPolicy"),
    (["--session-affinity", "HEADER_FIELD", "--affinity-header", "X-User"], "HEADER_FIELD"),
])
def test_what_gkes_configs_cannot_say_is_refused_by_name_before_any_write(
        fleet: RunningSim, capsys: pytest.CaptureFixture[str], flag: list[str], named: str) -> None:
    code, _, err = cli(["hosted", "apply", *BASE, *flag, "--no-wait"], capsys)
    assert code == 1
    assert named in err and "hosted mode" in err and len(err.strip().splitlines()) == 1, err
    assert writes(fleet) == []


def test_an_iap_secret_without_the_oauth_keys_is_refused_and_its_values_are_never_printed(
        fleet: RunningSim, capsys: pytest.CaptureFixture[str]) -> None:
    secret_value = "s3cr3t-never-printed"
    k8s.CoreV1Api(kube(fleet)).create_namespaced_secret("default", {"metadata": {"name": "oauth"}, "data": {
        "client_id": base64.b64encode(b"client-1").decode(),
        "client_secret": base64.b64encode(secret_value.encode()).decode()}})
    k8s.CoreV1Api(kube(fleet)).create_namespaced_secret("default", {"metadata": {"name": "half"}, "data": {
        "client_id": base64.b64encode(b"client-1").decode()}})
    fleet.sim.journal.reset()
    code, _, err = cli(["hosted", "apply", *BASE, "--iap-secret", "half", "--no-wait"], capsys)
    assert code == 1 and "client_secret" in err, err
    code, _, err = cli(["hosted", "apply", *BASE, "--iap-secret", "missing", "--no-wait"], capsys)
    assert code == 1 and "IAP Secret default/missing" in err and "not found" in err, err
    assert writes(fleet) == []
    for output in ("text", "json"):
        code, out, err = cli(["hosted", "plan", *BASE, "--iap-secret", "oauth", "-o", output], capsys)
        assert code == 0, err
        assert secret_value not in out + err
    code, out, err = cli(["hosted", "apply", *BASE, "--iap-secret", "oauth", "--no-wait", "-o", "json"], capsys)
    assert code == 0, err
    assert secret_value not in out + err
    assert get(fleet, "BackendConfig", "shop")["spec"]["iap"] == {
        "enabled": True, "oauthclientCredentials": {"secretName": "oauth"}}


def test_a_missing_ssl_policy_is_refused_before_any_write(fleet: RunningSim,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    from tests.pki import self_signed

    cert, key = self_signed("shop.example.com")
    fleet.sim.compute.seed("sslCertificates", {"name": "shop-cert", "certificate": cert, "privateKey": key},
                           project="demo-project")
    code, _, err = cli(["hosted", "apply", *BASE, "--ssl-certificate", "shop-cert", "--ssl-policy", "nope",
                        "--no-wait"], capsys)
    assert code == 1 and "SSL policy 'nope'" in err, err
    assert writes(fleet) == []


def test_existing_cloud_armor_and_ssl_policies_go_into_our_backend_and_frontend_configs(
        fleet: RunningSim, capsys: pytest.CaptureFixture[str]) -> None:
    from tests.pki import self_signed
    from tests.sim.test_compute_gcloud import gcloud

    cert, key = self_signed("shop.example.com")
    fleet.sim.compute.seed("sslCertificates", {"name": "shop-cert", "certificate": cert, "privateKey": key},
                           project="demo-project")
    gcloud(fleet, "compute", "security-policies", "create", "shop-armor")
    gcloud(fleet, "compute", "ssl-policies", "create", "modern-tls", "--profile", "MODERN", "--min-tls-version", "1.2")
    args = [*BASE, "--ssl-certificate", "shop-cert", "--security-policy", "shop-armor", "--ssl-policy", "modern-tls"]
    fleet.sim.journal.reset()
    code, _, err = cli(["hosted", "apply", *args, "--no-wait"], capsys)
    assert code == 0, err
    assert get(fleet, "BackendConfig", "shop")["spec"] == {"securityPolicy": {"name": "shop-armor"}}
    assert get(fleet, "FrontendConfig", "shop")["spec"] == {"sslPolicy": "modern-tls"}
    mci = get(fleet, "MultiClusterIngress", "shop")
    assert mci["metadata"]["annotations"]["networking.gke.io/frontend-config"] == "shop"
    fleet.sim.journal.reset()
    code, _, err = cli(["hosted", "apply", *args, "--no-wait"], capsys)
    assert code == 0 and writes(fleet) == [], err
    code, _, err = cli(["hosted", "plan", *BASE, "--security-policy", "gone"], capsys)
    assert code == 1 and "security policy 'gone'" in err, err


def test_backend_protocol_becomes_the_mcs_app_protocols_annotation(fleet: RunningSim,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = cli(["hosted", "apply", *BASE, "--backend-protocol", "HTTP2", "--health-check-path", "/healthz",
                        "--no-wait"], capsys)
    assert code == 0, err
    mcs = get(fleet, "MultiClusterService", "shop-auto-deploy")
    assert json.loads(mcs["metadata"]["annotations"]["networking.gke.io/app-protocols"]) == {"web": "HTTP2"}
    assert get(fleet, "BackendConfig", "shop")["spec"]["healthCheck"]["type"] == "HTTP2"
