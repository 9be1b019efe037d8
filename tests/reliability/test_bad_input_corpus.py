"""Bad input: one clear line, a non-zero exit, and not a single write call in the simulator's journal."""

from __future__ import annotations

import base64
import json
import socket
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from tests.cli_helpers import run_cli as cli
from tests.conftest import RunningSim
from tests.pki import write_pair

LB = ["lb", "apply", "--lb", "shop", "--context", "prod1,prod2"]
SVC = ["--service", "shop-auto-deploy", "--port", "web"]
PIN = ["nodeport", "pin", "--context", "prod1", "--release", "shop", "--service", "shop-auto-deploy"]


def _ingress(d: Path, text: str) -> str:
    path = d / "ingress.yaml"
    path.write_text(text)
    return str(path)


V1 = "apiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata: {name: shop}\nspec:\n"


def _unreachable_kubeconfig(d: Path) -> str:
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    path = d / "dead.kubeconfig"
    path.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "dead",
        "clusters": [{"name": "dead", "cluster": {"server": f"http://127.0.0.1:{port}"}}],
        "users": [{"name": "u", "user": {}}],
        "contexts": [{"name": "dead", "context": {"cluster": "dead", "user": "u"}}]}))
    return str(path)


def _file(d: Path, name: str, text: str) -> str:
    path = d / name
    path.write_text(text)
    return str(path)


