"""Diff, apply, wait, status and delete for the objects in the config cluster.

Writes go through the ``kubernetes`` client's ``CustomObjectsApi`` with field manager ``gitlab-mci``: a create for
what is missing, a JSON merge patch of exactly the fields that differ for what changed (labels and the annotations
we manage are merged; ``spec`` is made equal, keys we no longer want set to ``null``), a delete for what is ours and no
longer wanted. A re-run with nothing to change writes nothing.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar

from gitlab_mci.errors import UserError
from gitlab_mci.hosted.manifests import APPLY_ORDER, KINDS
from gitlab_mci.hosted.model import FIELD_MANAGER, LB_LABEL, MANAGED_ANNOTATIONS

if TYPE_CHECKING:
    from gitlab_mci.hosted.prepare import Prepared
    from gitlab_mci.kube import Cluster

Obj = dict[str, Any]
Progress = Callable[[str], None]
T = TypeVar("T")


@dataclass
class Change:
    action: str  # create, update, delete
    kind: str
    namespace: str
    name: str
    body: Obj = field(default_factory=dict)  # create: the object; update: the merge patch

    @property
    def symbol(self) -> str:
        return {"create": "+", "update": "~", "delete": "-"}[self.action]

    def describe(self) -> str:
        line = f"{self.symbol} {self.kind} {self.namespace}/{self.name}"
        if self.action == "update":
            line += f": {', '.join(_paths(self.body))}"
        return line

    def as_json(self) -> Obj:
        return {"action": self.action, "kind": self.kind, "namespace": self.namespace, "name": self.name,
                **({"patch": self.body} if self.action == "update" else {})}


def change_paths(patch: Obj, depth: int, prefix: str = "") -> list[str]:
    """The dotted paths a merge patch changes, at most ``depth`` keys deep (what a plan line names)."""
    out: list[str] = []
    for k, v in patch.items():
        path = f"{prefix}.{k}" if prefix else k
        if isinstance(v, dict) and v and path.count(".") + 1 < depth:
            out += change_paths(v, depth, path)
        else:
            out.append(path)
    return out


def _paths(patch: Obj) -> list[str]:
    return change_paths(patch, 4)


def merge_diff(live: Any, want: Any) -> Any:
    """The JSON merge patch (RFC 7386) that turns ``live`` into ``want``; ``{}`` when equal."""
    if not isinstance(live, dict) or not isinstance(want, dict):
        return want
    patch: Obj = {}
    for k, v in want.items():
        if k not in live:
            patch[k] = v
        elif isinstance(v, dict) and isinstance(live[k], dict):
            sub = merge_diff(live[k], v)
            if sub:
                patch[k] = sub
        elif live[k] != v:
            patch[k] = v
    for k in live:
        if k not in want:
            patch[k] = None
    return patch


def object_patch(live: Obj, want: Obj) -> Obj:
    """The patch for the fields gitlab-mci manages: our labels, our annotations, the whole spec."""
    patch: Obj = {}
    live_meta, want_meta = live.get("metadata") or {}, want.get("metadata") or {}
    labels = {k: v for k, v in (want_meta.get("labels") or {}).items()
              if (live_meta.get("labels") or {}).get(k) != v}
    live_notes = live_meta.get("annotations") or {}
    want_notes = want_meta.get("annotations") or {}
    notes: Obj = {k: v for k, v in want_notes.items() if live_notes.get(k) != v}
    for k in MANAGED_ANNOTATIONS.get(want["kind"], ()):
        if k in live_notes and k not in want_notes:
            notes[k] = None
    if labels or notes:
        patch["metadata"] = {**({"labels": labels} if labels else {}), **({"annotations": notes} if notes else {})}
    spec = merge_diff(live.get("spec") or {}, want.get("spec") or {})
    if spec:
        patch["spec"] = spec
    return patch


def diff(prepared: Prepared) -> list[Change]:
    """Creates and updates in apply order, then deletions of what is ours and no longer wanted (reverse order)."""
    changes: list[Change] = []
    for want in prepared.desired:
        meta = want["metadata"]
        live = prepared.live.get((want["kind"], meta["name"]))
        if live is None:
            changes.append(Change("create", want["kind"], meta["namespace"], meta["name"], want))
        else:
            patch = object_patch(live, want)
            if patch:
                changes.append(Change("update", want["kind"], meta["namespace"], meta["name"], patch))
    stale = sorted(prepared.stale, key=lambda o: -APPLY_ORDER.index(o["kind"]))
    changes += [Change("delete", o["kind"], o["metadata"]["namespace"], o["metadata"]["name"]) for o in stale]
    return changes


def plan_summary(actions: list[str], nothing: str) -> str:
    """The plan's count line (``nothing`` when there is no change)."""
    if not actions:
        return nothing
    count = {a: actions.count(a) for a in ("create", "update", "delete")}
    return f"Plan: {count['create']} to add, {count['update']} to change, {count['delete']} to destroy."


