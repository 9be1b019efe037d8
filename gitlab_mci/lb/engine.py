"""Read the actual load balancer, diff it against the desired one, and run the changes as a dependency graph.

Reads: one filtered ``list`` per collection (plus one ``get`` per instance group for named ports), not one call per
resource. Writes: only what differs; independent resources run concurrently (bounded), each waits for the
resources it references. Resources without gitlab-mci's marker are never changed or deleted.
"""

from __future__ import annotations

import functools
import json
import time
import uuid
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field, replace
from typing import Any

from gitlab_mci.compute_rest import ComputeApiError, ComputeRest
from gitlab_mci.errors import UserError
from gitlab_mci.gcp import Compute, OperationError, default_backoff, retry_transient
from gitlab_mci.lb.desired import Desired, Resource
from gitlab_mci.lb.names import LABEL_KEY, Namer


@dataclass(frozen=True)
class _Kind:
    """Where a collection's REST methods live, under projects/PROJECT."""

    path: str  # list, insert; get, patch, update, delete at path/NAME
    custom: str = ""  # custom methods (setUrlMap…) at custom/NAME/METHOD, when not under path (the proxies')


# collection (as keys and plans name it) → its REST paths
_API: dict[str, _Kind] = {
    "globalAddresses": _Kind("global/addresses"),
    "firewalls": _Kind("global/firewalls"),
    "healthChecks": _Kind("global/healthChecks"),
    "backendServices": _Kind("global/backendServices"),
    "urlMaps": _Kind("global/urlMaps"),
    "targetHttpProxies": _Kind("global/targetHttpProxies", custom="targetHttpProxies"),
    "sslCertificates": _Kind("global/sslCertificates"),
    "targetHttpsProxies": _Kind("global/targetHttpsProxies", custom="targetHttpsProxies"),
    "globalForwardingRules": _Kind("global/forwardingRules"),
}
# What routes traffic to backend services.
_ROUTING = ("urlMaps", "targetHttpProxies", "targetHttpsProxies", "globalForwardingRules")
# Creation order; deletion runs the other way round.
ORDER = ("globalAddresses", "firewalls", "healthChecks", "backendServices", "urlMaps", "sslCertificates",
         "targetHttpProxies", "targetHttpsProxies", "globalForwardingRules")
# Fields that cannot change in place on a forwarding rule: changing them means delete and create.
_FR_IMMUTABLE = ("IPAddress", "IPProtocol", "portRange", "loadBalancingScheme")


@dataclass
class Change:
    """One planned change: create, update (with the changed fields), delete; or a named-ports update."""

    action: str  # create | update | delete | replace
    key: str
    collection: str
    name: str
    body: dict[str, Any] = field(default_factory=dict)
    fields: dict[str, tuple[Any, Any]] = field(default_factory=dict)  # field → (old, new)
    actual: dict[str, Any] | None = None
    deps: tuple[str, ...] = ()


def _normal(value: Any) -> Any:
    """Compare URLs whatever their host, and treat absent, empty and null alike."""
    if isinstance(value, str) and "/compute/v1/" in value:
        return value.split("/compute/v1/", 1)[1]
    if isinstance(value, list):
        return [_normal(v) for v in value]
    if isinstance(value, dict):
        return {k: _normal(v) for k, v in value.items() if v not in (None, [], {})}
    return value


def _subset_differs(want: Any, have: Any) -> bool:
    """Whether ``have`` differs from ``want`` on the fields ``want`` sets (server defaults are ignored)."""
    if isinstance(want, dict):
        if not isinstance(have, dict):
            return bool(want)
        return any(_subset_differs(v, have.get(k)) for k, v in want.items())
    if isinstance(want, list):
        if not isinstance(have, list) or len(want) != len(have):
            return bool(want) or bool(have)
        return any(_subset_differs(w, h) for w, h in zip(want, have, strict=True))
    if isinstance(want, float) and isinstance(have, int | float):
        return float(have) != want
    return bool(_normal(want) != _normal(have))


def _as_served(collection: str, body: dict[str, Any], actual: Actual) -> dict[str, Any]:
    """The desired body in the form the API answers with, so that an unchanged resource compares equal."""
    if collection != "globalForwardingRules":
        return body
    out = dict(body)
    ip = str(out.get("IPAddress", ""))
    if "/addresses/" in ip:  # the API stores the address's IP, not the link to it
        address = actual.resources.get(f"globalAddresses/{ip.rsplit('/', 1)[1]}")
        if address is not None:
            out["IPAddress"] = address.get("address")
    port = str(out.get("portRange", ""))
    if port and "-" not in port:
        out["portRange"] = f"{port}-{port}"
    return out


