"""The production load balancer features on the Compute side of the simulator, with the real clients: Cloud Armor
security policies, SSL policies, Certificate Manager maps (its own API), the references to them, and the feature
fields of backend services, target HTTPS proxies, addresses and forwarding rules, checked by the documented rules."""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from google.api_core import exceptions as gexc
from google.cloud import compute_v1

from gitlab_mci.gcp import Compute
from gitlab_mci.sim.listeners import self_signed
from tests.conftest import RunningSim

P = "demo-project"
CM = "certificatemanager"


def gcloud(sim: RunningSim, *args: str, ok: bool = True) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "CLOUDSDK_CONFIG": str(sim.files.gcloud_config)}
    done = subprocess.run(["gcloud", *args, "--quiet"], capture_output=True, text=True, env=env, timeout=120)
    assert (done.returncode == 0) == ok, (done.stdout, done.stderr)
    return done


@pytest.fixture
def fsim(sim: RunningSim) -> Iterator[RunningSim]:
    """The shared simulator; every ``ft-`` resource (Compute and Certificate Manager) removed afterwards."""
    yield sim
    compute = sim.sim.compute
    for coll in ("globalForwardingRules", "targetHttpsProxies", "targetHttpProxies", "urlMaps", "backendServices",
                 "healthChecks", "sslCertificates", "securityPolicies", "sslPolicies", "globalAddresses"):
        for obj in compute.resources(coll):
            if obj["name"].startswith("ft-"):
                compute.remove(coll, obj["name"], project=P)
    cm = sim.sim.certmanager
    with cm._lock:
        for name in [n for n in cm._store if "/ft-" in n]:
            del cm._store[name]


def gc(sim: RunningSim) -> Compute:
    return Compute(P, sim.sim.compute_url)


def backend_service(sim: RunningSim, name: str, scheme: str = "EXTERNAL_MANAGED", **fields: Any) -> Any:
    c = gc(sim)
    bs = c.client(compute_v1.BackendServicesClient)
    c.wait(bs.insert(project=P, backend_service_resource=compute_v1.BackendService(
        name=name, load_balancing_scheme=scheme, **fields)))
    return bs.get(project=P, backend_service=name)


def write_pair(directory: Path, domains: list[str]) -> tuple[Path, Path]:
    cert, key = self_signed(domains)
    (directory / "tls.crt").write_text(cert)
    (directory / "tls.key").write_text(key)
    return directory / "tls.crt", directory / "tls.key"


def https_proxy(sim: RunningSim, name: str) -> compute_v1.TargetHttpsProxiesClient:
    """A target HTTPS proxy ``name`` (URL map, backend service, self-managed certificate of the same name)."""
    c = gc(sim)
    bs = backend_service(sim, name)
    um = c.client(compute_v1.UrlMapsClient)
    c.wait(um.insert(project=P, url_map_resource=compute_v1.UrlMap(name=name, default_service=bs.self_link)))
    cert, key = self_signed(["shop.example.com"])
    sc = c.client(compute_v1.SslCertificatesClient)
    c.wait(sc.insert(project=P, ssl_certificate_resource=compute_v1.SslCertificate(
        name=name, certificate=cert, private_key=key)))
    hp = c.client(compute_v1.TargetHttpsProxiesClient)
    c.wait(hp.insert(project=P, target_https_proxy_resource=compute_v1.TargetHttpsProxy(
        name=name, url_map=um.get(project=P, url_map=name).self_link,
        ssl_certificates=[sc.get(project=P, ssl_certificate=name).self_link])))
    return hp


# --- the referenced kinds, with gcloud -------------------------------------------------------------------------------

