"""The simulated GKE NEG controller: standalone zonal network endpoint groups for annotated Services.

What GKE's NEG controller does for a Service annotated
``cloud.google.com/neg: '{"exposed_ports": {"5000": {"name": "my-neg"}}}'`` (any type, ClusterIP is enough), per
cluster, after a short sync delay (``negSyncDelay`` in the world spec):

- one zonal NEG per exposed port in every zone where the cluster has nodes: ``GCE_VM_IP_PORT``, the cluster's network
  and subnetwork, a JSON description naming cluster, namespace, Service and port, named as asked or as GKE names it
  (:func:`gitlab_mci.sim.names.gke_neg_name`);
- its endpoints are the pods the Service selects in that zone whose containers are ready (instance = node,
  ipAddress = pod IP, port = the Service port's target port), kept in sync as pods come and go;
- ``cloud.google.com/neg-status`` written back on the Service: ``{"network_endpoint_groups": {"5000": "my-neg"},
  "zones": [...]}``;
- the pod readiness gate ``cloud.google.com/load-balancer-neg-ready``: pods created for a Deployment that such a
  Service selects get it, and it turns True once the pod's endpoint is HEALTHY in a backend service using the NEG
  (at once when no backend service uses it), so a rolling update waits for the load balancer;
- removing the annotation (or the Service) deletes the NEGs it made, unless a backend service still uses one (then
  a Warning event, and retries); a NEG name another Service already has, a port the Service does not have, or a
  cluster without VPC-native networking: a Warning event on the Service, and no NEG.

Services made by the hosted Multi Cluster Ingress controller (:mod:`gitlab_mci.sim.mci`) are left to it. Writes go
straight to the emulators (no HTTP), as GKE's controllers are not the user's requests.
"""

from __future__ import annotations

import json
import logging
import re
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Self

from gitlab_mci.sim.controller import Reconciler, kube_call, warning_event
from gitlab_mci.sim.names import cluster_uid, gke_neg_name, name_hash

if TYPE_CHECKING:
    from gitlab_mci.sim.compute import ComputeEmulator
    from gitlab_mci.sim.dataplane import DataPlane
    from gitlab_mci.sim.kube import KubeApiServer
    from gitlab_mci.sim.spec import WorldSpec
    from gitlab_mci.sim.world import ClusterRecord

Obj = dict[str, Any]
log = logging.getLogger(__name__)

API = "https://www.googleapis.com/compute/v1"
NEG_ANNOTATION = "cloud.google.com/neg"
NEG_STATUS_ANNOTATION = "cloud.google.com/neg-status"
READINESS_GATE = "cloud.google.com/load-balancer-neg-ready"
RECHECK = 0.1  # seconds between looks at the data plane's health checks while a readiness gate waits
GATE_TIMEOUT = 900.0  # GKE marks the gate True after 15 minutes whatever the health checks say
_NAME_RE = re.compile(r"^[a-z]([-a-z0-9]{0,61}[a-z0-9])?$")
_MCI_LABEL = ("app.kubernetes.io/managed-by", "multi-cluster-ingress")
_WATCHED = {"Service", "Pod", "Namespace", "Deployment"}
# The Warning event's message for a routes-based cluster (our wording; GKE documents the requirement).
NOT_VPC_NATIVE = ("NEGs (network endpoint groups) need a VPC-native cluster: cluster {cluster} uses routes-based "
                  "networking (no alias IP range on its nodes), so no NEG is made for this Service")


@dataclass
class _Owner:
    cluster: str
    namespace: str
    service: str
    port: str

    def description(self, uid: str) -> str:
        return json.dumps({"cluster-uid": uid, "namespace": self.namespace, "service-name": self.service,
                           "port": self.port}, separators=(",", ":"))


@dataclass
class _Plan:
    """One reconcile's view: NEGs wanted, neg-status per Service, Warning events to emit."""

    negs: dict[tuple[str, str], tuple[_Owner, Obj, list[Obj]]] = field(default_factory=dict)  # (zone, name)
    status: dict[tuple[str, str, str], str | None] = field(default_factory=dict)  # (cluster, ns, svc) -> JSON
    warnings: list[tuple[str, str, str, str, str]] = field(default_factory=list)  # cluster, ns, svc, reason, msg
    endpoint_negs: dict[tuple[str, str, str], list[str]] = field(default_factory=dict)  # (cluster, ns, pod) -> URLs


