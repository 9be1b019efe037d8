"""Diff, apply, wait, status, weights and delete for the Gateway mode's objects, across the clusters.

Writes go through the ``kubernetes`` client (``CoreV1Api`` for the per-cluster Services, ``CustomObjectsApi`` for
the rest) with field manager ``gitlab-mci``: a create for what is missing, a JSON merge patch of exactly the fields
that differ, a delete for what is ours and no longer wanted. A re-run with nothing to change writes nothing.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, NoReturn

from gitlab_mci.errors import UserError
from gitlab_mci.gateway.manifests import APPLY_ORDER, CONFIG_KINDS, KINDS
from gitlab_mci.gateway.model import CLUSTERS_ANNOTATION, DRAINED_ANNOTATION, FIELD_MANAGER, check_weights
from gitlab_mci.gateway.prepare import WEIGHTS_ANNOTATION, list_ours, live_weights, owned_by, read
from gitlab_mci.hosted.engine import (
    _api_error,
    backoff,
    change_paths,
    look,
    merge_diff,
    plan_summary,
    poll_until,
    warnings,
)

__all__ = ["backoff", "diff", "execute", "look", "status", "wait_ready", "warnings"]

if TYPE_CHECKING:
    from gitlab_mci.gateway.prepare import Prepared
    from gitlab_mci.kube import Cluster

Obj = dict[str, Any]
Progress = Callable[[str], None]


@dataclass
class Change:
    action: str  # create, update, delete
    context: str
    kind: str
    namespace: str
    name: str
    body: Obj = field(default_factory=dict)  # create: the object; update: the merge patch

    def describe(self) -> str:
        line = f"{ {'create': '+', 'update': '~', 'delete': '-'}[self.action]} {self.kind} {self.namespace}/" \
               f"{self.name} ({self.context})"
        if self.action == "update":
            line += f": {', '.join(sorted(_paths(self.body)))}"
        return line

    def as_json(self) -> Obj:
        return {"action": self.action, "context": self.context, "kind": self.kind, "namespace": self.namespace,
                "name": self.name, **({"patch": self.body} if self.action == "update" else {})}


def _paths(patch: Obj) -> list[str]:
    return change_paths(patch, 3)


def object_patch(live: Obj, want: Obj) -> Obj:
    """Our labels and annotations merged; ``spec`` made equal (a Service: only selector and ports, the API owns
    the rest)."""
    patch: Obj = {}
    live_meta, want_meta = live.get("metadata") or {}, want.get("metadata") or {}
    meta: Obj = {}
    for key in ("labels", "annotations"):
        have = live_meta.get(key) or {}
        diff = {k: v for k, v in (want_meta.get(key) or {}).items() if have.get(k) != v}
        if key == "annotations":
            diff.update({k: None for k in (WEIGHTS_ANNOTATION, DRAINED_ANNOTATION, CLUSTERS_ANNOTATION)
                         if k in have and k not in (want_meta.get(key) or {})})
        if diff:
            meta[key] = diff
    if meta:
        patch["metadata"] = meta
    want_spec = want.get("spec") or {}
    live_spec = live.get("spec") or {}
    if want["kind"] == "Service":
        live_spec = {k: live_spec.get(k) for k in want_spec}
        if live_spec != want_spec:
            patch["spec"] = {k: want_spec[k] for k in ("selector", "ports")}
        return patch
    spec = merge_diff(live_spec, want_spec)
    if spec:
        patch["spec"] = spec
    return patch


def diff(prepared: Prepared) -> list[Change]:
    """Creates and updates in apply order, then deletions of what is ours and no longer wanted (reverse order)."""
    ns = prepared.model.namespace
    changes: list[Change] = []
    for d in prepared.desired:
        live = prepared.live.get(d.key)
        name = d.obj["metadata"]["name"]
        if live is None:
            changes.append(Change("create", d.context, d.obj["kind"], ns, name, d.obj))
        else:
            patch = object_patch(live, d.obj)
            if patch:
                changes.append(Change("update", d.context, d.obj["kind"], ns, name, patch))
    stale = sorted(prepared.stale, key=lambda co: -APPLY_ORDER.index(co[1]["kind"]))
    changes += [Change("delete", c, o["kind"], ns, o["metadata"]["name"]) for c, o in stale]
    return changes


def summary(changes: list[Change]) -> str:
    return plan_summary([c.action for c in changes],
                        "No changes. The Gateway, HTTPRoutes and exports match the inputs.")


def execute(clusters: dict[str, Cluster], changes: list[Change], progress: Progress | None = None) -> None:
    """Run the changes in order; the first failure stops with a one-line error naming the object."""
    from kubernetes.client.exceptions import ApiException

    for change in changes:
        cluster = clusters[change.context]
        info = KINDS[change.kind]
        core, custom = cluster.core, cluster.custom
        ns, name = change.namespace, change.name
        try:
            if change.kind == "Service":
                if change.action == "create":
                    cluster.call("create Service", core.create_namespaced_service, ns, change.body,
                                 field_manager=FIELD_MANAGER)
                elif change.action == "update":
                    cluster.call("patch Service", core.patch_namespaced_service, name, ns, change.body,
                                 field_manager=FIELD_MANAGER)
                else:
                    _delete(cluster, "delete Service", core.delete_namespaced_service, name, ns)
            elif change.action == "create":
                cluster.call(f"create {change.kind}", custom.create_namespaced_custom_object, info.group,
                             info.version, ns, info.plural, change.body, field_manager=FIELD_MANAGER)
            elif change.action == "update":
                cluster.call(f"patch {change.kind}", custom.patch_namespaced_custom_object, info.group,
                             info.version, ns, info.plural, name, change.body, field_manager=FIELD_MANAGER)
            else:
                _delete(cluster, f"delete {change.kind}", custom.delete_namespaced_custom_object, info.group,
                        info.version, ns, info.plural, name)
        except ApiException as exc:
            raise UserError(f"{change.action} {change.kind} {ns}/{name} in context {change.context!r} failed: "
                            f"{_api_error(exc)} (run apply again to continue)") from None
        if progress:
            progress(change.describe())


def _delete(cluster: Cluster, what: str, fn: Callable[..., Any], *args: Any) -> None:
    from kubernetes.client.exceptions import ApiException

    try:
        cluster.call(what, fn, *args)
    except ApiException as exc:
        if exc.status != 404:
            raise


def condition(obj: Obj | None, kind: str) -> Obj:
    for c in ((obj or {}).get("status") or {}).get("conditions") or []:
        if c.get("type") == kind:
            return dict(c)
    return {}


def ready(gateway: Obj | None) -> str | None:
    """The Gateway's address once it is Accepted and Programmed with an address, else ``None``."""
    status = (gateway or {}).get("status") or {}
    if condition(gateway, "Accepted").get("status") == "True" and \
            condition(gateway, "Programmed").get("status") == "True" and status.get("addresses"):
        return str(status["addresses"][0].get("value"))
    return None