def test_a_team_creates_its_cloud_armor_policy_and_ssl_policy_with_gcloud_and_lists_them(fsim: RunningSim) -> None:
    gcloud(fsim, "compute", "security-policies", "create", "ft-armor", "--description", "block the bad range")
    gcloud(fsim, "compute", "security-policies", "rules", "create", "1000", "--security-policy", "ft-armor",
           "--src-ip-ranges", "198.51.100.0/24,203.0.113.7", "--action", "deny-404")
    policy = json.loads(gcloud(fsim, "compute", "security-policies", "describe", "ft-armor",
                               "--format=json").stdout)
    policy = policy[0] if isinstance(policy, list) else policy
    assert [(r["priority"], r["action"], r["match"]["config"]["srcIpRanges"]) for r in policy["rules"]] == [
        (1000, "deny(404)", ["198.51.100.0/24", "203.0.113.7"]), (2147483647, "allow", ["*"])]
    assert policy["type"] == "CLOUD_ARMOR"
    names = gcloud(fsim, "compute", "security-policies", "list", "--format=value(name)").stdout.split()
    assert "ft-armor" in names

    gcloud(fsim, "compute", "ssl-policies", "create", "ft-tls", "--profile", "MODERN", "--min-tls-version", "1.2")
    listed = json.loads(gcloud(fsim, "compute", "ssl-policies", "list", "--format=json").stdout)
    mine = [p for p in listed if p["name"] == "ft-tls"]
    assert [(p["profile"], p["minTlsVersion"]) for p in mine] == [("MODERN", "TLS_1_2")]
    assert "TLS_RSA_WITH_3DES_EDE_CBC_SHA" not in mine[0]["enabledFeatures"]  # MODERN drops what COMPATIBLE has

    # The default rule stays: Cloud Armor refuses to remove it.
    err = gcloud(fsim, "compute", "security-policies", "rules", "delete", "2147483647", "--security-policy",
                 "ft-armor", ok=False).stderr
    assert "default rule" in err


def test_a_team_creates_a_certificate_map_with_gcloud_in_certificate_manager(fsim: RunningSim,
                                                                            tmp_path: Path) -> None:
    cert, key = write_pair(tmp_path, ["shop.example.com", "*.shop.example.com"])
    gcloud(fsim, "certificate-manager", "certificates", "create", "ft-cert", "--certificate-file", str(cert),
           "--private-key-file", str(key))
    gcloud(fsim, "certificate-manager", "maps", "create", "ft-map")
    gcloud(fsim, "certificate-manager", "maps", "entries", "create", "ft-entry", "--map", "ft-map",
           "--hostname", "shop.example.com", "--certificates", "ft-cert")
    listed = gcloud(fsim, "certificate-manager", "maps", "list", "--format=value(name)").stdout.split()
    assert "projects/demo-project/locations/global/certificateMaps/ft-map" in listed or "ft-map" in listed
    entries = json.loads(gcloud(fsim, "certificate-manager", "maps", "entries", "list", "--map", "ft-map",
                                "--format=json").stdout)
    assert [(e["hostname"], e["certificates"]) for e in entries] == [
        ("shop.example.com", ["projects/demo-project/locations/global/certificates/ft-cert"])]
    described = json.loads(gcloud(fsim, "certificate-manager", "certificates", "describe", "ft-cert",
                                  "--format=json").stdout)
    assert sorted(described["sanDnsnames"]) == ["*.shop.example.com", "shop.example.com"]
    assert "PRIVATE KEY" not in json.dumps(described)  # the key is never returned

    # A map with entries is not deleted (Certificate Manager: remove the entries first).
    assert "entries" in gcloud(fsim, "certificate-manager", "maps", "delete", "ft-map", ok=False).stderr
    # Its journal is its own service.
    assert {e.service for e in fsim.sim.journal.writes(CM)} == {CM}


# --- references, checked on write ------------------------------------------------------------------------------------

