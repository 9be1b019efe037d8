"""Compute's documented rules for the production load balancer features: Cloud Armor security policies, SSL
policies, and the backend service / target HTTPS proxy / address fields that depend on the load balancing scheme.

The discovery document checks each field's type and enum; these are the rules Google states in prose (the field
descriptions of the discovery document, and the load balancing, Cloud CDN, Cloud Armor and custom headers guides).
Facts and sources: docs/simulator-features.md. Every refusal is Compute's HTTP 400 shape, "Invalid value for field
'resource.X': 'V'. <why>" (reason ``invalid``); Google's exact explanations are not published, ours name the rule.
"""

from __future__ import annotations

import copy
import hashlib
import ipaddress
import re
from collections.abc import Callable
from typing import Any

Obj = dict[str, Any]

DEFAULT_RULE_PRIORITY = 2147483647
MAX_SRC_IP_RANGES = 10  # SecurityPolicyRuleMatcherConfig.srcIpRanges: "Maximum number of src_ip_ranges allowed is 10"
MAX_TTL = 31622400  # cdnPolicy TTLs: "The maximum allowed value is 31,622,400s (1 year)"
MAX_COOKIE_TTL = 1209600  # affinityCookieTtlSec: "The maximum allowed value is two weeks (1,209,600)"
MAX_DRAINING = 3600  # connectionDraining.drainingTimeoutSec: 0-3600 (backend service guide)

# Fields of a global backend service that only the global external Application Load Balancer (EXTERNAL_MANAGED,
# Envoy-based) supports; the classic one (EXTERNAL) refuses them. Sources in docs/simulator-features.md.
MANAGED_ONLY_FIELDS = ("outlierDetection", "customMetrics", "consistentHash", "circuitBreakers",
                       "maxStreamDuration", "localityLbPolicies")
MANAGED_ONLY_AFFINITIES = ("HEADER_FIELD", "HTTP_COOKIE", "STRONG_COOKIE_AFFINITY")
ALB_AFFINITIES = ("NONE", "CLIENT_IP", "GENERATED_COOKIE", *MANAGED_ONLY_AFFINITIES)
# Global external backend services: the Application Load Balancers' protocols, and TCP/SSL for the proxy Network
# Load Balancers (which a URL map cannot use).
ALB_PROTOCOLS = {"EXTERNAL": ("HTTP", "HTTPS", "HTTP2", "TCP", "SSL"),
                 "EXTERNAL_MANAGED": ("HTTP", "HTTPS", "HTTP2", "H2C", "TCP", "SSL")}
URL_MAP_PROTOCOLS = ("HTTP", "HTTPS", "HTTP2", "H2C")
CACHE_DEFAULTS = {"CACHE_ALL_STATIC": {"defaultTtl": 3600, "maxTtl": 86400, "clientTtl": 3600},
                  "FORCE_CACHE_ALL": {"defaultTtl": 3600, "clientTtl": 3600}, "USE_ORIGIN_HEADERS": {}}

# Variables a custom request/response header value may hold (Google's "Creating custom headers" guide).
HEADER_VARIABLES = frozenset({
    "cdn_cache_id", "cdn_cache_status", "origin_request_header", "client_rtt_msec", "client_region",
    "client_region_subdivision", "client_city", "client_city_lat_long", "client_ip_address", "client_port",
    "client_encrypted", "client_protocol", "server_ip_address", "server_port", "tls_sni_hostname", "tls_version",
    "tls_cipher_suite", "tls_ja3_fingerprint", "tls_ja4_fingerprint", "user_agent_family", "device_request_type",
    "client_asn", "client_cert_present", "client_cert_chain_verified", "client_cert_error",
    "client_cert_sha256_fingerprint", "client_cert_serial_number", "client_cert_spiffe_id", "client_cert_uri_sans",
    "client_cert_dnsname_sans", "client_cert_valid_not_before", "client_cert_valid_not_after", "client_cert_leaf",
    "client_cert_chain",
})
_TOKEN = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")  # RFC 7230 header field name
_HOP_BY_HOP = {"keep-alive", "transfer-encoding", "te", "connection", "trailer", "upgrade"}
_RESERVED_PREFIXES = ("x-google", "x-goog-", "x-gfe", "x-amz-")
_ACTION = re.compile(r"^(allow|deny|deny\((403|404|502)\)|redirect|rate_based_ban|throttle)$")
TLS_VERSIONS = ("TLS_1_0", "TLS_1_1", "TLS_1_2", "TLS_1_3")
# Where the emulator takes global IPv6 VIPs from: the documentation prefix (RFC 3849), never routed anywhere; the
# data plane serves them on ::1.
IPV6_POOL = "2001:db8:6d63::/64"


