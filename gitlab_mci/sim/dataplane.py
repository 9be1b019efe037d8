"""The simulated load balancer's data plane: real HTTP(S) on loopback, routed and health-checked like Google's.

Every global forwarding rule whose chain is complete (rule → target HTTP(S) proxy → URL map, and a certificate for
HTTPS) gets a :class:`~gitlab_mci.sim.listeners.Listener` on a loopback address (the VIP itself when it is in
127.0.0.0/8, as the emulator's VIPs are; an ephemeral port, since 80 and 443 are rarely free). A request is routed
by the URL map to a backend service and balanced round robin over its HEALTHY backends:

    instance group → instance (a GKE node) → the node port named by ``portName`` in the group's named ports
    → the Service with that node port in the node's cluster → a ready pod selected by it (any node forwards to any
    pod, as with ``externalTrafficPolicy: Cluster``) → the pod's app, which answers JSON naming its cluster, zone
    and pod.

Network endpoint group backends route straight to pods, as container-native load balancing does: to the endpoints
attached in Compute (GKE's NEG controller, :mod:`gitlab_mci.sim.negs`, keeps them in step; their probes pass only
where a firewall rule lets Google's health-check ranges reach the pod port on the nodes, docs/simulator-negs.md), or,
for the NEGs of Google's hosted controllers, to the ready pods of the derived Service.

Pods are the Kubernetes emulator's Pod objects; their "app" runs in-process (no socket per pod). Health checks probe
each instance's node port as configured (path, port, interval, timeout, thresholds); their state drives routing
and ``backendServices.getHealth``. Faults (:meth:`DataPlane.fail`) stop a cluster's or zone's pods or nodes from
answering, so failover can be watched and measured.

Everything is rebuilt from the emulators' state when it changes (a revision counter polled every 100 ms), never
from a request path; the data plane never calls into the Compute emulator while holding its own lock, because the
emulator calls :meth:`DataPlane.group_health` while holding its lock.
"""

from __future__ import annotations

import bisect
import json
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from gitlab_mci.sim import traffic
from gitlab_mci.sim.compute import migration
from gitlab_mci.sim.listeners import Incoming, Listener, Reply, incoming, request_headers, self_signed
from gitlab_mci.sim.urlmap import Route, redirect_target, route

if TYPE_CHECKING:
    from gitlab_mci.sim.compute import ComputeEmulator
    from gitlab_mci.sim.kube import KubeApiServer
    from gitlab_mci.sim.world import ClusterRecord, NodeRecord

Obj = dict[str, Any]
API = "https://www.googleapis.com/compute/v1/"
POLL = 0.1  # seconds between looks at the emulators' revision counters
MODES = ("pods", "nodes")
NO_UPSTREAM = b"no healthy upstream"
CONNECT_ERROR = b"upstream connect error or disconnect/reset before headers. reset reason: connection failure"
# A request still in flight on a removed backend when its connection draining timeout ends: the connection is closed.
DRAINED_CUT = b"upstream connect error or disconnect/reset before headers. reset reason: connection termination"
# Simulator-only response header: which of Google's two front ends served a request during a classic → global
# external Application Load Balancer migration ("classic" or "managed"). Real Google front ends send no such header.
PATH_HEADER = "x-gitlab-mci-sim-path"
# Simulator-only query parameter: hold a request in flight this many seconds before the app answers (see _sim_delay).
DELAY_PARAM = "gitlab-mci-sim-delay"


class UnknownTarget(ValueError):
    """``fail``/``heal`` named neither a cluster nor a zone of the simulated world."""


class _Refused(Exception):
    """Nothing listens on the node port, or the Service has no pod that answers (kube-proxy rejects)."""


class _Unreachable(Exception):
    """The node does not answer at all (a failed node): the caller waits for its timeout."""


@dataclass(frozen=True)
class Pod:
    name: str
    namespace: str
    node: str
    zone: str
    ip: str = ""
    ports: tuple[int, ...] = ()  # the container ports it declares (a NEG endpoint elsewhere is refused); () = any


@dataclass(frozen=True)
class NodePortTarget:
    """A Service port reachable on every node of a cluster at ``nodePort``."""

    service: str  # namespace/name
    pods: tuple[Pod, ...]


@dataclass(frozen=True)
class Backend:
    """One instance of an instance group behind a backend service, with the ports it is served and probed on."""

    instance: str  # URL (for a network endpoint group: "<NEG URL>#<pod>", the endpoint's key)
    group: str  # URL
    node: NodeRecord
    port: int | None  # the serving port (backend service portName in the group's named ports)
    probe_port: int | None
    pod: Pod | None = None  # a network endpoint group's endpoint: traffic goes to the pod itself
    blocked: bool = False  # no firewall rule lets Google's health checkers reach the probe port on this node


@dataclass(frozen=True)
class HealthParams:
    interval: float = 5.0
    timeout: float = 5.0
    healthy_threshold: int = 2
    unhealthy_threshold: int = 2
    path: str = "/"
    host: str | None = None
    kind: str = "HTTP"


@dataclass(frozen=True)
class ServiceView:
    """A backend service as the data plane uses it."""

    url: str
    name: str
    groups: tuple[tuple[str, tuple[Backend, ...]], ...]  # (group URL, its instances) in backend order
    health: HealthParams | None
    port: int
    migration: Obj = field(default_factory=dict)  # scheme and migration fields, see migration.serves_managed
    capacity: tuple[float, ...] = ()  # each group's capacityScaler, in ``groups`` order (empty: all 1)


@dataclass(frozen=True)
class ListenerSpec:
    """What a forwarding rule asks for: a socket for VIP:port, the URL map behind it, and certificates."""

    rule: str  # URL
    name: str
    vip: str
    port: int
    scheme: str
    proxy: str
    url_map: Obj
    certs: tuple[tuple[str, str], ...] = ()  # (certificate PEM, key PEM), the proxy's order
    rule_scheme: str = "EXTERNAL"
    min_tls: str = ""  # the proxy's SSL policy's minTlsVersion (TLS_1_0 …), "" without a policy

    @property
    def identity(self) -> tuple[str, str, int, str]:
        return self.rule, self.vip, self.port, self.scheme


