"""The simulated hosted Multi Cluster Ingress controller.

It watches the fleet's config cluster (the ``multiclusteringress`` feature's config membership in the simulated GKE
Hub) and does what GKE's Google-hosted controller does, after a configurable provisioning delay:

- for every ``MultiClusterService``: a derived headless Service ``mci-<mcs>-svc-<hash>`` in each selected cluster
  (``spec.clusters`` links, or every fleet member) and one NEG per zone and port in Compute;
- for every ``MultiClusterIngress``: ``mci-…`` health checks, backend services (NEG backends), URL map, an SSL
  certificate per ``spec.template.spec.tls`` Secret (read from the config cluster), target proxies, forwarding rules
  and firewall rule, then ``status.VIP`` and ``status.CloudResources``;
- finalizers ``mci.finalizer.networking.gke.io`` / ``mcs.finalizer.networking.gke.io``, removed once the cloud
  resources of a deleted object are gone.

Like GKE's controller it owns every ``mci-`` Compute resource of the project and deletes those it did not make.
Its writes go straight to the emulators (no HTTP), so they never show in the request journal.
"""

from __future__ import annotations

import base64
import json
import logging
import re
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
from gitlab_mci.sim.mci_features import backend_config_fields, backend_config_name, frontend_config_fields
from gitlab_mci.sim.names import b36, fit, name_hash
from gitlab_mci.sim.names import cluster_uid as cluster_uid  # where the hosted controller's callers find them
from gitlab_mci.sim.names import gke_neg_name as gke_neg_name

if TYPE_CHECKING:
    from gitlab_mci.sim.kube import KubeApiServer

Obj = dict[str, Any]
log = logging.getLogger(__name__)

API = "https://www.googleapis.com/compute/v1"
MCI_FINALIZER = "mci.finalizer.networking.gke.io"
MCS_FINALIZER = "mcs.finalizer.networking.gke.io"
HEALTH_CHECK_RANGES = ["130.211.0.0/22", "35.191.0.0/16"]
_WATCHED = {"MultiClusterIngress", "MultiClusterService", "BackendConfig", "FrontendConfig", "Namespace", "Secret"}
# Creation order; deletion runs in reverse.
_ORDER = ("networkEndpointGroups", "healthChecks", "backendServices", "urlMaps", "sslCertificates",
          "targetHttpProxies", "targetHttpsProxies", "globalForwardingRules", "firewalls")
_NEG_MARKER = '"gitlab-mci-sim":"neg"'
_ERROR_RE = re.compile(r"^(MultiClusterIngress|MultiClusterService) ([^/ ]+)/([^: ]+): (.*)$")


def derived_service_name(namespace: str, mcs: str) -> str:
    """The derived Service GKE makes for a MultiClusterService: ``mci-<mcs>-svc-<16 characters>``."""
    return f"mci-{mcs[:38].rstrip('-')}-svc-{b36(namespace, mcs, n=16)}"


@dataclass
class _Desired:
    """What every object in the config cluster asks for, in Compute and in the member clusters."""

    compute: dict[tuple[str, str, str], Obj] = field(default_factory=dict)  # (collection, zone, name) -> body
    services: dict[tuple[str, str, str], Obj] = field(default_factory=dict)  # (cluster, ns, name) -> Service
    status: dict[tuple[str, str], Obj] = field(default_factory=dict)  # (ns, mci) -> status
    errors: list[str] = field(default_factory=list)


