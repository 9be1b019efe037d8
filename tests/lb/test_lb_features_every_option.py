"""Issue 14's acceptance, to the letter: with every option set at once a re-apply makes 0 writes, and removing any
one option returns its Compute field to the default with one write per resource it lives on (read back with
gcloud); a re-apply after that writes nothing again (docs/features.md "Removing an option")."""

from __future__ import annotations

import base64
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import requests
from kubernetes import client as k8s

from tests.conftest import RunningSim
from tests.lb.test_lb_features import BS, HC, P, apply, gcloud_json, reapply_writes_nothing
from tests.lb.test_lb_features_policies import tls

PROXY = "gmci-sp-shop"


@pytest.fixture
def world(app_world: RunningSim) -> RunningSim:
    """The app in prod1 and prod2, and what the options name, made beforehand as a team would.

    Made with Compute's REST API rather than three gcloud runs (about a second of start-up each, 20 times): making
    these with gcloud is pinned by tests/lb/test_lb_features_policies.py and tests/sim/test_sim_features_compute.py;
    what the options leave on Compute is still read back here with gcloud."""
    for collection, body in (("securityPolicies", {"name": "shop-armor"}),
                             ("securityPolicies", {"name": "shop-edge", "type": "CLOUD_ARMOR_EDGE"}),
                             ("sslPolicies", {"name": "modern-tls", "profile": "MODERN", "minTlsVersion": "TLS_1_2"})):
        made = requests.post(f"{app_world.sim.compute_url}/compute/v1/projects/{P}/global/{collection}", json=body,
                             timeout=5)
        assert made.status_code == 200 and made.json()["status"] == "DONE", made.text
    made = requests.post(f"{app_world.sim.certmanager_url}/v1/projects/{P}/locations/global/certificateMaps",
                         params={"certificateMapId": "shop-map"}, json={}, timeout=5)
    assert made.status_code == 200, made.text
    core = k8s.CoreV1Api(k8s.ApiClient(k8s.Configuration(host=app_world.sim.kube_url("prod1"))))
    core.create_namespaced_secret("default", {"metadata": {"name": "oauth"}, "data": {
        "client_id": base64.b64encode(b"1234.apps.googleusercontent.com").decode(),
        "client_secret": base64.b64encode(b"GOCSPX-every-option").decode()}})
    return app_world


def writes_per_resource(world: RunningSim) -> Counter[str]:
    """Compute write calls since the journal's reset, per resource (`collection/name`; a custom method such as
    setSecurityPolicy counts for the resource it is called on)."""
    out: Counter[str] = Counter()
    for entry in world.sim.journal.writes():
        parts = entry.path.split("?")[0].split("/")
        if "global" in parts:
            at = parts.index("global")
            out["/".join(parts[at + 1:at + 3])] += 1
        else:
            out[entry.path] += 1
    return out


def bs(world: RunningSim) -> dict[str, Any]:
    return dict(gcloud_json(world, "compute", "backend-services", "describe", BS, "--global"))


def proxy(world: RunningSim) -> dict[str, Any]:
    return dict(gcloud_json(world, "compute", "target-https-proxies", "describe", PROXY, "--global"))


def hc(world: RunningSim) -> dict[str, Any]:
    return dict(gcloud_json(world, "compute", "health-checks", "describe", HC, "--global"))