def summary(changes: list[Change]) -> str:
    return plan_summary([c.action for c in changes], "No changes. The Multi Cluster Ingress objects match the inputs.")


def _api_error(exc: Any) -> str:
    from gitlab_mci.kube import api_error_message

    return api_error_message(exc)


def execute(cluster: Cluster, changes: list[Change], progress: Progress | None = None) -> None:
    """Run the changes in order; the first failure stops with a one-line error naming the object."""
    from kubernetes.client.exceptions import ApiException

    api = cluster.custom
    for change in changes:
        info = KINDS[change.kind]
        try:
            if change.action == "create":
                cluster.call(f"create {change.kind}", api.create_namespaced_custom_object, info.group, info.version,
                             change.namespace, info.plural, change.body, field_manager=FIELD_MANAGER)
            elif change.action == "update":
                cluster.call(f"patch {change.kind}", api.patch_namespaced_custom_object, info.group, info.version,
                             change.namespace, info.plural, change.name, change.body, field_manager=FIELD_MANAGER)
            else:
                try:
                    cluster.call(f"delete {change.kind}", api.delete_namespaced_custom_object, info.group,
                                 info.version, change.namespace, info.plural, change.name)
                except ApiException as exc:
                    if exc.status != 404:
                        raise
        except ApiException as exc:
            raise UserError(f"{change.action} {change.kind} {change.namespace}/{change.name} in context "
                            f"{cluster.context!r} failed: {_api_error(exc)} (run apply again to continue)") from None
        if progress:
            progress(change.describe())


def get(cluster: Cluster, kind: str, namespace: str, name: str) -> Obj | None:
    from kubernetes.client.exceptions import ApiException

    info = KINDS[kind]
    try:
        found: Obj = cluster.call(f"read {kind}", cluster.custom.get_namespaced_custom_object, info.group,
                                  info.version, namespace, info.plural, name)
    except ApiException as exc:
        if exc.status == 404:
            return None
        raise UserError(f"context {cluster.context!r}: cannot read {kind} {namespace}/{name}: "
                        f"{_api_error(exc)}") from None
    return found


def warnings(cluster: Cluster, kind: str, namespace: str, name: str) -> list[str]:
    """Messages of the Warning Events GKE's controller recorded on an object, oldest first (empty when unreadable)."""
    from kubernetes.client.exceptions import ApiException

    try:
        listed = cluster.call("list Events", cluster.core.list_namespaced_event, namespace,
                              field_selector=f"involvedObject.kind={kind},involvedObject.name={name},type=Warning")
    except ApiException:
        return []
    events = sorted(listed.items, key=lambda e: str(e.last_timestamp or e.first_timestamp or ""))
    return [str(e.message) for e in events if e.message]


def poll_until(check: Callable[[], T | None], *, timeout: float, interval: float, progress: Progress | None,
               waiting_for: str, timed_out: Callable[[], NoReturn]) -> T:
    """``check()`` until it returns something (its answer); ``timed_out()`` (which raises) after ``timeout``
    seconds. A progress note every 10 s; short first polls (a change the controller picks up at once), then every
    ``interval`` seconds."""
    started = time.monotonic()
    next_note = started + 10.0
    while True:
        got = check()
        if got is not None:
            return got
        now = time.monotonic()
        if now - started >= timeout:
            timed_out()
        if progress and now >= next_note:
            progress(f"still waiting for {waiting_for} ({now - started:.0f}s of {timeout:g}s)")
            next_note = now + 10.0
        time.sleep(min(backoff(now - started, interval), max(0.05, timeout - (now - started))))


