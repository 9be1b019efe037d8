"""Pin one node port for the app's Service in every production cluster, verify it, or choose a free one.

Flow: find the Service (model) → the port it should have (desired) → compare with what the cluster reports
(diff) → one strategic-merge patch of that port or nothing (action) → a row per cluster (report).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

from gitlab_mci.errors import UserError
from gitlab_mci.helm import NODE_PORT_MAX, NODE_PORT_MIN
from gitlab_mci.kube import Cluster, api_error_message

T = TypeVar("T")
I = TypeVar("I")  # noqa: E741


@dataclass(frozen=True)
class ServiceRef:
    """How to find the app's Service: an explicit name, else ``<release>-auto-deploy``, else by labels."""

    namespace: str
    release: str | None = None
    name: str | None = None
    port: str | None = None  # port name or number; default: the port named `web`, or the only port

    def describe(self) -> str:
        return f"{self.namespace}/{self.name or f'{self.release}-auto-deploy'}"


@dataclass(frozen=True)
class ServiceRow:
    """What a row of a per-cluster Service report starts with (`nodeport`'s and `neg`'s)."""

    cluster: str
    service: str  # namespace/name
    type: str
    port: int | None  # the serving port


@dataclass(frozen=True)
class Row(ServiceRow):
    """One line of the pin/verify report."""

    node_port: int | None
    status: str  # ok | patched | mismatch | missing | not-nodeport

    @property
    def ok(self) -> bool:
        return self.status in ("ok", "patched")


def _is_not_found(exc: Exception) -> bool:
    return getattr(exc, "status", None) == 404


def find_service(cluster: Cluster, ref: ServiceRef, *, namespace_may_be_missing: bool = False) -> dict[str, Any] | None:
    """The Service as a dict (``None`` when absent); a missing namespace is an error of its own unless
    ``namespace_may_be_missing`` (then ``None``)."""
    from kubernetes.client.exceptions import ApiException

    names = [ref.name] if ref.name else [f"{ref.release}-auto-deploy"]
    for name in names:
        try:
            svc = cluster.call(f"read Service {ref.namespace}/{name}", cluster.core.read_namespaced_service,
                               name, ref.namespace)
            return _to_dict(cluster, svc)
        except ApiException as exc:
            if not _is_not_found(exc):
                raise UserError(f"context {cluster.context!r}: {api_error_message(exc)}") from None
    try:
        cluster.call(f"read namespace {ref.namespace}", cluster.core.read_namespace, ref.namespace)
    except ApiException as exc:
        if _is_not_found(exc):
            if namespace_may_be_missing:
                return None
            raise UserError(
                f"namespace {ref.namespace!r} does not exist in context {cluster.context!r} "
                "(check KUBE_NAMESPACE / --namespace)"
            ) from None
        raise UserError(f"context {cluster.context!r}: {api_error_message(exc)}") from None
    if ref.name or not ref.release:
        return None
    # Auto DevOps labels the stable track's Service `app=<release>,track=stable`.
    found = cluster.call("list Services", cluster.core.list_namespaced_service, ref.namespace,
                         label_selector=f"app={ref.release},track=stable").items
    return _to_dict(cluster, found[0]) if len(found) == 1 else None


def require_service(cluster: Cluster, ref: ServiceRef) -> dict[str, Any]:
    """The Service as a dict; its absence is the user's error (the app is not deployed there)."""
    svc = find_service(cluster, ref)
    if svc is None:
        raise UserError(f"context {cluster.context!r}: no Service {ref.describe()} (nor one labelled "
                        f"app={ref.release},track=stable); has the app been deployed there?")
    return svc


def service_name(svc: dict[str, Any]) -> str:
    """``namespace/name`` of a Service read as a dict."""
    return f"{svc['metadata']['namespace']}/{svc['metadata']['name']}"


def patch_service(cluster: Cluster, svc: dict[str, Any], body: dict[str, Any], action: str, failed: str) -> None:
    """Patch the Service (read as a dict) with ``body``; ``action`` names the call, and the API's refusal is the
    user's error ``<failed>: <why>``."""
    from kubernetes.client.exceptions import ApiException

    try:
        cluster.call(action, cluster.core.patch_namespaced_service, svc["metadata"]["name"],
                     svc["metadata"]["namespace"], body)
    except ApiException as exc:
        raise UserError(f"{failed}: {api_error_message(exc)}") from None


