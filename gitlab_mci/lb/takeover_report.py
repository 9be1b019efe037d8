"""`lb takeover`'s output: the chain found on the address and the steps planned (or run), as text, JSON, or
Markdown with the Mermaid diagram `lb status` draws."""

from __future__ import annotations

import functools
import json
from collections import Counter
from typing import Any

from gitlab_mci.lb import status as status_mod
from gitlab_mci.lb.chain import port_of, ref
from gitlab_mci.lb.takeover import Step, Takeover, World


def _last(url: Any) -> str:
    return str(url or "").rsplit("/", 1)[-1]


def chain_json(t: Takeover, w: World) -> dict[str, Any]:
    """The old chain as found (names of resources that no longer exist are listed as gone)."""
    c = w.chain
    out: dict[str, Any] = {
        "ip": c.ip, "address": (c.address or {}).get("name"),
        "forwardingRules": [{"name": r["name"], "port": port_of(r), "scheme": r.get("loadBalancingScheme",
                                                                                      "EXTERNAL"),
                             "target": "/".join(ref(r.get("target")) or ("", "")),
                             "owner": "gitlab-mci" if t.namer.owns(r) else "user"} for r in c.rules],
        "namedPorts": c.port_names, "nodePorts": c.node_ports, "sharedFirewalls": c.shared_firewalls,
    }
    for collection in ("targetHttpProxies", "targetHttpsProxies", "urlMaps", "backendServices", "healthChecks",
                       "firewalls"):
        out[collection] = [{"name": n, "exists": w.inv.get(collection, n) is not None} for n in c.names(collection)]
    return out


def render_text(t: Takeover, w: World, steps: list[Step], *, rollback: bool, done: bool) -> str:
    c = w.chain
    lines = [f"address {(c.address or {}).get('name', '-')} ({c.ip}): {len(c.rules)} forwarding rule(s)"]
    for r in c.rules:
        who = "adopted by gitlab-mci" if t.namer.owns(r) else "the user's"
        lines.append(f"  globalForwardingRules/{r['name']} :{port_of(r)} {r.get('loadBalancingScheme', 'EXTERNAL')} "
                     f"→ {'/'.join(ref(r.get('target')) or ('?', '?'))} ({who})")
    old = [(coll, n) for coll in ("targetHttpProxies", "targetHttpsProxies", "urlMaps", "backendServices",
                                  "healthChecks", "firewalls") for n in c.names(coll)]
    if old:
        lines.append("old chain:")
        for coll, n in old:
            item = w.inv.get(coll, n)
            extra = ""
            if item is None:
                extra = " (deleted)"
            elif coll == "backendServices":
                extra = (f" {item.get('loadBalancingScheme', 'EXTERNAL')}, port name {item.get('portName', '-')}, "
                         f"{len(item.get('backends') or [])} backend(s)")
            elif coll == "urlMaps":
                extra = f" → {', '.join(sorted({_last(s) for s in [item.get('defaultService')] if s}))}"
            elif coll == "targetHttpsProxies":
                extra = f" certificates {', '.join(_last(x) for x in item.get('sslCertificates', []))} (kept)"
            elif coll == "firewalls":
                ports = ",".join(p for a in item.get("allowed", []) for p in a.get("ports", []))
                extra = f" {','.join(item.get('sourceRanges', []))} → tcp:{ports}"
            lines.append(f"  {coll}/{n}{extra}")
        if c.port_names:
            lines.append(f"  named port(s) {', '.join(c.port_names)} (node port {', '.join(map(str, c.node_ports))})")
        for n in c.shared_firewalls:
            lines.append(f"  firewalls/{n}: kept (it also opens other ports or sources, or another load balancer "
                         "serves its node port)")
    else:
        lines.append("old chain: none left")
    what = "rollback" if rollback else "takeover"
    if done:
        lines.append(f"{what} complete: nothing to do")
    else:
        lines.append(f"{what} plan, {sum(s.writes for s in steps)} step(s) that write"
                     + ("" if rollback else f" ({_scheme_text(t)})") + ":")
        for i, s in enumerate(steps, start=1):
            mark = "" if s.writes else " [check]"
            wait = " [after getHealth: healthy in every cluster and zone]" if s.healthy_first and s.writes else ""
            lines.append(f"  {i}. {s.text}{mark}{wait}")
            lines += [f"       {d}" for d in s.details]
    return "\n".join(lines)