class NegController(Reconciler):
    """Reconciles NEG-annotated Services of every cluster into Compute; see the module docstring."""

    name = "sim-neg-controller"
    watched = frozenset(_WATCHED)
    # The sync delay counts from the first change, and the controller's own writes are changes too (a pod whose
    # gate opens lets its Deployment's rollout create the next pod). Health checks are not kube events: while a
    # readiness gate or a deletion waits (`_pending`), look again at the data plane's pace.
    debounce = False
    own_writes_poke = True
    recheck = RECHECK

    def __init__(self, spec: WorldSpec, records: list[ClusterRecord], clusters: dict[str, KubeApiServer],
                 compute: ComputeEmulator, dataplane: DataPlane | None = None, *, delay: float = 0.2) -> None:
        super().__init__(delay)  # the sync delay
        self.spec = spec
        self.records = {r.spec.name: r for r in records}
        self.clusters = clusters
        self.compute = compute
        self.dataplane = dataplane
        # Services whose neg-status this controller wrote: the only ones it removes it from (Google's hosted
        # controllers write neg-status on their own derived Services).
        self._statuses: set[tuple[str, str, str]] = set()
        self.watch(clusters.values())
        for name, kube in clusters.items():
            kube.pod_mutators.append(self._mutator(name))

    # --- lifecycle -------------------------------------------------------------------------------------------------

    def start(self) -> Self:
        super().start()
        self.poke()  # what the clusters already hold
        return self

    # --- admission: the readiness gate -----------------------------------------------------------------------------

    def _mutator(self, cluster: str) -> Any:
        def mutate(pod: Obj) -> None:
            """GKE's webhook: a pod that a NEG-annotated Service selects gets the NEG readiness gate."""
            if not self.records[cluster].spec.vpc_native:
                return
            kube = self.clusters[cluster]
            ns = pod["metadata"].get("namespace", "default")
            labels = pod["metadata"].get("labels") or {}
            for svc in kube.list("v1", "Service", namespace=ns):
                selector = (svc.get("spec") or {}).get("selector") or {}
                if selector and _standalone(svc) and all(labels.get(k) == v for k, v in selector.items()):
                    gates = pod["spec"].setdefault("readinessGates", [])
                    if {"conditionType": READINESS_GATE} not in gates:
                        gates.append({"conditionType": READINESS_GATE})
                    return
        return mutate

    # --- reconcile -------------------------------------------------------------------------------------------------

    def reconcile(self) -> None:
        """One pass over every cluster: NEGs and their endpoints, neg-status, readiness gates, events."""
        plan = _Plan()
        claimed = self._claimed()
        for cluster in self.clusters:
            self._plan_cluster(cluster, plan, claimed)
        pending = self._converge_compute(plan)
        self._write_status(plan)
        pending |= self._readiness(plan)
        for warning in plan.warnings:
            self._warning_event(*warning)
        self._pending = pending

    def _claimed(self) -> dict[tuple[str, str], str]:
        """Existing NEGs: (zone, name) → the description of who made them."""
        out = {}
        for neg in self.compute.resources("networkEndpointGroups"):
            out[(neg["zone"].rsplit("/", 1)[-1], neg["name"])] = str(neg.get("description") or "")
        return out

    def _plan_cluster(self, cluster: str, plan: _Plan, claimed: dict[tuple[str, str], str]) -> None:
        kube, rec = self.clusters[cluster], self.records[cluster]
        uid = cluster_uid(self.spec.project, cluster)
        pods = kube.list("v1", "Pod")
        nodes = {n.name: n for n in rec.nodes}
        services = sorted(kube.list("v1", "Service"),
                          key=lambda s: (s["metadata"].get("creationTimestamp", ""), s["metadata"]["namespace"],
                                         s["metadata"]["name"]))
        existing = {(cluster, s["metadata"]["namespace"], s["metadata"]["name"]) for s in services}
        self._statuses = {k for k in self._statuses if k[0] != cluster or k in existing}
        for svc in services:
            meta = svc["metadata"]
            ns, name = meta["namespace"], meta["name"]
            if (meta.get("labels") or {}).get(_MCI_LABEL[0]) == _MCI_LABEL[1]:
                continue  # the hosted Multi Cluster Ingress controller's own derived Services
            exposed = _exposed(svc)
            has_status = (cluster, ns, name) in self._statuses
            if exposed is None:
                if has_status:
                    plan.status[(cluster, ns, name)] = None
                continue
            if isinstance(exposed, str):
                plan.warnings.append((cluster, ns, name, "ProcessServiceFailed",
                                      f'error processing service "{ns}/{name}": {exposed}'))
                continue
            if not rec.spec.vpc_native:
                plan.warnings.append((cluster, ns, name, "ProcessServiceFailed",
                                      NOT_VPC_NATIVE.format(cluster=cluster)))
                if has_status:
                    plan.status[(cluster, ns, name)] = None
                continue
            names: dict[str, str] = {}
            for port, cfg in sorted(exposed.items()):
                sport = next((p for p in (svc.get("spec") or {}).get("ports") or [] if str(p.get("port")) == port),
                             None)
                if sport is None:
                    plan.warnings.append((cluster, ns, name, "ProcessServiceFailed",
                                          f'error processing service "{ns}/{name}": port {port} specified in '
                                          f'"{NEG_ANNOTATION}" doesn\'t exist in the service'))
                    continue
                neg = str(cfg.get("name") or gke_neg_name(self.spec.project, cluster, ns, name, port))
                if not _NAME_RE.match(neg):
                    plan.warnings.append((cluster, ns, name, "ProcessServiceFailed",
                                          f'error processing service "{ns}/{name}": NEG name {neg!r} for port '
                                          f"{port} is not a valid Compute Engine name"))
                    continue
                owner = _Owner(cluster, ns, name, port)
                mine = owner.description(uid)
                rival = next((d or "(none)" for (z, n), d in claimed.items()
                              if z in rec.spec.zones and n == neg and d != mine), None)
                if rival is None:
                    rival = next((o.description(cluster_uid(self.spec.project, o.cluster))
                                  for (z, n), (o, _b, _e) in plan.negs.items()
                                  if n == neg and z in rec.spec.zones and o != owner), None)
                if rival is not None:
                    plan.warnings.append((cluster, ns, name, "SyncNetworkEndpointGroupFailed",
                                          f'Failed to sync NEG "{neg}" (will retry): neg name {neg} is already in '
                                          f"use, found conflicting description: expected {mine}, found {rival}"))
                    continue
                target = _target_port(sport, pods, ns, svc)
                for zone in rec.spec.zones:
                    body = {
                        "name": neg, "networkEndpointType": "GCE_VM_IP_PORT",
                        "network": f"{API}/projects/{self.spec.network_project}/global/networks/{self.spec.network}",
                        "subnetwork": f"{API}/projects/{self.spec.network_project}/regions/{rec.spec.region}/"
                                      f"subnetworks/{self.spec.network}",
                        "description": mine,
                    }
                    endpoints = []
                    for pod in _selected(pods, ns, svc):
                        node = nodes.get(str((pod.get("spec") or {}).get("nodeName") or ""))
                        if node is None or node.zone != zone:
                            continue
                        ip = str((pod.get("status") or {}).get("podIP") or "")
                        port_n = target(pod)
                        if ip and port_n:
                            endpoints.append({"instance": node.name, "ipAddress": ip, "port": port_n})
                            plan.endpoint_negs.setdefault((cluster, ns, pod["metadata"]["name"]), []).append(
                                f"{API}/projects/{self.spec.project}/zones/{zone}/networkEndpointGroups/{neg}")
                    endpoints.sort(key=lambda e: (e["instance"], e["ipAddress"], e["port"]))
                    plan.negs[(zone, neg)] = (owner, body, endpoints)
                names[port] = neg
            status = json.dumps({"network_endpoint_groups": names, "zones": sorted(rec.spec.zones)},
                                separators=(",", ":")) if names else None
            if names or has_status:
                plan.status[(cluster, ns, name)] = status

    def _converge_compute(self, plan: _Plan) -> bool:
        project, pending = self.spec.project, False
        for (zone, name), (_owner, body, endpoints) in plan.negs.items():
            url = f"{API}/projects/{project}/zones/{zone}/networkEndpointGroups/{name}"
            if self.compute.get("networkEndpointGroups", name, project=project, zone=zone) is None:
                self.compute.seed("networkEndpointGroups", body, project=project, zone=zone)
            self.compute.set_network_endpoints(url, endpoints)
        uids = {cluster_uid(project, c): c for c in self.clusters}
        users = {b.get("group"): bs["selfLink"] for bs in self.compute.resources("backendServices")
                 for b in bs.get("backends") or []}
        for neg in self.compute.resources("networkEndpointGroups"):
            zone = neg["zone"].rsplit("/", 1)[-1]
            owner = _owner_of(str(neg.get("description") or ""), uids)
            if owner is None or (zone, neg["name"]) in plan.negs:
                continue
            user = users.get(neg["selfLink"])
            if user is not None:
                pending = True
                plan.warnings.append((owner.cluster, owner.namespace, owner.service, "NetworkEndpointGroupGCFailed",
                                      f"Failed to delete NEG {neg['name']} in {zone}: googleapi: Error 400: The "
                                      f"network_endpoint_group resource '{_relative(neg['selfLink'])}' is already "
                                      f"being used by '{_relative(user)}', resourceInUseByAnotherResource"))
                continue
            self.compute.remove("networkEndpointGroups", neg["name"], project=project, zone=zone)
            pending = True  # one more pass: a Service may now take the name (e.g. the same NEG for another port)
        return pending

    def _write_status(self, plan: _Plan) -> None:
        for (cluster, ns, name), status in plan.status.items():
            kube = self.clusters[cluster]
            live = kube.get("v1", "Service", name, ns)
            if status is None:
                self._statuses.discard((cluster, ns, name))
            else:
                self._statuses.add((cluster, ns, name))
            if live is None or (live["metadata"].get("annotations") or {}).get(NEG_STATUS_ANNOTATION) == status:
                continue
            _call(kube, "PATCH", f"/api/v1/namespaces/{ns}/services/{name}",
                  {"metadata": {"annotations": {NEG_STATUS_ANNOTATION: status}}})

    def _readiness(self, plan: _Plan) -> bool:
        """Turn the readiness gate True for pods whose endpoint passed the load balancer's health check."""
        pending = False
        health = self.dataplane.health() if self.dataplane is not None else []
        used = {b.get("group") for bs in self.compute.resources("backendServices") if bs.get("healthChecks")
                for b in bs.get("backends") or []}
        for cluster, kube in self.clusters.items():
            healthy = {h.get("pod") for h in health if h["cluster"] == cluster and h["healthState"] == "HEALTHY"}
            for pod in kube.list("v1", "Pod"):
                gates = [g.get("conditionType") for g in (pod.get("spec") or {}).get("readinessGates") or []]
                if READINESS_GATE not in gates or pod["metadata"].get("deletionTimestamp"):
                    continue
                conditions = {c.get("type"): c for c in (pod.get("status") or {}).get("conditions") or []}
                if conditions.get(READINESS_GATE, {}).get("status") == "True":
                    continue
                name = pod["metadata"]["name"]
                negs = plan.endpoint_negs.get((cluster, pod["metadata"]["namespace"], name), [])
                age = time.time() - _epoch(pod["metadata"].get("creationTimestamp"))
                if not negs:
                    if not _exposed_selects(kube, pod):
                        reason, message = "LoadBalancerNegNotReady", "Pod does not belong to any NEG."
                    else:
                        pending = True  # its NEG is not made yet
                        continue
                elif not any(u in used for u in negs):
                    reason = "LoadBalancerNegWithoutHealthCheck"
                    message = "Pod is in NEG " + ", ".join(u.rsplit("/", 1)[-1] for u in sorted(set(negs))) + \
                        ". NEG is not attached to any BackendService with health checking. Marking condition " \
                        f"\"{READINESS_GATE}\" to True."
                elif name in healthy:
                    reason, message = "LoadBalancerNegReady", "Pod has become Healthy in NEG " + \
                        ", ".join(u.rsplit("/", 1)[-1] for u in sorted(set(negs))) + ". Marking condition " \
                        f"\"{READINESS_GATE}\" to True."
                elif age >= GATE_TIMEOUT:
                    reason, message = "LoadBalancerNegTimeout", "Timeout waiting for pod to become healthy in at " \
                        f"least one of the NEG(s). Marking condition \"{READINESS_GATE}\" to True."
                else:
                    pending = True
                    continue
                now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
                conditions[READINESS_GATE] = {"type": READINESS_GATE, "status": "True", "reason": reason,
                                              "message": message, "lastTransitionTime": now}
                # What the kubelet does next: Ready once the containers are and every gate is True.
                if conditions.get("ContainersReady", {}).get("status", "True") == "True" and all(
                        conditions.get(g, {}).get("status") == "True" for g in gates):
                    conditions["Ready"] = {"type": "Ready", "status": "True", "lastTransitionTime": now}
                _call(kube, "PATCH", f"/api/v1/namespaces/{pod['metadata']['namespace']}/pods/{name}/status",
                      {"status": {"conditions": list(conditions.values())}})
        return pending

    def _warning_event(self, cluster: str, ns: str, name: str, reason: str, message: str) -> None:
        """A Warning Event on the Service, once per message (as GKE's NEG controller reports what it cannot do)."""
        key = f"{cluster}: Service {ns}/{name}: {message}"
        if key not in self.errors:
            log.warning("simulated NEG controller: %s", key)
            self.errors.append(key)
        warning_event(self.clusters[cluster], {"apiVersion": "v1", "kind": "Service", "name": name, "namespace": ns},
                      f"{name}.{name_hash('neg', reason, message, n=16)}", reason, message, "neg-controller", "sim-neg")