def test_a_backend_service_takes_an_existing_security_policy_which_then_cannot_be_deleted(fsim: RunningSim) -> None:
    c = gc(fsim)
    sp = c.client(compute_v1.SecurityPoliciesClient)
    bs = c.client(compute_v1.BackendServicesClient)
    backend_service(fsim, "ft-bs")
    missing = compute_v1.SecurityPolicyReference(
        security_policy=f"projects/{P}/global/securityPolicies/ft-nope")
    with pytest.raises(gexc.NotFound, match="ft-nope"):
        bs.set_security_policy(project=P, backend_service="ft-bs", security_policy_reference_resource=missing)
    c.wait(sp.insert(project=P, security_policy_resource=compute_v1.SecurityPolicy(name="ft-armor")))
    c.wait(bs.set_security_policy(project=P, backend_service="ft-bs", security_policy_reference_resource=(
        compute_v1.SecurityPolicyReference(security_policy=sp.get(project=P, security_policy="ft-armor").self_link))))
    assert bs.get(project=P, backend_service="ft-bs").security_policy.endswith("/securityPolicies/ft-armor")

    with pytest.raises(gexc.BadRequest, match="already being used by") as caught:
        sp.delete(project=P, security_policy="ft-armor")
    assert caught.value.errors[0]["reason"] == "resourceInUseByAnotherResource"

    # An edge policy must be of type CLOUD_ARMOR_EDGE.
    with pytest.raises(gexc.BadRequest, match="CLOUD_ARMOR_EDGE"):
        bs.set_edge_security_policy(project=P, backend_service="ft-bs", security_policy_reference_resource=(
            compute_v1.SecurityPolicyReference(security_policy=f"projects/{P}/global/securityPolicies/ft-armor")))
    c.wait(sp.insert(project=P, security_policy_resource=compute_v1.SecurityPolicy(name="ft-edge",
                                                                                   type_="CLOUD_ARMOR_EDGE")))
    c.wait(bs.set_edge_security_policy(project=P, backend_service="ft-bs", security_policy_reference_resource=(
        compute_v1.SecurityPolicyReference(security_policy=f"projects/{P}/global/securityPolicies/ft-edge"))))
    assert bs.get(project=P, backend_service="ft-bs").edge_security_policy.endswith("/ft-edge")

    # securityPolicy is output only in insert/patch: it does not change (set it with setSecurityPolicy).
    current = bs.get(project=P, backend_service="ft-bs")
    c.wait(bs.patch(project=P, backend_service="ft-bs", backend_service_resource=compute_v1.BackendService(
        security_policy=f"projects/{P}/global/securityPolicies/ft-edge", fingerprint=current.fingerprint)))
    assert bs.get(project=P, backend_service="ft-bs").security_policy.endswith("/ft-armor")

    # Detached (empty reference), the policy can go.
    c.wait(bs.set_security_policy(project=P, backend_service="ft-bs",
                                  security_policy_reference_resource=compute_v1.SecurityPolicyReference()))
    assert not bs.get(project=P, backend_service="ft-bs").security_policy
    c.wait(sp.delete(project=P, security_policy="ft-armor"))


def test_an_https_proxy_takes_an_existing_ssl_policy_and_certificate_map_and_quic_override(
        fsim: RunningSim) -> None:
    c = gc(fsim)
    hp = https_proxy(fsim, "ft-web")
    with pytest.raises(gexc.NotFound, match="sslPolicies/ft-nope"):
        hp.set_ssl_policy(project=P, target_https_proxy="ft-web", ssl_policy_reference_resource=(
            compute_v1.SslPolicyReference(ssl_policy=f"projects/{P}/global/sslPolicies/ft-nope")))
    pol = c.client(compute_v1.SslPoliciesClient)
    c.wait(pol.insert(project=P, ssl_policy_resource=compute_v1.SslPolicy(name="ft-tls", profile="RESTRICTED",
                                                                           min_tls_version="TLS_1_2")))
    c.wait(hp.set_ssl_policy(project=P, target_https_proxy="ft-web", ssl_policy_reference_resource=(
        compute_v1.SslPolicyReference(ssl_policy=f"projects/{P}/global/sslPolicies/ft-tls"))))
    with pytest.raises(gexc.BadRequest, match="already being used by"):
        pol.delete(project=P, ssl_policy="ft-tls")

    the_map = f"//certificatemanager.googleapis.com/projects/{P}/locations/global/certificateMaps/ft-map"
    with pytest.raises(gexc.NotFound, match="certificateMaps/ft-map"):
        hp.set_certificate_map(project=P, target_https_proxy="ft-web",
                               target_https_proxies_set_certificate_map_request_resource=(
                                   compute_v1.TargetHttpsProxiesSetCertificateMapRequest(certificate_map=the_map)))
    with pytest.raises(gexc.BadRequest, match="Accepted format"):
        hp.set_certificate_map(project=P, target_https_proxy="ft-web",
                               target_https_proxies_set_certificate_map_request_resource=(
                                   compute_v1.TargetHttpsProxiesSetCertificateMapRequest(certificate_map="ft-map")))
    r = requests.post(f"{fsim.sim.certmanager_url}/v1/projects/{P}/locations/global/certificateMaps",
                      params={"certificateMapId": "ft-map"}, json={}, timeout=5)
    assert r.status_code == 200 and r.json()["done"], r.text
    c.wait(hp.set_certificate_map(project=P, target_https_proxy="ft-web",
                                  target_https_proxies_set_certificate_map_request_resource=(
                                      compute_v1.TargetHttpsProxiesSetCertificateMapRequest(certificate_map=the_map))))
    c.wait(hp.set_quic_override(project=P, target_https_proxy="ft-web",
                                target_https_proxies_set_quic_override_request_resource=(
                                    compute_v1.TargetHttpsProxiesSetQuicOverrideRequest(quic_override="ENABLE"))))
    described = json.loads(gcloud(fsim, "compute", "target-https-proxies", "describe", "ft-web",
                                  "--format=json").stdout)
    assert described["certificateMap"] == the_map and described["quicOverride"] == "ENABLE"
    assert described["sslPolicy"].endswith("/sslPolicies/ft-tls")
    # The map in use is not deleted; Certificate Manager shows the proxy as its target.
    gone = requests.delete(f"{fsim.sim.certmanager_url}/v1/projects/{P}/locations/global/certificateMaps/ft-map",
                           timeout=5)
    assert gone.status_code == 400 and gone.json()["error"]["status"] == "FAILED_PRECONDITION"
    got = requests.get(f"{fsim.sim.certmanager_url}/v1/projects/{P}/locations/global/certificateMaps/ft-map",
                       timeout=5).json()
    assert got["gclbTargets"] == [{"targetHttpsProxy": f"//compute.googleapis.com/projects/{P}/global/"
                                                       "targetHttpsProxies/ft-web"}]