class FeatureError(Exception):
    """A request Compute refuses: ``status`` (400 unless said) with ``reason``."""

    def __init__(self, message: str, reason: str = "invalid", status: int = 400) -> None:
        super().__init__(message)
        self.reason, self.status = reason, status


def _invalid(field: str, value: Any, why: str) -> FeatureError:
    shown = value if isinstance(value, str | int | float) else _short(value)
    return FeatureError(f"Invalid value for field 'resource.{field}': '{shown}'. {why}")


def _short(value: Any) -> str:
    import json

    return json.dumps(value, separators=(",", ":"))[:200]


# --- Cloud Armor security policies ----------------------------------------------------------------------------------

def default_rule() -> Obj:
    """The rule every security policy gets at the lowest priority: allow everything (Cloud Armor's default)."""
    return {"kind": "compute#securityPolicyRule", "description": "default rule", "priority": DEFAULT_RULE_PRIORITY,
            "action": "allow", "preview": False,
            "match": {"versionedExpr": "SRC_IPS_V1", "config": {"srcIpRanges": ["*"]}}}


def security_policy_defaults(obj: Obj) -> None:
    obj.setdefault("type", "CLOUD_ARMOR")
    rules = obj.setdefault("rules", [])
    for rule in rules:
        rule.setdefault("kind", "compute#securityPolicyRule")
        rule.setdefault("preview", False)
    if not any(r.get("priority") == DEFAULT_RULE_PRIORITY for r in rules):
        rules.append(default_rule())
    rules.sort(key=lambda r: int(r.get("priority", 0)))


def check_security_policy(body: Obj) -> None:
    ptype = body.get("type", "CLOUD_ARMOR")
    if ptype not in ("CLOUD_ARMOR", "CLOUD_ARMOR_EDGE"):
        raise _invalid("type", ptype, "A global security policy for a backend service is CLOUD_ARMOR or "
                       "CLOUD_ARMOR_EDGE (CLOUD_ARMOR_NETWORK policies are regional).")
    seen: set[int] = set()
    for i, rule in enumerate(body.get("rules") or []):
        check_rule(rule, f"rules[{i}]")
        priority = int(rule["priority"])
        if priority in seen:
            raise _invalid(f"rules[{i}].priority", priority, "Two rules of a security policy cannot have the same "
                           "priority.")
        seen.add(priority)
        if ptype == "CLOUD_ARMOR_EDGE" and "expr" in (rule.get("match") or {}):
            raise _invalid(f"rules[{i}].match.expr", _short(rule["match"]["expr"]), "Edge security policies "
                           "support only basic (SRC_IPS_V1) and origin region matches.")


