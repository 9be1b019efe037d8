"""Every check that needs a cluster, the fleet or Compute, before any write; then what exists of the desired state.

Order: offline inputs → clusters (namespace, the app's Services, the CRDs) → fleet (membership, both features, the
config membership) → config cluster (GatewayClass, ServiceImports the user routes to) → Compute (address,
certificates) → the objects that exist (ours, someone else's under our names, ours no longer wanted).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from gitlab_mci.errors import UserError
from gitlab_mci.gateway.manifests import APPLY_ORDER, KINDS, Desired, desired
from gitlab_mci.gateway.model import (
    CLUSTERS_ANNOTATION,
    DEFAULT_CLASS,
    DRAINED_ANNOTATION,
    LB_LABEL,
    MANAGED_BY,
    AppService,
    GatewayModel,
    Inputs,
    Serving,
    check_name,
    check_weights,
    export_name,
    rules_from_httproute,
    rules_from_ingress,
    validate,
)

if TYPE_CHECKING:
    from gitlab_mci.kube import Cluster

Obj = dict[str, Any]
WEIGHTS_ANNOTATION = "gitlab-mci/weights"  # on the HTTPRoute <lb>: {cluster: weight}, kept by every apply
MCS_FEATURE = "multiclusterservicediscovery"
CONFIG_CRDS = ("gatewayclasses.gateway.networking.k8s.io", "gateways.gateway.networking.k8s.io",
               "httproutes.gateway.networking.k8s.io", "serviceexports.net.gke.io", "serviceimports.net.gke.io")


@dataclass
class Prepared:
    """A checked desired state, what exists of it, and where it goes."""

    model: GatewayModel
    desired: list[Desired]
    clusters: dict[str, Cluster]  # context -> cluster
    config: Cluster
    live: dict[tuple[str, str, str], Obj]  # (context, kind, name) -> live object of ours (or adopted)
    stale: list[tuple[str, Obj]] = field(default_factory=list)  # (context, object) ours and no longer wanted


def _api_error(exc: Any) -> str:
    from gitlab_mci.kube import api_error_message

    return api_error_message(exc)


def read(cluster: Cluster, kind: str, namespace: str, name: str) -> Obj | None:
    """One object as a dict (camelCase, as the API serves it), ``None`` when absent."""
    from kubernetes.client.exceptions import ApiException

    info = KINDS[kind]
    try:
        if kind == "Service":
            found = cluster.call(f"read Service {name}", cluster.core.read_namespaced_service, name, namespace)
            out: Obj = cluster.api.sanitize_for_serialization(found)
            out.setdefault("kind", "Service")
            return out
        got: Obj = cluster.call(f"read {kind}", cluster.custom.get_namespaced_custom_object, info.group,
                                info.version, namespace, info.plural, name)
        return got
    except ApiException as exc:
        if exc.status == 404:
            return None
        raise UserError(f"context {cluster.context!r}: cannot read {kind} {namespace}/{name}: "
                        f"{_api_error(exc)}") from None


def list_ours(cluster: Cluster, kind: str, namespace: str, lb: str) -> list[Obj]:
    from kubernetes.client.exceptions import ApiException

    info = KINDS[kind]
    selector = f"{MANAGED_BY}=gitlab-mci,{LB_LABEL}={lb}"
    try:
        if kind == "Service":
            listed = cluster.call("list Services", cluster.core.list_namespaced_service, namespace,
                                  label_selector=selector)
            return [{**cluster.api.sanitize_for_serialization(s), "kind": "Service"} for s in listed.items]
        items: list[Obj] = cluster.call(f"list {kind}", cluster.custom.list_namespaced_custom_object, info.group,
                                        info.version, namespace, info.plural, label_selector=selector)["items"]
        return [{**o, "kind": kind} for o in items]
    except ApiException as exc:
        if exc.status == 404:
            return []  # no such API (yet): nothing of ours there
        raise UserError(f"context {cluster.context!r}: cannot list {kind}: {_api_error(exc)}") from None


def _crds(cluster: Cluster, names: tuple[str, ...], role: str) -> None:
    from kubernetes import client
    from kubernetes.client.exceptions import ApiException

    api = client.ApiextensionsV1Api(cluster.api)
    for name in names:
        try:
            cluster.call(f"read CRD {name}", api.read_custom_resource_definition, name)
        except ApiException as exc:
            if exc.status != 404:
                raise UserError(f"context {cluster.context!r}: cannot read CRD {name}: {_api_error(exc)}") from None
            hint = ("install the Gateway API on the cluster (gcloud container clusters update … "
                    "--gateway-api=standard)" if "gateway.networking" in name else
                    "enable multi-cluster Services (gitlab-mci fleet enable --features gateway) and wait for GKE "
                    "to install it")
            raise UserError(f"context {cluster.context!r} ({role}) has no CRD {name}: {hint}") from None


def _app_service(clusters: list[tuple[str, Cluster]], namespace: str, name: str, ports: list[Any]) -> AppService:
    from kubernetes.client.exceptions import ApiException

    shapes: dict[str, tuple[Any, ...]] = {}
    for context, cluster in clusters:
        try:
            svc = cluster.call(f"read Service {name}", cluster.core.read_namespaced_service, name, namespace)
        except ApiException as exc:
            if exc.status == 404:
                raise UserError(f"Service {namespace}/{name} (routed to) does not exist in context {context!r}: "
                                "deploy the app there first") from None
            raise UserError(f"context {context!r}: cannot read Service {namespace}/{name}: "
                            f"{_api_error(exc)}") from None
        selector = dict(svc.spec.selector or {})
        if not selector:
            raise UserError(f"Service {namespace}/{name} in context {context!r} has no pod selector: a "
                            "multi-cluster Service needs one")
        shape = tuple(sorted(selector.items())), tuple(
            (p.name, int(p.port), p.target_port if p.target_port is not None else int(p.port), p.protocol or "TCP")
            for p in svc.spec.ports or [])
        shapes[context] = shape
    first_context, first = next(iter(shapes.items()))
    for context, shape in shapes.items():
        if shape != first:
            raise UserError(f"Service {namespace}/{name} differs between contexts {first_context!r} and {context!r} "
                            "(selector or ports); the clusters must serve the same app")
    app = AppService(name, dict(first[0]), tuple(
        {**({"name": n} if n else {}), "port": p, "targetPort": t, "protocol": proto} for n, p, t, proto in first[1]))
    for port in ports:
        if app.port_number(port) is None:
            known = ", ".join(f"{p.get('name', '-')}:{p['port']}" for p in app.ports)
            raise UserError(f"Service {namespace}/{name} has no port {port!r} (it has {known})")
    return app


def owned_by(obj: Obj, lb: str) -> bool:
    labels = (obj.get("metadata") or {}).get("labels") or {}
    return labels.get(MANAGED_BY) == "gitlab-mci" and labels.get(LB_LABEL) == lb


def live_weights(route: Obj | None) -> tuple[dict[str, int], dict[str, int]]:
    """(weights, drained) recorded on a live HTTPRoute."""
    notes = ((route or {}).get("metadata") or {}).get("annotations") or {}
    try:
        weights = {str(k): int(v) for k, v in json.loads(notes.get(WEIGHTS_ANNOTATION) or "{}").items()}
        drained = {str(k): int(v) for k, v in json.loads(notes.get(DRAINED_ANNOTATION) or "{}").items()}
    except (ValueError, AttributeError):
        return {}, {}
    return weights, drained


def _routing(inputs: Inputs) -> tuple[list[str], list[Obj], dict[str, list[Any]]]:
    """(hostnames, HTTPRoute rules, the app Services routed to with their ports), from the routing inputs."""
    from gitlab_mci.hosted.prepare import routing

    if inputs.httproute_file is not None:
        if inputs.ingress is not None:
            raise UserError("give the routing once: --ingress or --httproute-file, not both")
        hostnames, rules = rules_from_httproute(inputs.httproute_file)
    else:
        hostnames, rules = rules_from_ingress(routing(inputs))
    wanted_ports: dict[str, list[Any]] = {}
    for rule in rules:
        for ref in rule.get("backendRefs") or []:
            if "service" in ref:
                wanted_ports.setdefault(ref["service"], []).append(ref["port"])
    return hostnames, rules, wanted_ports


def prepare_export(inputs: Inputs) -> Prepared:
    """One serving cluster's part, for the CI job of its environment: the per-cluster Service and ServiceExport of
    every app Service routed to (what ``prepare`` renders for that cluster), checked and read; nothing else — the
    Gateway, HTTPRoutes and policies are ``apply``'s, and nothing is deleted."""
    from gitlab_mci import kube
    from gitlab_mci.fleet import parse_contexts, resolve_link
    from gitlab_mci.gcp import Compute
    from gitlab_mci.hosted.model import check_namespace
    from gitlab_mci.hosted.prepare import _namespace_exists

    lb = check_name(inputs.lb, "--lb (the Gateway and HTTPRoute name)")
    namespace = check_namespace(inputs.namespace)
    _hostnames, _rules, wanted_ports = _routing(inputs)
    specs = parse_contexts(inputs.contexts)
    if len(specs) > 1:
        raise UserError(f"gateway export writes one cluster's exports: give one --context (got {len(specs)})")
    if inputs.kubeconfig:
        os.environ["KUBECONFIG"] = str(inputs.kubeconfig)
    cluster = kube.connect(specs[0].context if specs else None)  # none given: the kubeconfig's current context
    spec = specs[0] if specs else parse_contexts([cluster.context])[0]
    if not _namespace_exists(cluster, namespace):
        raise UserError(f"namespace {namespace!r} does not exist in context {spec.context!r}: deploy there first")
    _crds(cluster, ("serviceexports.net.gke.io",), "a serving cluster")
    name = resolve_link(spec, cluster, None if spec.link else Compute.from_env(inputs.project)).split("/", 1)[1]
    services = {svc: _app_service([(spec.context, cluster)], namespace, svc, ports)
                for svc, ports in wanted_ports.items()}
    for svc in services:
        check_name(export_name(svc, name), f"the per-cluster Service of {svc} in cluster {name}")
    model = GatewayModel(lb=lb, namespace=namespace, gateway_class=DEFAULT_CLASS,
                         clusters=[Serving(spec.context, name)], services=services, rules=[])
    wanted = [d for d in desired(model, spec.context) if d.obj["kind"] in ("Service", "ServiceExport")]
    live: dict[tuple[str, str, str], Obj] = {}
    for d in wanted:
        found = read(cluster, d.obj["kind"], namespace, d.obj["metadata"]["name"])
        if found is not None and not owned_by(found, lb) and not inputs.adopt:
            raise UserError(f"{d.obj['kind']} {namespace}/{d.obj['metadata']['name']} already exists in context "
                            f"{spec.context!r} and was not created by gitlab-mci for load balancer {lb}; rename ours "
                            "or pass --adopt to take it over")
        if found is not None:
            live[d.key] = found
    return Prepared(model, wanted, {spec.context: cluster}, cluster, live)


