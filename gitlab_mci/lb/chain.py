"""A running load balancer chain that gitlab-mci did not build (kubemci's, or one made with gcloud or Terraform),
found from its address: the forwarding rules on the IP, their proxies, URL maps, backend services, health checks,
named ports and the firewall rules that let Google's health checkers reach the node port.

Pure functions over one read of the project (:class:`Inventory`: one list per collection). After `lb takeover`
has moved a rule onto our proxies, the old chain is no longer reachable from the address; the rule's labels
(``gitlab-mci-was-*``, ``gitlab-mci-old-*``, see :mod:`gitlab_mci.lb.names`) name it until it is deleted.
"""

from __future__ import annotations

import ipaddress
import json
import re
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from gitlab_mci.errors import UserError
from gitlab_mci.lb.names import OLD_LABEL, WAS_LABEL, Namer, owner

Obj = dict[str, Any]
HEALTH_CHECK_RANGES = ("130.211.0.0/22", "35.191.0.0/16")
# What an inventory reads: every resource of these collections in the project.
COLLECTIONS = ("globalAddresses", "globalForwardingRules", "targetHttpProxies", "targetHttpsProxies", "urlMaps",
               "backendServices", "healthChecks", "firewalls")
# Label codes of the old chain's resources (OLD_LABEL + code + "-" + index).
CODES = {"targetHttpProxies": "hp", "targetHttpsProxies": "sp", "urlMaps": "um", "backendServices": "bs",
         "healthChecks": "hc", "firewalls": "fw", "namedPorts": "np"}
_COLLECTION_OF = {v: k for k, v in CODES.items()}
_SEGMENT = {"forwardingRules": "globalForwardingRules", "addresses": "globalAddresses"}


def ref(url: Any) -> tuple[str, str] | None:
    """(collection, name) of a global resource URL, or None."""
    m = re.search(r"/global/([A-Za-z]+)/([^/\"]+)$", str(url or ""))
    if m is None:
        return None
    return _SEGMENT.get(m.group(1), m.group(1)), m.group(2)


def _last(url: Any) -> str:
    return str(url or "").rsplit("/", 1)[-1]


def port_of(rule: Obj) -> int:
    return int(str(rule.get("portRange") or "0").split("-")[0] or 0)


@dataclass
class Inventory:
    """Every resource of :data:`COLLECTIONS` in the project, by collection and name."""

    items: dict[str, dict[str, Obj]]

    def get(self, collection: str, name: str) -> Obj | None:
        return self.items.get(collection, {}).get(name)

    def all(self, collection: str) -> list[Obj]:
        return list(self.items.get(collection, {}).values())


def read_inventory(api: Any) -> Inventory:
    """One list per collection, all at once."""
    with ThreadPoolExecutor(max_workers=len(COLLECTIONS)) as pool:
        listed = list(pool.map(lambda c: api.list(c, where=""), COLLECTIONS))
    return Inventory({c: {i["name"]: i for i in items} for c, items in zip(COLLECTIONS, listed, strict=True)})


def find_address(inv: Inventory, address: str) -> tuple[str, Obj | None]:
    """The IP and the global address resource of ``address`` (an IP, or the name of a global address)."""
    try:
        ip = str(ipaddress.ip_address(address))
    except ValueError:
        found = inv.get("globalAddresses", address)
        if found is None:
            raise UserError(f"--address {address}: no global address of that name in the project (give its name "
                            "as `gcloud compute addresses list --global` shows it, or the IP)") from None
        return str(found.get("address") or ""), found
    return ip, next((a for a in inv.all("globalAddresses") if a.get("address") == ip), None)