def check_rule(rule: Obj, where: str = "rule") -> None:
    """One Cloud Armor rule: priority in [0, 2147483647], a known action, a match that is complete."""
    priority = rule.get("priority")
    if priority is None:
        raise _invalid(f"{where}.priority", "", "A rule needs a priority.")
    if not 0 <= int(priority) <= DEFAULT_RULE_PRIORITY:
        raise _invalid(f"{where}.priority", priority, f"Must be in [0, {DEFAULT_RULE_PRIORITY}].")
    action = str(rule.get("action") or "")
    if not _ACTION.match(action):
        raise _invalid(f"{where}.action", action, "Must be allow, deny(403), deny(404), deny(502), redirect, "
                       "rate_based_ban or throttle.")
    if action in ("rate_based_ban", "throttle") and not rule.get("rateLimitOptions"):
        raise _invalid(f"{where}.rateLimitOptions", "", f"Action {action} requires rateLimitOptions.")
    if action == "redirect" and not rule.get("redirectOptions"):
        raise _invalid(f"{where}.redirectOptions", "", "Action redirect requires redirectOptions.")
    match = rule.get("match")
    if not isinstance(match, dict) or not match:
        raise _invalid(f"{where}.match", "", "A rule needs a match (versionedExpr with config, or expr).")
    if "versionedExpr" in match:
        ranges = (match.get("config") or {}).get("srcIpRanges") or []
        if not ranges:
            raise _invalid(f"{where}.match.config.srcIpRanges", "", "SRC_IPS_V1 requires config.srcIpRanges.")
        if len(ranges) > MAX_SRC_IP_RANGES:
            raise _invalid(f"{where}.match.config.srcIpRanges", len(ranges),
                           f"At most {MAX_SRC_IP_RANGES} source IP ranges per rule.")
        for j, r in enumerate(ranges):
            if r != "*":
                try:
                    ipaddress.ip_network(str(r), strict=False)
                except ValueError:
                    raise _invalid(f"{where}.match.config.srcIpRanges[{j}]", r,
                                   "Must be an IPv4 or IPv6 CIDR range, or *.") from None
    elif "expr" in match:
        expression = (match.get("expr") or {}).get("expression")
        if not isinstance(expression, str) or not expression.strip():
            raise _invalid(f"{where}.match.expr.expression", "", "An expr match needs an expression.")
        if expression.count("(") != expression.count(")") or expression.count("'") % 2:
            raise _invalid(f"{where}.match.expr.expression", expression, "The expression does not parse.")
    elif match.get("config"):
        raise _invalid(f"{where}.match.versionedExpr", "", "config requires versionedExpr SRC_IPS_V1.")


def rule_matches(rule: Obj, client_ip: str) -> bool | None:
    """Whether a rule matches a request from ``client_ip``: evaluated for SRC_IPS_V1 only; ``None`` (not evaluated,
    the simulator lets the request pass this rule) for any other expression."""
    match = rule.get("match") or {}
    if match.get("versionedExpr") != "SRC_IPS_V1":
        return None
    try:
        ip = ipaddress.ip_address(client_ip.split("%")[0])
    except ValueError:
        return False
    for r in (match.get("config") or {}).get("srcIpRanges") or []:
        if r == "*":
            return True
        try:
            net = ipaddress.ip_network(str(r), strict=False)
        except ValueError:
            continue
        mapped = getattr(ip, "ipv4_mapped", None)
        if ip in net or (mapped is not None and mapped in net):
            return True
    return False


def armor_verdict(policy: Obj | None, client_ip: str) -> int | None:
    """The status a policy answers a request from ``client_ip`` with (403/404/502), or ``None`` to let it through.

    Rules are evaluated from priority 0 up; the first that matches decides. Rules in preview mode are not enforced,
    and only allow/deny are acted on (rate limits and redirects pass).
    """
    if not policy:
        return None
    for rule in sorted(policy.get("rules") or [], key=lambda r: int(r.get("priority", 0))):
        if rule.get("preview") or not rule_matches(rule, client_ip):
            continue
        action = str(rule.get("action") or "")
        if action.startswith("deny"):
            m = re.match(r"deny\((\d+)\)", action)
            return int(m.group(1)) if m else 403
        return None
    return None


# --- SSL policies ---------------------------------------------------------------------------------------------------

_FEATURES = {
    "COMPATIBLE": ["TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256", "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384",
                   "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256", "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256",
                   "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384", "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256",
                   "TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA", "TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA",
                   "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA", "TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA",
                   "TLS_RSA_WITH_AES_128_GCM_SHA256", "TLS_RSA_WITH_AES_256_GCM_SHA384",
                   "TLS_RSA_WITH_AES_128_CBC_SHA", "TLS_RSA_WITH_AES_256_CBC_SHA", "TLS_RSA_WITH_3DES_EDE_CBC_SHA"],
    "MODERN": ["TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256", "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384",
               "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256", "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256",
               "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384", "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256",
               "TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA", "TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA",
               "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA", "TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA",
               "TLS_RSA_WITH_AES_128_GCM_SHA256", "TLS_RSA_WITH_AES_256_GCM_SHA384",
               "TLS_RSA_WITH_AES_128_CBC_SHA", "TLS_RSA_WITH_AES_256_CBC_SHA"],
    "RESTRICTED": ["TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256", "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384",
                   "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256", "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256",
                   "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384", "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256"],
}
_FEATURES["FIPS_202205"] = _FEATURES["RESTRICTED"][:2] + _FEATURES["RESTRICTED"][3:5]