HOSTED = ["hosted", "apply", "--lb", "shop", "--context", "prod1,prod2", *SVC, "--no-wait"]
Case = Callable[[Path], list[str]]
CASES: list[tuple[str, Case, str]] = [
    ("malformed Ingress YAML", lambda d: [*LB, "--ingress", _ingress(d, "spec: [")], "malformed YAML at line 1"),
    ("Ingress file missing", lambda d: [*LB, "--ingress", str(d / "nope.yaml")], "cannot read the Ingress file"),
    ("not an Ingress", lambda d: [*LB, "--ingress", _ingress(d, "kind: Service\nmetadata: {name: x}\n")],
     "no Ingress or MultiClusterIngress found"),
    ("two Ingresses", lambda d: [*LB, "--ingress", _ingress(d, (V1 + "  defaultBackend: {service: {name: a, port: "
                                                                   "{number: 1}}}\n---\n") * 2)], "2 Ingress documents"),
    ("Ingress without name", lambda d: [*LB, "--ingress", _ingress(d, "apiVersion: networking.k8s.io/v1\nkind: "
                                                                      "Ingress\nspec: {}\n")], "metadata.name"),
    ("Ingress routes nowhere", lambda d: [*LB, "--ingress", _ingress(d, V1 + "  rules: []\n")], "routes nowhere"),
    ("wrong apiVersion", lambda d: [*LB, "--ingress", _ingress(d, V1.replace("networking.k8s.io/v1", "v9"))],
     "is not an Ingress API version"),
    ("resource backend", lambda d: [*LB, "--ingress", _ingress(d, V1 + "  defaultBackend: {resource: {kind: X}}\n")],
     "resource backends are not supported"),
    ("port number and name", lambda d: [*LB, "--ingress", _ingress(d, V1 + "  defaultBackend: {service: {name: a, "
                                                                          "port: {number: 1, name: b}}}\n")],
     "exactly one of number and name"),
    ("port out of range in Ingress", lambda d: [*LB, "--ingress", _ingress(d, V1 + "  defaultBackend: {service: "
                                                                                  "{name: a, port: {number: 70000}}}\n")],
     "70000 is not a port"),
    ("bad path", lambda d: [*LB, "--ingress", _ingress(d, V1 + "  rules:\n  - http:\n      paths:\n      - {path: "
                                                           "api, backend: {service: {name: a, port: {number: 1}}}}\n")],
     "must start with /"),
    ("bad pathType", lambda d: [*LB, "--ingress", _ingress(d, V1 + "  rules:\n  - http:\n      paths:\n      - {path: "
                                                               "/a, pathType: Regex, backend: {service: {name: a, "
                                                               "port: {number: 1}}}}\n")], "is not Prefix"),
    ("unknown Service", lambda d: [*LB, "--service", "nope"], "Service 'nope' (routed to by the Ingress) does not exist"),
    ("unknown Service port", lambda d: [*LB, "--service", "shop-auto-deploy", "--port", "grpc"], "has no port 'grpc'"),
    ("ingress and service", lambda d: [*LB, *SVC, "--ingress", _ingress(d, V1)], "either --ingress or --service"),
    ("no routing", lambda d: LB, "no routing"),
    ("no clusters", lambda d: ["lb", "apply", "--lb", "shop", *SVC], "no clusters"),
    ("unknown context", lambda d: ["lb", "apply", "--lb", "shop", "--context", "prod9", *SVC],
     "unknown kubeconfig context 'prod9'"),
    ("unreachable cluster", lambda d: ["lb", "apply", "--lb", "shop", "--context", "dead", *SVC, "--kubeconfig",
                                       _unreachable_kubeconfig(d)], "cannot reach the cluster of context 'dead'"),
    ("name too long", lambda d: ["lb", "apply", "--lb", "s" * 41, "--context", "prod1", *SVC], "at most 40 characters"),
    ("name with capitals", lambda d: ["lb", "apply", "--lb", "Shop", "--context", "prod1", *SVC],
     "must be lowercase letters"),
    ("bad static IP name", lambda d: [*LB, *SVC, "--static-ip", "Web_IP"], "not a valid Compute resource name"),
    ("timeout out of range", lambda d: [*LB, *SVC, "--timeout-sec", "0"], "--timeout 0: must be 1 to 86400"),
    ("health check path", lambda d: [*LB, *SVC, "--health-check-path", "healthz"], "must start with /"),
    ("check interval", lambda d: [*LB, *SVC, "--check-interval-sec", "0"], "--check-interval-sec 0"),
    ("concurrency", lambda d: [*LB, *SVC, "--concurrency", "0"], "--concurrency 0"),
    ("certificate without key", lambda d: [*LB, *SVC, "--certificate-file", str(write_pair(d, "a")[0])],
     "go together"),
    ("key of another certificate", lambda d: [*LB, *SVC, "--certificate-file", str(write_pair(d, "a")[0]),
                                              "--key-file", str(write_pair(d, "b")[1])], "does not match"),
    ("expired certificate", lambda d: [*LB, *SVC, "--certificate-file", str(write_pair(d, "x", expired=True)[0]),
                                       "--key-file", str(d / "x.key")], "expired"),
    ("garbage certificate", lambda d: [*LB, *SVC, "--certificate-file", _ingress(d, "hello"), "--key-file",
                                       _ingress(d, "hello")], "not a PEM certificate"),
    ("wildcard managed domain", lambda d: [*LB, *SVC, "--managed-domain", "*.shop.example"], "fully qualified"),
    ("missing pre-shared certificate", lambda d: [*LB, *SVC, "--ssl-certificate", "gone"], "not found in project"),
    ("redirect without HTTPS", lambda d: [*LB, *SVC, "--https-redirect"], "needs both HTTP and HTTPS"),
    ("node port out of range", lambda d: [*PIN, "--node-port", "80"], "30000"),
    ("node port not a number", lambda d: [*PIN, "--node-port", "lots"], "lots"),
    ("pin: missing Service", lambda d: ["nodeport", "pin", "--context", "prod1", "--release", "gone",
                                        "--node-port", "30999"], "gone"),
    ("pin: missing namespace", lambda d: [*PIN, "-n", "nowhere", "--node-port", "30999"], "nowhere"),
    ("pin: port held by another Service", lambda d: [*PIN, "--node-port", "31999"], "is already used by Service default/other"),
    ("contradictory Helm arguments", lambda d: ["helm", "extra-args", "--node-port", "30999", "--extra-args",
                                                "--set service.type=ClusterIP"], "service.type=ClusterIP"),
    ("bad scheme", lambda d: [*LB, *SVC, "--scheme", "INTERNAL"], "'INTERNAL' is not one of"),
    ("bad balancing mode", lambda d: [*LB, *SVC, "--balancing-mode", "SOMETIMES"], "'SOMETIMES' is not one of"),
    ("missing --lb", lambda d: ["lb", "apply", "--context", "prod1", *SVC], "Missing option '--lb'"),
    ("name ending in a hyphen", lambda d: ["lb", "apply", "--lb", "shop-", "--context", "prod1", *SVC],
     "must be lowercase letters"),
    ("empty context list", lambda d: ["lb", "apply", "--lb", "shop", "--context", ",", *SVC], "no clusters"),
    ("HTTP off without HTTPS", lambda d: [*LB, *SVC, "--no-http"], "--no-http needs HTTPS"),
    ("destroy: unknown context", lambda d: ["lb", "destroy", "--lb", "shop", "--context", "prod9"],
     "unknown kubeconfig context 'prod9'"),
    ("plan: unknown Service", lambda d: ["lb", "plan", "--lb", "shop", "--context", "prod1", "--service", "nope"],
     "Service 'nope' (routed to by the Ingress) does not exist"),
    # Per-cluster traffic control (docs/traffic-control.md): refused before any cloud call.
    ("weight not a number", lambda d: [*LB, *SVC, "--weight", "prod1=heavy"], "'heavy' is not a number"),
    ("weight without cluster", lambda d: [*LB, *SVC, "--weight", "3"], "use CLUSTER=WEIGHT"),
    ("weight of an unknown cluster", lambda d: [*LB, *SVC, "--weight", "prod9=2"], "unknown cluster 'prod9'"),
    ("weights that sum to 0", lambda d: [*LB, *SVC, "--weight", "prod1=0,prod2=0"], "weights that sum to 0"),
    ("negative weight", lambda d: [*LB, *SVC, "--weight", "prod1=-1"], "must be a number > 0"),
    ("weight given twice", lambda d: [*LB, *SVC, "--weight", "prod1=2", "--weight", "prod1=3"], "given twice"),
    ("weights more than ten times apart", lambda d: [*LB, *SVC, "--weight", "prod1=20,prod2=1"],
     "differ more than ten times"),
    ("plan: infinite weight", lambda d: ["lb", "plan", "--lb", "shop", "--context", "prod1", *SVC, "--weight",
                                         "prod1=inf"], "must be a number > 0"),
    ("drain: unknown cluster", lambda d: ["lb", "drain", "prod9", "--lb", "shop", "--context", "prod1,prod2"],
     "lb drain prod9: unknown cluster"),
    ("drain: no load balancer", lambda d: ["lb", "drain", "prod1", "--lb", "nosuch", "--context", "prod1,prod2"],
     "load balancer 'nosuch' not found"),
    ("undrain: unknown cluster", lambda d: ["lb", "undrain", "prod9", "--lb", "shop", "--context", "prod1"],
     "lb undrain prod9: unknown cluster"),
    ("mismatched node ports", lambda d: ["nodeport", "verify", "--context", "prod1,prod2", "--release", "shop",
                                         "--service", "shop-auto-deploy", "--node-port", "31000"], "are not pinned"),
]
# Production options (issue 14, docs/features.md): checked against the scheme and what exists before any write.
OPTION_CASES: list[tuple[str, Case, str]] = [
    ("missing security policy", lambda d: [*LB, *SVC, "--security-policy", "nope"],
     "security policy 'nope' (from flags) not found"),
    ("missing edge security policy", lambda d: [*LB, *SVC, "--edge-security-policy", "nope"],
     "edge security policy 'nope' (from flags) not found"),
    ("missing SSL policy", lambda d: [*LB, *SVC, "--ssl-certificate", "users-cert", "--ssl-policy", "nope"],
     "SSL policy 'nope' (from flags) not found"),
    ("missing certificate map", lambda d: [*LB, *SVC, "--certificate-map", "nope"],
     "certificate map 'nope' (from flags) not found"),
    ("EXTERNAL with outlier detection",
     lambda d: [*LB, *SVC, "--scheme", "EXTERNAL", "--outlier-consecutive-errors", "5"],
     "outlierDetection (from flags) needs --scheme EXTERNAL_MANAGED"),
    ("EXTERNAL with a locality policy",
     lambda d: [*LB, *SVC, "--scheme", "EXTERNAL", "--locality-lb-policy", "RING_HASH"],
     "localityLbPolicy (from flags) needs --scheme EXTERNAL_MANAGED"),
    ("EXTERNAL with HEADER_FIELD affinity",
     lambda d: [*LB, *SVC, "--scheme", "EXTERNAL", "--session-affinity", "HEADER_FIELD", "--affinity-header", "X-User"],
     "sessionAffinity HEADER_FIELD (from flags) needs --scheme EXTERNAL_MANAGED"),
    ("IAP Secret without the OAuth keys", lambda d: [*LB, *SVC, "--iap-secret", "iap-half"],
     "IAP Secret default/iap-half in context 'prod1' has no client_secret"),
    ("IAP Secret missing", lambda d: [*LB, *SVC, "--iap-secret", "nope"],
     "IAP Secret default/nope in context 'prod1' not found"),
    ("IAP client file without the OAuth keys",
     lambda d: [*LB, *SVC, "--iap-client-file", _file(d, "iap.json", '{"client_id": "c"}')],
     "iap.json: needs client_id and client_secret"),
    ("unknown features-file key", lambda d: [*LB, *SVC, "--features-file", _file(d, "f.yaml", "nosuch: 1\n")],
     "f.yaml: unknown option 'nosuch'"),
    ("features-file value of the wrong type",
     lambda d: [*LB, *SVC, "--features-file", _file(d, "f.yaml", "connectionDraining: {drainingTimeoutSec: soon}\n")],
     "connectionDraining.drainingTimeoutSec: 'soon' is not of type 'integer'"),
    ("malformed features-file YAML", lambda d: [*LB, *SVC, "--features-file", _file(d, "f.yaml", "logging: [\n")],
     "f.yaml: line 2 is not valid YAML"),
    ("log sample rate above 1", lambda d: [*LB, *SVC, "--logging", "--log-sample-rate", "1.5"],
     "logging.sampleRate: 1.5 is greater than the maximum of 1"),
    ("draining above 3600 s", lambda d: [*LB, *SVC, "--draining-timeout-sec", "3601"],
     "drainingTimeoutSec: 3601 is greater than the maximum of 3600"),
    ("a header the load balancer may not set", lambda d: [*LB, *SVC, "--request-header", "Host: evil.example"],
     "the load balancer may not set header 'host'"),
    ("CDN default TTL above max TTL", lambda d: [*LB, *SVC, "--features-file", _file(
        d, "f.yaml", "cdn: {enabled: true, cacheMode: CACHE_ALL_STATIC, defaultTtl: 7200, maxTtl: 3600}\n")],
     "defaultTtl 7200 is above maxTtl 3600"),
    ("CDN TTL with origin headers", lambda d: [*LB, *SVC, "--features-file", _file(
        d, "f.yaml", "cdn: {enabled: true, cacheMode: USE_ORIGIN_HEADERS, defaultTtl: 60}\n")],
     "cacheMode USE_ORIGIN_HEADERS takes no defaultTtl"),
    ("negative caching policy without negative caching", lambda d: [*LB, *SVC, "--features-file", _file(
        d, "f.yaml", "cdn: {enabled: true, negativeCachingPolicy: [{code: 404, ttl: 60}]}\n")],
     "negativeCachingPolicy needs negativeCaching: true"),
    ("negative caching of a code Cloud CDN does not cache", lambda d: [*LB, *SVC, "--features-file", _file(
        d, "f.yaml", "cdn: {enabled: true, negativeCaching: true, negativeCachingPolicy: [{code: 500, ttl: 60}]}\n")],
     "negativeCachingPolicy code 500 is not one Cloud CDN caches"),
    ("Cloud CDN with IAP", lambda d: [*LB, *SVC, "--cdn", "--iap-client-file", _file(
        d, "iap.json", '{"client_id": "c", "client_secret": "s"}')], "cdn and iap (from flags) exclude each other"),
    ("cookie TTL without cookie affinity",
     lambda d: [*LB, *SVC, "--session-affinity", "CLIENT_IP", "--affinity-cookie-ttl-sec", "60"],
     "affinityCookieTtlSec (from flags) needs affinityType GENERATED_COOKIE or HTTP_COOKIE"),
    ("HTTP_COOKIE affinity without a cookie", lambda d: [*LB, *SVC, "--session-affinity", "HTTP_COOKIE"],
     "sessionAffinity HTTP_COOKIE needs the cookie's name"),
    ("QUIC without HTTPS", lambda d: [*LB, *SVC, "--quic-override", "ENABLE"],
     "quicOverride (from flags) applies to the HTTPS proxy"),
    ("flag and BackendConfig disagree",
     lambda d: [*LB, "--service", "bc-shop", "--port", "web", "--session-affinity", "GENERATED_COOKIE"],
     'sessionAffinity: flags says {"affinityType": "GENERATED_COOKIE"} but BackendConfig default/bc-shop'),
    ("flag and features file disagree", lambda d: [
        *LB, *SVC, "--draining-timeout-sec", "30",
        "--features-file", _file(d, "f.yaml", "connectionDraining: {drainingTimeoutSec: 60}\n")],
     'connectionDraining: flags says {"drainingTimeoutSec": 30} but --features-file'),
    ("hosted: edge security policy", lambda d: [*HOSTED, "--edge-security-policy", "edge"],
     "edgeSecurityPolicy (from flags) is not available in hosted mode"),
    ("hosted: QUIC", lambda d: [*HOSTED, "--quic-override", "ENABLE"],
     "quicOverride (from flags) is not available in hosted mode"),
    ("hosted: IPv6", lambda d: [*HOSTED, "--ipv6"], "ipv6 (from flags) is not available in hosted mode"),
    ("hosted: certificate map", lambda d: [*HOSTED, "--certificate-map", "certs"],
     "certificateMap (from flags) is not available in hosted mode"),
]
CASES += OPTION_CASES
# Container-native backends, takeover and the Gateway mode.
CASES += [
    ("NEG backends with UTILIZATION", lambda d: [*LB, *SVC, "--backends", "neg", "--balancing-mode", "UTILIZATION"],
     "--balancing-mode UTILIZATION: Compute refuses it for NEG backends"),
    ("NEG backends on a Service not exposed", lambda d: [*LB, *SVC, "--backends", "neg"], "is not exposed as NEGs"),
    ("takeover: address no rule uses",
     lambda d: ["lb", "takeover", "--lb", "shop", "--context", "prod1,prod2", "--address", "users-ip", *SVC],
     "--address users-ip: no forwarding rule uses"),
    ("neg expose: missing Service",
     lambda d: ["neg", "expose", "--context", "prod1", "--lb", "shop", "--service", "gone", "--timeout", "0"],
     "context 'prod1': no Service default/gone"),
    ("gateway: name starting with gkemcg",
     lambda d: ["gateway", "apply", "--lb", "gkemcg-shop", "--context", "prod1,prod2", *SVC],
     "'gkemcg-shop' starts with 'gkemcg'"),
]


