"""Check every input, then read the clusters, the fleet and Compute: nothing is written before :func:`prepare` returns.

Checks, in order: names (no ``mci-``, GKE's prefix), routing, certificates and static IP name offline; then the
namespace in the config cluster and in every selected cluster ("namespace sameness"), the backend Services (same
selector and ports everywhere), the Ingress's TLS Secrets in the config cluster, fleet membership of every cluster
link and the config membership, the static IP and pre-shared certificates in Compute, GKE's quotas, and objects
with our names that gitlab-mci did not create.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from gitlab_mci.errors import UserError
from gitlab_mci.hosted.manifests import KINDS, desired
from gitlab_mci.hosted.model import (
    LB_LABEL,
    MANAGED_BY,
    STATIC_IP,
    HostedModel,
    Inputs,
    McsModel,
    ServicePort,
    check_health_path,
    check_http,
    check_namespace,
    check_object_name,
)

if TYPE_CHECKING:
    from gitlab_mci.fleet import ContextSpec
    from gitlab_mci.gcp import Compute
    from gitlab_mci.ingress import IngressModel
    from gitlab_mci.kube import Cluster

Obj = dict[str, Any]
# GKE quotas (https://cloud.google.com/kubernetes-engine/docs/concepts/multi-cluster-ingress#quotas).
MAX_MCI = 100
MAX_MCS = 100
STATIC_IP_NAME_ANNOTATION = "kubernetes.io/ingress.global-static-ip-name"
PRE_SHARED_ANNOTATIONS = ("ingress.gcp.kubernetes.io/pre-shared-cert", "networking.gke.io/pre-shared-certs")


@dataclass
class Prepared:
    """A checked desired state, what exists of it, and where it goes."""

    model: HostedModel
    desired: list[Obj]
    config: Cluster
    live: dict[tuple[str, str], Obj]  # (kind, name) -> live object of ours (or adopted) in the namespace
    stale: list[Obj]  # objects labelled for this load balancer that are no longer wanted
    links: dict[str, str] = field(default_factory=dict)  # context -> fleet link
    members: list[str] = field(default_factory=list)


def routing(inputs: Inputs) -> IngressModel:
    from gitlab_mci.ingress import from_inputs

    return from_inputs(inputs.ingress, inputs.service, inputs.port, inputs.lb)


def _split(values: Any) -> tuple[str, ...]:
    out: list[str] = []
    for v in values:
        for item in str(v).split(","):
            if item.strip() and item.strip() not in out:
                out.append(item.strip())
    return tuple(out)


def check_members(specs: list[ContextSpec], links: dict[str, str], member_links: list[str], project: str,
                  listing: str, hint: str) -> None:
    """Every --context cluster is a fleet member."""
    for s in specs:
        link = links[s.context]
        if link not in member_links:
            raise UserError(f"--context {s.context}: cluster link {link!r} is not a member of the fleet of project "
                            f"{project}{listing}; register it {hint}")


def check_config_member(members: list[Any], config_membership: str, context: str, link: str, what: str,
                        hint: str) -> None:
    """The fleet's config membership is the --config-context cluster."""
    from gitlab_mci.fleet import same_membership

    config_member = next((m for m in members if same_membership(m.name, config_membership)), None)
    if config_member is None or config_member.link != link:
        actual = config_member.link if config_member else config_membership
        raise UserError(f"--config-context {context} is cluster {link}, but the fleet's {what} is {actual}; point "
                        f"--config-context at it, or change it {hint}")


def config_spec(inputs: Inputs, specs: list[ContextSpec]) -> ContextSpec:
    from gitlab_mci.fleet import parse_context

    if inputs.config_context:
        given = parse_context(inputs.config_context)
        return next((s for s in specs if s.context == given.context and given.link is None), given)
    if not specs:
        raise UserError("no clusters: pass --context for every cluster to serve from (or set MCI_CONTEXTS)")
    return specs[0]


def _api_error(exc: Any) -> str:
    from gitlab_mci.kube import api_error_message

    return api_error_message(exc)