@dataclass
class Chain:
    """The old chain: what serves (or served) the address and is not gitlab-mci's, by collection → names."""

    ip: str
    address: Obj | None
    rules: list[Obj]  # every forwarding rule on the IP (the user's, adopted ones included)
    resources: dict[str, list[str]] = field(default_factory=dict)  # collection → names (may no longer exist)
    was: dict[str, tuple[str, str]] = field(default_factory=dict)  # rule name → (collection, proxy) it served
    port_names: list[str] = field(default_factory=list)  # named ports the old backend services use
    node_ports: list[int] = field(default_factory=list)
    shared_firewalls: list[str] = field(default_factory=list)  # let health checks in, but also other ports: kept

    def names(self, collection: str) -> list[str]:
        return self.resources.get(collection, [])

    def existing(self, inv: Inventory, collection: str) -> list[Obj]:
        return [o for n in self.names(collection) if (o := inv.get(collection, n)) is not None]

    def labels(self) -> dict[str, str]:
        """The labels that record this chain on an adopted rule."""
        out: dict[str, str] = {}
        for collection, names in [*self.resources.items(), ("namedPorts", self.port_names)]:
            for i, name in enumerate(sorted(names)):
                out[f"{OLD_LABEL}{CODES[collection]}-{i}"] = name
        return out


def _referenced(obj: Obj, collection: str) -> list[str]:
    """Names of the ``collection`` resources ``obj`` points at (usedBy-style back references excluded)."""
    text = json.dumps({k: v for k, v in obj.items() if k not in ("selfLink", "usedBy", "users")})
    segment = {"globalForwardingRules": "forwardingRules"}.get(collection, collection)
    return sorted(set(re.findall(rf"/global/{segment}/([a-z0-9-]+)\"", text)))


def old_chain(inv: Inventory, namer: Namer, ip: str, address: Obj | None,
              group_ports: dict[str, dict[str, int]]) -> Chain:
    """The chain on ``ip`` that is not ours: walked from the rules' targets that are not ours, plus what adopted
    rules recorded in their labels. ``group_ports``: each cluster instance group's named ports."""
    rules = sorted((r for r in inv.all("globalForwardingRules") if r.get("IPAddress") == ip),
                   key=lambda r: (port_of(r), r["name"]))
    chain = Chain(ip, address, rules)
    found: dict[str, set[str]] = {c: set() for c in CODES if c != "namedPorts"}
    port_names: set[str] = set()
    for rule in rules:
        target = ref(rule.get("target"))
        labels = rule.get("labels") or {}
        for collection, key in WAS_LABEL.items():
            if labels.get(key):
                chain.was[rule["name"]] = (collection, labels[key])
                found[collection].add(labels[key])
        for key, value in labels.items():
            if key.startswith(OLD_LABEL):
                code = key[len(OLD_LABEL):].split("-", 1)[0]
                if code == "np":
                    port_names.add(value)
                elif code in _COLLECTION_OF:
                    found[_COLLECTION_OF[code]].add(value)
        if target is not None and target[0] in WAS_LABEL:
            proxy = inv.get(*target)
            if proxy is not None and not namer.owns(proxy):
                chain.was.setdefault(rule["name"], target)
                found[target[0]].add(target[1])
    for collection in WAS_LABEL:
        for name in sorted(found[collection]):
            proxy = inv.get(collection, name)
            if proxy is not None:
                found["urlMaps"].update(_referenced(proxy, "urlMaps"))
    for name in sorted(found["urlMaps"]):
        um = inv.get("urlMaps", name)
        if um is not None:
            found["backendServices"].update(_referenced(um, "backendServices"))
    for name in sorted(found["backendServices"]):
        bs = inv.get("backendServices", name)
        if bs is not None:
            found["healthChecks"].update(_referenced(bs, "healthChecks"))
            if bs.get("portName"):
                port_names.add(str(bs["portName"]))
    # Anything of ours reached (a URL map shared with our chain cannot be; but be safe) is not the old chain's.
    for collection, names in found.items():
        chain.resources[collection] = sorted(n for n in names if not namer.owns(inv.get(collection, n) or {}))
    chain.port_names = sorted(port_names)
    chain.node_ports = sorted({ports[p] for ports in group_ports.values() for p in port_names if p in ports}
                              | {int(hc.get("httpHealthCheck", {}).get("port") or 0)
                                 for hc in chain.existing(inv, "healthChecks")} - {0})
    # Node ports that backend services outside both chains also serve (a second kubemci load balancer on the same
    # node port): their firewall rules look just like the old chain's, so none of those is taken as the chain's.
    others = set()
    for bs in inv.all("backendServices"):
        if bs["name"] in found["backendServices"] or namer.owns(bs):
            continue
        others |= {ports[bs["portName"]] for ports in group_ports.values() if bs.get("portName") in ports}
        for hc_name in _referenced(bs, "healthChecks"):
            others.add(int(((inv.get("healthChecks", hc_name) or {}).get("httpHealthCheck") or {}).get("port") or 0))
    _firewalls(inv, namer, chain, found["firewalls"], {str(p) for p in others})
    return chain


