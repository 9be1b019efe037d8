"""One simulated GKE cluster's Kubernetes API server.

The REST surface is driven by a table of resource kinds (:data:`BUILTIN_KINDS`, plus every CRD created at run time);
behaviour that real controllers add — Service IP and NodePort allocation, Pods and Endpoints from Deployments — lives
in small hooks. Everything is kept in memory behind one lock per cluster.
"""

from __future__ import annotations

import copy
import hashlib
import json
import random
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import yaml

from gitlab_mci.sim.httpd import Request, Response, kube_status
from gitlab_mci.sim.kube import tables
from gitlab_mci.sim.kube.patch import (
    PatchError,
    fields_match,
    json_patch,
    labels_match,
    merge_patch,
    parse_field_selector,
    parse_label_selector,
    strategic_merge,
)

GIT_VERSION = "v1.30.5-gke.1014001"
_List = list  # the class defines a `list` method, which shadows the builtin in its annotations
Obj = dict[str, Any]
Listener = Callable[[str, Obj], None]


@dataclass(frozen=True)
class Kind:
    """One resource kind as discovery describes it."""

    group: str
    version: str
    plural: str
    kind: str
    namespaced: bool
    short_names: tuple[str, ...] = ()
    status_subresource: bool = False
    verbs: tuple[str, ...] = ("create", "delete", "deletecollection", "get", "list", "patch", "update", "watch")

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def singular(self) -> str:
        return self.kind.lower()

    def discovery(self) -> list[Obj]:
        main: Obj = {
            "name": self.plural, "singularName": self.singular, "namespaced": self.namespaced, "kind": self.kind,
            "verbs": list(self.verbs),
        }
        if self.short_names:
            main["shortNames"] = list(self.short_names)
        out = [main]
        if self.status_subresource:
            out.append({"name": f"{self.plural}/status", "singularName": "", "namespaced": self.namespaced,
                        "kind": self.kind, "verbs": ["get", "patch", "update"]})
        return out


BUILTIN_KINDS: tuple[Kind, ...] = (
    Kind("", "v1", "namespaces", "Namespace", False, ("ns",), True,
         ("create", "delete", "get", "list", "patch", "update", "watch")),
    Kind("", "v1", "nodes", "Node", False, ("no",), True),
    Kind("", "v1", "services", "Service", True, ("svc",), True,
         ("create", "delete", "get", "list", "patch", "update", "watch")),
    Kind("", "v1", "endpoints", "Endpoints", True, ("ep",)),
    Kind("", "v1", "pods", "Pod", True, ("po",), True),
    Kind("", "v1", "secrets", "Secret", True),
    Kind("", "v1", "configmaps", "ConfigMap", True, ("cm",)),
    Kind("", "v1", "events", "Event", True, ("ev",)),
    Kind("apps", "v1", "deployments", "Deployment", True, ("deploy",), True),
    Kind("networking.k8s.io", "v1", "ingresses", "Ingress", True, ("ing",), True),
    Kind("apiextensions.k8s.io", "v1", "customresourcedefinitions", "CustomResourceDefinition", False,
         ("crd", "crds"), True),
)


def _without_rv(obj: Obj) -> Obj:
    out = {**obj, "metadata": dict(obj.get("metadata") or {})}
    out["metadata"].pop("resourceVersion", None)
    return out


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class ApiError(Exception):
    """An error answered as a Kubernetes Status."""

    def __init__(self, code: int, reason: str, message: str, details: Obj | None = None) -> None:
        super().__init__(message)
        self.response = kube_status(code, reason, message, details)


def _not_found(kind: Kind, name: str) -> ApiError:
    return ApiError(404, "NotFound", f'{kind.plural}{"." + kind.group if kind.group else ""} "{name}" not found',
                    {"name": name, "group": kind.group, "kind": kind.plural})


def _invalid(kind: Kind, name: str, causes: list[tuple[str, str]]) -> ApiError:
    text = ", ".join(f"{f}: {m}" for f, m in causes)
    return ApiError(
        422, "Invalid", f'{kind.kind} "{name}" is invalid: {text}',
        {"name": name, "group": kind.group, "kind": kind.kind,
         "causes": [{"reason": "FieldValueInvalid", "message": m, "field": f} for f, m in causes]},
    )


@dataclass
class _Route:
    kind: Kind
    namespace: str | None
    name: str | None
    subresource: str | None


@dataclass
class _State:
    objects: dict[tuple[str, str], dict[tuple[str, str], Obj]] = field(default_factory=dict)
    kinds: dict[tuple[str, str], Kind] = field(default_factory=dict)  # (group, plural) -> kind