@dataclass(frozen=True)
class Topology:
    """An immutable snapshot of everything routing needs, replaced whole when the emulators change."""

    listeners: dict[str, ListenerSpec] = field(default_factory=dict)
    services: dict[str, ServiceView] = field(default_factory=dict)
    node_ports: dict[str, dict[int, NodePortTarget]] = field(default_factory=dict)  # cluster -> nodePort -> target
    negs: dict[tuple[str, str], tuple[str, tuple[Pod, ...]]] = field(default_factory=dict)  # (zone, NEG) -> pods
    # backend service URL -> its production options (affinity, headers, Cloud Armor, draining; see traffic.py)
    options: dict[str, traffic.ServiceOptions] = field(default_factory=dict)

    def backends(self) -> dict[tuple[str, str], Backend]:
        """(backend service URL, instance or endpoint key) → backend."""
        return {(v.url, b.instance): b for v in self.services.values() for _g, bs in v.groups for b in bs}


@dataclass
class _Health:
    params: HealthParams
    state: str = "UNKNOWN"  # UNKNOWN (never decided) → HEALTHY / UNHEALTHY
    successes: int = 0
    failures: int = 0
    next_probe: float = 0.0
    # Probes in flight to a node that does not answer: when each one's timeout expires, oldest first. Every probe
    # has its own slot, so a probe that times out never hides, delays or replaces the ones sent after it.
    timeouts: list[float] = field(default_factory=list)
    changed_at: float = 0.0


@dataclass(frozen=True)
class Fault:
    target: str
    kind: str  # cluster or zone
    mode: str  # pods or nodes

    def describe(self) -> Obj:
        return {"target": self.target, "kind": self.kind, "mode": self.mode}