def ssl_policy_defaults(obj: Obj) -> None:
    obj.setdefault("profile", "COMPATIBLE")
    obj.setdefault("minTlsVersion", "TLS_1_0")
    profile = obj["profile"]
    obj["enabledFeatures"] = sorted(obj.get("customFeatures") or []) if profile == "CUSTOM" else \
        sorted(_FEATURES.get(profile, []))


def check_ssl_policy(body: Obj) -> None:
    profile = body.get("profile", "COMPATIBLE")
    version = body.get("minTlsVersion", "TLS_1_0")
    custom = body.get("customFeatures") or []
    if profile == "CUSTOM" and not custom:
        raise _invalid("customFeatures", "", "A CUSTOM profile needs the features to enable in customFeatures.")
    if profile != "CUSTOM" and custom:
        raise _invalid("customFeatures", ",".join(custom), "customFeatures must be empty unless the profile is "
                       "CUSTOM.")
    known = set(_FEATURES["COMPATIBLE"])
    for i, f in enumerate(custom):
        if f not in known:
            raise _invalid(f"customFeatures[{i}]", f, "Not an SSL feature listAvailableFeatures offers.")
    if version == "TLS_1_3" and profile != "RESTRICTED":
        raise _invalid("minTlsVersion", version, "With TLS_1_3 the profile must be RESTRICTED.")
    if profile == "FIPS_202205" and version != "TLS_1_2":
        raise _invalid("minTlsVersion", version, "With the FIPS_202205 profile minTlsVersion must be TLS_1_2.")


# --- backend services -----------------------------------------------------------------------------------------------

def backend_service_defaults(obj: Obj) -> None:
    """What Compute fills in or derives: the IAP secret replaced by its SHA-256, CDN policy defaults, log rate."""
    iap = obj.get("iap")
    if isinstance(iap, dict) and "oauth2ClientSecret" in iap:
        secret = str(iap.pop("oauth2ClientSecret") or "")
        iap["oauth2ClientSecretSha256"] = hashlib.sha256(secret.encode()).hexdigest()
    if obj.get("enableCDN"):
        cdn = obj.setdefault("cdnPolicy", {})
        mode = cdn.setdefault("cacheMode", "CACHE_ALL_STATIC")
        for key, value in CACHE_DEFAULTS.get(mode, {}).items():
            cdn.setdefault(key, value)
        cdn.setdefault("cacheKeyPolicy", {"includeHost": True, "includeProtocol": True, "includeQueryString": True})
        cdn.setdefault("negativeCaching", False)
        cdn.setdefault("serveWhileStale", 0)
        cdn.setdefault("signedUrlCacheMaxAgeSec", "0")
    log = obj.get("logConfig")
    if isinstance(log, dict) and log.get("enable"):
        log.setdefault("sampleRate", 1.0)


