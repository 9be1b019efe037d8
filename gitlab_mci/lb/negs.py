"""Container-native backends: the zonal network endpoint groups (NEGs) GKE's NEG controller keeps in sync with a
Service's ready pods, found and awaited before the load balancer uses them (``lb apply --backends neg``).

The Service carries ``cloud.google.com/neg: {"exposed_ports": {"5000": {"name": "gmci-neg-shop-5000"}}}`` (written
by ``gitlab-mci neg expose``, or by Helm from ``gitlab-mci helm values --backends neg``); the controller creates one
NEG per port in every zone of the cluster's nodes and answers in ``cloud.google.com/neg-status``:
``{"network_endpoint_groups": {"5000": "gmci-neg-shop-5000"}, "zones": ["us-central1-a", ...]}``. That can take a
minute after the deploy, so discovery waits for it, bounded, saying on stderr what it still waits for.

Checked before anything is written: the cluster is VPC-native (its nodes have alias IP ranges: pod IPs are
routable, which NEGs need) and the Service is exposed. The wait ends when every zone of every cluster has its NEG
in Compute and each cluster's NEGs have endpoints (``listNetworkEndpoints``) — per cluster, not per zone: a
regional cluster with two replicas has an empty NEG in its third zone, and that is normal.
"""

from __future__ import annotations

import functools
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any
from urllib.parse import quote

from gitlab_mci.compute_rest import ComputeApiError
from gitlab_mci.errors import UserError
from gitlab_mci.gcp import Compute, retry_transient
from gitlab_mci.kube import Cluster
from gitlab_mci.lb.discovery import ClusterInfo, ServiceInfo, read_service
from gitlab_mci.nodeport import parallel

NEG_ANNOTATION = "cloud.google.com/neg"
NEG_STATUS_ANNOTATION = "cloud.google.com/neg-status"
API = "https://www.googleapis.com/compute/v1/"
POLL_SECONDS = 1.0
EXPOSE_HINT = ("run `gitlab-mci neg expose` for it (or deploy with `gitlab-mci helm values --backends neg`), or use "
               "--backends instance-groups")


@dataclass(frozen=True)
class Wanted:
    """One Service port to serve from NEGs."""

    service: str
    port: int  # the Service port (the key of exposed_ports and of neg-status)


@dataclass
class Waited:
    """How the wait went: reported by ``lb apply`` and the benchmark."""

    seconds: float = 0.0
    rounds: int = 0


def check_vpc_native(clusters: Sequence[ClusterInfo]) -> None:
    """NEG endpoints are pod IPs from the nodes' alias IP ranges: a routes-based cluster has none."""
    for c in clusters:
        if not c.vpc_native:
            raise UserError(f"context {c.context!r}: its nodes have no alias IP ranges (not a VPC-native cluster); "
                            "NEGs need VPC-native clusters: use --backends instance-groups")


def _exposed(svc: ServiceInfo) -> dict[str, Any]:
    try:
        doc = json.loads(svc.annotations.get(NEG_ANNOTATION) or "{}")
    except ValueError:
        return {}
    return dict((doc or {}).get("exposed_ports") or {}) if isinstance(doc, dict) else {}


def check_exposed(clusters: Sequence[ClusterInfo], wanted: Sequence[Wanted]) -> None:
    """Every Service port asked for carries the NEG annotation in every cluster (offline: discovery read it), and
    no two clusters with nodes in one zone ask for the same NEG name there (GKE would make only one)."""

    def asked(c: ClusterInfo, w: Wanted) -> str | None:
        svc = c.services.get(w.service)
        if svc is None:
            raise UserError(f"Service {w.service!r} (routed to by the Ingress) does not exist in context "
                            f"{c.context!r}")
        if str(w.port) not in _exposed(svc):
            raise UserError(f"Service {w.service!r} port {w.port} in context {c.context!r} is not exposed as "
                            f"NEGs (no {NEG_ANNOTATION} annotation for it): {EXPOSE_HINT}")
        name = (_exposed(svc)[str(w.port)] or {}).get("name")
        return str(name) if name else None

    _one_neg_per_zone(clusters, wanted, asked, lambda other, c, zone, w, name: (
        f"contexts {other!r} and {c.context!r} both have nodes in zone {zone} and ask for NEG {name} there for "
        f"Service {w.service!r} port {w.port}: only one can have it; expose each cluster's Service with its own "
        "NEG name"))


def _one_neg_per_zone(clusters: Sequence[ClusterInfo], wanted: Sequence[Wanted],
                      name_of: Callable[[ClusterInfo, Wanted], str | None],
                      clash: Callable[[str, ClusterInfo, str, Wanted, str], str]) -> None:
    """A NEG name is one NEG per zone and project: refuse (``clash(other context, cluster, zone, wanted, name)``)
    when two clusters with nodes in one zone would share one. Clusters and ports in order, so the first problem
    found is the one said."""
    seen: dict[tuple[str, str, str], str] = {}
    for c in clusters:
        for w in wanted:
            name = name_of(c, w)
            for zone in c.zones if name else ():
                other = seen.setdefault((c.project, zone, str(name)), c.context)
                if other != c.context:
                    raise UserError(clash(other, c, zone, w, str(name)))


