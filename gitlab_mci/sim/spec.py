"""The simulated world's description: a small YAML file of project, network and GKE clusters.

Example (also the default when no spec is given)::

    project: demo-project
    clusters:
      - name: prod1
        location: us-central1-a
      - name: prod2
        location: europe-west1-b

Every field but the cluster names has a default; see :data:`DEFAULT_SPEC` and the README's simulator section.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gitlab_mci.errors import UserError
from gitlab_mci.files import load_yaml, read_text

_NAME_RE = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
_ZONE_RE = re.compile(r"^[a-z]+-[a-z]+\d+-[a-z]$")
_REGION_RE = re.compile(r"^[a-z]+-[a-z]+\d+$")
_PROJECT_RE = re.compile(r"^[a-z][-a-z0-9]{4,28}[a-z0-9]$")

# The zones of common Google Cloud regions, as Compute Engine names them: not every region has a zone `a`
# (europe-west1 has b, c, d; us-east1 has b, c, d) and some have more than three (us-central1 also has f). A
# regional cluster defaults to the first three, as GKE spreads a regional cluster over three zones.
REGION_ZONES: dict[str, tuple[str, ...]] = {
    region: tuple(f"{region}-{s}" for s in suffixes)
    for region, suffixes in {
        "africa-south1": "abc",
        "asia-east1": "abc", "asia-east2": "abc",
        "asia-northeast1": "abc", "asia-northeast2": "abc", "asia-northeast3": "abc",
        "asia-south1": "abc", "asia-south2": "abc",
        "asia-southeast1": "abc", "asia-southeast2": "abc",
        "australia-southeast1": "abc", "australia-southeast2": "abc",
        "europe-central2": "abc", "europe-north1": "abc", "europe-southwest1": "abc",
        "europe-west1": "bcd", "europe-west2": "abc", "europe-west3": "abc", "europe-west4": "abc",
        "europe-west6": "abc", "europe-west8": "abc", "europe-west9": "abc", "europe-west10": "abc",
        "europe-west12": "abc",
        "me-central1": "abc", "me-central2": "abc", "me-west1": "abc",
        "northamerica-northeast1": "abc", "northamerica-northeast2": "abc",
        "southamerica-east1": "abc", "southamerica-west1": "abc",
        "us-central1": "abcf", "us-east1": "bcd", "us-east4": "abc", "us-east5": "abc", "us-south1": "abc",
        "us-west1": "abc", "us-west2": "abc", "us-west3": "abc", "us-west4": "abc",
    }.items()
}

DEFAULT_SPEC: dict[str, Any] = {
    "project": "demo-project",
    "clusters": [
        {"name": "prod1", "location": "us-central1-a"},
        {"name": "prod2", "location": "europe-west1-b"},
    ],
}


@dataclass(frozen=True)
class NodePoolSpec:
    name: str = "default-pool"
    nodes_per_zone: int = 3
    machine_type: str = "e2-standard-2"


@dataclass(frozen=True)
class ClusterSpec:
    name: str
    location: str  # a zone (zonal cluster) or a region (regional cluster)
    zones: tuple[str, ...]
    node_pools: tuple[NodePoolSpec, ...]
    # VPC-native (alias IP) networking, GKE's default: pods get IPs of a secondary range of the subnet, which
    # container-native load balancing (NEGs) requires. `vpcNative: false` is a routes-based cluster.
    vpc_native: bool = True

    @property
    def region(self) -> str:
        return self.location if _REGION_RE.match(self.location) else self.location.rsplit("-", 1)[0]

    @property
    def link(self) -> str:
        """The fleet link `<location>/<name>` that MultiClusterService `spec.clusters` uses."""
        return f"{self.location}/{self.name}"


@dataclass(frozen=True)
class WorldSpec:
    project: str
    project_number: int
    network: str
    network_project: str  # differs from `project` under Shared VPC
    clusters: tuple[ClusterSpec, ...]
    operation_latency: float = 0.0
    managed_cert_delay: float = 1.0
    mci_delay: float = 3.0  # seconds the hosted Multi Cluster Ingress controller takes to provision
    neg_delay: float = 0.2  # seconds GKE's NEG controller takes to react to a Service or Pod change
    node_port_range: tuple[int, int] = (30000, 32767)
    seed: int = 1
    extra: dict[str, Any] = field(default_factory=dict)

    def cluster(self, name: str) -> ClusterSpec:
        for c in self.clusters:
            if c.name == name:
                return c
        raise UserError(f"no simulated cluster named {name!r} (known: {', '.join(c.name for c in self.clusters)})")


def _require(cond: bool, where: str, message: str) -> None:
    if not cond:
        raise UserError(f"{where}: {message}")


def _check_zone(zone: str, region: str, where: str) -> None:
    """A zone of a region in :data:`REGION_ZONES` must be one of its real zones (there is no europe-west1-a)."""
    known = REGION_ZONES.get(region)
    _require(known is None or zone in known, where,
             f"{zone} is not a zone of {region} (its zones: {', '.join(known or ())})")


def _cluster(raw: Any, idx: int, where: str) -> ClusterSpec:
    at = f"{where}: clusters[{idx}]"
    _require(isinstance(raw, dict), at, "must be a mapping with at least `name` and `location`")
    unknown = set(raw) - {"name", "location", "zones", "nodePools", "nodes", "vpcNative"}
    _require(not unknown, at, f"unknown field(s) {', '.join(sorted(unknown))}")
    name = raw.get("name")
    _require(isinstance(name, str) and bool(_NAME_RE.match(name)) and len(name) <= 40, f"{at}.name",
             "must be a lowercase RFC 1035 name of at most 40 characters")
    location = raw.get("location", "us-central1-a")
    _require(isinstance(location, str) and bool(_ZONE_RE.match(location) or _REGION_RE.match(location)),
             f"{at}.location", f"{location!r} is neither a zone (us-central1-a) nor a region (us-central1)")
    region = location if _REGION_RE.match(location) else location.rsplit("-", 1)[0]
    known = REGION_ZONES.get(region)
    if _ZONE_RE.match(location):
        _check_zone(location, region, f"{at}.location")
        default_zones: list[str] | None = [location]
    else:
        default_zones = list(known[:3]) if known else None
    _require(default_zones is not None or "zones" in raw, f"{at}.zones",
             f"the simulator does not know the zones of {region}: list them (e.g. zones: [{region}-a, {region}-b])")
    zones = raw.get("zones", default_zones)
    _require(isinstance(zones, list) and bool(zones) and all(isinstance(z, str) and _ZONE_RE.match(z) for z in zones),
             f"{at}.zones", "must be a non-empty list of zones like us-central1-a")
    _require(all(z.rsplit("-", 1)[0] == region for z in zones), f"{at}.zones", f"every zone must be in {region}")
    for z in zones:
        _check_zone(z, region, f"{at}.zones")
        _require(zones.count(z) == 1, f"{at}.zones", f"{z} is listed twice")
    pools_raw = raw.get("nodePools")
    pools: tuple[NodePoolSpec, ...]
    if pools_raw is None:
        nodes = raw.get("nodes", 3)
        _require(isinstance(nodes, int) and 1 <= nodes <= 100, f"{at}.nodes", "must be a number from 1 to 100")
        pools = (NodePoolSpec(nodes_per_zone=nodes),)
    else:
        _require(isinstance(pools_raw, list) and bool(pools_raw), f"{at}.nodePools", "must be a non-empty list")
        parsed = []
        for j, p in enumerate(pools_raw):
            pat = f"{at}.nodePools[{j}]"
            _require(isinstance(p, dict) and isinstance(p.get("name"), str) and bool(_NAME_RE.match(p["name"])),
                     pat, "needs a `name` (lowercase RFC 1035)")
            n = p.get("nodesPerZone", 3)
            _require(isinstance(n, int) and 1 <= n <= 100, f"{pat}.nodesPerZone", "must be a number from 1 to 100")
            parsed.append(NodePoolSpec(p["name"], n, str(p.get("machineType", "e2-standard-2"))))
        pools = tuple(parsed)
    vpc_native = raw.get("vpcNative", True)
    _require(isinstance(vpc_native, bool), f"{at}.vpcNative", "must be true or false")
    return ClusterSpec(name, location, tuple(zones), pools, vpc_native)


def parse_spec(raw: Any, where: str = "simulator spec") -> WorldSpec:
    """Validate a spec mapping (as loaded from YAML) into a :class:`WorldSpec`; errors name the field."""
    _require(isinstance(raw, dict), where, "must be a YAML mapping")
    known = {"project", "projectNumber", "network", "networkProject", "clusters", "operationLatency",
             "managedCertDelay", "nodePortRange", "seed", "mciProvisioningDelay", "negSyncDelay"}
    unknown = set(raw) - known
    _require(not unknown, where, f"unknown field(s) {', '.join(sorted(unknown))} (known: {', '.join(sorted(known))})")
    project = raw.get("project", "demo-project")
    _require(isinstance(project, str) and bool(_PROJECT_RE.match(project)), f"{where}: project",
             f"{project!r} is not a valid project ID (6-30 lowercase letters, digits, hyphens)")
    number = raw.get("projectNumber", 123456789012)
    _require(isinstance(number, int) and number > 0, f"{where}: projectNumber", "must be a positive number")
    network = raw.get("network", "default")
    _require(isinstance(network, str) and bool(_NAME_RE.match(network)), f"{where}: network", "must be a network name")
    network_project = raw.get("networkProject", project)
    _require(isinstance(network_project, str) and bool(_PROJECT_RE.match(network_project)),
             f"{where}: networkProject", "must be a project ID")
    clusters_raw = raw.get("clusters")
    _require(isinstance(clusters_raw, list) and bool(clusters_raw), f"{where}: clusters", "must be a non-empty list")
    clusters = tuple(_cluster(c, i, where) for i, c in enumerate(clusters_raw))
    names = [c.name for c in clusters]
    dupes = sorted({n for n in names if names.count(n) > 1})
    _require(not dupes, f"{where}: clusters", f"duplicate cluster name(s) {', '.join(dupes)}")
    latency = raw.get("operationLatency", 0.0)
    _require(isinstance(latency, int | float) and 0 <= latency <= 60, f"{where}: operationLatency",
             "must be a number of seconds from 0 to 60")
    cert_delay = raw.get("managedCertDelay", 1.0)
    _require(isinstance(cert_delay, int | float) and cert_delay >= 0, f"{where}: managedCertDelay",
             "must be a number of seconds")
    mci_delay = raw.get("mciProvisioningDelay", 3.0)
    _require(isinstance(mci_delay, int | float) and 0 <= mci_delay <= 3600, f"{where}: mciProvisioningDelay",
             "must be a number of seconds from 0 to 3600")
    neg_delay = raw.get("negSyncDelay", 0.2)
    _require(isinstance(neg_delay, int | float) and 0 <= neg_delay <= 600, f"{where}: negSyncDelay",
             "must be a number of seconds from 0 to 600")
    npr = raw.get("nodePortRange", "30000-32767")
    m = re.fullmatch(r"(\d+)-(\d+)", str(npr))
    if m is None or not 1 <= int(m.group(1)) < int(m.group(2)) <= 65535:
        raise UserError(f"{where}: nodePortRange: {npr!r} is not a range like 30000-32767")
    seed = raw.get("seed", 1)
    _require(isinstance(seed, int), f"{where}: seed", "must be a number")
    return WorldSpec(
        project=project,
        project_number=number,
        network=network,
        network_project=network_project,
        clusters=clusters,
        operation_latency=float(latency),
        managed_cert_delay=float(cert_delay),
        mci_delay=float(mci_delay),
        neg_delay=float(neg_delay),
        node_port_range=(int(m.group(1)), int(m.group(2))),
        seed=seed,
    )


def load_spec(path: str | Path | None) -> WorldSpec:
    """Read a spec file (``None``: the default two-cluster world)."""
    if path is None:
        return parse_spec(DEFAULT_SPEC, "default simulator spec")
    return parse_spec(load_yaml(read_text(path, "simulator spec"), str(path)), str(path))


def generated_spec(clusters: int, zones_per_cluster: int = 1, nodes_per_zone: int = 3, **extra: Any) -> WorldSpec:
    """A spec of ``clusters`` clusters spread over regions, for benchmarks and scale tests."""
    regions = ["us-central1", "europe-west1", "asia-east1", "us-east1", "europe-west4", "us-west1",
               "asia-northeast1", "australia-southeast1", "southamerica-east1", "northamerica-northeast1"]
    items = []
    for i in range(clusters):
        region = regions[i % len(regions)]
        zones = list(REGION_ZONES[region][:zones_per_cluster])
        location = zones[0] if zones_per_cluster == 1 else region
        items.append({"name": f"prod{i + 1}", "location": location, "zones": zones, "nodes": nodes_per_zone})
    return parse_spec({"project": "demo-project", "clusters": items, **extra}, "generated spec")
