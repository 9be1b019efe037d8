"""The recipe's world: the classic load balancer `kubemci create` built, made in the simulator through the Compute API.

What kubemci (GoogleCloudPlatform/k8s-multicluster-ingress, deprecated) makes for an Ingress whose one backend is a
Service on node port N, in the order it makes it (its ``pkg/gcp/*`` syncers and ``namer``):

* the named port ``portN`` on every cluster's node instance groups (set by the in-cluster ingress controller, whose
  instance-group annotation kubemci waits for);
* health check ``mci1-hc-N--LB``: HTTP on N, the pod's readiness path, every 60 s, timeout 60 s, healthy after 1
  success, unhealthy after 10 failures;
* backend service ``mci1-be-N--LB``: HTTP, port N, port name ``portN``, scheme ``EXTERNAL``, session affinity NONE,
  timeout 30 s, one backend per instance group in ``RATE`` mode with ``maxRatePerInstance`` 1e14, capacity 1;
* URL map ``mci1-um--LB`` with it as default service, its description the load balancer's status JSON;
* for HTTPS, certificate ``mci1-ssl--LB`` (from the Ingress's TLS secret), proxy ``mci1-tps--LB`` and forwarding rule
  ``mci1-fws--LB`` on 443-443; unless the Ingress says ``kubernetes.io/ingress.allow-http: "false"``, proxy
  ``mci1-tp--LB`` and forwarding rule ``mci1-fw--LB`` on 80-80, both rules ``EXTERNAL``, TCP, on the static IP;
* firewall ``mci1-fr--LB`` from 130.211.0.0/22 and 35.191.0.0/16 to tcp:N on the nodes' first network tags.

(kubemci's namer calls the forwarding rules ``fw``/``fws`` and the firewall ``fr``: the opposite of what one would
guess.) Everything is created with google-cloud-compute as a user would, without any gitlab-mci label or description.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from gitlab_mci.errors import UserError

Obj = dict[str, Any]
HEALTH_CHECK_RANGES = ("130.211.0.0/22", "35.191.0.0/16")
NAME_LIMIT = 62  # kubemci truncates at 62 and appends "0"


def kubemci_name(kind: str, lb: str, port: int | None = None) -> str:
    """A resource name as kubemci's namer makes it: ``mci1-<kind>[-<port>]--<lb>``, truncated like kubemci."""
    name = f"mci1-{kind}" + (f"-{port}" if port is not None else "") + f"--{lb}"
    return name[:NAME_LIMIT] + "0" if len(name) > NAME_LIMIT else name


@dataclass(frozen=True)
class KubemciSpec:
    """What `kubemci create` was given: the load balancer name, the Ingress's one backend and TLS, the clusters."""

    lb: str
    clusters: tuple[str, ...]
    node_port: int = 30999
    static_ip: str | None = None  # name of the global address (kubemci --static-ip); reserved when missing
    certificate: str | None = None  # PEM, from the Ingress's TLS secret
    private_key: str | None = None
    allow_http: bool = True

    @property
    def names(self) -> dict[str, str]:
        lb, port = self.lb, self.node_port
        return {"health_check": kubemci_name("hc", lb, port), "backend_service": kubemci_name("be", lb, port),
                "url_map": kubemci_name("um", lb), "http_proxy": kubemci_name("tp", lb),
                "https_proxy": kubemci_name("tps", lb), "http_rule": kubemci_name("fw", lb),
                "https_rule": kubemci_name("fws", lb), "firewall": kubemci_name("fr", lb),
                "certificate": kubemci_name("ssl", lb)}


@dataclass
class Built:
    """What was made: the VIP and the resources, in creation order as (collection, name)."""

    vip: str
    resources: list[tuple[str, str]] = field(default_factory=list)


@dataclass(frozen=True)
class _ClusterFacts:
    name: str
    groups: tuple[str, ...]  # instance group URLs
    tags: tuple[str, ...]  # the nodes' first network tags
    network: str
    health_path: str


