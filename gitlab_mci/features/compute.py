"""Self-managed mode: the options as Compute fields, per resource kind; what each scheme allows; resets to the
default when an option is removed; and the fields Compute sets only through a custom method.

Google's API reference (compute.v1): ``securityPolicy`` and ``edgeSecurityPolicy`` are output-only on a backend
service (``setSecurityPolicy``/``setEdgeSecurityPolicy`` set them); a target HTTPS proxy's ``sslPolicy``,
``quicOverride`` and ``certificateMap`` have ``setSslPolicy``/``setQuicOverride``/``setCertificateMap``.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from gitlab_mci.errors import UserError
from gitlab_mci.features.model import Features

if TYPE_CHECKING:
    from gitlab_mci.lb.engine import Change, ComputeApi

API = "https://www.googleapis.com/compute/v1/"
CERTIFICATE_MANAGER = "//certificatemanager.googleapis.com/"
# Options the classic scheme (EXTERNAL) does not have (Google: "EXTERNAL_MANAGED only").
MANAGED_ONLY = {"localityLbPolicy": "localityLbPolicy", "outlierDetection": "outlierDetection",
                "sessionAffinity.HEADER_FIELD": "sessionAffinity HEADER_FIELD",
                "sessionAffinity.HTTP_COOKIE": "sessionAffinity HTTP_COOKIE"}
# Affinity by a hash of a header or cookie needs a hashing locality policy (Google: RING_HASH or MAGLEV).
_HASHING = ("RING_HASH", "MAGLEV")


# Google's Cloud CDN rules (cache modes, TTL overrides, negative caching).
_NEGATIVE_CODES = (300, 301, 302, 307, 308, 404, 405, 410, 421, 451, 501)


def check_mode(features: Features, unsupported: dict[str, str], mode: str) -> None:
    """The values' own rules, then each option ``mode`` cannot carry refused by name (with why, and where it came
    from); the hosted and gateway modes share this."""
    check_values(features)
    for key, why in unsupported.items():
        if features.get(key) is not None:
            raise UserError(f"{key} (from {features.origin[key]}) is not available in {mode} mode: {why}; use "
                            "gitlab-mci lb (self-managed) for it")


def check_values(features: Features) -> None:
    """Rules across fields that Compute enforces, checked before any write (Compute would refuse mid-apply)."""
    aff = features.get("sessionAffinity") or {}
    if aff.get("affinityCookieTtlSec") and aff.get("affinityType") not in ("GENERATED_COOKIE", "HTTP_COOKIE"):
        raise UserError(f"sessionAffinity.affinityCookieTtlSec (from {features.origin['sessionAffinity']}) needs "
                        "affinityType GENERATED_COOKIE or HTTP_COOKIE")
    cdn = features.get("cdn") or {}
    if cdn.get("enabled") and (features.get("iap") or {}).get("enabled"):
        both = features.origin["cdn"], features.origin["iap"]
        named = f"cdn and iap (from {both[0]})" if both[0] == both[1] else \
            f"cdn (from {both[0]}) and iap (from {both[1]})"
        raise UserError(f"{named} exclude each other: Google's IAP is incompatible with Cloud CDN on one backend "
                        "service; give one")
    if not cdn.get("enabled"):
        return
    where = f"cdn (from {features.origin['cdn']})"
    mode = cdn.get("cacheMode", "CACHE_ALL_STATIC")
    ttls = [k for k in ("defaultTtl", "maxTtl", "clientTtl") if k in cdn]
    if mode == "USE_ORIGIN_HEADERS" and ttls:
        raise UserError(f"{where}: cacheMode USE_ORIGIN_HEADERS takes no {ttls[0]} (the origin's headers decide)")
    if mode == "FORCE_CACHE_ALL" and "maxTtl" in cdn:
        raise UserError(f"{where}: cacheMode FORCE_CACHE_ALL takes no maxTtl")
    if "defaultTtl" in cdn and "maxTtl" in cdn and cdn["defaultTtl"] > cdn["maxTtl"]:
        raise UserError(f"{where}: defaultTtl {cdn['defaultTtl']} is above maxTtl {cdn['maxTtl']}")
    if cdn.get("negativeCachingPolicy") and not cdn.get("negativeCaching"):
        raise UserError(f"{where}: negativeCachingPolicy needs negativeCaching: true")
    for entry in cdn.get("negativeCachingPolicy") or []:
        if entry["code"] not in _NEGATIVE_CODES:
            raise UserError(f"{where}: negativeCachingPolicy code {entry['code']} is not one Cloud CDN caches "
                            f"({', '.join(map(str, _NEGATIVE_CODES))})")


def check_scheme(features: Features, scheme: str) -> None:
    """Refuse, by name, what the scheme does not support (and what Compute refuses across fields)."""
    check_values(features)
    if scheme == "EXTERNAL_MANAGED":
        return
    affinity = (features.get("sessionAffinity") or {}).get("affinityType")
    for key in ("localityLbPolicy", "outlierDetection"):
        if features.get(key) is not None:
            raise UserError(f"{key} (from {features.origin[key]}) needs --scheme EXTERNAL_MANAGED: the classic "
                            f"{scheme} load balancer does not support it")
    if affinity in ("HEADER_FIELD", "HTTP_COOKIE"):
        raise UserError(f"sessionAffinity {affinity} (from {features.origin['sessionAffinity']}) needs --scheme "
                        f"EXTERNAL_MANAGED: the classic {scheme} load balancer offers NONE, CLIENT_IP and "
                        "GENERATED_COOKIE")


def _policy(project: str, name: str) -> str:
    return f"{API}projects/{project}/global/securityPolicies/{name}"


def backend_service(features: Features, project: str, iap: tuple[str, str] | None = None) -> dict[str, Any]:
    """The backend service fields the options set (``iap``: the OAuth client id and secret, read before)."""
    out: dict[str, Any] = {}
    f = features.get
    if f("securityPolicy"):
        out["securityPolicy"] = _policy(project, f("securityPolicy")["name"])
    if f("edgeSecurityPolicy"):
        out["edgeSecurityPolicy"] = _policy(project, f("edgeSecurityPolicy"))
    if f("logging") is not None:
        log = f("logging")
        enable = bool(log.get("enable", True))
        # Compute takes a sample rate only with logging on, else only its default 1.0 (which a patch needs, as
        # it merges into the rate held).
        out["logConfig"] = {"enable": enable, "sampleRate": float(log.get("sampleRate", 1.0)) if enable else 1.0}
    if f("sessionAffinity"):
        aff = f("sessionAffinity")
        kind = aff["affinityType"]
        out["sessionAffinity"] = kind
        if "affinityCookieTtlSec" in aff:
            out["affinityCookieTtlSec"] = aff["affinityCookieTtlSec"]
        if kind == "HEADER_FIELD":
            if not aff.get("headerName"):
                raise UserError("sessionAffinity HEADER_FIELD needs the header's name (--affinity-header, or "
                                "sessionAffinity.headerName)")
            out["consistentHash"] = {"httpHeaderName": aff["headerName"]}
        if kind == "HTTP_COOKIE":
            if not aff.get("cookieName"):
                raise UserError("sessionAffinity HTTP_COOKIE needs the cookie's name (--affinity-cookie, or "
                                "sessionAffinity.cookieName)")
            out["consistentHash"] = {"httpCookie": {"name": aff["cookieName"],
                                                    "ttl": {"seconds": aff.get("affinityCookieTtlSec", 0)}}}
        if kind in ("HEADER_FIELD", "HTTP_COOKIE"):
            policy = f("localityLbPolicy") or "RING_HASH"
            if policy not in _HASHING:
                raise UserError(f"sessionAffinity {kind} needs localityLbPolicy RING_HASH or MAGLEV, not {policy}")
            out["localityLbPolicy"] = policy
    if f("connectionDraining"):
        out["connectionDraining"] = {"drainingTimeoutSec": f("connectionDraining")["drainingTimeoutSec"]}
    if f("customRequestHeaders"):
        out["customRequestHeaders"] = list(f("customRequestHeaders")["headers"])
    if f("customResponseHeaders"):
        out["customResponseHeaders"] = list(f("customResponseHeaders")["headers"])
    if f("backendProtocol"):
        out["protocol"] = f("backendProtocol")
    if f("localityLbPolicy") and "localityLbPolicy" not in out:
        out["localityLbPolicy"] = f("localityLbPolicy")
    if f("outlierDetection"):
        out["outlierDetection"] = dict(f("outlierDetection"))
    if f("cdn") is not None:
        cdn = f("cdn")
        out["enableCDN"] = bool(cdn["enabled"])
        if cdn["enabled"]:
            policy = {k: cdn[k] for k in ("cacheMode", "clientTtl", "defaultTtl", "maxTtl", "negativeCaching",
                                          "negativeCachingPolicy", "requestCoalescing", "serveWhileStale")
                      if k in cdn}
            if "signedUrlCacheMaxAgeSec" in cdn:  # int64: a string in Compute's JSON
                policy["signedUrlCacheMaxAgeSec"] = str(cdn["signedUrlCacheMaxAgeSec"])
            if cdn.get("cachePolicy"):
                policy["cacheKeyPolicy"] = dict(cdn["cachePolicy"])
            if policy:
                out["cdnPolicy"] = policy
    if f("iap") is not None and iap is not None:
        client_id, secret = iap
        digest = hashlib.sha256(secret.encode()).hexdigest()
        _SECRETS[digest] = secret
        out["iap"] = {"enabled": bool(f("iap")["enabled"]), "oauth2ClientId": client_id,
                      "oauth2ClientSecretSha256": digest}
    elif f("iap") is not None and not f("iap").get("enabled"):
        out["iap"] = {"enabled": False}
    return out


# The IAP OAuth client secrets read this run, by their SHA-256: a plan (and anything it prints) carries only the
# digest, which Compute also answers with; the secret goes into the write's body only (see writable).
_SECRETS: dict[str, str] = {}


def health_check(features: Features, body: dict[str, Any]) -> dict[str, Any]:
    """The health check of a backend service speaks its protocol (HTTP2 and HTTPS checks for those backends)."""
    protocol = features.get("backendProtocol") or "HTTP"
    if protocol == "HTTP":
        return body
    out = dict(body)
    spec = out.pop("httpHealthCheck")
    out["type"] = protocol
    out[{"HTTPS": "httpsHealthCheck", "HTTP2": "http2HealthCheck"}[protocol]] = spec
    return out


def https_proxy(features: Features, project: str) -> dict[str, Any]:
    """The target HTTPS proxy fields the options set."""
    out: dict[str, Any] = {}
    if features.get("sslPolicy"):
        out["sslPolicy"] = f"{API}projects/{project}/global/sslPolicies/{features.get('sslPolicy')}"
    if features.get("quicOverride"):
        out["quicOverride"] = features.get("quicOverride")
    if features.get("certificateMap"):
        out["certificateMap"] = certificate_map(project, features.get("certificateMap"))
    return out


def certificate_map(project: str, name: str) -> str:
    return f"{CERTIFICATE_MANAGER}projects/{project}/locations/global/certificateMaps/{name}"


# Fields the options manage, per collection: their default, and whether a value read from Compute is the default
# (so an option removed returns its field to the default, and an untouched resource reads as unchanged).
def _absent(value: Any) -> bool:
    return value in (None, "", [], {})


_DEFAULTS: dict[str, dict[str, tuple[Any, Callable[[Any], bool]]]] = {
    "backendServices": {
        "securityPolicy": (None, _absent),
        "edgeSecurityPolicy": (None, _absent),
        "logConfig": ({"enable": False, "sampleRate": 1.0}, lambda v: not (v or {}).get("enable")),
        "sessionAffinity": ("NONE", lambda v: v in (None, "", "NONE")),
        "affinityCookieTtlSec": (0, lambda v: not v),
        # Compute's default for a backend service made through the API (as gitlab-mci makes them) is 0 s.
        "connectionDraining": ({"drainingTimeoutSec": 0}, lambda v: not (v or {}).get("drainingTimeoutSec")),
        "consistentHash": (None, _absent),
        "customRequestHeaders": ([], _absent),
        "customResponseHeaders": ([], _absent),
        "localityLbPolicy": (None, lambda v: v in (None, "", "ROUND_ROBIN")),
        "outlierDetection": (None, _absent),
        "enableCDN": (False, lambda v: not v),
        "iap": ({"enabled": False}, lambda v: not (v or {}).get("enabled")),
    },
    "targetHttpsProxies": {
        "sslPolicy": (None, _absent),
        "quicOverride": ("NONE", lambda v: v in (None, "", "NONE")),
        "certificateMap": (None, _absent),
    },
}


def resets(collection: str, body: dict[str, Any], have: dict[str, Any]) -> dict[str, tuple[Any, Any]]:
    """Fields an option no longer sets but Compute holds with a non-default value: (held, default)."""
    out: dict[str, tuple[Any, Any]] = {}
    for key, (default, is_default) in _DEFAULTS.get(collection, {}).items():
        if key not in body and not is_default(have.get(key)):
            out[key] = (have.get(key), default)
    return out


def same(collection: str, key: str, want: Any, have: Any) -> bool | None:
    """Whether a managed field holds what is wanted, where the generic comparison cannot tell (None: ask it)."""
    if collection == "backendServices" and key == "iap":
        have = redacted(collection, key, have) or {}
        if not want.get("enabled"):
            return not have.get("enabled")
        return bool(have.get("enabled")) == bool(want.get("enabled")) and \
            have.get("oauth2ClientId") == want.get("oauth2ClientId") and \
            have.get("oauth2ClientSecretSha256") == want.get("oauth2ClientSecretSha256")
    if collection == "backendServices" and key == "logConfig":
        have = have or {}
        if not want.get("enable"):
            return not have.get("enable")  # the rate of logging turned off is not compared
        return bool(have.get("enable")) and float(have.get("sampleRate", 1.0)) == float(want["sampleRate"])
    return None


# A write of these fields goes through the custom method, not the resource's patch.
_CUSTOM: dict[str, dict[str, tuple[str, str]]] = {
    "backendServices": {"securityPolicy": ("setSecurityPolicy", "securityPolicy"),
                        "edgeSecurityPolicy": ("setEdgeSecurityPolicy", "securityPolicy")},
    "targetHttpsProxies": {"sslPolicy": ("setSslPolicy", "sslPolicy"),
                           "quicOverride": ("setQuicOverride", "quicOverride"),
                           "certificateMap": ("setCertificateMap", "certificateMap")},
}


def custom_fields(collection: str) -> tuple[str, ...]:
    return tuple(_CUSTOM.get(collection, {}))


# Output-only on the resource itself: never in its insert or patch body, always through the custom method.
_OUTPUT_ONLY = {"backendServices": ("securityPolicy", "edgeSecurityPolicy")}


def writable(collection: str, body: dict[str, Any], *, patch: bool) -> dict[str, Any]:
    """The body of an insert (``patch`` False) or patch, without what only a custom method sets."""
    drop = set(_CUSTOM.get(collection, {}) if patch else _OUTPUT_ONLY.get(collection, ()))
    out = {k: v for k, v in body.items() if k not in drop}
    iap = out.get("iap") or {}
    if iap.get("oauth2ClientSecretSha256") in _SECRETS:
        out["iap"] = {**{k: v for k, v in iap.items() if k != "oauth2ClientSecretSha256"},
                      "oauth2ClientSecret": _SECRETS[iap["oauth2ClientSecretSha256"]]}
    return out


def clears(change: Change) -> bool:
    """Whether the change removes a message or list field (an option gone): a patch cannot say "no value" for one
    (null is refused; an empty list may mean "unchanged"), so the resource is written whole (update) from what it
    holds, without that field."""
    return change.action == "update" and any(
        new in (None, []) and old not in (None, []) and key not in _CUSTOM.get(change.collection, {})
        for key, (old, new) in change.fields.items())


def replacing(fresh: dict[str, Any], body: dict[str, Any]) -> dict[str, Any]:
    """The whole resource for an update: as just read (what others set is kept), our fields over it, and the
    fields we clear left out (Compute's update resets what is absent to its default)."""
    out = {k: v for k, v in fresh.items() if k not in body and k != "fingerprint"}
    out.update({k: v for k, v in body.items() if v not in (None, [])})
    return out


def scrub(text: str) -> str:
    """An error message with any IAP client secret of this run cut out (Compute quotes refused values)."""
    for secret in _SECRETS.values():
        text = text.replace(secret, "<redacted>")
    return text


def redacted(collection: str, key: str, value: Any) -> Any:
    """A value read from Compute as a plan may show it: never an IAP client secret (Compute answers with its
    SHA-256; a stand-in that echoes the secret is shown the digest too)."""
    if collection == "backendServices" and key == "iap" and isinstance(value, dict) and "oauth2ClientSecret" in value:
        out = {k: v for k, v in value.items() if k != "oauth2ClientSecret"}
        out["oauth2ClientSecretSha256"] = hashlib.sha256(str(value["oauth2ClientSecret"]).encode()).hexdigest()
        return out
    return value


def run_custom(api: ComputeApi, change: Change) -> None:
    """After the resource's own insert or patch: each field Compute sets only through a custom method (on a
    create: those the insert could not carry)."""
    for key, (method, field_name) in _CUSTOM.get(change.collection, {}).items():
        if change.action == "create" and (key not in _OUTPUT_ONLY.get(change.collection, ()) or
                                          not change.body.get(key)):
            continue
        if change.action != "create" and key not in change.fields:
            continue
        value = change.body.get(key)
        body = {field_name: value} if value else {}
        # These custom methods live under global/ for both kinds (unlike a proxy's setUrlMap).
        what = f"{method} on {change.name}"
        op = api.retrying(what, functools.partial(api.rest.post, f"global/{change.collection}/{change.name}/{method}",
                                                  body))
        api.wait(what, op)


def secret_for_write(body: dict[str, Any], iap: tuple[str, str] | None) -> dict[str, Any]:
    """The body to send: the IAP client secret itself in place of its digest (never kept in a plan)."""
    if "iap" not in body or iap is None:
        return body
    out = dict(body)
    out["iap"] = {k: v for k, v in body["iap"].items() if k != "oauth2ClientSecretSha256"}
    out["iap"]["oauth2ClientSecret"] = iap[1]
    return out