def look(fetch: Callable[[], Obj | None], done: Callable[[Obj], bool], wait: float) -> Obj | None:
    """``status --wait``: ``fetch()`` until it is ``None``, ``done`` or ``wait`` seconds have passed; the last state."""
    started = time.monotonic()
    while True:
        state = fetch()
        if state is None or done(state) or time.monotonic() >= started + wait:
            return state
        time.sleep(min(backoff(time.monotonic() - started, 2.0), max(0.05, started + wait - time.monotonic())))


def wait_for_vip(cluster: Cluster, namespace: str, name: str, *, timeout: float, interval: float = 2.0,
                 progress: Progress | None = None) -> Obj:
    """Poll the MultiClusterIngress until ``status.VIP`` is set; the object when it is."""

    def check() -> Obj | None:
        mci = get(cluster, "MultiClusterIngress", namespace, name)
        if mci is None:
            raise UserError(f"MultiClusterIngress {namespace}/{name} disappeared while waiting for its VIP")
        return mci if (mci.get("status") or {}).get("VIP") else None

    def timed_out() -> NoReturn:
        said = warnings(cluster, "MultiClusterIngress", namespace, name)
        reason = f"; GKE says: {said[-1]}" if said else " (GKE can take about 10 minutes; raise --timeout)"
        raise UserError(f"MultiClusterIngress {namespace}/{name} has no VIP after {timeout:g}s{reason}; see "
                        "`gitlab-mci hosted status`")

    return poll_until(check, timeout=timeout, interval=interval, progress=progress, waiting_for="the VIP",
                      timed_out=timed_out)


def backoff(elapsed: float, interval: float) -> float:
    """Polling interval: short at first (the controller may be done at once), then ``interval``."""
    return min(interval, 0.1 + elapsed / 4)


def _owned(cluster: Cluster, namespace: str, lb: str) -> list[Obj]:
    from gitlab_mci.hosted.prepare import list_objects

    found: list[Obj] = []
    for kind in reversed(APPLY_ORDER):
        found += list_objects(cluster, kind, namespace, f"{LB_LABEL}={lb}")
    return found


def delete(cluster: Cluster, namespace: str, lb: str, *, timeout: float, wait: bool = True,
           progress: Progress | None = None, interval: float = 2.0) -> list[Change]:
    """Delete the load balancer's objects, MultiClusterIngress first, each kind gone (finalizers and all) before
    the next; idempotent."""
    objects = _owned(cluster, namespace, lb)
    changes = [Change("delete", o["kind"], namespace, o["metadata"]["name"]) for o in objects]
    deadline = time.monotonic() + timeout
    for kind in reversed(APPLY_ORDER):
        batch = [c for c in changes if c.kind == kind]
        if not batch:
            continue
        execute(cluster, batch, progress)
        if not wait:
            continue
        pending = list(batch)
        waited_from = time.monotonic()
        while pending:
            pending = [c for c in pending if get(cluster, c.kind, namespace, c.name) is not None]
            if not pending:
                break
            if time.monotonic() >= deadline:
                names = ", ".join(f"{c.kind} {namespace}/{c.name}" for c in pending)
                raise UserError(f"{names} still there after {timeout:g}s: its finalizers were not removed (is the "
                                "Multi Cluster Ingress feature still enabled?); run delete again to keep waiting")
            time.sleep(backoff(time.monotonic() - waited_from, interval))
    return changes


