"""`lb takeover`: move a running load balancer that gitlab-mci did not build (kubemci's, a hand-made one) onto
gitlab-mci's chain with no failed request, and back (``--rollback``) while the old chain exists.

No local state: every run reads Compute (:func:`read_world`), recomputes the whole plan from what it shows
(:func:`plan`, :func:`rollback_plan`) and runs its first step, then reads again. A run stopped between any two
writes is finished by the next. The steps (docs/takeover.md says why each is safe):

1. build gitlab-mci's chain beside the old one (``gmci-…``), without forwarding rules: Compute refuses a second
   rule on the same IP and port;
2. per forwarding rule on the address: adopt it (labels: ``gitlab-mci-lb``, the proxy it serves and the old
   chain's resources), then — once our backends are healthy in every cluster and zone — ``setTarget`` it onto our
   proxy (same IP and port: no gap);
3. for ``--scheme EXTERNAL_MANAGED`` from a classic chain: Compute's canary migration of our backend services
   (PREPARE → TEST_BY_PERCENTAGE steps → TEST_ALL_TRAFFIC → scheme), health checked before each step, then the
   forwarding rules' scheme;
4. verify (health, every rule on our proxies), then delete what the old chain used and nothing else uses: proxies,
   URL maps, backend services, health checks; then its firewall rules and named ports; the address and the
   certificates are kept;
5. finish: what `lb apply` with the same inputs would still change, and the record labels removed.
"""

from __future__ import annotations

import copy
import functools
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from gitlab_mci.errors import UserError
from gitlab_mci.lb import engine
from gitlab_mci.lb.chain import (
    Chain,
    Inventory,
    check,
    deletable,
    find_address,
    neg_backends,
    old_chain,
    original_scheme,
    port_of,
    read_inventory,
    ref,
)
from gitlab_mci.lb.desired import NOT_FOUND, Desired, Resource
from gitlab_mci.lb.names import LABEL_KEY, OLD_LABEL, WAS_LABEL, Namer

Obj = dict[str, Any]
STATE = "externalManagedMigrationState"
PERCENT = "externalManagedMigrationTestingPercentage"
PERCENTAGES = (10.0, 50.0)
_PROXY = {80: "targetHttpProxies", 443: "targetHttpsProxies"}


class NotHealthy(UserError):
    """Our backends did not become healthy within the timeout (an error, 1: the takeover promises them)."""


@dataclass
class Settings:
    """How the takeover runs (beyond what to build)."""

    address: str
    contexts: list[str]
    scheme: str = "EXTERNAL_MANAGED"
    timeout: float = 600.0  # for our backends to be healthy
    step_wait: float = 0.0  # after each migration step (Google: changes take minutes to reach its front ends)
    percentages: tuple[float, ...] = PERCENTAGES
    concurrency: int = 64
    poll: float = 0.5


@dataclass
class Step:
    """One step of the plan: a write (or a group of writes) or a check before one."""

    action: str  # build | adopt | switch | migrate | verify | delete | finish | rollback | release | destroy
    text: str
    run: Callable[[], None] | None = None  # None: a check
    healthy_first: bool = False  # our backends must be healthy in every cluster and zone before it runs
    details: list[str] = field(default_factory=list)

    @property
    def writes(self) -> bool:
        return self.run is not None

    def as_json(self) -> Obj:
        return {"action": self.action, "text": self.text, "writes": self.writes,
                "healthyFirst": self.healthy_first, "details": self.details}


@dataclass
class World:
    """One read of Compute: the project's inventory, the old chain on the address, and ours."""

    inv: Inventory
    chain: Chain
    actual: engine.Actual


@dataclass
class Takeover:
    """The inputs, checked and resolved: gitlab-mci's desired chain at the end, and the one to build first."""

    api: engine.ComputeApi
    namer: Namer
    final: Desired
    interim: Desired  # our chain as built beside the old one: the old rules' scheme
    clusters: list[Any]
    settings: Settings

    @property
    def migrates(self) -> bool:
        return _scheme(self.interim) != _scheme(self.final)


