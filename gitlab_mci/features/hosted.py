"""Hosted mode: the options as GKE's BackendConfig (``cloud.google.com/v1``) and FrontendConfig
(``networking.gke.io/v1beta1``) specs, which GKE's Multi Cluster Ingress controller turns into the same Compute
fields. What neither CRD has is refused by name before anything is written."""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

from gitlab_mci.errors import UserError
from gitlab_mci.features.model import Features

# Options GKE's BackendConfig/FrontendConfig cannot say (Multi Cluster Ingress makes a classic EXTERNAL load
# balancer; its FrontendConfig has sslPolicy and redirectToHttps only).
_NOT_HOSTED = {
    "edgeSecurityPolicy": "BackendConfig has no edge security policy",
    "localityLbPolicy": "Multi Cluster Ingress makes a classic (EXTERNAL) load balancer",
    "outlierDetection": "Multi Cluster Ingress makes a classic (EXTERNAL) load balancer",
    "quicOverride": "FrontendConfig has no QUIC setting",
    "certificateMap": "Multi Cluster Ingress takes certificates, not a certificate map (use the Gateway API)",
    "ipv6": "Multi Cluster Ingress serves one IPv4 address",
}
BACKEND_SPEC_KEYS = ("securityPolicy", "logging", "sessionAffinity", "connectionDraining", "customRequestHeaders",
                     "customResponseHeaders", "cdn", "iap")
APP_PROTOCOLS = "networking.gke.io/app-protocols"


def check(features: Features) -> None:
    """Refuse, by name, an option the hosted mode cannot carry."""
    from gitlab_mci.features.compute import check_mode

    check_mode(features, _NOT_HOSTED, "hosted")
    iap = features.get("iap") or {}
    if iap.get("enabled") and not (iap.get("oauthclientCredentials") or {}).get("secretName"):
        raise UserError(f"iap (from {features.origin['iap']}) in hosted mode needs --iap-secret: GKE reads the OAuth "
                        "client from a Secret in the config cluster")
    affinity = features.get("sessionAffinity") or {}
    if affinity.get("affinityType") in ("HEADER_FIELD", "HTTP_COOKIE"):
        raise UserError(f"sessionAffinity {affinity['affinityType']} (from {features.origin['sessionAffinity']}) is "
                        "not available in hosted mode: BackendConfig offers CLIENT_IP and GENERATED_COOKIE")


def backend_spec(features: Features) -> dict[str, Any]:
    """The BackendConfig spec keys the options set (same shape: the file's keys are BackendConfig's)."""
    return {k: features.get(k) for k in BACKEND_SPEC_KEYS if features.get(k) is not None}


def frontend_spec(features: Features) -> dict[str, Any]:
    return {"sslPolicy": features.get("sslPolicy")} if features.get("sslPolicy") else {}


def app_protocols(features: Features, port_names: list[str | None], service: str) -> dict[str, str]:
    """The MultiClusterService's ``networking.gke.io/app-protocols``: port name → HTTPS or HTTP2."""
    protocol = features.get("backendProtocol")
    if protocol in (None, "HTTP"):
        return {}
    if any(name is None for name in port_names):
        raise UserError(f"backendProtocol {protocol} (from {features.origin['backendProtocol']}): Service "
                        f"{service}'s ports need names, which {APP_PROTOCOLS} refers to")
    return {APP_PROTOCOLS: json.dumps({str(n): protocol for n in port_names}, sort_keys=True)}


@functools.cache
def _schema(kind: str) -> dict[str, Any]:
    path = Path(__file__).resolve().parents[1] / "hosted" / "schemas" / f"{kind.lower()}.json"
    loaded: dict[str, Any] = json.loads(path.read_text())
    return loaded


def validate_manifest(obj: dict[str, Any]) -> None:
    """A rendered BackendConfig/FrontendConfig against its schema in gitlab_mci/hosted/schemas (a failure here is
    gitlab-mci's bug or an option the schema does not know: one line naming the field)."""
    import jsonschema

    errors = list(jsonschema.Draft202012Validator(_schema(obj["kind"])).iter_errors(obj))
    if errors:
        where = ".".join(str(p) for p in errors[0].absolute_path)
        raise UserError(f"{obj['kind']} {obj['metadata']['name']}: {where}: {errors[0].message[:120]}")