def _route_problems(cluster: Cluster, namespace: str, routes: list[str]) -> list[str]:
    out = []
    for name in routes:
        route = read(cluster, "HTTPRoute", namespace, name)
        for parent in ((route or {}).get("status") or {}).get("parents") or []:
            for c in parent.get("conditions") or []:
                if c.get("status") == "False":
                    out.append(f"HTTPRoute {name} {c.get('type')}={c.get('status')} ({c.get('reason')}): "
                               f"{c.get('message')}")
    return out


def wait_ready(cluster: Cluster, namespace: str, name: str, routes: list[str], *, timeout: float,
               interval: float = 2.0, progress: Progress | None = None) -> str:
    """Poll the Gateway until Accepted and Programmed with an address, and every HTTPRoute's parents Accepted and
    ResolvedRefs; its address. On time-out, quote the controller's conditions and Warning events."""
    last: Obj = {}

    def check() -> str | None:
        gateway = read(cluster, "Gateway", namespace, name)
        if gateway is None:
            raise UserError(f"Gateway {namespace}/{name} disappeared while waiting for it")
        last.update(gateway=gateway, issues=_route_problems(cluster, namespace, routes))
        address = ready(gateway)
        routes_seen = all(((read(cluster, "HTTPRoute", namespace, r) or {}).get("status") or {}).get("parents")
                          for r in routes)
        return address if address and routes_seen and not last["issues"] else None

    def timed_out() -> NoReturn:
        said = [*last["issues"], *warnings(cluster, "Gateway", namespace, name),
                *(w for r in routes for w in warnings(cluster, "HTTPRoute", namespace, r))]
        programmed = condition(last["gateway"], "Programmed")
        if programmed.get("status") == "False" and programmed.get("message"):
            said.insert(0, f"Programmed=False ({programmed.get('reason')}): {programmed['message']}")
        reason = f"; GKE says: {said[0]}" if said else " (GKE can take several minutes; raise --timeout)"
        raise UserError(f"Gateway {namespace}/{name} is not ready after {timeout:g}s{reason}; see "
                        "`gitlab-mci gateway status`")

    return poll_until(check, timeout=timeout, interval=interval, progress=progress, waiting_for="the Gateway",
                      timed_out=timed_out)