def _scheme(desired: Desired) -> str:
    return next((r.body["loadBalancingScheme"] for r in desired.resources.values()
                 if r.collection == "backendServices"), "EXTERNAL")


def with_scheme(desired: Desired, scheme: str) -> Desired:
    """``desired`` as built for ``scheme``: the backend services' and rules' scheme, and no 404 route action
    (fault injection is the global external ALB's; desired.build adds it for EXTERNAL_MANAGED only)."""
    resources: dict[str, Resource] = {}
    for key, r in desired.resources.items():
        body = copy.deepcopy(r.body)
        if r.collection in ("backendServices", "globalForwardingRules"):
            body["loadBalancingScheme"] = scheme
        if r.collection == "urlMaps" and scheme != "EXTERNAL_MANAGED":
            if body.get("defaultRouteAction") == NOT_FOUND:
                del body["defaultRouteAction"]
            for m in body.get("pathMatchers") or []:
                if m.get("defaultRouteAction") == NOT_FOUND:
                    del m["defaultRouteAction"]
        resources[key] = replace(r, body=body)
    return replace(desired, resources=resources, notes=list(desired.notes))


# --- reading -------------------------------------------------------------------------------------------------


def read_world(t: Takeover) -> World:
    """Everything the plan needs, read fresh: the inventory, our resources, the clusters' instance groups."""
    inv = read_inventory(t.api)
    ip, address = find_address(inv, t.settings.address)
    found = engine.read_named(t.api, t.namer)
    for key, r in t.final.resources.items():
        if r.collection == "globalAddresses" and address is not None and address["name"] == r.name:
            found[key] = address
    groups = {g for c in t.clusters for g in c.groups} | engine._backend_groups(t.namer, found)
    actual = engine.Actual(found, engine.read_groups(t.api, groups))
    ports = {url: {p["name"]: p["port"] for p in g.get("namedPorts", [])} for url, g in actual.groups.items()}
    return World(inv, old_chain(inv, t.namer, ip, address, ports), actual)


def _ours(t: Takeover, w: World, collection: str) -> list[Obj]:
    return [v for k, v in sorted(w.actual.resources.items())
            if k.startswith(collection + "/") and t.namer.owns(v) and not k.startswith("globalForwardingRules/")]


def _our_proxy(t: Takeover, port: int) -> Resource | None:
    return next((r for r in t.final.resources.values() if r.collection == _PROXY.get(port)), None)


# --- health --------------------------------------------------------------------------------------------------


def unhealthy(t: Takeover) -> list[str]:
    """Our backends (backend service / instance group) without a healthy instance, by getHealth; [] when every
    cluster and zone serves."""
    found = engine.read_named(t.api, t.namer)
    pairs = [(bs["name"], b["group"]) for key, bs in sorted(found.items())
             if key.startswith("backendServices/") and t.namer.owns(bs) for b in bs.get("backends", [])]
    if not pairs:
        return ["no backend service of ours yet"]
    bad = []
    for name, group in pairs:
        answer = t.api.retrying(f"read the health of {name}", functools.partial(
            t.api.rest.post, f"global/backendServices/{name}/getHealth", {"group": group}))
        if not any(h.get("healthState") == "HEALTHY" for h in answer.get("healthStatus", [])):
            bad.append(f"{name} / {group.rsplit('/', 1)[-1]}")
    return bad


def wait_healthy(t: Takeover) -> float:
    """Poll getHealth until every cluster and zone serves (bounded by the timeout); the seconds it took."""
    began = time.monotonic()
    while True:
        bad = unhealthy(t)
        if not bad:
            return time.monotonic() - began
        if time.monotonic() - began >= t.settings.timeout:
            raise NotHealthy(f"gitlab-mci's backends are not healthy after {t.settings.timeout:g}s ({bad[0]}"
                             f"{f' and {len(bad) - 1} more' if len(bad) > 1 else ''}); nothing was moved: run "
                             "again once they are, or --rollback")
        time.sleep(t.settings.poll)


# --- the takeover plan ---------------------------------------------------------------------------------------