def recorded_contexts(route: Obj | None, lb: str) -> list[str]:
    """The contexts of the serving clusters a live HTTPRoute of ours records (``gitlab-mci/clusters``): where its
    exports are, even for a cluster no longer given with --context."""
    if route is None or not owned_by(route, lb):
        return []
    try:
        recorded = json.loads((route["metadata"].get("annotations") or {}).get(CLUSTERS_ANNOTATION) or "{}")
    except ValueError:
        return []
    return sorted({str(c) for c in recorded.values()}) if isinstance(recorded, dict) else []


def prepare(inputs: Inputs, *, progress: Callable[[str], None] | None = None) -> Prepared:
    """Check every input, then read: nothing is written before this returns."""
    from gitlab_mci import kube
    from gitlab_mci.features import exists
    from gitlab_mci.features import sources as features_sources
    from gitlab_mci.fleet import Hub, parse_contexts, resolve_link
    from gitlab_mci.gateway import policies
    from gitlab_mci.gcp import Compute
    from gitlab_mci.hosted.model import check_health_path, check_namespace
    from gitlab_mci.hosted.prepare import (
        _certificate,
        _global_address,
        _split,
        check_config_member,
        check_members,
        config_spec,
    )
    from gitlab_mci.lb.engine import ComputeApi
    from gitlab_mci.lb.inputs import check_resource_name
    from gitlab_mci.nodeport import parallel

    say = progress or (lambda _m: None)
    # --- offline -------------------------------------------------------------------------------------------------
    lb = check_name(inputs.lb, "--lb (the Gateway and HTTPRoute name)")
    check_name(f"{lb}-redirect", "the redirect HTTPRoute")
    namespace = check_namespace(inputs.namespace)
    gateway_class = inputs.gateway_class or DEFAULT_CLASS
    health_path = check_health_path(inputs.health_check_path)
    features = features_sources.gather(inputs.feature_flags, inputs.features_file)
    policies.check(features, inputs.timeout_sec)
    hostnames, rules, wanted_ports = _routing(inputs)
    if inputs.static_ip:
        check_resource_name(inputs.static_ip, "--static-ip")
    certs = _split(inputs.ssl_certificates)
    for cert in certs:
        check_resource_name(cert, "--ssl-certificate")
    if inputs.https_redirect and not certs:
        raise UserError("--https-redirect needs HTTPS: give the certificate(s) with --ssl-certificate")
    if features.get("sslPolicy") and not certs:
        raise UserError(f"sslPolicy (from {features.origin['sslPolicy']}) applies to HTTPS: give the certificate(s) "
                        "with --ssl-certificate")
    if len(certs) > 15:
        raise UserError(f"{len(certs)} certificates: a load balancer serves at most 15")
    specs = parse_contexts(inputs.contexts)
    if not specs:
        raise UserError("no clusters: pass --context for every cluster to serve from (or set MCI_CONTEXTS)")
    config = config_spec(inputs, specs)
    if inputs.kubeconfig:
        os.environ["KUBECONFIG"] = str(inputs.kubeconfig)
    compute = Compute.from_env(inputs.project)

    # --- clusters ------------------------------------------------------------------------------------------------
    all_specs = [*specs, *([config] if config.context not in [s.context for s in specs] else [])]
    contexts = [s.context for s in all_specs]
    connected = dict(zip(contexts, parallel(contexts, kube.connect), strict=True))
    say(f"checking namespace {namespace} in {len(all_specs)} cluster(s)")
    from gitlab_mci.hosted.prepare import _namespace_exists

    present = parallel(all_specs, lambda s: _namespace_exists(connected[s.context], namespace))
    missing = [s.context for s, ok in zip(all_specs, present, strict=True) if not ok]
    if missing:
        raise UserError(f"namespace {namespace!r} does not exist in context {missing[0]!r}; multi-cluster "
                        "Services need the same namespace in the config cluster and every serving cluster "
                        "(namespace sameness): create it or deploy there first")
    links = dict(zip(contexts, parallel(all_specs, lambda s: resolve_link(s, connected[s.context], compute)),
                     strict=True))
    serving = [(s.context, connected[s.context]) for s in specs]
    services = {name: _app_service(serving, namespace, name, ports) for name, ports in wanted_ports.items()}
    cluster_names = {s.context: links[s.context].split("/", 1)[1] for s in specs}
    for name in services:
        for c in cluster_names.values():
            check_name(export_name(name, c), f"the per-cluster Service of {name} in cluster {c}")
    # A GKE Ingress user's BackendConfig (their Service's annotation, as the first cluster has it), which GKE's
    # Gateway controller ignores: what a GCPBackendPolicy can say is carried over, the rest refused by name.
    for name, svc in services.items():
        app = read(serving[0][1], "Service", namespace, name) or {}
        port = svc.port_number(wanted_ports[name][0]) if wanted_ports.get(name) else None
        features = features.merged(features_sources.from_backend_config(
            serving[0][1], namespace, name, dict((app.get("metadata") or {}).get("annotations") or {}), port))
    policies.check(features, inputs.timeout_sec)
    backend_policy = policies.backend_default(features, inputs.timeout_sec)
    gateway_policy = policies.gateway_default(features)

    # --- fleet ---------------------------------------------------------------------------------------------------
    hub = Hub(compute.project)
    members = hub.members()
    member_links = [m.link for m in members if m.link]
    enable_hint = f"with: gitlab-mci fleet enable --features gateway --context {','.join(contexts)} " \
                  f"--config-context {config.context}"
    check_members(specs, links, member_links, compute.project, "", enable_hint)
    if hub.feature_named(MCS_FEATURE) is None:
        raise UserError(f"multi-cluster Services ({MCS_FEATURE}) are not enabled in the fleet of project "
                        f"{compute.project}: a multi-cluster Gateway routes to ServiceImports; enable it {enable_hint}")
    config_membership = hub.config_membership()
    if config_membership is None:
        raise UserError(f"multi-cluster Gateway has no config cluster in the fleet of project {compute.project} "
                        f"(the multiclusteringress feature's config membership); enable it {enable_hint}")
    check_config_member(members, config_membership, config.context, links[config.context], "config cluster",
                        enable_hint)

    # --- CRDs, GatewayClass, ServiceImports ------------------------------------------------------------------------
    cluster = connected[config.context]
    _crds(cluster, CONFIG_CRDS, "the config cluster")
    if health_path:
        _crds(cluster, ("healthcheckpolicies.networking.gke.io",), "the config cluster")
    for context, member in serving:
        if context != config.context:
            _crds(member, ("serviceexports.net.gke.io",), "a serving cluster")
    if backend_policy:
        _crds(cluster, ("gcpbackendpolicies.networking.gke.io",), "the config cluster")
    if gateway_policy:
        _crds(cluster, ("gcpgatewaypolicies.networking.gke.io",), "the config cluster")
    _gateway_class(cluster, gateway_class)
    ours = {export_name(name, c) for name in services for c in cluster_names.values()}
    for rule in rules:
        for ref in rule.get("backendRefs") or []:
            if "service" not in ref and not (ref.get("name") in ours and ref.get("kind") == "ServiceImport"):
                _imported(cluster, namespace, ref)

    # --- Compute -------------------------------------------------------------------------------------------------
    if inputs.static_ip:
        _global_address(compute, inputs.static_ip)
    parallel(list(certs), lambda c: _certificate(compute, c))
    exists.compute_references(ComputeApi(compute), features)

    # --- what exists ---------------------------------------------------------------------------------------------
    live_route = read(cluster, "HTTPRoute", namespace, lb)
    weights, drained = live_weights(live_route if live_route and owned_by(live_route, lb) else None)
    clusters = [Serving(s.context, cluster_names[s.context], weights.get(cluster_names[s.context], 1))
                for s in specs]
    check_weights({c.cluster: c.weight for c in clusters})
    model = GatewayModel(lb=lb, namespace=namespace, gateway_class=gateway_class, clusters=clusters,
                         services=services, rules=rules, hostnames=hostnames, static_ip=inputs.static_ip,
                         pre_shared_certs=certs, https_redirect=inputs.https_redirect,
                         drained={k: v for k, v in drained.items() if k in cluster_names.values()},
                         health_check_path=health_path, backend_policy=backend_policy,
                         gateway_policy=gateway_policy)
    wanted = desired(model, config.context)
    for d in wanted:
        d.obj["metadata"].setdefault("annotations", {})
        if d.obj["kind"] == "HTTPRoute" and d.obj["metadata"]["name"] == lb:
            d.obj["metadata"]["annotations"][WEIGHTS_ANNOTATION] = json.dumps(
                {c.cluster: c.weight for c in clusters}, sort_keys=True)
        if not d.obj["metadata"]["annotations"]:
            del d.obj["metadata"]["annotations"]
        if d.obj["kind"] in ("Gateway", "HTTPRoute", "GCPBackendPolicy", "GCPGatewayPolicy"):
            validate(d.obj, f"{d.obj['kind']} {namespace}/{d.obj['metadata']['name']}")
    live: dict[tuple[str, str, str], Obj] = {}
    for d in wanted:
        found = read(connected[d.context], d.obj["kind"], namespace, d.obj["metadata"]["name"])
        if found is None:
            continue
        if not owned_by(found, lb) and not inputs.adopt:
            labels = (found.get("metadata") or {}).get("labels") or {}
            owner = labels.get(LB_LABEL)
            whose = f"belongs to gitlab-mci load balancer {owner!r}" if owner else "was not created by gitlab-mci"
            raise UserError(f"{d.obj['kind']} {namespace}/{d.obj['metadata']['name']} already exists in context "
                            f"{d.context!r} and {whose}; rename ours or pass --adopt to take it over")
        live[d.key] = found
    _quotas(compute, _needed(wanted, live, lb))
    wanted_keys = {d.key for d in wanted}
    dropped = [c for c in recorded_contexts(live_route, lb) if c not in connected]  # no longer in --context
    if dropped:
        say(f"removing the exports of {', '.join(dropped)} (no longer in --context)")
        connected.update(zip(dropped, parallel(dropped, kube.connect), strict=True))
    stale: list[tuple[str, Obj]] = []
    for context in [*contexts, *dropped]:
        for kind in APPLY_ORDER:
            for obj in list_ours(connected[context], kind, namespace, lb):
                if (context, kind, obj["metadata"]["name"]) not in wanted_keys:
                    stale.append((context, obj))
    return Prepared(model, wanted, connected, cluster, live, stale)