class MciController(FleetController):
    """Reconciles MultiClusterIngress / MultiClusterService in the config cluster; see the module docstring."""

    name = "sim-mci-controller"
    watched = frozenset(_WATCHED)

    # --- reconcile -------------------------------------------------------------------------------------------------

    def reconcile(self) -> None:
        """One pass over every object: converge Compute, derived Services, status and finalizers."""
        config = self.config_cluster()
        kube = self.clusters[config] if config else None
        mcis = kube.list("networking.gke.io/v1", "MultiClusterIngress") if kube else []
        mcss = kube.list("networking.gke.io/v1", "MultiClusterService") if kube else []
        members = fleet_members(self.spec, self.hub)
        desired = self._desired(kube, mcis, mcss, members)
        if kube is not None:
            for obj in [*mcis, *mcss]:
                self._ensure_finalizer(kube, obj)
        converge_services(self.clusters, self.clusters, desired.services, "multi-cluster-ingress", "sim-mci")
        desired.errors += converge_compute(self.compute, self.spec.project, _ORDER, desired.compute, self._seeded,
                                           prefix="mci", neg_marker=_NEG_MARKER)
        if kube is not None:
            for mci in mcis:
                key = (mci["metadata"]["namespace"], mci["metadata"]["name"])
                if not mci["metadata"].get("deletionTimestamp"):
                    self._write_status(kube, mci, desired.status.get(key, {}))
            for obj in [*mcis, *mcss]:
                if obj["metadata"].get("deletionTimestamp"):
                    self._drop_finalizer(kube, obj)
        for error in desired.errors:
            if error not in self.errors:
                log.warning("simulated MCI controller: %s", error)
                self.errors.append(error)
            if kube is not None:
                self._warning_event(kube, error)

    def _desired(self, kube: KubeApiServer | None, mcis: list[Obj], mcss: list[Obj], members: list[str]) -> _Desired:
        out = _Desired()
        if kube is None:
            return out
        live_mcs = {(o["metadata"]["namespace"], o["metadata"]["name"]): o for o in mcss
                    if not o["metadata"].get("deletionTimestamp")}
        negs: dict[tuple[str, str, str], list[str]] = {}  # (ns, mcs, port) -> NEG URLs
        for (ns, name), mcs in live_mcs.items():
            selected = self._selected(mcs, members, out)
            template = ((mcs.get("spec") or {}).get("template") or {}).get("spec") or {}
            ports = template.get("ports") or []
            svc_name = derived_service_name(ns, name)
            for cluster in selected:
                if self.clusters[cluster].get("v1", "Namespace", ns) is None:
                    out.errors.append(f"MultiClusterService {ns}/{name}: namespace {ns} does not exist in "
                                      f"cluster {cluster}; no derived Service there")
                    continue
                uid = cluster_uid(self.spec.project, cluster)
                neg_names = {}
                for p in ports:
                    port = str(p.get("port"))
                    neg = gke_neg_name(self.spec.project, cluster, ns, svc_name, port)
                    neg_names[port] = neg
                    for zone in self.records[cluster].spec.zones:
                        out.compute[("networkEndpointGroups", zone, neg)] = {
                            "name": neg, "networkEndpointType": "GCE_VM_IP_PORT",
                            "network": f"{API}/projects/{self.spec.network_project}/global/networks/"
                                       f"{self.spec.network}",
                            "defaultPort": _int(p.get("targetPort"), _int(p.get("port"), 80)),
                            "description": '{"cluster-uid":"' + uid + '","namespace":"' + ns
                                           + '","service-name":"' + svc_name + '","port":"' + port + '",'
                                           + _NEG_MARKER + "}",
                        }
                        negs.setdefault((ns, name, port), []).append(
                            f"{API}/projects/{self.spec.project}/zones/{zone}/networkEndpointGroups/{neg}")
                out.services[(cluster, ns, svc_name)] = {
                    "apiVersion": "v1", "kind": "Service",
                    "metadata": {
                        "name": svc_name, "namespace": ns,
                        "labels": {"networking.gke.io/service-name": name, "networking.gke.io/service-namespace": ns,
                                   "app.kubernetes.io/managed-by": "multi-cluster-ingress"},
                        "annotations": {
                            "cloud.google.com/neg": json.dumps(
                                {"exposed_ports": {str(p.get("port")): {} for p in ports}}, separators=(",", ":")),
                            "cloud.google.com/neg-status": json.dumps(
                                {"network_endpoint_groups": neg_names,
                                 "zones": list(self.records[cluster].spec.zones)}, separators=(",", ":")),
                        },
                    },
                    "spec": {"type": "ClusterIP", "clusterIP": "None", "selector": dict(template.get("selector") or {}),
                             "ports": [{k: v for k, v in p.items() if k in ("name", "protocol", "port", "targetPort")}
                                       for p in ports]},
                }
        for mci in mcis:
            if mci["metadata"].get("deletionTimestamp"):
                continue
            self._desired_mci(kube, mci, live_mcs, negs, members, out)
        return out

    def _selected(self, mcs: Obj, members: list[str], out: _Desired) -> list[str]:
        links = [c.get("link") for c in (mcs.get("spec") or {}).get("clusters") or []]
        if not links:
            return members
        by_link = {c.link: c.name for c in self.spec.clusters if c.name in members}
        unknown = [str(link) for link in links if link not in by_link]
        if unknown:
            out.errors.append(f"MultiClusterService {mcs['metadata']['namespace']}/{mcs['metadata']['name']}: "
                              f"cluster link(s) {', '.join(unknown)} name no fleet member")
        return [by_link[str(link)] for link in links if link in by_link]

    def _desired_mci(self, kube: KubeApiServer, mci: Obj, live_mcs: dict[tuple[str, str], Obj],
                     negs: dict[tuple[str, str, str], list[str]], members: list[str], out: _Desired) -> None:
        ns, name = mci["metadata"]["namespace"], mci["metadata"]["name"]
        notes = mci["metadata"].get("annotations") or {}
        template = ((mci.get("spec") or {}).get("template") or {}).get("spec") or {}
        prefix = f"mci-{b36(ns, name, n=6)}"
        g = f"{API}/projects/{self.spec.project}/global"
        where = f"MultiClusterIngress {ns}/{name}"

        services: dict[tuple[str, str], str] = {}  # (mcs, port) -> backend service URL

        def backend(raw: Any) -> str | None:
            raw = raw or {}
            mcs, port = str(raw.get("serviceName", "")), str(raw.get("servicePort", ""))
            if (mcs, port) in services:
                return services[(mcs, port)]
            source = live_mcs.get((ns, mcs))
            if source is None:
                out.errors.append(f"{where}: MultiClusterService {ns}/{mcs} not found")
                return None
            ports = (((source.get("spec") or {}).get("template") or {}).get("spec") or {}).get("ports") or []
            spec_port = next((p for p in ports if str(p.get("port")) == port or str(p.get("name")) == port), None)
            if spec_port is None:
                out.errors.append(f"{where}: MultiClusterService {ns}/{mcs} has no port {port}")
                return None
            number = str(spec_port.get("port"))
            bs_name = fit(f"{prefix}-{number}-{ns}-{mcs}")
            path = self._health_path(kube, source)
            out.compute[("healthChecks", "", bs_name)] = {
                "name": bs_name, "type": "HTTP", "description": f'{{"mci":"{ns}/{name}"}}',
                "httpHealthCheck": {"portSpecification": "USE_SERVING_PORT", "requestPath": path},
                "checkIntervalSec": 15, "timeoutSec": 15,
            }
            out.compute[("backendServices", "", bs_name)] = {
                "name": bs_name, "protocol": "HTTP", "portName": f"port{number}", "loadBalancingScheme": "EXTERNAL",
                "description": f'{{"mci":"{ns}/{name}","mcs":"{mcs}"}}',
                "healthChecks": [f"{g}/healthChecks/{bs_name}"],
                "backends": [{"group": url, "balancingMode": "RATE", "maxRatePerEndpoint": 1e8}
                             for url in negs.get((ns, mcs, number), [])],
            }
            # The MultiClusterService's BackendConfig: its options on the backend service (mci_features.py).
            bc_name = backend_config_name(source)
            bc = kube.get("cloud.google.com/v1", "BackendConfig", bc_name, ns) if bc_name else None
            fields, errors = backend_config_fields(bc, self.spec.project,
                                                   lambda secret: kube.get("v1", "Secret", secret, ns))
            out.compute[("backendServices", "", bs_name)].update(fields)
            out.errors += [f"{where}: {e}" for e in errors]
            services[(mcs, port)] = f"{g}/backendServices/{bs_name}"
            return services[(mcs, port)]

        default = backend(template["backend"]) if template.get("backend") else None
        host_rules, matchers = [], []
        for i, rule in enumerate(template.get("rules") or []):
            path_rules = []
            for p in (rule.get("http") or {}).get("paths") or []:
                url = backend(p.get("backend"))
                if url is not None:
                    path_rules.append({"paths": [p.get("path", "/*")], "service": url})
            if path_rules:
                matchers.append({"name": f"host{i}", "defaultService": default or path_rules[0]["service"],
                                 "pathRules": path_rules})
                host_rules.append({"hosts": [rule.get("host") or "*"], "pathMatcher": f"host{i}"})
        default = default or next(iter(services.values()), None)
        if default is None:
            out.errors.append(f"{where}: no backend could be built; no load balancer")
            return
        um = fit(f"{prefix}-{ns}-{name}")
        out.compute[("urlMaps", "", um)] = {"name": um, "defaultService": default, "hostRules": host_rules,
                                           "pathMatchers": matchers}
        redirect = self._redirect(kube, ns, notes.get("networking.gke.io/frontend-config"))
        certs = [c.strip() for c in notes.get("networking.gke.io/pre-shared-certs", "").split(",") if c.strip()]
        missing = [c for c in certs if self.compute.get("sslCertificates", c, project=self.spec.project) is None]
        if missing:
            out.errors.append(f"{where}: pre-shared certificate(s) {', '.join(missing)} not found")
            certs = [c for c in certs if c not in missing]
        for tls in template.get("tls") or []:  # Kubernetes Secrets of the config cluster → mci- certificates
            cert = self._secret_certificate(kube, ns, str(tls.get("secretName", "")), prefix, where, out)
            if cert is not None:
                certs.append(cert)
        http_map = um
        if redirect and certs:
            http_map = fit(f"{prefix}-rm-{ns}-{name}")
            out.compute[("urlMaps", "", http_map)] = {
                "name": http_map, "defaultUrlRedirect": {"httpsRedirect": True,
                                                         "redirectResponseCode": "MOVED_PERMANENTLY_DEFAULT"}}
        vip = notes.get("networking.gke.io/static-ip") or self.ephemeral_vip(ns, name)
        proxies, rules = [um], []
        out.compute[("targetHttpProxies", "", um)] = {"name": um, "urlMap": f"{g}/urlMaps/{http_map}"}
        fw_http = fit(f"{prefix}-fw-{ns}-{name}")
        out.compute[("globalForwardingRules", "", fw_http)] = {
            "name": fw_http, "IPAddress": vip, "IPProtocol": "TCP", "portRange": "80-80",
            "loadBalancingScheme": "EXTERNAL", "target": f"{g}/targetHttpProxies/{um}"}
        rules.append(fw_http)
        if certs:
            fc_name = notes.get("networking.gke.io/frontend-config")
            out.compute[("targetHttpsProxies", "", um)] = {
                "name": um, "urlMap": f"{g}/urlMaps/{um}",
                "sslCertificates": [f"{g}/sslCertificates/{c}" for c in certs],
                **frontend_config_fields(kube.get("networking.gke.io/v1beta1", "FrontendConfig", fc_name, ns)
                                         if fc_name else None, self.spec.project)}
            fws = fit(f"{prefix}-fws-{ns}-{name}")
            out.compute[("globalForwardingRules", "", fws)] = {
                "name": fws, "IPAddress": vip, "IPProtocol": "TCP", "portRange": "443-443",
                "loadBalancingScheme": "EXTERNAL", "target": f"{g}/targetHttpsProxies/{um}"}
            rules.append(fws)
        used_mcs = {m for m, _ in services}
        derived = {derived_service_name(ns, m) for m in used_mcs}
        clusters = sorted({c for (c, sns, sname) in out.services if sns == ns and sname in derived})
        fw = fit(f"{prefix}-default-l7")
        target_ports = sorted({str(b["defaultPort"]) for (coll, _z, _n), b in out.compute.items()
                               if coll == "networkEndpointGroups"})
        out.compute[("firewalls", "", fw)] = {
            "name": fw, "network": f"{API}/projects/{self.spec.network_project}/global/networks/{self.spec.network}",
            "direction": "INGRESS", "sourceRanges": HEALTH_CHECK_RANGES,
            "allowed": [{"IPProtocol": "tcp", "ports": target_ports or ["80"]}],
            "targetTags": sorted(self.records[c].network_tag for c in clusters) or ["none"],
        }
        neg_refs = sorted({url.removeprefix(f"{API}/projects/{self.spec.project}/")
                           for (m, _p), _u in services.items() for (nns, mm, _pp), urls in negs.items()
                           if nns == ns and mm == m for url in urls})
        out.status[(ns, name)] = {
            "VIP": vip,
            "CloudResources": {
                "BackendServices": sorted({u.rsplit("/", 1)[-1] for u in services.values()}),
                "Firewalls": [fw],
                "ForwardingRules": rules,
                "HealthChecks": sorted({u.rsplit("/", 1)[-1] for u in services.values()}),
                "NetworkEndpointGroups": neg_refs,
                "TargetProxies": proxies,
                "UrlMap": um,
            },
        }

    def _secret_certificate(self, kube: KubeApiServer, ns: str, secret: str, prefix: str, where: str,
                            out: _Desired) -> str | None:
        """A ``kubernetes.io/tls`` Secret as the self-managed SSL certificate GKE makes of it; its name."""
        found = kube.get("v1", "Secret", secret, ns)
        data = (found or {}).get("data") or {}
        try:
            cert, key = (base64.b64decode(data[k]).decode() for k in ("tls.crt", "tls.key"))
        except (KeyError, ValueError):
            out.errors.append(f"{where}: Secret {ns}/{secret} " + ("not found" if found is None else
                                                                    "has no valid tls.crt and tls.key"))
            return None
        name = fit(f"{prefix}-{name_hash(ns, secret, cert, n=8)}-{ns}-{secret}")  # a new name when the Secret changes
        out.compute[("sslCertificates", "", name)] = {
            "name": name, "type": "SELF_MANAGED", "certificate": cert, "privateKey": key,
            "description": f'{{"mci":"{where.split(" ", 1)[1]}","secret":"{secret}"}}'}
        return name

    def _health_path(self, kube: KubeApiServer, mcs: Obj) -> str:
        raw = (mcs["metadata"].get("annotations") or {}).get("beta.cloud.google.com/backend-config") or \
            (mcs["metadata"].get("annotations") or {}).get("cloud.google.com/backend-config")
        if not raw:
            return "/"
        try:
            ref = json.loads(raw)
        except ValueError:
            return "/"
        name = ref.get("default") or next(iter((ref.get("ports") or {}).values()), None)
        bc = kube.get("cloud.google.com/v1", "BackendConfig", str(name), mcs["metadata"]["namespace"]) if name else None
        return str(((bc or {}).get("spec") or {}).get("healthCheck", {}).get("requestPath") or "/")

    def _redirect(self, kube: KubeApiServer, ns: str, name: str | None) -> bool:
        if not name:
            return False
        fc = kube.get("networking.gke.io/v1beta1", "FrontendConfig", name, ns)
        return bool((((fc or {}).get("spec") or {}).get("redirectToHttps") or {}).get("enabled"))

    # --- converge --------------------------------------------------------------------------------------------------

    def _write_status(self, kube: KubeApiServer, mci: Obj, status: Obj) -> None:
        if (mci.get("status") or {}) == status:
            return
        ns, name = mci["metadata"]["namespace"], mci["metadata"]["name"]
        self._call(kube, "PUT", f"/apis/networking.gke.io/v1/namespaces/{ns}/multiclusteringresses/{name}/status",
                   {"apiVersion": "networking.gke.io/v1", "kind": "MultiClusterIngress",
                    "metadata": {"name": name, "namespace": ns}, "status": status})

    def _ensure_finalizer(self, kube: KubeApiServer, obj: Obj) -> None:
        if obj["metadata"].get("deletionTimestamp"):
            return
        finalizer = MCI_FINALIZER if obj["kind"] == "MultiClusterIngress" else MCS_FINALIZER
        current = list(obj["metadata"].get("finalizers") or [])
        if finalizer not in current:
            self._call(kube, "PATCH", _path(obj), {"metadata": {"finalizers": [*current, finalizer]}})

    def _drop_finalizer(self, kube: KubeApiServer, obj: Obj) -> None:
        finalizer = MCI_FINALIZER if obj["kind"] == "MultiClusterIngress" else MCS_FINALIZER
        current = list(obj["metadata"].get("finalizers") or [])
        if finalizer in current:
            rest = [f for f in current if f != finalizer]
            self._call(kube, "PATCH", _path(obj), {"metadata": {"finalizers": rest or None}})

    def _warning_event(self, kube: KubeApiServer, error: str) -> None:
        """A Warning Event on the object an error is about, as GKE's controller reports sync problems."""
        m = _ERROR_RE.match(error)
        if m is None:
            return
        kind, ns, name, message = m.groups()
        warning_event(kube, {"apiVersion": "networking.gke.io/v1", "kind": kind, "name": name, "namespace": ns},
                      f"{name}.{name_hash(kind, message, n=16)}", "SyncError", message,
                      "multi-cluster-ingress-controller", "sim-mci")

    @staticmethod
    def _call(kube: KubeApiServer, method: str, path: str, body: Obj | None = None) -> Obj:
        return kube_call(kube, method, path, body, "sim-mci")


def _path(obj: Obj) -> str:
    group, version = obj["apiVersion"].split("/")
    plurals = {"MultiClusterIngress": "multiclusteringresses", "MultiClusterService": "multiclusterservices"}
    plural = plurals[obj["kind"]]
    return f"/apis/{group}/{version}/namespaces/{obj['metadata']['namespace']}/{plural}/{obj['metadata']['name']}"


def _int(value: Any, default: int) -> int:
    return int(value) if isinstance(value, int) or (isinstance(value, str) and value.isdigit()) else default
