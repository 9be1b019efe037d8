"""Per-cluster traffic control: weights (``--weight prod1=3``) and drain, as each backend's ``capacityScaler``.

The state lives in Compute, on the backends themselves, never in a local file: a drained cluster's backends have
``capacityScaler: 0``; a cluster's weight other than 1 is recorded in its backends' ``description``
(``gitlab-mci weight=3``), so that ``lb undrain`` restores it and the next pipeline's ``lb apply`` keeps both.
``capacityScaler`` (not ``maxRatePerInstance``) in both balancing modes: it is the one per-backend multiplier
that UTILIZATION and RATE both honour, and 0 is Compute's own "drained" — a per-instance rate would change with
each cluster's node count. Compute allows 0 or 0.1-1.0, and refuses 0 for a backend service's only backend; the
largest weight is scaler 1, so weights may differ by at most ten times.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from gitlab_mci.errors import UserError

WEIGHT_MARK = "gitlab-mci weight="
MIN_SCALER = 0.1  # Compute: "You cannot configure a setting larger than 0 and smaller than 0.1."


@dataclass(frozen=True)
class ClusterTraffic:
    """One cluster's share setting: its weight, and whether it is drained (no new requests)."""

    cluster: str
    weight: float = 1.0
    drained: bool = False


def _tail(url: str) -> str:
    """Compare group URLs whatever their host or API version prefix."""
    return url.split("/projects/", 1)[-1]


def parse_weights(values: Iterable[str], contexts: Sequence[str]) -> dict[str, float]:
    """``CLUSTER=WEIGHT`` pairs (repeated or comma-separated) checked offline: a known cluster, a number > 0."""
    weights: dict[str, float] = {}
    for value in (v.strip() for raw in values for v in raw.split(",")):
        if not value:
            continue
        cluster, eq, number = value.partition("=")
        cluster, number = cluster.strip(), number.strip()
        if not eq or not cluster or not number:
            raise UserError(f"--weight {value!r}: use CLUSTER=WEIGHT, e.g. --weight prod1=3")
        try:
            weight = float(number)
        except ValueError:
            raise UserError(f"--weight {value!r}: {number!r} is not a number") from None
        if not math.isfinite(weight) or weight <= 0:
            raise UserError(f"--weight {value!r}: a weight must be a number > 0 (weights that sum to 0 send traffic "
                            f"nowhere; take one cluster out with `gitlab-mci lb drain {cluster}`)")
        if cluster not in contexts:
            raise UserError(f"--weight {value!r}: unknown cluster {cluster!r}; the clusters are the --context ones "
                            f"({', '.join(contexts) or 'none given'})")
        if cluster in weights and weights[cluster] != weight:
            raise UserError(f"--weight {cluster}: given twice ({weights[cluster]:g} and {weight:g})")
        weights[cluster] = weight
    return weights


def check_ratio(traffic: Mapping[str, ClusterTraffic]) -> None:
    """Every weight must be at least a tenth of the largest: Compute's capacityScaler is 0 or 0.1-1.0."""
    if not traffic:
        return
    top = max(traffic.values(), key=lambda t: t.weight)
    low = min(traffic.values(), key=lambda t: t.weight)
    if low.weight / top.weight < MIN_SCALER - 1e-9:
        raise UserError(f"weights {top.cluster}={top.weight:g} and {low.cluster}={low.weight:g} differ more than "
                        "ten times: Compute's capacityScaler cannot be set between 0 and 0.1")


def scaler(t: ClusterTraffic, traffic: Mapping[str, ClusterTraffic]) -> float:
    """The capacityScaler of ``t``'s backends: 0 drained, else its weight relative to the largest weight."""
    if t.drained:
        return 0.0
    top = max(x.weight for x in traffic.values())
    return round(max(MIN_SCALER, t.weight / top), 4)


def backend_fields(t: ClusterTraffic, traffic: Mapping[str, ClusterTraffic], had_description: bool) -> dict[str, Any]:
    """What a backend carries for ``t``: its capacityScaler, and its weight when not 1 (or when one was recorded,
    so that returning to 1 clears it)."""
    fields: dict[str, Any] = {"capacityScaler": scaler(t, traffic)}
    if t.weight != 1.0 or had_description:
        fields["description"] = f"{WEIGHT_MARK}{t.weight:g}" if t.weight != 1.0 else ""
    return fields