def _rank(bs: Obj, percentages: tuple[float, ...]) -> int:
    """How far a backend service is along the levels PREPARE, each percentage, TEST_ALL_TRAFFIC, scheme."""
    if bs.get("loadBalancingScheme") == "EXTERNAL_MANAGED":
        return len(percentages) + 3
    state = bs.get(STATE)
    if state == "PREPARE":
        return 1
    if state == "TEST_BY_PERCENTAGE":
        p = float(bs.get(PERCENT) or 0.0)
        return 1 + sum(1 for q in percentages if p >= q)
    if state == "TEST_ALL_TRAFFIC":
        return len(percentages) + 2
    return 0


def _levels(percentages: tuple[float, ...]) -> list[tuple[str, Obj]]:
    out: list[tuple[str, Obj]] = [("externalManagedMigrationState PREPARE", {STATE: "PREPARE"})]
    out += [(f"externalManagedMigrationState TEST_BY_PERCENTAGE {p:g}%", {STATE: "TEST_BY_PERCENTAGE", PERCENT: p})
            for p in percentages]
    out.append(("externalManagedMigrationState TEST_ALL_TRAFFIC", {STATE: "TEST_ALL_TRAFFIC"}))
    out.append(("loadBalancingScheme EXTERNAL_MANAGED", {"loadBalancingScheme": "EXTERNAL_MANAGED"}))
    return out


def _build_desired(t: Takeover, w: World) -> Desired:
    """Our chain without forwarding rules, each backend service at the scheme Compute has for it now (the
    migration moves it; the build must not)."""
    ours = _ours(t, w, "backendServices")
    done = bool(ours) and all(bs.get("loadBalancingScheme") == _scheme(t.final) for bs in ours)
    basis = t.final if done or not t.migrates else t.interim
    resources = {}
    for key, r in basis.resources.items():
        if r.collection == "globalForwardingRules":
            continue
        have = w.actual.resources.get(key)
        if r.collection == "backendServices" and have is not None:
            r = replace(r, body={**r.body, "loadBalancingScheme": have.get("loadBalancingScheme")})
        resources[key] = r
    return replace(basis, resources=resources)


def _execute(t: Takeover, changes: list[engine.Change]) -> None:
    outcome = engine.execute(t.api, changes, concurrency=t.settings.concurrency)
    if outcome.failed:
        key, why = next(iter(outcome.failed.items()))
        raise UserError(f"{key}: {why} (run lb takeover again to continue)")


def _set_labels(t: Takeover, name: str, labels: dict[str, str]) -> None:
    fresh = t.api.get("globalForwardingRules", name) or {}
    t.api.call(f"label {name}", "globalForwardingRules", name, "setLabels",
               {"labels": labels, "labelFingerprint": fresh.get("labelFingerprint")})


def _set_target(t: Takeover, name: str, target: str) -> None:
    t.api.call(f"retarget {name}", "globalForwardingRules", name, "setTarget", {"target": target})


def _describe(changes: list[engine.Change]) -> list[str]:
    symbol = {"create": "+", "update": "~", "delete": "-", "replace": "-/+"}
    return [f"{symbol[c.action]} {c.collection}/{c.name}" for c in changes]


