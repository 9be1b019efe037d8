"""The desired load balancer: every Compute resource as REST JSON, with its dependencies, from the inputs.

Pure: no API calls. Inputs are the routing model (:mod:`gitlab_mci.ingress`), the options, and what discovery found
in each cluster. Problems that make the load balancer impossible (a Service missing in a cluster, node ports that
differ between clusters, probe paths that disagree) are one-line errors here, before anything is written.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from gitlab_mci.errors import UserError
from gitlab_mci.features import compute as features_compute
from gitlab_mci.features.model import Features
from gitlab_mci.ingress import Backend, IngressModel
from gitlab_mci.lb.certs import Certificates
from gitlab_mci.lb.discovery import ClusterInfo
from gitlab_mci.lb.names import Namer

API = "https://www.googleapis.com/compute/v1/"
# Where Google's health checkers and front ends connect from (REFERENCE §3).
HEALTH_CHECK_RANGES = ("130.211.0.0/22", "35.191.0.0/16")
MAX_BACKENDS = 50
BACKEND_KINDS = ("instance-groups", "neg")
# Per-endpoint capacity of NEG backends: unbounded, so that only capacityScaler (weights, drain) shares traffic.
MAX_RATE = 1e14
MAX_CONNECTIONS = 2**31 - 1
# What GKE's default backend answers for a request no Ingress rule matches: 404, here as a route action of the
# global external ALB (fault injection is not available to the classic scheme).
NOT_FOUND: dict[str, Any] = {"faultInjectionPolicy": {"abort": {"httpStatus": 404, "percentage": 100.0}}}


@dataclass(frozen=True)
class Options:
    lb: str
    project: str
    scheme: str = "EXTERNAL_MANAGED"
    static_ip: str | None = None  # a global address to use (reused if it exists, reserved if not)
    health_check_path: str | None = None
    timeout_sec: int = 30
    balancing_mode: str = "UTILIZATION"
    prefix: str = "gmci"
    http: bool = True
    https_redirect: bool = False
    certificates: Certificates = field(default_factory=Certificates)
    check_interval_sec: int = 5
    unhealthy_threshold: int = 2
    backends: str = "instance-groups"  # or "neg": zonal network endpoint groups of the pods (gitlab_mci.lb.negs)
    # Production options (gitlab_mci.features): for every backend service, per backend Service (its
    # BackendConfig), and the HTTPS proxy's.
    features: Features = field(default_factory=Features)
    service_features: dict[str, Features] = field(default_factory=dict)
    frontend: Features = field(default_factory=Features)
    iap: tuple[str, str] | None = field(default=None, repr=False)  # the OAuth client (id, secret): never printed

    @property
    def https(self) -> bool:
        return bool(self.certificates) or bool(self.frontend.get("certificateMap"))

    def __post_init__(self) -> None:
        if not self.http and not self.https:
            raise UserError("--no-http needs HTTPS: pass --ssl-certificate, --certificate-file/--key-file, "
                            "--tls-secret or --managed-domain")
        if self.https_redirect and not (self.http and self.https):
            raise UserError("--https-redirect needs both HTTP and HTTPS (a certificate)")
        if not 1 <= self.check_interval_sec <= 300:
            raise UserError(f"--check-interval-sec {self.check_interval_sec}: must be 1 to 300 seconds")
        if not 1 <= self.unhealthy_threshold <= 10:
            raise UserError(f"--unhealthy-threshold {self.unhealthy_threshold}: must be 1 to 10")
        if self.scheme not in ("EXTERNAL", "EXTERNAL_MANAGED"):
            raise UserError(f"--scheme {self.scheme!r}: use EXTERNAL_MANAGED (global external ALB) or EXTERNAL "
                            "(classic)")
        if self.backends not in BACKEND_KINDS:
            raise UserError(f"--backends {self.backends!r}: use {' or '.join(BACKEND_KINDS)}")
        if self.backends == "neg" and self.balancing_mode == "UTILIZATION":
            raise UserError("--balancing-mode UTILIZATION: Compute refuses it for NEG backends; use RATE (the "
                            "default with --backends neg) or CONNECTION")
        modes = ("RATE", "CONNECTION") if self.backends == "neg" else ("UTILIZATION", "RATE")
        if self.balancing_mode not in modes:
            raise UserError(f"--balancing-mode {self.balancing_mode!r}: use {' or '.join(modes)} with --backends "
                            f"{self.backends}")
        if not 1 <= self.timeout_sec <= 86400:
            raise UserError(f"--timeout {self.timeout_sec}: must be 1 to 86400 seconds")
        if self.health_check_path is not None and not self.health_check_path.startswith("/"):
            raise UserError(f"--health-check-path {self.health_check_path!r} must start with /")


@dataclass(frozen=True)
class Resource:
    """One desired Compute resource."""

    collection: str
    name: str
    body: dict[str, Any]
    deps: tuple[str, ...] = ()  # keys of resources that must exist first
    zone: str | None = None

    @property
    def key(self) -> str:
        return f"{self.collection}/{self.zone + '/' if self.zone else ''}{self.name}"


@dataclass(frozen=True)
class NamedPorts:
    """Named ports gitlab-mci needs on one instance group (the group's other named ports are kept)."""

    group: str  # instance group URL
    ports: dict[str, int]

    @property
    def key(self) -> str:
        return f"namedPorts/{self.group.split('/compute/v1/')[-1]}"


@dataclass
class Desired:
    """The whole desired load balancer."""

    namer: Namer
    project: str
    resources: dict[str, Resource] = field(default_factory=dict)
    named_ports: list[NamedPorts] = field(default_factory=list)
    address_owned: bool = True  # False when the user named a static IP: never deleted unless asked
    notes: list[str] = field(default_factory=list)  # what a plan says besides its changes (routing behaviour)

    def add(self, r: Resource) -> Resource:
        self.resources[r.key] = r
        return r

    def url(self, r: Resource) -> str:
        scope = f"zones/{r.zone}" if r.zone else "global"
        segment = {"globalAddresses": "addresses", "globalForwardingRules": "forwardingRules"}.get(
            r.collection, r.collection)
        return f"{API}projects/{self.project}/{scope}/{segment}/{r.name}"

    def link(self, collection: str, name: str) -> str:
        """URL of a global resource that is not ours (a pre-shared certificate)."""
        return f"{API}projects/{self.project}/global/{collection}/{name}"


def _node_ports(model: IngressModel, clusters: Sequence[ClusterInfo]) -> dict[Backend, int]:
    """The node port of every backend, which must be the same in every cluster."""
    result: dict[Backend, int] = {}
    for backend in model.backends():
        seen: dict[int, str] = {}
        for c in clusters:
            svc = c.services.get(backend.service)
            if svc is None:
                raise UserError(f"Service {backend.service!r} (routed to by the Ingress) does not exist in "
                                f"context {c.context!r}")
            port = svc.port(backend.port)
            if port is None:
                raise UserError(f"Service {backend.service!r} in context {c.context!r} has no port {backend.port!r}")
            if svc.type not in ("NodePort", "LoadBalancer") or port.node_port is None:
                raise UserError(f"Service {backend.service!r} in context {c.context!r} is {svc.type}, not NodePort "
                                "(deploy it with `gitlab-mci helm extra-args`)")
            seen.setdefault(port.node_port, c.context)
        if len(seen) > 1:
            pairs = ", ".join(f"{ctx}: {np}" for np, ctx in sorted(seen.items()))
            raise UserError(f"Service {backend.service!r} port {backend.port} has different node ports across "
                            f"clusters ({pairs}); run `gitlab-mci nodeport pin` in each")
        result[backend] = next(iter(seen))
    return result


def _probe_path(backend: Backend, clusters: Sequence[ClusterInfo], override: str | None) -> str:
    if override:
        return override
    paths = {c.context: c.services[backend.service].readiness_path for c in clusters}
    distinct = {p for p in paths.values() if p}
    if len(distinct) > 1:
        listed = ", ".join(f"{ctx}: {p}" for ctx, p in sorted(paths.items()))
        raise UserError(f"Service {backend.service!r} has different readiness probe paths ({listed}); make them "
                        "agree or pass --health-check-path")
    return distinct.pop() if distinct else "/"


def _paths(path: str, path_type: str) -> list[str]:
    if path_type == "Exact":
        return [path]
    if path_type == "Prefix":
        base = path.rstrip("/")
        return [base or "/", f"{base}/*"] if base else ["/*"]
    return [path]


def build(model: IngressModel, options: Options, clusters: Sequence[ClusterInfo]) -> Desired:
    """The desired resources for ``model`` served by ``clusters``."""
    if not clusters:
        raise UserError("no clusters: pass --context for every production cluster (or set MCI_CONTEXTS)")
    namer = Namer(options.lb, options.prefix)
    desired = Desired(namer, options.project, address_owned=options.static_ip is None)
    owner = namer.description
    address = desired.add(Resource("globalAddresses", options.static_ip or namer.name("address"),
                                   {"name": options.static_ip or namer.name("address"), "description": owner,
                                    "labels": namer.labels}))
    if options.backends == "neg":
        service_for = _neg_services(desired, model, options, clusters)
    else:
        service_for = _group_services(desired, model, options, clusters)
    _add_routing(desired, model, options, address, service_for)
    return desired


def _firewalls(desired: Desired, clusters: Sequence[ClusterInfo], ports: Sequence[int], kind: str) -> None:
    """Google's health checkers (and front ends) may reach ``ports`` on the nodes, one rule per network."""
    by_network: dict[str, list[ClusterInfo]] = {}
    for c in clusters:
        by_network.setdefault(c.network, []).append(c)
    for network, members in sorted(by_network.items()):
        digest = None if len(by_network) == 1 else hashlib.sha256(network.encode()).hexdigest()[:6]
        name = desired.namer.name(kind, digest)
        desired.add(Resource("firewalls", name, {
            "name": name, "description": desired.namer.description, "network": network, "direction": "INGRESS",
            "sourceRanges": list(HEALTH_CHECK_RANGES),
            "allowed": [{"IPProtocol": "tcp", "ports": [str(p) for p in sorted(set(ports))]}],
            "targetTags": sorted({t for c in members for t in c.tags}),
        }))


def _neg_services(desired: Desired, model: IngressModel, options: Options,
                  clusters: Sequence[ClusterInfo]) -> dict[Backend, Resource]:
    """Backend services whose backends are the clusters' zonal NEGs (``gmci-bsn-<lb>-<port>``: a backend service
    cannot mix NEGs and instance groups, so a switch of kind is a second backend service)."""
    from gitlab_mci.lb.negs import backend_port

    namer, owner = desired.namer, desired.namer.description
    ports = {b: backend_port(clusters, b.service, b.port) for b in model.backends()}
    _firewalls(desired, clusters, [pod for _, pod in ports.values()], "negFirewall")
    service_for: dict[Backend, Resource] = {}
    made: dict[tuple[str, int], Resource] = {}
    # Services per port number: a port several Services have gets the Service in its names, so that each keeps
    # its own backend service (one Service's port keeps the short name).
    sharing: dict[int, set[str]] = {}
    for backend, (port, _) in ports.items():
        sharing.setdefault(port, set()).add(backend.service)
    for backend, (port, _) in ports.items():
        if (backend.service, port) in made:
            service_for[backend] = made[(backend.service, port)]
            continue
        suffix = str(port) if len(sharing[port]) == 1 else \
            f"{port}-{hashlib.sha256(backend.service.encode()).hexdigest()[:6]}"
        negs = sorted(u for c in clusters for u in c.negs.get((backend.service, port), ()))
        if not negs:
            raise UserError(f"Service {backend.service!r} port {port}: no NEG found (a bug: discovery waits for "
                            "them)")
        if len(negs) > MAX_BACKENDS:
            raise UserError(f"{len(negs)} NEGs exceed the {MAX_BACKENDS} backends a backend service may have; use "
                            "fewer clusters or zones")
        wanted = _backend_features(options, [backend.service])
        hc_name = namer.name("negHealthCheck", suffix)
        hc = desired.add(Resource("healthChecks", hc_name, features_compute.health_check(wanted, {
            "name": hc_name, "description": owner, "type": "HTTP",
            "httpHealthCheck": {"portSpecification": "USE_SERVING_PORT",
                                "requestPath": _probe_path(backend, clusters, options.health_check_path)},
            "checkIntervalSec": options.check_interval_sec, "timeoutSec": options.check_interval_sec,
            "unhealthyThreshold": options.unhealthy_threshold,
        })))
        capacity: dict[str, Any] = ({"maxRatePerEndpoint": MAX_RATE} if options.balancing_mode == "RATE"
                                    else {"maxConnectionsPerEndpoint": MAX_CONNECTIONS})
        bs_name = namer.name("negBackendService", suffix)
        made[(backend.service, port)] = service_for[backend] = desired.add(Resource("backendServices", bs_name, {
            "name": bs_name, "description": owner, "protocol": "HTTP", "timeoutSec": options.timeout_sec,
            "loadBalancingScheme": options.scheme, "healthChecks": [desired.url(hc)],
            "backends": [{"group": g, "balancingMode": options.balancing_mode, **capacity} for g in negs],
            **features_compute.backend_service(wanted, options.project, options.iap),
        }, deps=(hc.key,)))
    return service_for


def _group_services(desired: Desired, model: IngressModel, options: Options,
                    clusters: Sequence[ClusterInfo]) -> dict[Backend, Resource]:
    """Backend services whose backends are the clusters' instance groups, reaching pods through a node port."""
    namer, owner = desired.namer, desired.namer.description
    node_ports = _node_ports(model, clusters)
    groups = sorted({g for c in clusters for g in c.groups})
    if len(groups) > MAX_BACKENDS:
        raise UserError(f"{len(groups)} instance groups exceed the {MAX_BACKENDS} backends a backend service may "
                        "have; use fewer node pools or zones")
    _firewalls(desired, clusters, list(node_ports.values()), "firewall")
    port_names = {np: namer.port_name(np) for np in sorted(set(node_ports.values()))}
    desired.named_ports = [NamedPorts(g, {port_names[np]: np for np in port_names}) for g in groups]
    service_for: dict[int, Resource] = {}
    for backend, np in node_ports.items():
        if np in service_for:
            continue
        wanted = _backend_features(options, [b.service for b, p in node_ports.items() if p == np])
        hc = desired.add(Resource("healthChecks", namer.name("healthCheck", np), features_compute.health_check(
            wanted, {
            "name": namer.name("healthCheck", np), "description": owner, "type": "HTTP",
            "httpHealthCheck": {"port": np, "requestPath": _probe_path(backend, clusters, options.health_check_path)},
            "checkIntervalSec": options.check_interval_sec, "timeoutSec": options.check_interval_sec,
            "unhealthyThreshold": options.unhealthy_threshold,
        })))
        bs_name = namer.name("backendService", np)
        backends: list[dict[str, Any]] = [{"group": g, "balancingMode": options.balancing_mode} for g in groups]
        if options.balancing_mode == "RATE":
            for b in backends:
                b["maxRatePerInstance"] = 1e14
        service_for[np] = desired.add(Resource("backendServices", bs_name, {
            "name": bs_name, "description": owner, "protocol": "HTTP", "portName": port_names[np],
            "timeoutSec": options.timeout_sec, "loadBalancingScheme": options.scheme,
            "healthChecks": [desired.url(hc)], "backends": backends,
            **features_compute.backend_service(wanted, options.project, options.iap),
        }, deps=(hc.key,)))  # named ports: ordered by the engine (see execute)
    return {b: service_for[np] for b, np in node_ports.items()}


def _add_routing(desired: Desired, model: IngressModel, options: Options, address: Resource,
                 service_for: dict[Backend, Resource]) -> None:
    """URL map (host and path rules to the backend services), proxies, forwarding rules."""
    namer, owner = desired.namer, desired.namer.description
    default = model.default_backend or model.backends()[0]
    default_bs = service_for[default]
    # No default backend: GKE sends what matches no rule to its default backend, which answers 404. The global
    # external ALB can say the same with a fault abort on the default route (a service is still named: a URL map
    # must have one); the classic scheme cannot, so the plan says where those requests go instead.
    not_found = model.default_backend is None and options.scheme == "EXTERNAL_MANAGED"
    if model.default_backend is None and not not_found:
        desired.notes.append(f"unmatched requests (the Ingress has no default backend, where GKE answers 404) go to "
                             f"backendServices/{default_bs.name}: the {options.scheme} scheme cannot answer a fixed "
                             "status; use --scheme EXTERNAL_MANAGED for 404s")
    url_map_body: dict[str, Any] = {"name": namer.name("urlMap"), "description": owner,
                                    "defaultService": desired.url(default_bs), "hostRules": [], "pathMatchers": []}
    if not_found:
        url_map_body["defaultRouteAction"] = NOT_FOUND
    for i, rule in enumerate(model.rules):
        matcher = f"m{i}"
        path_rules, matcher_default = [], None
        for p in rule.paths:
            bs = service_for[p.backend]
            if p.path == "/" and p.path_type != "Exact":
                matcher_default = bs
                continue
            path_rules.append({"paths": _paths(p.path, p.path_type), "service": desired.url(bs)})
        url_map_body["hostRules"].append({"hosts": [rule.host or "*"], "pathMatcher": matcher})
        path_matcher: dict[str, Any] = {"name": matcher, "defaultService": desired.url(matcher_default or default_bs),
                                        "pathRules": path_rules}
        if matcher_default is None and not_found:
            path_matcher["defaultRouteAction"] = NOT_FOUND
        url_map_body["pathMatchers"].append(path_matcher)
    url_map = desired.add(Resource("urlMaps", namer.name("urlMap"), url_map_body,
                                   deps=tuple(r.key for r in service_for.values())))
    addresses = [address]
    if options.frontend.get("ipv6"):
        # Its own global address (ipVersion IPV6) and forwarding rules, owned and kept like the IPv4 one.
        name6 = namer.name("address", "v6")
        addresses.append(desired.add(Resource("globalAddresses", name6, {
            "name": name6, "description": owner, "labels": namer.labels, "ipVersion": "IPV6"})))
    if options.https:
        _add_https(desired, options, addresses, url_map)
    if options.http:
        target = url_map
        if options.https_redirect:
            target = desired.add(Resource("urlMaps", namer.name("redirectUrlMap"), {
                "name": namer.name("redirectUrlMap"), "description": owner,
                "defaultUrlRedirect": {"httpsRedirect": True, "redirectResponseCode": "MOVED_PERMANENTLY_DEFAULT"}}))
        proxy = desired.add(Resource("targetHttpProxies", namer.name("httpProxy"), {
            "name": namer.name("httpProxy"), "description": owner, "urlMap": desired.url(target)},
            deps=(target.key,)))
        for a in addresses:
            _add_rule(desired, options, a, proxy, "http", "80")


def _backend_features(options: Options, services: Sequence[str]) -> Features:
    """The options of one backend service: every service's, and its Services' own BackendConfig (which must agree
    when several Services share a node port, hence a backend service)."""
    wanted = options.features
    for service in sorted(set(services)):
        wanted = wanted.merged(options.service_features.get(service, Features()))
    return wanted


def _add_rule(desired: Desired, options: Options, address: Resource, proxy: Resource, kind: str,
              port: str) -> None:
    v6 = address.body.get("ipVersion") == "IPV6"
    name = desired.namer.name("forwardingRule", f"{kind}-v6" if v6 else kind)
    desired.add(Resource("globalForwardingRules", name, {
        "name": name, "description": desired.namer.description, "IPAddress": desired.url(address),
        "IPProtocol": "TCP", "portRange": port, "target": desired.url(proxy),
        "loadBalancingScheme": options.scheme, "labels": desired.namer.labels}, deps=(address.key, proxy.key)))


def _add_https(desired: Desired, options: Options, addresses: list[Resource], url_map: Resource) -> None:
    """Certificates (content-addressed names, so a new one is created before the old one goes), proxy, rule."""
    namer, owner, certs = desired.namer, desired.namer.description, options.certificates
    links = [desired.link("sslCertificates", n) for n in certs.pre_shared]
    owned: list[Resource] = []
    for pair in certs.self_managed:
        name = namer.name("certificate", pair.digest)
        owned.append(desired.add(Resource("sslCertificates", name, {
            "name": name, "description": owner, "type": "SELF_MANAGED",
            "certificate": pair.certificate, "privateKey": pair.private_key})))
    if certs.managed_domains:
        name = namer.name("certificate", f"m{certs.managed_digest}")
        owned.append(desired.add(Resource("sslCertificates", name, {
            "name": name, "description": owner, "type": "MANAGED",
            "managed": {"domains": list(certs.managed_domains)}})))
    links += [desired.url(r) for r in owned]
    proxy = desired.add(Resource("targetHttpsProxies", namer.name("httpsProxy"), {
        "name": namer.name("httpsProxy"), "description": owner, "urlMap": desired.url(url_map),
        "sslCertificates": links, **features_compute.https_proxy(options.frontend, options.project)},
        deps=(url_map.key, *(r.key for r in owned))))
    for address in addresses:
        _add_rule(desired, options, address, proxy, "https", "443")