def _refs(route: Obj | None) -> set[str]:
    return {str(ref.get("name")) for rule in ((route or {}).get("spec") or {}).get("rules") or []
            for ref in rule.get("backendRefs") or [] if ref.get("kind") == "ServiceImport"}


def _needed(wanted: list[Desired], live: dict[tuple[str, str, str], Obj], lb: str) -> dict[str, int]:
    """The Compute resources GKE's controller will add for this apply, by quota metric: a backend service and a
    health check per ServiceImport the HTTPRoutes newly route to; a URL map and proxy per listener of a new Gateway."""
    routes = [d for d in wanted if d.obj["kind"] == "HTTPRoute"]
    new_refs: set[str] = set()
    for d in routes:
        new_refs |= _refs(d.obj) - _refs(live.get(d.key))
    need = {"BACKEND_SERVICES": len(new_refs), "HEALTH_CHECKS": len(new_refs)}
    gateway = next(d for d in wanted if d.obj["kind"] == "Gateway")
    if gateway.key not in live:
        protocols = [str(lst.get("protocol")) for lst in gateway.obj["spec"]["listeners"]]
        need.update(URL_MAPS=len(protocols), TARGET_HTTP_PROXIES=protocols.count("HTTP"),
                    TARGET_HTTPS_PROXIES=protocols.count("HTTPS"))
    return {metric: n for metric, n in need.items() if n}


