"""The GKE fleet (GKE Hub): which clusters are members, which one is the Multi Cluster Ingress config cluster.

- :func:`parse_context` / :func:`resolve_links` turn ``--context`` values into fleet links ``<location>/<name>`` (the
  form ``MultiClusterService.spec.clusters`` uses): given as ``CONTEXT=LOCATION/NAME``, read from a gcloud-made
  context name ``gke_PROJECT_LOCATION_NAME``, or found from the cluster itself (a Node's ``providerID`` names its
  Compute instance, whose ``cluster-name`` / ``cluster-location`` metadata GKE sets).
- :class:`Hub` wraps ``google-cloud-gke-hub`` (REST transport; ``GITLAB_MCI_GKEHUB_ENDPOINT`` points it at the
  simulator, like ``GITLAB_MCI_COMPUTE_ENDPOINT`` for Compute).
- :func:`plan_enable` / :func:`apply_enable`: ``gitlab-mci fleet enable`` — a membership per cluster and the
  ``multiclusteringress`` feature with the chosen config membership, idempotent.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from gitlab_mci.errors import UserError

if TYPE_CHECKING:
    from gitlab_mci.gcp import Compute
    from gitlab_mci.kube import Cluster

DEFAULT_ENDPOINT = "https://gkehub.googleapis.com"
FEATURE = "multiclusteringress"
LINK_RE = re.compile(r"^(?P<location>[a-z]+-[a-z]+[0-9]+(?:-[a-z])?)/(?P<name>[a-z]([-a-z0-9]{0,38}[a-z0-9])?)$")
_GKE_CONTEXT_RE = re.compile(r"^gke_(?P<project>[^_]+)_(?P<location>[a-z]+-[a-z]+[0-9]+(?:-[a-z])?)_(?P<name>[^_]+)$")
_RESOURCE_LINK_RE = re.compile(r"^//container\.googleapis\.com/projects/(?P<project>[^/]+)/locations/"
                               r"(?P<location>[^/]+)/clusters/(?P<name>[^/]+)$")
# GKE quotas for Multi Cluster Ingress (https://cloud.google.com/kubernetes-engine/docs/concepts/multi-cluster-ingress).
MAX_CLUSTERS = 15
# `fleet enable --features`: what each mode needs. GKE enables multi-cluster Gateway with the multiclusteringress
# feature's config membership (gcloud container fleet ingress enable) plus multi-cluster Services; the Hub API has
# no separate gateway feature.
MODE_FEATURES = {"ingress": (), "gateway": ("multiclusterservicediscovery",)}


@dataclass(frozen=True)
class ContextSpec:
    """One ``--context`` value: the kubeconfig context and, when given, its fleet link."""

    context: str
    link: str | None = None


@dataclass(frozen=True)
class Member:
    """A fleet membership and the GKE cluster it stands for."""

    name: str  # projects/P/locations/L/memberships/ID
    link: str | None  # <location>/<cluster>, None when the membership is not a GKE cluster

    @property
    def id(self) -> str:
        return self.name.rsplit("/", 1)[-1]


def check_link(link: str, where: str) -> str:
    if not LINK_RE.match(link):
        raise UserError(f"{where}: cluster link {link!r} is not <zone-or-region>/<cluster-name> "
                        "(e.g. us-central1-a/prod1)")
    return link


def parse_context(value: str) -> ContextSpec:
    """``CONTEXT`` or ``CONTEXT=LOCATION/NAME``."""
    context, sep, link = value.partition("=")
    context = context.strip()
    if not context:
        raise UserError(f"--context {value!r}: a kubeconfig context name is required")
    if sep:
        return ContextSpec(context, check_link(link.strip(), f"--context {value}"))
    return ContextSpec(context)


def parse_contexts(values: Sequence[str]) -> list[ContextSpec]:
    """Every ``--context`` (repeated or comma-separated), each once."""
    specs: list[ContextSpec] = []
    for raw in values:
        for item in str(raw).split(","):
            if item.strip():
                spec = parse_context(item.strip())
                if spec.context not in [s.context for s in specs]:
                    specs.append(spec)
    return specs


def link_from_resource_link(resource_link: str) -> str | None:
    m = _RESOURCE_LINK_RE.match(resource_link or "")
    return f"{m.group('location')}/{m.group('name')}" if m else None


def resource_link(project: str, link: str) -> str:
    location, name = link.split("/", 1)
    return f"//container.googleapis.com/projects/{project}/locations/{location}/clusters/{name}"


def _link_from_nodes(cluster: Cluster, compute: Compute) -> str:
    """The cluster's ``<location>/<name>`` from one Node's instance metadata (set by GKE on every node)."""
    from google.api_core import exceptions as gexc
    from google.cloud import compute_v1
    from kubernetes.client.exceptions import ApiException

    from gitlab_mci.kube import api_error_message

    hint = f"(or give it as --context {cluster.context}=LOCATION/NAME)"
    try:
        nodes = cluster.call("list Nodes", cluster.core.list_node, limit=1).items
    except ApiException as exc:
        raise UserError(f"context {cluster.context!r}: cannot list Nodes to find the GKE cluster: "
                        f"{api_error_message(exc)} {hint}") from None
    provider = (nodes[0].spec.provider_id or "") if nodes else ""
    m = re.match(r"^gce://(?P<project>[^/]+)/(?P<zone>[^/]+)/(?P<instance>[^/]+)$", provider)
    if m is None:
        raise UserError(f"context {cluster.context!r}: no GKE node found (providerID {provider!r}) {hint}")
    try:
        instance = compute.client(compute_v1.InstancesClient).get(
            project=m.group("project"), zone=m.group("zone"), instance=m.group("instance"))
    except gexc.GoogleAPICallError as exc:
        raise UserError(f"context {cluster.context!r}: cannot read instance {m.group('instance')}: "
                        f"{exc.message} {hint}") from None
    meta = {i.key: i.value for i in instance.metadata.items}
    if not meta.get("cluster-name") or not meta.get("cluster-location"):
        raise UserError(f"context {cluster.context!r}: instance {m.group('instance')} has no cluster-name / "
                        f"cluster-location metadata {hint}")
    return f"{meta['cluster-location']}/{meta['cluster-name']}"


def resolve_link(spec: ContextSpec, cluster: Cluster | None, compute: Compute | None) -> str:
    """The fleet link of a context: given, from a gcloud-made context name, or from its nodes."""
    if spec.link:
        return spec.link
    m = _GKE_CONTEXT_RE.match(spec.context)
    if m:
        return check_link(f"{m.group('location')}/{m.group('name')}", f"context {spec.context}")
    if cluster is None or compute is None:
        raise UserError(f"context {spec.context!r}: cannot tell its GKE cluster; give --context "
                        f"{spec.context}=LOCATION/NAME")
    return check_link(_link_from_nodes(cluster, compute), f"context {spec.context}")


class Hub:
    """GKE Hub calls for one project, through google-cloud-gke-hub's REST transport."""

    def __init__(self, project: str, endpoint: str | None = None) -> None:
        self.project = project
        self.endpoint = (endpoint or os.environ.get("GITLAB_MCI_GKEHUB_ENDPOINT") or DEFAULT_ENDPOINT).rstrip("/")
        if not self.endpoint.startswith(("http://", "https://")):
            raise UserError(f"GITLAB_MCI_GKEHUB_ENDPOINT={self.endpoint!r} is not an http(s) URL")
        self._client: Any = None

    @property
    def client(self) -> Any:
        if self._client is None:
            from google.api_core.client_options import ClientOptions
            from google.cloud import gkehub_v1

            from gitlab_mci.gcp import credentials_for

            # REST, not gRPC: the same transport reaches Google and the simulator's plain-http endpoint.
            kwargs: dict[str, Any] = {"transport": "rest", "credentials": credentials_for(self.endpoint)}
            if self.endpoint != DEFAULT_ENDPOINT:
                kwargs["client_options"] = ClientOptions(api_endpoint=self.endpoint)
            self._client = gkehub_v1.GkeHubClient(**kwargs)
        return self._client

    @property
    def parent(self) -> str:
        return f"projects/{self.project}/locations/global"

    def _call(self, what: str, fn: Any, *, missing_ok: bool = False, **kwargs: Any) -> Any:
        from google.api_core import exceptions as gexc

        try:
            return fn(**kwargs, timeout=60)
        except gexc.NotFound as exc:
            if missing_ok:
                raise
            raise UserError(f"GKE Hub: cannot {what} in project {self.project}: {_message(exc)}") from None
        except gexc.GoogleAPICallError as exc:
            raise UserError(f"GKE Hub: cannot {what} in project {self.project}: {_message(exc)}") from None
        except gexc.RetryError as exc:
            raise UserError(f"GKE Hub: cannot {what} in project {self.project}: {exc}") from None

    def members(self) -> list[Member]:
        """Every membership of the project's fleet, in any location."""
        listed = self._call("list fleet memberships", self.client.list_memberships,
                            parent=f"projects/{self.project}/locations/-")
        return [Member(m.name, link_from_resource_link(m.endpoint.gke_cluster.resource_link)) for m in listed]

    def feature(self) -> Any | None:
        """The ``multiclusteringress`` feature, ``None`` when not enabled."""
        from google.api_core import exceptions as gexc

        try:
            return self._call("read the multiclusteringress feature", self.client.get_feature, missing_ok=True,
                              name=f"{self.parent}/features/{FEATURE}")
        except gexc.NotFound:
            return None

    def feature_named(self, fid: str) -> Any | None:
        """Any fleet feature (e.g. ``multiclusterservicediscovery``), ``None`` when not enabled."""
        from google.api_core import exceptions as gexc

        try:
            return self._call(f"read the {fid} feature", self.client.get_feature, missing_ok=True,
                              name=f"{self.parent}/features/{fid}")
        except gexc.NotFound:
            return None

    def config_membership(self) -> str | None:
        feature = self.feature()
        value = feature.spec.multiclusteringress.config_membership if feature is not None else ""
        return str(value) or None

    def wait(self, operation: Any, what: str, timeout: float = 300.0) -> Any:
        from google.api_core import exceptions as gexc

        try:
            return operation.result(timeout=timeout)
        except gexc.GoogleAPICallError as exc:
            raise UserError(f"GKE Hub: {what} failed: {_message(exc)}") from None
        except TimeoutError:
            raise UserError(f"GKE Hub: {what} did not finish within {timeout:g}s") from None