def plan(t: Takeover, w: World) -> list[Step]:
    """The steps still to run, from what Compute shows now (a finished takeover: [])."""
    steps: list[Step] = []
    chain = w.chain
    build = [c for c in engine.diff(_build_desired(t, w), w.actual) if c.action != "delete"
             and c.collection != "globalForwardingRules"]
    if build:
        steps.append(Step("build", f"build gitlab-mci's chain beside the old one ({len(build)} change(s))",
                          functools.partial(_execute, t, build), details=_describe(build)))
    record = chain.labels()
    for rule in chain.rules:
        port = port_of(rule)
        proxy = _our_proxy(t, port)
        if proxy is None:
            raise UserError(f"forwarding rule {rule['name']} serves port {port}, which gitlab-mci's chain does not "
                            "serve (a bug: the chain's listeners decide ours)")
        labels = dict(rule.get("labels") or {})
        if labels.get(LABEL_KEY) != t.namer.lb:
            target = ref(rule.get("target"))
            wanted = {**labels, LABEL_KEY: t.namer.lb, **record}
            if target is not None and target[0] in WAS_LABEL:
                wanted[WAS_LABEL[target[0]]] = target[1]
            steps.append(Step("adopt", f"adopt globalForwardingRules/{rule['name']} (:{port}): label "
                              f"{LABEL_KEY}={t.namer.lb} and record the old chain for --rollback",
                              functools.partial(_set_labels, t, rule["name"], wanted)))
        if ref(rule.get("target")) != (proxy.collection, proxy.name):
            url = t.final.url(proxy)
            steps.append(Step("switch", f"switch globalForwardingRules/{rule['name']} (:{port}) to "
                              f"{proxy.collection}/{proxy.name} (setTarget: same IP and port)",
                              functools.partial(_set_target, t, rule["name"], url), healthy_first=True))
    if t.migrates:
        ours = {r.name: w.actual.resources.get(k) or {} for k, r in t.final.resources.items()
                if r.collection == "backendServices"}
        for i, (text, body) in enumerate(_levels(t.settings.percentages), start=1):
            pending = sorted(n for n, bs in ours.items() if _rank(bs, t.settings.percentages) < i)
            if pending:
                steps.append(Step("migrate", f"migrate backendServices/{', '.join(pending)}: {text}",
                                  functools.partial(_patch_all, t, "backendServices", pending, body),
                                  healthy_first=True))
        classic = [r["name"] for r in chain.rules if r.get("loadBalancingScheme", "EXTERNAL") != _scheme(t.final)]
        if classic:
            steps.append(Step("migrate", f"migrate globalForwardingRules/{', '.join(classic)}: loadBalancingScheme "
                              f"{_scheme(t.final)}", functools.partial(
                                  _patch_all, t, "globalForwardingRules", classic,
                                  {"loadBalancingScheme": _scheme(t.final)}), healthy_first=True))
    doomed = deletable(chain, w.inv, ignore_rules={r["name"] for r in chain.rules})
    old = [f"{c}/{n}" for c, names in doomed.items() for n in names]
    np_changes = _old_named_ports(t, w, doomed)
    firewalls = [n for n in chain.names("firewalls") if w.inv.get("firewalls", n) is not None]
    if old or firewalls or np_changes:
        steps.append(Step("verify", "verify: every rule on gitlab-mci's proxies, its backends healthy in every "
                          "cluster and zone", None, healthy_first=True))
    if old:
        steps.append(Step("delete", f"delete the old chain: {', '.join(old)}",
                          functools.partial(_delete_old, t, w, doomed)))
    if firewalls or np_changes:
        details = [f"- firewalls/{n}" for n in firewalls] + [
            f"~ instanceGroups/{c.name}: remove named port {', '.join(c.body['remove'])}" for c in np_changes]
        steps.append(Step("delete", "delete the old chain's firewall rules and named ports: "
                          + ", ".join([*(f"firewalls/{n}" for n in firewalls),
                                       *(f"namedPorts/{c.name}" for c in np_changes)]),
                          functools.partial(_delete_rest, t, w, firewalls, np_changes), details=details))
    if not steps:
        finish = _finish(t, w)
        if finish:
            steps.append(Step("finish", "finish: what `lb apply` with the same inputs still changes, and the "
                              "rules' record labels removed", functools.partial(_execute, t, finish),
                              details=_describe(finish)))
    else:
        steps.append(Step("finish", "finish: what `lb apply` with the same inputs still changes (computed then), "
                          "and the rules' record labels removed", None))
    return steps


def _patch_all(t: Takeover, collection: str, names: list[str], body: Obj) -> None:
    for name in names:
        t.api.patch(collection, name, body)


