"""From flags (and the Ingress's annotations) to a checked desired state, reading before anything is written.

Order matters for safety: every input that can be checked offline (names, files, certificates, routing) is checked
first; then the clusters and Compute are read (discovery, TLS Secrets, pre-shared certificates); only then may the
caller write. Nothing here writes.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gitlab_mci.errors import UserError
from gitlab_mci.features.sources import Flags
from gitlab_mci.lb.certs import Certificates, PemPair, from_files, from_secret, parse_list

if TYPE_CHECKING:
    from gitlab_mci.features.model import Features
    from gitlab_mci.ingress import IngressModel
    from gitlab_mci.kube import Cluster
    from gitlab_mci.lb import desired as desired_mod
    from gitlab_mci.lb.desired import Desired
    from gitlab_mci.lb.discovery import ClusterInfo
    from gitlab_mci.lb.engine import Actual, ComputeApi
    from gitlab_mci.lb.negs import Waited

# Annotations GKE's own Ingress controller (and kubemci) read; honoured when the flag is not given.
STATIC_IP_ANNOTATION = "kubernetes.io/ingress.global-static-ip-name"
PRE_SHARED_ANNOTATIONS = ("ingress.gcp.kubernetes.io/pre-shared-cert", "networking.gke.io/pre-shared-certs")
ALLOW_HTTP_ANNOTATION = "kubernetes.io/ingress.allow-http"


@dataclass
class Inputs:
    """Everything the user gave, as given (strings from flags or environment variables)."""

    lb: str
    contexts: Sequence[str] = ()
    ingress: Path | None = None
    service: str | None = None
    port: str = "5000"
    namespace: str = "default"
    project: str | None = None
    static_ip: str | None = None
    scheme: str = "EXTERNAL_MANAGED"
    health_check_path: str | None = None
    check_interval_sec: int = 5
    unhealthy_threshold: int = 2
    timeout_sec: int = 30
    balancing_mode: str | None = None  # UTILIZATION with instance groups, RATE with NEGs
    http: bool | None = None  # None: on, unless the Ingress says kubernetes.io/ingress.allow-http: "false"
    https_redirect: bool = False
    ssl_certificates: Sequence[str] = ()
    certificate_file: Path | None = None
    key_file: Path | None = None
    tls_secrets: Sequence[str] = ()
    managed_domains: Sequence[str] = ()
    kubeconfig: Path | None = None
    backends: str = "instance-groups"  # or "neg"
    neg_timeout: float = 300.0  # how long to wait for GKE's NEG controller (--timeout)
    progress: Callable[[str], None] | None = None  # slow waits say what they wait for (stderr)
    feature_flags: Flags = field(default_factory=Flags)  # production options (docs/features.md)
    features_file: Path | None = None


@dataclass
class Prepared:
    """A checked desired state and the clients to reach it."""

    desired: Desired
    api: ComputeApi
    clusters: list[ClusterInfo]
    named: Future[dict[str, dict[str, Any]]] | None = None  # read_named, started while the clusters were read
    neg_wait: Waited | None = None  # with --backends neg: how long the NEGs took to be ready

    def read_actual(self) -> Actual:
        """The load balancer as it is; the instance groups discovery already read are not read again."""
        from gitlab_mci.lb.engine import read_actual

        known = {url: data for c in self.clusters for url, data in c.group_json.items()}
        named, self.named = (self.named.result() if self.named is not None else None), None
        return read_actual(self.api, self.desired, known, named=named)


def split_contexts(values: Sequence[str]) -> list[str]:
    return list(parse_list(values))


def routing(inputs: Inputs) -> IngressModel:
    from gitlab_mci.ingress import from_inputs

    return from_inputs(inputs.ingress, inputs.service, inputs.port, inputs.lb)


def _certificate_files(inputs: Inputs) -> tuple[PemPair, ...]:
    if (inputs.certificate_file is None) != (inputs.key_file is None):
        raise UserError("--certificate-file and --key-file go together")
    if inputs.certificate_file is None or inputs.key_file is None:
        return ()
    return (from_files(inputs.certificate_file, inputs.key_file),)


def _tls_secret(cluster: Cluster, namespace: str, name: str) -> PemPair:
    from kubernetes.client.exceptions import ApiException

    from gitlab_mci.kube import api_error_message

    where = f"Secret {namespace}/{name} in context {cluster.context!r}"
    try:
        secret = cluster.call(f"read {where}", cluster.core.read_namespaced_secret, name, namespace)
    except ApiException as exc:
        if exc.status == 404:
            raise UserError(f"{where} not found (give the TLS Secret's name with --tls-secret)") from None
        raise UserError(f"{where}: {api_error_message(exc)}") from None
    return from_secret(secret.data, where)


def prepare(inputs: Inputs) -> Prepared:
    """Check every input, then read the clusters and Compute: nothing is written before this returns."""
    from gitlab_mci import kube
    from gitlab_mci.features import compute as features_compute
    from gitlab_mci.features import sources as features_sources
    from gitlab_mci.gcp import Compute
    from gitlab_mci.lb import desired as desired_mod
    from gitlab_mci.lb.discovery import discover
    from gitlab_mci.lb.engine import ComputeApi, read_named
    from gitlab_mci.lb.names import Namer, check_lb_name
    from gitlab_mci.nodeport import parallel

    check_lb_name(inputs.lb)
    model = routing(inputs)
    notes = model.annotations
    contexts = split_contexts(inputs.contexts)
    if not contexts:
        raise UserError("no clusters: pass --context for every production cluster (or set MCI_CONTEXTS)")
    static_ip = inputs.static_ip or notes.get(STATIC_IP_ANNOTATION) or None
    pre_shared = parse_list([*inputs.ssl_certificates, *(notes.get(a, "") for a in PRE_SHARED_ANNOTATIONS)])
    http = inputs.http if inputs.http is not None else notes.get(ALLOW_HTTP_ANNOTATION, "true").lower() != "false"
    pairs = _certificate_files(inputs)
    secret_names = parse_list([*inputs.tls_secrets, *model.tls_secrets])
    # Certificates known offline are checked now; TLS Secrets after connecting (below), before any write.
    offline = Certificates(pre_shared, pairs, parse_list(inputs.managed_domains))
    if static_ip is not None:
        check_resource_name(static_ip, "--static-ip")
    # The options of flags and file, checked offline (the cluster's BackendConfig/FrontendConfig come later).
    given = features_sources.gather(inputs.feature_flags, inputs.features_file)
    features_compute.check_scheme(given, inputs.scheme)
    if inputs.kubeconfig:
        os.environ["KUBECONFIG"] = str(inputs.kubeconfig)
    compute = Compute.from_env(inputs.project)
    options = desired_mod.Options(
        lb=inputs.lb, project=compute.project, scheme=inputs.scheme, static_ip=static_ip,
        health_check_path=inputs.health_check_path, timeout_sec=inputs.timeout_sec,
        balancing_mode=inputs.balancing_mode or ("RATE" if inputs.backends == "neg" else "UTILIZATION"),
        backends=inputs.backends, http=http or bool(secret_names),
        https_redirect=inputs.https_redirect and not secret_names, certificates=offline,
        check_interval_sec=inputs.check_interval_sec, unhealthy_threshold=inputs.unhealthy_threshold)
    api = ComputeApi(compute)
    # What exists under this load balancer's names does not depend on the clusters: read it (nine lists) while
    # they are read, instead of after. Reads only; a failure is raised when the result is used.
    prefetch = ThreadPoolExecutor(max_workers=1)
    named = prefetch.submit(read_named, api, Namer(inputs.lb, options.prefix))
    prefetch.shutdown(wait=False)
    clusters = parallel(contexts, kube.connect)
    if secret_names:
        # Like GKE's Ingress controller, the TLS Secrets are read from the first cluster.
        pairs += tuple(_tls_secret(clusters[0], inputs.namespace, n) for n in secret_names)
        options = replace(options, http=http, https_redirect=inputs.https_redirect,
                          certificates=Certificates(pre_shared, pairs, offline.managed_domains))
    infos = discover(clusters, compute, inputs.namespace, sorted({b.service for b in model.backends()}))
    # Options checked before the NEG wait, so a bad one fails fast.
    options = _with_features(options, given, model, clusters[0], inputs, api)
    waited = None
    if options.backends == "neg":
        from gitlab_mci.lb import negs

        wanted = list(dict.fromkeys(negs.Wanted(b.service, negs.service_port(infos, b.service, b.port))
                                    for b in model.backends()))
        waited = negs.Waited()
        infos = negs.wait_for_negs(clusters, infos, compute, inputs.namespace, wanted, timeout=inputs.neg_timeout,
                                   progress=inputs.progress, waited=waited)
    desired = desired_mod.build(model, options, infos)
    for name in pre_shared:
        if api.get("sslCertificates", name) is None:
            raise UserError(f"pre-shared certificate {name!r} not found in project {compute.project}")
    return Prepared(desired, api, infos, named, waited)


def _with_features(options: desired_mod.Options, given: Features, model: IngressModel, cluster: Cluster,
                   inputs: Inputs, api: ComputeApi) -> desired_mod.Options:
    """The options with what the user's GKE annotations say (read from the first cluster, like their TLS Secrets),
    each checked against the scheme and against what exists. Reads only."""
    from gitlab_mci.features import compute as features_compute
    from gitlab_mci.features import exists
    from gitlab_mci.features import sources as features_sources
    from gitlab_mci.features.model import Features

    frontend_config = features_sources.from_frontend_config(cluster, inputs.namespace, model.annotations)
    everything = given.merged(frontend_config)
    backend, frontend = features_sources.split(everything)
    per_service: dict[str, Features] = {}
    for b in model.backends():
        if b.service in per_service:
            continue
        svc = _service(cluster, inputs.namespace, b.service)
        annotations = dict(((svc.get("metadata") or {}).get("annotations") or {}) if svc is not None else {})
        port = svc_port(svc, b.port) if svc is not None else None
        per_service[b.service] = features_sources.from_backend_config(cluster, inputs.namespace, b.service,
                                                                      annotations, port)
    if (frontend.get("sslPolicy") or frontend.get("quicOverride")) and not (options.https or
                                                                            frontend.get("certificateMap")):
        key = "sslPolicy" if frontend.get("sslPolicy") else "quicOverride"
        raise UserError(f"{key} (from {frontend.origin[key]}) applies to the HTTPS proxy: give a certificate "
                        "(--ssl-certificate, --tls-secret, --managed-domain, --certificate-file) or a certificate map")
    for service_features in [Features(), *per_service.values()]:
        combined = everything.merged(service_features)  # a flag and a BackendConfig that disagree: both named
        features_compute.check_scheme(combined, options.scheme)
        exists.compute_references(api, combined)
    exists.certificate_map(api, frontend)
    iap = None
    for service_features in [Features(), *per_service.values()]:
        # One OAuth client per load balancer (a Secret named by the flags, the file or a Service's BackendConfig).
        iap = iap or exists.iap_client(cluster, inputs.namespace, everything.merged(service_features),
                                       inputs.feature_flags.iap_client_file)
    return replace(options, features=backend, service_features=per_service, frontend=frontend, iap=iap)


def _service(cluster: Cluster, namespace: str, name: str) -> dict[str, Any] | None:
    from gitlab_mci.features.sources import raw_get

    # Missing: said by desired.build, with every cluster's view.
    return raw_get(cluster, f"Service {namespace}/{name}", f"/api/v1/namespaces/{namespace}/services/{name}")


def svc_port(svc: dict[str, Any], wanted: int | str) -> int | None:
    for p in (svc.get("spec") or {}).get("ports") or []:
        if wanted in (p.get("port"), p.get("name")) or str(p.get("port")) == str(wanted):
            return int(p["port"])
    return None


def check_resource_name(name: str, flag: str) -> str:
    import re

    if not re.match(r"^[a-z]([-a-z0-9]{0,61}[a-z0-9])?$", name):
        raise UserError(f"{flag} {name!r} is not a valid Compute resource name (lowercase letters, digits, "
                        "hyphens; at most 63 characters)")
    return name
