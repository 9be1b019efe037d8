"""What traffic shows of the production options: custom headers, session affinity, Cloud Armor, connection
draining, IPv6 and Certificate Manager maps — set with google-cloud-compute on a user's chain (the kubemci recipe's,
prod1 + prod2), observed over real HTTP(S) through the simulator's listeners."""

from __future__ import annotations

import http.client
import itertools
import json
import os
import socket
import ssl
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import pytest
import requests
from google.cloud import compute_v1

from gitlab_mci.sim.dataplane import DELAY_PARAM
from gitlab_mci.sim.listeners import ipv6_loopback, self_signed
from tests.conftest import RunningSim
from tests.sim.classic_chain import BS, backend_service, client, kubemci_chain, patch_backend_service, wait

P = "demo-project"
T = TypeVar("T")


@pytest.fixture
def world(make_app_world: Any) -> RunningSim:
    running: RunningSim = make_app_world(2, 2)
    return running


def serving(world: RunningSim, **chain: Any) -> str:
    built = kubemci_chain(world, **chain)
    assert world.sim.dataplane.wait_health("HEALTHY", timeout=10), world.sim.dataplane.health()
    return world.sim.dataplane.url_for(built.vip, 80)


def eventually(check: Callable[[], T], timeout: float = 5.0) -> T:
    """The first truthy result of ``check`` (the data plane applies a change within its 100 ms poll)."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result or time.monotonic() > deadline:
            assert result, "the data plane did not apply the change in time"
            return result
        time.sleep(0.02)


def get_from(url: str, source: str, path: str = "/", headers: dict[str, str] | None = None) -> tuple[int, Any, Any]:
    """(status, headers, body) of one request sent from the loopback address ``source``."""
    host, port = url.removeprefix("http://").rsplit(":", 1)
    conn = http.client.HTTPConnection(host.strip("[]"), int(port), timeout=5, source_address=(source, 0))
    try:
        conn.request("GET", path, headers=headers or {})
        resp = conn.getresponse()
        body = resp.read()
        return resp.status, resp.headers, json.loads(body) if resp.status == 200 else body
    finally:
        conn.close()


def test_the_pod_sees_the_custom_request_headers_and_the_browser_the_custom_response_headers(
        world: RunningSim) -> None:
    url = serving(world)
    patch_backend_service(world, custom_request_headers=["X-Client-Region: {client_region}",
                                                         "X-Encrypted: {client_encrypted}", "X-Mine: replaced"],
                          custom_response_headers=["Strict-Transport-Security: max-age=31536000",
                                                   "X-Client-City: {client_city}"])
    r = eventually(lambda: (lambda r: r if "X-Client-City" in r.headers else None)(
        requests.get(f"{url}/", headers={"X-Mine": "mine", "X-Trace": "abc"}, timeout=5)))
    seen = r.json()["headers"]
    assert seen["X-Client-Region"] == "US" and seen["X-Encrypted"] == "false"
    assert seen["X-Trace"] == "abc" and seen["X-Mine"] == "replaced"  # the load balancer's header wins
    assert r.headers["Strict-Transport-Security"] == "max-age=31536000"
    assert r.headers["X-Client-City"] == "Mountain View"


def test_a_generated_cookie_keeps_a_browser_on_one_backend_for_its_ttl(world: RunningSim) -> None:
    url = serving(world)
    patch_backend_service(world, session_affinity="GENERATED_COOKIE", affinity_cookie_ttl_sec=120)
    first = eventually(lambda: (lambda r: r if "GCLB" in r.headers.get("Set-Cookie", "") else None)(
        requests.get(f"{url}/", timeout=5)))
    assert "Max-Age=120" in first.headers["Set-Cookie"]
    browsers = []
    for _ in range(4):
        with requests.Session() as s:
            seen = [s.get(f"{url}/", timeout=5).headers["X-Sim-Backend"] for _ in range(8)]
            assert len(set(seen)) == 1, seen  # pinned by its GCLB cookie
            browsers.append(seen[0])
    assert len(set(browsers)) > 1, browsers  # different browsers, different backends
    # Without the cookie, requests are balanced again.
    assert len({requests.get(f"{url}/", timeout=5).headers["X-Sim-Backend"] for _ in range(8)}) > 1


def test_client_ip_affinity_sends_each_client_to_one_backend(world: RunningSim) -> None:
    url = serving(world)
    patch_backend_service(world, session_affinity="CLIENT_IP")

    def pinned_per_client() -> dict[str, str] | None:
        out = {}
        for i in range(2, 10):
            source = f"127.0.0.{i}"
            backends = {get_from(url, source)[1]["X-Sim-Backend"] for _ in range(5)}
            if len(backends) != 1:
                return None
            out[source] = backends.pop()
        return out

    per_client = eventually(pinned_per_client)
    assert len(set(per_client.values())) > 1, per_client  # clients spread over the backends


def test_cloud_armor_denies_a_source_range_with_403_and_lets_everyone_else_through(world: RunningSim) -> None:
    url = serving(world)
    policies = client(world, compute_v1.SecurityPoliciesClient)
    wait(world, policies.insert_unary(project=P, security_policy_resource=compute_v1.SecurityPolicy(
        name="block-range", rules=[compute_v1.SecurityPolicyRule(
            priority=1000, action="deny(403)", match=compute_v1.SecurityPolicyRuleMatcher(
                versioned_expr="SRC_IPS_V1", config=compute_v1.SecurityPolicyRuleMatcherConfig(
                    src_ip_ranges=["127.0.0.5/32", "198.51.100.0/24"]))),
            compute_v1.SecurityPolicyRule(  # an expression: validated, not evaluated (passes)
                priority=500, action="deny(404)", match=compute_v1.SecurityPolicyRuleMatcher(
                    expr=compute_v1.Expr(expression="origin.region_code == 'US'")))])))
    bss = client(world, compute_v1.BackendServicesClient)
    wait(world, bss.set_security_policy_unary(project=P, backend_service=BS, security_policy_reference_resource=(
        compute_v1.SecurityPolicyReference(security_policy=f"projects/{P}/global/securityPolicies/block-range"))))
    before = world.sim.dataplane.in_flight()
    eventually(lambda: get_from(url, "127.0.0.5")[0] == 403)
    assert [get_from(url, "127.0.0.5")[0] for _ in range(5)] == [403] * 5
    assert [get_from(url, "127.0.0.6")[0] for _ in range(5)] == [200] * 5
    assert get_from(url, "127.0.0.1")[0] == 200
    assert world.sim.dataplane.in_flight() == before  # denied at the edge: no backend was picked

    # A deny(502) rule at a higher priority than an allow: the first match decides.
    wait(world, policies.add_rule_unary(project=P, security_policy="block-range",
                                        security_policy_rule_resource=compute_v1.SecurityPolicyRule(
                                            priority=10, action="allow", match=compute_v1.SecurityPolicyRuleMatcher(
                                                versioned_expr="SRC_IPS_V1",
                                                config=compute_v1.SecurityPolicyRuleMatcherConfig(
                                                    src_ip_ranges=["127.0.0.5"])))))
    eventually(lambda: get_from(url, "127.0.0.5")[0] == 200)


def _slow(url: str) -> Callable[[], tuple[int, str, float]]:
    """A request the app holds 3 s: (status, backend, when it ended)."""
    def call() -> tuple[int, str, float]:
        r = requests.get(f"{url}/checkout?{DELAY_PARAM}=3", timeout=10)
        return r.status_code, r.headers.get("X-Sim-Backend", ""), time.monotonic()
    return call


@pytest.mark.parametrize("draining,cut", [(1, True), (10, False)], ids=["timeout-1s-cuts", "timeout-10s-finishes"])
def test_requests_in_flight_on_a_removed_backend_get_the_connection_draining_timeout(
        world: RunningSim, draining: int, cut: bool) -> None:
    url = serving(world)
    patch_backend_service(world, connection_draining=compute_v1.ConnectionDraining(draining_timeout_sec=draining))
    with ThreadPoolExecutor(2) as pool:
        started = time.monotonic()
        futures = [pool.submit(_slow(url)) for _ in range(2)]  # round robin: one on each cluster
        eventually(lambda: world.sim.dataplane.in_flight() == {"prod1": 1, "prod2": 1}, timeout=2)
        keep = [b for b in backend_service(world).backends if "europe-west1" in b.group]
        removed_at = time.monotonic()
        patch_backend_service(world, backends=keep)  # prod1 (us-central1-a) leaves the backend service
        results = [f.result() for f in futures]
    done = {r[1].split("/")[0] if r[0] == 200 else "cut": r for r in results}
    assert done["prod2"][0] == 200  # still a backend: finishes
    if cut:
        status, _, ended = done["cut"]
        assert status == 502
        # Cut when the draining timeout ran out after the removal, before the request would have finished.
        assert removed_at + draining <= ended < started + 3.0, (ended - removed_at, ended - started)
    else:
        assert done["prod1"][0] == 200 and done["prod1"][2] >= started + 3.0
    assert world.sim.dataplane.in_flight() == {}


def test_an_ipv6_forwarding_rule_serves_the_same_chain_on_the_ipv6_loopback(world: RunningSim) -> None:
    if not ipv6_loopback():
        if os.environ.get("CI"):  # CI machines have an IPv6 loopback: its absence there is an error, not a skip
            pytest.fail("this machine cannot listen on ::1 (no IPv6 loopback); the IPv6 listener must be tested in CI")
        pytest.skip("this machine cannot listen on ::1 (no IPv6 loopback)")
    url4 = serving(world)
    addresses = client(world, compute_v1.GlobalAddressesClient)
    wait(world, addresses.insert_unary(project=P, address_resource=compute_v1.Address(name="shop-v6",
                                                                                      ip_version="IPV6")))
    v6 = addresses.get(project=P, address="shop-v6")
    rules = client(world, compute_v1.GlobalForwardingRulesClient)
    http_rule = next(r for r in rules.list(project=P) if r.port_range.startswith("80"))
    wait(world, rules.insert_unary(project=P, forwarding_rule_resource=compute_v1.ForwardingRule(
        name="shop-v6-http", I_p_address=v6.self_link, target=http_rule.target, port_range="80")))
    url6 = world.sim.dataplane.url_for(v6.address, 80)
    assert url6.startswith("http://[::1]:")
    answers = [requests.get(f"{url6}/v6", timeout=5) for _ in range(4)]
    assert {a.status_code for a in answers} == {200}
    assert Counter(a.json()["cluster"] for a in answers) == {"prod1": 2, "prod2": 2}
    assert requests.get(f"{url4}/", timeout=5).status_code == 200  # the IPv4 rule still serves
    assert rules.get(project=P, forwarding_rule="shop-v6-http").ip_version == "IPV6"


def _served_names(url: str, server_name: str) -> list[str]:
    from cryptography import x509

    host, port = url.removeprefix("https://").rsplit(":", 1)
    context = ssl.create_default_context()
    context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
    with socket.create_connection((host, int(port)), timeout=5) as raw, \
            context.wrap_socket(raw, server_hostname=server_name) as tls:
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    leaf = x509.load_der_x509_certificate(der)
    return list(leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(
        x509.DNSName))


def test_an_https_proxy_with_a_certificate_map_serves_the_maps_certificates_and_tls_variables(
        world: RunningSim) -> None:
    cert, key = self_signed(["old.example.com"])
    built = kubemci_chain(world, certificate=cert, private_key=key)
    assert world.sim.dataplane.wait_health("HEALTHY", timeout=10)
    url = world.sim.dataplane.url_for(built.vip, 443)
    assert _served_names(url, "shop.example.com") == ["old.example.com"]

    cm = f"{world.sim.certmanager_url}/v1/projects/{P}/locations/global"
    shop, shop_key = self_signed(["shop.example.com"])
    wild, wild_key = self_signed(["*.example.org"])
    for name, pem, pem_key in (("shop", shop, shop_key), ("wild", wild, wild_key)):
        r = requests.post(f"{cm}/certificates", params={"certificateId": name}, timeout=5,
                          json={"selfManaged": {"pemCertificate": pem, "pemPrivateKey": pem_key}})
        assert r.status_code == 200, r.text
    assert requests.post(f"{cm}/certificateMaps", params={"certificateMapId": "web"}, json={},
                         timeout=5).status_code == 200
    for entry, host, cert_name in (("shop", "shop.example.com", "shop"), ("wild", "*.example.org", "wild")):
        r = requests.post(f"{cm}/certificateMaps/web/certificateMapEntries", params={"certificateMapEntryId": entry},
                          json={"hostname": host, "certificates": [f"projects/{P}/locations/global/certificates/"
                                                                    f"{cert_name}"]}, timeout=5)
        assert r.status_code == 200, r.text
    proxies = client(world, compute_v1.TargetHttpsProxiesClient)
    https_proxy = next(p.name for p in proxies.list(project=P))
    wait(world, proxies.set_certificate_map_unary(
        project=P, target_https_proxy=https_proxy, target_https_proxies_set_certificate_map_request_resource=(
            compute_v1.TargetHttpsProxiesSetCertificateMapRequest(
                certificate_map=f"//certificatemanager.googleapis.com/projects/{P}/locations/global/"
                                "certificateMaps/web"))))
    eventually(lambda: _served_names(world.sim.dataplane.url_for(built.vip, 443), "shop.example.com") ==
               ["shop.example.com"])
    url = world.sim.dataplane.url_for(built.vip, 443)
    assert _served_names(url, "www.example.org") == ["*.example.org"]  # the wildcard entry

    patch_backend_service(world, custom_request_headers=["X-TLS: {tls_version}", "X-SNI: {tls_sni_hostname}"])

    def tls_headers() -> dict[str, str] | None:
        host, port = url.removeprefix("https://").rsplit(":", 1)
        context = ssl.create_default_context()
        context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
        with socket.create_connection((host, int(port)), timeout=5) as raw, \
                context.wrap_socket(raw, server_hostname="shop.example.com") as tls:  # SNI, as a browser sends it
            tls.sendall(b"GET / HTTP/1.0\r\nHost: shop.example.com\r\n\r\n")
            data = b""
            while chunk := tls.recv(65536):
                data += chunk
        seen: dict[str, str] = json.loads(data.split(b"\r\n\r\n", 1)[1])["headers"]
        return seen if "X-TLS" in seen else None

    seen = eventually(tls_headers)
    assert seen["X-TLS"].startswith("TLSv1.") and seen["X-SNI"] == "shop.example.com"


def managed_chain(world: RunningSim, **fields: Any) -> str:
    """A global external Application Load Balancer (EXTERNAL_MANAGED) over the classic chain's instance groups and
    health check, on its own address: the serving URL."""
    serving(world)
    classic = backend_service(world)
    bss = client(world, compute_v1.BackendServicesClient)
    wait(world, bss.insert_unary(project=P, backend_service_resource=compute_v1.BackendService(
        name="shop-managed", load_balancing_scheme="EXTERNAL_MANAGED", protocol="HTTP", port_name=classic.port_name,
        health_checks=list(classic.health_checks), backends=[compute_v1.Backend(group=b.group, balancing_mode="RATE",
                                                                                max_rate_per_instance=100)
                                                             for b in classic.backends], **fields)))
    ums = client(world, compute_v1.UrlMapsClient)
    wait(world, ums.insert_unary(project=P, url_map_resource=compute_v1.UrlMap(
        name="shop-managed", default_service=bss.get(project=P, backend_service="shop-managed").self_link)))
    proxies = client(world, compute_v1.TargetHttpProxiesClient)
    wait(world, proxies.insert_unary(project=P, target_http_proxy_resource=compute_v1.TargetHttpProxy(
        name="shop-managed", url_map=ums.get(project=P, url_map="shop-managed").self_link)))
    rules = client(world, compute_v1.GlobalForwardingRulesClient)
    wait(world, rules.insert_unary(project=P, forwarding_rule_resource=compute_v1.ForwardingRule(
        name="shop-managed", load_balancing_scheme="EXTERNAL_MANAGED", port_range="80",
        target=proxies.get(project=P, target_http_proxy="shop-managed").self_link)))
    vip = rules.get(project=P, forwarding_rule="shop-managed").I_p_address
    assert world.sim.dataplane.wait_health("HEALTHY", timeout=10)
    return world.sim.dataplane.url_for(vip, 80)


def test_header_field_affinity_on_the_global_external_alb_sends_one_users_requests_to_one_backend(
        world: RunningSim) -> None:
    url = managed_chain(world, session_affinity="HEADER_FIELD", locality_lb_policy="RING_HASH",
                        consistent_hash=compute_v1.ConsistentHashLoadBalancerSettings(http_header_name="X-User"))
    by_user = {}
    for user in ("ana", "bo", "chen", "dee", "eli", "fay"):
        seen = {requests.get(f"{url}/", headers={"X-User": user}, timeout=5).headers["X-Sim-Backend"]
                for _ in range(4)}
        assert len(seen) == 1, (user, seen)
        by_user[user] = seen.pop()
    assert len(set(by_user.values())) > 1, by_user
    # Without the header: balanced.
    assert len({requests.get(f"{url}/", timeout=5).headers["X-Sim-Backend"] for _ in range(8)}) > 1


def test_cloud_cdn_serves_a_cached_answer_and_says_so_in_the_cache_status_variable(world: RunningSim) -> None:
    url = serving(world)
    patch_backend_service(world, enable_c_d_n=True, cdn_policy=compute_v1.BackendServiceCdnPolicy(
        cache_mode="CACHE_ALL_STATIC", default_ttl=60), custom_response_headers=["X-Cache: {cdn_cache_status}"])
    eventually(lambda: requests.get(f"{url}/x.css", timeout=5).headers.get("X-Cache") in ("miss", "hit"))
    first = requests.get(f"{url}/app.css?v=1", timeout=5)
    again = [requests.get(f"{url}/app.css?v=1", timeout=5) for _ in range(4)]
    assert first.headers["X-Cache"] == "miss" and {r.headers["X-Cache"] for r in again} == {"hit"}
    assert {r.json()["pod"] for r in again} == {first.json()["pod"]} and all("Age" in r.headers for r in again)
    # Dynamic content (the app's JSON at a path without a static extension) is not cached in CACHE_ALL_STATIC.
    assert {requests.get(f"{url}/api", timeout=5).headers["X-Cache"] for _ in range(3)} == {"uncacheable"}
    assert len({requests.get(f"{url}/api", timeout=5).json()["pod"] for _ in range(4)}) > 1

    # A backend Cloud Armor policy protects the origin: a denied client still gets what the cache holds, and a
    # 403 for what it does not (Google evaluates backend policies on cache misses only).
    policies = client(world, compute_v1.SecurityPoliciesClient)
    wait(world, policies.insert_unary(project=P, security_policy_resource=compute_v1.SecurityPolicy(
        name="origin-only", rules=[compute_v1.SecurityPolicyRule(
            priority=1000, action="deny(403)", match=compute_v1.SecurityPolicyRuleMatcher(
                versioned_expr="SRC_IPS_V1", config=compute_v1.SecurityPolicyRuleMatcherConfig(
                    src_ip_ranges=["127.0.0.7/32"])))])))
    bss = client(world, compute_v1.BackendServicesClient)
    wait(world, bss.set_security_policy_unary(project=P, backend_service=BS, security_policy_reference_resource=(
        compute_v1.SecurityPolicyReference(security_policy=f"projects/{P}/global/securityPolicies/origin-only"))))
    fresh = itertools.count()  # a new path each try: one that got cached before the policy applied stays a hit
    eventually(lambda: get_from(url, "127.0.0.7", f"/other-{next(fresh)}.css")[0] == 403)
    status, headers, _ = get_from(url, "127.0.0.7", "/app.css?v=1")
    assert (status, headers["X-Cache"]) == (200, "hit")


def _handshake(url: str, max_version: ssl.TLSVersion) -> str:
    """The TLS version a client allowing at most ``max_version`` gets ("refused" when the handshake fails)."""
    host, port = url.removeprefix("https://").rsplit(":", 1)
    context = ssl.create_default_context()
    context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
    context.maximum_version = max_version
    try:
        with socket.create_connection((host, int(port)), timeout=5) as raw, \
                context.wrap_socket(raw, server_hostname="shop.example.com") as tls:
            return tls.version() or ""
    except (ssl.SSLError, ConnectionResetError):
        return "refused"


def test_an_ssl_policy_with_tls_1_3_minimum_refuses_a_tls_1_2_client(world: RunningSim) -> None:
    cert, key = self_signed(["shop.example.com"])
    built = kubemci_chain(world, certificate=cert, private_key=key)
    assert world.sim.dataplane.wait_health("HEALTHY", timeout=10)
    url = world.sim.dataplane.url_for(built.vip, 443)
    assert _handshake(url, ssl.TLSVersion.TLSv1_2) == "TLSv1.2"
    policies = client(world, compute_v1.SslPoliciesClient)
    wait(world, policies.insert_unary(project=P, ssl_policy_resource=compute_v1.SslPolicy(
        name="tls13", profile="RESTRICTED", min_tls_version="TLS_1_3")))
    proxies = client(world, compute_v1.TargetHttpsProxiesClient)
    https_proxy = next(p.name for p in proxies.list(project=P))
    wait(world, proxies.set_ssl_policy_unary(project=P, target_https_proxy=https_proxy,
                                             ssl_policy_reference_resource=compute_v1.SslPolicyReference(
                                                 ssl_policy=f"projects/{P}/global/sslPolicies/tls13")))
    eventually(lambda: _handshake(url, ssl.TLSVersion.TLSv1_2) == "refused")
    assert _handshake(url, ssl.TLSVersion.TLSv1_3) == "TLSv1.3"


def test_iap_sends_a_browser_without_credentials_to_sign_in_and_tells_the_pod_who_signed_in(
        world: RunningSim) -> None:
    url = serving(world)
    patch_backend_service(world, iap=compute_v1.BackendServiceIAP(enabled=True, oauth2_client_id="shop-client",
                                                                  oauth2_client_secret="s3cret"))
    anonymous = eventually(lambda: (lambda r: r if r.status_code == 302 else None)(
        requests.get(f"{url}/orders", timeout=5, allow_redirects=False)))
    assert anonymous.headers["Location"].startswith("https://accounts.google.com/o/oauth2/v2/auth?")
    assert "client_id=shop-client" in anonymous.headers["Location"]
    signed_in = requests.get(f"{url}/orders", headers={"Authorization": "Bearer token"}, timeout=5)
    assert signed_in.status_code == 200
    assert signed_in.json()["headers"]["X-Goog-Authenticated-User-Email"] == "accounts.google.com:sim-user@example.com"
    patch_backend_service(world, iap=compute_v1.BackendServiceIAP(enabled=False))
    eventually(lambda: requests.get(f"{url}/orders", timeout=5, allow_redirects=False).status_code == 200)
