"""What the simulated hosted Multi Cluster Ingress controller makes of a BackendConfig and a FrontendConfig.

GKE's documented mapping (https://cloud.google.com/kubernetes-engine/docs/how-to/ingress-configuration, "Configuring
Ingress features through BackendConfig parameters" and "FrontendConfig parameters"): each BackendConfig field sets
the backend service field of the same meaning; a FrontendConfig's ``sslPolicy`` names the target HTTPS proxy's SSL
policy. The IAP OAuth client comes from the Secret ``spec.iap.oauthclientCredentials.secretName`` (keys
``client_id`` and ``client_secret``) in the BackendConfig's namespace. A setting the controller cannot apply (a
Secret without the keys) is reported as an error in the MultiClusterIngress status, like GKE's sync events.
"""

from __future__ import annotations

import base64
from collections.abc import Callable
from typing import Any

Obj = dict[str, Any]
API = "https://www.googleapis.com/compute/v1"

_CDN_KEYS = ("cacheMode", "defaultTtl", "maxTtl", "clientTtl", "negativeCaching", "negativeCachingPolicy",
             "serveWhileStale", "requestCoalescing", "signedUrlCacheMaxAgeSec")


def backend_config_fields(bc: Obj | None, project: str,
                          secret: Callable[[str], Obj | None]) -> tuple[Obj, list[str]]:
    """(backend service fields, errors) for a BackendConfig (``None``: none attached)."""
    spec = (bc or {}).get("spec") or {}
    out: Obj = {}
    errors: list[str] = []
    if "timeoutSec" in spec:
        out["timeoutSec"] = int(spec["timeoutSec"])
    if "connectionDraining" in spec:
        out["connectionDraining"] = {"drainingTimeoutSec": int(
            (spec["connectionDraining"] or {}).get("drainingTimeoutSec") or 0)}
    affinity = spec.get("sessionAffinity") or {}
    if affinity.get("affinityType"):
        out["sessionAffinity"] = affinity["affinityType"]
    if affinity.get("affinityCookieTtlSec") is not None:
        out["affinityCookieTtlSec"] = int(affinity["affinityCookieTtlSec"])
    policy = (spec.get("securityPolicy") or {}).get("name")
    if policy:
        out["securityPolicy"] = f"{API}/projects/{project}/global/securityPolicies/{policy}"
    logging = spec.get("logging")
    if logging is not None:
        out["logConfig"] = {"enable": bool(logging.get("enable"))}
        if logging.get("enable") and logging.get("sampleRate") is not None:
            out["logConfig"]["sampleRate"] = float(logging["sampleRate"])
    for key in ("customRequestHeaders", "customResponseHeaders"):
        if spec.get(key):
            out[key] = list((spec[key] or {}).get("headers") or [])
    cdn = spec.get("cdn")
    if cdn is not None:
        out["enableCDN"] = bool(cdn.get("enabled"))
        policy_out: Obj = {k: cdn[k] for k in _CDN_KEYS if k in cdn}
        cache = cdn.get("cachePolicy")
        if cache:
            policy_out["cacheKeyPolicy"] = {
                **{k: bool(cache[k]) for k in ("includeHost", "includeProtocol", "includeQueryString") if k in cache},
                **({"queryStringBlacklist": cache["queryStringBlacklist"]} if cache.get("queryStringBlacklist")
                   else {}),
                **({"queryStringWhitelist": cache["queryStringWhitelist"]} if cache.get("queryStringWhitelist")
                   else {})}
        if policy_out:
            out["cdnPolicy"] = policy_out
    iap = spec.get("iap")
    if iap is not None:
        out["iap"] = {"enabled": bool(iap.get("enabled"))}
        secret_name = (iap.get("oauthclientCredentials") or {}).get("secretName")
        if iap.get("enabled") and secret_name:
            data = (secret(str(secret_name)) or {}).get("data") or {}
            try:
                client_id, client_secret = (base64.b64decode(data[k]).decode() for k in ("client_id",
                                                                                          "client_secret"))
            except (KeyError, ValueError):
                errors.append(f"BackendConfig {bc_name(bc)}: IAP Secret {secret_name} has no client_id and "
                              "client_secret")
            else:
                out["iap"].update(oauth2ClientId=client_id, oauth2ClientSecret=client_secret)
    return out, errors


def frontend_config_fields(fc: Obj | None, project: str) -> Obj:
    """Target HTTPS proxy fields for a FrontendConfig (``None``: none attached)."""
    policy = ((fc or {}).get("spec") or {}).get("sslPolicy")
    return {"sslPolicy": f"{API}/projects/{project}/global/sslPolicies/{policy}"} if policy else {}


def bc_name(bc: Obj | None) -> str:
    meta = (bc or {}).get("metadata") or {}
    return f"{meta.get('namespace', '')}/{meta.get('name', '')}"


def backend_config_name(mcs: Obj) -> str | None:
    """The BackendConfig a MultiClusterService's annotation names (its default, else its first port's)."""
    import json

    notes = mcs["metadata"].get("annotations") or {}
    raw = notes.get("cloud.google.com/backend-config") or notes.get("beta.cloud.google.com/backend-config")
    if not raw:
        return None
    try:
        ref = json.loads(raw)
    except ValueError:
        return None
    name = ref.get("default") or next(iter((ref.get("ports") or {}).values()), None)
    return str(name) if name else None
