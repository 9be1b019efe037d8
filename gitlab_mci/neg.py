"""Expose the app's Service as standalone network endpoint groups (container-native backends), or check it.

Flow: find the Service (model) → the ``cloud.google.com/neg`` annotation it should carry: its own, with our NEG for
the serving port merged in (desired) → compare (diff) → one merge patch of that one annotation, or nothing (action)
→ wait until GKE's NEG controller has written ``cloud.google.com/neg-status`` for the port → a row (report).

The NEG name comes from :meth:`gitlab_mci.lb.names.Namer.neg_name`, the one place it is made, so `lb apply
--backends neg` finds what this annotated. The Service's type is left as it is: NEGs reach pods directly, a
ClusterIP Service needs no node port (and a NodePort one keeps serving its instance groups during a switch).
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from gitlab_mci.errors import UserError
from gitlab_mci.kube import Cluster
from gitlab_mci.lb.names import Namer
from gitlab_mci.nodeport import (
    ServiceRef,
    ServiceRow,
    find_service,
    fixed_width,
    parallel,
    patch_service,
    require_service,
    service_name,
    serving_port,
)

NEG_ANNOTATION = "cloud.google.com/neg"
NEG_STATUS_ANNOTATION = "cloud.google.com/neg-status"
POLL_SECONDS = 0.5
PROGRESS_SECONDS = 10.0


class NegTimeout(UserError):
    """GKE's NEG controller did not answer within the timeout: not healthy (exit 3), not a usage error."""

    exit_code = 3


@dataclass(frozen=True)
class Row(ServiceRow):
    """One line of the expose/verify report."""

    neg: str
    zones: list[str] = field(default_factory=list)
    status: str = "ok"  # ok | exposed (annotated now) | missing | not-exposed | pending

    @property
    def ok(self) -> bool:
        return self.status in ("ok", "exposed")


def parse_neg_annotation(value: str | None, where: str) -> dict[str, Any]:
    """The ``cloud.google.com/neg`` annotation as a mapping (empty when absent); anything else is the user's error."""
    if value is None or not value.strip():
        return {}
    try:
        doc = json.loads(value)
    except ValueError:
        raise UserError(f"{where}: annotation {NEG_ANNOTATION} is not JSON ({value!r}); fix or remove it") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("exposed_ports", {}), dict):
        raise UserError(f"{where}: annotation {NEG_ANNOTATION} must be a JSON object whose exposed_ports is an "
                        f"object ({value!r})")
    return doc


def merged_neg_annotation(current: str | None, port: int, neg: str, where: str, lb: str) -> dict[str, Any] | None:
    """The annotation with ``port`` exposed as ``neg``, everything else the user put in it kept; ``None`` when the
    current one already says so. A port the user exposes under another name (or GKE's generated one) is refused:
    renaming it would delete the NEG whatever uses it (autoneg, another load balancer) attaches."""
    doc = parse_neg_annotation(current, where)
    ports: dict[str, Any] = dict(doc.get("exposed_ports") or {})
    entry = ports.get(str(port))
    if entry is not None:
        name = (entry or {}).get("name") if isinstance(entry, dict) else None
        if name == neg:
            return None
        shown = f"NEG {name!r}" if name else "a NEG named by GKE"
        raise UserError(f"{where} already exposes port {port} as {shown} ({NEG_ANNOTATION}); load balancer {lb} "
                        f"needs it named {neg}: remove that port from the annotation (or use that load balancer's "
                        "name)")
    ports[str(port)] = {"name": neg}
    return {**doc, "exposed_ports": ports}


def neg_status(svc: dict[str, Any]) -> tuple[dict[str, str], list[str]]:
    """What GKE's NEG controller wrote: Service port -> NEG name, and the zones that have them. Empty until then
    (and when what is there is not the controller's JSON)."""
    raw = ((svc.get("metadata") or {}).get("annotations") or {}).get(NEG_STATUS_ANNOTATION)
    try:
        doc = json.loads(raw) if raw else {}
    except ValueError:
        return {}, []
    if not isinstance(doc, dict):
        return {}, []
    negs = doc.get("network_endpoint_groups") or {}
    zones = doc.get("zones") or []
    return ({str(k): str(v) for k, v in negs.items()} if isinstance(negs, dict) else {},
            [str(z) for z in zones] if isinstance(zones, list) else [])


def _claimant(cluster: Cluster, neg: str, except_uid: str | None) -> str | None:
    """Another Service in the cluster whose annotation already asks for a NEG of that name."""
    services = cluster.call("list Services", cluster.core.list_service_for_all_namespaces).items
    for svc in services:
        if svc.metadata.uid == except_uid:
            continue
        value = (svc.metadata.annotations or {}).get(NEG_ANNOTATION)
        if not value:
            continue
        try:
            ports = (json.loads(value) or {}).get("exposed_ports") or {}
        except (ValueError, AttributeError):
            continue
        if any(isinstance(v, dict) and v.get("name") == neg for v in ports.values()):
            return f"{svc.metadata.namespace}/{svc.metadata.name}"
    return None


