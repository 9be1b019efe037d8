"""A GKE Hub (fleet) v1 REST endpoint: memberships and features, as google-cloud-gke-hub's REST transport calls them.

Paths are the client's (``/v1/{parent=projects/*/locations/*}/memberships`` …). Every create, update and delete
answers a long-running ``Operation`` that is already ``done`` with its ``response`` packed as an ``Any``, so the
client's ``operation.result()`` returns without polling; ``GET …/operations/{op}`` answers it again when asked.
A membership must name a simulated GKE cluster (``//container.googleapis.com/projects/P/locations/L/clusters/N``),
and the ``multiclusteringress`` feature's config membership must be a member: the simulator refuses loudly what the
real API would not accept.
"""

from __future__ import annotations

import copy
import os
import re
import threading
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from gitlab_mci.sim.httpd import Request, Response, google_error
from gitlab_mci.sim.spec import WorldSpec

Obj = dict[str, Any]
_TYPE = "type.googleapis.com/google.cloud.gkehub.v1."
_ID_RE = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
_LINK_RE = re.compile(r"^//container\.googleapis\.com/projects/(?P<project>[^/]+)/locations/(?P<location>[^/]+)/"
                      r"clusters/(?P<name>[^/]+)$")
_MEMBERSHIP_RE = re.compile(r"^projects/(?P<project>[^/]+)/locations/(?P<location>[^/]+)/memberships/(?P<id>[^/]+)$")
KNOWN_FEATURES = ("multiclusteringress", "multiclusterservicediscovery")


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class _Error(Exception):
    def __init__(self, status: int, message: str, reason: str) -> None:
        super().__init__(message)
        self.status, self.reason = status, reason


def cluster_link(resource_link: str) -> str | None:
    """``<location>/<name>`` of a membership's GKE resource link (what MultiClusterService links name)."""
    m = _LINK_RE.match(resource_link or "")
    return f"{m.group('location')}/{m.group('name')}" if m else None