class ComputeApi:
    """The Compute calls the engine makes, as REST JSON (:mod:`gitlab_mci.compute_rest`: no conversion to messages
    and back), with retries of transient errors and waits."""

    def __init__(self, compute: Compute, *, timeout: float = 600.0, retries: int = 5,
                 backoff: float | None = None) -> None:
        self.compute = compute
        self.project = compute.project
        self.timeout = timeout
        self.retries = retries
        self.backoff = default_backoff() if backoff is None else backoff  # doubles up to 8 s

    @property
    def rest(self) -> ComputeRest:
        return self.compute.rest

    def retrying(self, what: str, fn: Callable[[], Any], *, passthrough: tuple[int, ...] = ()) -> Any:
        """``fn()``, retrying transient errors with backoff; other errors become one line (``passthrough``
        status codes are raised as they are, for the caller to handle)."""
        try:
            return retry_transient(fn, retries=self.retries, backoff=self.backoff)
        except ComputeApiError as exc:
            if exc.code in passthrough:
                raise
            raise UserError(f"{what}: {exc.message}") from None

    def wait(self, what: str, op: dict[str, Any]) -> None:
        try:
            self.compute.wait(op, timeout=self.timeout, what=what)
        except OperationError as exc:
            raise UserError(str(exc)) from None

    def list(self, collection: str, name_regex: str | None = None, *,
             where: str | None = None) -> list[dict[str, Any]]:
        """The resources whose name fully matches ``name_regex`` (or that match the filter ``where``)."""
        expression = where if where is not None else f'name eq "{name_regex}"'
        return list(self.retrying(f"list {collection}", functools.partial(
            self.rest.list, _API[collection].path, filter=expression or None)))  # "": every resource

    def get(self, collection: str, name: str) -> dict[str, Any] | None:
        try:
            item: dict[str, Any] = self.retrying(f"read {collection}/{name}", functools.partial(
                self.rest.get, f"{_API[collection].path}/{name}"), passthrough=(404,))
        except ComputeApiError:  # 404
            return None
        return item

    def insert(self, collection: str, body: dict[str, Any]) -> None:
        # The same requestId on every retry: a retried insert cannot create twice.
        params = {"requestId": str(uuid.uuid4())}
        try:
            op = self.retrying(f"create {collection}/{body['name']}", functools.partial(
                self.rest.post, _API[collection].path, body, params=params), passthrough=(409,))
        except ComputeApiError:  # 409
            # Created meanwhile — by a concurrent apply of the same load balancer if it carries our marker (the
            # diff of the next run reconciles its fields); by someone else otherwise, which we must not touch.
            existing = self.get(collection, body["name"]) or {}
            if existing.get("description") != body.get("description"):
                raise UserError(f"create {collection}/{body['name']}: it was just created by someone else") from None
            return
        self.wait(f"create {collection}/{body['name']}", op)

    def delete(self, collection: str, name: str) -> None:
        try:
            op = self.retrying(f"delete {collection}/{name}", functools.partial(
                self.rest.request, "DELETE", f"{self.project}/{_API[collection].path}/{name}"), passthrough=(404,))
        except ComputeApiError:  # 404
            return  # already gone (a concurrent destroy, or a retried delete whose first answer was lost)
        self.wait(f"delete {collection}/{name}", op)

    def patch(self, collection: str, name: str,
              body: dict[str, Any] | Callable[[dict[str, Any]], dict[str, Any]], *, put: bool = False) -> None:
        """Update with the fingerprint read just before: a concurrent change is a 412, answered by reading the
        fresh fingerprint and writing again (our fields win; the desired state is the whole truth for them).
        ``body`` may be a function of the resource as just read, for an update computed from its current fields
        (one cluster's capacity among backends someone else may change): it is computed again after a 412."""
        for attempt in range(self.retries + 1):
            fresh = self.get(collection, name) or {}
            wanted = body(fresh) if callable(body) else body
            sent = {**wanted, **({"fingerprint": fresh["fingerprint"]} if "fingerprint" in fresh else {})}
            try:
                op = self.retrying(f"update {collection}/{name}", functools.partial(
                    self.rest.request, "PUT" if put else "PATCH", f"{self.project}/{_API[collection].path}/{name}",
                    body=sent), passthrough=(412,))
            except ComputeApiError:  # 412
                if attempt == self.retries:
                    raise UserError(f"update {collection}/{name}: changed concurrently too often") from None
                continue
            self.wait(f"update {collection}/{name}", op)
            return

    def call(self, what: str, collection: str, name: str, method: str, body: dict[str, Any]) -> None:
        """A custom method (``setUrlMap``, ``setTarget``…) on one resource, and wait for it."""
        op = self.retrying(what, functools.partial(
            self.rest.post, f"{_API[collection].custom or _API[collection].path}/{name}/{method}", body))
        self.wait(what, op)


