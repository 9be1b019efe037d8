"""What the load balancer looks like now: VIP, listeners, backend health per cluster and zone, certificates.

Health comes from ``backendServices.getHealth`` (one call per backend service and instance group), which is what
Google's own health checkers see. Renders as a table, JSON, or Markdown with a Mermaid diagram for a GitLab job
summary or merge request note.
"""

from __future__ import annotations

import functools
import json
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from typing import Any

from gitlab_mci.lb.discovery import ClusterInfo
from gitlab_mci.lb.engine import ComputeApi, read_named
from gitlab_mci.lb.names import MARKER, Namer
from gitlab_mci.lb.traffic import recorded_weight


@dataclass
class GroupHealth:
    backend_service: str
    cluster: str
    zone: str
    group: str
    healthy: int
    total: int
    states: dict[str, int]
    weight: float = 1.0  # the cluster's --weight, recorded on the backend (gitlab_mci.lb.traffic)
    capacity_scaler: float = 1.0  # 0: drained (no new requests)

    @property
    def drained(self) -> bool:
        return self.capacity_scaler == 0.0


@dataclass
class CertState:
    name: str
    type: str
    status: str
    domains: list[str]
    expires: str | None
    owner: str = "gitlab-mci"  # or "pre-shared": the user's, served by our proxy, never changed by gitlab-mci


@dataclass
class Status:
    lb: str
    vip: str | None
    listeners: list[dict[str, str]] = field(default_factory=list)  # rule, port, proxy
    routes: dict[str, list[str]] = field(default_factory=dict)  # proxy → URL map, URL map → backend services
    backends: list[GroupHealth] = field(default_factory=list)
    certificates: list[CertState] = field(default_factory=list)
    exists: bool = True

    @property
    def healthy(self) -> bool:
        """Every serving instance group has a healthy instance (a drained one is out on purpose), and one serves."""
        serving = [b for b in self.backends if not b.drained]
        return self.exists and bool(serving) and all(b.healthy > 0 for b in serving)

    def clusters(self) -> dict[str, dict[str, Any]]:
        """Each cluster's weight and drain state (the first of its backends says; they agree unless edited)."""
        out: dict[str, dict[str, Any]] = {}
        for b in self.backends:
            out.setdefault(b.cluster, {"weight": b.weight, "drained": b.drained,
                                       "capacityScaler": b.capacity_scaler})
        return out


def _traffic(b: GroupHealth) -> str:
    return "drained" if b.drained else f"{b.weight:g} (x{b.capacity_scaler:g})"


def _last(url: Any) -> str:
    return str(url or "").rsplit("/", 1)[-1]


def gather(api: ComputeApi, namer: Namer, clusters: Sequence[ClusterInfo], *,
           static_ip: str | None = None) -> Status:
    """Read the load balancer and its health."""
    found = read_named(api, namer)
    owned = {k: v for k, v in found.items() if namer.owns(v)}
    by_coll: dict[str, list[dict[str, Any]]] = {}
    for key, item in sorted(owned.items()):
        by_coll.setdefault(key.split("/", 1)[0], []).append(item)
    address = next(iter(by_coll.get("globalAddresses", [])), None)
    if static_ip:
        address = api.get("globalAddresses", static_ip) or address
    status = Status(namer.lb, (address or {}).get("address"), exists=bool(owned))
    for rule in by_coll.get("globalForwardingRules", []):
        status.listeners.append({"rule": rule["name"], "ip": rule.get("IPAddress", ""),
                                 "port": str(rule.get("portRange", "")).split("-")[0],
                                 "proxy": _last(rule.get("target"))})
        if not str(rule.get("description") or "").startswith(MARKER):
            status.listeners[-1]["takenOver"] = "yes"  # adopted by `lb takeover`: the user's rule, by label
    # The VIP is what the rules serve: an address gitlab-mci reserved but no longer uses (kept after a switch to
    # --static-ip, since DNS may still point at it) is not it.
    status.vip = next((r["ip"] for r in status.listeners if r["ip"]), status.vip)
    for proxy in by_coll.get("targetHttpProxies", []) + by_coll.get("targetHttpsProxies", []):
        status.routes[proxy["name"]] = [_last(proxy.get("urlMap"))]
    for um in by_coll.get("urlMaps", []):
        services = [um.get("defaultService")] + [m.get("defaultService") for m in um.get("pathMatchers", [])]
        services += [r.get("service") for m in um.get("pathMatchers", []) for r in m.get("pathRules", [])]
        targets = [_last(x) for x in dict.fromkeys(services) if x]
        status.routes[um["name"]] = targets or (["redirect to HTTPS"] if um.get("defaultUrlRedirect") else [])
    cluster_of = {g: (c.context, g.split("/zones/")[1].split("/")[0]) for c in clusters for g in c.groups}
    pairs = [(bs["name"], backend) for bs in by_coll.get("backendServices", [])
             for backend in bs.get("backends", [])]

    def health(pair: tuple[str, dict[str, Any]]) -> dict[str, Any]:
        name, backend = pair
        answer: dict[str, Any] = api.retrying(f"read the health of {name}", functools.partial(
            api.rest.post, f"global/backendServices/{name}/getHealth", {"group": backend["group"]}))
        return answer

    # One call per backend service and group, all at once (45 round trips at 15 clusters × 3 zones).
    with ThreadPoolExecutor(max_workers=max(1, min(32, len(pairs)))) as pool:
        answers = list(pool.map(health, pairs))
    for (name, backend), answer in zip(pairs, answers, strict=True):
        group = backend["group"]
        states = Counter(h.get("healthState") or "UNKNOWN" for h in answer.get("healthStatus", []))
        context, zone = cluster_of.get(_normal_group(group, cluster_of), ("?", group.split("/zones/")[-1]
                                                                         .split("/")[0]))
        status.backends.append(GroupHealth(name, context, zone, _last(group), states.get("HEALTHY", 0),
                                           sum(states.values()), dict(states), recorded_weight(backend),
                                           float(backend.get("capacityScaler", 1.0))))
    # Every certificate the proxies serve (pre-shared ones are not ours, so not listed by name above), and ours.
    served = dict.fromkeys(_last(link) for proxy in by_coll.get("targetHttpsProxies", [])
                           for link in proxy.get("sslCertificates", []))
    ours = {cert["name"]: cert for cert in by_coll.get("sslCertificates", [])}
    for name in [*served, *(n for n in ours if n not in served)]:
        cert = ours.get(name) or api.get("sslCertificates", name)
        if cert is None:
            status.certificates.append(CertState(name, "?", "NOT FOUND", [], None, "pre-shared"))
            continue
        managed = cert.get("managed") or {}
        status.certificates.append(CertState(
            name, cert.get("type", "SELF_MANAGED"),
            managed.get("status", "ACTIVE") if cert.get("type") == "MANAGED" else "ACTIVE",
            list(managed.get("domains") or cert.get("subjectAlternativeNames") or []), cert.get("expireTime"),
            "gitlab-mci" if name in ours else "pre-shared"))
    return status