def _namespace_exists(cluster: Cluster, namespace: str) -> bool:
    from kubernetes.client.exceptions import ApiException

    try:
        cluster.call(f"read namespace {namespace}", cluster.core.read_namespace, namespace)
    except ApiException as exc:
        if exc.status == 404:
            return False
        raise UserError(f"context {cluster.context!r}: cannot read namespace {namespace}: {_api_error(exc)}") from None
    return True


def _service(cluster: Cluster, namespace: str, name: str) -> Any:
    from kubernetes.client.exceptions import ApiException

    try:
        return cluster.call(f"read Service {name}", cluster.core.read_namespaced_service, name, namespace)
    except ApiException as exc:
        if exc.status == 404:
            raise UserError(f"Service {namespace}/{name} (routed to by the Ingress) does not exist in context "
                            f"{cluster.context!r}: deploy the app there first") from None
        raise UserError(f"context {cluster.context!r}: cannot read Service {namespace}/{name}: "
                        f"{_api_error(exc)}") from None


def _mcs_from_services(name: str, found: list[tuple[str, Any]], ports_wanted: list[int | str],
                       namespace: str) -> McsModel:
    shapes = {}
    for context, svc in found:
        selector = tuple(sorted((svc.spec.selector or {}).items()))
        ports = tuple(ServicePort(p.name, int(p.port), p.target_port if p.target_port is not None else int(p.port),
                                  p.protocol or "TCP") for p in svc.spec.ports or [])
        if not selector:
            raise UserError(f"Service {namespace}/{name} in context {context!r} has no pod selector: a "
                            "MultiClusterService needs one (the Auto DevOps chart selects app, tier, track)")
        shapes[context] = (selector, ports)
    first_context, first = next(iter(shapes.items()))
    for context, shape in shapes.items():
        if shape != first:
            raise UserError(f"Service {namespace}/{name} differs between contexts {first_context!r} and "
                            f"{context!r} (selector or ports); a MultiClusterService needs one shape")
    mcs = McsModel(name, first[0], first[1])
    for port in ports_wanted:
        if mcs.port_number(port) is None:
            known = ", ".join(f"{p.name or '-'}:{p.port}" for p in mcs.ports)
            raise UserError(f"Service {namespace}/{name} has no port {port!r} (it has {known})")
    return mcs


def _global_address(compute: Compute, name: str) -> str:
    from gitlab_mci.compute_rest import ComputeApiError
    from gitlab_mci.gcp import retry_transient

    try:
        address = retry_transient(lambda: compute.rest.get_or_none(f"global/addresses/{name}"))
    except ComputeApiError as exc:
        raise UserError(f"--static-ip {name!r}: cannot read it: {exc.message}") from None
    if address is None:
        raise UserError(f"--static-ip {name!r}: no global address of that name in project {compute.project} "
                        f"(reserve one: gcloud compute addresses create {name} --global)")
    return str(address.get("address", ""))


def _address_with_ip(compute: Compute, ip: str) -> None:
    from gitlab_mci.compute_rest import ComputeApiError
    from gitlab_mci.gcp import retry_transient

    try:
        listed = retry_transient(lambda: compute.rest.list("global/addresses", filter=f'address="{ip}"'))
    except ComputeApiError as exc:
        raise UserError(f"{STATIC_IP} {ip}: cannot list the global addresses: {exc.message}") from None
    if not any(a.get("address") == ip for a in listed):
        raise UserError(f"{STATIC_IP} {ip}: no reserved global address has this IP in project {compute.project}; "
                        "HTTPS with Multi Cluster Ingress needs a reserved static IP")


def _certificate(compute: Compute, name: str) -> None:
    from gitlab_mci.compute_rest import ComputeApiError
    from gitlab_mci.gcp import retry_transient

    try:
        found = retry_transient(lambda: compute.rest.get_or_none(f"global/sslCertificates/{name}"))
    except ComputeApiError as exc:
        raise UserError(f"pre-shared certificate {name!r}: cannot read it: {exc.message}") from None
    if found is None:
        raise UserError(f"pre-shared certificate {name!r} not found in project {compute.project}")