def _exposed(svc: Obj) -> dict[str, Obj] | str | None:
    """The annotation's ``exposed_ports`` (port → config), an error message, or ``None`` when it asks for none."""
    raw = ((svc.get("metadata") or {}).get("annotations") or {}).get(NEG_ANNOTATION)
    if not raw:
        return None
    try:
        doc = json.loads(raw)
    except ValueError:
        return f"failed to parse annotation \"{NEG_ANNOTATION}\": {raw!r} is not JSON"
    ports = doc.get("exposed_ports") if isinstance(doc, dict) else None
    if not ports:
        return None  # e.g. {"ingress": true}: NEGs for a GKE Ingress, which the simulator does not run
    if not isinstance(ports, dict) or not all(isinstance(v, dict) for v in ports.values()):
        return f"failed to parse annotation \"{NEG_ANNOTATION}\": exposed_ports must map ports to objects"
    return {str(k): v for k, v in ports.items()}


def _standalone(svc: Obj) -> bool:
    """Whether this controller makes NEGs for the Service (not one of the hosted MCI controller's)."""
    labels = (svc.get("metadata") or {}).get("labels") or {}
    return labels.get(_MCI_LABEL[0]) != _MCI_LABEL[1] and isinstance(_exposed(svc), dict)


def _exposed_selects(kube: KubeApiServer, pod: Obj) -> bool:
    labels = pod["metadata"].get("labels") or {}
    for svc in kube.list("v1", "Service", namespace=pod["metadata"].get("namespace")):
        selector = (svc.get("spec") or {}).get("selector") or {}
        if selector and _standalone(svc) and all(labels.get(k) == v for k, v in selector.items()):
            return True
    return False