def _old_named_ports(t: Takeover, w: World, doomed: dict[str, list[str]]) -> list[engine.Change]:
    """Remove the old chain's named ports from the clusters' instance groups, unless a backend service that stays
    (not the old chain's being deleted, not ours) uses that name on that group."""
    kept = [bs for bs in w.inv.all("backendServices") if bs["name"] not in doomed.get("backendServices", [])]
    changes = []
    for url, group in sorted(w.actual.groups.items()):
        current = {p["name"]: p["port"] for p in group.get("namedPorts", [])}
        tail = url.split("/projects/", 1)[-1]
        remove = sorted(n for n in w.chain.port_names if n in current and not any(
            bs.get("portName") == n and any(str(b.get("group", "")).endswith(tail) for b in bs.get("backends", []))
            for bs in kept))
        if remove:
            changes.append(engine.Change("update", f"namedPorts/{tail}#old", "namedPorts", url.rsplit("/", 1)[1],
                                         {"group": url, "add": {}, "remove": remove,
                                          "planned": {"ports": current, "fingerprint": group.get("fingerprint")}}))
    return changes


def _delete_old(t: Takeover, w: World, doomed: dict[str, list[str]]) -> None:
    """The old proxies, URL maps, backend services and health checks, each after what refers to it."""
    if any(ref(r.get("target")) in {(c, n) for c in WAS_LABEL for n in doomed.get(c, [])} for r in w.chain.rules):
        raise UserError("a forwarding rule on the address still uses the old chain (a bug: verify first)")
    changes = [engine.Change("delete", f"{c}/{n}", c, n, actual=w.inv.get(c, n))
               for c, names in doomed.items() for n in names]
    _execute(t, changes)


def _delete_rest(t: Takeover, w: World, firewalls: list[str], named: list[engine.Change]) -> None:
    _execute(t, [engine.Change("delete", f"firewalls/{n}", "firewalls", n, actual=w.inv.get("firewalls", n))
                 for n in firewalls] + named)


def _finish(t: Takeover, w: World) -> list[engine.Change]:
    """What `lb apply` would still change (the URL map's 404 once managed, say), plus dropping the rules'
    record labels now that the old chain is gone."""
    changes = engine.diff(t.final, w.actual)
    for rule in w.chain.rules:
        labels = rule.get("labels") or {}
        stale = [k for k in labels if k.startswith(OLD_LABEL) or k in WAS_LABEL.values()]
        if stale:
            keep = {k: v for k, v in labels.items() if k not in stale}
            changes.append(engine.Change("update", f"labels/{rule['name']}", "globalForwardingRules", rule["name"],
                                         {"labels": keep}, {"labels": (labels, keep)}, rule))
    return changes


# --- the way back --------------------------------------------------------------------------------------------


def rollback_plan(t: Takeover, w: World) -> list[Step]:
    """Back to the old chain: the rules' scheme back, setTarget to the proxies they served, our labels off, then
    gitlab-mci's chain deleted. Refused once any of the old chain is gone."""
    chain, steps = w.chain, []
    adopted = [r for r in chain.rules if t.namer.owns(r)]
    if adopted:
        gone = [f"{c}/{n}" for c in ("targetHttpProxies", "targetHttpsProxies", "urlMaps", "backendServices",
                                     "healthChecks") for n in chain.names(c) if w.inv.get(c, n) is None]
        missing = [r["name"] for r in adopted if r["name"] not in chain.was]
        if gone or missing:
            what = ", ".join(gone) or f"the proxy {missing[0]} served is not recorded"
            raise UserError(f"cannot roll back: the old chain is already partly deleted ({what}); run lb takeover "
                            "again to finish the takeover")
    old_schemes = {bs.get("loadBalancingScheme", "EXTERNAL") for bs in chain.existing(w.inv, "backendServices")}
    old_scheme = old_schemes.pop() if len(old_schemes) == 1 else "EXTERNAL"
    back = [r["name"] for r in adopted if r.get("loadBalancingScheme", "EXTERNAL") != old_scheme]
    if back:
        steps.append(Step("rollback", f"roll back globalForwardingRules/{', '.join(back)}: loadBalancingScheme "
                          f"{old_scheme}", functools.partial(_patch_all, t, "globalForwardingRules", back,
                                                             {"loadBalancingScheme": old_scheme})))
    for rule in adopted:
        collection, proxy = chain.was[rule["name"]]
        if ref(rule.get("target")) != (collection, proxy):
            url = t.final.link(collection, proxy)
            steps.append(Step("rollback", f"switch globalForwardingRules/{rule['name']} back to "
                              f"{collection}/{proxy}", functools.partial(_set_target, t, rule["name"], url)))
    for rule in adopted:
        labels = rule.get("labels") or {}
        keep = {k: v for k, v in labels.items()
                if k != LABEL_KEY and not k.startswith(OLD_LABEL) and k not in WAS_LABEL.values()}
        steps.append(Step("release", f"release globalForwardingRules/{rule['name']}: remove gitlab-mci's labels",
                          functools.partial(_set_labels, t, rule["name"], keep)))
    rules = {r["name"] for r in chain.rules}
    ours = engine.Actual({k: v for k, v in w.actual.resources.items()
                          if not (k.startswith("globalForwardingRules/") and v["name"] in rules)}, w.actual.groups)
    destroy = engine.destroy_changes(t.namer, ours)
    if destroy:
        steps.append(Step("destroy", f"delete gitlab-mci's chain ({len(destroy)} change(s))",
                          functools.partial(_execute, t, destroy), details=_describe(destroy)))
    return steps