def expose(cluster: Cluster, ref: ServiceRef, namer: Namer, *, timeout: float,
           progress: Callable[[str], None] = lambda _: None) -> Row:
    """Annotate the Service so GKE makes our NEG for its serving port (no write when it already asks for it), then
    wait until the NEG controller reports it; :class:`NegTimeout` when it does not within ``timeout`` seconds."""

    where = f"context {cluster.context!r}"
    svc = require_service(cluster, ref)
    name = service_name(svc)
    port = int(serving_port(svc, ref.port, f"{where}: Service {name}")["port"])
    neg = namer.neg_name(port)
    current = (svc["metadata"].get("annotations") or {}).get(NEG_ANNOTATION)
    wanted = merged_neg_annotation(current, port, neg, f"{where}: Service {name}", namer.lb)
    status = "ok"
    if wanted is not None:
        holder = _claimant(cluster, neg, svc["metadata"].get("uid"))
        if holder is not None:
            raise UserError(f"{where}: NEG {neg} is already asked for by Service {holder}; one load balancer name "
                            "serves one Service per cluster")
        # Only this annotation changes; resourceVersion makes a concurrent edit of it a conflict, not a lost write.
        body = {"metadata": {"resourceVersion": svc["metadata"].get("resourceVersion"),
                             "annotations": {NEG_ANNOTATION: json.dumps(wanted, separators=(",", ":"))}}}
        patch_service(cluster, svc, body, f"annotate Service {name}",
                      f"{where}: cannot annotate Service {name} with {NEG_ANNOTATION}")
        status = "exposed"
    zones = wait_for_status(cluster, ref, name, port, neg, timeout=timeout, progress=progress)
    return Row(cluster.context, name, svc["spec"].get("type", "ClusterIP"), port, neg, zones, status)


def wait_for_status(cluster: Cluster, ref: ServiceRef, name: str, port: int, neg: str, *, timeout: float,
                    progress: Callable[[str], None]) -> list[str]:
    """Poll the Service until ``neg-status`` lists ``port`` as ``neg`` in at least one zone; its zones."""
    start = time.monotonic()
    said = -PROGRESS_SECONDS
    while True:
        svc = find_service(cluster, ref)
        if svc is not None:
            negs, zones = neg_status(svc)
            if negs.get(str(port)) == neg and zones:
                return zones
        waited = time.monotonic() - start
        if waited >= timeout:
            namespace, service = name.split("/", 1)
            said_by_gke = _warning(cluster, namespace, service)
            why = (f"GKE's NEG controller says: {said_by_gke}" if said_by_gke else
                   f"NEGs need a VPC-native cluster (check `kubectl describe service {service}` for events)")
            raise NegTimeout(f"context {cluster.context!r}: GKE's NEG controller wrote no {NEG_STATUS_ANNOTATION} "
                             f"for port {port} of Service {name} within {timeout:g}s; {why}")
        if waited - said >= PROGRESS_SECONDS:
            progress(f"waiting for GKE's NEG controller to report NEG {neg} for Service {name} port {port} "
                     f"({waited:.0f}s of {timeout:g}s)")
            said = waited
        time.sleep(min(POLL_SECONDS, max(0.0, timeout - waited)))


def _warning(cluster: Cluster, namespace: str, service: str) -> str | None:
    """The latest Warning event on the Service (how GKE's NEG controller says what it cannot do), if readable."""
    from kubernetes.client.exceptions import ApiException

    try:
        events = cluster.call("list Events", cluster.core.list_namespaced_event, namespace).items
    except (UserError, ApiException):  # e.g. not allowed to read events: the generic hint then
        return None
    mine = [e for e in events if e.type == "Warning" and e.involved_object is not None
            and e.involved_object.kind == "Service" and e.involved_object.name == service]
    if not mine:
        return None
    latest = max(mine, key=lambda e: str(e.last_timestamp or e.metadata.creation_timestamp or ""))
    return str(latest.message)


def inspect(cluster: Cluster, ref: ServiceRef, namer: Namer) -> Row:
    """Read-only check of one Service: the row `verify` prints."""
    svc = find_service(cluster, ref)
    if svc is None:
        return Row(cluster.context, ref.describe(), "-", None, "-", [], "missing")
    name = service_name(svc)
    where = f"context {cluster.context!r}: Service {name}"
    port = int(serving_port(svc, ref.port, where)["port"])
    neg = namer.neg_name(port)
    asked = (parse_neg_annotation((svc["metadata"].get("annotations") or {}).get(NEG_ANNOTATION), where)
             .get("exposed_ports") or {}).get(str(port))
    negs, zones = neg_status(svc)
    if not isinstance(asked, dict) or asked.get("name") != neg:
        status, zones = "not-exposed", []
    elif negs.get(str(port)) != neg or not zones:
        status, zones = "pending", []
    else:
        status = "ok"
    return Row(cluster.context, name, svc["spec"].get("type", "ClusterIP"), port, neg, zones, status)


def verify(clusters: Sequence[Cluster], ref: ServiceRef, namer: Namer) -> list[Row]:
    """Check the Service in every cluster, clusters in parallel."""
    return parallel(clusters, lambda c: inspect(c, ref, namer))


def dotenv_lines(row: Row) -> list[str]:
    """What the load balancer job may read: the NEG name, and this cluster's zones under a key of its context."""
    key = re.sub(r"[^A-Z0-9]", "_", row.cluster.upper())
    return [f"MCI_NEG_NAME={row.neg}", f"MCI_NEG_ZONES_{key}={','.join(row.zones)}"]


def render_table(rows: Sequence[Row]) -> str:
    """A fixed-width table: cluster, Service, port, NEG, zones, status."""
    return fixed_width(("CLUSTER", "SERVICE", "PORT", "NEG", "ZONES", "STATUS"),
                       [(r.cluster, r.service, str(r.port or "-"), r.neg, ",".join(r.zones) or "-", r.status)
                        for r in rows])