@dataclass
class Actual:
    resources: dict[str, dict[str, Any]]  # key → REST JSON
    groups: dict[str, dict[str, Any]]  # group URL → instance group JSON


def read_named(api: ComputeApi, namer: Namer) -> dict[str, dict[str, Any]]:
    """Every resource named like this load balancer's, owned or not: one filtered list per collection, all at
    once (nine round trips one after the other were most of a no-op plan's time against the API)."""
    regex = f"{namer.prefix}-[a-z]+-{namer.lb}(-.*)?"
    found: dict[str, dict[str, Any]] = {}
    # Plus the forwarding rules `lb takeover` adopted: they keep the user's names and carry our label.
    queries = [(collection, f'name eq "{regex}"') for collection in ORDER]
    queries[ORDER.index("globalForwardingRules")] = (
        "globalForwardingRules", f'(name eq "{regex}") OR (labels.{LABEL_KEY} = "{namer.lb}")')
    with ThreadPoolExecutor(max_workers=len(queries)) as pool:
        listed = list(pool.map(lambda q: api.list(q[0], where=q[1]), queries))
    for (collection, _), items in zip(queries, listed, strict=True):
        for item in items:
            found[f"{collection}/{item['name']}"] = item
    return found


def adopted_rules(desired: Desired, actual: Actual) -> Desired:
    """``desired`` with each forwarding rule we would create replaced by the rule `lb takeover` adopted for the
    same port (the user's name, IP and port kept; its description cannot change): the adopted rule is then
    updated in place, never deleted and recreated beside itself."""
    adopted = {key: have for key, have in actual.resources.items() if key.startswith("globalForwardingRules/")
               and key not in desired.resources and desired.namer.owns(have)}
    if not adopted:
        return desired
    resources = dict(desired.resources)
    for key, r in desired.resources.items():
        if r.collection != "globalForwardingRules" or key in actual.resources:
            continue
        port = _port_range(r.body)
        match = next((k for k, have in sorted(adopted.items()) if _port_range(have) == port), None)
        if match is None:
            continue
        have = adopted.pop(match)
        body = {**r.body, "name": have["name"], "description": have.get("description")}
        del resources[key]
        resources[match] = Resource(r.collection, have["name"], body, r.deps, r.zone)
    return replace(desired, resources=resources)


def read_actual(api: ComputeApi, desired: Desired, known_groups: dict[str, dict[str, Any]] | None = None, *,
                named: dict[str, dict[str, Any]] | None = None) -> Actual:
    """Everything of this load balancer that exists: one list per collection (``named``: read already, by
    :func:`read_named`), plus the instance groups (``known_groups``, as discovery read them, are not read again)."""
    found = dict(named) if named is not None else read_named(api, desired.namer)
    address = next((r for r in desired.resources.values() if r.collection == "globalAddresses"), None)
    if address is not None and address.key not in found:
        got = api.get("globalAddresses", address.name)
        if got is not None:
            found[address.key] = got
    check_address_ports_free(api, desired, found)
    # Also the groups our backend services still use: a removed cluster's groups lose our named ports.
    groups = {_canonical(g) for g in {np.group for np in desired.named_ports} | _backend_groups(desired.namer, found)}
    known = {_canonical(url): data for url, data in (known_groups or {}).items() if _canonical(url) in groups}
    return Actual(found, {**known, **read_groups(api, groups - set(known))})


def _port_range(rule: dict[str, Any]) -> tuple[int, int]:
    text = str(rule.get("portRange") or "1-65535")  # no range: every port (a rule of another protocol or kind)
    low, _, high = text.partition("-")
    return int(low), int(high or low)