# --- running -------------------------------------------------------------------------------------------------


def run(t: Takeover, *, rollback: bool = False, progress: Callable[[str], None] = lambda _: None) -> int:
    """Run the plan to the end, one step at a time, reading Compute again after each; the number of steps run."""
    began = time.monotonic()
    planner = rollback_plan if rollback else plan
    for count in range(200):  # a bound: each step changes what the next read shows
        w = read_world(t)
        steps = planner(t, w)
        first = next((s for s in steps if s.writes), None)
        if first is None:
            return count
        checks = steps[:steps.index(first)]
        if first.healthy_first or any(s.healthy_first for s in checks):
            waited = wait_healthy(t)
            progress(f"[wait] getHealth: gitlab-mci's backends healthy in every cluster and zone ({waited:.1f}s, "
                     f"{time.monotonic() - began:.1f}s elapsed)")
        step_began = time.monotonic()
        assert first.run is not None
        first.run()
        if first.action == "migrate" and t.settings.step_wait > 0:
            time.sleep(t.settings.step_wait)  # a hold, not a wait for a state: Google's front ends take minutes
        progress(f"[{first.action}] {first.text} ({time.monotonic() - step_began:.1f}s, "
                 f"{time.monotonic() - began:.1f}s elapsed)")
    raise UserError("lb takeover did not converge after 200 steps (a bug)")


# --- inputs --------------------------------------------------------------------------------------------------