def validate(spec: KubemciSpec, known_clusters: list[str]) -> None:
    """Refuse a spec kubemci would not have built from, before anything is read or written."""
    import re

    if not re.fullmatch(r"[a-z]([-a-z0-9]*[a-z0-9])?", spec.lb):
        raise UserError(f"load balancer name {spec.lb!r} must be lowercase letters, digits and dashes, starting "
                        "with a letter")
    if not 30000 <= spec.node_port <= 32767:
        raise UserError(f"node port {spec.node_port} is outside the NodePort range 30000-32767")
    if (spec.certificate is None) != (spec.private_key is None):
        raise UserError("give both --certificate-file and --key-file, or neither")
    if not spec.allow_http and spec.certificate is None:
        raise UserError("--no-http needs a certificate (--certificate-file and --key-file): nothing would listen")
    if not spec.clusters:
        raise UserError("no clusters: pass --context")
    unknown = [c for c in spec.clusters if c not in known_clusters]
    if unknown:
        raise UserError(f"unknown cluster {unknown[0]!r}; the simulator has {', '.join(known_clusters)}")


class _Compute:
    """google-cloud-compute against one endpoint, waiting on operations through the same endpoint."""

    def __init__(self, endpoint: str, project: str) -> None:
        self.endpoint, self.project = endpoint, project
        self._clients: dict[type, Any] = {}

    def client(self, cls: type) -> Any:
        if cls not in self._clients:
            from google.api_core.client_options import ClientOptions
            from google.auth.credentials import AnonymousCredentials

            self._clients[cls] = cls(client_options=ClientOptions(api_endpoint=self.endpoint),
                                     credentials=AnonymousCredentials())  # type: ignore[no-untyped-call]
        return self._clients[cls]

    def run(self, call: Callable[..., Any], *, zone: str | None = None, **kwargs: Any) -> None:
        """Call a ``*_unary`` method and wait until its operation is DONE; a failed operation is a UserError."""
        from google.cloud import compute_v1

        op = call(project=self.project, **({"zone": zone} if zone else {}), **kwargs)
        deadline = time.monotonic() + 300
        while op.status != compute_v1.Operation.Status.DONE and time.monotonic() < deadline:
            if zone:
                op = self.client(compute_v1.ZoneOperationsClient).wait(project=self.project, zone=zone,
                                                                      operation=op.name)
            else:
                op = self.client(compute_v1.GlobalOperationsClient).wait(project=self.project, operation=op.name)
        if op.error and op.error.errors:
            raise UserError(f"{op.operation_type} of {op.target_link.rsplit('/', 1)[-1]} failed: "
                            f"{op.error.errors[0].message}")


def _cluster_facts(compute: _Compute, cluster: str, kube_url: str, node_port: int) -> _ClusterFacts:
    from google.cloud import compute_v1
    from kubernetes import client as k8s

    api = k8s.ApiClient(k8s.Configuration(host=kube_url))
    core: Any = k8s.CoreV1Api(api)  # read loosely: the simulator's objects are what the test world made
    service = next((s for s in core.list_service_for_all_namespaces().items
                    for p in s.spec.ports or [] if p.node_port == node_port), None)
    if service is None:
        raise UserError(f"cluster {cluster} has no Service on node port {node_port}: deploy the app with that node "
                        "port first (gitlab-mci sim deploy, or gitlab-mci nodeport)")
    health_path = "/"
    selector = service.spec.selector or {}
    if selector:
        labels = ",".join(f"{k}={v}" for k, v in selector.items())
        for pod in core.list_namespaced_pod(service.metadata.namespace, label_selector=labels).items:
            probe = next((c.readiness_probe for c in pod.spec.containers if c.readiness_probe), None)
            if probe is not None and probe.http_get is not None and probe.http_get.path:
                health_path = probe.http_get.path  # what the ingress controller gives the health check
                break
    instances = compute.client(compute_v1.InstancesClient)
    managers = compute.client(compute_v1.InstanceGroupManagersClient)
    groups: list[str] = []
    tags: list[str] = []
    network = ""
    for node in core.list_node().items:
        _, _, rest = (node.spec.provider_id or "").partition("gce://")
        project, zone, name = [*rest.split("/"), "", "", ""][:3]
        inst = instances.get(project=project or compute.project, zone=zone, instance=name)
        meta = {i.key: i.value for i in inst.metadata.items}
        manager = meta.get("created-by", "").rsplit("/", 1)[-1]
        group = managers.get(project=compute.project, zone=zone, instance_group_manager=manager).instance_group
        if group not in groups:
            groups.append(group)
        if inst.tags.items and inst.tags.items[0] not in tags:
            tags.append(inst.tags.items[0])
        network = network or inst.network_interfaces[0].network
    if not groups:
        raise UserError(f"cluster {cluster} has no nodes in instance groups")
    return _ClusterFacts(cluster, tuple(groups), tuple(tags), network, health_path)