def check_address_ports_free(api: ComputeApi, desired: Desired, found: dict[str, dict[str, Any]]) -> None:
    """Refuse, before any write, when a forwarding rule gitlab-mci does not own for this load balancer already
    serves a port we need on the address (kubemci's `mci1-fw--<lb>` on the recipe's IP, say): Compute accepts
    every resource of the chain and refuses only the last one, the rule (``IP address is in-use``)."""
    address = next((r for r in desired.resources.values() if r.collection == "globalAddresses"), None)
    ip = (found.get(address.key) or {}).get("address") if address is not None else None
    if address is None or not ip:
        return  # an address still to be reserved has no rules yet
    ours = {r.name: _port_range(r.body) for r in desired.resources.values() if r.collection == "globalForwardingRules"}
    for rule in api.list("globalForwardingRules", where=f'IPAddress = "{ip}"'):
        if rule["name"] in ours or desired.namer.owns(rule):
            continue  # ours (a same-named rule we do not own is refused by diff, or adopted with --adopt)
        low, high = _port_range(rule)
        for name, (port, _) in sorted(ours.items()):
            if low <= port <= high:
                ports = f"port {low}" if low == high else f"ports {low}-{high}"
                raise UserError(
                    f"forwarding rule {rule['name']} (not gitlab-mci's) already serves {ip} {ports} on address "
                    f"{address.name}, which {name} needs: remove that rule (and what only it uses), or choose "
                    "another address with --static-ip")


def _backend_groups(namer: Namer, found: dict[str, dict[str, Any]]) -> set[str]:
    return {b["group"] for key, item in found.items() if key.startswith("backendServices/") and namer.owns(item)
            for b in item.get("backends", []) if "/instanceGroups/" in b.get("group", "")}


def read_groups(api: ComputeApi, wanted: set[str]) -> dict[str, dict[str, Any]]:
    """The instance groups (our named ports live there): one aggregated list per project reads them all."""
    groups: dict[str, dict[str, Any]] = {}
    wanted = {_canonical(g) for g in wanted}
    if not wanted:
        return groups
    for project in sorted({g.split("/projects/", 1)[1].split("/", 1)[0] for g in wanted}):
        listed = api.retrying(f"list instance groups of {project}", functools.partial(
            api.rest.aggregated, "instanceGroups", project=project))
        for _, group in listed:
            if _canonical(group["selfLink"]) in wanted:
                groups[_canonical(group["selfLink"])] = group
    return groups


def _canonical(url: str) -> str:
    """Instance group URLs compared whatever the endpoint's host (the simulator's or Google's)."""
    return "https://www.googleapis.com/compute/v1/" + url.split("/compute/v1/", 1)[-1]


def kept_addresses(desired: Desired, actual: Actual, *, release_ip: bool = False) -> list[dict[str, Any]]:
    """Addresses gitlab-mci reserved that the desired state no longer uses (a switch to --static-ip): kept unless
    ``release_ip`` — the IP is what DNS records point at, so releasing it is always asked for explicitly."""
    if release_ip:
        return []
    return [have for key, have in sorted(actual.resources.items())
            if key.startswith("globalAddresses/") and key not in desired.resources and desired.namer.owns(have)]


def notes(desired: Desired, actual: Actual, *, release_ip: bool = False) -> list[str]:
    """What a plan should say besides its changes: how routing behaves, what is kept."""
    out = list(desired.notes)
    for have in kept_addresses(desired, actual, release_ip=release_ip):
        out.append(f"globalAddresses/{have['name']} ({have.get('address', '?')}) is kept though unused: gitlab-mci "
                   "reserved it and DNS may point at it; pass --release-ip to delete it")
    return out


def _route_actions(url_map: dict[str, Any]) -> dict[str, Any]:
    """The URL map's default route actions, its own and each path matcher's ("" is the map's)."""
    actions = {"": url_map.get("defaultRouteAction")}
    actions.update({str(m.get("name")): m.get("defaultRouteAction") for m in url_map.get("pathMatchers") or []})
    return {k: _normal(v) for k, v in actions.items() if v}


