"""The simulated GKE multi-cluster Gateway controller (``networking.gke.io/gateway``).

Every simulated cluster serves the Gateway API CRDs (``gateway.networking.k8s.io/v1`` Gateway, HTTPRoute,
GatewayClass: GKE clusters created with ``--gateway-api=standard``). When the fleet has ``multiclusterservicediscovery``
and a config membership (the ``multiclusteringress`` feature, which is how GKE enables multi-cluster Gateway), the
config cluster gets the multi-cluster GatewayClasses, and, a configurable delay after a change, the controller:

- builds for every Gateway of class ``gke-l7-global-external-managed-mc`` (or ``gke-l7-gxlb-mc``) the ``gkemcg1-…``
  Compute resources: a backend service and health check per ServiceImport and port (its backends the NEGs of the
  exported Services' pods in each exporting cluster, through a headless ``gkemcg1-…`` Service there carrying
  ``cloud.google.com/neg-status``), one URL map per listener built from the attached HTTPRoutes (hostnames → host
  rules; path and header matches → route rules in Gateway API precedence; weighted ``backendRefs`` →
  ``weightedBackendServices``; a ``RequestRedirect`` filter → ``urlRedirect``), target proxies and forwarding rules
  on the Gateway's address (``spec.addresses`` ``NamedAddress``: a reserved global address; else an ephemeral IP);
- writes ``status`` (Gateway ``Accepted``/``Programmed`` and ``addresses``, HTTPRoute ``parents``) and a Warning
  Event on the object for everything it cannot build (a backendRef to a Service that is not exported, an address or
  certificate that does not exist, …);
- keeps finalizer ``gateway.finalizer.networking.gke.io`` on each Gateway, removed once its resources are gone.

Like GKE's controller it owns every ``gkemcg1-`` Compute resource of the project. Its writes go straight to the
emulators (no HTTP), so they never show in the request journal.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from gitlab_mci.sim.controller import (
    FleetController,
    converge_compute,
    converge_services,
    fleet_members,
    kube_call,
    warning_event,
)
from gitlab_mci.sim.mcs import FEATURE as MCS_FEATURE
from gitlab_mci.sim.mcs import MCS_API, has_kind, install_crd
from gitlab_mci.sim.names import b36, fit, name_hash

if TYPE_CHECKING:
    from gitlab_mci.sim.compute import ComputeEmulator
    from gitlab_mci.sim.gkehub import GkeHubEmulator
    from gitlab_mci.sim.kube import KubeApiServer
    from gitlab_mci.sim.spec import WorldSpec
    from gitlab_mci.sim.world import ClusterRecord

Obj = dict[str, Any]
log = logging.getLogger(__name__)

API = "https://www.googleapis.com/compute/v1"
GATEWAY_API = "gateway.networking.k8s.io/v1"
CONTROLLER_NAME = "networking.gke.io/gateway"
FINALIZER = "gateway.finalizer.networking.gke.io"
PREFIX = "gkemcg1"
# Multi-cluster GatewayClasses GKE installs in the config cluster → the load balancing scheme they build.
CLASSES = {"gke-l7-global-external-managed-mc": "EXTERNAL_MANAGED", "gke-l7-gxlb-mc": "EXTERNAL"}
PRE_SHARED_CERTS = "networking.gke.io/pre-shared-certs"
DERIVED_BY = "gke-multi-cluster-gateway"
_NEG_MARKER = '"gitlab-mci-sim":"mcg-neg"'
_ORDER = ("networkEndpointGroups", "healthChecks", "backendServices", "urlMaps", "targetHttpProxies",
          "targetHttpsProxies", "globalForwardingRules")
_WATCHED = {"Gateway", "HTTPRoute", "GatewayClass", "HealthCheckPolicy", "ServiceImport", "ServiceExport", "Service",
            "Namespace", "CustomResourceDefinition", "GCPBackendPolicy", "GCPGatewayPolicy"}
_REDIRECT_CODES = {301: "MOVED_PERMANENTLY_DEFAULT", 302: "FOUND", 303: "SEE_OTHER", 307: "TEMPORARY_REDIRECT",
                   308: "PERMANENT_REDIRECT"}


def install_gateway_api(kube: KubeApiServer) -> None:
    """The Gateway API CRDs GKE installs with ``--gateway-api=standard``."""
    install_crd(kube, "gateway.networking.k8s.io", "v1", "gatewayclasses", "GatewayClass", namespaced=False,
                short=("gc",))
    install_crd(kube, "gateway.networking.k8s.io", "v1", "gateways", "Gateway", short=("gtw",))
    install_crd(kube, "gateway.networking.k8s.io", "v1", "httproutes", "HTTPRoute")
    install_crd(kube, "networking.gke.io", "v1", "healthcheckpolicies", "HealthCheckPolicy")
    install_crd(kube, "networking.gke.io", "v1", "gcpbackendpolicies", "GCPBackendPolicy")
    install_crd(kube, "networking.gke.io", "v1", "gcpgatewaypolicies", "GCPGatewayPolicy")


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def _cond(kind: str, ok: bool, reason: str, message: str, generation: int) -> Obj:
    return {"type": kind, "status": "True" if ok else "False", "reason": reason, "message": message,
            "observedGeneration": generation, "lastTransitionTime": _now()}


@dataclass
class _Desired:
    compute: dict[tuple[str, str, str], Obj] = field(default_factory=dict)  # (collection, zone, name) -> body
    services: dict[tuple[str, str, str], Obj] = field(default_factory=dict)  # (cluster, ns, name) -> Service
    gateway_status: dict[tuple[str, str], Obj] = field(default_factory=dict)
    route_parents: dict[tuple[str, str], list[Obj]] = field(default_factory=dict)  # route -> status.parents
    errors: list[tuple[str, str, str, str]] = field(default_factory=list)  # (kind, ns, name, message)


@dataclass
class _Entry:
    """One HTTPRoute match (or rule without matches) for one listener, with what it does."""

    route: Obj
    rule: int
    match: Obj
    action: Obj  # {"routeAction": …} or {"urlRedirect": …}

    def precedence(self) -> tuple[Any, ...]:
        path = self.match.get("path") or {"type": "PathPrefix", "value": "/"}
        return (0 if path.get("type") == "Exact" else 1, -len(str(path.get("value", "/"))),
                -len(self.match.get("headers") or []), self.route["metadata"].get("creationTimestamp", ""),
                self.route["metadata"]["namespace"], self.route["metadata"]["name"], self.rule)


class GatewayController(FleetController):
    """Reconciles multi-cluster Gateways and HTTPRoutes in the config cluster; see the module docstring."""

    name = "sim-gateway-controller"
    watched = frozenset(_WATCHED)
    vip_prefix = "127.3"  # apart from the MCI controller's

    def __init__(self, spec: WorldSpec, records: list[ClusterRecord], clusters: dict[str, KubeApiServer],
                 compute: ComputeEmulator, hub: GkeHubEmulator, *, delay: float = 3.0) -> None:
        for kube in clusters.values():
            install_gateway_api(kube)  # before watching: the CRDs GKE has are no change to reconcile
        super().__init__(spec, records, clusters, compute, hub, delay=delay)
        self._classes_in: set[str] = set()

    # --- reconcile -------------------------------------------------------------------------------------------------

    def reconcile(self) -> None:
        config = self.config_cluster()
        if config is None or not self.hub.feature_enabled(MCS_FEATURE):
            return
        kube = self.clusters[config]
        if not has_kind(kube, GATEWAY_API, "Gateway"):
            return
        if config not in self._classes_in:
            for cls in CLASSES:
                if kube.get(GATEWAY_API, "GatewayClass", cls) is None:
                    kube.seed({"apiVersion": GATEWAY_API, "kind": "GatewayClass", "metadata": {"name": cls},
                               "spec": {"controllerName": CONTROLLER_NAME}})
                    kube_call(kube, "PUT", f"/apis/gateway.networking.k8s.io/v1/gatewayclasses/{cls}/status", {
                        "apiVersion": GATEWAY_API, "kind": "GatewayClass", "metadata": {"name": cls},
                        "status": {"conditions": [_cond("Accepted", True, "Accepted", "", 1)]}})
            self._classes_in.add(config)
        gateways = [g for g in kube.list(GATEWAY_API, "Gateway") if g["spec"].get("gatewayClassName") in CLASSES]
        routes = kube.list(GATEWAY_API, "HTTPRoute")
        members = fleet_members(self.spec, self.hub)
        out = _Desired()
        for gw in gateways:
            if not gw["metadata"].get("deletionTimestamp"):
                self._ensure_finalizer(kube, gw)
                self._desired_gateway(kube, gw, routes, members, out)
        converge_services(self.clusters, members, out.services, DERIVED_BY)
        for msg in converge_compute(self.compute, self.spec.project, _ORDER, out.compute, self._seeded,
                                    prefix=PREFIX, neg_marker=_NEG_MARKER):
            if msg not in self.errors:
                self.errors.append(msg)
        for gw in gateways:
            key = (gw["metadata"]["namespace"], gw["metadata"]["name"])
            if gw["metadata"].get("deletionTimestamp"):
                self._drop_finalizer(kube, gw)
            elif key in out.gateway_status:
                self._write_status(kube, "gateways", gw, out.gateway_status[key])
        for route in routes:
            key = (route["metadata"]["namespace"], route["metadata"]["name"])
            mine = [p for p in (route.get("status") or {}).get("parents") or []
                    if p.get("controllerName") == CONTROLLER_NAME]
            parents = out.route_parents.get(key, [])
            if _strip_times(mine) != _strip_times(parents):
                others = [p for p in (route.get("status") or {}).get("parents") or []
                          if p.get("controllerName") != CONTROLLER_NAME]
                self._write_status(kube, "httproutes", route, {"parents": [*others, *parents]}, force=True)
        for kind, ns, name, message in out.errors:
            if (msg := f"{kind} {ns}/{name}: {message}") not in self.errors:
                log.warning("simulated Gateway controller: %s", msg)
                self.errors.append(msg)
            self._warning_event(kube, kind, ns, name, message)

    def _desired_gateway(self, kube: KubeApiServer, gw: Obj, routes: list[Obj], members: list[str],
                         out: _Desired) -> None:
        ns, name = gw["metadata"]["namespace"], gw["metadata"]["name"]
        gen = int(gw["metadata"].get("generation") or 1)
        scheme = CLASSES[gw["spec"]["gatewayClassName"]]
        short = f"{PREFIX}-{ns[:10]}-{name[:20]}-{b36(ns, name, n=6)}"
        g = f"{API}/projects/{self.spec.project}/global"
        problems: list[str] = []

        def fail(message: str) -> None:
            problems.append(message)
            out.errors.append(("Gateway", ns, name, message))

        listeners: dict[str, Obj] = {}
        for lst in gw["spec"].get("listeners") or []:
            proto, port = lst.get("protocol"), int(lst.get("port") or 0)
            if (proto, port) not in (("HTTP", 80), ("HTTPS", 443)):
                fail(f"listener {lst.get('name')}: {proto} on port {port} is not supported by a global external "
                     "load balancer (HTTP on 80, HTTPS on 443)")
                continue
            if proto in listeners:
                fail(f"listener {lst.get('name')}: a second {proto} listener is not supported")
                continue
            listeners[proto] = lst
        ip = self._address(gw, fail)
        services: dict[tuple[str, str, int], str] = {}  # (ns, import, port) -> backend service URL
        entries: dict[str, list[_Entry]] = {p: [] for p in listeners}
        hostnames: dict[str, list[str]] = {p: [] for p in listeners}
        attached = {lst["name"]: 0 for lst in listeners.values()}
        for route in routes:
            rns, rname = route["metadata"]["namespace"], route["metadata"]["name"]
            for ref in (route.get("spec") or {}).get("parentRefs") or []:
                if ref.get("name") != name or ref.get("namespace", rns) != ns or \
                        ref.get("kind", "Gateway") != "Gateway" or route["metadata"].get("deletionTimestamp"):
                    continue
                conds = self._attach(kube, gw, route, ref, listeners, members, services, entries, hostnames,
                                     attached, short, scheme, out)
                out.route_parents.setdefault((rns, rname), []).append(
                    {"parentRef": ref, "controllerName": CONTROLLER_NAME, "conditions": conds})
        certs = []
        if "HTTPS" in listeners:
            options = (listeners["HTTPS"].get("tls") or {}).get("options") or {}
            certs = [c.strip() for c in str(options.get(PRE_SHARED_CERTS, "")).split(",") if c.strip()]
            if (listeners["HTTPS"].get("tls") or {}).get("certificateRefs"):
                fail("listener https: certificateRefs (Secrets) are not supported for multi-cluster Gateways; use "
                     f"the {PRE_SHARED_CERTS} option")
            missing = [c for c in certs if self.compute.get("sslCertificates", c, project=self.spec.project) is None]
            if missing:
                fail(f"pre-shared certificate(s) {', '.join(missing)} not found")
            if not certs:
                fail("listener https: no certificate")
        built = 0
        if ip is not None and not problems:
            for proto, lst in listeners.items():
                url_map = self._url_map(f"{short}-{proto.lower()}", entries[proto], hostnames[proto])
                if url_map is None:
                    continue
                um = url_map["name"]
                out.compute[("urlMaps", "", um)] = url_map
                coll = "targetHttpsProxies" if proto == "HTTPS" else "targetHttpProxies"
                proxy: Obj = {"name": um, "urlMap": f"{g}/urlMaps/{um}"}
                if proto == "HTTPS":
                    proxy["sslCertificates"] = [f"{g}/sslCertificates/{c}" for c in certs]
                    ssl_policy = self._policy_default(kube, "GCPGatewayPolicy", ns, "Gateway", name).get("sslPolicy")
                    if ssl_policy:
                        proxy["sslPolicy"] = f"{g}/sslPolicies/{ssl_policy}"
                out.compute[(coll, "", um)] = proxy
                out.compute[("globalForwardingRules", "", um)] = {
                    "name": um, "IPAddress": ip, "IPProtocol": "TCP", "portRange": f"{lst['port']}-{lst['port']}",
                    "loadBalancingScheme": scheme, "target": f"{g}/{coll}/{um}"}
                built += 1
            if not built:
                fail("no listener has a route with a backend: nothing to program")
        programmed = ip is not None and not problems and built > 0
        out.gateway_status[(ns, name)] = {
            "addresses": [{"type": "IPAddress", "value": ip}] if programmed else [],
            "conditions": [
                _cond("Accepted", True, "Accepted", "", gen),
                _cond("Programmed", programmed, "Programmed" if programmed else "Invalid",
                      "" if programmed else "; ".join(problems) or "waiting for routes", gen)],
            "listeners": [{"name": lst["name"], "attachedRoutes": attached.get(lst["name"], 0),
                           "supportedKinds": [{"group": "gateway.networking.k8s.io", "kind": "HTTPRoute"}],
                           "conditions": [_cond("Accepted", True, "Accepted", "", gen),
                                          _cond("Programmed", programmed, "Programmed" if programmed else "Invalid",
                                                "", gen)]}
                          for lst in gw["spec"].get("listeners") or []],
        }

    def _address(self, gw: Obj, fail: Any) -> str | None:
        ns, name = gw["metadata"]["namespace"], gw["metadata"]["name"]
        addresses = gw["spec"].get("addresses") or []
        if not addresses:
            return self.ephemeral_vip(ns, name)
        addr = addresses[0]
        if addr.get("type") != "NamedAddress":
            fail(f"address type {addr.get('type')!r} is not supported; use NamedAddress (a reserved global address)")
            return None
        found = self.compute.get("globalAddresses", str(addr.get("value")), project=self.spec.project)
        if found is None:
            fail(f"NamedAddress {addr.get('value')!r}: no global address of that name")
            return None
        return str(found["address"])

    def _attach(self, kube: KubeApiServer, gw: Obj, route: Obj, ref: Obj, listeners: dict[str, Obj],
                members: list[str], services: dict[tuple[str, str, int], str], entries: dict[str, list[_Entry]],
                hostnames: dict[str, list[str]], attached: dict[str, int], short: str, scheme: str,
                out: _Desired) -> list[Obj]:
        rns = route["metadata"]["namespace"]
        gen = int(route["metadata"].get("generation") or 1)
        section = ref.get("sectionName")
        targets = [p for p, lst in listeners.items() if section in (None, lst.get("name"))]
        if not targets:
            return [_cond("Accepted", False, "NoMatchingParent", f"no listener {section!r}", gen),
                    _cond("ResolvedRefs", True, "ResolvedRefs", "", gen)]
        if rns != gw["metadata"]["namespace"]:
            return [_cond("Accepted", False, "NotAllowedByListeners",
                          "the listeners allow routes from the Gateway's namespace only", gen),
                    _cond("ResolvedRefs", True, "ResolvedRefs", "", gen)]
        unresolved: list[str] = []
        for i, rule in enumerate((route.get("spec") or {}).get("rules") or []):
            redirect = next((f.get("requestRedirect") or {} for f in rule.get("filters") or []
                             if f.get("type") == "RequestRedirect"), None)
            if redirect is not None:
                action: Obj = {"urlRedirect": {
                    "httpsRedirect": redirect.get("scheme") == "https",
                    "redirectResponseCode": _REDIRECT_CODES.get(int(redirect.get("statusCode") or 302), "FOUND"),
                    **({"hostRedirect": redirect["hostname"]} if redirect.get("hostname") else {})}}
            else:
                weighted: list[Obj] = []
                for backend in rule.get("backendRefs") or []:
                    url = self._backend(kube, route, backend, members, services, short, scheme, out, unresolved)
                    if url is not None:
                        weighted.append({"backendService": url, "weight": int(backend.get("weight", 1))})
                if not weighted or not any(w["weight"] for w in weighted):
                    continue
                top = max(w["weight"] for w in weighted)
                if top > 1000:  # Compute takes 0..1000; Gateway API up to 1 000 000: keep the proportions
                    weighted = [{**w, "weight": round(w["weight"] * 1000 / top)} for w in weighted]
                action = {"routeAction": {"weightedBackendServices": weighted}}
            for proto in targets:
                for match in rule.get("matches") or [{}]:
                    entries[proto].append(_Entry(route, i, match, action))
        for proto in targets:
            for host in (route.get("spec") or {}).get("hostnames") or ["*"]:
                if host not in hostnames[proto]:
                    hostnames[proto].append(host)
            attached[listeners[proto]["name"]] += 1
        if unresolved:
            return [_cond("Accepted", True, "Accepted", "", gen),
                    _cond("ResolvedRefs", False, "BackendNotFound", "; ".join(unresolved), gen)]
        return [_cond("Accepted", True, "Accepted", "", gen), _cond("ResolvedRefs", True, "ResolvedRefs", "", gen)]

    def _backend(self, kube: KubeApiServer, route: Obj, ref: Obj, members: list[str],
                 services: dict[tuple[str, str, int], str], short: str, scheme: str, out: _Desired,
                 unresolved: list[str]) -> str | None:
        rns, rname = route["metadata"]["namespace"], route["metadata"]["name"]
        name, port = str(ref.get("name", "")), int(ref.get("port") or 0)
        ns = ref.get("namespace", rns)

        def refuse(message: str) -> None:
            unresolved.append(message)
            out.errors.append(("HTTPRoute", rns, rname, message))

        if ref.get("group", "") != "net.gke.io" or ref.get("kind", "Service") != "ServiceImport":
            refuse(f"backendRef {ref.get('kind', 'Service')} {name}: a multi-cluster Gateway routes to "
                   "ServiceImports (group net.gke.io): export the Service with a ServiceExport")
            return None
        if ns != rns:
            refuse(f"backendRef ServiceImport {ns}/{name}: another namespace needs a ReferenceGrant")
            return None
        imp = kube.get(MCS_API, "ServiceImport", name, ns) if has_kind(kube, MCS_API, "ServiceImport") else None
        if imp is None:
            refuse(f"backendRef ServiceImport {ns}/{name} not found: no member cluster exports a Service {name} "
                   "(ServiceExport) in this namespace")
            return None
        key = (ns, name, port)
        if key in services:
            return services[key]
        if port not in [int(p.get("port") or 0) for p in (imp.get("spec") or {}).get("ports") or []]:
            refuse(f"backendRef ServiceImport {ns}/{name} has no port {port}")
            return None
        g = f"{API}/projects/{self.spec.project}/global"
        bs = fit(f"{PREFIX}-{ns[:10]}-{name[:28]}-{port}-{b36(short, ns, name, port, n=6)}")
        negs: list[str] = []
        exporters = [str(c.get("cluster")) for c in (imp.get("status") or {}).get("clusters") or []]
        for cluster in exporters:
            if cluster not in members:
                continue
            negs += self._negs(cluster, ns, name, port, out)
        out.compute[("healthChecks", "", bs)] = {
            "name": bs, "type": "HTTP", "description": f'{{"gateway-import":"{ns}/{name}"}}',
            "httpHealthCheck": {"portSpecification": "USE_SERVING_PORT",
                                "requestPath": self._health_path(kube, ns, name)},
            "checkIntervalSec": 5, "timeoutSec": 5}
        out.compute[("backendServices", "", bs)] = {
            "name": bs, "protocol": "HTTP", "loadBalancingScheme": scheme,
            "description": f'{{"gateway-import":"{ns}/{name}","port":{port}}}',
            "healthChecks": [f"{g}/healthChecks/{bs}"],
            "backends": [{"group": url, "balancingMode": "RATE", "maxRatePerEndpoint": 1e8} for url in negs],
            **self._backend_policy(kube, ns, name)}
        services[key] = f"{g}/backendServices/{bs}"
        return services[key]

    @staticmethod
    def _policy_default(kube: KubeApiServer, kind: str, ns: str, target_kind: str, name: str) -> Obj:
        """``spec.default`` of the policy of ``kind`` whose targetRef is ``target_kind`` ``name`` (empty: none)."""
        if not has_kind(kube, "networking.gke.io/v1", kind):
            return {}
        for policy in kube.list("networking.gke.io/v1", kind, ns):
            ref = (policy.get("spec") or {}).get("targetRef") or {}
            if ref.get("kind") == target_kind and ref.get("name") == name:
                return dict(policy["spec"].get("default") or {})
        return {}

    def _backend_policy(self, kube: KubeApiServer, ns: str, name: str) -> Obj:
        """The backend service fields a GCPBackendPolicy targeting the ServiceImport sets, as GKE maps them."""
        spec = self._policy_default(kube, "GCPBackendPolicy", ns, "ServiceImport", name)
        out: Obj = {}
        if "timeoutSec" in spec:
            out["timeoutSec"] = int(spec["timeoutSec"])
        if "connectionDraining" in spec:
            out["connectionDraining"] = {"drainingTimeoutSec": int(spec["connectionDraining"].get(
                "drainingTimeoutSec", 0))}
        if "logging" in spec:
            out["logConfig"] = {"enable": bool(spec["logging"].get("enabled")),
                                **({"sampleRate": int(spec["logging"]["sampleRate"]) / 1_000_000}
                                   if "sampleRate" in spec["logging"] else {})}
        affinity = spec.get("sessionAffinity") or {}
        if affinity.get("type"):
            out["sessionAffinity"] = affinity["type"]
            if "cookieTtlSec" in affinity:
                out["affinityCookieTtlSec"] = int(affinity["cookieTtlSec"])
        if spec.get("securityPolicy"):
            out["securityPolicy"] = f"{API}/projects/{self.spec.project}/global/securityPolicies/" \
                                    f"{spec['securityPolicy']}"
        return out

    @classmethod
    def _health_path(cls, kube: KubeApiServer, ns: str, name: str) -> str:
        """A HealthCheckPolicy's requestPath for the ServiceImport, else GKE's default ``/``."""
        config = cls._policy_default(kube, "HealthCheckPolicy", ns, "ServiceImport", name).get("config") or {}
        return str((config.get("httpHealthCheck") or {}).get("requestPath") or "/")

    def _negs(self, cluster: str, ns: str, name: str, port: int, out: _Desired) -> list[str]:
        """The NEGs (one per zone) of ``name``'s pods in ``cluster``, and the headless Service that makes them."""
        kube = self.clusters[cluster]
        svc = kube.get("v1", "Service", name, ns)
        if svc is None or not (svc.get("spec") or {}).get("selector"):
            return []
        sport = next((p for p in svc["spec"].get("ports") or [] if int(p.get("port") or 0) == port), None)
        if sport is None:
            return []
        target = sport.get("targetPort", port)
        uid = name_hash(self.spec.project, cluster)
        derived = fit(f"{PREFIX}-{name[:30]}-{b36(ns, name, n=10)}")
        neg = fit(f"k8s1-{uid}-{ns[:10]}-{name[:20]}-{port}-{name_hash('mcg', cluster, ns, name, port)}")
        zones = list(self.records[cluster].spec.zones)
        urls = []
        for zone in zones:
            out.compute[("networkEndpointGroups", zone, neg)] = {
                "name": neg, "networkEndpointType": "GCE_VM_IP_PORT",
                "network": f"{API}/projects/{self.spec.network_project}/global/networks/{self.spec.network}",
                "defaultPort": int(target) if str(target).isdigit() else port,
                "description": f'{{"cluster-uid":"{uid}","namespace":"{ns}","service-name":"{derived}",'
                               f'"port":"{port}",{_NEG_MARKER}}}'}
            urls.append(f"{API}/projects/{self.spec.project}/zones/{zone}/networkEndpointGroups/{neg}")
        key = (cluster, ns, derived)
        known = out.services.get(key)
        neg_map = {**(json.loads(known["metadata"]["annotations"]["cloud.google.com/neg-status"])
                      ["network_endpoint_groups"] if known else {}), str(port): neg}
        out.services[key] = {
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"name": derived, "namespace": ns,
                         "labels": {"app.kubernetes.io/managed-by": DERIVED_BY, "networking.gke.io/service-name": name},
                         "annotations": {"cloud.google.com/neg-status": json.dumps(
                             {"network_endpoint_groups": neg_map, "zones": zones}, separators=(",", ":"))}},
            "spec": {"type": "ClusterIP", "clusterIP": "None", "selector": dict(svc["spec"]["selector"]),
                     "ports": [{k: v for k, v in p.items() if k in ("name", "protocol", "port", "targetPort")}
                               for p in svc["spec"].get("ports") or []]}}
        return urls

    def _url_map(self, name: str, entries: list[_Entry], hosts: list[str]) -> Obj | None:
        """One host rule and path matcher per hostname the routes name (its routes' entries and those of routes
        naming no hostname, as Gateway API merges them), and one for ``*`` (routes naming none)."""
        if not entries:
            return None

        def hostnames(entry: _Entry) -> list[str]:
            return list((entry.route.get("spec") or {}).get("hostnames") or [])

        groups: list[tuple[str, list[_Entry]]] = [
            (h, [e for e in entries if h in hostnames(e) or not hostnames(e)]) for h in hosts if h != "*"]
        groups.append(("*", [e for e in entries if not hostnames(e)]))
        host_rules, matchers, fallback = [], [], None
        for i, (host, group) in enumerate(g for g in groups if g[1]):
            ordered = sorted(group, key=lambda e: e.precedence())
            rules = [{"priority": p, "matchRules": _match_rules(e.match), **e.action} for p, e in enumerate(ordered)]
            default = next((e.action for e in ordered if "routeAction" in e.action), None)
            here: Obj = {"defaultService": default["routeAction"]["weightedBackendServices"][0]["backendService"]} \
                if default else {"defaultUrlRedirect": ordered[0].action["urlRedirect"]}
            fallback = fallback or here
            host_rules.append({"hosts": [host], "pathMatcher": f"routes{i}"})
            matchers.append({"name": f"routes{i}", **here, "routeRules": rules})
        return {"name": name, **(fallback or {}), "hostRules": host_rules, "pathMatchers": matchers}

    # --- converge --------------------------------------------------------------------------------------------------

    def _write_status(self, kube: KubeApiServer, plural: str, obj: Obj, status: Obj, *, force: bool = False) -> None:
        if not force and _strip_times(obj.get("status") or {}) == _strip_times(status):
            return
        ns, name = obj["metadata"]["namespace"], obj["metadata"]["name"]
        kube_call(kube, "PUT", f"/apis/gateway.networking.k8s.io/v1/namespaces/{ns}/{plural}/{name}/status",
                  {"apiVersion": GATEWAY_API, "kind": obj["kind"], "metadata": {"name": name, "namespace": ns},
                   "status": status})

    def _ensure_finalizer(self, kube: KubeApiServer, gw: Obj) -> None:
        current = list(gw["metadata"].get("finalizers") or [])
        if FINALIZER not in current:
            kube_call(kube, "PATCH", _gw_path(gw), {"metadata": {"finalizers": [*current, FINALIZER]}})

    def _drop_finalizer(self, kube: KubeApiServer, gw: Obj) -> None:
        current = list(gw["metadata"].get("finalizers") or [])
        if FINALIZER in current:
            rest = [f for f in current if f != FINALIZER]
            kube_call(kube, "PATCH", _gw_path(gw), {"metadata": {"finalizers": rest or None}})

    def _warning_event(self, kube: KubeApiServer, kind: str, ns: str, name: str, message: str) -> None:
        warning_event(kube, {"apiVersion": GATEWAY_API, "kind": kind, "name": name, "namespace": ns},
                      f"{name}.{name_hash(kind, message, n=16)}", "SYNC", message, "multi-cluster-gateway-controller")


def _gw_path(gw: Obj) -> str:
    return f"/apis/gateway.networking.k8s.io/v1/namespaces/{gw['metadata']['namespace']}/gateways/" \
           f"{gw['metadata']['name']}"


def _strip_times(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _strip_times(v) for k, v in value.items() if k != "lastTransitionTime"}
    if isinstance(value, list):
        return [_strip_times(v) for v in value]
    return value


def _match_rules(match: Obj) -> list[Obj]:
    """A Gateway API match as URL map match rules (ORed): PathPrefix /api is the path /api and everything under
    /api/ (not /apix); Exact is a full path match; Exact header matches."""
    path = match.get("path") or {"type": "PathPrefix", "value": "/"}
    headers = [{"headerName": h["name"], "exactMatch": h["value"]} for h in match.get("headers") or []
               if h.get("type", "Exact") == "Exact"]
    extra = {"headerMatches": headers} if headers else {}
    value = str(path.get("value", "/"))
    if path.get("type") == "Exact":
        return [{"fullPathMatch": value, **extra}]
    if value == "/" or value.endswith("/"):
        return [{"prefixMatch": value, **extra}]
    return [{"fullPathMatch": value, **extra}, {"prefixMatch": f"{value}/", **extra}]
