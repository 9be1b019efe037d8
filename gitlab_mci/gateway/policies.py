"""The production options (docs/features.md) as GKE's Gateway policies: a ``GCPBackendPolicy``
(``networking.gke.io/v1``) per exported Service — each cluster's ``ServiceImport`` — and a ``GCPGatewayPolicy`` on
the Gateway. The options come from the same flags, ``--features-file`` and checks as ``lb``/``hosted``; what neither
policy can say is refused by name before anything is written."""

from __future__ import annotations

from typing import Any

from gitlab_mci.errors import UserError
from gitlab_mci.features.model import Features

# Options GCPBackendPolicy/GCPGatewayPolicy cannot carry, and why (GKE's "Configure Gateway resources using
# Policies"): the rest of the backend service and proxy is the Gateway controller's.
_NOT_GATEWAY = {
    "edgeSecurityPolicy": "GCPBackendPolicy has no edge security policy",
    "customRequestHeaders": "use an HTTPRoute RequestHeaderModifier filter in --httproute-file",
    "customResponseHeaders": "use an HTTPRoute ResponseHeaderModifier filter in --httproute-file",
    "backendProtocol": "the Gateway takes it from the Service port's appProtocol",
    "localityLbPolicy": "GCPBackendPolicy has no locality balancing policy",
    "outlierDetection": "GCPBackendPolicy has no outlier detection",
    "cdn": "GKE's multi-cluster Gateway does not offer Cloud CDN",
    "iap": "not rendered yet (GCPBackendPolicy reads the OAuth client secret from a Secret key 'key')",
    "quicOverride": "GCPGatewayPolicy has no QUIC setting",
    "certificateMap": "not rendered yet (the Gateway's networking.gke.io/certmap annotation)",
    "ipv6": "a Gateway serves the addresses GKE gives it",
}
# GCPBackendPolicy's sessionAffinity.type values that need nothing but a type (and the cookie's TTL).
_AFFINITIES = ("NONE", "CLIENT_IP", "GENERATED_COOKIE")
GKE_TIMEOUT_SEC = 30  # a backend service's default timeout: no policy needed for it


def check(features: Features, timeout_sec: int | None) -> None:
    """Refuse, by name, what the Gateway's policies cannot carry (before any read or write)."""
    from gitlab_mci.features.compute import check_mode

    check_mode(features, _NOT_GATEWAY, "gateway")
    affinity = features.get("sessionAffinity") or {}
    if affinity.get("affinityType") not in (None, *_AFFINITIES):
        raise UserError(f"sessionAffinity {affinity['affinityType']} (from {features.origin['sessionAffinity']}) "
                        f"is not available in gateway mode: GCPBackendPolicy offers {', '.join(_AFFINITIES)}")
    if timeout_sec is not None and not 1 <= timeout_sec <= 86400:
        raise UserError(f"--timeout-sec {timeout_sec}: the backend timeout is 1 to 86400 seconds")


def backend_default(features: Features, timeout_sec: int | None) -> dict[str, Any]:
    """``GCPBackendPolicy.spec.default`` for the options (empty: no policy)."""
    out: dict[str, Any] = {}
    if timeout_sec not in (None, GKE_TIMEOUT_SEC):
        out["timeoutSec"] = timeout_sec
    draining = features.get("connectionDraining") or {}
    if draining.get("drainingTimeoutSec") is not None:
        out["connectionDraining"] = {"drainingTimeoutSec": draining["drainingTimeoutSec"]}
    logging = features.get("logging")
    if logging is not None:
        out["logging"] = {"enabled": bool(logging.get("enable", True))}
        if logging.get("sampleRate") is not None:  # GKE's unit: millionths
            out["logging"]["sampleRate"] = round(float(logging["sampleRate"]) * 1_000_000)
    affinity = features.get("sessionAffinity") or {}
    if affinity.get("affinityType"):
        out["sessionAffinity"] = {"type": affinity["affinityType"]}
        if affinity.get("affinityCookieTtlSec") is not None:
            out["sessionAffinity"]["cookieTtlSec"] = affinity["affinityCookieTtlSec"]
    armor = features.get("securityPolicy") or {}
    if armor.get("name"):
        out["securityPolicy"] = armor["name"]
    return out


def gateway_default(features: Features) -> dict[str, Any]:
    """``GCPGatewayPolicy.spec.default`` (empty: no policy)."""
    return {"sslPolicy": features.get("sslPolicy")} if features.get("sslPolicy") else {}