def _status(spec: KubemciSpec, kind: str, ip: str) -> str:
    """kubemci's load balancer status, stored as JSON in the URL map's and forwarding rules' descriptions."""
    return json.dumps({"Description": f"{kind} for kubernetes multicluster loadbalancer {spec.lb}",
                       "LoadBalancerName": spec.lb, "Clusters": sorted(spec.clusters), "IPAddress": ip})


def build(endpoint: str, project: str, kube_urls: dict[str, str], spec: KubemciSpec) -> Built:
    """Make kubemci's chain for ``spec`` with google-cloud-compute, after checking everything it needs exists.

    ``kube_urls``: each cluster's Kubernetes API server. Refused (nothing written) when a cluster lacks a Service on
    the node port or when any of the chain's names is already taken.
    """
    from google.api_core import exceptions as gexc
    from google.cloud import compute_v1

    validate(spec, list(kube_urls))
    compute = _Compute(endpoint, project)
    facts = [_cluster_facts(compute, c, kube_urls[c], spec.node_port) for c in spec.clusters]
    names = spec.names
    taken = (
        (compute_v1.HealthChecksClient, "health_check", names["health_check"]),
        (compute_v1.BackendServicesClient, "backend_service", names["backend_service"]),
        (compute_v1.UrlMapsClient, "url_map", names["url_map"]),
        (compute_v1.GlobalForwardingRulesClient, "forwarding_rule", names["http_rule"]),
        (compute_v1.GlobalForwardingRulesClient, "forwarding_rule", names["https_rule"]),
    )
    for cls, arg, name in taken:
        try:
            compute.client(cls).get(project=project, **{arg: name})
        except gexc.NotFound:
            continue
        raise UserError(f"{name} already exists: a kubemci load balancer {spec.lb!r} is already there")
    addresses = compute.client(compute_v1.GlobalAddressesClient)
    built = Built(vip="")
    if spec.static_ip:
        try:
            built.vip = addresses.get(project=project, address=spec.static_ip).address
        except gexc.NotFound:  # the recipe's `gcloud compute addresses create NAME --global`
            compute.run(addresses.insert_unary, address_resource=compute_v1.Address(name=spec.static_ip))
            built.vip = addresses.get(project=project, address=spec.static_ip).address
            built.resources.append(("globalAddresses", spec.static_ip))

    # The in-cluster ingress controller's part: the named port on every node instance group.
    port_name = f"port{spec.node_port}"
    groups_client = compute.client(compute_v1.InstanceGroupsClient)
    for group_url in [g for f in facts for g in f.groups]:
        zone, group = group_url.split("/zones/", 1)[1].split("/instanceGroups/")
        current = groups_client.get(project=project, zone=zone, instance_group=group)
        ports = [compute_v1.NamedPort(name=p.name, port=p.port) for p in current.named_ports if p.name != port_name]
        compute.run(groups_client.set_named_ports_unary, zone=zone, instance_group=group,
                    instance_groups_set_named_ports_request_resource=compute_v1.InstanceGroupsSetNamedPortsRequest(
                        named_ports=[*ports, compute_v1.NamedPort(name=port_name, port=spec.node_port)],
                        fingerprint=current.fingerprint))

    desc = f"service default/app port {spec.node_port}"
    hcs = compute.client(compute_v1.HealthChecksClient)
    compute.run(hcs.insert_unary, health_check_resource=compute_v1.HealthCheck(
        name=names["health_check"], type_="HTTP", check_interval_sec=60, timeout_sec=60, healthy_threshold=1,
        unhealthy_threshold=10,
        description=f"Health check for {desc} as part of kubernetes multicluster loadbalancer {spec.lb}",
        http_health_check=compute_v1.HTTPHealthCheck(port=spec.node_port, request_path=facts[0].health_path,
                                                     proxy_header="NONE")))
    built.resources.append(("healthChecks", names["health_check"]))
    bss = compute.client(compute_v1.BackendServicesClient)
    compute.run(bss.insert_unary, backend_service_resource=compute_v1.BackendService(
        name=names["backend_service"], protocol="HTTP", port=spec.node_port, port_name=port_name,
        description=f"Backend service for {desc} as part of kubernetes multicluster loadbalancer {spec.lb}",
        health_checks=[hcs.get(project=project, health_check=names["health_check"]).self_link],
        load_balancing_scheme="EXTERNAL", session_affinity="NONE", timeout_sec=30,
        connection_draining=compute_v1.ConnectionDraining(),
        backends=[compute_v1.Backend(group=g, balancing_mode="RATE", max_rate_per_instance=1e14, capacity_scaler=1.0)
                  for g in sorted(g for f in facts for g in f.groups)]))
    built.resources.append(("backendServices", names["backend_service"]))
    service_url = bss.get(project=project, backend_service=names["backend_service"]).self_link
    ums = compute.client(compute_v1.UrlMapsClient)
    compute.run(ums.insert_unary, url_map_resource=compute_v1.UrlMap(
        name=names["url_map"], default_service=service_url, description=_status(spec, "URL map", built.vip)))
    built.resources.append(("urlMaps", names["url_map"]))
    url_map = ums.get(project=project, url_map=names["url_map"]).self_link

    rules = compute.client(compute_v1.GlobalForwardingRulesClient)

    def rule(name: str, target: str, ports: str, kind: str) -> None:
        compute.run(rules.insert_unary, forwarding_rule_resource=compute_v1.ForwardingRule(
            name=name, I_p_address=built.vip or None, target=target, port_range=ports, I_p_protocol="TCP",
            load_balancing_scheme="EXTERNAL", description=_status(spec, f"{kind} forwarding rule", built.vip)))
        built.resources.append(("globalForwardingRules", name))
        built.vip = built.vip or rules.get(project=project, forwarding_rule=name).I_p_address

    if spec.allow_http:
        tps = compute.client(compute_v1.TargetHttpProxiesClient)
        compute.run(tps.insert_unary, target_http_proxy_resource=compute_v1.TargetHttpProxy(
            name=names["http_proxy"], url_map=url_map,
            description=f"Target http proxy for kubernetes multicluster loadbalancer {spec.lb}"))
        built.resources.append(("targetHttpProxies", names["http_proxy"]))
        rule(names["http_rule"], tps.get(project=project, target_http_proxy=names["http_proxy"]).self_link, "80-80",
             "http")
    if spec.certificate is not None:
        certs = compute.client(compute_v1.SslCertificatesClient)
        compute.run(certs.insert_unary, ssl_certificate_resource=compute_v1.SslCertificate(
            name=names["certificate"], certificate=spec.certificate, private_key=spec.private_key,
            description=f"SSL cert for kubernetes multicluster loadbalancer {spec.lb}"))
        built.resources.append(("sslCertificates", names["certificate"]))
        stps = compute.client(compute_v1.TargetHttpsProxiesClient)
        compute.run(stps.insert_unary, target_https_proxy_resource=compute_v1.TargetHttpsProxy(
            name=names["https_proxy"], url_map=url_map,
            ssl_certificates=[certs.get(project=project, ssl_certificate=names["certificate"]).self_link],
            description=f"Target https proxy for kubernetes multicluster loadbalancer {spec.lb}"))
        built.resources.append(("targetHttpsProxies", names["https_proxy"]))
        rule(names["https_rule"], stps.get(project=project, target_https_proxy=names["https_proxy"]).self_link,
             "443-443", "https")

    firewalls = compute.client(compute_v1.FirewallsClient)
    compute.run(firewalls.insert_unary, firewall_resource=compute_v1.Firewall(
        name=names["firewall"], network=facts[0].network, direction="INGRESS",
        description=f"Firewall rule for kubernetes multicluster loadbalancer {spec.lb}",
        source_ranges=list(HEALTH_CHECK_RANGES),
        allowed=[compute_v1.Allowed(I_p_protocol="tcp", ports=[str(spec.node_port)])],
        target_tags=sorted({t for f in facts for t in f.tags})))
    built.resources.append(("firewalls", names["firewall"]))
    return built
