"""Production load balancer options (issue 14, docs/features.md) in the self-managed mode, with the real clients:
what Compute holds afterwards (read back with gcloud and google-cloud-compute), what traffic shows in the data
plane, re-apply with 0 writes, the three input ways giving the same Compute state, and refusals before any write."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import pytest
import requests
from google.cloud import compute_v1
from kubernetes import client as k8s

from tests.cli_helpers import run_cli as cli
from tests.clients import backend_service as read_backend_service
from tests.conftest import RunningSim

P = "demo-project"
BASE = ["--lb", "shop", "--context", "prod1,prod2", "--service", "shop-auto-deploy", "--port", "web"]
BS = "gmci-bs-shop-30999"
HC = "gmci-hc-shop-30999"


@pytest.fixture
def world(app_world: RunningSim) -> RunningSim:
    return app_world


def backend_service(world: RunningSim) -> dict[str, Any]:
    """The backend service as Compute holds it, read with google-cloud-compute."""
    return dict(json.loads(compute_v1.BackendService.to_json(read_backend_service(world, BS))))


def gcloud_json(world: RunningSim, *args: str) -> Any:
    from tests.sim.test_compute_gcloud import gcloud

    return json.loads(gcloud(world, *args, "--format", "json"))


def writes(world: RunningSim) -> list[tuple[str, str]]:
    return [(e.method, e.path) for e in world.sim.journal.writes()]


def apply(world: RunningSim, capsys: pytest.CaptureFixture[str], *extra: str) -> str:
    code, out, err = cli(["lb", "apply", *BASE, *extra], capsys)
    assert code == 0, err
    return out


def reapply_writes_nothing(world: RunningSim, capsys: pytest.CaptureFixture[str], *extra: str) -> None:
    world.sim.journal.reset()
    out = apply(world, capsys, *extra)
    assert writes(world) == [], out


def serving_url(world: RunningSim) -> str:
    assert world.sim.dataplane.wait_health("HEALTHY", timeout=15)
    vip = world.sim.compute.get("globalAddresses", "gmci-ip-shop", project=P)["address"]
    return world.sim.dataplane.url_for(vip, 80)


OPTIONS = ["--logging", "--log-sample-rate", "0.5", "--session-affinity", "GENERATED_COOKIE",
           "--affinity-cookie-ttl-sec", "60", "--draining-timeout-sec", "45",
           "--request-header", "X-Client-Region:{client_region}", "--response-header", "X-Served-By: gitlab-mci"]
FILE = """\
logging: {enable: true, sampleRate: 0.5}
sessionAffinity: {affinityType: GENERATED_COOKIE, affinityCookieTtlSec: 60}
connectionDraining: {drainingTimeoutSec: 45}
customRequestHeaders: {headers: ["X-Client-Region:{client_region}"]}
customResponseHeaders: {headers: ["X-Served-By:gitlab-mci"]}
"""
# The same, as a GKE Ingress user's BackendConfig (cloud.google.com/v1) already says it.
BACKEND_CONFIG = {
    "logging": {"enable": True, "sampleRate": 0.5},
    "sessionAffinity": {"affinityType": "GENERATED_COOKIE", "affinityCookieTtlSec": 60},
    "connectionDraining": {"drainingTimeoutSec": 45},
    "customRequestHeaders": {"headers": ["X-Client-Region:{client_region}"]},
    "customResponseHeaders": {"headers": ["X-Served-By:gitlab-mci"]},
}
FIELDS = ("logConfig", "sessionAffinity", "affinityCookieTtlSec", "connectionDraining", "customRequestHeaders",
          "customResponseHeaders")


def _fields(bs: dict[str, Any]) -> dict[str, Any]:
    return {k: bs.get(k) for k in FIELDS}


def give_backend_config(world: RunningSim, spec: dict[str, Any], name: str = "shop-bc") -> None:
    """What a GKE Ingress user has: a BackendConfig in the app's namespace, named by the Service's annotation."""
    api = k8s.ApiClient(k8s.Configuration(host=world.sim.kube_url("prod1")))
    k8s.CustomObjectsApi(api).create_namespaced_custom_object(
        "cloud.google.com", "v1", "default", "backendconfigs",
        {"apiVersion": "cloud.google.com/v1", "kind": "BackendConfig", "metadata": {"name": name}, "spec": spec})
    k8s.CoreV1Api(api).patch_namespaced_service("shop-auto-deploy", "default", {"metadata": {"annotations": {
        "cloud.google.com/backend-config": json.dumps({"default": name})}}})


def test_logging_affinity_draining_and_headers_from_flags_are_held_by_compute_and_reapply_writes_nothing(
        world: RunningSim, capsys: pytest.CaptureFixture[str]) -> None:
    apply(world, capsys, *OPTIONS)
    described = gcloud_json(world, "compute", "backend-services", "describe", BS, "--global")
    assert described["logConfig"]["enable"] is True
    assert described["logConfig"]["sampleRate"] == 0.5
    assert described["sessionAffinity"] == "GENERATED_COOKIE"
    assert described["affinityCookieTtlSec"] == 60
    assert described["connectionDraining"]["drainingTimeoutSec"] == 45
    assert described["customRequestHeaders"] == ["X-Client-Region:{client_region}"]
    assert described["customResponseHeaders"] == ["X-Served-By:gitlab-mci"]
    reapply_writes_nothing(world, capsys, *OPTIONS)


def test_a_custom_response_header_is_seen_by_an_http_client(world: RunningSim,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    apply(world, capsys, "--response-header", "X-Served-By: gitlab-mci")
    reply = requests.get(f"{serving_url(world)}/", timeout=5)
    assert reply.headers.get("X-Served-By") == "gitlab-mci"


def test_flags_file_and_a_backend_config_annotation_give_the_same_compute_state(
        make_app_world: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    states = []
    for way in ("flags", "file", "annotation"):
        world = make_app_world(prod1_nodes=1, prod2_nodes=1)
        extra: list[str] = []
        if way == "flags":
            extra = OPTIONS
        elif way == "file":
            (tmp_path / "features.yaml").write_text(FILE)
            extra = ["--features-file", str(tmp_path / "features.yaml")]
        else:
            give_backend_config(world, BACKEND_CONFIG)
        apply(world, capsys, *extra)
        states.append(_fields(backend_service(world)))
        reapply_writes_nothing(world, capsys, *extra)
        world.sim.stop()
    assert states[0] == states[1] == states[2]
    assert states[0]["sessionAffinity"] == "GENERATED_COOKIE"


def test_a_flag_and_the_services_backend_config_that_disagree_are_refused_naming_both(
        world: RunningSim, capsys: pytest.CaptureFixture[str]) -> None:
    give_backend_config(world, {"sessionAffinity": {"affinityType": "CLIENT_IP"}})
    world.sim.journal.reset()
    code, _, err = cli(["lb", "apply", *BASE, "--session-affinity", "GENERATED_COOKIE"], capsys)
    assert code == 1
    assert "flags" in err and "BackendConfig default/shop-bc" in err and "sessionAffinity" in err, err
    assert len(err.strip().splitlines()) == 1
    assert writes(world) == []


def test_removing_an_option_returns_the_field_to_its_default_with_one_write(
        world: RunningSim, capsys: pytest.CaptureFixture[str]) -> None:
    apply(world, capsys, *OPTIONS)
    world.sim.journal.reset()
    apply(world, capsys)
    bs_writes = [w for w in writes(world) if BS in w[1]]
    assert len(bs_writes) == 1, writes(world)
    bs = backend_service(world)
    assert bs.get("sessionAffinity") == "NONE"
    assert not (bs.get("logConfig") or {}).get("enable")
    assert not bs.get("customRequestHeaders") and not bs.get("customResponseHeaders")
    reapply_writes_nothing(world, capsys)


@pytest.mark.parametrize("way", ["flag", "file", "backend-config"])
def test_a_draining_timeout_no_longer_given_returns_to_computes_0_s_in_one_write(
        world: RunningSim, tmp_path: Path, capsys: pytest.CaptureFixture[str], way: str) -> None:
    # gitlab-mci makes its backend services through the API, where Compute's default drain is 0 s.
    extra: list[str] = []
    if way == "flag":
        extra = ["--draining-timeout-sec", "45"]
    elif way == "file":
        (tmp_path / "features.yaml").write_text("connectionDraining: {drainingTimeoutSec: 45}\n")
        extra = ["--features-file", str(tmp_path / "features.yaml")]
    else:
        give_backend_config(world, {"connectionDraining": {"drainingTimeoutSec": 45}})
    apply(world, capsys, *extra)
    described = gcloud_json(world, "compute", "backend-services", "describe", BS, "--global")
    assert described["connectionDraining"]["drainingTimeoutSec"] == 45
    if way == "backend-config":
        api = k8s.ApiClient(k8s.Configuration(host=world.sim.kube_url("prod1")))
        k8s.CustomObjectsApi(api).patch_namespaced_custom_object(
            "cloud.google.com", "v1", "default", "backendconfigs", "shop-bc", {"spec": {"connectionDraining": None}})
        extra = []
    elif way == "file":
        (tmp_path / "features.yaml").write_text("logging: {enable: false}\n")
    else:
        extra = []
    world.sim.journal.reset()
    apply(world, capsys, *extra)
    assert [w for w in writes(world) if BS in w[1]] != [], writes(world)
    assert len([w for w in writes(world) if BS in w[1]]) == 1, writes(world)
    assert [w for w in writes(world) if BS not in w[1]] == [], writes(world)
    described = gcloud_json(world, "compute", "backend-services", "describe", BS, "--global")
    assert described.get("connectionDraining", {}).get("drainingTimeoutSec", 0) == 0, described
    reapply_writes_nothing(world, capsys, *extra)


def test_outlier_detection_and_locality_policy_on_the_global_external_alb(
        world: RunningSim, capsys: pytest.CaptureFixture[str]) -> None:
    extra = ["--outlier-consecutive-errors", "5", "--locality-lb-policy", "LEAST_REQUEST"]
    apply(world, capsys, *extra)
    bs = backend_service(world)
    assert bs["outlierDetection"]["consecutiveErrors"] == 5
    assert bs["localityLbPolicy"] == "LEAST_REQUEST"
    reapply_writes_nothing(world, capsys, *extra)


@pytest.mark.parametrize("flag", [["--outlier-consecutive-errors", "5"], ["--locality-lb-policy", "MAGLEV"],
                                  ["--session-affinity", "HEADER_FIELD", "--affinity-header", "X-User"]])
def test_the_classic_scheme_refuses_what_only_the_global_external_alb_has_by_name(
        world: RunningSim, capsys: pytest.CaptureFixture[str], flag: list[str]) -> None:
    code, _, err = cli(["lb", "plan", *BASE, "--scheme", "EXTERNAL", *flag], capsys)
    assert code == 1
    assert "EXTERNAL_MANAGED" in err and len(err.strip().splitlines()) == 1
    assert ("outlierDetection" in err) or ("localityLbPolicy" in err) or ("HEADER_FIELD" in err), err
    assert writes(world) == []


def test_backend_protocol_http2_gives_an_http2_health_check(world: RunningSim,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    apply(world, capsys, "--backend-protocol", "HTTP2")
    assert backend_service(world)["protocol"] == "HTTP2"
    hc = gcloud_json(world, "compute", "health-checks", "describe", HC, "--global")
    assert hc["type"] == "HTTP2" and hc["http2HealthCheck"]["port"] == 30999
    reapply_writes_nothing(world, capsys, "--backend-protocol", "HTTP2")
    apply(world, capsys)  # removed: HTTP again, with an HTTP health check
    assert backend_service(world)["protocol"] == "HTTP"
    hc = gcloud_json(world, "compute", "health-checks", "describe", HC, "--global")
    assert hc["type"] == "HTTP" and hc["httpHealthCheck"]["port"] == 30999
    reapply_writes_nothing(world, capsys)


@pytest.mark.parametrize(("content", "named"), [
    ("sessionAffinity: {affinityType: STICKY}\n", "sessionAffinity.affinityType"),
    ("logging: {enable: true, sampleRate: 2}\n", "logging.sampleRate"),
    ("colour: blue\n", "colour"),
    ("connectionDraining: {drainingTimeout: 4}\n", "connectionDraining.drainingTimeout"),
    ("customResponseHeaders: {headers: [no-colon]}\n", "customResponseHeaders.headers.0"),
    ("- a list\n", "mapping"),
    ("cdn: {enabled: true, cacheMode: USE_ORIGIN_HEADERS, defaultTtl: 60}\n", "USE_ORIGIN_HEADERS takes no defaultTtl"),
    ("cdn: {enabled: true, defaultTtl: 600, maxTtl: 60}\n", "above maxTtl"),
    ("cdn: {enabled: true, negativeCachingPolicy: [{code: 404, ttl: 5}]}\n", "needs negativeCaching"),
    ("cdn: {enabled: true, negativeCaching: true, negativeCachingPolicy: [{code: 500, ttl: 5}]}\n", "code 500"),
    ("ipv6: yes please\n", "ipv6"),
])
def test_a_bad_features_file_is_one_line_naming_the_key_and_nothing_is_written(
        world: RunningSim, tmp_path: Path, capsys: pytest.CaptureFixture[str], content: str, named: str) -> None:
    path = tmp_path / "features.yaml"
    path.write_text(content)
    code, _, err = cli(["lb", "apply", *BASE, "--features-file", str(path)], capsys)
    assert code == 1
    assert named in err and len(err.strip().splitlines()) == 1, err
    assert writes(world) == []


def test_iap_from_a_kubernetes_secret_is_applied_and_the_client_secret_is_never_printed(
        world: RunningSim, capsys: pytest.CaptureFixture[str]) -> None:
    import base64

    secret_value = "GOCSPX-never-printed-42"
    core = k8s.CoreV1Api(k8s.ApiClient(k8s.Configuration(host=world.sim.kube_url("prod1"))))
    core.create_namespaced_secret("default", {"metadata": {"name": "oauth"}, "data": {
        "client_id": base64.b64encode(b"1234.apps.googleusercontent.com").decode(),
        "client_secret": base64.b64encode(secret_value.encode()).decode()}})
    core.create_namespaced_secret("default", {"metadata": {"name": "no-secret"}, "data": {
        "client_id": base64.b64encode(b"1234.apps.googleusercontent.com").decode()}})
    world.sim.journal.reset()
    code, _, err = cli(["lb", "apply", *BASE, "--iap-secret", "no-secret"], capsys)
    assert code == 1 and "client_secret" in err and len(err.strip().splitlines()) == 1, err
    assert writes(world) == []
    seen = []
    for command in (["plan"], ["plan", "-o", "json"], ["apply"], ["apply", "-o", "json"], ["plan"]):
        code, out, err = cli(["lb", command[0], *BASE, "--iap-secret", "oauth", *command[1:]], capsys)
        assert code == 0, err
        seen.append(out + err)
    assert all(secret_value not in text for text in seen)
    assert "No changes" in seen[-1]
    bs = backend_service(world)
    assert bs["iap"]["enabled"] is True and bs["iap"]["oauth2ClientId"] == "1234.apps.googleusercontent.com"
    reapply_writes_nothing(world, capsys, "--iap-secret", "oauth")


def test_ipv6_gets_its_own_address_and_rules_and_the_address_is_kept_when_the_option_goes(
        world: RunningSim, capsys: pytest.CaptureFixture[str]) -> None:
    apply(world, capsys, "--ipv6")
    address = gcloud_json(world, "compute", "addresses", "describe", "gmci-ip-shop-v6", "--global")
    assert address["ipVersion"] == "IPV6"
    rule = gcloud_json(world, "compute", "forwarding-rules", "describe", "gmci-fr-shop-http-v6", "--global")
    assert rule["IPAddress"] == address["address"] and rule["portRange"] == "80-80"
    reapply_writes_nothing(world, capsys, "--ipv6")
    from gitlab_mci.sim.listeners import ipv6_loopback

    # The data plane serves the IPv6 VIP on ::1; only a machine without an IPv6 loopback (never CI) leaves it unseen.
    assert ipv6_loopback() or not os.environ.get("CI"), "no IPv6 loopback (::1): the IPv6 VIP must be served in CI"
    if ipv6_loopback():
        assert world.sim.dataplane.wait_health("HEALTHY", timeout=15)
        url6 = world.sim.dataplane.url_for(address["address"], 80)
        assert url6.startswith("http://[::1]:")
        assert requests.get(f"{url6}/", timeout=5).status_code == 200
    out = apply(world, capsys)
    assert "gmci-ip-shop-v6" in out and "kept" in out
    assert world.sim.compute.get("globalAddresses", "gmci-ip-shop-v6", project=P) is not None
    assert world.sim.compute.get("globalForwardingRules", "gmci-fr-shop-http-v6", project=P) is None


def test_quic_on_the_https_proxy(world: RunningSim, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    from tests.pki import self_signed

    cert, key = self_signed("shop.example.com")
    (tmp_path / "tls.crt").write_text(cert)
    (tmp_path / "tls.key").write_text(key)
    tls = ["--certificate-file", str(tmp_path / "tls.crt"), "--key-file", str(tmp_path / "tls.key")]
    apply(world, capsys, *tls, "--quic-override", "ENABLE")
    proxy = gcloud_json(world, "compute", "target-https-proxies", "describe", "gmci-sp-shop", "--global")
    assert proxy["quicOverride"] == "ENABLE"
    reapply_writes_nothing(world, capsys, *tls, "--quic-override", "ENABLE")
    world.sim.journal.reset()
    apply(world, capsys, *tls)  # the option removed: back to NONE, one write
    assert [w[1].rsplit("/", 1)[1] for w in writes(world)] == ["setQuicOverride"]
    proxy = gcloud_json(world, "compute", "target-https-proxies", "describe", "gmci-sp-shop", "--global")
    assert proxy["quicOverride"] == "NONE"


def test_frontend_options_without_https_are_refused(world: RunningSim, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = cli(["lb", "plan", *BASE, "--quic-override", "ENABLE"], capsys)
    assert code == 1 and "quicOverride" in err and "HTTPS proxy" in err, err
    assert writes(world) == []


@pytest.mark.parametrize(("args", "named"), [
    (["--request-header", "no-colon-here"], "--request-header"),
    (["--log-sample-rate", "2"], "logging.sampleRate"),
    (["--affinity-cookie-ttl-sec", "30"], "--session-affinity"),
    (["--session-affinity", "HEADER_FIELD"], "--affinity-header"),
    (["--session-affinity", "HTTP_COOKIE"], "--affinity-cookie"),
    (["--session-affinity", "HTTP_COOKIE", "--affinity-cookie", "sid", "--locality-lb-policy", "LEAST_REQUEST"],
     "RING_HASH or MAGLEV"),
    (["--draining-timeout-sec", "-1"], "connectionDraining.drainingTimeoutSec"),
    (["--outlier-consecutive-errors", "0"], "outlierDetection.consecutiveErrors"),
    (["--ssl-policy", "modern"], "HTTPS proxy"),
    (["--security-policy", "Not_A_Name"], "securityPolicy.name"),
    (["--features-file", "/nonexistent/features.yaml"], "--features-file"),
    (["--session-affinity", "CLIENT_IP", "--affinity-cookie-ttl-sec", "60"], "affinityCookieTtlSec"),
])
def test_bad_option_input_is_one_line_and_nothing_is_written(world: RunningSim, capsys: pytest.CaptureFixture[str],
                                                             args: list[str], named: str) -> None:
    code, _, err = cli(["lb", "apply", *BASE, *args], capsys)
    assert code == 1, err
    assert named in err and len(err.strip().splitlines()) == 1, err
    assert writes(world) == []


def test_a_backend_config_annotation_naming_a_missing_object_is_refused(world: RunningSim,
                                                                        capsys: pytest.CaptureFixture[str]) -> None:
    api = k8s.ApiClient(k8s.Configuration(host=world.sim.kube_url("prod1")))
    k8s.CoreV1Api(api).patch_namespaced_service("shop-auto-deploy", "default", {"metadata": {"annotations": {
        "cloud.google.com/backend-config": '{"ports": {"5000": "gone"}}'}}})
    world.sim.journal.reset()
    code, _, err = cli(["lb", "apply", *BASE], capsys)
    assert code == 1 and "BackendConfig default/gone not found" in err, err
    assert writes(world) == []


def test_headers_from_the_ci_variable_one_per_line(world: RunningSim, capsys: pytest.CaptureFixture[str],
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MCI_RESPONSE_HEADERS", "X-Frame-Options: DENY\nX-Note: a, b and c")
    apply(world, capsys)
    assert backend_service(world)["customResponseHeaders"] == ["X-Frame-Options:DENY", "X-Note:a, b and c"]


def test_cloud_cdn_with_cache_mode_ttls_negative_caching_and_cache_key_policy_from_the_file(
        world: RunningSim, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "features.yaml"
    path.write_text("cdn: {enabled: true, cacheMode: CACHE_ALL_STATIC, defaultTtl: 3600, maxTtl: 86400,\n"
                    "      requestCoalescing: true, serveWhileStale: 86400, signedUrlCacheMaxAgeSec: 120,\n"
                    "      clientTtl: 600, negativeCaching: true, negativeCachingPolicy: [{code: 404, ttl: 60}],\n"
                    "      cachePolicy: {includeHost: true, includeProtocol: false, includeQueryString: false}}\n")
    apply(world, capsys, "--features-file", str(path))
    described = gcloud_json(world, "compute", "backend-services", "describe", BS, "--global")
    assert described["enableCDN"] is True
    policy = described["cdnPolicy"]
    assert policy["cacheMode"] == "CACHE_ALL_STATIC" and policy["defaultTtl"] == 3600
    assert policy["negativeCachingPolicy"] == [{"code": 404, "ttl": 60}]
    assert policy["cacheKeyPolicy"]["includeProtocol"] is False
    reapply_writes_nothing(world, capsys, "--features-file", str(path))


@pytest.mark.parametrize(("header", "named"), [("Host:example.com", "'host'"), ("X-Goog-Thing:1", "'x-goog-thing'"),
                                               ("Connection:close", "'connection'")])
def test_a_header_the_load_balancer_may_not_set_is_refused_by_name(
        world: RunningSim, capsys: pytest.CaptureFixture[str], header: str, named: str) -> None:
    code, _, err = cli(["lb", "plan", *BASE, "--request-header", header], capsys)
    assert code == 1 and named in err and len(err.strip().splitlines()) == 1, err


def test_iap_from_a_gitlab_file_variable(world: RunningSim, tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    secret_value = "GOCSPX-file-variable-7"
    path = tmp_path / "MCI_IAP_CLIENT_FILE"
    path.write_text(json.dumps({"web": {"client_id": "77.apps.googleusercontent.com", "client_secret": secret_value}}))
    monkeypatch.setenv("MCI_IAP_CLIENT_FILE", str(path))
    code, out, err = cli(["lb", "apply", *BASE, "-o", "json"], capsys)
    assert code == 0, err
    assert secret_value not in out + err
    bs = backend_service(world)
    assert bs["iap"]["oauth2ClientId"] == "77.apps.googleusercontent.com"
    assert bs["iap"]["oauth2ClientSecretSha256"] == hashlib.sha256(secret_value.encode()).hexdigest()
    reapply_writes_nothing(world, capsys)
    path.write_text("client_id: only-the-id\n")
    code, _, err = cli(["lb", "plan", *BASE], capsys)
    assert code == 1 and "needs client_id and client_secret" in err and "only-the-id" not in err, err


def test_generated_cookie_affinity_keeps_a_client_on_one_backend(world: RunningSim,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    apply(world, capsys, "--session-affinity", "GENERATED_COOKIE", "--affinity-cookie-ttl-sec", "600")
    url = serving_url(world)
    world.sim.dataplane.reseed(3)
    with requests.Session() as s:
        first = s.get(f"{url}/", timeout=5)
        assert "GCLB=" in first.headers.get("Set-Cookie", "") and "Max-Age=600" in first.headers["Set-Cookie"]
        backends = {s.get(f"{url}/", timeout=5).headers["X-Sim-Backend"] for _ in range(30)}
    assert backends == {first.headers["X-Sim-Backend"]}
    # Without the cookie, requests spread over both clusters.
    spread = {requests.get(f"{url}/", timeout=5).headers["X-Sim-Backend"].split("/", 1)[0] for _ in range(60)}
    assert spread == {"prod1", "prod2"}


def test_header_affinity_and_outlier_detection_removed_return_to_round_robin_in_one_write(
        world: RunningSim, capsys: pytest.CaptureFixture[str]) -> None:
    extra = ["--session-affinity", "HEADER_FIELD", "--affinity-header", "X-User", "--outlier-consecutive-errors", "3"]
    apply(world, capsys, *extra)
    bs = backend_service(world)
    assert bs["sessionAffinity"] == "HEADER_FIELD" and bs["consistentHash"]["httpHeaderName"] == "X-User"
    assert bs["localityLbPolicy"] == "RING_HASH"
    reapply_writes_nothing(world, capsys, *extra)
    world.sim.journal.reset()
    apply(world, capsys)
    assert len([w for w in writes(world) if BS in w[1]]) == 1, writes(world)
    bs = backend_service(world)
    assert bs.get("sessionAffinity") == "NONE" and not bs.get("consistentHash") and not bs.get("outlierDetection")
    assert bs.get("localityLbPolicy") in (None, "", "ROUND_ROBIN")
    reapply_writes_nothing(world, capsys)


def test_compute_refusing_the_iap_write_does_not_quote_the_secret(world: RunningSim, tmp_path: Path,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    secret_value = "GOCSPX-quoted-by-an-error"
    path = tmp_path / "client.json"
    path.write_text(json.dumps({"client_id": "9.apps.googleusercontent.com", "client_secret": secret_value}))
    from gitlab_mci.features import compute as features_compute

    features_compute._SECRETS["x"] = secret_value
    assert features_compute.scrub(f"Invalid value for field 'resource.iap.oauth2ClientSecret': '{secret_value}'") \
        == "Invalid value for field 'resource.iap.oauth2ClientSecret': '<redacted>'"
    # A failing write's message goes through the same path: Compute's refusal of the whole backend service.
    world.sim.compute.seed("backendServices", {"name": BS, "description": "someone else's"}, project=P)
    code, out, err = cli(["lb", "apply", *BASE, "--iap-client-file", str(path)], capsys)
    assert code == 1 and secret_value not in out + err, err


def test_a_flag_and_the_features_file_that_disagree_name_both(world: RunningSim, tmp_path: Path,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "features.yaml"
    path.write_text("connectionDraining: {drainingTimeoutSec: 60}\n")
    code, _, err = cli(["lb", "plan", *BASE, "--features-file", str(path), "--draining-timeout-sec", "30"], capsys)
    assert code == 1 and len(err.strip().splitlines()) == 1, err
    assert "connectionDraining" in err and "flags" in err and f"--features-file {path}" in err
    code, _, err = cli(["lb", "plan", *BASE, "--features-file", str(path), "--draining-timeout-sec", "60"], capsys)
    assert code == 0, err  # the same value in two places agrees