# --- the scheme rules ------------------------------------------------------------------------------------------------

MANAGED_ONLY = [
    ("outlierDetection", {"outlier_detection": compute_v1.OutlierDetection(consecutive_errors=5)}),
    ("localityLbPolicy", {"locality_lb_policy": "RING_HASH"}),
    ("sessionAffinity", {"session_affinity": "HEADER_FIELD", "consistent_hash": (
        compute_v1.ConsistentHashLoadBalancerSettings(http_header_name="x-user"))}),
    ("sessionAffinity", {"session_affinity": "HTTP_COOKIE", "consistent_hash": (
        compute_v1.ConsistentHashLoadBalancerSettings(http_cookie=compute_v1.ConsistentHashLoadBalancerSettingsHttpCookie(name="sid")))}),
    ("customMetrics", {"locality_lb_policy": "WEIGHTED_ROUND_ROBIN",
                       "custom_metrics": [compute_v1.BackendServiceCustomMetric(name="orca.cpu")]}),
]


@pytest.mark.parametrize("field,fields", MANAGED_ONLY, ids=[f"{f}-{i}" for i, (f, _) in enumerate(MANAGED_ONLY)])
def test_a_field_only_the_global_external_alb_has_is_refused_by_name_on_a_classic_backend_service(
        fsim: RunningSim, field: str, fields: dict[str, Any]) -> None:
    with pytest.raises(gexc.BadRequest, match=rf"'resource\.(\w+\.)?{field}"):
        backend_service(fsim, "ft-classic", "EXTERNAL", **fields)
    assert fsim.sim.compute.get("backendServices", "ft-classic", project=P) is None
    made = backend_service(fsim, "ft-managed", "EXTERNAL_MANAGED", **fields)
    assert made.name == "ft-managed"