def _message(exc: Any) -> str:
    """The API's message, without the REST transport's ``POST https://…: `` prefix."""
    return re.sub(r"^(GET|POST|PATCH|PUT|DELETE) \S+: ", "", str(exc.message))


def same_membership(a: str, b: str) -> bool:
    """Two membership names for the same membership (the API may answer with the project number)."""
    pa, pb = a.split("/"), b.split("/")
    return len(pa) == len(pb) == 6 and pa[3:] == pb[3:]


@dataclass
class EnablePlan:
    """What ``fleet enable`` would do: memberships to create and the feature to create or change."""

    project: str
    config_link: str
    links: dict[str, str]  # context -> link
    members: list[Member]
    create_members: list[tuple[str, str]] = field(default_factory=list)  # (membership id, link)
    config_membership: str = ""
    feature_action: str = ""  # "", "create" or "update"
    current_config: str | None = None
    create_features: list[str] = field(default_factory=list)  # features without a spec to enable (gateway mode)

    @property
    def changes(self) -> int:
        return len(self.create_members) + (1 if self.feature_action else 0) + len(self.create_features)

    def lines(self) -> list[str]:
        out = [f"+ membership {mid} ({link})" for mid, link in self.create_members]
        out += [f"+ feature {fid}" for fid in self.create_features]
        if self.feature_action == "create":
            out.append(f"+ feature {FEATURE} (config membership {self.config_membership})")
        elif self.feature_action == "update":
            out.append(f"~ feature {FEATURE}: config membership {self.current_config} -> {self.config_membership}")
        return out