def _firewalls(inv: Inventory, namer: Namer, chain: Chain, recorded: set[str], others: set[str]) -> None:
    """The firewall rules that exist only to let Google's health checkers (and front ends) reach the old chain's
    node ports; one that also opens other ports or sources, or a port another load balancer serves, is shared with
    something else, and kept."""
    names = set(recorded)
    wanted = {str(p) for p in chain.node_ports}
    for fw in inv.all("firewalls"):
        if namer.owns(fw) or owner(fw) is not None or fw.get("direction", "INGRESS") != "INGRESS":
            continue
        sources = set(fw.get("sourceRanges") or [])
        allowed = fw.get("allowed") or []
        ports = {p for a in allowed for p in a.get("ports") or []}
        if not sources & set(HEALTH_CHECK_RANGES) or not ports & wanted:
            continue
        exclusive = (sources <= set(HEALTH_CHECK_RANGES) and ports <= wanted and not ports & others
                     and all(str(a.get("IPProtocol")).lower() == "tcp" and a.get("ports") for a in allowed))
        if exclusive:
            names.add(fw["name"])
        else:
            chain.shared_firewalls.append(fw["name"])
    chain.resources["firewalls"] = sorted(names)


def check(chain: Chain, inv: Inventory, namer: Namer, groups: set[str], zones: set[str], address: str,
          contexts: list[str], *, clusters_known: bool = True, neg_types: dict[str, str] | None = None) -> None:
    """Refuse, before any write, a chain gitlab-mci cannot take over (``clusters_known`` False: all but what
    needs the clusters' instance groups, which are read afterwards)."""
    if not chain.rules:
        raise UserError(f"--address {address}: no forwarding rule uses {chain.ip or address}; nothing to take over")
    for rule in chain.rules:
        other = owner(rule)
        if other is not None and other != namer.lb:
            raise UserError(f"--address {address}: forwarding rule {rule['name']} belongs to gitlab-mci load "
                            f"balancer {other!r}, not {namer.lb!r}")
        target = ref(rule.get("target"))
        port = port_of(rule)
        want = {80: "targetHttpProxies", 443: "targetHttpsProxies"}.get(port)
        if str(rule.get("portRange", "")).split("-")[0] != str(rule.get("portRange", "")).split("-")[-1]:
            raise UserError(f"forwarding rule {rule['name']} serves ports {rule.get('portRange')}; gitlab-mci "
                            "takes over rules on port 80 (HTTP) and 443 (HTTPS)")
        if want is None or target is None or target[0] != want:
            kind = target[0] if target else rule.get("target")
            raise UserError(f"forwarding rule {rule['name']} serves port {port} through {kind}; gitlab-mci takes "
                            "over HTTP proxies on port 80 and HTTPS proxies on port 443")
    schemes = {r.get("loadBalancingScheme", "EXTERNAL") for r in chain.rules if owner(r) is None}
    if len(schemes) > 1:
        raise UserError(f"the forwarding rules on {chain.ip} mix load balancing schemes ({', '.join(sorted(schemes))})")
    for name in chain.names("urlMaps"):
        um = inv.get("urlMaps", name)
        if um is not None and "/backendBuckets/" in json.dumps(um):
            raise UserError(f"URL map {name} routes to a backend bucket, which gitlab-mci cannot take over "
                            "(it serves GKE clusters' node ports only)")
    given = ", ".join(contexts)
    for bs in chain.existing(inv, "backendServices") if clusters_known else []:
        if not bs.get("backends"):
            raise UserError(f"backend service {bs['name']} has no backends: cannot tell which clusters it serves")
        for b in bs["backends"]:
            group = str(b.get("group") or "")
            tail = group.split("/projects/", 1)[-1]
            if "/instanceGroups/" in group:
                if not any(g.endswith(tail) for g in groups) and not re.fullmatch(r"gke-.+-grp", _last(group)):
                    raise UserError(f"backend service {bs['name']} uses instance group {_last(group)}, which is not "
                                    "a GKE node pool's (gke-…-grp): gitlab-mci cannot tell what it serves")
                if not any(g.endswith(tail) for g in groups):
                    raise UserError(f"backend service {bs['name']} uses instance group {group.rsplit('/', 1)[-1]} "
                                    f"({tail.split('/')[2]}), which is in none of the clusters given ({given}): "
                                    "pass every cluster the load balancer serves with --context")
            elif "/networkEndpointGroups/" in group and "/zones/" in group:
                kind = (neg_types or {}).get(tail, "GCE_VM_IP_PORT")
                if kind != "GCE_VM_IP_PORT":
                    raise UserError(f"backend service {bs['name']} uses network endpoint group {_last(group)} of "
                                    f"type {kind}, not the pods of a cluster (GCE_VM_IP_PORT): gitlab-mci cannot "
                                    "tell what it serves")
                zone = group.split("/zones/")[1].split("/")[0]
                if zone not in zones:
                    raise UserError(f"backend service {bs['name']} uses network endpoint group "
                                    f"{group.rsplit('/', 1)[-1]} in {zone}, where none of the clusters given "
                                    f"({given}) has nodes: pass every cluster the load balancer serves")
            else:
                raise UserError(f"backend service {bs['name']} has backend {group or b!r}, neither an instance "
                                "group of a cluster nor a zonal network endpoint group: gitlab-mci cannot tell "
                                "what it serves")