def diff(desired: Desired, actual: Actual, *, adopt: bool = False, release_ip: bool = False) -> list[Change]:
    """The changes that turn ``actual`` into ``desired``; refuses to touch what gitlab-mci does not own. An owned
    address no longer wanted is deleted only with ``release_ip``."""
    desired = adopted_rules(desired, actual)
    namer = desired.namer
    changes: list[Change] = []
    for key, r in desired.resources.items():
        have = actual.resources.get(key)
        if have is None:
            changes.append(Change("create", key, r.collection, r.name, r.body, deps=r.deps))
            continue
        user_address = r.collection == "globalAddresses" and not desired.address_owned
        if not namer.owns(have):
            if user_address:
                continue  # the user's static IP: used as it is, never changed
            if not adopt:
                raise UserError(f"{r.collection}/{r.name} exists but was not created by gitlab-mci for load "
                                f"balancer {namer.lb!r}; delete or rename it, or pass --adopt")
        if user_address:
            continue
        if r.collection == "sslCertificates":
            continue  # immutable and named by content: a different certificate is a different resource
        body = dict(r.body)
        compare = _as_served(r.collection, body, actual)
        changed = {k: (have.get(k), v) for k, v in compare.items() if _subset_differs(v, have.get(k))}
        if r.collection == "urlMaps" and _route_actions(have) != _route_actions(body):
            # A route action we set and no longer want (the 404 for unmatched requests, once the Ingress has a
            # default backend) is absent from the desired body, which the subset comparison cannot see.
            changed["defaultRouteAction"] = (_route_actions(have), _route_actions(body))
        if not namer.owns(have):
            changed["description"] = (have.get("description"), namer.description)
        if changed:
            action = "update"
            if r.collection == "globalForwardingRules" and any(k in changed for k in _FR_IMMUTABLE):
                action = "replace"
                if r.name != namer.name("forwardingRule", r.name.rsplit("-", 1)[-1]):
                    # Adopted by `lb takeover`: the user's rule on the user's IP is never deleted by an apply.
                    raise UserError(f"forwarding rule {r.name} (taken over by lb takeover) would have to be "
                                    f"recreated to change {', '.join(k for k in _FR_IMMUTABLE if k in changed)}; "
                                    "pass --static-ip with the address it serves (and the same --scheme)")
            changes.append(Change(action, key, r.collection, r.name, body, changed, have, r.deps))
    wanted = {_canonical(np.group): np.ports for np in desired.named_ports}
    changes += _named_port_changes(namer, actual, wanted)
    kept = {f"globalAddresses/{a['name']}" for a in kept_addresses(desired, actual, release_ip=release_ip)}
    for key, have in actual.resources.items():
        if key not in desired.resources and namer.owns(have) and key not in kept:
            collection = key.split("/", 1)[0]
            changes.append(Change("delete", key, collection, have["name"], actual=have))
    return changes


def destroy_changes(namer: Namer, actual: Actual, *, release_ip: bool = False) -> list[Change]:
    """Deleting every owned resource (the global IP only with ``release_ip``) and removing our named ports."""
    changes = []
    for key, have in actual.resources.items():
        if not namer.owns(have):
            continue
        collection = key.split("/", 1)[0]
        if collection == "globalAddresses" and not release_ip:
            continue
        changes.append(Change("delete", key, collection, have["name"], actual=have))
    return changes + _named_port_changes(namer, actual, {})


def _named_port_changes(namer: Namer, actual: Actual, wanted: dict[str, dict[str, int]]) -> list[Change]:
    """Per instance group: add the named ports we need (before the backend services that use them), and release
    ours that are no longer needed (after the backend services stopped using them) — two changes, so a node port
    can move without a dependency cycle. Other named ports on the group are never touched."""
    changes: list[Change] = []
    for url in sorted(set(actual.groups) | set(wanted)):
        current = {p["name"]: p["port"] for p in actual.groups.get(url, {}).get("namedPorts", [])}
        want = wanted.get(url, {})
        add = {k: v for k, v in want.items() if current.get(k) != v}
        stale = sorted(k for k in current if namer.owns_port(k) and k not in want)
        key, name = f"namedPorts/{url.split('/compute/v1/')[-1]}", url.rsplit("/", 1)[1]
        planned = {"ports": current, "fingerprint": actual.groups.get(url, {}).get("fingerprint")}
        if add:
            changes.append(Change("update", key, "namedPorts", name,
                                  {"group": url, "add": add, "remove": [], "planned": planned},
                                  {"namedPorts": (current, {**current, **add})}))
        if stale:
            # After the add on the same group (if any), whose write changes the fingerprint: read fresh then.
            after = {k: v for k, v in {**current, **add}.items() if k not in stale}
            changes.append(Change("update", f"{key}#release", "namedPorts", name,
                                  {"group": url, "add": {}, "remove": stale,
                                   "planned": {} if add else planned}, {"namedPorts": (current, after)}))
    return changes