def _quotas(compute: Any, need: dict[str, int]) -> None:
    """The project's Compute quotas (projects.get) leave room for what GKE's controller will build: it would fail
    half-way, in a Warning event, long after apply returned."""
    from gitlab_mci.compute_rest import ComputeApiError

    if not need:
        return
    try:
        project = compute.rest.request("GET", compute.project)
    except ComputeApiError as exc:
        raise UserError(f"cannot read the quotas of project {compute.project}: {exc}") from None
    for quota in project.get("quotas") or []:
        metric = str(quota.get("metric"))
        limit, usage = float(quota.get("limit") or 0), float(quota.get("usage") or 0)
        if metric in need and usage + need[metric] > limit:
            raise UserError(f"quota {metric} of project {compute.project}: {usage:g} of {limit:g} used, and the "
                            f"Gateway needs {need[metric]} more (GKE's controller builds one per listener or per "
                            "cluster's export); raise the quota or free some first")


def _gateway_class(cluster: Cluster, name: str) -> None:
    from kubernetes.client.exceptions import ApiException

    try:
        found = cluster.call("read GatewayClass", cluster.custom.get_cluster_custom_object,
                             "gateway.networking.k8s.io", "v1", "gatewayclasses", name)
    except ApiException as exc:
        if exc.status != 404:
            raise UserError(f"context {cluster.context!r}: cannot read GatewayClass {name}: "
                            f"{_api_error(exc)}") from None
        try:
            listed = cluster.call("list GatewayClasses", cluster.custom.list_cluster_custom_object,
                                  "gateway.networking.k8s.io", "v1", "gatewayclasses")
            known = sorted(o["metadata"]["name"] for o in listed.get("items") or [] if o["metadata"]["name"]
                           .endswith("-mc"))
        except ApiException:
            known = []
        raise UserError(f"GatewayClass {name!r} does not exist in the config cluster (context {cluster.context!r}); "
                        f"multi-cluster classes there: {', '.join(known) or 'none (is multi-cluster Gateway enabled?)'}"
                        ) from None
    if not str(name).endswith("-mc"):
        raise UserError(f"GatewayClass {name!r} is a single-cluster class; a Gateway over several clusters needs a "
                        f"multi-cluster one (…-mc), e.g. {DEFAULT_CLASS}")
    del found


def _imported(cluster: Cluster, namespace: str, ref: Obj) -> None:
    """A backendRef the user gave as it is: a ServiceImport that some member exports."""
    name = str(ref.get("name"))
    if ref.get("group") != "net.gke.io" or ref.get("kind") != "ServiceImport":
        raise UserError(f"backendRef {ref.get('kind')} {name} (group {ref.get('group', '')!r}): a multi-cluster "
                        "Gateway routes to Services (rewritten per cluster) or ServiceImports (group net.gke.io)")
    if read(cluster, "ServiceImport", str(ref.get("namespace", namespace)), name) is None:
        raise UserError(f"backendRef ServiceImport {namespace}/{name}: no ServiceImport in the config cluster: the "
                        f"Service {name} is not exported (no ServiceExport {name} in any member cluster)")