def original_scheme(chain: Chain, inv: Inventory, default: str) -> str:
    """The old chain's scheme: its rules' while they are the user's, else its backend services' while they exist
    (adopted rules change scheme during the migration), else ``default``."""
    for r in chain.rules:
        if owner(r) is None:
            return str(r.get("loadBalancingScheme", "EXTERNAL"))
    for bs in chain.existing(inv, "backendServices"):
        return str(bs.get("loadBalancingScheme", "EXTERNAL"))
    return default


def neg_backends(chain: Chain, inv: Inventory) -> list[str]:
    """The zonal network endpoint groups the old backend services use (URL tails ``PROJECT/zones/Z/…/NAME``)."""
    return sorted({str(b.get("group", "")).split("/projects/", 1)[-1] for bs in chain.existing(inv, "backendServices")
                   for b in bs.get("backends") or [] if "/networkEndpointGroups/" in str(b.get("group", ""))})


def deletable(chain: Chain, inv: Inventory, *,
              ignore_rules: frozenset[str] | set[str] = frozenset()) -> dict[str, list[str]]:
    """The old chain's proxies, URL maps, backend services and health checks that nothing outside the chain uses
    (a rule on another IP, another URL map…): what may be deleted, by collection. ``ignore_rules``: the rules on
    the address, which point at gitlab-mci's proxies by the time the old chain is deleted."""
    order = ("targetHttpProxies", "targetHttpsProxies", "urlMaps", "backendServices", "healthChecks")
    candidates = {(c, n) for c in order for n in chain.names(c) if inv.get(c, n) is not None}
    referrers = {"targetHttpProxies": ("globalForwardingRules",), "targetHttpsProxies": ("globalForwardingRules",),
                 "urlMaps": ("targetHttpProxies", "targetHttpsProxies"), "backendServices": ("urlMaps",),
                 "healthChecks": ("backendServices",)}
    changed = True
    while changed:
        changed = False
        for c, n in sorted(candidates):
            for rc in referrers[c]:
                users = [o for o in inv.all(rc) if n in _referenced(o, c) and (rc, o["name"]) not in candidates
                         and not (rc == "globalForwardingRules" and o["name"] in ignore_rules)]
                if users:
                    candidates.discard((c, n))
                    changed = True
                    break
    return {c: sorted(n for cc, n in candidates if cc == c) for c in order}