BAD_BACKEND_SERVICES: list[tuple[str, dict[str, Any], str]] = [
    ("cdn cache mode with a TTL the origin decides", {"enable_c_d_n": True, "cdn_policy": compute_v1.BackendServiceCdnPolicy(
        cache_mode="USE_ORIGIN_HEADERS", default_ttl=60)}, "cdnPolicy.defaultTtl"),
    ("cdn TTL beyond a year", {"enable_c_d_n": True, "cdn_policy": compute_v1.BackendServiceCdnPolicy(
        max_ttl=31622401)}, "cdnPolicy.maxTtl"),
    ("cdn default TTL above max", {"enable_c_d_n": True, "cdn_policy": compute_v1.BackendServiceCdnPolicy(
        default_ttl=7200, max_ttl=3600)}, "cdnPolicy.defaultTtl"),
    ("log sample rate above 1", {"log_config": compute_v1.BackendServiceLogConfig(enable=True, sample_rate=1.5)},
     "logConfig.sampleRate"),
    ("draining beyond an hour", {"connection_draining": compute_v1.ConnectionDraining(draining_timeout_sec=3601)},
     "connectionDraining.drainingTimeoutSec"),
    ("header without a colon", {"custom_request_headers": ["X-Region {client_region}"]}, "customRequestHeaders[0]"),
    ("header with an unknown variable", {"custom_request_headers": ["X-Region: {client_planet}"]},
     "customRequestHeaders[0]"),
    ("reserved header name", {"custom_response_headers": ["X-Goog-Thing: 1"]}, "customResponseHeaders[0]"),
    ("header twice", {"custom_response_headers": ["X-A: 1", "x-a: 2"]}, "customResponseHeaders[1]"),
    ("cookie TTL without cookie affinity", {"session_affinity": "CLIENT_IP", "affinity_cookie_ttl_sec": 60},
     "affinityCookieTtlSec"),
    ("cookie TTL beyond two weeks", {"session_affinity": "GENERATED_COOKIE", "affinity_cookie_ttl_sec": 1209601},
     "affinityCookieTtlSec"),
    ("network load balancer affinity", {"session_affinity": "CLIENT_IP_PORT_PROTO"}, "sessionAffinity"),
    ("IAP client without its secret", {"iap": compute_v1.BackendServiceIAP(enabled=True, oauth2_client_id="id")},
     "iap.oauth2ClientSecret"),
    ("Traffic Director's GRPC", {"protocol": "GRPC"}, "protocol"),
]


@pytest.mark.parametrize("case,fields,field", BAD_BACKEND_SERVICES, ids=[c for c, _, _ in BAD_BACKEND_SERVICES])
def test_a_backend_service_field_out_of_its_documented_range_is_refused_by_name(
        fsim: RunningSim, case: str, fields: dict[str, Any], field: str) -> None:
    with pytest.raises(gexc.BadRequest, match=re.escape(f"Invalid value for field 'resource.{field}'")):
        backend_service(fsim, "ft-bad", "EXTERNAL_MANAGED", **fields)
    assert fsim.sim.compute.get("backendServices", "ft-bad", project=P) is None


def test_every_feature_field_within_its_rules_is_kept_and_the_iap_secret_is_never_returned(fsim: RunningSim) -> None:
    made = backend_service(
        fsim, "ft-full", "EXTERNAL", protocol="HTTPS", enable_c_d_n=True,
        cdn_policy=compute_v1.BackendServiceCdnPolicy(cache_mode="FORCE_CACHE_ALL", default_ttl=600, client_ttl=60),
        iap=compute_v1.BackendServiceIAP(enabled=True, oauth2_client_id="cid", oauth2_client_secret="s3cret"),
        log_config=compute_v1.BackendServiceLogConfig(enable=True, sample_rate=0.25),
        connection_draining=compute_v1.ConnectionDraining(draining_timeout_sec=120),
        session_affinity="GENERATED_COOKIE", affinity_cookie_ttl_sec=300,
        custom_request_headers=["X-Client-Region: {client_region}", "X-TLS: {tls_version}"],
        custom_response_headers=["Strict-Transport-Security: max-age=31536000"])
    assert made.iap.oauth2_client_secret_sha256 == hashlib.sha256(b"s3cret").hexdigest()
    raw = requests.get(f"{fsim.sim.compute_url}/compute/v1/projects/{P}/global/backendServices/ft-full",
                       timeout=5).json()
    assert "s3cret" not in json.dumps(raw) and "oauth2ClientSecret" not in raw["iap"]
    assert raw["cdnPolicy"]["cacheMode"] == "FORCE_CACHE_ALL" and raw["cdnPolicy"]["defaultTtl"] == 600
    described = json.loads(gcloud(fsim, "compute", "backend-services", "describe", "ft-full", "--global",
                                  "--format=json").stdout)
    assert described["logConfig"] == {"enable": True, "sampleRate": 0.25}
    assert described["connectionDraining"] == {"drainingTimeoutSec": 120}
    assert described["sessionAffinity"] == "GENERATED_COOKIE" and described["affinityCookieTtlSec"] == 300
    assert described["customRequestHeaders"] == ["X-Client-Region: {client_region}", "X-TLS: {tls_version}"]