def recorded_weight(backend: Mapping[str, Any]) -> float:
    description = str(backend.get("description") or "")
    if description.startswith(WEIGHT_MARK):
        try:
            return float(description[len(WEIGHT_MARK):])
        except ValueError:
            return 1.0
    return 1.0


class GroupOwners(dict[str, str]):
    """Group URL tail → cluster (kubeconfig context). A NEG backend (``--backends neg``) not known by URL belongs to
    the cluster whose nodes are in its zone: our NEGs are named the same in every zone, and two clusters sharing a
    zone are refused with NEGs (gitlab_mci.lb.negs)."""

    def __init__(self, groups: dict[str, str], zones: dict[str, str]) -> None:
        super().__init__(groups)
        self.zones = zones

    def get(self, key: str, default: Any = None) -> Any:  # type: ignore[override]
        if key in self:
            return self[key]
        if "/networkEndpointGroups/" in key and "/zones/" in key:
            return self.zones.get(key.split("/zones/", 1)[1].split("/", 1)[0], default)
        return default


def cluster_of(clusters: Iterable[Any]) -> dict[str, str]:
    """Group URL tail → cluster (kubeconfig context), from discovery's ClusterInfo (NEGs too)."""
    listed = list(clusters)
    groups = {_tail(g): c.context for c in listed for g in c.groups}
    groups.update({_tail(u): c.context for c in listed for urls in getattr(c, "negs", {}).values() for u in urls})
    return GroupOwners(groups, {z: c.context for c in listed for z in c.zones})


def current(backend_services: Iterable[Mapping[str, Any]], groups: Mapping[str, str]) -> dict[str, ClusterTraffic]:
    """Each cluster's weight and drain state as Compute holds them (the first backend of a cluster found says)."""
    out: dict[str, ClusterTraffic] = {}
    for bs in backend_services:
        for b in bs.get("backends") or []:
            cluster = groups.get(_tail(str(b.get("group", ""))))
            if cluster is None or cluster in out:
                continue
            scale = b.get("capacityScaler")
            out[cluster] = ClusterTraffic(cluster, recorded_weight(b), scale is not None and float(scale) == 0.0)
    return out


def settle(desired: Any, actual: Any, clusters: Sequence[Any], given: Mapping[str, float]) -> None:
    """Give the desired backend services' backends each cluster's capacityScaler (and weight), in place.

    Weights: ``given`` (``--weight``), else what Compute records, else 1. Drained clusters stay drained: only
    ``lb undrain`` brings one back, so a pipeline's ``apply`` during maintenance does not undo a drain.
    """
    groups = cluster_of(clusters)
    services = [r for r in desired.resources.values() if r.collection == "backendServices"]
    had = [actual.resources[r.key] for r in services if r.key in actual.resources]
    if not had:  # a switch between instance groups and NEGs: the other kind's backend services hold them
        had = [v for k, v in sorted(actual.resources.items())
               if k.startswith("backendServices/") and desired.namer.owns(v)]
    now = current(had, groups)
    traffic = {c.context: ClusterTraffic(c.context, given.get(c.context, now.get(c.context, ClusterTraffic(
        c.context)).weight), now.get(c.context, ClusterTraffic(c.context)).drained) for c in clusters}
    check_ratio(traffic)
    described = {_tail(str(b.get("group", ""))) for bs in had for b in bs.get("backends") or []
                 if b.get("description")}
    for r in services:
        for b in r.body.get("backends") or []:
            cluster = groups.get(_tail(b["group"]))
            if cluster is not None:
                b.update(backend_fields(traffic[cluster], traffic, _tail(b["group"]) in described))


def with_drain(bs: Mapping[str, Any], groups: Mapping[str, str], cluster: str,
               traffic: Mapping[str, ClusterTraffic]) -> list[dict[str, Any]]:
    """The backend service's backends with ``cluster`` set as in ``traffic`` (drained or restored); the backends
    of other clusters are kept as they are."""
    out = []
    for b in bs.get("backends") or []:
        b = dict(b)
        if groups.get(_tail(str(b.get("group", "")))) == cluster:
            b["capacityScaler"] = scaler(traffic[cluster], traffic)
        out.append(b)
    return out


def serving_elsewhere(bs: Mapping[str, Any], groups: Mapping[str, str], cluster: str) -> int:
    """How many of the backend service's backends outside ``cluster`` still take new requests."""
    return sum(1 for b in bs.get("backends") or [] if groups.get(_tail(str(b.get("group", "")))) != cluster
               and float(b.get("capacityScaler", 1.0)) > 0)