BSR = f"backendServices/{BS}"
PXR = f"targetHttpsProxies/{PROXY}"
HCR = f"healthChecks/{HC}"
# option id -> (its flags, the resources one write each returns to the default, the default as gcloud reads it).
Check = Callable[[RunningSim], bool]
OPTIONS: dict[str, tuple[list[str], set[str], Check]] = {
    "cloud-armor": (["--security-policy", "shop-armor"], {BSR}, lambda w: not bs(w).get("securityPolicy")),
    "edge-policy": (["--edge-security-policy", "shop-edge"], {BSR}, lambda w: not bs(w).get("edgeSecurityPolicy")),
    "cdn": (["--cdn", "--cdn-cache-mode", "CACHE_ALL_STATIC"], {BSR}, lambda w: not bs(w).get("enableCDN")),
    "iap": (["--iap-secret", "oauth"], {BSR}, lambda w: not (bs(w).get("iap") or {}).get("enabled")),
    "logging": (["--logging", "--log-sample-rate", "0.5"], {BSR},
                lambda w: not (bs(w).get("logConfig") or {}).get("enable")),
    "cookie-affinity": (["--session-affinity", "GENERATED_COOKIE", "--affinity-cookie-ttl-sec", "60"], {BSR},
                        lambda w: (b := bs(w)).get("sessionAffinity") == "NONE" and not b.get("affinityCookieTtlSec")),
    "header-affinity": (["--session-affinity", "HEADER_FIELD", "--affinity-header", "X-User"], {BSR},
                        lambda w: (b := bs(w)).get("sessionAffinity") == "NONE" and not b.get("consistentHash")),
    "draining": (["--draining-timeout-sec", "45"], {BSR},
                 lambda w: (bs(w).get("connectionDraining") or {}).get("drainingTimeoutSec", 0) == 0),
    "request-header": (["--request-header", "X-Client-Region:{client_region}"], {BSR},
                       lambda w: not bs(w).get("customRequestHeaders")),
    "response-header": (["--response-header", "X-Served-By:gitlab-mci"], {BSR},
                        lambda w: not bs(w).get("customResponseHeaders")),
    "backend-protocol": (["--backend-protocol", "HTTP2"], {BSR, HCR},
                         lambda w: bs(w).get("protocol") == "HTTP" and hc(w).get("type") == "HTTP"),
    "outlier-detection": (["--outlier-consecutive-errors", "5"], {BSR}, lambda w: not bs(w).get("outlierDetection")),
    "locality-policy": (["--locality-lb-policy", "MAGLEV"], {BSR},
                        lambda w: bs(w).get("localityLbPolicy") in (None, "ROUND_ROBIN")),
    "ssl-policy": (["--ssl-policy", "modern-tls"], {PXR}, lambda w: not proxy(w).get("sslPolicy")),
    "quic": (["--quic-override", "ENABLE"], {PXR}, lambda w: proxy(w).get("quicOverride") == "NONE"),
    "certificate-map": (["--certificate-map", "shop-map"], {PXR}, lambda w: not proxy(w).get("certificateMap")),
}


@pytest.mark.parametrize("option", sorted(OPTIONS))
def test_removing_one_option_returns_its_field_to_the_default_with_one_write_per_resource(
        world: RunningSim, tmp_path: Path, capsys: pytest.CaptureFixture[str], option: str) -> None:
    flags, resources, at_default = OPTIONS[option]
    https = tls(tmp_path)
    apply(world, capsys, *https, *flags)
    assert not at_default(world), f"{option} did not change its field"
    reapply_writes_nothing(world, capsys, *https, *flags)
    world.sim.journal.reset()
    apply(world, capsys, *https)
    assert writes_per_resource(world) == Counter({r: 1 for r in resources}), world.sim.journal.writes()
    assert at_default(world)
    reapply_writes_nothing(world, capsys, *https)


# Every option at once. Google: IAP is not compatible with Cloud CDN on one backend service, so one run has CDN and
# the other IAP; header affinity and cookie affinity are one field (sessionAffinity), the runs take HEADER_FIELD.
def every(but: str) -> list[str]:
    return [flag for name in sorted(OPTIONS) if name not in (but, "cookie-affinity") for flag in OPTIONS[name][0]]


@pytest.mark.parametrize("but", ["iap", "cdn"], ids=["with-cdn", "with-iap"])
def test_reapplying_with_every_option_set_writes_nothing(world: RunningSim, tmp_path: Path,
                                                         capsys: pytest.CaptureFixture[str], but: str) -> None:
    https = tls(tmp_path)
    options = [*https, *every(but), "--ipv6"]
    apply(world, capsys, *options)
    held = bs(world)
    assert held["securityPolicy"].endswith("/shop-armor") and held["edgeSecurityPolicy"].endswith("/shop-edge")
    assert bool(held.get("enableCDN")) is (but == "iap")
    assert bool((held.get("iap") or {}).get("enabled")) is (but == "cdn")
    assert held["logConfig"]["enable"] is True and held["customResponseHeaders"] == ["X-Served-By:gitlab-mci"]
    assert held["sessionAffinity"] == "HEADER_FIELD" and held["localityLbPolicy"] == "MAGLEV"
    assert held["outlierDetection"]["consecutiveErrors"] == 5
    assert held["connectionDraining"]["drainingTimeoutSec"] == 45 and held["protocol"] == "HTTP2"
    front = proxy(world)
    assert front["quicOverride"] == "ENABLE" and front["sslPolicy"].endswith("/modern-tls")
    assert front["certificateMap"].endswith("/shop-map")
    assert gcloud_json(world, "compute", "addresses", "describe", "gmci-ip-shop-v6", "--global")["ipVersion"] == "IPV6"
    reapply_writes_nothing(world, capsys, *options)