def read_for_destroy(api: ComputeApi, namer: Namer, groups: set[str]) -> Actual:
    """What to delete: everything named and owned, and the groups that carry our named ports — those our backend
    services use plus those of the clusters given — so a destroy works after the app or a cluster is gone."""
    found = read_named(api, namer)
    return Actual(found, read_groups(api, groups | _backend_groups(namer, found)))


def _set_named_ports(api: ComputeApi, group: str, add: dict[str, int], remove: list[str],
                     planned: dict[str, Any]) -> None:
    """Write the group's named ports from what the plan read (its fingerprint guards against a change since);
    on a 412 — another load balancer or a person changed them — read them fresh and write again."""
    parts = group.split("/compute/v1/", 1)[1].split("/")
    project, zone, name = parts[1], parts[3], parts[5]
    path = f"zones/{zone}/instanceGroups/{name}"

    def read() -> tuple[dict[str, int], str]:
        fresh = api.retrying(f"read instance group {name}", functools.partial(api.rest.get, path, project=project))
        return {p["name"]: p["port"] for p in fresh.get("namedPorts", [])}, fresh["fingerprint"]

    # Never write without a fingerprint: that would overwrite whatever is there now.
    current, fingerprint = (dict(planned["ports"]), planned["fingerprint"]) if planned.get("fingerprint") else read()
    for attempt in range(api.retries + 1):
        ports = {k: v for k, v in current.items() if k not in remove}
        ports.update(add)
        body = {"namedPorts": [{"name": k, "port": v} for k, v in sorted(ports.items())], "fingerprint": fingerprint}
        try:
            op = api.retrying(f"set named ports on {name}", functools.partial(
                api.rest.post, f"{path}/setNamedPorts", body, project=project), passthrough=(412,))
        except ComputeApiError:  # 412
            if attempt == api.retries:
                raise UserError(f"set named ports on {name}: changed concurrently too often") from None
            current, fingerprint = read()
            continue
        api.wait(f"set named ports on {name}", op)
        return


def _run_one(api: ComputeApi, c: Change) -> None:
    if c.collection == "namedPorts":
        _set_named_ports(api, c.body["group"], c.body["add"], c.body["remove"], c.body["planned"])
        return
    if c.action == "create":
        api.insert(c.collection, c.body)
    elif c.action == "delete":
        api.delete(c.collection, c.name)
    elif c.action == "replace":
        api.delete(c.collection, c.name)
        api.insert(c.collection, c.body)
    elif c.collection in ("targetHttpProxies", "targetHttpsProxies"):
        if "urlMap" in c.fields:
            api.call(f"point {c.name} at its URL map", c.collection, c.name, "setUrlMap",
                     {"urlMap": c.body["urlMap"]})
        if "sslCertificates" in c.fields:
            # New certificates exist before this (deps); old ones are deleted after it (see execute).
            api.call(f"set certificates of {c.name}", c.collection, c.name, "setSslCertificates",
                     {"sslCertificates": c.body["sslCertificates"]})
        if "description" in c.fields:  # adopted: our marker, through the proxy's patch
            api.patch(c.collection, c.name, {"description": c.body["description"]})
    elif c.collection == "globalForwardingRules":
        # Retarget in place (no downtime); labels through setLabels.
        if "target" in c.fields:
            api.call(f"retarget {c.name}", c.collection, c.name, "setTarget", {"target": c.body["target"]})
        if "labels" in c.fields or "description" in c.fields:
            fresh = api.get(c.collection, c.name) or {}
            body = {"labels": c.body.get("labels", {})}
            if fresh.get("labelFingerprint"):
                body["labelFingerprint"] = fresh["labelFingerprint"]
            api.call(f"label {c.name}", c.collection, c.name, "setLabels", body)
    else:
        api.patch(c.collection, c.name, c.body, put=c.collection == "urlMaps")


@dataclass
class Outcome:
    done: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    skipped: list[str] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)  # key → how long its own calls took (done or failed)