def _create(call: Callable[..., object], *args: object) -> None:
    from kubernetes import client as k8s

    try:
        call(*args)
    except k8s.exceptions.ApiException as exc:
        assert exc.status == 409  # made by an earlier case in this module's world


def _half_iap_secret(running: RunningSim) -> None:
    """A Secret with the OAuth client id but no client_secret."""
    from kubernetes import client as k8s

    for cluster in ("prod1", "prod2"):
        core = k8s.CoreV1Api(k8s.ApiClient(k8s.Configuration(host=running.sim.kube_url(cluster))))
        _create(core.create_namespaced_secret, "default", {"metadata": {"name": "iap-half"}, "data": {
            "client_id": base64.b64encode(b"client-1").decode()}})


def _service_with_backend_config(running: RunningSim) -> None:
    """A GKE Ingress user's Service whose BackendConfig asks for CLIENT_IP affinity (shop-auto-deploy's pods)."""
    from kubernetes import client as k8s

    for cluster in ("prod1", "prod2"):
        api = k8s.ApiClient(k8s.Configuration(host=running.sim.kube_url(cluster)))
        _create(k8s.CustomObjectsApi(api).create_namespaced_custom_object,
                "cloud.google.com", "v1", "default", "backendconfigs",
                {"apiVersion": "cloud.google.com/v1", "kind": "BackendConfig", "metadata": {"name": "bc-shop"},
                 "spec": {"sessionAffinity": {"affinityType": "CLIENT_IP"}}})
        shop = k8s.CoreV1Api(api).read_namespaced_service("shop-auto-deploy", "default")
        _create(k8s.CoreV1Api(api).create_namespaced_service, "default", {
            "metadata": {"name": "bc-shop", "annotations": {
                "cloud.google.com/backend-config": json.dumps({"default": "bc-shop"})}},
            "spec": {"type": "NodePort", "selector": shop.spec.selector, "ports": [
                {"name": "web", "port": 5000, "targetPort": 5000, "nodePort": 31998}]}})