def _tls_secret(cluster: Cluster, namespace: str, name: str) -> None:
    """The Ingress's ``spec.tls`` Secret, where GKE's Multi Cluster Ingress reads it: the config cluster, in the
    app's namespace; a valid certificate and key (never printed)."""
    from kubernetes.client.exceptions import ApiException

    from gitlab_mci.lb.certs import from_secret

    where = f"Secret {namespace}/{name} (spec.tls of the Ingress) in the config cluster, context {cluster.context!r}"
    try:
        secret = cluster.call(f"read Secret {namespace}/{name}", cluster.core.read_namespaced_secret, name, namespace)
    except ApiException as exc:
        if exc.status == 404:
            raise UserError(f"{where}, does not exist: Multi Cluster Ingress reads TLS Secrets from the config "
                            "cluster; create it there, in the same namespace") from None
        raise UserError(f"{where}: {_api_error(exc)}") from None
    from_secret(secret.data, where)


def list_objects(cluster: Cluster, kind: str, namespace: str | None, label_selector: str | None = None) -> list[Obj]:
    from kubernetes.client.exceptions import ApiException

    info = KINDS[kind]
    try:
        if namespace is None:
            listed = cluster.call(f"list {kind}", cluster.custom.list_cluster_custom_object, info.group,
                                  info.version, info.plural, label_selector=label_selector or "")
        else:
            listed = cluster.call(f"list {kind}", cluster.custom.list_namespaced_custom_object, info.group,
                                  info.version, namespace, info.plural, label_selector=label_selector or "")
    except ApiException as exc:
        if exc.status == 404:
            raise UserError(f"context {cluster.context!r} has no {kind} API ({info.api_version}): is it the fleet's "
                            "config cluster, with Multi Cluster Ingress enabled (gitlab-mci fleet enable)?") from None
        raise UserError(f"context {cluster.context!r}: cannot list {kind}: {_api_error(exc)}") from None
    items: list[Obj] = listed.get("items") or []
    return items


def owned_by(obj: Obj, lb: str) -> bool:
    labels = (obj.get("metadata") or {}).get("labels") or {}
    return labels.get(MANAGED_BY) == "gitlab-mci" and labels.get(LB_LABEL) == lb


