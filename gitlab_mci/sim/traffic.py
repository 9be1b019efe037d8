"""What the simulated load balancer does with a backend service's production options, per request.

The data plane (dataplane.py) routes; this module decides, for one request to one backend service: whether Cloud
Armor lets it through (``SRC_IPS_V1`` rules evaluated; other expressions validated by the emulator and passed),
which backend its session affinity pins it to (GENERATED_COOKIE's ``GCLB`` cookie, CLIENT_IP, HEADER_FIELD,
HTTP_COOKIE), which custom request headers the pod sees and which custom response headers the client gets (Google's
``{variables}`` expanded with the simulator's facts), and how long a request on a removed backend may still run
(``connectionDraining.drainingTimeoutSec``). Facts and sources: docs/simulator-features.md.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from http.cookies import CookieError, SimpleCookie
from typing import Any, TypeVar

from gitlab_mci.sim.compute import features
from gitlab_mci.sim.listeners import Incoming

Obj = dict[str, Any]
COOKIE = "GCLB"  # the cookie Google's Application Load Balancers set for GENERATED_COOKIE affinity
T = TypeVar("T")

# What the simulator answers for Google's header variables (a real front end knows the client's location).
SIM_FACTS = {"client_region": "US", "client_region_subdivision": "USCA", "client_city": "Mountain View",
             "client_city_lat_long": "37.386051,-122.083855", "client_rtt_msec": "1", "client_asn": "15169",
             "user_agent_family": "OTHER", "device_request_type": "DESKTOP", "cdn_cache_status": "",
             "cdn_cache_id": "", "client_cert_present": "false"}


@dataclass(frozen=True)
class ServiceOptions:
    """A backend service's options as the data plane applies them."""

    affinity: str = "NONE"
    cookie_ttl: int = 0
    header_name: str = ""  # HEADER_FIELD: consistentHash.httpHeaderName
    cookie_name: str = ""  # HTTP_COOKIE: consistentHash.httpCookie.name
    request_headers: tuple[str, ...] = ()
    response_headers: tuple[str, ...] = ()
    draining: float = 0.0  # connectionDraining.drainingTimeoutSec
    armor: Obj = field(default_factory=dict)  # the attached Cloud Armor policy (empty: none)
    edge_armor: Obj = field(default_factory=dict)  # the edge security policy: evaluated before the cache
    cdn_mode: str = ""  # cdnPolicy.cacheMode when enableCDN, else ""
    cdn_ttl: float = 0.0  # cdnPolicy.defaultTtl
    iap_client: str | None = None  # IAP enabled: its OAuth client ID ("" for Google's managed client); None: off


def options(service: Obj, policies: dict[str, Obj]) -> ServiceOptions:
    """The options of a backend service resource; ``policies`` maps security policy URL → policy."""
    consistent = service.get("consistentHash") or {}
    return ServiceOptions(
        affinity=str(service.get("sessionAffinity") or "NONE"),
        cookie_ttl=int(service.get("affinityCookieTtlSec") or 0),
        header_name=str(consistent.get("httpHeaderName") or ""),
        cookie_name=str((consistent.get("httpCookie") or {}).get("name") or ""),
        request_headers=tuple(service.get("customRequestHeaders") or ()),
        response_headers=tuple(service.get("customResponseHeaders") or ()),
        draining=float((service.get("connectionDraining") or {}).get("drainingTimeoutSec") or 0),
        armor=policies.get(str(service.get("securityPolicy") or ""), {}),
        edge_armor=policies.get(str(service.get("edgeSecurityPolicy") or ""), {}),
        cdn_mode=str((service.get("cdnPolicy") or {}).get("cacheMode") or "CACHE_ALL_STATIC")
        if service.get("enableCDN") else "",
        cdn_ttl=float((service.get("cdnPolicy") or {}).get("defaultTtl") or 3600),
        iap_client=str((service.get("iap") or {}).get("oauth2ClientId") or "")
        if (service.get("iap") or {}).get("enabled") else None,
    )


def armor_status(opts: ServiceOptions | None, incoming: Incoming, *, edge: bool = False) -> int | None:
    """The status Cloud Armor answers this request with, or ``None`` to let it through. The edge policy applies to
    every request, before Cloud CDN; the backend policy only to requests that go to the backends (cache misses)."""
    policy = (opts.edge_armor if edge else opts.armor) if opts is not None else {}
    if not policy:
        return None
    return features.armor_verdict(policy, incoming.client)


IAP_USER = "sim-user@example.com"


def iap(opts: ServiceOptions | None, incoming: Incoming, url: str) -> tuple[str | None, dict[str, str]]:
    """Identity-Aware Proxy: (the sign-in redirect for a request without credentials, or None to let it through;
    the identity headers IAP adds for the backend). The simulator accepts any bearer token as a signed-in user."""
    if opts is None or opts.iap_client is None:
        return None, {}
    auth = next((v for k, v in incoming.headers.items() if k.lower() == "authorization"), "")
    if not auth.lower().startswith("bearer ") or not auth[7:].strip():
        from urllib.parse import urlencode

        query = urlencode({"client_id": opts.iap_client or "iap-managed-client", "response_type": "code",
                           "scope": "openid email", "redirect_uri": url})
        return f"https://accounts.google.com/o/oauth2/v2/auth?{query}", {}
    return None, {"X-Goog-Authenticated-User-Email": f"accounts.google.com:{IAP_USER}",
                  "X-Goog-Authenticated-User-Id": "accounts.google.com:100000000000000000001"}