# What a case needs in the world beyond the module's app (made before the case; the journal is reset after).
SETUP: dict[str, Callable[[RunningSim], None]] = {
    "IAP Secret without the OAuth keys": _half_iap_secret,
    "flag and BackendConfig disagree": _service_with_backend_config,
}


@pytest.fixture
def holder(env: RunningSim) -> RunningSim:
    """A second Service holding node port 31999 in prod1 (for the port-conflict case)."""
    from kubernetes import client as k8s

    core = k8s.CoreV1Api(k8s.ApiClient(k8s.Configuration(host=env.sim.kube_url("prod1"))))
    try:
        core.create_namespaced_service("default", {"metadata": {"name": "other"}, "spec": {
            "type": "NodePort", "selector": {"app": "other"}, "ports": [{"port": 80, "nodePort": 31999}]}})
    except k8s.exceptions.ApiException as exc:
        assert exc.status == 409
    env.sim.journal.reset()
    return env


def test_the_corpus_has_at_least_thirty_cases() -> None:
    assert len(CASES) >= 30 and len({c[0] for c in CASES}) == len(CASES)


def test_the_production_options_add_at_least_twenty_cases() -> None:
    # Issue 14's acceptance: the corpus grows by at least 20 cases for the new options.
    assert len(OPTION_CASES) >= 20 and all(c in CASES for c in OPTION_CASES)


@pytest.mark.parametrize(("case", "args", "message"), CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_one_line_nonzero_and_writes_nothing(holder: RunningSim, tmp_path: Path,
                                                          capsys: pytest.CaptureFixture[str], case: str,
                                                          args: Case, message: str) -> None:
    if case in SETUP:
        SETUP[case](holder)
        holder.sim.journal.reset()
    code, out, err = cli(args(tmp_path), capsys)
    lines = err.strip().splitlines()
    assert code != 0, out
    if code == 2 and lines[:1] and lines[0].startswith("Usage: "):
        # A usage error is click's: exit 2, the usage and help hint, then exactly one "Error: " line.
        lines = [line for line in lines if line.startswith("Error: ")]
        assert len(err.strip().splitlines()) == 4, err
    assert len(lines) == 1 and message in lines[0], err
    assert lines[0].startswith(("gitlab-mci: error: ", "Error: ")), err
    assert holder.sim.journal.writes() == [], [(e.method, e.path) for e in holder.sim.journal.writes()]