class GkeHubEmulator:
    """Fleet memberships and features of the simulated project(s), served at ``/v1/``."""

    def __init__(self, spec: WorldSpec) -> None:
        self.spec = spec
        self._lock = threading.RLock()
        self._memberships: dict[str, Obj] = {}  # full name -> membership
        self._features: dict[str, Obj] = {}  # full name -> feature
        self._ops: dict[str, Obj] = {}
        self._listeners: list[Callable[[], None]] = []

    # --- public API (simulated controllers, tests) ---------------------------------------------------------------

    def add_listener(self, fn: Callable[[], None]) -> None:
        """Call ``fn()`` after every change (the simulated Multi Cluster Ingress controller reconciles)."""
        self._listeners.append(fn)

    def register(self, cluster: str, membership_id: str | None = None) -> Obj:
        """Register a simulated cluster as a fleet member directly (no HTTP, no journal entry)."""
        c = self.spec.cluster(cluster)
        body = {"endpoint": {"gkeCluster": {"resourceLink": self._resource_link(c.location, c.name)}}}
        with self._lock:
            return self._create_membership(self.spec.project, "global", membership_id or c.name, body)

    def enable_mci(self, config_cluster: str) -> Obj:
        """Enable the ``multiclusteringress`` feature with ``config_cluster``'s membership (registered first)."""
        with self._lock:
            link = self.spec.cluster(config_cluster).link
            member = next((m for m in self._memberships.values() if self.link_of(m) == link), None)
            if member is None:
                member = self.register(config_cluster)
            body = {"spec": {"multiclusteringress": {"configMembership": member["name"]}}}
            name = self._feature_name(self.spec.project, "multiclusteringress")
            if name in self._features:
                self._features[name]["spec"] = body["spec"]
                self._changed()
                return copy.deepcopy(self._features[name])
            return self._create_feature(self.spec.project, "global", "multiclusteringress", body)

    def enable_feature(self, fid: str) -> Obj:
        """Enable a feature that has no spec (``multiclusterservicediscovery``) directly; idempotent."""
        with self._lock:
            name = self._feature_name(self.spec.project, fid)
            if name in self._features:
                return copy.deepcopy(self._features[name])
            return self._create_feature(self.spec.project, "global", fid, {})

    def disable_feature(self, fid: str) -> None:
        """Disable a feature directly (tests of what a tool says when it is missing)."""
        with self._lock:
            if self._features.pop(self._feature_name(self.spec.project, fid), None) is not None:
                self._changed()

    def feature_enabled(self, fid: str, project: str | None = None) -> bool:
        with self._lock:
            return self._feature_name(project or self.spec.project, fid) in self._features

    def member_links(self, project: str | None = None) -> set[str]:
        """``<location>/<name>`` of every member of the project's fleet."""
        project = project or self.spec.project
        with self._lock:
            return {link for m in self._memberships.values()
                    if m["name"].startswith(f"projects/{project}/") and (link := self.link_of(m))}

    def config_link(self, project: str | None = None) -> str | None:
        """The link of the Multi Cluster Ingress config membership, when the feature is enabled."""
        project = project or self.spec.project
        with self._lock:
            feature = self._features.get(self._feature_name(project, "multiclusteringress"))
            if feature is None:
                return None
            wanted = ((feature.get("spec") or {}).get("multiclusteringress") or {}).get("configMembership", "")
            m = _MEMBERSHIP_RE.match(wanted)
            if m is None:
                return None
            for member in self._memberships.values():
                mm = _MEMBERSHIP_RE.match(member["name"])
                if mm and mm.group("id") == m.group("id") and mm.group("location") == m.group("location"):
                    return self.link_of(member)
            return None

    @staticmethod
    def link_of(membership: Obj) -> str | None:
        return cluster_link(((membership.get("endpoint") or {}).get("gkeCluster") or {}).get("resourceLink", ""))

    def memberships(self) -> list[Obj]:
        with self._lock:
            return [copy.deepcopy(m) for _, m in sorted(self._memberships.items())]

    def features(self) -> list[Obj]:
        with self._lock:
            return [copy.deepcopy(f) for _, f in sorted(self._features.items())]

    # --- HTTP ----------------------------------------------------------------------------------------------------

    def handle(self, req: Request) -> Response:
        if not req.path.startswith("/v1/"):
            return google_error(404, f"The requested URL {req.path} was not found on this server.", "notFound")
        path = req.path.removeprefix("/v1/").rstrip("/")
        try:
            with self._lock:
                return self._dispatch(req, path)
        except _Error as exc:
            return google_error(exc.status, str(exc), exc.reason)

    def _dispatch(self, req: Request, path: str) -> Response:
        parts = path.split("/")
        if len(parts) < 5 or parts[0] != "projects" or parts[2] != "locations":
            raise _Error(404, f"The requested URL /v1/{path} was not found on this server.", "notFound")
        project, location, collection = parts[1], parts[3], parts[4]
        if project not in (self.spec.project, str(self.spec.project_number)):
            raise _Error(403, f"Permission 'gkehub.{collection}.list' denied on resource "
                         f"'//gkehub.googleapis.com/projects/{project}/locations/{location}' (or it may not exist).",
                         "forbidden")
        project = self.spec.project
        name = parts[5] if len(parts) == 6 else None
        if len(parts) > 6:
            raise _Error(404, f"The requested URL /v1/{path} was not found on this server.", "notFound")
        if collection == "operations" and name and req.method == "GET":
            op = self._ops.get(f"projects/{project}/locations/{location}/operations/{name}")
            if op is None:
                raise _Error(404, f"operation {name} not found", "notFound")
            return Response(200, op)
        if collection == "memberships":
            return self._memberships_call(req, project, location, name)
        if collection == "features":
            return self._features_call(req, project, location, name)
        raise _Error(501, f"gitlab-mci simulator does not implement {req.method} /v1/{path}", "notImplemented")

    def _list(self, store: dict[str, Obj], project: str, location: str, segment: str) -> Obj:
        prefix = f"projects/{project}/locations/"
        items = [copy.deepcopy(o) for n, o in sorted(store.items())
                 if n.startswith(prefix) and (location == "-" or n.split("/")[3] == location)
                 and n.split("/")[4] == segment]
        return {"resources": items} if items else {}

    def _memberships_call(self, req: Request, project: str, location: str, name: str | None) -> Response:
        if name is None and req.method == "GET":
            return Response(200, self._list(self._memberships, project, location, "memberships"))
        if name is None and req.method == "POST":
            mid = req.param("membershipId") or ""
            body = self._body(req)
            return Response(200, self._operation("create", self._create_membership(project, location, mid, body)))
        if name is None:
            raise _Error(405, f"Method {req.method} is not allowed", "badRequest")
        full = f"projects/{project}/locations/{location}/memberships/{name}"
        found = self._memberships.get(full)
        if found is None:
            raise _Error(404, f"Resource '{full}' was not found", "notFound")
        if req.method == "GET":
            return Response(200, copy.deepcopy(found))
        if req.method == "DELETE":
            feature = self._features.get(self._feature_name(project, "multiclusteringress"))
            config = ((feature or {}).get("spec") or {}).get("multiclusteringress", {}).get("configMembership", "")
            if config.rsplit("/", 1)[-1] == name:
                raise _Error(400, f"membership {name} is the config membership of the multiclusteringress "
                             "feature; change or disable the feature first", "failedPrecondition")
            del self._memberships[full]
            self._changed()
            return Response(200, self._operation("delete", None, target=full))
        if req.method == "PATCH":
            body = self._body(req)
            for key in ("description", "labels", "externalId"):
                if key in body:
                    found[key] = body[key]
            found["updateTime"] = _now()
            self._changed()
            return Response(200, self._operation("update", found))
        raise _Error(405, f"Method {req.method} is not allowed", "badRequest")

    def _features_call(self, req: Request, project: str, location: str, name: str | None) -> Response:
        if name is None and req.method == "GET":
            return Response(200, self._list(self._features, project, location, "features"))
        if name is None and req.method == "POST":
            fid = req.param("featureId") or ""
            feature = self._create_feature(project, location, fid, self._body(req))
            return Response(200, self._operation("create", feature))
        if name is None:
            raise _Error(405, f"Method {req.method} is not allowed", "badRequest")
        full = f"projects/{project}/locations/{location}/features/{name}"
        found = self._features.get(full)
        if found is None:
            raise _Error(404, f"Resource '{full}' was not found", "notFound")
        if req.method == "GET":
            return Response(200, copy.deepcopy(found))
        if req.method == "DELETE":
            del self._features[full]
            self._changed()
            return Response(200, self._operation("delete", None, target=full))
        if req.method == "PATCH":
            body = self._body(req)
            mask = [p.strip() for p in (req.param("updateMask") or "").split(",") if p.strip()]
            if not mask:
                raise _Error(400, "update_mask is required", "badRequest")
            for path in mask:
                snake = re.sub(r"([A-Z])", lambda m: "_" + m.group(1).lower(), path)
                if snake in ("spec", "spec.multiclusteringress", "spec.multiclusteringress.config_membership"):
                    spec = copy.deepcopy(body.get("spec") or {})
                    self._check_feature_spec(project, name, spec)
                    found["spec"] = spec
                elif snake == "labels":
                    found["labels"] = dict(body.get("labels") or {})
                else:
                    raise _Error(400, f"update_mask path {path!r} is not supported", "badRequest")
            found["updateTime"] = _now()
            self._refresh_feature_state(found)
            self._changed()
            return Response(200, self._operation("update", found))
        raise _Error(405, f"Method {req.method} is not allowed", "badRequest")

    # --- behaviour -----------------------------------------------------------------------------------------------

    def _resource_link(self, location: str, name: str) -> str:
        return f"//container.googleapis.com/projects/{self.spec.project}/locations/{location}/clusters/{name}"

    @staticmethod
    def _feature_name(project: str, fid: str) -> str:
        return f"projects/{project}/locations/global/features/{fid}"

    def _body(self, req: Request) -> Obj:
        try:
            body = req.json()
        except ValueError:
            raise _Error(400, "Invalid JSON payload received.", "badRequest") from None
        if not isinstance(body, dict):
            raise _Error(400, "Invalid JSON payload received: expected an object.", "badRequest")
        return body

    def _create_membership(self, project: str, location: str, mid: str, body: Obj) -> Obj:
        if not _ID_RE.match(mid):
            raise _Error(400, f"membership_id {mid!r} is invalid: it must be 1-63 lowercase letters, digits or "
                         "hyphens", "badRequest")
        if location != "global" and location not in {c.region for c in self.spec.clusters}:
            raise _Error(400, f"location {location!r} is not supported for memberships", "badRequest")
        full = f"projects/{project}/locations/{location}/memberships/{mid}"
        if full in self._memberships:
            raise _Error(409, f"Membership '{full}' already exists", "alreadyExists")
        resource_link = ((body.get("endpoint") or {}).get("gkeCluster") or {}).get("resourceLink", "")
        m = _LINK_RE.match(resource_link)
        if m is None:
            raise _Error(400, f"endpoint.gke_cluster.resource_link {resource_link!r} is not "
                         "//container.googleapis.com/projects/P/locations/L/clusters/N", "badRequest")
        known = {c.link for c in self.spec.clusters}
        link = f"{m.group('location')}/{m.group('name')}"
        if m.group("project") not in (project, str(self.spec.project_number)) or link not in known:
            raise _Error(404, f"GKE cluster {resource_link} not found", "notFound")
        for other in self._memberships.values():
            if self.link_of(other) == link:
                raise _Error(409, f"cluster {resource_link} is already registered as {other['name']}",
                             "alreadyExists")
        now = _now()
        c = next(c for c in self.spec.clusters if c.link == link)
        issuer = f"https://container.googleapis.com/v1/projects/{project}/locations/{c.location}/clusters/{c.name}"
        membership = {
            "name": full,
            "labels": dict(body.get("labels") or {}),
            "description": body.get("description", ""),
            "endpoint": {"gkeCluster": {"resourceLink": resource_link},
                         "kubernetesMetadata": {"kubernetesApiServerVersion": "v1.30.5-gke.1014001",
                                                "nodeProviderId": "gce", "updateTime": now}},
            "state": {"code": "READY"},
            "createTime": now, "updateTime": now,
            "uniqueId": str(uuid.uuid5(uuid.NAMESPACE_URL, full)),
            "authority": {"issuer": issuer, "workloadIdentityPool": f"{project}.svc.id.goog",
                          "identityProvider": issuer},
        }
        self._memberships[full] = membership
        self._changed()
        return copy.deepcopy(membership)

    def _check_feature_spec(self, project: str, fid: str, spec: Obj) -> None:
        if fid != "multiclusteringress":
            return
        config = (spec.get("multiclusteringress") or {}).get("configMembership", "")
        m = _MEMBERSHIP_RE.match(config)
        if m is None:
            raise _Error(400, "spec.multiclusteringress.config_membership is required: "
                         "projects/P/locations/global/memberships/M", "badRequest")
        if not any(_MEMBERSHIP_RE.match(n) and n.split("/")[3] == m.group("location")
                   and n.rsplit("/", 1)[-1] == m.group("id") for n in self._memberships):
            raise _Error(400, f"config membership {config} is not a member of the fleet of project {project}",
                         "failedPrecondition")

    def _create_feature(self, project: str, location: str, fid: str, body: Obj) -> Obj:
        if fid not in KNOWN_FEATURES:
            raise _Error(400, f"feature_id {fid!r} is not a known feature (the simulator knows "
                         f"{', '.join(KNOWN_FEATURES)})", "badRequest")
        if location != "global":
            raise _Error(400, "features live in location global", "badRequest")
        full = self._feature_name(project, fid)
        if full in self._features:
            raise _Error(409, f"Feature '{full}' already exists", "alreadyExists")
        spec = copy.deepcopy(body.get("spec") or {})
        self._check_feature_spec(project, fid, spec)
        now = _now()
        feature = {"name": full, "labels": dict(body.get("labels") or {}), "resourceState": {"state": "ACTIVE"},
                   "spec": spec, "createTime": now, "updateTime": now}
        self._refresh_feature_state(feature)
        self._features[full] = feature
        self._changed()
        return copy.deepcopy(feature)

    def _refresh_feature_state(self, feature: Obj) -> None:
        now = _now()
        feature["state"] = {"state": {"code": "OK", "description": "Ready to use", "updateTime": now}}
        feature["membershipStates"] = {
            # Keys use the project number, as the real API answers.
            m["name"].replace(f"projects/{self.spec.project}/", f"projects/{self.spec.project_number}/"):
                {"state": {"code": "OK", "updateTime": now}}
            for m in self._memberships.values()
        }

    def _operation(self, verb: str, resource: Obj | None, *, target: str | None = None) -> Obj:
        target = target or (resource or {}).get("name", "")
        location = target.split("/")[3] if target.count("/") >= 3 else "global"
        op_name = f"projects/{self.spec.project}/locations/{location}/operations/" \
                  f"operation-{int(time.time() * 1000)}-{os.urandom(6).hex()}"
        now = _now()
        kind = "Membership" if "/memberships/" in target else "Feature"
        response = {"@type": f"{_TYPE}{kind}", **copy.deepcopy(resource)} if resource is not None \
            else {"@type": "type.googleapis.com/google.protobuf.Empty"}
        op = {
            "name": op_name,
            "metadata": {"@type": f"{_TYPE}OperationMetadata", "createTime": now, "endTime": now, "target": target,
                         "verb": verb, "apiVersion": "v1", "cancelRequested": False},
            "done": True,
            "response": response,
        }
        self._ops[op_name] = op
        return op

    def _changed(self) -> None:
        for fn in list(self._listeners):
            fn()
