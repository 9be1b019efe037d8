"""URL map evaluation as Google's global external HTTP(S) load balancer does it, for the simulator's data plane.

Pure functions over the URL map's REST JSON: host rules pick a path matcher, path rules pick a backend service or a
redirect (``/*`` is a prefix, anything else an exact path; the most specific rule wins), and what matches nothing
falls to the matcher's or the map's default service or default URL redirect. A route action's fault injection abort
(``faultInjectionPolicy.abort``: the global external ALB's way to answer a fixed status) is reported with the route.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

Obj = dict[str, Any]

# redirectResponseCode → HTTP status (MOVED_PERMANENTLY_DEFAULT is what an unset code means).
REDIRECT_CODES = {"MOVED_PERMANENTLY_DEFAULT": 301, "FOUND": 302, "SEE_OTHER": 303, "TEMPORARY_REDIRECT": 307,
                  "PERMANENT_REDIRECT": 308}


@dataclass(frozen=True)
class Route:
    """Where a request goes: a backend service URL, or a redirect (``location`` and ``status``), or nowhere."""

    service: str | None = None
    redirect: Obj | None = None
    matched_prefix: str = ""  # the path rule's prefix (without ``*``), for prefixRedirect
    abort: tuple[int, float] | None = None  # (httpStatus, percentage) of the route action's fault abort
    # A route rule's routeAction.weightedBackendServices: (backend service URL, weight), and the rule's key
    weighted: tuple[tuple[str, int], ...] = ()
    rule_key: str = ""


def _abort(action: Obj | None) -> tuple[int, float] | None:
    abort = ((action or {}).get("faultInjectionPolicy") or {}).get("abort")
    if not abort or abort.get("httpStatus") is None:
        return None
    return int(abort["httpStatus"]), float(abort.get("percentage") or 0.0)


def _host_score(pattern: str, host: str) -> int:
    """How specifically a host rule pattern matches (0: not at all); exact beats ``*.suffix`` beats ``*``."""
    pattern = pattern.lower()
    if pattern == "*":
        return 1
    if pattern.startswith("*"):
        suffix = pattern[1:]
        return 2 + len(suffix) if host.endswith(suffix) and len(host) > len(suffix) else 0
    return 100_000 if host == pattern else 0


def _path_score(pattern: str, path: str) -> tuple[int, str]:
    """(specificity, matched prefix) of a path rule pattern for ``path``; specificity 0 means no match."""
    if pattern.endswith("/*"):
        prefix = pattern[:-1]  # "/api/*" matches "/api/" and everything under it, and "/api" itself
        if path.startswith(prefix) or path == prefix[:-1]:
            return len(prefix), prefix
        return 0, ""
    if pattern == "*":
        return 1, "/"
    return (100_000 + len(pattern), pattern) if path == pattern else (0, "")


def _match_rule(rule: Obj, path: str, headers: dict[str, str]) -> bool:
    """One of a route rule's ``matchRules``: a path (prefix, full or none) and every header match."""
    if "prefixMatch" in rule and not path.startswith(str(rule["prefixMatch"])):
        return False
    if "fullPathMatch" in rule and path != rule["fullPathMatch"]:
        return False
    for h in rule.get("headerMatches") or []:
        value = headers.get(str(h.get("headerName", "")).lower())
        if "exactMatch" in h and value != h["exactMatch"]:
            return False
        if "prefixMatch" in h and (value is None or not value.startswith(str(h["prefixMatch"]))):
            return False
        if "presentMatch" in h and (value is not None) != bool(h["presentMatch"]):
            return False
        if not any(k in h for k in ("exactMatch", "prefixMatch", "presentMatch")) and value is None:
            return False
    return True


def _route_rules(matcher: Obj, path: str, headers: dict[str, str]) -> Route | None:
    """A path matcher's ``routeRules``, lowest priority number first: the first rule one of whose match rules
    matches decides (a service, weighted services or a redirect)."""
    for rule in sorted(matcher.get("routeRules") or [], key=lambda r: int(r.get("priority", 0))):
        if not any(_match_rule(m, path, headers) for m in rule.get("matchRules") or [{}]):
            continue
        action = rule.get("routeAction") or {}
        weighted = tuple((str(w.get("backendService")), int(w.get("weight", 0)))
                         for w in action.get("weightedBackendServices") or [])
        return Route(rule.get("service"), rule.get("urlRedirect"), abort=_abort(action), weighted=weighted,
                     rule_key=f"{matcher.get('name')}#{rule.get('priority', 0)}")
    return None


def route(url_map: Obj, host: str, path: str, headers: dict[str, str] | None = None) -> Route:
    """Evaluate ``url_map`` for a request to ``host`` (no port) and ``path`` (no query string); ``headers``
    (lower-case names) for route rules' header matches."""
    host = host.lower()
    best_matcher, best = None, 0
    for rule in url_map.get("hostRules") or []:
        score = max((_host_score(h, host) for h in rule.get("hosts") or []), default=0)
        if score > best:
            best_matcher, best = rule.get("pathMatcher"), score
    matcher = next((m for m in url_map.get("pathMatchers") or [] if m.get("name") == best_matcher), None)
    if matcher is not None and matcher.get("routeRules"):
        by_rule = _route_rules(matcher, path, {k.lower(): v for k, v in (headers or {}).items()})
        if by_rule is not None:
            return by_rule
    if matcher is not None:
        chosen, chosen_score, chosen_prefix = None, 0, ""
        for rule in matcher.get("pathRules") or []:
            for pattern in rule.get("paths") or []:
                score, prefix = _path_score(pattern, path)
                if score > chosen_score:
                    chosen, chosen_score, chosen_prefix = rule, score, prefix
        if chosen is not None:
            return Route(chosen.get("service"), chosen.get("urlRedirect"), chosen_prefix,
                         _abort(chosen.get("routeAction")))
        return Route(matcher.get("defaultService"), matcher.get("defaultUrlRedirect"),
                     abort=_abort(matcher.get("defaultRouteAction")))
    return Route(url_map.get("defaultService"), url_map.get("defaultUrlRedirect"),
                 abort=_abort(url_map.get("defaultRouteAction")))


def redirect_target(redirect: Obj, *, scheme: str, host: str, path: str, query: str,
                    matched_prefix: str = "") -> tuple[int, str]:
    """(HTTP status, Location) of a URL map redirect action for the request it answers."""
    new_scheme = "https" if redirect.get("httpsRedirect") else scheme
    new_host = redirect.get("hostRedirect") or host
    if redirect.get("pathRedirect"):
        new_path = str(redirect["pathRedirect"])
    elif redirect.get("prefixRedirect") is not None and matched_prefix:
        new_path = str(redirect["prefixRedirect"]) + path[len(matched_prefix.rstrip("/")):]
    else:
        new_path = path
    if not redirect.get("stripQuery") and query:
        new_path += "?" + query
    status = REDIRECT_CODES.get(str(redirect.get("redirectResponseCode") or "MOVED_PERMANENTLY_DEFAULT"), 301)
    return status, f"{new_scheme}://{new_host}{new_path}"
