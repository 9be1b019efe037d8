"""What the simulated GKE controllers share: the reconcile loop thread, and the writes they make alike.

:class:`Reconciler` runs ``reconcile`` on a thread a delay after a change (GKE's provisioning or sync delay); its
class attributes say how a controller differs (which kinds it watches, whether the delay restarts at every change,
whether its own writes count as changes). The functions below write to the simulated API servers and to Compute
the way GKE's controllers do (straight to the emulators: no HTTP, so never in the request journal).
"""

from __future__ import annotations

import copy
import json
import logging
import threading
import time
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any, Self

from gitlab_mci.sim.httpd import Request

if TYPE_CHECKING:
    from gitlab_mci.sim.compute import ComputeEmulator
    from gitlab_mci.sim.gkehub import GkeHubEmulator
    from gitlab_mci.sim.kube import KubeApiServer
    from gitlab_mci.sim.spec import WorldSpec
    from gitlab_mci.sim.world import ClusterRecord

Obj = dict[str, Any]
log = logging.getLogger(__name__)

IDLE_WAIT = 0.5  # seconds the loop sleeps between looks at its stop flag when nothing is to do


class Reconciler:
    """Reconcile ``delay`` seconds after a change, on a thread; :meth:`settle` waits for quiet (tests).

    A subclass implements :meth:`reconcile` and sets, where it differs from the defaults:

    - ``name``: the thread's name, also in the log;
    - ``watched``: the kinds whose changes in a watched API server (:meth:`watch`) poke the loop;
    - ``debounce``: ``True`` (default) restarts the delay at every change (reconcile once things are quiet);
      ``False`` counts it from the first change not yet reconciled (a steady stream of changes cannot starve it);
    - ``own_writes_poke``: ``False`` (default) ignores the changes the controller's own reconcile makes;
    - ``recheck``: how often to reconcile again, without a change, while ``reconcile`` leaves ``self._pending``
      ``True`` (work waiting on something that sends no event, e.g. a health check).
    """

    name = "sim-controller"
    watched: frozenset[str] = frozenset()
    debounce = True
    own_writes_poke = False
    recheck = IDLE_WAIT

    def __init__(self, delay: float) -> None:
        self.delay = delay
        self.errors: list[str] = []  # what the controller could not do, newest last (also logged)
        self.reconciles = 0
        self._cond = threading.Condition()
        self._dirty_at: float | None = None
        self._busy = False
        self._pending = False
        self._stopped = True
        self._thread: threading.Thread | None = None
        self._local = threading.local()

    def watch(self, clusters: Iterable[KubeApiServer]) -> None:
        """Poke the loop on every change of a ``watched`` kind in these API servers."""
        for kube in clusters:
            kube.add_listener(self._on_kube)

    def _on_kube(self, event: str, obj: Obj) -> None:
        if obj.get("kind") in self.watched:
            self.poke()

    def start(self) -> Self:
        self._stopped = False
        self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        with self._cond:
            self._stopped = True
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def poke(self) -> None:
        """Something changed: reconcile once the delay has passed."""
        if not self.own_writes_poke and getattr(self._local, "writing", False):
            return
        with self._cond:
            if self.debounce or self._dirty_at is None:
                self._dirty_at = time.monotonic()
            self._cond.notify_all()

    def settle(self, timeout: float = 10.0) -> bool:
        """Wait until nothing is pending (tests); ``False`` on timeout."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while self._dirty_at is not None or self._busy:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(min(left, 0.05))
        return True

    def _run(self) -> None:
        while True:
            with self._cond:
                if self._stopped:
                    return
                if self._dirty_at is None:
                    # Nothing changed. Work waiting on what sends no event: look again at `recheck`'s pace (not a
                    # change `settle` waits for).
                    self._cond.wait(self.recheck if self._pending else IDLE_WAIT)
                    if self._stopped or self._dirty_at is not None or not self._pending:
                        continue
                else:
                    due = self._dirty_at + self.delay
                    now = time.monotonic()
                    if now < due:
                        self._cond.wait(due - now)
                        continue
                self._dirty_at = None
                self._busy = True
            self._local.writing = True
            try:
                self.reconciles += 1
                self.reconcile()
            except Exception as exc:  # a controller keeps running, and says what went wrong
                log.exception("%s failed", self.name)
                self.errors.append(f"reconcile failed: {exc!r}")
            finally:
                self._local.writing = False
                with self._cond:
                    self._busy = False
                    self._cond.notify_all()

    def reconcile(self) -> None:
        raise NotImplementedError


class FleetController(Reconciler):
    """A controller Google hosts for the fleet (Multi Cluster Ingress, multi-cluster Gateway): it watches every
    cluster and the GKE Hub, works from the config cluster, and gives a load balancer without a reserved address an
    ephemeral VIP from its own range (``vip_prefix``.x.y, apart from the Compute emulator's reserved addresses)."""

    vip_prefix = "127.2"

    def __init__(self, spec: WorldSpec, records: list[ClusterRecord], clusters: dict[str, KubeApiServer],
                 compute: ComputeEmulator, hub: GkeHubEmulator, *, delay: float = 3.0) -> None:
        super().__init__(delay)  # the provisioning delay
        self.spec = spec
        self.records = {r.spec.name: r for r in records}
        self.clusters = clusters
        self.compute = compute
        self.hub = hub
        self._ephemeral = (f"{self.vip_prefix}.{a}.{b}" for a in range(256) for b in range(1, 255))
        self._vips: dict[tuple[str, str], str] = {}
        self._seeded: dict[tuple[str, str, str], Obj] = {}  # what was last written to Compute, to write changes only
        self.watch(clusters.values())
        hub.add_listener(self.poke)

    def config_cluster(self) -> str | None:
        return config_cluster(self.spec, self.hub)

    def ephemeral_vip(self, ns: str, name: str) -> str:
        """The ephemeral VIP of an object (the same one for as long as the simulation runs)."""
        if (ns, name) not in self._vips:
            self._vips[(ns, name)] = next(self._ephemeral)
        return self._vips[(ns, name)]


def fleet_members(spec: WorldSpec, hub: GkeHubEmulator) -> list[str]:
    """The clusters registered in the simulated fleet, in the world spec's order."""
    links = hub.member_links()
    return [c.name for c in spec.clusters if c.link in links]


def config_cluster(spec: WorldSpec, hub: GkeHubEmulator) -> str | None:
    """The fleet's config cluster (the ``multiclusteringress`` feature's config membership), if any."""
    link = hub.config_link()
    return next((c.name for c in spec.clusters if c.link == link), None) if link else None


def kube_call(kube: KubeApiServer, method: str, path: str, body: Obj | None = None, service: str = "sim") -> Obj:
    """One request to a simulated API server from a controller (errors raise; a DELETE of nothing is fine)."""
    ctype = "application/merge-patch+json" if method == "PATCH" else "application/json"
    req = Request(method=method, path=path, query={}, headers={"content-type": ctype},
                  body=json.dumps(body).encode() if body is not None else b"", service=service)
    resp = kube.handle(req)
    if resp.status >= 400 and not (method == "DELETE" and resp.status == 404):
        raise RuntimeError(f"{method} {path}: {resp.status} {resp.body}")
    return copy.deepcopy(resp.body) if isinstance(resp.body, dict) else {}


def warning_event(kube: KubeApiServer, involved: Obj, event_name: str, reason: str, message: str, component: str,
                  service: str = "sim") -> None:
    """A Warning Event on ``involved`` (apiVersion, kind, name, namespace), once: an Event of that name is not made
    again (nor one in a namespace that does not exist)."""
    ns = involved["namespace"]
    if kube.get("v1", "Event", event_name, ns) is not None or kube.get("v1", "Namespace", ns) is None:
        return
    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    kube_call(kube, "POST", f"/api/v1/namespaces/{ns}/events", {
        "apiVersion": "v1", "kind": "Event", "metadata": {"name": event_name, "namespace": ns},
        "involvedObject": involved, "reason": reason, "message": message, "type": "Warning", "count": 1,
        "firstTimestamp": now, "lastTimestamp": now, "source": {"component": component}}, service=service)


def converge_services(clusters: dict[str, KubeApiServer], scope: Iterable[str],
                      desired: dict[tuple[str, str, str], Obj], managed_by: str, service: str = "sim") -> None:
    """Make the derived Services labelled ``app.kubernetes.io/managed-by=<managed_by>`` of the ``scope`` clusters
    what ``desired`` ((cluster, namespace, name) → Service) says: delete the others, create, patch what differs."""
    for cluster in scope:
        kube = clusters[cluster]
        for svc in kube.list("v1", "Service", label_selector=f"app.kubernetes.io/managed-by={managed_by}"):
            key = (cluster, svc["metadata"]["namespace"], svc["metadata"]["name"])
            if key not in desired:
                kube_call(kube, "DELETE", f"/api/v1/namespaces/{key[1]}/services/{key[2]}", service=service)
    for (cluster, ns, name), svc in desired.items():
        kube = clusters[cluster]
        live = kube.get("v1", "Service", name, ns)
        if live is None:
            kube_call(kube, "POST", f"/api/v1/namespaces/{ns}/services", svc, service=service)
        elif any(live["metadata"].get(k, {}).get(x) != v for k in ("labels", "annotations")
                 for x, v in svc["metadata"][k].items()) \
                or live["spec"].get("selector") != svc["spec"]["selector"] or _ports(live) != _ports(svc):
            patch = {"metadata": {k: svc["metadata"][k] for k in ("labels", "annotations")},
                     "spec": {"selector": svc["spec"]["selector"], "ports": svc["spec"]["ports"]}}
            kube_call(kube, "PATCH", f"/api/v1/namespaces/{ns}/services/{name}", patch, service=service)


def _ports(svc: Obj) -> list[tuple[Any, ...]]:
    return [(p.get("name"), p.get("protocol", "TCP"), p.get("port"), p.get("targetPort", p.get("port")))
            for p in (svc.get("spec") or {}).get("ports") or []]


def converge_compute(compute: ComputeEmulator, project: str, order: Sequence[str],
                     desired: dict[tuple[str, str, str], Obj], seeded: dict[tuple[str, str, str], Obj], *,
                     prefix: str, neg_marker: str) -> list[str]:
    """Make Compute hold ``desired`` ((collection, zone or "", name) → body), created in ``order``, and delete in
    reverse order what the controller owns in ``project`` and no longer wants: resources named ``<prefix>-…`` and
    NEGs whose description carries ``neg_marker``. ``seeded`` (what was last written) keeps unchanged resources
    from being written again. Returns what could not be written (e.g. a reference to nothing); the rest goes on."""
    errors: list[str] = []
    for coll in order:
        for (c, zone, name), body in desired.items():
            if c != coll:
                continue
            live = compute.get(coll, name, project=project, zone=zone or None)
            if live is not None and seeded.get((coll, zone, name)) == body:
                continue
            try:
                compute.seed(coll, body, project=project, zone=zone or None)
                seeded[(coll, zone, name)] = copy.deepcopy(body)
            except Exception as exc:  # say so, go on with the rest
                errors.append(f"{coll}/{name}: {exc}")
    for coll in reversed(order):
        for live in compute.resources(coll):
            name = live["name"]
            zone = live["zone"].rsplit("/", 1)[-1] if live.get("zone") else ""
            ours = name.startswith(f"{prefix}-") or (coll == "networkEndpointGroups"
                                                    and neg_marker in str(live.get("description", "")))
            if ours and (coll, zone, name) not in desired and \
                    live["selfLink"].split("/projects/")[1].startswith(f"{project}/"):
                compute.remove(coll, name, project=project, zone=zone or None)
                seeded.pop((coll, zone, name), None)
    return errors