# What CACHE_ALL_STATIC caches without origin headers (the simulated app answers JSON, which is dynamic content).
_STATIC = (".css", ".js", ".mjs", ".png", ".jpg", ".jpeg", ".gif", ".svg", ".ico", ".webp", ".avif", ".woff",
           ".woff2", ".ttf", ".otf", ".mp4", ".webm", ".mp3", ".pdf")


def cache_status(opts: ServiceOptions | None, method: str, path: str) -> str:
    """``{cdn_cache_status}`` before the cache is looked at: "disabled", "uncacheable", or "miss" (may become a
    hit). FORCE_CACHE_ALL caches every successful GET; CACHE_ALL_STATIC static content only; USE_ORIGIN_HEADERS
    needs caching headers from the origin, which the simulated app does not send."""
    if opts is None or not opts.cdn_mode:
        return "disabled"
    if method not in ("GET", "HEAD"):
        return "uncacheable"
    if opts.cdn_mode == "FORCE_CACHE_ALL":
        return "miss"
    if opts.cdn_mode == "CACHE_ALL_STATIC" and path.split("?", 1)[0].lower().endswith(_STATIC):
        return "miss"
    return "uncacheable"


def facts(incoming: Incoming, cache: str = "disabled") -> dict[str, str]:
    return {**SIM_FACTS, "cdn_cache_status": cache, "client_ip_address": incoming.client,
            "client_port": str(incoming.client_port),
            "client_encrypted": "true" if incoming.tls_version else "false",
            "client_protocol": incoming.protocol, "tls_version": incoming.tls_version,
            "tls_cipher_suite": incoming.tls_cipher, "tls_sni_hostname": incoming.sni,
            "origin_request_header": incoming.headers.get("origin", "")}


def request_headers(opts: ServiceOptions | None, incoming: Incoming,
                    extra: dict[str, str] | None = None) -> dict[str, str]:
    """The headers the backend sees: the client's, IAP's identity headers (``extra``), then the service's custom
    request headers (which replace a client header of the same name, as Google's do)."""
    out = {**incoming.headers, **(extra or {})}
    if opts is not None:
        values = facts(incoming)
        for name, value in features.parse_headers(list(opts.request_headers)):
            for existing in [k for k in out if k.lower() == name.lower()]:
                del out[existing]
            out[name] = features.expand_header(value, values)
    return out


def response_headers(opts: ServiceOptions | None, incoming: Incoming, cache: str = "disabled") -> dict[str, str]:
    if opts is None:
        return {}
    values = facts(incoming, cache)
    return {name: features.expand_header(value, values)
            for name, value in features.parse_headers(list(opts.response_headers))}


def affinity_key(opts: ServiceOptions | None, incoming: Incoming) -> str | None:
    """The value a request's backend is hashed from (CLIENT_IP, HEADER_FIELD, HTTP_COOKIE), or ``None``."""
    if opts is None:
        return None
    if opts.affinity == "CLIENT_IP":
        return incoming.client
    if opts.affinity == "HEADER_FIELD" and opts.header_name:
        value = next((v for k, v in incoming.headers.items() if k.lower() == opts.header_name.lower()), None)
        return None if value is None else f"h:{value}"
    if opts.affinity == "HTTP_COOKIE" and opts.cookie_name:
        value = cookies(incoming).get(opts.cookie_name)
        return None if value is None else f"c:{value}"
    return None


def cookies(incoming: Incoming) -> dict[str, str]:
    jar: SimpleCookie = SimpleCookie()
    try:
        jar.load(incoming.headers.get("cookie") or next((v for k, v in incoming.headers.items()
                                                          if k.lower() == "cookie"), ""))
    except CookieError:
        return {}
    return {k: m.value for k, m in jar.items()}


def pinned(opts: ServiceOptions | None, incoming: Incoming) -> str | None:
    """The backend key a GENERATED_COOKIE request's ``GCLB`` cookie names, if any."""
    if opts is None or opts.affinity != "GENERATED_COOKIE":
        return None
    value = cookies(incoming).get(COOKIE)
    if not value:
        return None
    try:
        return base64.urlsafe_b64decode(value.encode() + b"==").decode()
    except (ValueError, UnicodeDecodeError):
        return None


def set_cookie(opts: ServiceOptions | None, backend_key: str, incoming: Incoming) -> dict[str, str]:
    """The ``Set-Cookie`` that pins later requests to ``backend_key`` (GENERATED_COOKIE only; not sent again when
    the request already carried that cookie). ``affinityCookieTtlSec`` 0 makes it a session cookie."""
    if opts is None or opts.affinity != "GENERATED_COOKIE" or pinned(opts, incoming) == backend_key:
        return {}
    value = base64.urlsafe_b64encode(backend_key.encode()).decode().rstrip("=")
    cookie = f"{COOKIE}={value}; path=/; HttpOnly"
    if opts.cookie_ttl:
        cookie += f"; Max-Age={opts.cookie_ttl}"
    return {"Set-Cookie": cookie}


def consistent_pick(key: str, items: Sequence[T], name: Any) -> T:
    """Rendezvous hashing: the same key picks the same item while it is among ``items``; losing one item moves
    only the keys that were on it."""
    def score(item: T) -> bytes:
        return hashlib.sha256(f"{key}|{name(item)}".encode()).digest()
    return max(items, key=score)