def _scheme_text(t: Takeover) -> str:
    from gitlab_mci.lb.takeover import _scheme

    old, new = _scheme(t.interim), _scheme(t.final)
    return f"{old} → {new} by Compute's migration" if old != new else f"stays {new}"


def render_json(t: Takeover, w: World, steps: list[Step], *, rollback: bool, done: bool,
                ran: list[str] | None = None) -> str:
    body = {"lb": t.namer.lb, "rollback": rollback, "complete": done, "chain": chain_json(t, w),
            "steps": [s.as_json() for s in steps]}
    if ran is not None:
        body["ran"] = ran
    return json.dumps(body, indent=2)


def live_status(t: Takeover, w: World) -> status_mod.Status:
    """What serves the address now (old chain, ours, or both), as `lb status` shows a load balancer."""
    s = status_mod.Status(t.namer.lb, w.chain.ip)
    proxies: set[tuple[str, str]] = set()
    for r in w.chain.rules:
        target = ref(r.get("target"))
        s.listeners.append({"rule": r["name"], "ip": w.chain.ip, "port": str(port_of(r)),
                            "proxy": target[1] if target else "?"})
        if target is not None:
            proxies.add(target)
    maps: set[str] = set()
    for coll, name in sorted(proxies):
        proxy = w.inv.get(coll, name) or {}
        if proxy.get("urlMap"):
            s.routes[name] = [_last(proxy["urlMap"])]
            maps.add(_last(proxy["urlMap"]))
    services: list[str] = []
    for name in sorted(maps):
        um = w.inv.get("urlMaps", name) or {}
        found = [um.get("defaultService")] + [m.get("defaultService") for m in um.get("pathMatchers", [])]
        found += [p.get("service") for m in um.get("pathMatchers", []) for p in m.get("pathRules", [])]
        targets = [_last(x) for x in dict.fromkeys(found) if x]
        s.routes[name] = targets or (["redirect to HTTPS"] if um.get("defaultUrlRedirect") else [])
        services += [x for x in targets if x not in services]
    cluster_of = {g.split("/projects/", 1)[-1]: (c.context, g.split("/zones/")[1].split("/")[0])
                  for c in t.clusters for g in c.groups}
    for name in services:
        bs = w.inv.get("backendServices", name) or {}
        for b in bs.get("backends", []):
            answer = t.api.retrying(f"read the health of {name}", functools.partial(
                t.api.rest.post, f"global/backendServices/{name}/getHealth", {"group": b["group"]}))
            states = Counter(h.get("healthState") or "UNKNOWN" for h in answer.get("healthStatus", []))
            context, zone = cluster_of.get(str(b["group"]).split("/projects/", 1)[-1], ("?", "?"))
            s.backends.append(status_mod.GroupHealth(name, context, zone, _last(b["group"]), states.get("HEALTHY", 0),
                                                     sum(states.values()), dict(states)))
    return s


def render_markdown(t: Takeover, w: World, steps: list[Step], *, rollback: bool, done: bool) -> str:
    out = [status_mod.render_markdown(live_status(t, w)), ""]
    what = "Rollback" if rollback else "Takeover"
    if done:
        out.append(f"{what} complete: nothing to do.")
    else:
        out.append(f"#### {what} plan")
        out.append("")
        out += [f"{i}. {s.text}{'' if s.writes else ' (check)'}" for i, s in enumerate(steps, start=1)]
    return "\n".join(out)