def _normal_group(group: str, known: dict[str, Any]) -> str:
    tail = group.split("/compute/v1/")[-1]
    return next((g for g in known if g.endswith(tail)), group)


def render_text(s: Status) -> str:
    if not s.exists:
        return f"load balancer {s.lb}: not found (nothing owned by gitlab-mci under this name)"
    lines = [f"load balancer {s.lb}: VIP {s.vip or '-'}"]
    for r in s.listeners:
        adopted = " (taken over)" if r.get("takenOver") else ""
        lines.append(f"  listener {r['rule']}{adopted}: {r['ip']}:{r['port']} → {r['proxy']}")
    # WEIGHT before HEALTHY: scripts read the health count as the last column.
    head = ("BACKEND SERVICE", "CLUSTER", "ZONE", "INSTANCE GROUP", "WEIGHT", "HEALTHY")
    rows = [head] + [(b.backend_service, b.cluster, b.zone, b.group, _traffic(b), f"{b.healthy}/{b.total}")
                     for b in s.backends]
    widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
    lines += ["  " + "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    for c in s.certificates:
        extra = f" ({', '.join(c.domains)})" if c.domains else ""
        kind = f"{c.type} (pre-shared)" if c.owner == "pre-shared" else c.type
        lines.append(f"  certificate {c.name}: {kind} {c.status}{extra}"
                     + (f", expires {c.expires}" if c.expires else ""))
    drained = [c for c, t in s.clusters().items() if t["drained"]]
    if drained:
        lines.append(f"  drained (no new requests; `lb undrain` ends it): {', '.join(drained)}")
    lines.append("healthy" if s.healthy else "NOT healthy: some serving instance group has no healthy instance")
    return "\n".join(lines)


def render_json(s: Status) -> str:
    body = asdict(s)
    for item, b in zip(body["backends"], s.backends, strict=True):
        item["drained"] = b.drained
    return json.dumps({**body, "clusters": s.clusters(), "healthy": s.healthy}, indent=2)


def _node(text: str) -> str:
    return text.replace('"', "'")


def render_markdown(s: Status) -> str:
    """A summary table and a Mermaid diagram: IP → rule → proxy → URL map → backends → clusters."""
    out = [f"### Load balancer `{s.lb}`", "", f"VIP: `{s.vip or '-'}`", "",
           "| Backend service | Cluster | Zone | Healthy | Weight |", "|---|---|---|---|---|"]
    out += [f"| {b.backend_service} | {b.cluster} | {b.zone} | {b.healthy}/{b.total} | {_traffic(b)} |"
            for b in s.backends]
    if s.certificates:
        out += ["", "| Certificate | Type | Status | Domains | Expires |", "|---|---|---|---|---|"]
        out += [f"| {c.name}{' (pre-shared)' if c.owner == 'pre-shared' else ''} | {c.type} | {c.status} | "
                f"{', '.join(c.domains)} | {c.expires or ''} |" for c in s.certificates]
    out += ["", "```mermaid", "flowchart LR"]
    ids: dict[str, str] = {}

    def node(label: str) -> str:
        if label not in ids:
            ids[label] = f"n{len(ids)}"
            out.append(f'  {ids[label]}["{_node(label)}"]')
        return ids[label]

    edges: list[str] = []
    ip = node(f"IP {s.vip or '-'}")
    for r in s.listeners:
        edges.append(f"  {ip} --> {node(r['rule'] + ' :' + r['port'])} --> {node(r['proxy'])}")
    for source, targets in s.routes.items():
        edges += [f"  {node(source)} --> {node(t)}" for t in targets]
    for b in s.backends:
        edges.append(f"  {node(b.backend_service)} --> {node(f'{b.cluster} / {b.zone} ({b.healthy}/{b.total})')}")
    out += list(dict.fromkeys(edges))
    out.append("```")
    return "\n".join(out)