class KubeApiServer:
    """The API of one simulated cluster; ``handle`` is its HTTP handler."""

    def __init__(self, cluster: str, *, node_port_range: tuple[int, int] = (30000, 32767),
                 seed: int | None = None) -> None:
        self.cluster = cluster
        self.node_port_range = node_port_range
        self._rng = random.Random(seed)
        self._lock = threading.RLock()
        self._rv = 1
        self._state = _State()
        self._listeners: _List[Listener] = []
        # Mutating admission of the Pods a Deployment creates (GKE's NEG controller adds its readiness gate).
        self.pod_mutators: _List[Callable[[Obj], None]] = []
        self._rolling: set[tuple[str, str]] = set()  # Deployments being reconciled (no re-entry from pod events)
        self._ip_counter = 10
        for kind in BUILTIN_KINDS:
            self._register(kind)
        for ns in ("default", "kube-system", "kube-public", "kube-node-lease"):
            self.seed({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}})
        self.seed({
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"name": "kubernetes", "namespace": "default",
                         "labels": {"component": "apiserver", "provider": "kubernetes"}},
            "spec": {"type": "ClusterIP", "ports": [{"name": "https", "port": 443, "targetPort": 443}]},
        })

    # --- public API ----------------------------------------------------------------------------------------------

    def add_listener(self, fn: Listener) -> None:
        """Call ``fn(event, obj)`` after every change (simulated controllers react to it)."""
        self._listeners.append(fn)

    def seed(self, obj: Obj) -> Obj:
        """Create an object directly (no HTTP), with the same defaulting and checks as a POST."""
        kind = self._kind_of(obj)
        with self._lock:
            return self._create(kind, obj.get("metadata", {}).get("namespace") or (
                "default" if kind.namespaced else None), copy.deepcopy(obj), dry_run=False)

    def get(self, api_version: str, kind: str, name: str, namespace: str | None = None) -> Obj | None:
        k = self._kind_by_name(api_version, kind)
        with self._lock:
            found = self._bucket(k).get((namespace or "" if k.namespaced else "", name))
            return copy.deepcopy(found) if found else None

    def list(self, api_version: str, kind: str, namespace: str | None = None,
             label_selector: str | None = None) -> _List[Obj]:
        k = self._kind_by_name(api_version, kind)
        reqs = parse_label_selector(label_selector)
        with self._lock:
            return [copy.deepcopy(o) for (ns, _), o in sorted(self._bucket(k).items())
                    if (namespace is None or ns == namespace) and labels_match(o["metadata"].get("labels"), reqs)]

    def install_gke_crds(self) -> None:
        """The CRDs GKE's Multi Cluster Ingress and the GKE Ingress controller install."""
        for group, version, plural, kind, short, scope in (
            ("networking.gke.io", "v1", "multiclusteringresses", "MultiClusterIngress", ["mci"], "Namespaced"),
            ("networking.gke.io", "v1", "multiclusterservices", "MultiClusterService", ["mcs"], "Namespaced"),
            ("cloud.google.com", "v1", "backendconfigs", "BackendConfig", ["bc"], "Namespaced"),
            ("networking.gke.io", "v1beta1", "frontendconfigs", "FrontendConfig", [], "Namespaced"),
        ):
            self.seed({
                "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
                "metadata": {"name": f"{plural}.{group}"},
                "spec": {
                    "group": group, "scope": scope,
                    "names": {"plural": plural, "singular": kind.lower(), "kind": kind, "shortNames": short,
                              "listKind": f"{kind}List"},
                    "versions": [{"name": version, "served": True, "storage": True,
                                  "subresources": {"status": {}},
                                  "schema": {"openAPIV3Schema": {"type": "object",
                                                                 "x-kubernetes-preserve-unknown-fields": True}}}],
                },
            })

    # --- HTTP ----------------------------------------------------------------------------------------------------

    def handle(self, req: Request) -> Response:
        try:
            with self._lock:
                return self._dispatch(req)
        except ApiError as exc:
            return exc.response

    def _dispatch(self, req: Request) -> Response:
        path = req.path.rstrip("/") or "/"
        if path == "/version":
            return Response(200, {"major": "1", "minor": "30", "gitVersion": GIT_VERSION, "platform": "linux/amd64",
                                  "goVersion": "go1.22.5", "compiler": "gc"})
        if path in ("/healthz", "/readyz", "/livez"):
            return Response(200, b"ok", content_type="text/plain")
        if path == "/api":
            return Response(200, {"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": [
                {"clientCIDR": "0.0.0.0/0", "serverAddress": req.headers.get("host", "")}]})
        if path == "/apis":
            return Response(200, self._group_list())
        if path == "/openapi/v3":
            return Response(200, {"paths": {gv: {"serverRelativeURL": f"/openapi/v3/{gv}?hash={self._rv}"}
                                            for gv in self._group_versions()}})
        if path.startswith("/openapi/v3/"):
            return self._openapi_v3(path.removeprefix("/openapi/v3/"))
        if path == "/openapi/v2":
            # An empty OpenAPI v2 document (zero protobuf bytes is a valid gnostic Document): kubectl's client-side
            # validation of `kind: List` input then finds no schema and leaves validation to the server.
            return Response(200, b"", content_type="application/com.github.proto-openapi.spec.v2.v1.0+protobuf")
        if path.startswith("/openapi/"):
            return kube_status(404, "NotFound", "the server could not find the requested resource")
        parts = path.strip("/").split("/")
        if parts[0] == "api" and len(parts) >= 2:
            group, version, rest = "", parts[1], parts[2:]
        elif parts[0] == "apis" and len(parts) >= 3:
            group, version, rest = parts[1], parts[2], parts[3:]
        elif parts[0] == "apis" and len(parts) == 2:
            return self._group(parts[1])
        else:
            return kube_status(404, "NotFound", "the server could not find the requested resource")
        kinds = [k for k in self._state.kinds.values() if k.group == group and k.version == version]
        if not kinds:
            return kube_status(404, "NotFound", "the server could not find the requested resource")
        if not rest:
            resources = [r for k in sorted(kinds, key=lambda k: k.plural) for r in k.discovery()]
            return Response(200, {"kind": "APIResourceList", "apiVersion": "v1",
                                  "groupVersion": kinds[0].api_version, "resources": resources})
        route = self._route(kinds, rest)
        return self._serve(req, route)

    def _route(self, kinds: _List[Kind], rest: _List[str]) -> _Route:
        by_plural = {k.plural: k for k in kinds}
        namespace = None
        if rest[0] == "namespaces" and len(rest) >= 3 and rest[2] in by_plural and by_plural[rest[2]].namespaced:
            namespace, rest = rest[1], rest[2:]
        kind = by_plural.get(rest[0])
        if kind is None or len(rest) > 3:
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        name = rest[1] if len(rest) >= 2 else None
        sub = rest[2] if len(rest) == 3 else None
        if sub is not None and not (sub == "status" and kind.status_subresource) and sub != "finalize":
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        return _Route(kind, namespace, name, sub)

    def _serve(self, req: Request, route: _Route) -> Response:
        kind, ns, name = route.kind, route.namespace, route.name
        dry_run = req.param("dryRun") == "All"
        if kind.namespaced and ns is not None and kind.plural != "namespaces" and not self._namespace_exists(ns) \
                and req.method != "GET":
            raise ApiError(404, "NotFound", f'namespaces "{ns}" not found',
                           {"name": ns, "kind": "namespaces"})
        if req.method == "GET" and name is None:
            if req.param("watch") in ("true", "1"):
                return self._watch(kind, ns, req)
            listing = self._list(kind, ns, req)
            if tables.wants_table(req.headers.get("accept", "")):
                return Response(200, tables.table(kind.kind, listing["items"], str(self._rv)))
            return Response(200, listing)
        if req.method == "GET" and name is not None:
            obj = self._get(kind, ns, name)
            if tables.wants_table(req.headers.get("accept", "")):
                return Response(200, tables.table(kind.kind, [obj], str(self._rv)))
            return Response(200, obj)
        if req.method == "POST" and name is None:
            body = self._body(req)
            if kind.namespaced and ns is None:
                raise ApiError(405, "MethodNotAllowed", "the server does not allow this method on the requested "
                               "resource")
            if kind.status_subresource:
                body.pop("status", None)  # status is written through the status subresource only
            return Response(201, self._create(kind, ns, body, dry_run=dry_run))
        if name is None:
            if req.method == "DELETE":
                return Response(200, self._delete_collection(kind, ns, req, dry_run))
            raise ApiError(405, "MethodNotAllowed", "the server does not allow this method on the requested resource")
        if req.method == "PUT":
            return Response(200, self._update(kind, ns, name, self._body(req), route.subresource, dry_run))
        if req.method == "PATCH":
            return self._patch(req, kind, ns, name, route.subresource, dry_run)
        if req.method == "DELETE":
            return Response(200, self._delete(kind, ns, name, dry_run))
        raise ApiError(405, "MethodNotAllowed", "the server does not allow this method on the requested resource")

    # --- discovery -----------------------------------------------------------------------------------------------

    def _group_versions(self) -> _List[str]:
        return sorted({"api/v1" if not k.group else f"apis/{k.group}/{k.version}" for k in self._state.kinds.values()})

    def _openapi_v3(self, gv: str) -> Response:
        """Just enough OpenAPI v3 for kubectl: each resource's PATCH takes `fieldValidation`, so kubectl leaves
        validation to the server (which accepts what it can store) instead of needing full schemas client-side."""
        kinds = [k for k in self._state.kinds.values()
                 if ("api/v1" if not k.group else f"apis/{k.group}/{k.version}") == gv]
        if not kinds:
            return kube_status(404, "NotFound", "the server could not find the requested resource")
        paths: Obj = {}
        for k in kinds:
            base = f"/{gv}/namespaces/{{namespace}}/{k.plural}" if k.namespaced else f"/{gv}/{k.plural}"
            gvk = {"group": k.group, "version": k.version, "kind": k.kind}
            op = {"x-kubernetes-group-version-kind": gvk, "x-kubernetes-action": "patch",
                  "parameters": [{"name": n, "in": "query", "schema": {"type": "string"}}
                                 for n in ("dryRun", "fieldManager", "fieldValidation", "force")],
                  "responses": {"200": {"description": "OK"}}}
            paths[f"{base}/{{name}}"] = {"patch": op}
        return Response(200, {"openapi": "3.0.0", "info": {"title": "Kubernetes", "version": GIT_VERSION},
                              "paths": paths, "components": {"schemas": {}}})

    def _groups(self) -> dict[str, _List[str]]:
        groups: dict[str, _List[str]] = {}
        for k in self._state.kinds.values():
            if k.group and k.version not in groups.setdefault(k.group, []):
                groups[k.group].append(k.version)
        return groups

    def _group_entry(self, name: str, versions: _List[str]) -> Obj:
        vs = [{"groupVersion": f"{name}/{v}", "version": v} for v in sorted(versions, reverse=True)]
        return {"name": name, "versions": vs, "preferredVersion": vs[0]}

    def _group_list(self) -> Obj:
        return {"kind": "APIGroupList", "apiVersion": "v1",
                "groups": [self._group_entry(g, v) for g, v in sorted(self._groups().items())]}

    def _group(self, name: str) -> Response:
        versions = self._groups().get(name)
        if not versions:
            return kube_status(404, "NotFound", "the server could not find the requested resource")
        return Response(200, {"kind": "APIGroup", "apiVersion": "v1", **self._group_entry(name, versions)})

    # --- store -----------------------------------------------------------------------------------------------------

    def _register(self, kind: Kind) -> None:
        self._state.kinds[(kind.group, kind.plural)] = kind
        self._state.objects.setdefault((kind.group, kind.plural), {})

    def _unregister_crd(self, crd: Obj) -> None:
        """A deleted CRD takes its kind off the API, objects and all, as the real API server does."""
        spec = crd.get("spec") or {}
        key = (str(spec.get("group", "")), str((spec.get("names") or {}).get("plural", "")))
        if key[0] and key in self._state.kinds:
            del self._state.kinds[key]
            self._state.objects.pop(key, None)

    def _bucket(self, kind: Kind) -> dict[tuple[str, str], Obj]:
        return self._state.objects[(kind.group, kind.plural)]

    def _kind_by_name(self, api_version: str, kind_name: str) -> Kind:
        group, _, version = api_version.rpartition("/")
        for k in self._state.kinds.values():
            if k.group == group and k.version == version and k.kind == kind_name:
                return k
        raise ApiError(404, "NotFound", f"no kind {kind_name!r} is registered for version {api_version!r}")

    def _kind_of(self, obj: Obj) -> Kind:
        return self._kind_by_name(str(obj.get("apiVersion", "")), str(obj.get("kind", "")))

    def _namespace_exists(self, ns: str) -> bool:
        return ("", ns) in self._bucket(self._state.kinds[("", "namespaces")])

    def _next_rv(self) -> str:
        self._rv += 1
        return str(self._rv)

    def _emit(self, event: str, obj: Obj) -> None:
        for fn in list(self._listeners):
            fn(event, copy.deepcopy(obj))

    def _body(self, req: Request) -> Obj:
        try:
            body = yaml.safe_load(req.body.decode() or "null") if "yaml" in req.content_type else req.json()
        except (ValueError, yaml.YAMLError) as exc:
            raise ApiError(400, "BadRequest", f"the body of the request was in an unknown format: {exc}") from None
        if not isinstance(body, dict) and not isinstance(body, list):
            raise ApiError(400, "BadRequest", "the body of the request must be an object")
        return body  # type: ignore[return-value]

    def _get(self, kind: Kind, ns: str | None, name: str) -> Obj:
        obj = self._bucket(kind).get((ns or "" if kind.namespaced else "", name))
        if obj is None:
            raise _not_found(kind, name)
        return copy.deepcopy(obj)

    def _list(self, kind: Kind, ns: str | None, req: Request) -> Obj:
        try:
            labels = parse_label_selector(req.param("labelSelector"))
            fields = parse_field_selector(req.param("fieldSelector"))
        except ValueError as exc:
            raise ApiError(400, "BadRequest", str(exc)) from None
        items = [o for (ons, _), o in sorted(self._bucket(kind).items())
                 if (ns is None or ons == ns) and labels_match(o["metadata"].get("labels"), labels)
                 and fields_match(o, fields)]
        meta: Obj = {"resourceVersion": str(self._rv)}
        limit = int(req.param("limit") or 0)
        start = int(req.param("continue") or 0)
        if limit:
            if start + limit < len(items):
                meta["continue"] = str(start + limit)
                meta["remainingItemCount"] = len(items) - start - limit
            items = items[start:start + limit]
        return {"kind": f"{kind.kind}List", "apiVersion": kind.api_version, "metadata": meta,
                "items": [copy.deepcopy(o) for o in items]}

    def _watch(self, kind: Kind, ns: str | None, req: Request) -> Response:
        # The simulator answers a watch with the current state as ADDED events and ends the stream; clients
        # re-list or re-watch, which is enough for `kubectl wait`/`delete --wait` and for polling controllers.
        listing = self._list(kind, ns, req)
        lines = [json.dumps({"type": "ADDED", "object": o}) for o in listing["items"]]
        return Response(200, ("\n".join(lines) + "\n" if lines else "").encode(), content_type="application/json")

    def _create(self, kind: Kind, ns: str | None, body: Obj, *, dry_run: bool) -> Obj:
        meta = body.setdefault("metadata", {})
        if not isinstance(meta, dict):
            raise ApiError(400, "BadRequest", "metadata must be an object")
        if body.get("kind") not in (None, kind.kind) or body.get("apiVersion") not in (None, kind.api_version):
            raise ApiError(400, "BadRequest", f"the API version in the data ({body.get('apiVersion')}) does not "
                           f"match the expected API version ({kind.api_version})")
        body["kind"], body["apiVersion"] = kind.kind, kind.api_version
        if not meta.get("name") and meta.get("generateName"):
            meta["name"] = meta["generateName"] + uuid.uuid4().hex[:5]
        name = meta.get("name")
        if not name:
            raise _invalid(kind, "", [("metadata.name", "Required value: name or generateName is required")])
        if kind.namespaced:
            if meta.get("namespace") not in (None, ns):
                raise ApiError(400, "BadRequest", "the namespace of the provided object does not match the "
                               "namespace sent on the request")
            meta["namespace"] = ns
            if not self._namespace_exists(str(ns)):
                raise ApiError(404, "NotFound", f'namespaces "{ns}" not found', {"name": ns, "kind": "namespaces"})
        else:
            meta.pop("namespace", None)
        key = (ns or "" if kind.namespaced else "", name)
        if key in self._bucket(kind):
            raise ApiError(409, "AlreadyExists",
                           f'{kind.plural}{"." + kind.group if kind.group else ""} "{name}" already exists',
                           {"name": name, "group": kind.group, "kind": kind.plural})
        self._admit(kind, body, None)
        meta.update({"uid": str(uuid.uuid4()), "creationTimestamp": _now(), "generation": 1})
        meta.pop("deletionTimestamp", None)
        if dry_run:
            meta["resourceVersion"] = str(self._rv)
            return body
        meta["resourceVersion"] = self._next_rv()
        self._bucket(kind)[key] = body
        self._after_change(kind, "ADDED", body)
        return copy.deepcopy(body)

    def _update(self, kind: Kind, ns: str | None, name: str, body: Obj, sub: str | None, dry_run: bool) -> Obj:
        old = self._get(kind, ns, name)
        meta = body.setdefault("metadata", {})
        rv = meta.get("resourceVersion")
        if rv and rv != old["metadata"]["resourceVersion"]:
            raise ApiError(
                409, "Conflict",
                f'Operation cannot be fulfilled on {kind.plural}{"." + kind.group if kind.group else ""} "{name}": '
                "the object has been modified; please apply your changes to the latest version and try again",
                {"name": name, "group": kind.group, "kind": kind.plural})
        if meta.get("name", name) != name:
            raise ApiError(400, "BadRequest", "the name of the object does not match the name on the URL")
        return self._store_update(kind, old, body, sub, dry_run)

    def _store_update(self, kind: Kind, old: Obj, new: Obj, sub: str | None, dry_run: bool) -> Obj:
        new = copy.deepcopy(new)
        new["kind"], new["apiVersion"] = kind.kind, kind.api_version
        meta = new.setdefault("metadata", {})
        for keep in ("uid", "creationTimestamp", "namespace", "name", "deletionTimestamp"):
            if keep in old["metadata"]:
                meta[keep] = old["metadata"][keep]
            else:
                meta.pop(keep, None)
        if sub == "status":
            # Only status changes through the status subresource.
            new = {**copy.deepcopy(old), "status": new.get("status")}
            meta = new["metadata"]
        elif kind.status_subresource and "status" in old:
            new["status"] = copy.deepcopy(old["status"])
        elif kind.status_subresource:
            new.pop("status", None)
        changed_spec = {k: v for k, v in new.items() if k not in ("metadata", "status")} != \
            {k: v for k, v in old.items() if k not in ("metadata", "status")}
        meta["generation"] = old["metadata"].get("generation", 1) + (1 if changed_spec else 0)
        if sub != "status":
            self._admit(kind, new, old)
        if _without_rv(new) == _without_rv(old):
            return copy.deepcopy(old)  # no change: no new resourceVersion, no event
        if dry_run:
            return new
        meta["resourceVersion"] = self._next_rv()
        key = (meta.get("namespace", "") if kind.namespaced else "", meta["name"])
        if meta.get("deletionTimestamp") and not meta.get("finalizers"):
            del self._bucket(kind)[key]
            self._after_change(kind, "DELETED", new)
            return new
        self._bucket(kind)[key] = new
        self._after_change(kind, "MODIFIED", new)
        return copy.deepcopy(new)

    def _patch(self, req: Request, kind: Kind, ns: str | None, name: str, sub: str | None, dry_run: bool) -> Response:
        ctype = req.content_type
        patch = self._body(req)
        key = (ns or "" if kind.namespaced else "", name)
        exists = key in self._bucket(kind)
        if ctype == "application/apply-patch+yaml":
            if not req.param("fieldManager"):
                raise ApiError(400, "BadRequest", "PatchOptions.meta.k8s.io \"\" is invalid: fieldManager: "
                               "Required value: is required for apply patch")
            if not exists:
                return Response(201, self._create(kind, ns, patch, dry_run=dry_run))
            # Simplified server-side apply: the applied configuration is merged into the live object.
            new = strategic_merge(self._get(kind, ns, name), patch)
            return Response(200, self._store_update(kind, self._get(kind, ns, name), new, sub, dry_run))
        if not exists:
            raise _not_found(kind, name)
        old = self._get(kind, ns, name)
        try:
            if ctype == "application/merge-patch+json":
                new = merge_patch(old, patch)
            elif ctype == "application/strategic-merge-patch+json":
                if kind.group not in ("", "apps", "networking.k8s.io", "apiextensions.k8s.io"):
                    raise ApiError(415, "UnsupportedMediaType",
                                   "strategic merge patch is not supported for custom resources")
                new = strategic_merge(old, patch)
            elif ctype == "application/json-patch+json":
                new = json_patch(old, patch)
            else:
                raise ApiError(415, "UnsupportedMediaType", f"the media type {ctype!r} is not supported for PATCH")
        except PatchError as exc:
            raise ApiError(422, "Invalid", str(exc)) from None
        rv = (patch.get("metadata") or {}).get("resourceVersion") if isinstance(patch, dict) else None
        if rv and rv != old["metadata"]["resourceVersion"]:
            raise ApiError(409, "Conflict", f'Operation cannot be fulfilled on {kind.plural} "{name}": the object '
                           "has been modified; please apply your changes to the latest version and try again")
        return Response(200, self._store_update(kind, old, new, sub, dry_run))

    def _delete(self, kind: Kind, ns: str | None, name: str, dry_run: bool) -> Obj:
        obj = self._get(kind, ns, name)
        if dry_run:
            return obj
        key = (ns or "" if kind.namespaced else "", name)
        if obj["metadata"].get("finalizers"):
            if not obj["metadata"].get("deletionTimestamp"):
                obj["metadata"]["deletionTimestamp"] = _now()
                obj["metadata"]["resourceVersion"] = self._next_rv()
                self._bucket(kind)[key] = obj
                self._after_change(kind, "MODIFIED", obj)
            return copy.deepcopy(obj)
        del self._bucket(kind)[key]
        self._after_change(kind, "DELETED", obj)
        return obj

    def _delete_collection(self, kind: Kind, ns: str | None, req: Request, dry_run: bool) -> Obj:
        listing = self._list(kind, ns, req)
        for item in listing["items"]:
            self._delete(kind, item["metadata"].get("namespace"), item["metadata"]["name"], dry_run)
        return listing

    # --- admission and controllers ---------------------------------------------------------------------------------

    def _admit(self, kind: Kind, obj: Obj, old: Obj | None) -> None:
        if kind.plural == "services" and not kind.group:
            self._admit_service(kind, obj, old)
        elif kind.plural == "namespaces" and not kind.group:
            obj["status"] = {"phase": "Active"}
            obj["metadata"].setdefault("labels", {})["kubernetes.io/metadata.name"] = obj["metadata"]["name"]
        elif kind.plural == "customresourcedefinitions":
            self._admit_crd(kind, obj)
        elif kind.plural == "deployments":
            spec = obj.setdefault("spec", {})
            spec.setdefault("replicas", 1)
            if not (spec.get("template") or {}).get("metadata", {}).get("labels"):
                raise _invalid(kind, obj["metadata"]["name"],
                               [("spec.template.metadata.labels", "Invalid value: null: `selector` does not match "
                                 "template `labels`")])
            spec.setdefault("selector", {"matchLabels": spec["template"]["metadata"]["labels"]})

    def _allocated_node_ports(self, except_key: tuple[str, str] | None) -> dict[int, str]:
        used = {}
        for key, svc in self._bucket(self._state.kinds[("", "services")]).items():
            if key == except_key:
                continue
            for p in svc.get("spec", {}).get("ports") or []:
                if p.get("nodePort"):
                    used[int(p["nodePort"])] = f"{key[0]}/{key[1]}"
        return used

    def _admit_service(self, kind: Kind, svc: Obj, old: Obj | None) -> None:
        name = svc["metadata"]["name"]
        spec = svc.setdefault("spec", {})
        stype = spec.setdefault("type", "ClusterIP")
        ports = spec.get("ports") or []
        causes: _List[tuple[str, str]] = []
        if stype not in ("ClusterIP", "NodePort", "LoadBalancer", "ExternalName"):
            causes.append(("spec.type", f'Unsupported value: "{stype}": supported values: "ClusterIP", '
                           '"ExternalName", "LoadBalancer", "NodePort"'))
        if not ports and stype != "ExternalName":
            causes.append(("spec.ports", "Required value"))
        old_ports = {p.get("port"): p for p in ((old or {}).get("spec", {}).get("ports") or [])}
        old_type = (old or {}).get("spec", {}).get("type")
        key = (svc["metadata"].get("namespace", ""), name)
        used = self._allocated_node_ports(key)
        low, high = self.node_port_range
        for i, p in enumerate(ports):
            if not isinstance(p.get("port"), int) or not 1 <= p["port"] <= 65535:
                causes.append((f"spec.ports[{i}].port", f"Invalid value: {p.get('port')}: must be between 1 and "
                               "65535, inclusive"))
                continue
            if len(ports) > 1 and not p.get("name"):
                causes.append((f"spec.ports[{i}].name", "Required value"))
            p.setdefault("protocol", "TCP")
            p.setdefault("targetPort", p["port"])
            if stype in ("ClusterIP", "ExternalName"):
                # Like dropTypeDependentFields: node ports the user did not change go away with the type.
                prev = old_ports.get(p["port"], {})
                if p.get("nodePort") and old_type in ("NodePort", "LoadBalancer") \
                        and p.get("nodePort") == prev.get("nodePort"):
                    p.pop("nodePort")
                if p.get("nodePort"):
                    causes.append((f"spec.ports[{i}].nodePort",
                                   f"Forbidden: may not be used when `type` is '{stype}'"))
                continue
            wanted = p.get("nodePort")
            if wanted is None and old_ports.get(p["port"], {}).get("nodePort"):
                wanted = old_ports[p["port"]]["nodePort"]  # keep an allocated port on update
            if wanted is not None:
                if not isinstance(wanted, int) or not low <= wanted <= high:
                    causes.append((f"spec.ports[{i}].nodePort", f"Invalid value: {wanted}: provided port is not in "
                                   f"the valid range. The range of valid ports is {low}-{high}"))
                elif wanted in used:
                    causes.append((f"spec.ports[{i}].nodePort",
                                   f"Invalid value: {wanted}: provided port is already allocated"))
                else:
                    p["nodePort"] = wanted
                    used[wanted] = name
                continue
            free = [n for n in range(low, high + 1) if n not in used]
            if not free:
                causes.append((f"spec.ports[{i}].nodePort", "Internal error: range is full"))
                continue
            p["nodePort"] = self._rng.choice(free)
            used[p["nodePort"]] = name
        if causes:
            raise _invalid(kind, name, causes)
        if stype != "ExternalName" and not spec.get("clusterIP"):
            spec["clusterIP"] = (old or {}).get("spec", {}).get("clusterIP") or self._next_ip("10.96")
            spec["clusterIPs"] = [spec["clusterIP"]]
        spec.setdefault("sessionAffinity", "None")
        if stype in ("NodePort", "LoadBalancer"):
            spec.setdefault("externalTrafficPolicy", "Cluster")
        svc.setdefault("status", {"loadBalancer": {}})

    def _next_ip(self, prefix: str) -> str:
        self._ip_counter += 1
        return f"{prefix}.{self._ip_counter // 250 % 250}.{self._ip_counter % 250 + 1}"

    def _admit_crd(self, kind: Kind, crd: Obj) -> None:
        spec = crd.get("spec") or {}
        names = spec.get("names") or {}
        group, plural = spec.get("group"), names.get("plural")
        if not group or not plural or not names.get("kind") or crd["metadata"]["name"] != f"{plural}.{group}":
            raise _invalid(kind, crd["metadata"]["name"], [("metadata.name", "Invalid value: must be spec.names."
                                                            "plural+\".\"+spec.group")])
        for v in spec.get("versions") or []:
            if v.get("served", True):
                self._register(Kind(group, v["name"], plural, names["kind"], spec.get("scope") == "Namespaced",
                                    tuple(names.get("shortNames") or ()),
                                    "status" in (v.get("subresources") or {})))
        crd["status"] = {"acceptedNames": names, "storedVersions": [v["name"] for v in spec.get("versions") or []],
                         "conditions": [{"type": "Established", "status": "True", "reason": "InitialNamesAccepted"},
                                        {"type": "NamesAccepted", "status": "True", "reason": "NoConflicts"}]}

    def _after_change(self, kind: Kind, event: str, obj: Obj) -> None:
        self._emit(event, obj)
        if kind.group == "apps" and kind.plural == "deployments":
            self._reconcile_deployment(obj, deleted=event == "DELETED")
        if not kind.group and kind.plural == "services" and event == "DELETED":
            self._bucket(self._state.kinds[("", "endpoints")]).pop(
                (obj["metadata"]["namespace"], obj["metadata"]["name"]), None)
        elif not kind.group and kind.plural in ("pods", "services"):
            self._reconcile_endpoints(obj["metadata"].get("namespace", "default"))
        if kind.plural == "customresourcedefinitions" and event == "DELETED":
            self._unregister_crd(obj)
        if not kind.group and kind.plural == "namespaces" and event == "DELETED":
            ns = obj["metadata"]["name"]
            for k in list(self._state.kinds.values()):
                if k.namespaced:
                    for key in [key for key in self._bucket(k) if key[0] == ns]:
                        del self._bucket(k)[key]
        if not kind.group and kind.plural == "pods" and event == "MODIFIED":
            # A pod became ready (or not): the rolling update of its Deployment may go on.
            owner = (obj["metadata"].get("annotations") or {}).get("sim.gitlab-mci/deployment")
            deploy = self._bucket(self._state.kinds[("apps", "deployments")]).get(
                (obj["metadata"].get("namespace", ""), str(owner))) if owner else None
            if deploy is not None:
                self._reconcile_deployment(deploy, deleted=False)

    def _reconcile_deployment(self, deploy: Obj, *, deleted: bool) -> None:
        """Converge a Deployment's pods, by a rolling update when its template changed.

        Like the Deployment controller (strategy RollingUpdate, maxSurge and maxUnavailable default 25%): new pods
        are created up to replicas + maxSurge, and an old pod is deleted only while replicas - maxUnavailable pods
        stay ready. Pods are ready at once unless a pod mutator gave them a readiness gate (GKE's NEG controller);
        the update goes on when such a pod becomes ready (a pod status change calls this again).
        """
        ns, name = deploy["metadata"]["namespace"], deploy["metadata"]["name"]
        if (ns, name) in self._rolling:
            return
        self._rolling.add((ns, name))
        try:
            self._roll(deploy, deleted=deleted)
        finally:
            self._rolling.discard((ns, name))

    def _roll(self, deploy: Obj, *, deleted: bool) -> None:
        pods_kind = self._state.kinds[("", "pods")]
        ns, name = deploy["metadata"]["namespace"], deploy["metadata"]["name"]
        template = deploy["spec"]["template"]
        tpl_hash = hashlib.sha256(json.dumps(template, sort_keys=True).encode()).hexdigest()[:10]
        want = 0 if deleted else int(deploy["spec"].get("replicas", 1))
        strategy = deploy["spec"].get("strategy") or {}
        rolling = strategy.get("rollingUpdate") or {}
        surge = _scaled(rolling.get("maxSurge", "25%"), want, round_up=True)
        unavailable = _scaled(rolling.get("maxUnavailable", "25%"), want, round_up=False)
        if strategy.get("type") == "Recreate":
            surge, unavailable = 0, want
        elif surge == 0 and unavailable == 0:
            surge = 1
        nodes = sorted(self._bucket(self._state.kinds[("", "nodes")]).values(), key=lambda n: n["metadata"]["name"])
        for _ in range(4 * want + 16):  # each pass creates or deletes at least one pod, or stops
            owned = {k: p for k, p in self._bucket(pods_kind).items()
                     if k[0] == ns and p["metadata"].get("annotations", {}).get("sim.gitlab-mci/deployment") == name}
            current = [k for k, p in owned.items() if p["metadata"]["labels"].get("pod-template-hash") == tpl_hash]
            stale = [k for k in owned if k not in current]
            if not stale or deleted:
                for key in stale + current[want:]:
                    self._delete(pods_kind, ns, key[1], False)
                for i in range(len(current), want):
                    self._new_pod(ns, name, template, tpl_hash, nodes, i)
                break
            progress = False
            total = len(current) + len(stale)
            while len(current) < want and total < want + surge:
                current.append(self._new_pod(ns, name, template, tpl_hash, nodes, len(current)))
                total += 1
                progress = True
            ready = sum(1 for k in current if _pod_ready(self._bucket(pods_kind).get(k)))
            ready += sum(1 for k in stale if _pod_ready(owned[k]))
            for key in sorted(stale, key=lambda k: _pod_ready(owned[k])):  # pods that are not ready go first
                if not _pod_ready(owned[key]):
                    self._delete(pods_kind, ns, key[1], False)
                    progress = True
                elif ready - 1 >= want - unavailable:
                    self._delete(pods_kind, ns, key[1], False)
                    ready -= 1
                    progress = True
            if not progress:
                break
        if not deleted:
            live = self._bucket(self._state.kinds[("apps", "deployments")]).get((ns, name))
            if live is not None:
                mine = [p for (pns, _), p in self._bucket(pods_kind).items() if pns == ns and
                        p["metadata"].get("annotations", {}).get("sim.gitlab-mci/deployment") == name]
                updated = [p for p in mine if p["metadata"]["labels"].get("pod-template-hash") == tpl_hash]
                ready_n = sum(1 for p in mine if _pod_ready(p))
                live["status"] = {"observedGeneration": live["metadata"].get("generation", 1),
                                  "replicas": len(mine), "readyReplicas": ready_n, "availableReplicas": ready_n,
                                  "updatedReplicas": len(updated),
                                  "conditions": [{"type": "Available",
                                                  "status": "True" if ready_n >= want - unavailable else "False",
                                                  "reason": "MinimumReplicasAvailable"}]}
        self._reconcile_endpoints(ns)

    def _new_pod(self, ns: str, name: str, template: Obj, tpl_hash: str, nodes: _List[Obj],
                 i: int) -> tuple[str, str]:
        node = nodes[i % len(nodes)]["metadata"]["name"] if nodes else None
        labels = {**(template.get("metadata", {}).get("labels") or {}), "pod-template-hash": tpl_hash}
        pod: Obj = {
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": f"{name}-{tpl_hash}-{uuid.uuid4().hex[:5]}", "namespace": ns, "labels": labels,
                         "annotations": {**(template.get("metadata", {}).get("annotations") or {}),
                                         "sim.gitlab-mci/deployment": name}},
            "spec": {**copy.deepcopy(template.get("spec") or {}), "nodeName": node},
            "status": {"phase": "Running", "podIP": self._next_ip("10.4"), "startTime": _now(),
                       "conditions": [{"type": "Ready", "status": "True"},
                                      {"type": "ContainersReady", "status": "True"}]},
        }
        for mutate in self.pod_mutators:
            mutate(pod)
        if pod["spec"].get("readinessGates"):
            # The kubelet reports Ready only once every readiness gate's condition is True.
            gates = {g.get("conditionType") for g in pod["spec"]["readinessGates"]}
            conditions = {c["type"]: c for c in pod["status"]["conditions"]}
            if not all(conditions.get(g, {}).get("status") == "True" for g in gates):
                conditions["Ready"] = {"type": "Ready", "status": "False", "reason": "ReadinessGatesNotReady",
                                       "message": "corresponding condition of pod readiness gate "
                                                  f"\"{sorted(str(g) for g in gates)[0]}\" does not exist."}
                pod["status"]["conditions"] = list(conditions.values())
        pod["metadata"].update({"uid": str(uuid.uuid4()), "creationTimestamp": _now(),
                                "resourceVersion": self._next_rv()})
        key = (ns, pod["metadata"]["name"])
        self._bucket(self._state.kinds[("", "pods")])[key] = pod
        self._emit("ADDED", pod)
        return key

    def _reconcile_endpoints(self, ns: str) -> None:
        ep_kind = self._state.kinds[("", "endpoints")]
        pods = [p for (pns, _), p in self._bucket(self._state.kinds[("", "pods")]).items() if pns == ns]
        for (sns, sname), svc in list(self._bucket(self._state.kinds[("", "services")]).items()):
            selector = svc.get("spec", {}).get("selector")
            if sns != ns or not selector:
                continue
            chosen = [p for p in pods if all(p["metadata"].get("labels", {}).get(k) == v for k, v in selector.items())
                      and p.get("status", {}).get("phase") == "Running"]
            ports = []
            for sp in svc["spec"].get("ports") or []:
                target = sp.get("targetPort", sp.get("port"))
                if isinstance(target, str) and chosen:
                    target = next((cp.get("containerPort") for c in chosen[0]["spec"].get("containers", [])
                                   for cp in c.get("ports", []) if cp.get("name") == target), sp.get("port"))
                entry = {"port": target, "protocol": sp.get("protocol", "TCP")}
                if sp.get("name"):
                    entry["name"] = sp["name"]
                ports.append(entry)
            addresses = [{"ip": p["status"]["podIP"], "nodeName": p["spec"].get("nodeName"),
                          "targetRef": {"kind": "Pod", "namespace": ns, "name": p["metadata"]["name"],
                                        "uid": p["metadata"]["uid"]}} for p in chosen]
            ep: Obj = {"apiVersion": "v1", "kind": "Endpoints",
                  "metadata": {"name": sname, "namespace": ns, "labels": svc["metadata"].get("labels", {})},
                  "subsets": [{"addresses": addresses, "ports": ports}] if addresses else []}
            old = self._bucket(ep_kind).get((ns, sname))
            if old is not None and old.get("subsets") == ep["subsets"]:
                continue
            ep["metadata"].update({"uid": (old or {}).get("metadata", {}).get("uid", str(uuid.uuid4())),
                                   "creationTimestamp": (old or {}).get("metadata", {}).get("creationTimestamp",
                                                                                             _now()),
                                   "resourceVersion": self._next_rv()})
            self._bucket(ep_kind)[(ns, sname)] = ep


def _pod_ready(pod: Obj | None) -> bool:
    return pod is not None and any(c.get("type") == "Ready" and c.get("status") == "True"
                                   for c in (pod.get("status") or {}).get("conditions") or [])


def _scaled(value: Any, replicas: int, *, round_up: bool) -> int:
    """maxSurge / maxUnavailable: a number, or a percentage of replicas (surge rounds up, unavailable down)."""
    if isinstance(value, str) and value.endswith("%"):
        share = replicas * int(value[:-1] or 0)
        return -(-share // 100) if round_up else share // 100
    return int(value)
