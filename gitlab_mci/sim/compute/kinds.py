"""What the emulator knows about each Compute collection it serves: URL segment, schema, references, defaults."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

Obj = dict[str, Any]


@dataclass(frozen=True)
class Ref:
    """A field holding a reference to another resource (``path`` with ``[]`` for lists)."""

    path: str
    targets: tuple[str, ...]  # collections the reference may point to


@dataclass(frozen=True)
class Collection:
    name: str  # discovery resource name, e.g. globalAddresses
    segment: str  # URL segment after the scope, e.g. addresses
    schema: str
    zonal: bool = False
    in_use_name: str = ""  # how errors name the kind: health_check, backend_service …
    refs: tuple[Ref, ...] = ()
    defaults: Callable[[Obj], None] | None = None
    implemented: frozenset[str] = frozenset({"insert", "get", "list", "delete", "patch", "update", "aggregatedList"})
    extra: dict[str, Any] = field(default_factory=dict)


def _setdefaults(obj: Obj, **values: Any) -> None:
    for k, v in values.items():
        obj.setdefault(k, v)


def _backend_service_defaults(obj: Obj) -> None:
    _setdefaults(obj, protocol="HTTP", port=80, portName="http", timeoutSec=30, sessionAffinity="NONE",
                 affinityCookieTtlSec=0, loadBalancingScheme="EXTERNAL",
                 connectionDraining={"drainingTimeoutSec": 0}, healthChecks=[], backends=[])
    for b in obj["backends"]:
        _setdefaults(b, balancingMode="UTILIZATION", capacityScaler=1)


def _health_check_defaults(obj: Obj) -> None:
    _setdefaults(obj, checkIntervalSec=5, timeoutSec=5, healthyThreshold=2, unhealthyThreshold=2)
    for key, port in (("httpHealthCheck", 80), ("httpsHealthCheck", 443), ("http2HealthCheck", 443)):
        if key in obj:
            _setdefaults(obj[key], port=port, requestPath="/", proxyHeader="NONE")
            if "port" in obj[key] and "portSpecification" not in obj[key] and "portName" not in obj[key]:
                obj[key]["portSpecification"] = "USE_FIXED_PORT"


def _forwarding_rule_defaults(obj: Obj) -> None:
    _setdefaults(obj, IPProtocol="TCP", loadBalancingScheme="EXTERNAL", networkTier="PREMIUM", ipVersion="IPV4")
    pr = obj.get("portRange")
    if pr and "-" not in str(pr):
        obj["portRange"] = f"{pr}-{pr}"


def _firewall_defaults(obj: Obj) -> None:
    _setdefaults(obj, direction="INGRESS", priority=1000, disabled=False,
                 logConfig={"enable": False})


def _address_defaults(obj: Obj) -> None:
    _setdefaults(obj, addressType="EXTERNAL", ipVersion="IPV4", networkTier="PREMIUM")


def _ssl_defaults(obj: Obj) -> None:
    _setdefaults(obj, type="SELF_MANAGED")


COLLECTIONS: dict[str, Collection] = {c.name: c for c in (
    Collection("globalAddresses", "addresses", "Address", in_use_name="address", defaults=_address_defaults,
               implemented=frozenset({"insert", "get", "list", "delete", "setLabels", "aggregatedList"})),
    Collection("firewalls", "firewalls", "Firewall", in_use_name="firewall", defaults=_firewall_defaults,
               refs=(Ref("network", ("networks",)),)),
    Collection("healthChecks", "healthChecks", "HealthCheck", in_use_name="health_check",
               defaults=_health_check_defaults),
    Collection("backendServices", "backendServices", "BackendService", in_use_name="backend_service",
               defaults=_backend_service_defaults,
               refs=(Ref("healthChecks[]", ("healthChecks",)),
                     Ref("backends[].group", ("instanceGroups", "networkEndpointGroups"))),
               implemented=frozenset({"insert", "get", "list", "delete", "patch", "update", "getHealth",
                                      "aggregatedList"})),
    Collection("urlMaps", "urlMaps", "UrlMap", in_use_name="url_map",
               refs=(Ref("defaultService", ("backendServices",)),
                     Ref("pathMatchers[].defaultService", ("backendServices",)),
                     Ref("pathMatchers[].pathRules[].service", ("backendServices",)))),
    Collection("targetHttpProxies", "targetHttpProxies", "TargetHttpProxy", in_use_name="target_http_proxy",
               refs=(Ref("urlMap", ("urlMaps",)),),
               implemented=frozenset({"insert", "get", "list", "delete", "patch", "setUrlMap", "aggregatedList"})),
    Collection("targetHttpsProxies", "targetHttpsProxies", "TargetHttpsProxy", in_use_name="target_https_proxy",
               refs=(Ref("urlMap", ("urlMaps",)), Ref("sslCertificates[]", ("sslCertificates",))),
               implemented=frozenset({"insert", "get", "list", "delete", "patch", "setUrlMap",
                                      "setSslCertificates", "aggregatedList"})),
    Collection("sslCertificates", "sslCertificates", "SslCertificate", in_use_name="ssl_certificate",
               defaults=_ssl_defaults, implemented=frozenset({"insert", "get", "list", "delete", "aggregatedList"})),
    Collection("globalForwardingRules", "forwardingRules", "ForwardingRule", in_use_name="forwarding_rule",
               defaults=_forwarding_rule_defaults,
               refs=(Ref("target", ("targetHttpProxies", "targetHttpsProxies")),
                     Ref("IPAddress", ("globalAddresses",))),
               implemented=frozenset({"insert", "get", "list", "delete", "patch", "setTarget", "setLabels",
                                      "aggregatedList"})),
    Collection("networks", "networks", "Network", in_use_name="network",
               implemented=frozenset({"insert", "get", "list", "delete"})),
    Collection("instances", "instances", "Instance", zonal=True, in_use_name="instance",
               implemented=frozenset({"get", "list", "aggregatedList"})),
    Collection("instanceGroups", "instanceGroups", "InstanceGroup", zonal=True, in_use_name="instance_group",
               implemented=frozenset({"get", "list", "aggregatedList", "listInstances", "setNamedPorts"})),
    Collection("instanceGroupManagers", "instanceGroupManagers", "InstanceGroupManager", zonal=True,
               in_use_name="instance_group_manager", implemented=frozenset({"get", "list", "aggregatedList"})),
    # GKE's node pools are not autoscaled by Compute autoscalers (the cluster autoscaler resizes them); gcloud's
    # `instance-groups managed list` lists them per zone to show which groups are.
    Collection("autoscalers", "autoscalers", "Autoscaler", zonal=True, in_use_name="autoscaler",
               implemented=frozenset({"get", "list", "aggregatedList"})),
    Collection("networkEndpointGroups", "networkEndpointGroups", "NetworkEndpointGroup", zonal=True,
               in_use_name="network_endpoint_group",
               implemented=frozenset({"insert", "get", "list", "delete", "aggregatedList", "listNetworkEndpoints",
                                      "attachNetworkEndpoints", "detachNetworkEndpoints"})),
    Collection("zones", "zones", "Zone", implemented=frozenset({"get", "list"})),
)}

# URL segment after `global/` or `zones/Z/` → collection, for resolving references.
GLOBAL_SEGMENTS = {c.segment: c.name for c in COLLECTIONS.values() if not c.zonal and c.name != "zones"}
ZONAL_SEGMENTS = {c.segment: c.name for c in COLLECTIONS.values() if c.zonal}

# Output-only fields a client may send back (gcloud's update sends the whole resource): ignored on write.
OUTPUT_ONLY = {"id", "selfLink", "creationTimestamp", "kind", "usedBy", "users", "status", "region", "zone",
               "selfLinkWithId", "size"}