def neg_status(svc: ServiceInfo) -> tuple[dict[str, str], tuple[str, ...]]:
    """What GKE's NEG controller wrote: port → NEG name, and the zones it made them in."""
    try:
        doc = json.loads(svc.annotations.get(NEG_STATUS_ANNOTATION) or "{}")
    except ValueError:
        return {}, ()
    if not isinstance(doc, dict):
        return {}, ()
    return ({str(k): str(v) for k, v in (doc.get("network_endpoint_groups") or {}).items()},
            tuple(str(z) for z in doc.get("zones") or []))


def neg_url(project: str, zone: str, name: str) -> str:
    return f"{API}projects/{project}/zones/{zone}/networkEndpointGroups/{name}"


def _endpoints(compute: Compute, project: str, zone: str, name: str) -> int:
    path = f"zones/{zone}/networkEndpointGroups/{name}/listNetworkEndpoints"
    try:
        answer = retry_transient(lambda: compute.rest.post(path, {"healthStatus": "SKIP"}, project=project))
    except ComputeApiError as exc:
        if exc.code == 404:
            return 0
        raise UserError(f"list the endpoints of NEG {name} in {zone}: {exc.message}") from None
    return len(answer.get("items") or [])


def _existing(compute: Compute, projects: Sequence[str]) -> set[tuple[str, str, str]]:
    """(project, zone, name) of every NEG: one aggregated list per project."""
    out: set[tuple[str, str, str]] = set()
    for project in projects:
        try:
            listed = retry_transient(functools.partial(compute.rest.aggregated, "networkEndpointGroups",
                                                       project=project))
        except ComputeApiError as exc:
            raise UserError(f"list the network endpoint groups of project {project}: {exc.message}") from None
        out.update((project, scope.removeprefix("zones/"), item["name"]) for scope, item in listed)
    return out


def _missing(clusters: Sequence[ClusterInfo], wanted: Sequence[Wanted], compute: Compute,
             found: dict[tuple[str, str, str], int]) -> tuple[list[tuple[str, str]],
                                                               dict[str, dict[tuple[str, int], tuple[str, ...]]]]:
    """What is still missing ((context, phrase) per thing), and every cluster's NEG URLs where complete."""
    existing = _existing(compute, sorted({c.project for c in clusters}))
    todo: list[tuple[str, str, str]] = []
    missing: list[tuple[str, str]] = []
    ready: dict[str, dict[tuple[str, int], tuple[str, ...]]] = {}
    for c in clusters:
        for w in wanted:
            names, zones = neg_status(c.services[w.service])
            name = names.get(str(w.port))
            where = f"context {c.context!r}: Service {w.service!r} port {w.port}"
            if name is None:
                missing.append((c.context, f"{where}: no NEG in its {NEG_STATUS_ANNOTATION} yet"))
                continue
            absent = [z for z in c.zones if z not in zones or (c.project, z, name) not in existing]
            if absent:
                missing.append((c.context, f"{where}: no NEG {name} in zone {', '.join(absent)}"))
                continue
            keys = [(c.project, z, name) for z in c.zones]
            todo += [k for k in keys if not found.get(k)]
            ready.setdefault(c.context, {})[(w.service, w.port)] = tuple(neg_url(*k) for k in keys)
    # Endpoints of the NEGs not yet seen with some (all at once: 45 round trips at 15 clusters × 3 zones).
    counts = parallel(sorted(set(todo)), lambda k: _endpoints(compute, *k))
    found.update(zip(sorted(set(todo)), counts, strict=True))
    for c in clusters:
        for (service, port), urls in list(ready.get(c.context, {}).items()):
            keys = [(c.project, u.split("/zones/")[1].split("/")[0], u.rsplit("/", 1)[1]) for u in urls]
            if not any(found.get(k) for k in keys):
                missing.append((c.context, f"context {c.context!r}: Service {service!r} port {port}: NEG "
                                            f"{keys[0][2]} has no endpoint (no ready pod)"))
                del ready[c.context][(service, port)]
    return missing, ready


def _check_distinct(clusters: Sequence[ClusterInfo], wanted: Sequence[Wanted]) -> None:
    """Two clusters with nodes in one zone cannot both have a NEG of the same name there."""
    _one_neg_per_zone(clusters, wanted, lambda c, w: neg_status(c.services[w.service])[0].get(str(w.port)),
                      lambda other, c, zone, w, name: (
                          f"contexts {other!r} and {c.context!r} both have nodes in zone {zone}, where their NEGs "
                          f"for Service {w.service!r} port {w.port} would both be {name}: use --backends "
                          "instance-groups, or clusters in distinct zones"))