def plan_enable(hub: Hub, links: dict[str, str], config_context: str, modes: Sequence[str] = ("ingress",)
                ) -> EnablePlan:
    """Read the fleet and decide for the modes' features (``ingress``, ``gateway``); nothing is written."""
    unknown = [m for m in modes if m not in MODE_FEATURES]
    if unknown:
        raise UserError(f"--features {','.join(unknown)}: not a mode (ingress, gateway)")
    if len(set(links.values())) > MAX_CLUSTERS:
        raise UserError(f"{len(set(links.values()))} clusters: Multi Cluster Ingress supports at most "
                        f"{MAX_CLUSTERS} clusters per project")
    members = hub.members()
    by_link = {m.link: m for m in members if m.link}
    by_id = {m.id: m for m in members}
    plan = EnablePlan(hub.project, links[config_context], links, members)
    for context, link in links.items():
        if link in by_link or link in [x for _, x in plan.create_members]:
            continue
        mid = link.split("/", 1)[1]
        if mid in by_id or mid in [i for i, _ in plan.create_members]:
            owner = by_id[mid].link if mid in by_id else "another cluster"
            raise UserError(f"--context {context}: fleet membership {mid!r} already exists for {owner}, not "
                            f"{link}; unregister it or rename the cluster")
        plan.create_members.append((mid, link))
    config = by_link.get(plan.config_link)
    plan.config_membership = config.name if config else f"{hub.parent}/memberships/{plan.config_link.split('/')[1]}"
    plan.create_features = [fid for m in modes for fid in MODE_FEATURES[m] if hub.feature_named(fid) is None]
    plan.current_config = hub.config_membership()
    if plan.current_config is None:
        plan.feature_action = "create"
    elif not same_membership(plan.current_config, plan.config_membership):
        plan.feature_action = "update"
    return plan