def prepare(inputs: Inputs, *, progress: Callable[[str], None] | None = None) -> Prepared:
    """Check every input, then read: nothing is written before this returns."""
    from gitlab_mci import kube
    from gitlab_mci.features import exists
    from gitlab_mci.features import hosted as features_hosted
    from gitlab_mci.features import sources as features_sources
    from gitlab_mci.features.model import Features
    from gitlab_mci.fleet import MAX_CLUSTERS, Hub, parse_contexts, resolve_link
    from gitlab_mci.gcp import Compute
    from gitlab_mci.lb.engine import ComputeApi
    from gitlab_mci.lb.inputs import check_resource_name
    from gitlab_mci.nodeport import parallel

    say = progress or (lambda _m: None)
    # --- offline -------------------------------------------------------------------------------------------------
    lb = check_object_name(inputs.lb, "--lb (the MultiClusterIngress name)")
    namespace = check_namespace(inputs.namespace)
    model_routing = routing(inputs)
    notes = model_routing.annotations
    backends = model_routing.backends()
    for b in backends:
        check_object_name(b.service, "backend Service (the MultiClusterService name)")
    static_ip_name = inputs.static_ip or notes.get(STATIC_IP_NAME_ANNOTATION) or None
    static_ip_literal = None if static_ip_name else notes.get(STATIC_IP)
    if static_ip_name:
        check_resource_name(static_ip_name, "--static-ip")
    certs = _split([*inputs.ssl_certificates, *(notes.get(a, "") for a in PRE_SHARED_ANNOTATIONS)])
    for cert in certs:
        check_resource_name(cert, "--ssl-certificate")
    secrets = model_routing.tls_secrets
    check_http(notes, inputs.https_redirect)
    if inputs.https_redirect and not certs and not secrets:
        raise UserError("--https-redirect needs HTTPS: give the certificate(s) with --ssl-certificate (or a TLS "
                        "Secret in the Ingress's spec.tls)")
    if len(certs) + len(secrets) > 15:
        raise UserError(f"{len(certs) + len(secrets)} certificates: a load balancer serves at most 15")
    health_path = check_health_path(inputs.health_check_path)
    # Production options of flags and file, checked offline; the user's GKE annotations are read below.
    given = features_sources.gather(inputs.feature_flags, inputs.features_file)
    features_hosted.check(given)
    specs = parse_contexts(inputs.contexts)
    config = config_spec(inputs, specs)
    if not specs:
        raise UserError("no clusters: pass --context for every cluster to serve from (or set MCI_CONTEXTS)")
    if len(specs) > MAX_CLUSTERS:
        raise UserError(f"{len(specs)} clusters: Multi Cluster Ingress supports at most {MAX_CLUSTERS} per project")
    if inputs.kubeconfig:
        os.environ["KUBECONFIG"] = str(inputs.kubeconfig)
    compute = Compute.from_env(inputs.project)

    # --- clusters ------------------------------------------------------------------------------------------------
    all_specs = [*specs, *([config] if config.context not in [s.context for s in specs] else [])]
    connected = dict(zip([s.context for s in all_specs], parallel([s.context for s in all_specs], kube.connect),
                         strict=True))
    say(f"checking namespace {namespace} in {len(all_specs)} cluster(s)")
    present = parallel(all_specs, lambda s: _namespace_exists(connected[s.context], namespace))
    missing = [s.context for s, ok in zip(all_specs, present, strict=True) if not ok]
    if missing:
        role = "the config cluster" if missing[0] == config.context else "a selected cluster"
        raise UserError(f"namespace {namespace!r} does not exist in context {missing[0]!r} ({role}); Multi Cluster "
                        "Ingress needs the same namespace in the config cluster and every selected cluster "
                        "(namespace sameness): create it or deploy there first")
    for secret in secrets:
        _tls_secret(connected[config.context], namespace, secret)
    links_list = parallel(all_specs, lambda s: resolve_link(s, connected[s.context], compute))
    links = dict(zip([s.context for s in all_specs], links_list, strict=True))
    serving = list(dict.fromkeys(links[s.context] for s in specs))

    backend_configs: dict[str, Features] = {}

    def read_services(name: str) -> McsModel:
        found = parallel(specs, lambda s: (s.context, _service(connected[s.context], namespace, name)))
        wanted = [b.port for b in backends if b.service == name]
        mcs = _mcs_from_services(name, found, wanted, namespace)
        # A GKE Ingress user's BackendConfig, named by their Service's annotation, as the first cluster has it.
        context, svc = found[0]
        port = mcs.port_number(wanted[0]) if wanted else None
        backend_configs[name] = features_sources.from_backend_config(
            connected[context], namespace, name, dict(svc.metadata.annotations or {}), port)
        return mcs

    mcs = tuple(read_services(n) for n in dict.fromkeys(b.service for b in backends))
    features = given.merged(features_sources.from_frontend_config(connected[config.context], namespace, notes))
    for found_features in backend_configs.values():
        features = features.merged(found_features)  # one BackendConfig for all: they must agree
    features_hosted.check(features)
    backend_features, frontend_features = features_sources.split(features)
    if backend_features.get("iap"):
        # GKE reads the OAuth client's Secret from the config cluster; its values are never read here.
        exists.iap_client(connected[config.context], namespace, backend_features)

    # --- fleet ---------------------------------------------------------------------------------------------------
    hub = Hub(compute.project)
    members = hub.members()
    member_links = [m.link for m in members if m.link]
    enable_hint = f"with: gitlab-mci fleet enable --context {','.join(s.context for s in specs)} " \
                  f"--config-context {config.context}"
    check_members(specs, links, member_links, compute.project,
                  f" (members: {', '.join(sorted(member_links)) or 'none'})", enable_hint)
    config_membership = hub.config_membership()
    if config_membership is None:
        raise UserError(f"Multi Cluster Ingress is not enabled in the fleet of project {compute.project}; "
                        f"enable it {enable_hint}")
    check_config_member(members, config_membership, config.context, links[config.context],
                        "Multi Cluster Ingress config cluster", enable_hint)
    selection = None if sorted(serving) == sorted(set(member_links)) else tuple(serving)

    # --- Compute -------------------------------------------------------------------------------------------------
    address = _global_address(compute, static_ip_name) if static_ip_name else static_ip_literal
    if static_ip_literal:
        _address_with_ip(compute, static_ip_literal)
    parallel(list(certs), lambda c: _certificate(compute, c))
    exists.compute_references(ComputeApi(compute), features)
    if frontend_features.get("sslPolicy") and not certs and not secrets:
        raise UserError(f"sslPolicy (from {frontend_features.origin['sslPolicy']}) applies to HTTPS: give a "
                        "certificate with --ssl-certificate (or a TLS Secret in the Ingress's spec.tls)")

    model = HostedModel(lb=lb, namespace=namespace, routing=model_routing, mcs=mcs, links=selection,
                        static_ip_address=address, pre_shared_certs=certs, tls_secrets=secrets,
                        https_redirect=inputs.https_redirect,
                        health_check_path=health_path, notes=notes, features=backend_features,
                        frontend=frontend_features)
    wanted = desired(model)

    # --- the config cluster: quotas, collisions, what exists -------------------------------------------------------
    cluster = connected[config.context]
    mcis = list_objects(cluster, "MultiClusterIngress", None)
    mcss = list_objects(cluster, "MultiClusterService", None)
    others = {kind: list_objects(cluster, kind, namespace) for kind in ("BackendConfig", "FrontendConfig")}

    def key(o: Obj) -> tuple[str, str]:
        return (o["metadata"].get("namespace", ""), o["metadata"]["name"])

    wanted_keys = {(o["kind"], o["metadata"]["name"]) for o in wanted}
    new_mci = 0 if (namespace, lb) in {key(o) for o in mcis} else 1
    if len(mcis) + new_mci > MAX_MCI:
        raise UserError(f"{len(mcis)} MultiClusterIngress objects exist in the config cluster: GKE allows "
                        f"{MAX_MCI} per project")
    new_mcs = len([m for m in mcs if (namespace, m.name) not in {key(o) for o in mcss}])
    if len(mcss) + new_mcs > MAX_MCS:
        raise UserError(f"{len(mcss)} MultiClusterService objects exist in the config cluster and {new_mcs} more "
                        f"are needed: GKE allows {MAX_MCS} per project")
    in_namespace = [*(o for o in mcis if key(o)[0] == namespace), *(o for o in mcss if key(o)[0] == namespace),
                    *others["BackendConfig"], *others["FrontendConfig"]]
    live: dict[tuple[str, str], Obj] = {}
    stale: list[Obj] = []
    for obj in in_namespace:
        k = (obj["kind"], obj["metadata"]["name"])
        labels = obj["metadata"].get("labels") or {}
        if k in wanted_keys:
            if not owned_by(obj, lb) and not inputs.adopt:
                owner = labels.get(LB_LABEL)
                whose = f"belongs to gitlab-mci load balancer {owner!r}" if labels.get(MANAGED_BY) == "gitlab-mci" \
                    and owner else "was not created by gitlab-mci"
                raise UserError(f"{k[0]} {namespace}/{k[1]} already exists in context {cluster.context!r} and {whose}"
                                "; rename ours or pass --adopt to take it over")
            live[k] = obj
        elif owned_by(obj, lb):
            stale.append(obj)
    return Prepared(model, wanted, cluster, live, stale, links, sorted(set(member_links)))