def wait_for_negs(kube: Sequence[Cluster], clusters: Sequence[ClusterInfo], compute: Compute, namespace: str,
                  wanted: Sequence[Wanted], *, timeout: float, progress: Callable[[str], None] | None = None,
                  waited: Waited | None = None) -> list[ClusterInfo]:
    """The clusters with their NEGs (``ClusterInfo.negs``), once every zone has them and they have endpoints.

    Refuses at once (no wait) a cluster that is not VPC-native or a Service port not exposed; gives up after
    ``timeout`` seconds naming what is still missing. Reads only.
    """
    check_vpc_native(clusters)
    check_exposed(clusters, wanted)
    began = time.monotonic()
    deadline = began + timeout
    found: dict[tuple[str, str, str], int] = {}
    by_context = {k.context: k for k in kube}
    current = list(clusters)
    stats = waited if waited is not None else Waited()
    last = ""
    while True:
        stats.rounds += 1
        _check_distinct(current, wanted)
        missing, ready = _missing(current, wanted, compute, found)
        stats.seconds = time.monotonic() - began
        if not missing:
            return [replace(c, negs=ready.get(c.context, {})) for c in current]
        if time.monotonic() >= deadline:
            context, first = missing[0]
            why = _warning(by_context[context], namespace, wanted) if context in by_context else None
            more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
            raise UserError(f"{first} after {timeout:g}s{more}; "
                            + (f"GKE's NEG controller says: {why}; fix that" if why else
                               "GKE's NEG controller makes them within a minute of the Service's exposure; raise "
                               "--timeout")
                            + ", or use --backends instance-groups")
        if progress is not None and missing[0][1] != last:
            last = missing[0][1]
            progress(f"waiting for NEGs ({len(missing)} missing), e.g. {last}")
        time.sleep(min(POLL_SECONDS, max(0.0, deadline - time.monotonic())))
        # The controller writes neg-status on the Service: read the Services of clusters still missing something.
        behind = {context for context, _ in missing}
        current = [_reread(by_context[c.context], c, namespace, [w.service for w in wanted])
                   if c.context in behind and c.context in by_context else c for c in current]


def _warning(cluster: Cluster, namespace: str, wanted: Sequence[Wanted]) -> str | None:
    """The latest Warning event on the Services (what GKE's NEG controller could not do: a name taken, a port the
    Service lacks), to say why a NEG is missing; None when there is none or events cannot be read."""
    from kubernetes.client.exceptions import ApiException

    from gitlab_mci.lb.discovery import kube_get

    latest: tuple[str, str] | None = None
    for service in dict.fromkeys(w.service for w in wanted):
        try:
            events = kube_get(cluster, "list events", f"/api/v1/namespaces/{quote(namespace, safe='')}/events",
                              fieldSelector=f"involvedObject.kind=Service,involvedObject.name={service},type=Warning")
        except (ApiException, UserError):
            return None
        for e in events.get("items") or []:
            stamp = str(e.get("lastTimestamp") or e.get("eventTime") or "")
            if latest is None or stamp >= latest[0]:
                latest = (stamp, str(e.get("message") or e.get("reason") or ""))
    return latest[1] if latest else None


def _reread(cluster: Cluster, info: ClusterInfo, namespace: str, services: Sequence[str]) -> ClusterInfo:
    fresh = {s: read_service(cluster, namespace, s) for s in dict.fromkeys(services)}
    return replace(info, services={**info.services, **{k: v for k, v in fresh.items() if v is not None}})


def service_port(clusters: Sequence[ClusterInfo], service: str, port: int | str) -> int:
    """The Service port's number (NEGs are named and annotated by it), the same in every cluster."""
    numbers: set[int] = set()
    for c in clusters:
        svc = c.services.get(service)
        if svc is None:
            raise UserError(f"Service {service!r} (routed to by the Ingress) does not exist in context {c.context!r}")
        p = svc.port(port)
        if p is None:
            have = ", ".join(f"{q.name} {q.port}" if q.name else str(q.port) for q in svc.ports) or "none"
            raise UserError(f"Service {service!r} in context {c.context!r} has no port {port!r} (its ports: {have})")
        numbers.add(p.port)
    if len(numbers) > 1:
        raise UserError(f"Service {service!r} port {port!r} is {', '.join(map(str, sorted(numbers)))} in different "
                        "clusters; make them agree")
    return numbers.pop()


def backend_port(clusters: Sequence[ClusterInfo], service: str, port: int | str) -> tuple[int, int]:
    """The Service port number and the pods' port (endpoints, health checks, the firewall), the same in every
    cluster. The pods' port of a named targetPort comes from the pods, so only once they run (after the wait)."""
    number = service_port(clusters, service, port)
    pods = set()
    for c in clusters:
        svc = c.services[service]
        p = svc.port(number)
        assert p is not None  # service_port checked it
        pods.add(svc.pod_port(p))
    if len(pods) > 1:
        raise UserError(f"Service {service!r} port {number} reaches the pods on ports "
                        f"{', '.join(map(str, sorted(pods)))} in different clusters; make them agree")
    return number, pods.pop()


def zone_of(url: str) -> str:
    return url.split("/zones/", 1)[1].split("/", 1)[0] if "/zones/" in url else ""