def status(cluster: Cluster, namespace: str, lb: str) -> Obj | None:
    """The Gateway's address and conditions, the HTTPRoutes' parents conditions, the per-cluster weights."""
    gateway = read(cluster, "Gateway", namespace, lb)
    if gateway is None:
        return None
    routes = [r for r in list_ours(cluster, "HTTPRoute", namespace, lb)]
    main = next((r for r in routes if r["metadata"]["name"] == lb), None)
    weights, drained = live_weights(main)
    return {
        "name": lb, "namespace": namespace, "context": cluster.context,
        "class": gateway["spec"].get("gatewayClassName"),
        "address": ready(gateway),
        "conditions": {c.get("type"): {k: c.get(k) for k in ("status", "reason", "message")}
                       for c in (gateway.get("status") or {}).get("conditions") or []},
        "routes": {r["metadata"]["name"]: [{k: c.get(k) for k in ("type", "status", "reason", "message")}
                                           for p in (r.get("status") or {}).get("parents") or []
                                           for c in p.get("conditions") or []] for r in routes},
        "weights": weights, "drained": sorted(drained),
        "finalizers": gateway["metadata"].get("finalizers") or [],
        "deleting": bool(gateway["metadata"].get("deletionTimestamp")),
        "warnings": [*warnings(cluster, "Gateway", namespace, lb),
                     *(w for r in routes for w in warnings(cluster, "HTTPRoute", namespace, r["metadata"]["name"]))],
    }


def render_status(state: Obj) -> str:
    lines = [f"Gateway {state['namespace']}/{state['name']} (class {state['class']}, context {state['context']})",
             f"  address: {state['address'] or '(pending: not Programmed yet)'}"]
    for kind, c in state["conditions"].items():
        lines.append(f"  {kind}: {c['status']} ({c['reason']})" + (f": {c['message']}" if c.get("message") else ""))
    if state["deleting"]:
        lines.append("  being deleted: waiting for finalizers " + ", ".join(state["finalizers"]))
    total = sum(state["weights"].values()) or 1
    for cluster, weight in sorted(state["weights"].items()):
        note = " (drained)" if cluster in state["drained"] else ""
        lines.append(f"  cluster {cluster}: weight {weight} ({100 * weight / total:.0f} %){note}")
    for name, conds in state["routes"].items():
        said = ", ".join(f"{c['type']}={c['status']}" for c in conds) or "no status yet"
        lines.append(f"  HTTPRoute {name}: {said}")
    for warning in state["warnings"]:
        lines.append(f"  warning: {warning}")
    return "\n".join(lines)