def check_backend_service(body: Obj) -> None:
    """The documented rules of a global backend service's feature fields (``body`` as it would be stored)."""
    scheme = str(body.get("loadBalancingScheme") or "EXTERNAL")
    alb = scheme in ("EXTERNAL", "EXTERNAL_MANAGED")
    protocol = body.get("protocol")
    if alb and protocol is not None and protocol not in ALB_PROTOCOLS[scheme]:
        raise _invalid("protocol", protocol, f"A global backend service with load balancing scheme {scheme} uses "
                       f"{', '.join(ALB_PROTOCOLS[scheme])} to its backends.")
    affinity = str(body.get("sessionAffinity") or "NONE")
    if alb and affinity not in ALB_AFFINITIES:
        raise _invalid("sessionAffinity", affinity, "Application Load Balancers support NONE, CLIENT_IP, "
                       "GENERATED_COOKIE, HEADER_FIELD, HTTP_COOKIE and STRONG_COOKIE_AFFINITY.")
    if scheme == "EXTERNAL" and affinity in MANAGED_ONLY_AFFINITIES:
        raise _invalid("sessionAffinity", affinity, f"Session affinity {affinity} is supported only with load "
                       "balancing scheme EXTERNAL_MANAGED, not EXTERNAL (classic).")
    if scheme == "EXTERNAL":
        for key in MANAGED_ONLY_FIELDS:
            if body.get(key) not in (None, [], {}):
                raise _invalid(key, _short(body[key]), f"{key} is supported only with load balancing scheme "
                               "EXTERNAL_MANAGED (global external Application Load Balancer), not EXTERNAL (classic).")
        policy = body.get("localityLbPolicy")
        if policy not in (None, "ROUND_ROBIN"):
            raise _invalid("localityLbPolicy", policy, "localityLbPolicy other than ROUND_ROBIN is supported only with "
                           "load balancing scheme EXTERNAL_MANAGED, not EXTERNAL (classic).")
    if body.get("localityLbPolicy") == "INVALID_LB_POLICY":
        raise _invalid("localityLbPolicy", "INVALID_LB_POLICY", "Not a load balancing policy.")
    if body.get("customMetrics") and body.get("localityLbPolicy") != "WEIGHTED_ROUND_ROBIN":
        raise _invalid("customMetrics", _short(body["customMetrics"]), "customMetrics are used by the "
                       "WEIGHTED_ROUND_ROBIN localityLbPolicy only.")
    consistent = body.get("consistentHash") or {}
    if affinity in ("HEADER_FIELD", "HTTP_COOKIE"):
        if body.get("localityLbPolicy") not in (None, "RING_HASH", "MAGLEV"):
            raise _invalid("localityLbPolicy", body["localityLbPolicy"], f"Session affinity {affinity} needs "
                           "localityLbPolicy RING_HASH or MAGLEV.")
        if affinity == "HEADER_FIELD" and not consistent.get("httpHeaderName"):
            raise _invalid("consistentHash.httpHeaderName", "", "Session affinity HEADER_FIELD needs the header's "
                           "name in consistentHash.httpHeaderName.")
        if affinity == "HTTP_COOKIE" and not (consistent.get("httpCookie") or {}).get("name"):
            raise _invalid("consistentHash.httpCookie.name", "", "Session affinity HTTP_COOKIE needs the cookie's "
                           "name in consistentHash.httpCookie.name.")
    if affinity == "STRONG_COOKIE_AFFINITY" and not body.get("strongSessionAffinityCookie"):
        raise _invalid("strongSessionAffinityCookie", "", "Session affinity STRONG_COOKIE_AFFINITY needs "
                       "strongSessionAffinityCookie.")
    ttl = int(body.get("affinityCookieTtlSec") or 0)
    if not 0 <= ttl <= MAX_COOKIE_TTL:
        raise _invalid("affinityCookieTtlSec", ttl, f"Must be in [0, {MAX_COOKIE_TTL}].")
    if ttl and affinity not in ("GENERATED_COOKIE", "HTTP_COOKIE"):
        raise _invalid("affinityCookieTtlSec", ttl, "A cookie lifetime needs session affinity GENERATED_COOKIE or "
                       "HTTP_COOKIE.")
    _check_cdn(body, scheme)
    _check_iap(body)
    log = body.get("logConfig") or {}
    rate = log.get("sampleRate")
    if rate is not None:
        if not 0.0 <= float(rate) <= 1.0:
            raise _invalid("logConfig.sampleRate", rate, "Must be in [0, 1].")
        if not log.get("enable") and float(rate) != 1.0:
            raise _invalid("logConfig.sampleRate", rate, "A sample rate can be set only when logging is enabled.")
    draining = (body.get("connectionDraining") or {}).get("drainingTimeoutSec")
    if draining is not None and not 0 <= int(draining) <= MAX_DRAINING:
        raise _invalid("connectionDraining.drainingTimeoutSec", draining, f"Must be in [0, {MAX_DRAINING}].")
    for key in ("customRequestHeaders", "customResponseHeaders"):
        check_headers(key, body.get(key) or [])