def apply_enable(hub: Hub, plan: EnablePlan, progress: Any = None) -> None:
    """Create the missing memberships, then create or update the feature."""
    from google.cloud import gkehub_v1
    from google.cloud.gkehub_v1 import multiclusteringress_v1
    from google.protobuf import field_mask_pb2

    from gitlab_mci.nodeport import parallel

    def create(item: tuple[str, str]) -> None:
        mid, link = item
        membership = gkehub_v1.Membership(endpoint=gkehub_v1.MembershipEndpoint(
            gke_cluster=gkehub_v1.GkeCluster(resource_link=resource_link(hub.project, link))))
        op = hub._call(f"create membership {mid}", hub.client.create_membership, parent=hub.parent,
                       membership_id=mid, resource=membership)
        hub.wait(op, f"creating membership {mid}")
        if progress:
            progress(f"membership {mid} ({link}) created")

    parallel(plan.create_members, create)
    for fid in plan.create_features:  # a spec-less feature (multiclusterservicediscovery): GKE installs its CRDs
        op = hub._call(f"enable the {fid} feature", hub.client.create_feature, parent=hub.parent, feature_id=fid,
                       resource=gkehub_v1.Feature())
        hub.wait(op, f"enabling feature {fid}")
        if progress:
            progress(f"feature {fid} enabled")
    if not plan.feature_action:
        return
    feature = gkehub_v1.Feature(spec=gkehub_v1.CommonFeatureSpec(
        multiclusteringress=multiclusteringress_v1.FeatureSpec(config_membership=plan.config_membership)))
    if plan.feature_action == "create":
        op = hub._call("enable the multiclusteringress feature", hub.client.create_feature, parent=hub.parent,
                       feature_id=FEATURE, resource=feature)
    else:
        op = hub._call("update the multiclusteringress feature", hub.client.update_feature,
                       name=f"{hub.parent}/features/{FEATURE}", resource=feature,
                       update_mask=field_mask_pb2.FieldMask(paths=["spec.multiclusteringress.config_membership"]))
    hub.wait(op, f"{plan.feature_action} of feature {FEATURE}")
    if progress:
        progress(f"feature {FEATURE}: config membership {plan.config_membership}")