def _to_dict(cluster: Cluster, obj: Any) -> dict[str, Any]:
    result: dict[str, Any] = cluster.api.sanitize_for_serialization(obj)
    return result


def serving_port(svc: dict[str, Any], wanted: str | None, where: str) -> dict[str, Any]:
    """The Service port the load balancer serves: ``wanted`` (name or number), else `web`, else the only one."""
    ports: list[dict[str, Any]] = svc.get("spec", {}).get("ports") or []
    if wanted:
        for p in ports:
            if p.get("name") == wanted or str(p.get("port")) == str(wanted):
                return p
        raise UserError(f"{where}: Service has no port {wanted!r} (ports: {_port_list(ports)})")
    web = [p for p in ports if p.get("name") == "web"]
    if web:
        return web[0]
    if len(ports) == 1:
        return ports[0]
    raise UserError(f"{where}: Service has several ports ({_port_list(ports)}); choose one with --port")


def _port_list(ports: Iterable[dict[str, Any]]) -> str:
    return ", ".join(f"{p.get('name') or '-'}:{p.get('port')}" for p in ports) or "none"


def _holder(cluster: Cluster, node_port: int, except_uid: str | None) -> str | None:
    services = cluster.call("list Services", cluster.core.list_service_for_all_namespaces).items
    for svc in services:
        if svc.metadata.uid == except_uid:
            continue
        for p in svc.spec.ports or []:
            if p.node_port == node_port:
                return f"{svc.metadata.namespace}/{svc.metadata.name}"
    return None


def pin(cluster: Cluster, ref: ServiceRef, node_port: int, *, timeout: float = 60.0) -> Row:
    """Make the serving port's node port equal ``node_port``; no write when it already is."""

    where = f"context {cluster.context!r}"
    svc = require_service(cluster, ref)
    name = service_name(svc)
    stype = svc["spec"].get("type", "ClusterIP")
    if stype not in ("NodePort", "LoadBalancer"):
        raise UserError(
            f"{where}: Service {name} is {stype}, not NodePort; deploy it with the values from "
            "`gitlab-mci helm values` and HELM_UPGRADE_EXTRA_ARGS from `gitlab-mci helm extra-args`"
        )
    port = serving_port(svc, ref.port, f"{where}: Service {name}")
    if port.get("nodePort") == node_port:
        return Row(cluster.context, name, stype, port["port"], node_port, "ok")
    holder = _holder(cluster, node_port, svc["metadata"].get("uid"))
    if holder is not None:
        raise UserError(f"{where}: node port {node_port} is already used by Service {holder}; "
                        "pick another --node-port (or `--node-port auto`)")
    # Strategic merge: Service ports merge by `port`, so only this port's nodePort changes.
    body = {"spec": {"ports": [{"port": port["port"], "nodePort": node_port}]}}
    patch_service(cluster, svc, body, f"patch Service {name}",
                  f"{where}: cannot set node port {node_port} on Service {name}")
    deadline = time.monotonic() + timeout
    while True:
        now = find_service(cluster, ref)
        if now is not None and serving_port(now, ref.port, where).get("nodePort") == node_port:
            return Row(cluster.context, name, stype, port["port"], node_port, "patched")
        if time.monotonic() > deadline:
            raise UserError(f"{where}: Service {name} did not report node port {node_port} within {timeout:g}s")
        time.sleep(0.5)


def inspect(cluster: Cluster, ref: ServiceRef, node_port: int | None) -> Row:
    """Read-only check of one Service: the row `verify` prints."""
    svc = find_service(cluster, ref)
    if svc is None:
        return Row(cluster.context, ref.describe(), "-", None, None, "missing")
    name = service_name(svc)
    stype = svc["spec"].get("type", "ClusterIP")
    port = serving_port(svc, ref.port, f"context {cluster.context!r}: Service {name}")
    actual = port.get("nodePort")
    if stype not in ("NodePort", "LoadBalancer"):
        status = "not-nodeport"
    elif node_port is not None and actual != node_port:
        status = "mismatch"
    else:
        status = "ok"
    return Row(cluster.context, name, stype, port.get("port"), actual, status)