def _selected(pods: list[Obj], ns: str, svc: Obj) -> list[Obj]:
    """Pods of the Service whose containers are ready (not yet Ready because of the NEG gate counts: the load
    balancer health-checks them before the gate opens)."""
    selector = (svc.get("spec") or {}).get("selector") or {}
    out = []
    for pod in pods:
        meta, status = pod["metadata"], pod.get("status") or {}
        if meta.get("namespace") != ns or not selector or meta.get("deletionTimestamp"):
            continue
        if not all((meta.get("labels") or {}).get(k) == v for k, v in selector.items()):
            continue
        conditions = {c.get("type"): c.get("status") for c in status.get("conditions") or []}
        ready = conditions.get("ContainersReady", conditions.get("Ready")) == "True"
        if status.get("phase") == "Running" and ready:
            out.append(pod)
    return sorted(out, key=lambda p: p["metadata"]["name"])


def _target_port(sport: Obj, pods: list[Obj], ns: str, svc: Obj) -> Any:
    """The port the endpoints of a Service port get: its targetPort, a number or a container port's name."""
    target = sport.get("targetPort", sport.get("port"))

    def resolve(pod: Obj) -> int | None:
        if isinstance(target, int):
            return target
        if isinstance(target, str) and target.isdigit():
            return int(target)
        for c in (pod.get("spec") or {}).get("containers") or []:
            for cp in c.get("ports") or []:
                if cp.get("name") == target:
                    return int(cp["containerPort"])
        return None
    return resolve


def _owner_of(description: str, uids: dict[str, str]) -> _Owner | None:
    """Who made a NEG, from its description, when it is a standalone NEG of a simulated cluster."""
    try:
        doc = json.loads(description)
    except ValueError:
        return None
    if not isinstance(doc, dict) or "gitlab-mci-sim" in doc or doc.get("cluster-uid") not in uids:
        return None
    return _Owner(uids[doc["cluster-uid"]], str(doc.get("namespace")), str(doc.get("service-name")),
                  str(doc.get("port")))


def _relative(url: str) -> str:
    return url.split("/compute/v1/", 1)[-1]


def _epoch(timestamp: str | None) -> float:
    try:
        return time.mktime(time.strptime(str(timestamp), "%Y-%m-%dT%H:%M:%SZ")) - time.timezone
    except ValueError:
        return time.time()


def _call(kube: KubeApiServer, method: str, path: str, body: Obj | None = None) -> Obj:
    return kube_call(kube, method, path, body, "sim-neg")
