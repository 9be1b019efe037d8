"""The simulated multi-cluster Services controller (GKE's ``multiclusterservicediscovery`` fleet feature).

When the feature is enabled in the simulated GKE Hub it installs the ``net.gke.io`` CRDs (``ServiceExport``,
``ServiceImport``) in every fleet member, and, a configurable delay after a change (GKE documents several minutes;
the simulator uses seconds), makes for every exported Service (a ``ServiceExport`` named like a Service of its
namespace) a ``ServiceImport`` of the same name in that namespace of **every** member cluster, listing the
exporting clusters. An export whose Service does not exist gets ``Exported: False`` and no import. Imports nobody
exports any more are deleted. Its writes go straight to the API servers (no HTTP), so they never show in the journal.

Its reconcile loop is :class:`gitlab_mci.sim.controller.Reconciler`; :func:`install_crd` and :func:`has_kind`
serve the simulated Gateway controller too.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any

from gitlab_mci.sim.controller import Reconciler, fleet_members, kube_call

if TYPE_CHECKING:
    from gitlab_mci.sim.gkehub import GkeHubEmulator
    from gitlab_mci.sim.kube import KubeApiServer
    from gitlab_mci.sim.spec import WorldSpec

Obj = dict[str, Any]
log = logging.getLogger(__name__)

FEATURE = "multiclusterservicediscovery"
MCS_API = "net.gke.io/v1"
IMPORTER = "gke-mcs-importer"  # the managed-by label of the imports this controller makes
_WATCHED = {"ServiceExport", "ServiceImport", "Service", "Namespace", "CustomResourceDefinition"}


def install_crd(kube: KubeApiServer, group: str, version: str, plural: str, kind: str, *, namespaced: bool = True,
                short: tuple[str, ...] = ()) -> None:
    """Install a CRD (structural schema left open) unless it is there."""
    name = f"{plural}.{group}"
    if kube.get("apiextensions.k8s.io/v1", "CustomResourceDefinition", name) is not None:
        return
    kube.seed({
        "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition", "metadata": {"name": name},
        "spec": {"group": group, "scope": "Namespaced" if namespaced else "Cluster",
                 "names": {"plural": plural, "singular": kind.lower(), "kind": kind, "listKind": f"{kind}List",
                           "shortNames": list(short)},
                 "versions": [{"name": version, "served": True, "storage": True, "subresources": {"status": {}},
                               "schema": {"openAPIV3Schema": {"type": "object",
                                                              "x-kubernetes-preserve-unknown-fields": True}}}]}})


def has_kind(kube: KubeApiServer, api_version: str, kind: str) -> bool:
    try:
        kube.list(api_version, kind, "no-such-namespace-probe")
    except Exception:  # the kind is not registered (CRD not installed)
        return False
    return True


class McsController(Reconciler):
    """ServiceExport → ServiceImport in every member cluster; see the module docstring."""

    name = "sim-mcs-controller"
    watched = frozenset(_WATCHED)

    def __init__(self, spec: WorldSpec, clusters: dict[str, KubeApiServer], hub: GkeHubEmulator, *,
                 delay: float = 3.0) -> None:
        super().__init__(delay)
        self.spec = spec
        self.clusters = clusters
        self.hub = hub
        self._installed: set[str] = set()  # clusters given the CRDs once (a user may delete them again)
        self.watch(clusters.values())
        hub.add_listener(self.poke)

    def members(self) -> list[str]:
        return fleet_members(self.spec, self.hub)

    def reconcile(self) -> None:
        if not self.hub.feature_enabled(FEATURE):
            return
        members = self.members()
        for name in members:
            if name not in self._installed:
                install_crd(self.clusters[name], "net.gke.io", "v1", "serviceexports", "ServiceExport",
                            short=("svcexport",))
                install_crd(self.clusters[name], "net.gke.io", "v1", "serviceimports", "ServiceImport",
                            short=("svcimport",))
                self._installed.add(name)
        wanted: dict[tuple[str, str], Obj] = {}  # (ns, name) -> import spec/status
        for name in members:
            kube = self.clusters[name]
            if not has_kind(kube, MCS_API, "ServiceExport"):
                continue
            membership = next(c for c in self.spec.clusters if c.name == name).name
            for export in kube.list(MCS_API, "ServiceExport"):
                ns, sname = export["metadata"]["namespace"], export["metadata"]["name"]
                svc = kube.get("v1", "Service", sname, ns)
                exported = svc is not None and not export["metadata"].get("deletionTimestamp")
                self._export_status(kube, export, exported)
                if not exported or svc is None:
                    continue
                entry = wanted.setdefault((ns, sname), {"ports": [], "clusters": []})
                ports = [{k: p[k] for k in ("name", "port", "protocol") if k in p}
                         for p in (svc.get("spec") or {}).get("ports") or []]
                if not entry["ports"]:
                    entry["ports"] = ports
                entry["clusters"].append({"cluster": membership})
        for name in members:
            kube = self.clusters[name]
            if not has_kind(kube, MCS_API, "ServiceImport"):
                continue
            for (ns, sname), entry in wanted.items():
                if kube.get("v1", "Namespace", ns) is None:
                    continue  # namespace sameness: no namespace, no import
                self._ensure_import(kube, ns, sname, entry)
            for imp in kube.list(MCS_API, "ServiceImport", label_selector=f"app.kubernetes.io/managed-by={IMPORTER}"):
                key = (imp["metadata"]["namespace"], imp["metadata"]["name"])
                if key not in wanted:
                    kube_call(kube, "DELETE", f"/apis/net.gke.io/v1/namespaces/{key[0]}/serviceimports/{key[1]}")

    def _export_status(self, kube: KubeApiServer, export: Obj, exported: bool) -> None:
        ns, name = export["metadata"]["namespace"], export["metadata"]["name"]
        conditions = [
            {"type": "Initialized", "status": "True", "reason": "Initialized", "message": ""},
            {"type": "Exported", "status": "True" if exported else "False",
             "reason": "Exported" if exported else "NoService",
             "message": "" if exported else f"Service {ns}/{name} does not exist in this cluster"},
        ]
        if [(c["type"], c["status"]) for c in (export.get("status") or {}).get("conditions") or []] == \
                [(c["type"], c["status"]) for c in conditions]:
            return
        now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        kube_call(kube, "PUT", f"/apis/net.gke.io/v1/namespaces/{ns}/serviceexports/{name}/status",
                  {"apiVersion": MCS_API, "kind": "ServiceExport", "metadata": {"name": name, "namespace": ns},
                   "status": {"conditions": [{**c, "lastTransitionTime": now} for c in conditions]}})

    def _ensure_import(self, kube: KubeApiServer, ns: str, name: str, entry: Obj) -> None:
        spec = {"type": "ClusterSetIP", "ports": entry["ports"]}
        status = {"clusters": sorted(entry["clusters"], key=lambda c: c["cluster"])}
        live = kube.get(MCS_API, "ServiceImport", name, ns)
        path = f"/apis/net.gke.io/v1/namespaces/{ns}/serviceimports/{name}"
        if live is None:
            kube_call(kube, "POST", f"/apis/net.gke.io/v1/namespaces/{ns}/serviceimports", {
                "apiVersion": MCS_API, "kind": "ServiceImport",
                "metadata": {"name": name, "namespace": ns,
                             "labels": {"app.kubernetes.io/managed-by": IMPORTER}},
                "spec": spec})
            live = kube.get(MCS_API, "ServiceImport", name, ns) or {}
        elif (live.get("spec") or {}) != spec:
            kube_call(kube, "PATCH", path, {"spec": spec})
        if (live.get("status") or {}) != status:
            kube_call(kube, "PUT", f"{path}/status", {"apiVersion": MCS_API, "kind": "ServiceImport",
                                                      "metadata": {"name": name, "namespace": ns}, "status": status})