BAD_POLICIES: list[tuple[str, str, dict[str, Any], str]] = [
    ("source range that is no CIDR", "securityPolicies", {"rules": [{"priority": 10, "action": "deny(403)", "match": {
        "versionedExpr": "SRC_IPS_V1", "config": {"srcIpRanges": ["10.0.0.0/33"]}}}]},
     "rules[0].match.config.srcIpRanges[0]"),
    ("eleven source ranges", "securityPolicies", {"rules": [{"priority": 10, "action": "deny(403)", "match": {
        "versionedExpr": "SRC_IPS_V1", "config": {"srcIpRanges": [f"10.0.{i}.0/24" for i in range(11)]}}}]},
     "rules[0].match.config.srcIpRanges"),
    ("deny with a status Cloud Armor has not", "securityPolicies", {"rules": [{"priority": 10, "action": "deny(418)",
                                                                              "match": {"versionedExpr": "SRC_IPS_V1", "config": {"srcIpRanges": ["*"]}}}]},
     "rules[0].action"),
    ("versioned expression without its ranges", "securityPolicies", {"rules": [{"priority": 10, "action": "allow",
                                                                                "match": {"versionedExpr": "SRC_IPS_V1"}}]},
     "rules[0].match.config.srcIpRanges"),
    ("two rules with one priority", "securityPolicies", {"rules": [
        {"priority": 10, "action": "allow", "match": {"versionedExpr": "SRC_IPS_V1", "config": {"srcIpRanges": ["*"]}}},
        {"priority": 10, "action": "deny(403)", "match": {"expr": {"expression": "origin.region_code == 'XX'"}}}]},
     "rules[1].priority"),
    ("TLS 1.3 without the RESTRICTED profile", "sslPolicies", {"profile": "MODERN", "minTlsVersion": "TLS_1_3"},
     "minTlsVersion"),
    ("CUSTOM profile without features", "sslPolicies", {"profile": "CUSTOM"}, "customFeatures"),
    ("features without the CUSTOM profile", "sslPolicies", {"profile": "MODERN", "customFeatures": [
        "TLS_RSA_WITH_AES_128_GCM_SHA256"]}, "customFeatures"),
]


@pytest.mark.parametrize("case,collection,body,field", BAD_POLICIES, ids=[c for c, *_ in BAD_POLICIES])
def test_a_policy_against_its_documented_rules_is_refused_by_name(
        fsim: RunningSim, case: str, collection: str, body: dict[str, Any], field: str) -> None:
    r = requests.post(f"{fsim.sim.compute_url}/compute/v1/projects/{P}/global/{collection}",
                      json={"name": "ft-bad", **body}, timeout=5)
    assert r.status_code == 400, r.text
    assert r.json()["error"]["message"].startswith(f"Invalid value for field 'resource.{field}'"), r.text
    assert fsim.sim.compute.get(collection, "ft-bad", project=P) is None


def test_an_expression_rule_is_validated_and_kept(fsim: RunningSim) -> None:
    gcloud(fsim, "compute", "security-policies", "create", "ft-expr")
    gcloud(fsim, "compute", "security-policies", "rules", "create", "500", "--security-policy", "ft-expr",
           "--expression", "origin.region_code == 'XX'", "--action", "deny-403")
    err = gcloud(fsim, "compute", "security-policies", "rules", "create", "600", "--security-policy", "ft-expr",
                 "--expression", "origin.region_code == 'XX", "--action", "deny-403", ok=False).stderr
    assert "does not parse" in err
    stored = fsim.sim.compute.get("securityPolicies", "ft-expr", project=P)
    assert stored is not None and [r["priority"] for r in stored["rules"]] == [500, 2147483647]