def _timed(api: ComputeApi, c: Change) -> float:
    """Run one change; how long it took, from when a worker picked it up (not from when it was queued)."""
    began = time.monotonic()
    _run_one(api, c)
    return time.monotonic() - began


def execute(api: ComputeApi, changes: list[Change], *, concurrency: int = 64,
            progress: Callable[[str, Change, float], None] | None = None) -> Outcome:
    """Run changes as a graph: creates/updates after what they reference, deletes after what references them.

    ``progress(event, change, seconds)``: ``start`` (0), ``done`` or ``failed`` with the change's own duration.
    """
    keys = {c.key for c in changes}
    deps: dict[str, set[str]] = {}
    by_key = {c.key: c for c in changes}
    for c in changes:
        if c.action == "delete":
            # A delete waits for every change that stops a resource referencing it: the referrer's own delete,
            # or its update (a URL map moved to the new backend service, a proxy given the new certificate).
            deps[c.key] = {o.key for o in changes if o.action in ("delete", "replace", "update") and o.key != c.key
                           and _references(o, c)}
        elif c.collection == "namedPorts" and c.body["remove"]:
            # Our named ports go only after the backend services that used them changed or went.
            deps[c.key] = {o.key for o in changes if o.collection == "backendServices"
                           and o.action in ("delete", "update")}
        elif c.collection == "namedPorts":
            deps[c.key] = set()
        else:
            # Traffic must never reach a group before it has the named port: whatever can route traffic (a backend
            # service being changed, the URL map, proxies, rules) waits for the named ports. A backend service
            # being created carries no traffic until the URL map points at it, so it need not wait — which takes
            # the 45 named-port writes of 15 clusters × 3 zones off the chain's critical path.
            routes = c.collection in _ROUTING or (c.collection == "backendServices" and c.action != "create")
            deps[c.key] = {d for d in c.deps if d in keys} | ({
                n.key for n in changes if n.collection == "namedPorts" and not n.body["remove"]} if routes else set())
    outcome = Outcome()
    pending = set(by_key)
    running: dict[Future[float], str] = {}
    began: dict[str, float] = {}
    with ThreadPoolExecutor(max_workers=max(1, concurrency)) as pool:
        while pending or running:
            # Skip, transitively, whatever waits on a failure or a skip: repeat until no more is skipped, since
            # a dependent may sort before what it waits on.
            blocked = set(outcome.failed) | set(outcome.skipped)
            while True:
                newly = sorted(k for k in pending if deps[k] & blocked)
                if not newly:
                    break
                pending.difference_update(newly)
                outcome.skipped += newly
                blocked.update(newly)
            for key in sorted(pending):
                if deps[key] <= set(outcome.done):
                    pending.discard(key)
                    if progress:
                        progress("start", by_key[key], 0.0)
                    began[key] = time.monotonic()
                    running[pool.submit(_timed, api, by_key[key])] = key
            if not running:
                # Nothing can start and nothing is running: what is left waits on itself.
                for key in sorted(pending):
                    outcome.failed[key] = "dependency cycle (a bug in gitlab-mci's plan)"
                break
            finished, _ = wait(running, return_when=FIRST_COMPLETED)
            for fut in finished:
                key = running.pop(fut)
                exc = fut.exception()
                if exc is None:
                    outcome.done.append(key)
                    outcome.seconds[key] = fut.result()
                    if progress:
                        progress("done", by_key[key], outcome.seconds[key])
                else:
                    outcome.failed[key] = str(exc)
                    # A failed change's time is measured from its submission (its worker's clock is lost).
                    outcome.seconds[key] = time.monotonic() - began[key]
                    if progress:
                        progress("failed", by_key[key], outcome.seconds[key])
    return outcome


def _references(referrer: Change, target: Change) -> bool:
    """Whether the live ``referrer`` points at ``target`` (so it must go first)."""
    # Only what the referrer points at counts, not who points at it (usedBy, users) or its own link.
    have = {k: v for k, v in (referrer.actual or {}).items() if k not in ("usedBy", "users", "selfLink")}
    if target.collection == "globalAddresses":
        return bool(target.actual) and have.get("IPAddress") == (target.actual or {}).get("address")
    segment = {"globalForwardingRules": "forwardingRules"}.get(target.collection, target.collection)
    return f"/global/{segment}/{target.name}\"" in json.dumps(have)