def _check_cdn(body: Obj, scheme: str) -> None:
    cdn = body.get("cdnPolicy")
    if body.get("enableCDN") and scheme not in ("EXTERNAL", "EXTERNAL_MANAGED"):
        raise _invalid("enableCDN", "true", "Cloud CDN is available for global external Application Load "
                       "Balancers (EXTERNAL, EXTERNAL_MANAGED) only.")
    if not isinstance(cdn, dict):
        return
    mode = cdn.get("cacheMode", "CACHE_ALL_STATIC")
    if mode == "INVALID_CACHE_MODE":
        raise _invalid("cdnPolicy.cacheMode", mode, "Must be CACHE_ALL_STATIC, USE_ORIGIN_HEADERS or "
                       "FORCE_CACHE_ALL.")
    for key in ("defaultTtl", "maxTtl", "clientTtl"):
        value = cdn.get(key)
        if value is None:
            continue
        if not 0 <= int(value) <= MAX_TTL:
            raise _invalid(f"cdnPolicy.{key}", value, f"Must be in [0, {MAX_TTL}] seconds.")
        if mode == "USE_ORIGIN_HEADERS":
            raise _invalid(f"cdnPolicy.{key}", value, f"{key} cannot be set with cache mode USE_ORIGIN_HEADERS (the "
                           "origin's headers decide).")
    if mode == "FORCE_CACHE_ALL" and cdn.get("maxTtl") is not None:
        raise _invalid("cdnPolicy.maxTtl", cdn["maxTtl"], "maxTtl cannot be set with cache mode FORCE_CACHE_ALL.")
    if cdn.get("defaultTtl") is not None and cdn.get("maxTtl") is not None and \
            int(cdn["defaultTtl"]) > int(cdn["maxTtl"]):
        raise _invalid("cdnPolicy.defaultTtl", cdn["defaultTtl"], "defaultTtl cannot be greater than maxTtl.")
    if cdn.get("negativeCachingPolicy") and not cdn.get("negativeCaching"):
        raise _invalid("cdnPolicy.negativeCachingPolicy", _short(cdn["negativeCachingPolicy"]),
                       "negativeCachingPolicy needs negativeCaching enabled.")
    for i, p in enumerate(cdn.get("negativeCachingPolicy") or []):
        if int(p.get("code", 0)) not in (300, 301, 302, 307, 308, 404, 405, 410, 421, 451, 501):
            raise _invalid(f"cdnPolicy.negativeCachingPolicy[{i}].code", p.get("code"), "Not a status code "
                           "negative caching applies to (300, 301, 302, 307, 308, 404, 405, 410, 421, 451, 501).")
        if not 0 <= int(p.get("ttl", 0)) <= 1800:
            raise _invalid(f"cdnPolicy.negativeCachingPolicy[{i}].ttl", p.get("ttl"), "Must be in [0, 1800].")


def _check_iap(body: Obj) -> None:
    iap = body.get("iap")
    if not isinstance(iap, dict):
        return
    has_secret = bool(iap.get("oauth2ClientSecret")) or bool(iap.get("oauth2ClientSecretSha256"))
    if iap.get("oauth2ClientId") and not has_secret:
        raise _invalid("iap.oauth2ClientSecret", "", "An OAuth client ID needs its secret (oauth2ClientSecret).")
    if iap.get("oauth2ClientSecret") and not iap.get("oauth2ClientId"):
        raise _invalid("iap.oauth2ClientId", "", "An OAuth client secret needs its client ID (oauth2ClientId).")


def check_headers(field: str, headers: list[Any]) -> None:
    """Custom request/response headers: "Name: value", a valid and allowed name once, known variables only."""
    names: set[str] = set()
    for i, header in enumerate(headers):
        where = f"{field}[{i}]"
        if not isinstance(header, str) or ":" not in header:
            raise _invalid(where, header, "A custom header is 'Name: value' (a colon separates name and value).")
        name, _, value = header.partition(":")
        lowered = name.strip().lower()
        if not name or name != name.strip() or not _TOKEN.match(name):
            raise _invalid(where, header, "The header name is not a valid HTTP field name (RFC 7230).")
        if lowered in ("x-user-ip", "host", "authority") or lowered in _HOP_BY_HOP or \
                lowered.startswith(_RESERVED_PREFIXES):
            raise _invalid(where, header, f"The header name {name} is reserved (X-User-IP, Host, authority, "
                           "hop-by-hop headers, and names beginning X-Google, X-Goog-, X-GFE or X-Amz-).")
        if lowered in names:
            raise _invalid(where, header, f"The header {name} appears more than once.")
        names.add(lowered)
        if any(c in value for c in "\r\n\0"):
            raise _invalid(where, header, "The header value is not a valid HTTP field value.")
        for var in re.findall(r"\{([^{}]*)\}", value):
            if var not in HEADER_VARIABLES:
                raise _invalid(where, header, f"Unknown variable {{{var}}} in the header value.")
        if value.count("{") != value.count("}"):
            raise _invalid(where, header, "Unbalanced braces in the header value.")


def expand_header(value: str, facts: dict[str, str]) -> str:
    """A header value with its variables replaced (by the simulator's facts; a variable without one expands empty)."""
    return re.sub(r"\{([a-z0-9_]+)\}", lambda m: facts.get(m.group(1), ""), value)