def test_an_ipv6_address_gets_its_own_forwarding_rule_beside_the_ipv4_one(fsim: RunningSim) -> None:
    gcloud(fsim, "compute", "addresses", "create", "ft-v6", "--global", "--ip-version", "IPV6")
    address = json.loads(gcloud(fsim, "compute", "addresses", "describe", "ft-v6", "--global",
                                "--format=json").stdout)
    assert address["ipVersion"] == "IPV6" and ":" in address["address"]
    c = gc(fsim)
    bs = backend_service(fsim, "ft-v6")
    um = c.client(compute_v1.UrlMapsClient)
    c.wait(um.insert(project=P, url_map_resource=compute_v1.UrlMap(name="ft-v6", default_service=bs.self_link)))
    hp = c.client(compute_v1.TargetHttpProxiesClient)
    c.wait(hp.insert(project=P, target_http_proxy_resource=compute_v1.TargetHttpProxy(
        name="ft-v6", url_map=um.get(project=P, url_map="ft-v6").self_link)))
    fr = c.client(compute_v1.GlobalForwardingRulesClient)
    target = hp.get(project=P, target_http_proxy="ft-v6").self_link
    c.wait(fr.insert(project=P, forwarding_rule_resource=compute_v1.ForwardingRule(
        name="ft-v6", target=target, port_range="80", load_balancing_scheme="EXTERNAL_MANAGED",
        I_p_address=address["selfLink"])))
    rule = fr.get(project=P, forwarding_rule="ft-v6")
    assert rule.I_p_address == address["address"] and rule.ip_version == "IPV6"
    with pytest.raises(gexc.BadRequest, match=r"'resource\.ipVersion'"):
        fr.insert(project=P, forwarding_rule_resource=compute_v1.ForwardingRule(
            name="ft-v6-wrong", target=target, port_range="8080", load_balancing_scheme="EXTERNAL_MANAGED",
            I_p_address=address["selfLink"], ip_version="IPV4"))
    with pytest.raises(gexc.BadRequest, match=r"'resource\.networkTier'"):
        c.client(compute_v1.GlobalAddressesClient).insert(project=P, address_resource=compute_v1.Address(
            name="ft-v6-std", ip_version="IPV6", network_tier="STANDARD"))


def test_gcloud_sets_every_option_on_a_backend_service_and_https_proxy_and_reads_them_back(
        fsim: RunningSim) -> None:
    https_proxy(fsim, "ft-gc")
    gcloud(fsim, "compute", "security-policies", "create", "ft-gc-armor")
    gcloud(fsim, "compute", "ssl-policies", "create", "ft-gc-tls", "--profile", "RESTRICTED", "--min-tls-version",
           "1.2")
    gcloud(fsim, "certificate-manager", "maps", "create", "ft-gc-map")
    gcloud(fsim, "compute", "backend-services", "update", "ft-gc", "--global", "--security-policy", "ft-gc-armor")
    # gcloud's update reads the resource and PUTs it back whole: the IAP secret's hash must survive that.
    gcloud(fsim, "compute", "backend-services", "update", "ft-gc", "--global",
           "--session-affinity", "GENERATED_COOKIE", "--affinity-cookie-ttl", "300",
           "--connection-draining-timeout", "120", "--custom-request-header", "X-Client-Region: {client_region}",
           "--custom-response-header", "X-Frame-Options: DENY", "--enable-logging", "--logging-sample-rate", "0.5",
           "--iap", "enabled,oauth2-client-id=cid,oauth2-client-secret=sec", "--enable-cdn",
           "--cache-mode", "FORCE_CACHE_ALL", "--default-ttl", "600")
    gcloud(fsim, "compute", "backend-services", "update", "ft-gc", "--global", "--timeout", "40")
    gcloud(fsim, "compute", "target-https-proxies", "update", "ft-gc", "--ssl-policy", "ft-gc-tls")
    gcloud(fsim, "compute", "target-https-proxies", "update", "ft-gc", "--quic-override", "DISABLE")
    gcloud(fsim, "compute", "target-https-proxies", "update", "ft-gc", "--certificate-map", "ft-gc-map")

    bs = json.loads(gcloud(fsim, "compute", "backend-services", "describe", "ft-gc", "--global",
                           "--format=json").stdout)
    assert bs["securityPolicy"].endswith("/securityPolicies/ft-gc-armor")
    assert (bs["sessionAffinity"], bs["affinityCookieTtlSec"], bs["timeoutSec"]) == ("GENERATED_COOKIE", 300, 40)
    assert bs["connectionDraining"] == {"drainingTimeoutSec": 120}
    assert bs["customRequestHeaders"] == ["X-Client-Region: {client_region}"]
    assert bs["customResponseHeaders"] == ["X-Frame-Options: DENY"]
    assert bs["logConfig"]["enable"] is True and bs["logConfig"]["sampleRate"] == 0.5
    assert bs["iap"] == {"enabled": True, "oauth2ClientId": "cid",
                         "oauth2ClientSecretSha256": hashlib.sha256(b"sec").hexdigest()}
    assert bs["enableCDN"] is True and bs["cdnPolicy"]["cacheMode"] == "FORCE_CACHE_ALL"
    assert bs["cdnPolicy"]["defaultTtl"] == 600
    proxy = json.loads(gcloud(fsim, "compute", "target-https-proxies", "describe", "ft-gc",
                              "--format=json").stdout)
    assert proxy["sslPolicy"].endswith("/sslPolicies/ft-gc-tls") and proxy["quicOverride"] == "DISABLE"
    assert proxy["certificateMap"] == (f"//certificatemanager.googleapis.com/projects/{P}/locations/global/"
                                       "certificateMaps/ft-gc-map")
    # Policies in use are not deleted; gcloud shows Compute's reason.
    err = gcloud(fsim, "compute", "security-policies", "delete", "ft-gc-armor", ok=False).stderr
    assert "already being used by" in err