def verify(clusters: Sequence[Cluster], refs: Sequence[ServiceRef], node_port: int | None) -> list[Row]:
    """Check every Service in every cluster, clusters in parallel. Without ``node_port`` they must agree."""
    rows = parallel(clusters, lambda c: [inspect(c, ref, node_port) for ref in refs])
    flat = [r for per_cluster in rows for r in per_cluster]
    if node_port is None:
        # No expected port given: every Service (by name) must have the same node port in all clusters.
        by_service: dict[str, set[int | None]] = {}
        for r in flat:
            by_service.setdefault(r.service, set()).add(r.node_port)
        flat = [
            Row(r.cluster, r.service, r.type, r.port, r.node_port, "mismatch")
            if r.status == "ok" and len(by_service[r.service]) > 1 else r
            for r in flat
        ]
    return flat


def used_node_ports(cluster: Cluster, except_uid: str | None = None) -> set[int]:
    """Node ports Services use in the cluster, but for the Service with UID ``except_uid`` (the one being pinned)."""
    services = cluster.call("list Services", cluster.core.list_service_for_all_namespaces).items
    return {p.node_port for s in services if except_uid is None or s.metadata.uid != except_uid
            for p in (s.spec.ports or []) if p.node_port}


def choose_free(clusters: Sequence[Cluster], low: int = NODE_PORT_MIN, high: int = NODE_PORT_MAX) -> int:
    """The lowest node port free in every cluster."""
    used = set().union(*parallel(clusters, used_node_ports)) if clusters else set()
    return _lowest_free(used, clusters, low, high)


def _lowest_free(used: set[int], clusters: Sequence[Cluster], low: int, high: int) -> int:
    for port in range(low, high + 1):
        if port not in used:
            return port
    raise UserError(f"no node port in {low}-{high} is free in all of {', '.join(c.context for c in clusters)}")


def choose_auto(clusters: Sequence[Cluster], ref: ServiceRef) -> tuple[int, str]:
    """The node port ``--node-port auto`` means for the app's Service: the same answer in every one of ``clusters``.

    The port the Service already uses in every cluster where it exists, when no other Service holds it in any of
    them (so a re-run changes nothing); else the lowest port free of other Services in all of them. Either answer
    stays the answer once some clusters are pinned to it, so per-cluster jobs agree whatever their order. Returns the
    port and why it was chosen.
    """

    def survey(cluster: Cluster) -> tuple[int | None, set[int]]:
        # A cluster the app has not reached yet (not even its namespace) still has ports other Services hold.
        svc = find_service(cluster, ref, namespace_may_be_missing=True)
        if svc is None:
            return None, used_node_ports(cluster)
        where = f"context {cluster.context!r}: Service {service_name(svc)}"
        current = serving_port(svc, ref.port, where).get("nodePort")
        return current, used_node_ports(cluster, svc["metadata"].get("uid"))

    surveys = parallel(clusters, survey)
    used: set[int] = set().union(*(u for _, u in surveys)) if surveys else set()
    names = ", ".join(sorted(c.context for c in clusters))
    current = {p for p, _ in surveys if p is not None}
    if len(current) == 1 and (port := next(iter(current))) not in used:
        return port, f"the one the Service already uses, free in all of {names}"
    return _lowest_free(used, clusters, NODE_PORT_MIN, NODE_PORT_MAX), f"the lowest free in all of {names}"


def parallel(items: Sequence[I], fn: Callable[[I], T]) -> list[T]:
    """``fn`` on every item (cluster or context) at once — the calls are I/O bound — results in input order;
    the first error is raised."""
    if len(items) <= 1:
        return [fn(c) for c in items]
    with ThreadPoolExecutor(max_workers=min(32, len(items))) as pool:
        return list(pool.map(fn, items))


def render_table(rows: Sequence[Row]) -> str:
    """A fixed-width table: cluster, Service, type, port, node port, status."""
    return fixed_width(("CLUSTER", "SERVICE", "TYPE", "PORT", "NODE PORT", "STATUS"),
                       [(r.cluster, r.service, r.type, str(r.port or "-"), str(r.node_port or "-"), r.status)
                        for r in rows])


def fixed_width(head: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """``head`` and ``rows`` in columns two spaces apart, each as wide as its widest cell; no trailing blanks."""
    cells = [head, *rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(head))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in cells)