def parse_headers(headers: list[str]) -> list[tuple[str, str]]:
    return [(h.partition(":")[0], h.partition(":")[2].strip()) for h in headers]


def check_url_map_services(services: list[tuple[str, Obj]]) -> None:
    """A URL map routes only to backend services of an HTTP family protocol (TCP/SSL ones are for proxy Network
    Load Balancers); ``services`` are (field path, backend service) of every service the map names."""
    for where, service in services:
        protocol = service.get("protocol", "HTTP")
        if protocol not in URL_MAP_PROTOCOLS:
            raise _invalid(where, service.get("selfLink", ""), f"A URL map cannot use a backend service with "
                           f"protocol {protocol} (HTTP, HTTPS, HTTP2 or H2C).")


# --- target HTTPS proxies, addresses, forwarding rules --------------------------------------------------------------

CERT_MAP_RE = re.compile(r"^(?://certificatemanager\.googleapis\.com/|https?://[^/]+/(?:v1/)?)projects/(?P<project>[^/]+)/"
                         r"locations/(?P<location>[^/]+)/certificateMaps/(?P<name>[^/]+)$")


def check_certificate_map(value: Any, exists: Callable[[str, str], bool] | None, field: str = "certificateMap",
                          prefix: str = "resource.") -> str:
    """A proxy's certificate map reference, naming a map that exists (404 otherwise), in the documented form.

    Accepted: the documented ``//certificatemanager.googleapis.com/projects/…`` and the API URL gcloud sends
    (``https://certificatemanager.googleapis.com/v1/projects/…``, its self link; any host, for endpoint overrides).
    Stored: the documented form."""
    m = CERT_MAP_RE.match(str(value or ""))
    if not m:
        raise FeatureError(f"Invalid value for field '{prefix}{field}': '{value}'. Accepted format is "
                           "//certificatemanager.googleapis.com/projects/{project}/locations/{location}/"
                           "certificateMaps/{resourceName}.")
    if m.group("location") != "global":
        raise FeatureError(f"Invalid value for field '{prefix}{field}': '{value}'. A global target HTTPS proxy "
                           "uses a certificate map in location global.")
    if exists is not None and not exists(m.group("project"), m.group("name")):
        raise FeatureError(f"The resource 'projects/{m.group('project')}/locations/global/certificateMaps/"
                           f"{m.group('name')}' was not found", "notFound", 404)
    return f"//certificatemanager.googleapis.com/projects/{m.group('project')}/locations/global/certificateMaps/" \
           f"{m.group('name')}"


def check_https_proxy(body: Obj, exists: Callable[[str, str], bool] | None) -> None:
    """A target HTTPS proxy's certificate map (normalized in ``body`` to the documented form)."""
    if body.get("certificateMap"):
        body["certificateMap"] = check_certificate_map(body["certificateMap"], exists)


def strip_output_only(body: Obj, fields: tuple[str, ...], current: Obj | None) -> Obj:
    """``body`` with ``fields`` (output only) replaced by the current resource's values (or removed)."""
    out = copy.copy(body)
    for key in fields:
        out.pop(key, None)
        if current is not None and key in current:
            out[key] = current[key]
    return out


def check_address(body: Obj) -> None:
    version = body.get("ipVersion", "IPV4")
    given = body.get("address")
    if version == "IPV6" and body.get("networkTier", "PREMIUM") != "PREMIUM":
        raise _invalid("networkTier", body["networkTier"], "Global IPv6 addresses are Premium Tier only.")
    if given:
        try:
            ip = ipaddress.ip_address(str(given))
        except ValueError:
            raise _invalid("address", given, "Not an IP address.") from None
        if (ip.version == 6) != (version == "IPV6"):
            raise _invalid("address", given, f"The address does not match ipVersion {version}.")


def check_forwarding_rule_ip(rule: Obj, address_version: str | None) -> None:
    """A rule's ipVersion agrees with the address it uses (an address's own version wins when ipVersion is unset)."""
    ip = rule.get("IPAddress")
    version = rule.get("ipVersion")
    if version is None or address_version is None:
        return
    if version != address_version:
        raise _invalid("ipVersion", version, f"The forwarding rule's IP address {ip} is {address_version}.")