def status(cluster: Cluster, namespace: str, lb: str) -> Obj | None:
    """The MultiClusterIngress's VIP and cloud resources, and the MultiClusterServices it routes to."""
    mci = get(cluster, "MultiClusterIngress", namespace, lb)
    if mci is None:
        return None
    from gitlab_mci.hosted.prepare import list_objects

    state = mci.get("status") or {}
    template = ((mci.get("spec") or {}).get("template") or {}).get("spec") or {}
    names = {str((template.get("backend") or {}).get("serviceName", ""))} | {
        str((p.get("backend") or {}).get("serviceName", "")) for r in template.get("rules") or []
        for p in (r.get("http") or {}).get("paths") or []}
    services = []
    for mcs in list_objects(cluster, "MultiClusterService", namespace):
        if mcs["metadata"]["name"] in names:
            links = [c.get("link") for c in (mcs.get("spec") or {}).get("clusters") or []]
            services.append({"name": mcs["metadata"]["name"], "clusters": links or "all fleet members"})
    return {
        "name": lb, "namespace": namespace, "context": cluster.context,
        "vip": state.get("VIP"),
        "annotations": {k: v for k, v in (mci["metadata"].get("annotations") or {}).items()
                        if k.startswith(("networking.gke.io/", "beta.cloud.google.com/"))},
        "cloudResources": state.get("CloudResources") or {},
        "finalizers": mci["metadata"].get("finalizers") or [],
        "deleting": bool(mci["metadata"].get("deletionTimestamp")),
        "multiClusterServices": services,
        "warnings": [*warnings(cluster, "MultiClusterIngress", namespace, lb),
                     *(w for s in services for w in warnings(cluster, "MultiClusterService", namespace, s["name"]))],
    }


def render_status(state: Obj) -> str:
    lines = [f"MultiClusterIngress {state['namespace']}/{state['name']} (context {state['context']})",
             f"  VIP: {state['vip'] or '(pending: GKE is provisioning)'}"]
    if state["deleting"]:
        lines.append("  being deleted: waiting for finalizers " + ", ".join(state["finalizers"]))
    for k, v in state["annotations"].items():
        lines.append(f"  {k}: {v}")
    for svc in state["multiClusterServices"]:
        clusters = svc["clusters"] if isinstance(svc["clusters"], str) else ", ".join(svc["clusters"])
        lines.append(f"  MultiClusterService {svc['name']}: {clusters}")
    for warning in state["warnings"]:
        lines.append(f"  warning: {warning}")
    resources = state["cloudResources"]
    if resources:
        lines.append("  Cloud resources:")
        for kind, value in sorted(resources.items()):
            for item in value if isinstance(value, list) else [value]:
                lines.append(f"    {kind}: {item}")
    return "\n".join(lines)


def render_markdown(state: Obj) -> str:
    """The status as Markdown (for a job artifact or merge request note), with a Mermaid diagram of the chain
    GKE built: VIP → forwarding rules → target proxies → URL map → backend services → NEGs per zone."""
    res = state["cloudResources"]
    lines = [f"### MultiClusterIngress `{state['namespace']}/{state['name']}`", "",
             "| | |", "| --- | --- |", f"| VIP | {state['vip'] or 'pending (GKE is provisioning)'} |",
             f"| config cluster | `{state['context']}` |"]
    for svc in state["multiClusterServices"]:
        clusters = svc["clusters"] if isinstance(svc["clusters"], str) else ", ".join(f"`{c}`" for c in svc["clusters"])
        lines.append(f"| MultiClusterService `{svc['name']}` | {clusters} |")
    for k, v in state["annotations"].items():
        lines.append(f"| `{k}` | `{v}` |")
    if state["deleting"]:
        lines.append(f"| being deleted | waiting for {', '.join(state['finalizers'])} |")
    for warning in state["warnings"]:
        lines.append(f"| warning | {warning} |")
    if not res:
        return "\n".join(lines) + "\n"
    lines += ["", "```mermaid", "flowchart LR", f"  vip([\"{state['vip'] or 'VIP pending'}\"])"]
    for i, rule in enumerate(res.get("ForwardingRules") or []):
        lines.append(f"  vip --> fr{i}[\"{rule}\"]")
        for j, proxy in enumerate(res.get("TargetProxies") or []):
            lines.append(f"  fr{i} --> tp{j}[\"{proxy}\"]")
    for j in range(len(res.get("TargetProxies") or [])):
        lines.append(f"  tp{j} --> um[\"{res.get('UrlMap', 'URL map')}\"]")
    for b, backend in enumerate(res.get("BackendServices") or []):
        lines.append(f"  um --> bs{b}[\"{backend}\"]")
        for n, neg in enumerate(res.get("NetworkEndpointGroups") or []):
            lines.append(f"  bs{b} --> neg{n}[\"NEG {neg.split('/')[1]}\"]")
    lines.append("```")
    return "\n".join(lines) + "\n"