def test_a_null_message_field_is_the_field_unset_in_update_and_clears_it_in_a_merge_patch(fsim: RunningSim) -> None:
    backend_service(fsim, "ft-null", outlier_detection=compute_v1.OutlierDetection(consecutive_errors=5))
    base = f"{fsim.sim.compute_url}/compute/v1/projects/{P}/global/backendServices/ft-null"
    current = requests.get(base, timeout=5).json()
    r = requests.patch(base, json={"fingerprint": current["fingerprint"], "outlierDetection": None}, timeout=5)
    assert r.status_code == 200, r.text
    current = requests.get(base, timeout=5).json()
    assert "outlierDetection" not in current  # JSON merge patch: null removes
    r = requests.put(base, json={**current, "strongSessionAffinityCookie": None}, timeout=5)
    assert r.status_code == 200, r.text
    assert "strongSessionAffinityCookie" not in requests.get(base, timeout=5).json()


def test_a_url_map_refuses_a_tcp_backend_service_of_a_proxy_network_load_balancer(fsim: RunningSim) -> None:
    tcp = backend_service(fsim, "ft-tcp", "EXTERNAL", protocol="TCP")
    um = gc(fsim).client(compute_v1.UrlMapsClient)
    with pytest.raises(gexc.BadRequest, match=r"'resource\.defaultService'.*protocol TCP"):
        um.insert(project=P, url_map_resource=compute_v1.UrlMap(name="ft-tcp", default_service=tcp.self_link))


CM_REFUSALS: list[tuple[str, str, dict[str, str], dict[str, Any], int, str]] = [
    ("map outside global", "locations/us-central1/certificateMaps", {"certificateMapId": "ft-m"}, {}, 400,
     "global"),
    ("entry naming a missing certificate", "locations/global/certificateMaps/ft-m/certificateMapEntries",
     {"certificateMapEntryId": "ft-e"}, {"hostname": "shop.example.com",
                                         "certificates": [f"projects/{P}/locations/global/certificates/ft-nope"]},
     404, "ft-nope"),
    ("entry with both hostname and matcher", "locations/global/certificateMaps/ft-m/certificateMapEntries",
     {"certificateMapEntryId": "ft-e"}, {"hostname": "shop.example.com", "matcher": "PRIMARY",
                                         "certificates": [f"projects/{P}/locations/global/certificates/ft-c"]},
     400, "exactly one"),
    ("managed certificate without domains", "locations/global/certificates", {"certificateId": "ft-c2"},
     {"managed": {"domains": []}}, 400, "domain"),
    ("an id that is no resource name", "locations/global/certificateMaps", {"certificateMapId": "Ft_M"}, {}, 400,
     "must match"),
]


@pytest.mark.parametrize("case,path,params,body,status,says", CM_REFUSALS, ids=[c[0] for c in CM_REFUSALS])
def test_certificate_manager_refuses_what_its_reference_refuses(
        fsim: RunningSim, case: str, path: str, params: dict[str, str], body: dict[str, Any], status: int,
        says: str) -> None:
    base = f"{fsim.sim.certmanager_url}/v1/projects/{P}"
    cert, key = self_signed(["shop.example.com"])
    assert requests.post(f"{base}/locations/global/certificates", params={"certificateId": "ft-c"}, timeout=5,
                         json={"selfManaged": {"pemCertificate": cert, "pemPrivateKey": key}}).status_code == 200
    assert requests.post(f"{base}/locations/global/certificateMaps", params={"certificateMapId": "ft-m"}, json={},
                         timeout=5).status_code == 200
    before = len(fsim.sim.certmanager._store)
    r = requests.post(f"{base}/{path}", params=params, json=body, timeout=5)
    assert r.status_code == status and says in r.json()["error"]["message"], r.text
    assert len(fsim.sim.certmanager._store) == before  # nothing made