def set_weights(cluster: Cluster, namespace: str, lb: str, wanted: dict[str, int], *,
                drain: str | None = None, undrain: str | None = None) -> tuple[dict[str, int], Change | None]:
    """Change the per-cluster weights on the live HTTPRoute ``<lb>`` (its backendRefs and the recorded weights);
    a cluster is named by its GKE cluster name or its kubeconfig context. Checked before the one write."""
    route = read(cluster, "HTTPRoute", namespace, lb)
    if route is None or not owned_by(route, lb):
        raise UserError(f"HTTPRoute {namespace}/{lb} of load balancer {lb} not found in context {cluster.context!r}: "
                        "run gitlab-mci gateway apply first")
    weights, drained = live_weights(route)
    try:
        contexts = {str(k): str(v) for k, v in json.loads(
            (route["metadata"].get("annotations") or {}).get(CLUSTERS_ANNOTATION) or "{}").items()}
    except ValueError:
        contexts = {}
    by_name = {**{ctx: c for c, ctx in contexts.items()}, **{c: c for c in weights}}
    if drain is not None:
        wanted = {drain: 0}
    if undrain is not None:
        wanted = {undrain: -1}
    new = dict(weights)
    for key, weight in wanted.items():
        cluster_name = by_name.get(key)
        if cluster_name is None:
            raise UserError(f"{key!r} is not a cluster of load balancer {lb} (clusters: "
                            f"{', '.join(f'{c} (context {contexts.get(c, c)})' for c in sorted(weights))})")
        if weight == -1:
            weight = drained.get(cluster_name) or weights.get(cluster_name) or 1
        new[cluster_name] = weight
    check_weights(new)
    new_drained = dict(drained)
    for c, w in new.items():
        if drain is not None and by_name.get(drain) == c and weights.get(c):
            new_drained[c] = weights[c]
        elif w > 0:
            new_drained.pop(c, None)
    if new == weights and new_drained == drained:
        return new, None
    rules = []
    for rule in (route.get("spec") or {}).get("rules") or []:
        refs = rule.get("backendRefs")
        if refs:
            rule = {**rule, "backendRefs": _reweigh(refs, weights, new)}
        rules.append(rule)
    notes: Obj = {WEIGHTS_ANNOTATION: json.dumps(new, sort_keys=True),
                  DRAINED_ANNOTATION: json.dumps(new_drained, sort_keys=True) if new_drained else None}
    patch = {"metadata": {"annotations": notes}, "spec": {"rules": rules}}
    change = Change("update", cluster.context, "HTTPRoute", namespace, lb, patch)
    execute({cluster.context: cluster}, [change])
    return new, change


def _reweigh(refs: list[Obj], old: dict[str, int], new: dict[str, int]) -> list[Obj]:
    """The per-cluster refs of a rule (``<service>-<cluster>``) with the new cluster weights; the rule's own
    weight per service (its base) is kept."""
    def cluster_of(ref: Obj) -> str | None:
        return next((c for c in new if str(ref.get("name", "")).endswith(f"-{c}")), None)

    bases: dict[str, int] = {}
    for ref in refs:
        c = cluster_of(ref)
        if c is not None and old.get(c):
            stem = str(ref["name"])[: -len(c) - 1]
            bases.setdefault(stem, max(1, int(ref.get("weight", 1)) // old[c]))
    out = []
    for ref in refs:
        c = cluster_of(ref)
        if c is None or ref.get("group") != "net.gke.io":
            out.append(ref)
            continue
        stem = str(ref["name"])[: -len(c) - 1]
        out.append({**ref, "weight": bases.get(stem, 1) * new[c]})
    return out


def delete(clusters: dict[str, Cluster], config: Cluster, namespace: str, lb: str, *, timeout: float,
           wait: bool = True, progress: Progress | None = None, interval: float = 2.0) -> list[Change]:
    """Delete the load balancer's objects: HTTPRoutes and Gateway first (waiting for GKE's finalizer, so its cloud
    resources are gone), then the exports and per-cluster Services in every cluster; idempotent."""
    changes: list[Change] = []
    for kind in reversed(APPLY_ORDER):
        where = [config] if kind in CONFIG_KINDS else list(clusters.values())
        batch = [Change("delete", c.context, kind, namespace, o["metadata"]["name"])
                 for c in where for o in list_ours(c, kind, namespace, lb)]
        if not batch:
            continue
        execute({c.context: c for c in [config, *clusters.values()]}, batch, progress)
        changes += batch
        if kind != "Gateway" or not wait:
            continue
        started = time.monotonic()
        while read(config, "Gateway", namespace, lb) is not None:
            if time.monotonic() - started >= timeout:
                raise UserError(f"Gateway {namespace}/{lb} still there after {timeout:g}s: its finalizer was not "
                                "removed (is multi-cluster Gateway still enabled?); run delete again to keep waiting")
            time.sleep(backoff(time.monotonic() - started, interval))
    return changes