class DataPlane:
    """Listeners, routing, health checks and faults for the load balancers in a :class:`ComputeEmulator`."""

    def __init__(self, compute: ComputeEmulator, clusters: dict[str, KubeApiServer], records: list[ClusterRecord],
                 *, project: str, poll: float = POLL, clock: Callable[[], float] = time.monotonic,
                 seed: int | None = None) -> None:
        self.compute = compute
        self.clusters = clusters
        self.project = project
        self.poll = poll
        self._clock = clock  # injectable so tests can drive probing on a simulated clock (see :meth:`tick`)
        self._nodes: dict[str, NodeRecord] = {}  # instance URL tail "zones/Z/instances/N" -> node
        self._zones: dict[str, set[str]] = {}  # zone -> clusters
        for rec in records:
            for node in rec.nodes:
                self._nodes[f"zones/{node.zone}/instances/{node.name}"] = node
            for zone in rec.spec.zones:
                self._zones.setdefault(zone, set()).add(rec.spec.name)
        self._node_by_name = {(n.cluster, n.name): n for n in self._nodes.values()}
        self._tags = {rec.spec.name: rec.network_tag for rec in records}  # cluster -> its nodes' network tag
        self._lock = threading.Lock()
        self._topology = Topology()
        self._listeners: dict[str, Listener] = {}
        self._health: dict[tuple[str, str], _Health] = {}  # (backend service URL, instance URL) -> state
        self._faults: set[Fault] = set()
        self._counters: dict[Any, int] = {}
        self._in_flight: dict[str, int] = {}  # cluster -> requests picked for it and not answered yet
        self._credit: dict[str, dict[str, float]] = {}  # backend service URL -> group -> weighted round robin credit
        self._rng = random.Random(seed)  # the migration's traffic split; seeded for reproducible runs
        self._kube_revision = 0
        self._seen: tuple[int, int] | None = None
        self._managed: dict[tuple[str, str], tuple[str, str]] = {}  # (cert URL, domains) -> generated pair
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self.on_change: Callable[[DataPlane], None] | None = None  # called after listeners opened or closed
        # Certificate Manager: (hostname or "", certificate) of a map's entries, and a revision to watch.
        self.certificate_map: Callable[[str, str], list[tuple[str, Obj]]] | None = None
        self.certificate_map_revision: Callable[[], int] = lambda: 0
        # Cloud CDN: (backend service URL, host, path) -> (stored at, status, body, backend header)
        self._cdn: dict[tuple[str, str, str], tuple[float, int, bytes, str]] = {}

    # --- lifecycle -------------------------------------------------------------------------------------------

    def start(self) -> DataPlane:
        """Watch the emulators and serve; also answer the Compute emulator's ``getHealth``."""
        for kube in self.clusters.values():
            kube.add_listener(self._on_kube)
        self.compute.health_provider = self.group_health
        self._thread = threading.Thread(target=self._run, name="sim-dataplane", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Close every listener and stop probing."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        if self.compute.health_provider == self.group_health:
            self.compute.health_provider = None
        for listener in self._listeners.values():
            listener.close()
        self._listeners.clear()

    def _on_kube(self, event: str, obj: Obj) -> None:
        if obj.get("kind") in ("Pod", "Service", "Endpoints", "Deployment", "Namespace"):
            self._kube_revision += 1  # read by the poll loop; an int bump needs no lock

    def refresh(self) -> None:
        """Re-read the emulators now (instead of within the next poll)."""
        self._seen = None
        self._wake.set()

    # --- public API ------------------------------------------------------------------------------------------

    def listeners(self) -> list[Obj]:
        """Every open listener: the forwarding rule, its VIP:port and the loopback URL that serves it."""
        specs = self._topology.listeners
        out = []
        for key, listener in sorted(self._listeners.items()):
            spec = specs.get(key)
            out.append({"rule": spec.name if spec else key.rsplit("/", 1)[-1], "vip": listener.vip,
                        "port": listener.vip_port, "scheme": listener.scheme, "url": listener.url,
                        "proxy": spec.proxy.rsplit("/", 1)[-1] if spec else ""})
        return out

    def url_for(self, vip: str, port: int = 80, *, timeout: float = 5.0) -> str:
        """The loopback URL (``http://127.x.y.z:PORT``) serving ``vip:port``; waits up to ``timeout`` for it."""
        deadline = time.monotonic() + timeout
        while True:
            for item in self.listeners():
                if item["vip"] == vip and item["port"] == port:
                    return str(item["url"])
            if time.monotonic() >= deadline:
                raise LookupError(f"no listener for {vip}:{port} (is a forwarding rule with a complete chain there?)")
            self.refresh()
            time.sleep(0.02)

    def health(self) -> list[Obj]:
        """Every probed backend: backend service, instance, cluster, zone and HEALTHY/UNHEALTHY/UNKNOWN."""
        with self._lock:
            items = sorted(self._health.items())
        backends = self._topology.backends()
        out = []
        for (bs, inst), h in items:
            b = backends.get((bs, inst))
            node = b.node if b else self._node(inst)
            item = {"backendService": bs.rsplit("/", 1)[-1], "instance": node.name if node else inst.rsplit("/")[-1],
                    "cluster": node.cluster if node else "", "zone": node.zone if node else "", "healthState": h.state}
            if b is not None and b.pod is not None:
                item["pod"] = b.pod.name
            out.append(item)
        return out

    def wait_health(self, state: str, *, cluster: str | None = None, timeout: float = 10.0) -> bool:
        """Wait until every probed backend (of ``cluster``, if given) is in ``state``; ``False`` on timeout."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            items = [h for h in self.health() if cluster in (None, h["cluster"])]
            if items and all(h["healthState"] == state for h in items):
                return True
            time.sleep(0.02)
        return False

    def fail(self, target: str, mode: str | None = None) -> Obj:
        """Make a cluster's (default: its pods) or a zone's (default: its nodes) backends stop answering."""
        fault = self._fault(target, mode)
        with self._lock:
            self._faults.add(fault)
        return fault.describe()

    def heal(self, target: str | None = None, mode: str | None = None) -> list[Obj]:
        """Undo :meth:`fail` for ``target`` (every mode unless given; ``None``: every fault); the faults removed."""
        kind = self._fault(target, mode).kind if target is not None else ""
        with self._lock:
            gone = {f for f in self._faults if target is None or (f.target == target and f.kind == kind
                                                                  and mode in (None, f.mode))}
            self._faults -= gone
        return [f.describe() for f in sorted(gone, key=lambda f: (f.target, f.mode))]

    def services(self) -> list[Obj]:
        """Every backend service as the data plane routes it now: name, scheme and migration fields, and each
        group's capacityScaler (``capacity``: group URL → scaler)."""
        return [{"name": v.name, **v.migration,
                 "capacity": {g: c for (g, _bs), c in zip(v.groups, v.capacity or (1.0,) * len(v.groups),
                                                          strict=True)}}
                for v in sorted(self._topology.services.values(), key=lambda v: v.name)]

    def in_flight(self) -> dict[str, int]:
        """Requests a backend of each cluster was picked for and has not answered yet (what connection draining
        lets finish)."""
        with self._lock:
            return {c: n for c, n in sorted(self._in_flight.items()) if n}

    def reseed(self, seed: int) -> None:
        """Restart the random draws that split traffic between the classic and the managed path."""
        with self._lock:
            self._rng.seed(seed)

    def faults(self) -> list[Obj]:
        """The active faults."""
        with self._lock:
            return [f.describe() for f in sorted(self._faults, key=lambda f: (f.target, f.mode))]

    def describe(self) -> Obj:
        """What ``GET /_sim/dataplane`` answers."""
        return {"listeners": self.listeners(), "faults": self.faults(), "health": self.health()}

    def _fault(self, target: str, mode: str | None) -> Fault:
        if mode is not None and mode not in MODES:
            raise UnknownTarget(f"unknown mode {mode!r} (pods or nodes)")
        if target in self.clusters:
            return Fault(target, "cluster", mode or "pods")
        if target in self._zones:
            return Fault(target, "zone", mode or "nodes")
        raise UnknownTarget(f"{target!r} is neither a simulated cluster ({', '.join(sorted(self.clusters))}) nor a "
                            f"zone ({', '.join(sorted(self._zones))})")

    # --- getHealth -------------------------------------------------------------------------------------------

    def group_health(self, service: Obj, group: str) -> list[Obj]:
        """``backendServices.getHealth`` for one group, from the health checks' state (called by the emulator)."""
        view = self._topology.services.get(service.get("selfLink", ""))
        backends = dict(view.groups).get(group, ()) if view else ()
        ports = {b.instance: b.port for b in backends}
        out = []
        if "/networkEndpointGroups/" in group:  # endpoints (pods), not instances
            for b in backends:
                with self._lock:
                    h = self._health.get((service.get("selfLink", ""), b.instance))
                out.append({"instance": f"{API}projects/{self.project}/zones/{b.node.zone}/instances/{b.node.name}",
                            "ipAddress": b.pod.ip if b.pod else "", "port": b.port or 0,
                            "healthState": "HEALTHY" if h is not None and h.state == "HEALTHY" else "UNHEALTHY"})
            return out
        # The group's members as the emulator has them now (called under its lock, which is re-entrant).
        for url in self.compute.members(group):
            node = self._node(url)
            with self._lock:
                h = self._health.get((service.get("selfLink", ""), url))
            # Google reports a backend that has not passed its health checks yet as UNHEALTHY.
            state = "HEALTHY" if h is not None and h.state == "HEALTHY" else "UNHEALTHY"
            out.append({"instance": url, "ipAddress": node.internal_ip if node else "",
                        "port": ports.get(url) or service.get("port", 80), "healthState": state})
        return out

    # --- the loop: reconcile and probe -----------------------------------------------------------------------

    def _run(self) -> None:
        next_look = 0.0
        while not self._stop.is_set():
            now = self._clock()
            if now >= next_look or self._seen is None:
                try:
                    self._reconcile()
                except Exception as exc:  # the loop must survive a half-made resource
                    print(f"sim dataplane: reconcile failed: {exc!r}", flush=True)
                next_look = now + self.poll
            due = self.tick(self._clock())
            wait = max(0.005, min(next_look, due) - self._clock())
            self._wake.wait(wait)
            self._wake.clear()

    def rebuild(self) -> None:
        """Re-read the emulators now, in the caller's thread (for a data plane driven by :meth:`tick`)."""
        self._seen = None
        self._reconcile()

    def _reconcile(self) -> None:
        seen = (self.compute.revision(), self._kube_revision + 1000003 * self.certificate_map_revision())
        if seen == self._seen:
            return
        self._seen = seen
        topology = self._build()
        self._topology = topology
        self._sync_health(topology)
        self._sync_listeners(topology)

    def _node(self, instance_url: str) -> NodeRecord | None:
        return self._nodes.get("zones/" + instance_url.split("/zones/", 1)[-1])

    def _build(self) -> Topology:
        """Read the emulators (never under the data plane's lock) into a new :class:`Topology`."""
        compute, project = self.compute, self.project

        def index(collection: str) -> dict[str, Obj]:
            return {o["selfLink"]: o for o in compute.resources(collection)}

        services = index("backendServices")
        if not services and not compute.resources("globalForwardingRules"):
            return Topology()
        checks = index("healthChecks")
        groups = index("instanceGroups")
        negs = index("networkEndpointGroups")
        firewalls = compute.resources("firewalls")
        node_ports, neg_pods = self._build_kube()
        pods_by_ip = self._pods_by_ip()
        views: dict[str, ServiceView] = {}
        for url, bs in services.items():
            hc = checks.get((bs.get("healthChecks") or [""])[0])
            params, spec = _health_params(hc)
            entries, capacity = [], []
            for b in bs.get("backends") or []:
                neg = negs.get(b.get("group", ""))
                if neg is not None:
                    entries.append((neg["selfLink"], self._neg_backends(neg, neg_pods, spec, pods_by_ip, firewalls)))
                    capacity.append(float(b.get("capacityScaler", 1.0)))
                    continue
                group = groups.get(b.get("group", ""))
                if group is None:
                    continue
                capacity.append(float(b.get("capacityScaler", 1.0)))
                named = {p.get("name"): int(p.get("port", 0)) for p in group.get("namedPorts") or []}
                serving = named.get(bs.get("portName", "http"))
                probe = serving
                if spec is not None:
                    how = spec.get("portSpecification", "USE_FIXED_PORT" if "port" in spec else "USE_SERVING_PORT")
                    if how == "USE_FIXED_PORT":
                        probe = int(spec.get("port", 80))
                    elif how == "USE_NAMED_PORT":
                        probe = named.get(spec.get("portName"))
                members = []
                for inst in compute.members(group["selfLink"]):
                    node = self._node(inst)
                    if node is not None:
                        members.append(Backend(inst, group["selfLink"], node, serving, probe))
                entries.append((group["selfLink"], tuple(members)))
            views[url] = ServiceView(url, bs["name"], tuple(entries), params if hc else None, int(bs.get("port", 80)),
                                     {k: bs[k] for k in (migration.SCHEME, migration.STATE, migration.PERCENT)
                                      if k in bs}, tuple(capacity))
        policies = index("securityPolicies")
        options = {url: traffic.options(bs, policies) for url, bs in services.items()}
        listeners: dict[str, ListenerSpec] = {}
        url_maps = index("urlMaps")
        proxies = {**index("targetHttpProxies"), **index("targetHttpsProxies")}
        for rule in compute.resources("globalForwardingRules"):
            proxy = proxies.get(rule.get("target", ""))
            url_map = url_maps.get((proxy or {}).get("urlMap", ""))
            if proxy is None or url_map is None:
                continue  # the chain is not complete (yet): nothing answers on this VIP
            scheme = "https" if "/targetHttpsProxies/" in proxy["selfLink"] else "http"
            certs: list[tuple[str, str]] = []
            for cert_url in proxy.get("sslCertificates") or [] if scheme == "https" and \
                    not proxy.get("certificateMap") else []:
                pair = self._certificate(cert_url, project)
                if pair is not None:
                    certs.append(pair)
            if scheme == "https" and proxy.get("certificateMap"):
                certs += self._map_certificates(str(proxy["certificateMap"]))  # "sslCertificates will be ignored"
            if scheme == "https" and not certs:
                continue
            port = int(str(rule.get("portRange", "80" if scheme == "http" else "443")).split("-")[0])
            listeners[rule["selfLink"]] = ListenerSpec(rule["selfLink"], rule["name"], str(rule.get("IPAddress", "")),
                                                       port, scheme, proxy["selfLink"], url_map, tuple(certs),
                                                       str(rule.get("loadBalancingScheme") or "EXTERNAL"),
                                                       self._min_tls(proxy))
        return Topology(listeners, views, node_ports, neg_pods, options)

    def _neg_backends(self, neg: Obj, neg_pods: dict[tuple[str, str], tuple[str, tuple[Pod, ...]]],
                      spec: Obj | None, pods_by_ip: dict[tuple[str, str], Pod],
                      firewalls: list[Obj]) -> tuple[Backend, ...]:
        """A GCE_VM_IP_PORT network endpoint group's endpoints, as attached in Compute (GKE's NEG controller keeps
        them in step with the pods); for a NEG nobody attached endpoints to (the hosted Multi Cluster Ingress
        controller's), the ready pods its Service's neg-status names. An endpoint whose pod is gone is skipped (its
        pod stops serving only once detached, as with a graceful termination). Probes of attached endpoints reach
        the pod only where a firewall rule lets Google's health-check ranges in to its port on the node; Google's
        hosted controllers (Multi Cluster Ingress, Gateway) make that rule with their NEGs, so theirs are not
        checked."""
        attached = self.compute.network_endpoints(neg["selfLink"])
        if attached is not None:
            endpoints = []
            for e in attached:
                node = self._nodes.get(f"zones/{str(neg.get('zone', '')).rsplit('/', 1)[-1]}/instances/"
                                       f"{e.get('instance')}")
                pod = pods_by_ip.get((node.cluster, str(e.get("ipAddress")))) if node else None
                if node is None or pod is None:
                    continue
                port = int(e.get("port") or neg.get("defaultPort") or 80)
                probe = _probe_port(spec, port)
                endpoints.append(Backend(f"{neg['selfLink']}#{pod.name}", neg["selfLink"], node, port, probe, pod,
                                         not _firewall_allows(firewalls, self._tags.get(node.cluster, ""), probe)))
            return tuple(endpoints)
        zone = str(neg.get("zone", "")).rsplit("/", 1)[-1]
        cluster, pods = neg_pods.get((zone, neg["name"]), ("", ()))
        port = int(neg.get("defaultPort") or 80)
        probe = port
        if spec is not None and spec.get("portSpecification", "USE_FIXED_PORT" if "port" in spec else "") == \
                "USE_FIXED_PORT":
            probe = int(spec.get("port", port))
        out = []
        for pod in pods:
            node = self._node_by_name.get((cluster, pod.node))
            if node is not None and node.zone == zone:
                out.append(Backend(f"{neg['selfLink']}#{pod.name}", neg["selfLink"], node, port, probe, pod))
        return tuple(out)

    def _pods_by_ip(self) -> dict[tuple[str, str], Pod]:
        """Every running pod that is not being deleted, by (cluster, pod IP): what a NEG endpoint reaches."""
        out = {}
        for cluster, kube in self.clusters.items():
            for pod in kube.list("v1", "Pod"):
                meta, status = pod["metadata"], pod.get("status") or {}
                if status.get("phase") != "Running" or meta.get("deletionTimestamp") or not status.get("podIP"):
                    continue
                node_name = str((pod.get("spec") or {}).get("nodeName") or "")
                node = self._node_by_name.get((cluster, node_name))
                ports = tuple(int(cp["containerPort"]) for c in (pod.get("spec") or {}).get("containers") or []
                              for cp in c.get("ports") or [] if isinstance(cp.get("containerPort"), int))
                out[(cluster, str(status["podIP"]))] = Pod(meta["name"], meta.get("namespace", "default"), node_name,
                                                           node.zone if node else "", str(status["podIP"]), ports)
        return out

    def _certificate(self, url: str, project: str) -> tuple[str, str] | None:
        parts = url.split("/")
        stored = self.compute.stored("sslCertificates", parts[-1], project=parts[parts.index("projects") + 1]
                                     if "projects" in parts else project)
        if stored is None:
            return None
        if stored.get("type") == "MANAGED":
            domains = list((stored.get("managed") or {}).get("domains") or [])
            key = (url, ",".join(domains))
            if key not in self._managed:  # generated once per certificate, like a real issuance
                self._managed[key] = self_signed(domains)
            return self._managed[key]
        if stored.get("certificate") and stored.get("privateKey"):
            return str(stored["certificate"]), str(stored["privateKey"])
        return None

    def _build_kube(self) -> tuple[dict[str, dict[int, NodePortTarget]],
                                   dict[tuple[str, str], tuple[str, tuple[Pod, ...]]]]:
        out: dict[str, dict[int, NodePortTarget]] = {}
        negs: dict[tuple[str, str], tuple[str, tuple[Pod, ...]]] = {}
        for cluster, kube in self.clusters.items():
            pods = kube.list("v1", "Pod")
            ports: dict[int, NodePortTarget] = {}
            for svc in kube.list("v1", "Service"):
                spec = svc.get("spec") or {}
                selector = spec.get("selector") or {}
                neg_status = (svc["metadata"].get("annotations") or {}).get("cloud.google.com/neg-status")
                if (spec.get("type") not in ("NodePort", "LoadBalancer") and not neg_status) or not selector:
                    continue
                ns = svc["metadata"].get("namespace", "default")
                chosen = []
                for pod in pods:
                    meta = pod["metadata"]
                    labels = meta.get("labels") or {}
                    status = pod.get("status") or {}
                    ready = any(c.get("type") == "Ready" and c.get("status") == "True"
                                for c in status.get("conditions") or [])
                    if meta.get("namespace") == ns and status.get("phase") == "Running" and ready and all(
                            labels.get(k) == v for k, v in selector.items()):
                        node_name = str((pod.get("spec") or {}).get("nodeName") or "")
                        node = self._node_by_name.get((cluster, node_name))
                        chosen.append(Pod(meta["name"], ns, node_name, node.zone if node else "",
                                          str(status.get("podIP") or "")))
                ready_pods = tuple(sorted(chosen, key=lambda x: x.name))
                for p in spec.get("ports") or []:
                    if p.get("nodePort"):
                        ports[int(p["nodePort"])] = NodePortTarget(f"{ns}/{svc['metadata']['name']}", ready_pods)
                if neg_status:  # GKE's NEG controller: one NEG per exposed port and zone, endpoints = ready pods
                    try:
                        status_doc = json.loads(neg_status)
                    except ValueError:
                        continue
                    for neg_name in (status_doc.get("network_endpoint_groups") or {}).values():
                        for zone in status_doc.get("zones") or []:
                            negs[(zone, str(neg_name))] = (cluster, ready_pods)
            out[cluster] = ports
        return out, negs

    def _sync_health(self, topology: Topology) -> None:
        wanted: dict[tuple[str, str], HealthParams] = {}
        for view in topology.services.values():
            if view.health is None:
                continue
            for _group, backends in view.groups:
                for b in backends:
                    wanted[(view.url, b.instance)] = view.health
        now = self._clock()
        with self._lock:
            for key in [k for k in self._health if k not in wanted]:
                del self._health[key]
            for key, params in wanted.items():
                h = self._health.get(key)
                if h is None:
                    self._health[key] = _Health(params, next_probe=now, changed_at=now)  # probed right away
                elif h.params != params:
                    h.params = params
                    h.next_probe = min(h.next_probe, now + params.interval)

    def _sync_listeners(self, topology: Topology) -> None:
        changed = False
        for key in list(self._listeners):
            spec = topology.listeners.get(key)
            current = self._listeners[key]
            if spec is None or (current.key, current.vip, current.vip_port, current.scheme) != spec.identity:
                self._listeners.pop(key).close()
                changed = True
        for key, spec in topology.listeners.items():
            if key not in self._listeners:
                try:
                    self._listeners[key] = Listener(key, spec.vip, spec.port, spec.scheme, self._serve,
                                                    self._cert_picker(key) if spec.scheme == "https" else None,
                                                    min_tls=self._min_tls_picker(key))
                except OSError as exc:
                    print(f"sim dataplane: cannot serve {spec.vip}:{spec.port}: {exc}", flush=True)
                    continue
                changed = True
        if changed and self.on_change is not None:
            self.on_change(self)

    def _cert_picker(self, key: str) -> Callable[[str | None], tuple[str, str] | None]:
        def pick(server_name: str | None) -> tuple[str, str] | None:
            spec = self._topology.listeners.get(key)
            if spec is None or not spec.certs:
                return None
            if server_name:
                for pair in spec.certs:
                    if _cert_matches(pair[0], server_name):
                        return pair
            return spec.certs[0]  # no SNI or no match: the proxy's first certificate, as Google serves it
        return pick

    # --- health checks ---------------------------------------------------------------------------------------

    def tick(self, now: float) -> float:
        """Run every probe that is due at ``now`` and settle the timeouts that expired; the time of the next event.

        Like Google's probers, each backend is probed on its own schedule and every probe of a round goes out at
        once: a probe that gets no answer occupies nothing, it fails when its own timeout (``timeoutSec``, at most
        the interval) expires. So a zone whose nodes all stop answering delays neither the probes of other backends
        nor the next round, and is UNHEALTHY after ``unhealthyThreshold`` failed probes: within interval ×
        threshold + one interval of the failure, however many of its backends there are. The loop calls this;
        tests call it with a simulated clock.
        """
        backends = self._topology.backends()
        with self._lock:
            due = [(k, h) for k, h in self._health.items()
                   if h.next_probe <= now or (h.timeouts and h.timeouts[0] <= now)]
        for key, h in due:
            # Results in the order they arrive: the timeouts that expired by now (sent earlier), then this round.
            while h.timeouts and h.timeouts[0] <= now:
                self._record(h, ok=False, now=h.timeouts.pop(0))
            if h.next_probe > now:
                continue
            # A steady schedule that does not drift; a late loop probes now and resumes the schedule from here
            # (one probe, not a burst of catch-up probes).
            h.next_probe += h.params.interval
            if h.next_probe <= now:
                h.next_probe = now + h.params.interval
            backend = backends.get(key)
            if backend is None:
                continue
            try:
                if backend.blocked:
                    raise _Unreachable(backend.instance)  # the firewall drops the probe: it times out
                status, _body = self._forward(backend, backend.probe_port, "GET", h.params.path,
                                              h.params.host or backend.node.internal_ip, probe=True)
                ok = status == 200 if h.params.kind in ("HTTP", "HTTPS", "HTTP2") else True
                self._record(h, ok=ok, now=now)
            except _Refused:
                self._record(h, ok=False, now=now)
            except _Unreachable:
                # No answer: this probe fails when its timeout expires (Google requires timeoutSec <= interval).
                bisect.insort(h.timeouts, now + min(h.params.timeout, h.params.interval))
        with self._lock:
            times = [h.next_probe for h in self._health.values()]
            times += [h.timeouts[0] for h in self._health.values() if h.timeouts]
        return min(times, default=now + self.poll)

    def _record(self, h: _Health, *, ok: bool, now: float) -> None:
        with self._lock:
            if ok:
                h.successes, h.failures = h.successes + 1, 0
                if h.state != "HEALTHY" and h.successes >= h.params.healthy_threshold:
                    h.state, h.changed_at = "HEALTHY", now
            else:
                h.failures, h.successes = h.failures + 1, 0
                if h.state != "UNHEALTHY" and h.failures >= h.params.unhealthy_threshold:
                    h.state, h.changed_at = "UNHEALTHY", now

    # --- serving ---------------------------------------------------------------------------------------------

    def _next(self, key: Any, n: int) -> int:
        with self._lock:
            i = self._counters.get(key, 0)
            self._counters[key] = i + 1
        return i % n

    def _down(self, cluster: str, zone: str, mode: str) -> bool:
        with self._lock:
            return any(f.mode == mode and (f.target == cluster if f.kind == "cluster" else f.target == zone)
                       for f in self._faults)

    def _forward(self, backend: Backend, port: int | None, method: str, path: str, host: str, *,
                 probe: bool = False, headers: dict[str, str] | None = None) -> tuple[int, bytes]:
        if backend.pod is None:
            return self._node_forward(backend.node, port, method, path, host, probe=probe, headers=headers)
        # Container-native load balancing: straight to the pod, which answers unless it or its node is down.
        pod, node = backend.pod, backend.node
        if self._down(node.cluster, node.zone, "nodes"):
            raise _Unreachable(pod.name)
        if pod.ports and port not in pod.ports:  # the app listens on its container ports only
            raise _Refused(f"{pod.name}:{port}")
        if self._down(node.cluster, node.zone, "pods"):
            raise _Refused(pod.name)
        return 200, _answer(node.cluster, pod, path, host, method, headers)

    def _node_forward(self, node: NodeRecord, port: int | None, method: str, path: str, host: str, *,
                      probe: bool = False, headers: dict[str, str] | None = None) -> tuple[int, bytes]:
        """What a node answers on ``port``: kube-proxy forwards to a ready pod of the Service with that node port."""
        if self._down(node.cluster, node.zone, "nodes"):
            raise _Unreachable(node.name)
        target = self._topology.node_ports.get(node.cluster, {}).get(port or 0)
        if target is None:
            raise _Refused(f"{node.name}:{port}")
        # Pods on dead nodes or that stopped answering get no traffic (as if readiness reacted at once): what
        # the load balancer sees of a failure is at the node level.
        live = [p for p in target.pods
                if not self._down(node.cluster, p.zone, "nodes") and not self._down(node.cluster, p.zone, "pods")]
        if not live:
            raise _Refused(f"{node.name}:{port} has no ready endpoint")
        pod = live[self._next(("pod", node.cluster, port, probe), len(live))]
        return 200, _answer(node.cluster, pod, path, host, method, headers)

    def _pick(self, view: ServiceView) -> Backend | None:
        with self._lock:
            health = {inst: h.state for (bs, inst), h in self._health.items() if bs == view.url}
        capacity = view.capacity or (1.0,) * len(view.groups)
        # A group with capacityScaler 0 is drained: no new request (one in flight finishes, it holds its backend).
        candidates = [(g, [b for b in bs if health.get(b.instance) == "HEALTHY"], c)
                      for (g, bs), c in zip(view.groups, capacity, strict=True) if c > 0]
        candidates = [(g, bs, c) for g, bs, c in candidates if bs]
        if not candidates:
            return None
        # Over groups: smooth weighted round robin by capacityScaler (plain round robin when the scalers are equal,
        # so every cluster and zone serves in turn); then round robin over the group's instances.
        group, backends = self._weighted(view.url, [(g, bs, c) for g, bs, c in candidates])
        return backends[self._next(("instance", view.url, group), len(backends))]

    def _weighted(self, url: str, candidates: list[tuple[str, list[Backend], float]]) -> tuple[str, list[Backend]]:
        """Nginx's smooth weighted round robin: each group gets its share of every sum-of-weights picks, evenly
        spread; a group's credit is kept while it stays a candidate."""
        total = sum(c for _g, _bs, c in candidates)
        with self._lock:
            credit = self._credit.setdefault(url, {})
            for stale in [g for g in credit if g not in {g for g, _bs, _c in candidates}]:
                del credit[stale]
            for g, _bs, c in candidates:
                credit[g] = credit.get(g, 0.0) + c
            best = max(candidates, key=lambda x: credit[x[0]])  # the first of equals: groups' order
            credit[best[0]] -= total
        return best[0], best[1]

    def _split(self, found: Route) -> Route:
        """A route rule's weightedBackendServices: one service by smooth weighted round robin over those with weight
        and a healthy backend (exact shares over every sum-of-weights requests, as a traffic split is meant)."""
        with self._lock:
            healthy = {bs for (bs, _inst), h in self._health.items() if h.state == "HEALTHY"}
        candidates = [(url, w) for url, w in found.weighted if w > 0 and url in healthy]
        if not candidates:
            candidates = [(url, w) for url, w in found.weighted if w > 0] or list(found.weighted[:1])
        total = sum(w for _u, w in candidates)
        with self._lock:
            credit = self._credit.setdefault(f"rule:{found.rule_key}", {})
            for stale in [u for u in credit if u not in {u for u, _w in candidates}]:
                del credit[stale]
            for url, w in candidates:
                credit[url] = credit.get(url, 0.0) + w
            best = max(candidates, key=lambda c: credit[c[0]])[0]
            credit[best] -= total
        return replace(found, service=best, weighted=())

    def _serve(self, method: str, host_header: str, target: str, listener: Listener) -> Reply:
        spec = self._topology.listeners.get(listener.key)
        if spec is None:
            return Reply(502, NO_UPSTREAM, {"Content-Type": "text/plain"})
        parts = urlsplit(target)
        path, query = parts.path or "/", parts.query
        host = host_header
        if host.endswith(f":{listener.address[1]}"):
            host = host.rsplit(":", 1)[0]  # the simulator's ephemeral port is not part of the site's address
        found = route(spec.url_map, host.split(":")[0] if not host.startswith("[") else host, path,
                      request_headers())
        if found.weighted:
            found = self._split(found)
        if found.abort is not None and (found.abort[1] >= 100.0 or random.uniform(0.0, 100.0) < found.abort[1]):
            # Answered by the load balancer itself, as Google's front end does for a fault abort.
            return Reply(found.abort[0], b"fault filter abort", {"Content-Type": "text/plain"})
        if found.redirect is not None:
            status, location = redirect_target(found.redirect, scheme=spec.scheme, host=host, path=path,
                                               query=query, matched_prefix=found.matched_prefix)
            return Reply(status, b"", {"Location": location, "Content-Type": "text/html; charset=UTF-8"})
        view = self._topology.services.get(found.service or "")
        if view is None:
            return Reply(404, b"not found", {"Content-Type": "text/plain"})
        with self._lock:
            draw = self._rng.random()
        path_taken = "managed" if migration.serves_managed(spec.rule_scheme, view.migration, draw) else "classic"
        inc = incoming()
        opts = self._topology.options.get(view.url)
        denied = traffic.armor_status(opts, inc, edge=True)
        if denied is not None:
            return Reply(denied, b"", {"Content-Type": "text/html; charset=UTF-8", PATH_HEADER: path_taken})
        sign_in, identity = traffic.iap(opts, inc, f"{spec.scheme}://{host}{target}")
        if sign_in is not None:  # Identity-Aware Proxy: no credentials, sign in first
            return Reply(302, b"", {"Location": sign_in, "Content-Type": "text/html; charset=UTF-8",
                                    PATH_HEADER: path_taken})
        cache = traffic.cache_status(opts, method, target)
        hit = self._cdn_lookup(view.url, host, target) if cache == "miss" and opts is not None else None
        if hit is not None:
            age = str(int(hit[1]))
            return Reply(hit[0].status, hit[0].body, {**hit[0].headers, PATH_HEADER: path_taken, "Age": age,
                                                      **traffic.response_headers(opts, inc, "hit")})
        denied = traffic.armor_status(opts, inc)
        if denied is not None:  # Cloud Armor answers at the edge: the backend never sees the request
            return Reply(denied, b"", {"Content-Type": "text/html; charset=UTF-8", PATH_HEADER: path_taken})
        backend = self._pick_for(view, opts, inc)
        if backend is None:
            return Reply(502, NO_UPSTREAM, {"Content-Type": "text/plain", PATH_HEADER: path_taken})
        cluster = backend.node.cluster
        with self._lock:
            self._in_flight[cluster] = self._in_flight.get(cluster, 0) + 1
        try:
            delay = _sim_delay(query)
            # A slow request, in flight on the backend picked above: a drain (capacityScaler 0) meanwhile
            # changes which backend new requests get, not this one, which finishes there; a removal lets it run
            # for the connection draining timeout only.
            if delay and not self._hold(delay, view.url, backend, opts):
                return Reply(502, DRAINED_CUT, {"Content-Type": "text/plain", PATH_HEADER: path_taken})
            status, body = self._forward(backend, backend.port, method, target, host,
                                         headers=traffic.request_headers(opts, inc, identity))
        except (_Refused, _Unreachable):
            return Reply(502, CONNECT_ERROR, {"Content-Type": "text/plain", PATH_HEADER: path_taken})
        finally:
            with self._lock:
                self._in_flight[cluster] -= 1
        served = f"{backend.node.cluster}/{backend.node.name}"
        if cache == "miss" and status == 200 and opts is not None:
            with self._lock:
                self._cdn[(view.url, host, target)] = (time.monotonic(), status, body, served)
        return Reply(status, body, {"X-Sim-Backend": served, PATH_HEADER: path_taken,
                                    **traffic.response_headers(opts, inc, cache),
                                    **traffic.set_cookie(opts, backend.instance, inc)})

    # --- production options: session affinity, connection draining, certificate maps (see traffic.py) ---------

    def _min_tls(self, proxy: Obj) -> str:
        policy = self.compute.get("sslPolicies", str(proxy.get("sslPolicy") or "").rsplit("/", 1)[-1],
                                  project=self.project) if proxy.get("sslPolicy") else None
        return str((policy or {}).get("minTlsVersion") or "TLS_1_0") if policy else ""

    def _min_tls_picker(self, key: str) -> Callable[[], str]:
        """The listener asks before each TLS handshake: an SSL policy change applies to the next connection."""
        def pick() -> str:
            spec = self._topology.listeners.get(key)
            return spec.min_tls if spec is not None else ""
        return pick

    def _cdn_lookup(self, service: str, host: str, target: str) -> tuple[Reply, float] | None:
        """A fresh cached answer (and its age) for this URL, within the service's default TTL."""
        opts = self._topology.options.get(service)
        with self._lock:
            entry = self._cdn.get((service, host, target))
        if entry is None or opts is None:
            return None
        age = time.monotonic() - entry[0]
        if age >= opts.cdn_ttl:
            return None
        return Reply(entry[1], entry[2], {"X-Sim-Backend": entry[3]}), age

    def _pick_for(self, view: ServiceView, opts: traffic.ServiceOptions | None, inc: Incoming) -> Backend | None:
        """The backend for one request: the one its GCLB cookie names or its affinity key hashes to, while that
        backend is healthy and its group takes traffic; otherwise the balanced pick."""
        if opts is None or opts.affinity == "NONE":
            return self._pick(view)
        with self._lock:
            health = {inst: h.state for (bs, inst), h in self._health.items() if bs == view.url}
        capacity = view.capacity or (1.0,) * len(view.groups)
        candidates = [b for (_g, bs), c in zip(view.groups, capacity, strict=True) if c > 0 for b in bs
                      if health.get(b.instance) == "HEALTHY"]
        pinned = traffic.pinned(opts, inc)
        chosen = next((b for b in candidates if b.instance == pinned), None)
        if chosen is not None:
            return chosen
        key = traffic.affinity_key(opts, inc)
        if key is not None and candidates:
            return traffic.consistent_pick(key, candidates, lambda b: b.instance)
        return self._pick(view)

    def _hold(self, delay: float, service: str, backend: Backend, opts: traffic.ServiceOptions | None) -> bool:
        """Keep a request in flight on ``backend`` for ``delay`` seconds; ``False`` when the backend was removed from
        the service meanwhile and the service's connection draining timeout ended first (Google then closes the
        connection to the backend)."""
        end = time.monotonic() + delay
        removed_at: float | None = None
        while True:
            now = time.monotonic()
            if now >= end:
                return True
            topology = self._topology
            if removed_at is None and (service, backend.instance) not in topology.backends():
                removed_at = now
            if removed_at is not None:
                current = topology.options.get(service) or opts
                deadline = removed_at + (current.draining if current is not None else 0.0)
                if now >= deadline:
                    return False
                end_wait = min(end, deadline)
            else:
                end_wait = end
            time.sleep(max(0.0, min(0.02, end_wait - now)))

    def _map_certificates(self, ref: str) -> list[tuple[str, str]]:
        """The certificates of a Certificate Manager map, as (certificate PEM, key PEM); managed ones generated."""
        parts = ref.split("/")
        if self.certificate_map is None or len(parts) < 9:
            return []
        out = []
        for _hostname, cert in self.certificate_map(parts[4], parts[-1]):
            if cert.get("pemCertificate") and cert.get("_key"):
                out.append((str(cert["pemCertificate"]), str(cert["_key"])))
            elif cert.get("managed"):
                domains = list(cert["managed"].get("domains") or [])
                key = (str(cert.get("name")), ",".join(domains))
                if key not in self._managed:
                    self._managed[key] = self_signed(domains)
                out.append(self._managed[key])
        return out


def _probe_port(spec: Obj | None, serving: int) -> int:
    """The port a health check probes a NEG endpoint on: its fixed port, else the endpoint's (USE_SERVING_PORT)."""
    if spec is not None and spec.get("portSpecification", "USE_FIXED_PORT" if "port" in spec else "") == \
            "USE_FIXED_PORT":
        return int(spec.get("port", serving))
    return serving


HEALTH_CHECK_RANGES = ("35.191.0.0/16", "130.211.0.0/22")


def _firewall_allows(firewalls: list[Obj], tag: str, port: int) -> bool:
    """Whether ingress firewall rules let both of Google's health-check ranges reach ``port`` (TCP) on the nodes
    tagged ``tag``: an enabled INGRESS allow rule whose source ranges contain the range, that targets the tag (or
    every instance) and allows tcp (or all) on that port. Deny rules and priorities are not modelled."""
    import ipaddress

    def covers(rule: Obj, source: str) -> bool:
        wanted = ipaddress.ip_network(source)
        for raw in rule.get("sourceRanges") or []:
            try:
                if wanted.subnet_of(ipaddress.ip_network(str(raw), strict=False)):  # type: ignore[arg-type]
                    return True
            except (ValueError, TypeError):
                continue
        return False

    def opens(rule: Obj) -> bool:
        for allowed in rule.get("allowed") or []:
            if str(allowed.get("IPProtocol", "")).lower() not in ("tcp", "all", "6"):
                continue
            ports = allowed.get("ports") or []
            if not ports:
                return True
            for item in ports:
                first, _, last = str(item).partition("-")
                if first.isdigit() and int(first) <= port <= int(last or first):
                    return True
        return False

    rules = [r for r in firewalls if r.get("direction", "INGRESS") == "INGRESS" and not r.get("disabled")
             and (not r.get("targetTags") or tag in r["targetTags"]) and opens(r)]
    return all(any(covers(r, source) for r in rules) for source in HEALTH_CHECK_RANGES)


def _sim_delay(query: str) -> float:
    """Simulator-only: the query parameter ``gitlab-mci-sim-delay=SECONDS`` (at most 30) makes the app answer that
    much later, so a test can hold a request in flight. Real apps and Google's front ends know no such thing."""
    for pair in query.split("&"):
        key, _, value = pair.partition("=")
        if key == DELAY_PARAM:
            try:
                return min(30.0, max(0.0, float(value)))
            except ValueError:
                return 0.0
    return 0.0


def _answer(cluster: str, pod: Pod, path: str, host: str, method: str,
            headers: dict[str, str] | None = None) -> bytes:
    """What every simulated pod's app answers (on any path, its readiness path included): who it is, and the
    request headers it received (an echo, so custom request headers are observable)."""
    answer: Obj = {"cluster": cluster, "zone": pod.zone, "pod": pod.name, "node": pod.node, "path": path,
                   "host": host, "method": method}
    if headers is not None:
        answer["headers"] = headers
    return json.dumps(answer).encode()


def _health_params(hc: Obj | None) -> tuple[HealthParams, Obj | None]:
    if hc is None:
        return HealthParams(), None
    kind = str(hc.get("type") or "HTTP")
    spec = next((hc[k] for k in ("httpHealthCheck", "httpsHealthCheck", "http2HealthCheck", "tcpHealthCheck",
                                 "sslHealthCheck", "grpcHealthCheck") if isinstance(hc.get(k), dict)), None)
    return HealthParams(
        interval=float(hc.get("checkIntervalSec") or 5), timeout=float(hc.get("timeoutSec") or 5),
        healthy_threshold=int(hc.get("healthyThreshold") or 2),
        unhealthy_threshold=int(hc.get("unhealthyThreshold") or 2),
        path=str((spec or {}).get("requestPath") or "/"), host=(spec or {}).get("host") or None, kind=kind,
    ), spec


def _cert_matches(pem: str, server_name: str) -> bool:
    from cryptography import x509

    try:
        leaf = x509.load_pem_x509_certificates(pem.encode())[0]
        names = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(
            x509.DNSName)
    except (ValueError, x509.ExtensionNotFound):
        return False
    server_name = server_name.lower()
    return any(n.lower() == server_name or (n.startswith("*.") and server_name.endswith(n[1:].lower())
                                            and server_name.count(".") == n.count("."))
               for n in names)