def prepare(inputs: Any, settings: Settings) -> Takeover:
    """Check the inputs, read the chain on the address and the clusters: nothing is written before this returns.

    ``inputs``: :class:`gitlab_mci.lb.inputs.Inputs` without the listeners, which come from the chain (HTTP when
    a rule serves port 80, the certificates of the proxy on port 443, an HTTPS redirect when port 80 redirects)."""
    from gitlab_mci.gcp import Compute
    from gitlab_mci.lb import inputs as inputs_mod
    from gitlab_mci.lb import traffic
    from gitlab_mci.lb.names import check_lb_name

    check_lb_name(inputs.lb)
    inputs_mod.routing(inputs)  # the routing is checked offline, before any cloud call
    if not settings.contexts:
        raise UserError("no clusters: pass --context for every production cluster (or set MCI_CONTEXTS)")
    if not settings.address.strip():
        raise UserError("--address: give the IP address or the name of the global address of the running chain")
    if inputs.kubeconfig:
        import os

        os.environ["KUBECONFIG"] = str(inputs.kubeconfig)
    api = engine.ComputeApi(Compute.from_env(inputs.project))
    namer = Namer(inputs.lb)
    inv = read_inventory(api)
    ip, address = find_address(inv, settings.address)
    chain = old_chain(inv, namer, ip, address, {})
    if not chain.rules:
        raise UserError(f"--address {settings.address}: no forwarding rule uses {ip}; nothing to take over")
    if address is None:
        raise UserError(f"--address {settings.address}: {ip} is not a reserved global address; reserve it first "
                        f"(gcloud compute addresses create NAME --global --addresses {ip}) so that it is kept")
    check(chain, inv, namer, set(), set(), settings.address, settings.contexts, clusters_known=False)
    old_scheme = original_scheme(chain, inv, settings.scheme)
    if old_scheme == "EXTERNAL_MANAGED" and settings.scheme == "EXTERNAL":
        raise UserError("--scheme EXTERNAL: the chain on the address is a global external Application Load "
                        "Balancer (EXTERNAL_MANAGED), which cannot become classic")
    ports = {port_of(r): r for r in chain.rules}
    certs: list[str] = []
    redirect = False
    if 443 in ports:
        proxy = inv.get(*(ref(ports[443].get("target")) or ("", "")))
        certs = [str(c).rsplit("/", 1)[-1] for c in (proxy or {}).get("sslCertificates", [])]
    if 80 in ports:
        proxy = inv.get(*(ref(ports[80].get("target")) or ("", "")))
        um = inv.get(*(ref((proxy or {}).get("urlMap")) or ("", "")))
        redirect = bool(((um or {}).get("defaultUrlRedirect") or {}).get("httpsRedirect")) and 443 in ports
    final_inputs = replace(inputs, contexts=settings.contexts, static_ip=address["name"], scheme=settings.scheme,
                           http=80 in ports, https_redirect=redirect, ssl_certificates=certs)
    prepared = inputs_mod.prepare(final_inputs)
    final = prepared.desired
    named = engine.read_named(api, namer)
    traffic.settle(final, engine.Actual(named, {}), prepared.clusters, {})
    if settings.scheme == "EXTERNAL" and any(
            bs.get(STATE) or bs.get("loadBalancingScheme") == "EXTERNAL_MANAGED" for key, bs in named.items()
            if key.startswith("backendServices/") and namer.owns(bs)):
        raise UserError("--scheme EXTERNAL: this takeover already began migrating to EXTERNAL_MANAGED; finish it "
                        "with --scheme EXTERNAL_MANAGED, or go back with --rollback")
    groups = {g for c in prepared.clusters for g in c.groups}
    zones = {z for c in prepared.clusters for z in c.zones}
    negs = {}
    for tail in neg_backends(chain, inv):  # which kind of endpoints: a hybrid or internet NEG is not a cluster
        project, _, path = tail.partition("/")
        got = api.retrying(f"read {tail}", functools.partial(api.rest.get, path, project=project))
        negs[tail] = str(got.get("networkEndpointType") or "GCE_VM_IP_PORT")
    check(chain, inv, namer, groups, zones, settings.address, settings.contexts, neg_types=negs)
    return Takeover(prepared.api, namer, final, with_scheme(final, old_scheme), prepared.clusters, settings)


def apply_hint(t: Takeover) -> str:
    """The `lb apply` options that keep this load balancer as the takeover left it (the routing is the user's)."""
    res = t.final.resources.values()
    address = next((r.name for r in res if r.collection == "globalAddresses"), "?")
    certs = [str(link).rsplit("/", 1)[-1] for r in res if r.collection == "targetHttpsProxies"
             for link in r.body.get("sslCertificates", [])]
    http = any(r.collection == "targetHttpProxies" for r in res)
    redirect = any(r.collection == "urlMaps" and r.body.get("defaultUrlRedirect") for r in res)
    parts = [f"gitlab-mci lb apply --lb {t.namer.lb} --context {','.join(t.settings.contexts)} --static-ip {address}"]
    parts += [f"--ssl-certificate {c}" for c in certs]
    parts += [] if http else ["--no-http"]
    parts += ["--https-redirect"] if redirect else []
    parts.append(f"--scheme {_scheme(t.final)}")
    return " ".join(parts)
