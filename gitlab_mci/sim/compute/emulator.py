"""The Compute Engine v1 emulator: state, operations and per-method behaviour.

Every mutating call is validated when it arrives and then takes effect when its operation reaches DONE
(``operation_latency`` after it was accepted) — as on Google Cloud, where a resource being created cannot be
referenced yet. Reads first apply every operation that is due, so no background thread is needed.
"""

from __future__ import annotations

import base64
import copy
import functools
import ipaddress
import os
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from gitlab_mci.sim.compute import batch, discovery, features, migration
from gitlab_mci.sim.compute.discovery import PREFIX, Method, ValidationError
from gitlab_mci.sim.compute.filters import FilterError, compile_filter
from gitlab_mci.sim.compute.kinds import COLLECTIONS, GLOBAL_SEGMENTS, OUTPUT_ONLY, ZONAL_SEGMENTS, Collection, Ref
from gitlab_mci.sim.httpd import Faults, Request, Response, google_error

API = "https://www.googleapis.com/compute/v1/"
Obj = dict[str, Any]
HealthProvider = Callable[[Obj, str], list[Obj]]
_NAME_RE = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
_REF_RE = re.compile(r"^(?:.*?/compute/v1/)?(?:projects/(?P<project>[^/]+)/)?"
                     r"(?:global/(?P<gseg>[^/]+)|zones/(?P<zone>[^/]+)/(?P<zseg>[^/]+))/(?P<name>[^/]+)$")


# Global quotas projects.get reports (Google's defaults for a new project), and the collection each counts.
_QUOTA_COLLECTIONS = {"BACKEND_SERVICES": "backendServices", "HEALTH_CHECKS": "healthChecks", "URL_MAPS": "urlMaps",
                      "TARGET_HTTP_PROXIES": "targetHttpProxies", "TARGET_HTTPS_PROXIES": "targetHttpsProxies",
                      "SSL_CERTIFICATES": "sslCertificates"}
_QUOTA_LIMITS = {"BACKEND_SERVICES": 75, "HEALTH_CHECKS": 75, "URL_MAPS": 30, "TARGET_HTTP_PROXIES": 30,
                 "TARGET_HTTPS_PROXIES": 30, "SSL_CERTIFICATES": 30}
# Regional resource → its global twin, for aggregatedList (regional resources themselves are not emulated).
_REGIONAL_TWINS = {"addresses": "globalAddresses", "forwardingRules": "globalForwardingRules"}


class ApiError(Exception):
    def __init__(self, status: int, message: str, reason: str) -> None:
        super().__init__(message)
        self.status, self.reason = status, reason

    def response(self) -> Response:
        return google_error(self.status, str(self), self.reason)


def _now() -> str:
    return datetime.now(UTC).astimezone().isoformat(timespec="milliseconds")


def _fingerprint() -> str:
    return base64.b64encode(os.urandom(8)).decode()


def _same_fingerprint(given: Any, current: Any) -> bool:
    """Fingerprints are bytes (``format: byte``): gcloud (apitools) sends them back URL-safe base64-encoded, so
    ``+``/``/`` come back as ``-``/``_``; compare the bytes, as Google does."""
    if not isinstance(given, str) or not isinstance(current, str):
        return bool(given == current)
    return given.replace("-", "+").replace("_", "/") == current.replace("-", "+").replace("_", "/")


@dataclass
class _Op:
    body: Obj
    project: str
    zone: str | None
    accepted: float
    done_at: float
    apply: Callable[[], None] | None
    error: tuple[int, str, str] | None = None  # status, reason, message
    applied: bool = False


class ComputeEmulator:
    """In-memory Compute Engine v1 for the calls a global external HTTP(S) load balancer and GKE node pools use."""

    def __init__(self, *, operation_latency: float = 0.0, faults: Faults | None = None,
                 managed_cert_delay: float = 1.0, address_pool: str = "127.1.0.0/16") -> None:
        discovery.methods()  # load the document now, not on the first request
        self.operation_latency = operation_latency
        self.faults = faults
        self.managed_cert_delay = managed_cert_delay
        self.health_provider: HealthProvider | None = None
        self._pool = ipaddress.ip_network(address_pool).hosts()
        self._pool6 = ipaddress.ip_network(features.IPV6_POOL).hosts()  # IPv6 VIPs, served on ::1
        # Certificate Manager (a separate API): whether projects/P/locations/global/certificateMaps/M exists.
        self.certificate_map_exists: Callable[[str, str], bool] | None = None
        self._lock = threading.RLock()
        self._projects: dict[str, int] = {}
        self._store: dict[tuple[str, str, str], dict[str, Obj]] = {}  # (collection, project, zone|"") -> name -> obj
        self._members: dict[str, list[str]] = {}  # instance group URL -> instance URLs
        self._endpoints: dict[str, list[Obj]] = {}  # network endpoint group URL -> its network endpoints
        self._ops: dict[tuple[str, str], _Op] = {}  # (project, op name) -> op
        self._request_ids: dict[tuple[str, str], str] = {}
        self._pending: dict[str, Obj] = {}  # URL -> resource, for inserts not DONE yet
        self._next_id = 1000000000000000000 + int.from_bytes(os.urandom(4), "big")
        self._revision = 0  # bumped on every change that took effect, so watchers (the data plane) poll cheaply
        # projects.get's quotas: metric -> limit (tests lower one); usage is counted from what exists.
        self.quota_limits: dict[str, float] = dict(_QUOTA_LIMITS)

    # --- public API ----------------------------------------------------------------------------------------------

    def add_project(self, project: str, number: int | None = None) -> None:
        with self._lock:
            self._projects[project] = number or 100000000000 + len(self._projects)

    def seed(self, collection: str, body: Obj, *, project: str, zone: str | None = None) -> Obj:
        """Insert directly (world building); ``instances`` on an instance group sets its members."""
        coll = COLLECTIONS[collection]
        with self._lock:
            body = copy.deepcopy(body)
            members = body.pop("instances", None) if collection == "instanceGroups" else None
            obj = self._materialize(coll, project, zone, body)
            self._bucket(coll, project, zone)[obj["name"]] = obj
            if members is not None:
                self._members[obj["selfLink"]] = list(members)
                obj["size"] = len(members)
            self._revision += 1
            return copy.deepcopy(obj)

    def get(self, collection: str, name: str, *, project: str, zone: str | None = None) -> Obj | None:
        with self._lock:
            self._settle()
            found = self._bucket(COLLECTIONS[collection], project, zone).get(name)
            return self._render(COLLECTIONS[collection], found) if found else None

    def resources(self, collection: str | None = None) -> list[Obj]:
        with self._lock:
            self._settle()
            return [self._render(COLLECTIONS[c], o) for (c, _, _), bucket in sorted(self._store.items())
                    for o in bucket.values() if collection in (None, c)]

    def remove(self, collection: str, name: str, *, project: str, zone: str | None = None) -> bool:
        """Delete directly (simulated Google-side controllers), without an operation; ``False`` when absent."""
        with self._lock:
            self._settle()
            self._revision += 1
            gone = self._bucket(COLLECTIONS[collection], project, zone).pop(name, None)
            if gone is not None:
                self._endpoints.pop(gone["selfLink"], None)
            return gone is not None

    def revision(self) -> int:
        """A number that changes whenever a resource changed (operations that became due are applied first)."""
        with self._lock:
            self._settle()
            return self._revision

    def stored(self, collection: str, name: str, *, project: str, zone: str | None = None) -> Obj | None:
        """The resource as stored, private fields included (the data plane needs a certificate's private key)."""
        with self._lock:
            self._settle()
            found = self._bucket(COLLECTIONS[collection], project, zone).get(name)
            return copy.deepcopy(found) if found else None

    def network_endpoints(self, neg_url: str) -> list[Obj] | None:
        """A network endpoint group's endpoints, for the data plane; ``None`` when no such group or none was ever
        attached to it (the hosted Multi Cluster Ingress controller's NEGs, whose pods the data plane finds itself)."""
        with self._lock:
            self._settle()
            if self._by_zonal_url(neg_url) is None or neg_url not in self._endpoints:
                return None
            return copy.deepcopy(self._endpoints[neg_url])

    def set_network_endpoints(self, neg_url: str, endpoints: list[Obj]) -> None:
        """Replace a group's endpoints directly (GKE's NEG controller attaching and detaching, without operations)."""
        with self._lock:
            self._settle()
            if self._by_zonal_url(neg_url) is None:
                raise KeyError(neg_url)
            if self._endpoints.get(neg_url, []) != endpoints:
                self._endpoints[neg_url] = copy.deepcopy(endpoints)
                self._revision += 1

    def _by_zonal_url(self, url: str) -> Obj | None:
        m = _REF_RE.match(url)
        if not m or not m.group("zseg") or m.group("zseg") not in ZONAL_SEGMENTS:
            return None
        coll = COLLECTIONS[ZONAL_SEGMENTS[m.group("zseg")]]
        return self._bucket(coll, m.group("project") or "", m.group("zone")).get(m.group("name"))

    # --- HTTP ----------------------------------------------------------------------------------------------------

    def handle(self, req: Request) -> Response:
        if req.path == batch.PATH:
            return batch.handle(req, self.handle, self.faults)
        if not req.path.startswith(PREFIX):
            return google_error(404, f"The requested URL {req.path} was not found on this server.", "notFound")
        path = req.path[len(PREFIX):]
        routed = discovery.route(req.method, path)
        if routed is None:
            if discovery.path_exists(path):
                return google_error(405, f"Method {req.method} is not allowed for {path}", "badRequest")
            return google_error(404, f"The requested URL /compute/v1/{path} was not found on this server.",
                                "notFound")
        method, params = routed
        if method.resource == "projects" and method.name == "get":
            return self._project_resource(params["project"])
        coll = self._collection_for(method)
        if method.name == "aggregatedList" and method.resource in _REGIONAL_TWINS:
            # gcloud lists addresses and forwarding rules with the regional aggregatedList; with
            # includeAllScopes it also carries the global ones, which is all the emulator has.
            coll = COLLECTIONS[_REGIONAL_TWINS[method.resource]]
        if coll is None or method.name not in coll.implemented:
            if method.resource in ("globalOperations", "zoneOperations") and method.name in ("get", "wait", "list"):
                pass
            else:
                return google_error(501, f"gitlab-mci simulator does not implement {method.id}", "notImplemented")
        try:
            discovery.check_query(method, req.query)
            body: Any = None
            if method.request:
                try:
                    body = req.json()
                except ValueError:
                    raise ValidationError("Invalid JSON payload received.") from None
                discovery.check_body(method.request, body if body is not None else {})
            with self._lock:
                self._settle()
                project = params.get("project", "")
                if project not in self._projects:
                    raise ApiError(404, f"The resource 'projects/{project}' was not found", "notFound")
                return self._dispatch(req, method, coll, params, body or {})
        except ValidationError as exc:
            return google_error(400, str(exc), exc.reason)
        except ApiError as exc:
            return exc.response()

    def _project_resource(self, project: str) -> Response:
        """``projects.get``: the project and its global quotas, usage counted from the resources in it."""
        with self._lock:
            if project not in self._projects:
                return ApiError(404, f"The resource 'projects/{project}' was not found", "notFound").response()
            quotas = [{"metric": metric, "limit": float(limit),
                       "usage": float(len(self._store.get((_QUOTA_COLLECTIONS[metric], project, ""), {})))}
                      for metric, limit in sorted(self.quota_limits.items()) if metric in _QUOTA_COLLECTIONS]
            return Response(200, {"kind": "compute#project", "id": str(self._projects[project]), "name": project,
                                  "quotas": quotas, "selfLink": f"{API}projects/{project}"})

    def is_write(self, req: Request) -> bool:
        """Whether a request asks for a change of state: decided by the discovery method it calls, not its verb.

        ``backendServices.getHealth``, ``operations.wait`` and ``instanceGroups.listInstances`` are POSTs that read;
        a batch request is a read in itself (its parts are journaled one by one); an unknown path changes nothing.
        """
        if not req.path.startswith(PREFIX):
            return False
        routed = discovery.route(req.method, req.path[len(PREFIX):])
        return routed is not None and routed[0].mutates

    # --- routing -------------------------------------------------------------------------------------------------

    @staticmethod
    def _collection_for(method: Method) -> Collection | None:
        return COLLECTIONS.get(method.resource)

    def _dispatch(self, req: Request, method: Method, coll: Collection | None, params: dict[str, str],
                  body: Obj) -> Response:
        project, zone = params["project"], params.get("zone")
        if method.resource in ("globalOperations", "zoneOperations"):
            return self._operation(method.name, project, zone, params.get("operation"), req)
        assert coll is not None
        name = next((params[k] for k in params if k not in ("project", "zone")), None)
        if coll.name == "zones":
            name, zone = zone, None  # zones.get names the zone itself
        if zone is not None:
            self._check_zone(project, zone)
        request_id = req.param("requestId")
        if request_id and (project, request_id) in self._request_ids:
            # A retried call with the same requestId gets the first call's operation, not a duplicate or a 409.
            return Response(200, self._op_body(self._ops[(project, self._request_ids[(project, request_id)])]))
        handler = getattr(self, f"_m_{method.name}", None)
        if handler is None:
            raise ApiError(501, f"gitlab-mci simulator does not implement {method.id}", "notImplemented")
        result: Response = handler(req, coll, project, zone, name, body)
        return result

    def _check_zone(self, project: str, zone: str) -> None:
        if zone not in self._bucket(COLLECTIONS["zones"], project, None) and \
                not any(zone in self._bucket(COLLECTIONS["zones"], p, None) for p in self._projects):
            raise ApiError(400, f"Invalid value for field 'zone': '{zone}'. Unknown zone.", "invalid")

    # --- store helpers -------------------------------------------------------------------------------------------

    def _bucket(self, coll: Collection, project: str, zone: str | None) -> dict[str, Obj]:
        return self._store.setdefault((coll.name, project, zone or "" if coll.zonal else ""), {})

    def _url(self, coll: Collection, project: str, zone: str | None, name: str) -> str:
        if coll.name == "zones":
            return f"{API}projects/{project}/zones/{name}"
        scope = f"zones/{zone}" if coll.zonal else "global"
        return f"{API}projects/{project}/{scope}/{coll.segment}/{name}"

    def _relative(self, url: str) -> str:
        return url.removeprefix(API)

    def _materialize(self, coll: Collection, project: str, zone: str | None, body: Obj) -> Obj:
        obj = {k: v for k, v in body.items() if k not in OUTPUT_ONLY}
        if coll.defaults is not None:
            coll.defaults(obj)
        self._next_id += 1
        obj.update({"kind": discovery.kind_default(coll.schema), "id": str(self._next_id),
                    "creationTimestamp": _now(), "selfLink": self._url(coll, project, zone, obj["name"])})
        if coll.zonal:
            obj["zone"] = f"{API}projects/{project}/zones/{zone}"
        if discovery.has_property(coll.schema, "fingerprint"):
            obj["fingerprint"] = _fingerprint()
        if discovery.has_property(coll.schema, "labelFingerprint"):
            obj.setdefault("labels", {})
            obj["labelFingerprint"] = _fingerprint()
        if coll.name == "globalAddresses" and "address" not in obj:
            obj["address"] = str(next(self._pool6 if obj.get("ipVersion") == "IPV6" else self._pool))
        if coll.name == "sslCertificates":
            obj["_created"] = time.time()
            if obj.get("type", "SELF_MANAGED") == "SELF_MANAGED":
                obj.update(_certificate_facts(str(obj.get("certificate", ""))))
        for ref in coll.refs:
            _map_ref(obj, ref.path, functools.partial(self._canonical_ref, ref=ref, project=project))
        return obj

    def _render(self, coll: Collection, obj: Obj) -> Obj:
        """The resource as a GET answers it: computed fields added, private ones removed."""
        out = {k: copy.deepcopy(v) for k, v in obj.items() if not k.startswith("_")}
        out.pop("privateKey", None)
        # Referrers are computed on read (no index to keep in step), and only for kinds that show them.
        shows_users = coll.name == "globalAddresses" or discovery.has_property(coll.schema, "usedBy")
        users = sorted(self._referrers(obj["selfLink"])) if shows_users else []
        if coll.name == "globalAddresses":
            out["users"] = users
            out["status"] = "IN_USE" if users else "RESERVED"
            if not users:
                out.pop("users")
        elif discovery.has_property(coll.schema, "usedBy") and users:
            out["usedBy"] = [{"reference": u} for u in users]
        if coll.name == "networkEndpointGroups":
            out["size"] = len(self._endpoints.get(obj["selfLink"], []))
        if coll.name == "sslCertificates" and out.get("type") == "MANAGED":
            ready = time.time() >= obj["_created"] + self.managed_cert_delay
            state = "ACTIVE" if ready else "PROVISIONING"
            domains = out.get("managed", {}).get("domains", [])
            out["managed"] = {**out.get("managed", {}), "status": state,
                              "domainStatus": {d: "ACTIVE" if ready else "PROVISIONING" for d in domains}}
            out["subjectAlternativeNames"] = domains
        return out

    def _lookup(self, coll: Collection, project: str, zone: str | None, name: str) -> Obj:
        obj = self._bucket(coll, project, zone).get(name)
        if obj is None:
            raise ApiError(404, f"The resource '{self._relative(self._url(coll, project, zone, name))}' was not "
                           "found", "notFound")
        return obj

    def _canonical_ref(self, value: Any, ref: Ref, project: str) -> Any:
        """Accept full or partial URLs (any endpoint's), store the canonical full URL; missing → error."""
        if not isinstance(value, str):
            return value
        if ref.path == "IPAddress" and "/" not in value:
            return value  # a literal IP address
        m = _REF_RE.match(value)
        if not m:
            raise ApiError(400, f"Invalid value for field 'resource.{ref.path.replace('[]', '')}': '{value}'. "
                           "The URL is malformed.", "invalid")
        target_project = m.group("project") or project
        if m.group("gseg"):
            coll_name, zone = GLOBAL_SEGMENTS.get(m.group("gseg")), None
        else:
            coll_name, zone = ZONAL_SEGMENTS.get(m.group("zseg")), m.group("zone")
        if coll_name not in ref.targets:
            raise ApiError(400, f"Invalid value for field 'resource.{ref.path.replace('[]', '')}': '{value}'. "
                           f"Expected a reference to a {' or '.join(ref.targets)} resource.", "invalid")
        coll = COLLECTIONS[coll_name]
        url = self._url(coll, target_project, zone, m.group("name"))
        if url in self._pending:
            raise ApiError(400, f"The resource '{self._relative(url)}' is not ready", "resourceNotReady")
        if m.group("name") not in self._bucket(coll, target_project, zone):
            raise ApiError(404, f"The resource '{self._relative(url)}' was not found", "notFound")
        return url

    def _referrers(self, url: str) -> set[str]:
        found = set()
        for (cname, _, _), bucket in self._store.items():
            coll = COLLECTIONS[cname]
            for obj in bucket.values():
                for ref in coll.refs:
                    if url in _values(obj, ref.path):
                        found.add(obj["selfLink"])
        if url.startswith(f"{API}projects/") and "/global/addresses/" in url:
            address = self._address_by_url(url)
            if address is not None:
                for obj in self._bucket(COLLECTIONS["globalForwardingRules"], url.split("/")[6], None).values():
                    if obj.get("IPAddress") == address.get("address"):
                        found.add(obj["selfLink"])
        return found

    def _address_by_url(self, url: str) -> Obj | None:
        parts = self._relative(url).split("/")
        return self._bucket(COLLECTIONS["globalAddresses"], parts[1], None).get(parts[-1])

    # --- operations ----------------------------------------------------------------------------------------------

    def _settle(self) -> None:
        now = time.time()
        for op in sorted(self._ops.values(), key=lambda o: o.accepted):
            if not op.applied and now >= op.done_at:
                op.applied = True
                if op.apply is not None and op.error is None:
                    op.apply()

    def _start(self, req: Request, op_type: str, coll: Collection, project: str, zone: str | None, name: str,
               apply: Callable[[], None], target_id: str | None = None, pending: Obj | None = None) -> Response:
        request_id = req.param("requestId")
        now = time.time()
        op_name = f"operation-{int(now * 1000)}-{os.urandom(6).hex()}"
        target = self._url(coll, project, zone, name)
        error = None
        if self.faults is not None and self.faults.pick(req, actions=("operation_error",)):
            error = (503, "backendError", f"Injected failure of {op_type} of '{self._relative(target)}'")
        self._next_id += 1
        body: Obj = {
            "kind": "compute#operation", "id": str(self._next_id), "name": op_name, "operationType": op_type,
            "targetLink": target, "targetId": target_id or str(self._next_id), "user": "sim@gitlab-mci",
            "insertTime": _now(),
            "selfLink": f"{API}projects/{project}/{f'zones/{zone}' if zone else 'global'}/operations/{op_name}",
        }
        if zone:
            body["zone"] = f"{API}projects/{project}/zones/{zone}"

        def finish() -> None:
            self._pending.pop(target, None)
            apply()
            self._revision += 1

        op = _Op(body, project, zone, now, now + self.operation_latency, finish, error)
        if pending is not None:
            self._pending[target] = pending
        self._ops[(project, op_name)] = op
        if request_id:
            self._request_ids[(project, request_id)] = op_name
        if error is not None:
            self._pending.pop(target, None)
        self._settle()
        return Response(200, self._op_body(op))

    def _op_body(self, op: _Op) -> Obj:
        now = time.time()
        body = dict(op.body)
        lat = max(op.done_at - op.accepted, 1e-9)
        if op.applied or now >= op.done_at:
            body.update(status="DONE", progress=100, startTime=body["insertTime"], endTime=_now())
            if op.error is not None:
                status, reason, message = op.error
                body["error"] = {"errors": [{"code": reason.upper(), "message": message}]}
                body["httpErrorStatusCode"] = status
                body["httpErrorMessage"] = "SERVICE UNAVAILABLE"
        elif now - op.accepted < lat * 0.2:
            body.update(status="PENDING", progress=0)
        else:
            body.update(status="RUNNING", progress=int(100 * (now - op.accepted) / lat), startTime=body["insertTime"])
        return body

    def _operation(self, action: str, project: str, zone: str | None, name: str | None, req: Request) -> Response:
        if action == "list":
            ops = [self._op_body(o) for (p, _), o in self._ops.items() if p == project and o.zone == zone]
            return Response(200, {"kind": "compute#operationList", "items": ops,
                                  "selfLink": f"{API}projects/{project}/global/operations"})
        op = self._ops.get((project, name or ""))
        if op is None or op.zone != zone:
            scope = f"zones/{zone}" if zone else "global"
            raise ApiError(404, f"The resource 'projects/{project}/{scope}/operations/{name}' was not found",
                           "notFound")
        if action == "wait":
            # Like Google: block until DONE, at most about two minutes, then answer the current state.
            deadline = min(op.done_at, time.time() + 120)
            self._lock.release()
            try:
                while time.time() < deadline:
                    time.sleep(min(0.02, max(0.0, deadline - time.time())))
            finally:
                self._lock.acquire()
            self._settle()
        return Response(200, self._op_body(op))

    # --- generic methods -----------------------------------------------------------------------------------------

    def _m_get(self, req: Request, coll: Collection, project: str, zone: str | None, name: str, body: Obj) -> Response:
        return Response(200, self._render(coll, self._lookup(coll, project, zone, name)))

    def _m_list(self, req: Request, coll: Collection, project: str, zone: str | None, name: str | None,
                body: Obj) -> Response:
        page = self._filter_page(req, [self._render(coll, o) for o in self._bucket(coll, project, zone).values()])
        scope = f"zones/{zone}/" if zone else ("" if coll.name == "zones" else "global/")
        out: Obj = {"kind": discovery.kind_default(coll.schema + "List") or f"compute#{coll.segment}List",
                    "id": f"projects/{project}/{scope}{coll.segment}",
                    "selfLink": f"{API}projects/{project}/{scope}{coll.segment}", **page}
        return Response(200, out)

    def _filter_page(self, req: Request, items: list[Obj]) -> Obj:
        try:
            predicate = compile_filter(req.param("filter") or "")
        except FilterError as exc:
            raise ApiError(400, f"Invalid value for field 'filter': '{req.param('filter')}'. {exc}",
                           "invalid") from None
        order = req.param("orderBy")
        if order not in (None, "", "name", "creationTimestamp", "creationTimestamp desc"):
            raise ApiError(400, f"Invalid value for field 'orderBy': '{order}'. Supported: name, creationTimestamp.",
                           "invalid")
        items = [i for i in items if predicate(i)]
        if order and order.startswith("creationTimestamp"):
            items.sort(key=lambda i: (i["creationTimestamp"], int(i["id"])), reverse=order.endswith("desc"))
        else:
            items.sort(key=lambda i: str(i["name"]))
        max_results = int(req.param("maxResults") or 500)
        start = int(req.param("pageToken") or 0) if (req.param("pageToken") or "0").isdigit() else 0
        page: Obj = {"items": items[start:start + max_results]}
        if start + max_results < len(items):
            page["nextPageToken"] = str(start + max_results)
        return page

    def _m_aggregatedList(self, req: Request, coll: Collection, project: str, zone: str | None,
                          name: str | None, body: Obj) -> Response:
        everything = [self._render(coll, o) for (c, p, _), b in self._store.items() if c == coll.name and p == project
                      for o in b.values()]
        page = self._filter_page(req, everything)
        scopes: dict[str, Obj] = {}
        for z in sorted(self._bucket(COLLECTIONS["zones"], project, None)):
            scopes[f"zones/{z}"] = {"warning": {"code": "NO_RESULTS_ON_PAGE",
                                                "message": "There are no results for scope 'zones/{z}' on this page."}}
        plural = coll.segment if coll.zonal else _plural_key(coll)
        for item in page["items"]:
            key = f"zones/{item['zone'].rsplit('/', 1)[1]}" if coll.zonal else "global"
            scopes.setdefault(key, {}).pop("warning", None)
            scopes[key].setdefault(plural, []).append(item)
        out: Obj = {"kind": f"compute#{coll.segment[:-1] if coll.segment.endswith('s') else coll.segment}"
                            "AggregatedList",
                    "id": f"projects/{project}/aggregated/{coll.segment}", "items": scopes,
                    "selfLink": f"{API}projects/{project}/aggregated/{coll.segment}"}
        if "nextPageToken" in page:
            out["nextPageToken"] = page["nextPageToken"]
        return Response(200, out)

    def _m_insert(self, req: Request, coll: Collection, project: str, zone: str | None, name: str | None,
                  body: Obj) -> Response:
        new_name = body.get("name")
        if not isinstance(new_name, str) or not new_name:
            raise ApiError(400, "Invalid value for field 'resource.name': ''. Must be a match of regex "
                           "'(?:[a-z](?:[-a-z0-9]{0,61}[a-z0-9])?)'", "invalid")
        if not _NAME_RE.match(new_name) or len(new_name) > 63:
            raise ApiError(400, f"Invalid value for field 'resource.name': '{new_name}'. Must be a match of regex "
                           "'(?:[a-z](?:[-a-z0-9]{0,61}[a-z0-9])?)'", "invalid")
        url = self._url(coll, project, zone, new_name)
        if new_name in self._bucket(coll, project, zone) or url in self._pending:
            raise ApiError(409, f"The resource '{self._relative(url)}' already exists", "alreadyExists")
        body = features.strip_output_only(body, coll.extra.get("output_only", ()), None)
        self._validate_semantics(coll, body, project)
        obj = self._materialize(coll, project, zone, body)
        self._after_materialize(coll, obj, project)
        self._check_migration(coll, None, obj, project)
        if coll.name == "globalForwardingRules":
            self._check_listener_free(obj, project)

        def apply() -> None:
            self._bucket(coll, project, zone)[new_name] = obj

        return self._start(req, "insert", coll, project, zone, new_name, apply, obj["id"], pending=obj)

    def _m_delete(self, req: Request, coll: Collection, project: str, zone: str | None, name: str,
                  body: Obj) -> Response:
        obj = self._lookup(coll, project, zone, name)
        users = self._referrers(obj["selfLink"])
        if users:
            raise ApiError(400, f"The {coll.in_use_name} resource '{self._relative(obj['selfLink'])}' is already "
                           f"being used by '{self._relative(sorted(users)[0])}'", "resourceInUseByAnotherResource")

        def apply() -> None:
            self._bucket(coll, project, zone).pop(name, None)
            self._endpoints.pop(obj["selfLink"], None)

        return self._start(req, "delete", coll, project, zone, name, apply, obj["id"])

    def _update(self, req: Request, coll: Collection, project: str, zone: str | None, name: str, body: Obj,
                merge: bool) -> Response:
        current = self._lookup(coll, project, zone, name)
        if "fingerprint" in current:
            given = body.get("fingerprint")
            if given is None and not merge:
                raise ApiError(400, "Required field 'resource.fingerprint' not specified", "required")
            if given is None or not _same_fingerprint(given, current["fingerprint"]):
                raise ApiError(412, "Invalid fingerprint.", "conditionNotMet")
        if body.get("name", name) != name:
            raise ApiError(400, f"Invalid value for field 'resource.name': '{body.get('name')}'. The name of a "
                           "resource cannot be changed.", "invalid")
        body = features.strip_output_only(body, coll.extra.get("output_only", ()), current)
        base = {k: v for k, v in current.items() if k.startswith("_") or k in OUTPUT_ONLY}
        merged = _merge(copy.deepcopy(current), body) if merge else {**base, **body, "name": name}
        if not merge:  # a PUT's null field is the field unset (proto3 JSON), not a stored null
            merged = {k: v for k, v in merged.items() if v is not None}
        self._validate_semantics(coll, merged, project)
        if coll.defaults is not None:
            coll.defaults(merged)
        for ref in coll.refs:
            _map_ref(merged, ref.path, functools.partial(self._canonical_ref, ref=ref, project=project))
        for keep in ("id", "selfLink", "creationTimestamp", "kind", "zone", "labelFingerprint", "labels"):
            if keep in current:
                merged[keep] = current[keep]
        if "fingerprint" in current:
            merged["fingerprint"] = _fingerprint()
        self._after_materialize(coll, merged, project)
        self._check_migration(coll, current, merged, project)

        def apply() -> None:
            self._bucket(coll, project, zone)[name] = merged

        return self._start(req, "patch" if merge else "update", coll, project, zone, name, apply, current["id"])

    def _m_patch(self, req: Request, coll: Collection, project: str, zone: str | None, name: str,
                 body: Obj) -> Response:
        return self._update(req, coll, project, zone, name, body, merge=True)

    def _m_update(self, req: Request, coll: Collection, project: str, zone: str | None, name: str,
                  body: Obj) -> Response:
        return self._update(req, coll, project, zone, name, body, merge=False)

    # --- per-kind semantics --------------------------------------------------------------------------------------

    def _validate_semantics(self, coll: Collection, body: Obj, project: str) -> None:
        self._validate_features(coll, body)
        if coll.name == "backendServices":
            for i, b in enumerate(body.get("backends") or []):
                group = b.get("group", "")
                if not group.startswith(("https://", "http://")):
                    raise ApiError(400, f"Invalid value for field 'resource.backends[{i}].group': '{group}'. "
                                   "The URL is malformed.", "invalid")
                # The discovery document: "The valid ranges are 0.0 and [0.1,1.0]. ... You cannot configure a
                # setting of 0 when there is only one backend attached to the backend service."
                scale = b.get("capacityScaler")
                if scale is not None and not (float(scale) == 0.0 or 0.1 <= float(scale) <= 1.0):
                    raise ApiError(400, f"Invalid value for field 'resource.backends[{i}].capacityScaler': "
                                   f"'{scale}'. Must be 0 or in [0.1, 1.0].", "invalid")
                if scale is not None and float(scale) == 0.0 and len(body.get("backends") or []) == 1:
                    raise ApiError(400, f"Invalid value for field 'resource.backends[{i}].capacityScaler': '0'. "
                                   "Cannot be 0 when the backend service has only one backend.", "invalid")
            if len(body.get("healthChecks") or []) > 1:
                raise ApiError(400, "Invalid value for field 'resource.healthChecks': only one health check is "
                               "allowed.", "invalid")
            _check_neg_backends(body.get("backends") or [])
        if coll.name == "sslCertificates":
            ctype = body.get("type", "SELF_MANAGED")
            if ctype == "SELF_MANAGED" and not (body.get("certificate") and body.get("privateKey")):
                raise ApiError(400, "The SSL certificate and key are required for a self-managed certificate.",
                               "invalid")
            if ctype == "MANAGED" and not (body.get("managed") or {}).get("domains"):
                raise ApiError(400, "Invalid value for field 'resource.managed.domains': at least one domain is "
                               "required.", "invalid")
        if coll.name == "targetHttpsProxies" and len(body.get("sslCertificates") or []) > 15:
            raise ApiError(400, "Invalid value for field 'resource.sslCertificates': at most 15 certificates.",
                           "invalid")

    def _after_materialize(self, coll: Collection, obj: Obj, project: str) -> None:
        if coll.name == "globalForwardingRules":
            ip = obj.get("IPAddress")
            if isinstance(ip, str) and ip.startswith(API):
                address = self._address_by_url(ip)
                obj["IPAddress"] = address["address"] if address else ip
            elif not ip:
                obj["IPAddress"] = str(next(self._pool6 if obj.get("ipVersion") == "IPV6" else self._pool))
            self._rule_ip_version(obj)

    def _check_migration(self, coll: Collection, current: Obj | None, new: Obj, project: str) -> None:
        """The classic → global external ALB migration rules and scheme compatibility (see migration.py)."""
        try:
            if coll.name == "backendServices":
                fronts = [r.get("loadBalancingScheme", "EXTERNAL")
                          for r in self._bucket(COLLECTIONS["globalForwardingRules"], project, None).values()
                          if new["selfLink"] in self._chain(str(r.get("target") or ""))]
                migration.backend_service(current, new, fronts)
            elif coll.name == "globalForwardingRules":
                migration.forwarding_rule(current, new, self._chain_schemes(str(new.get("target") or "")))
        except migration.MigrationError as exc:
            raise ApiError(400, str(exc), exc.reason) from None

    def _by_url(self, url: str) -> Obj | None:
        m = _REF_RE.match(url)
        if not m or not m.group("gseg"):
            return None
        coll_name = GLOBAL_SEGMENTS.get(m.group("gseg"))
        if coll_name is None:
            return None
        return self._bucket(COLLECTIONS[coll_name], m.group("project") or "", None).get(m.group("name"))

    def _chain(self, target: str) -> list[str]:
        """URLs of the backend services a target proxy's URL map can send traffic to."""
        proxy = self._by_url(target) if target else None
        url_map = self._by_url(str(proxy.get("urlMap") or "")) if proxy else None
        if url_map is None:
            return []
        found: list[str] = []
        for ref in COLLECTIONS["urlMaps"].refs:
            found += [v for v in _values(url_map, ref.path) if isinstance(v, str) and v not in found]
        return found

    def _chain_schemes(self, target: str) -> list[tuple[str, bool]]:
        out = []
        for url in self._chain(target):
            service = self._by_url(url)
            if service is not None:
                out.append((str(service.get("loadBalancingScheme", "EXTERNAL")),
                            bool(service.get(migration.MIGRATED))))
        return out

    def _check_listener_free(self, rule: Obj, project: str) -> None:
        """Refuse a forwarding rule whose IP, protocol and ports overlap another rule's, as Compute does.

        Compute answers HTTP 400, reason ``invalid``, "Invalid value for field 'resource.IPAddress': '<ip>'.
        Specified IP address is in-use and would result in a conflict." (the message ingress-gce matches as
        addressAlreadyInUseMessageExternal, and kubemci's troubleshooting guide quotes for two load balancers on one
        IP). Rules on one IP may coexist on other ports or protocols (HTTP on 80 and HTTPS on 443 share a VIP).
        ``rule`` has been materialized: its IPAddress is the literal IP even when the request named an address.
        A rule whose insert is still running holds its IP and ports too.
        """
        ip = rule.get("IPAddress")
        mine = _port_span(rule)
        others = [*self._bucket(COLLECTIONS["globalForwardingRules"], project, None).values(),
                  *(o for url, o in self._pending.items() if "/global/forwardingRules/" in url
                    and url.startswith(f"{API}projects/{project}/"))]
        for other in others:
            if other.get("IPAddress") != ip or other.get("IPProtocol", "TCP") != rule.get("IPProtocol", "TCP"):
                continue
            theirs = _port_span(other)
            if mine[0] <= theirs[1] and theirs[0] <= mine[1]:
                raise ApiError(400, f"Invalid value for field 'resource.IPAddress': '{ip}'. Specified IP address is "
                               "in-use and would result in a conflict.", "invalid")

    def _m_setLabels(self, req: Request, coll: Collection, project: str, zone: str | None,
                     name: str, body: Obj) -> Response:
        current = self._lookup(coll, project, zone, name)
        if not _same_fingerprint(body.get("labelFingerprint"), current.get("labelFingerprint")):
            raise ApiError(412, "Labels fingerprint either invalid or resource labels have changed",
                           "conditionNotMet")
        labels = dict(body.get("labels") or {})

        def apply() -> None:
            current["labels"] = labels
            current["labelFingerprint"] = _fingerprint()

        return self._start(req, "setLabels", coll, project, zone, name, apply, current["id"])

    def _set_field(self, req: Request, coll: Collection, project: str, zone: str | None, name: str, op: str,
                   field_name: str, value: Any) -> Response:
        current = self._lookup(coll, project, zone, name)
        ref = next(r for r in coll.refs if r.path.removesuffix("[]") == field_name)
        if isinstance(value, list):
            resolved: Any = [self._canonical_ref(v, ref, project) for v in value]
        else:
            resolved = self._canonical_ref(value, ref, project)
        if field_name == "sslCertificates" and len(resolved) > 15:
            raise ApiError(400, "Invalid value for field 'sslCertificates': at most 15 certificates.", "invalid")

        def apply() -> None:
            current[field_name] = resolved
            if "fingerprint" in current:
                current["fingerprint"] = _fingerprint()

        return self._start(req, op, coll, project, zone, name, apply, current["id"])

    def _m_setUrlMap(self, req: Request, coll: Collection, project: str, zone: str | None,
                     name: str, body: Obj) -> Response:
        return self._set_field(req, coll, project, zone, name, "setUrlMap", "urlMap", body.get("urlMap"))

    def _m_setSslCertificates(self, req: Request, coll: Collection, project: str,
                              zone: str | None, name: str, body: Obj) -> Response:
        return self._set_field(req, coll, project, zone, name, "setSslCertificates", "sslCertificates",
                               body.get("sslCertificates") or [])

    def _m_setTarget(self, req: Request, coll: Collection, project: str, zone: str | None,
                     name: str, body: Obj) -> Response:
        rule = self._lookup(coll, project, zone, name)
        target = self._canonical_ref(body.get("target"), coll.refs[0], project)
        why = migration.incompatible(rule.get("loadBalancingScheme", "EXTERNAL"), self._chain_schemes(target))
        if why:
            raise ApiError(400, f"Invalid value for field 'target': '{body.get('target')}'. {why}", "invalid")
        return self._set_field(req, coll, project, zone, name, "setTarget", "target", body.get("target"))

    def _m_setNamedPorts(self, req: Request, coll: Collection, project: str, zone: str | None,
                         name: str, body: Obj) -> Response:
        current = self._lookup(coll, project, zone, name)
        given = body.get("fingerprint")
        if given is not None and not _same_fingerprint(given, current.get("fingerprint")):
            raise ApiError(412, "Invalid fingerprint.", "conditionNotMet")
        ports = [dict(p) for p in body.get("namedPorts") or []]
        for i, p in enumerate(ports):
            if not p.get("name") or not isinstance(p.get("port"), int) or not 1 <= p["port"] <= 65535:
                raise ApiError(400, f"Invalid value for field 'namedPorts[{i}]'.", "invalid")

        def apply() -> None:
            current["namedPorts"] = ports
            current["fingerprint"] = _fingerprint()

        return self._start(req, "setNamedPorts", coll, project, zone, name, apply, current["id"])

    def _m_listInstances(self, req: Request, coll: Collection, project: str, zone: str | None,
                         name: str, body: Obj) -> Response:
        group = self._lookup(coll, project, zone, name)
        items = [{"instance": url, "status": "RUNNING"} for url in self._members.get(group["selfLink"], [])]
        return Response(200, {"kind": "compute#instanceGroupsListInstances", "id": group["selfLink"],
                              **self._filter_page(req, [{**i, "name": i["instance"].rsplit("/", 1)[1],
                                                         "creationTimestamp": "", "id": "0"} for i in items]),
                              "selfLink": group["selfLink"] + "/listInstances"})

    # --- network endpoint groups ---------------------------------------------------------------------------------

    def _m_attachNetworkEndpoints(self, req: Request, coll: Collection, project: str, zone: str | None,
                                  name: str, body: Obj) -> Response:
        neg = self._lookup(coll, project, zone, name)
        given = [self._checked_endpoint(neg, project, zone, i, e)
                 for i, e in enumerate(body.get("networkEndpoints") or [])]

        def apply() -> None:
            current = self._endpoints.setdefault(neg["selfLink"], [])
            current.extend(e for e in given if e not in current)  # attaching an attached endpoint changes nothing

        return self._start(req, "attachNetworkEndpoints", coll, project, zone, name, apply, neg["id"])

    def _m_detachNetworkEndpoints(self, req: Request, coll: Collection, project: str, zone: str | None,
                                  name: str, body: Obj) -> Response:
        neg = self._lookup(coll, project, zone, name)
        given = [self._checked_endpoint(neg, project, zone, i, e)
                 for i, e in enumerate(body.get("networkEndpoints") or [])]

        def apply() -> None:
            self._endpoints[neg["selfLink"]] = [e for e in self._endpoints.get(neg["selfLink"], []) if e not in given]

        return self._start(req, "detachNetworkEndpoints", coll, project, zone, name, apply, neg["id"])

    def _checked_endpoint(self, neg: Obj, project: str, zone: str | None, i: int, raw: Obj) -> Obj:
        """A GCE_VM_IP_PORT endpoint as stored: the VM's name, an IP and a port (the group's defaultPort if none)."""
        where = f"resource.networkEndpoints[{i}]"
        instance = str(raw.get("instance") or "")
        if not instance:
            raise ApiError(400, f"Invalid value for field '{where}.instance': ''. The instance is required for "
                           "network endpoints of type GCE_VM_IP_PORT.", "invalid")
        instance = instance.rsplit("/", 1)[-1]
        vm = self._bucket(COLLECTIONS["instances"], project, zone).get(instance)
        if vm is None:
            raise ApiError(400, f"Invalid value for field '{where}.instance': '{raw.get('instance')}'. The instance "
                           f"does not exist in zone {zone}.", "invalid")
        port = raw.get("port", neg.get("defaultPort"))
        if not isinstance(port, int) or not 1 <= port <= 65535:
            raise ApiError(400, f"Invalid value for field '{where}.port': '{port or ''}'. A port is required when "
                           "the network endpoint group has no default port.", "invalid")
        ip = str(raw.get("ipAddress") or (vm.get("networkInterfaces") or [{}])[0].get("networkIP", ""))
        return {"instance": instance, "ipAddress": ip, "port": port}

    def _m_listNetworkEndpoints(self, req: Request, coll: Collection, project: str, zone: str | None,
                                name: str, body: Obj) -> Response:
        neg = self._lookup(coll, project, zone, name)
        show = body.get("healthStatus") == "SHOW"
        healths: dict[tuple[str, int], list[Obj]] = {}
        if show and self.health_provider is not None:
            for service in self._bucket(COLLECTIONS["backendServices"], project, None).values():
                if neg["selfLink"] not in [b.get("group") for b in service.get("backends") or []]:
                    continue
                hc = {"healthCheck": (service.get("healthChecks") or [""])[0]}
                for st in self.health_provider(self._render(COLLECTIONS["backendServices"], service), neg["selfLink"]):
                    healths.setdefault((str(st.get("ipAddress")), int(st.get("port") or 0)), []).append(
                        {"backendService": {"backendService": service["selfLink"]}, "healthCheck": hc,
                         "healthState": st.get("healthState", "UNHEALTHY")})
        items = []
        for e in self._endpoints.get(neg["selfLink"], []):
            item: Obj = {"networkEndpoint": dict(e)}
            if show:
                item["healths"] = healths.get((e["ipAddress"], e["port"]), [])
            items.append(item)
        items.sort(key=lambda i: (i["networkEndpoint"]["instance"], i["networkEndpoint"]["ipAddress"],
                                  i["networkEndpoint"]["port"]))
        max_results = int(req.param("maxResults") or 500)
        start = int(req.param("pageToken") or 0) if (req.param("pageToken") or "0").isdigit() else 0
        out: Obj = {"kind": "compute#networkEndpointGroupsListNetworkEndpoints",
                    "items": items[start:start + max_results]}
        if start + max_results < len(items):
            out["nextPageToken"] = str(start + max_results)
        return Response(200, out)

    def members(self, group_url: str) -> list[str]:
        """Instance URLs of an instance group (for the data plane and health checks)."""
        with self._lock:
            return list(self._members.get(group_url, []))

    def _m_getHealth(self, req: Request, coll: Collection, project: str, zone: str | None,
                     name: str, body: Obj) -> Response:
        service = self._lookup(coll, project, zone, name)
        group = self._canonical_ref(body.get("group"), Ref("group", ("instanceGroups", "networkEndpointGroups")),
                                    project)
        if group not in [b.get("group") for b in service.get("backends", [])]:
            raise ApiError(400, f"Invalid value for field 'resource.group': '{group}'. Instance group is not a "
                           "backend of this backend service.", "invalid")
        if self.health_provider is not None:
            statuses = self.health_provider(self._render(coll, service), group)
        else:
            statuses = []
            port = service.get("port", 80)
            for url in self._members.get(group, []):
                parts = self._relative(url).split("/")
                inst = self._bucket(COLLECTIONS["instances"], parts[1], parts[3]).get(parts[-1], {})
                ip = (inst.get("networkInterfaces") or [{}])[0].get("networkIP", "")
                statuses.append({"instance": url, "ipAddress": ip, "port": port, "healthState": "HEALTHY"})
        return Response(200, {"kind": "compute#backendServiceGroupHealth", "healthStatus": statuses})

    # --- production load balancer features: Cloud Armor, SSL policies, certificate maps, QUIC, IPv6 -------------
    # The rules themselves are in features.py (facts and sources: docs/simulator-features.md).

    def _validate_features(self, coll: Collection, body: Obj) -> None:
        try:
            if coll.name == "backendServices":
                features.check_backend_service(body)
            elif coll.name == "securityPolicies":
                features.check_security_policy(body)
            elif coll.name == "sslPolicies":
                features.check_ssl_policy(body)
            elif coll.name == "targetHttpsProxies":
                features.check_https_proxy(body, self.certificate_map_exists)
            elif coll.name == "globalAddresses":
                features.check_address(body)
            elif coll.name == "urlMaps":
                found = [(ref.path.replace("[]", ""), self._by_url(str(url))) for ref in coll.refs
                         for url in _values(body, ref.path) if isinstance(url, str)]
                features.check_url_map_services([(w, s) for w, s in found if s is not None])
        except features.FeatureError as exc:
            raise ApiError(exc.status, str(exc), exc.reason) from None

    def _rule_ip_version(self, rule: Obj) -> None:
        """A forwarding rule's ipVersion: as given (it must match its IP address) or the IP address's."""
        try:
            ip = ipaddress.ip_address(str(rule.get("IPAddress") or ""))
        except ValueError:
            return
        actual = "IPV6" if ip.version == 6 else "IPV4"
        try:
            features.check_forwarding_rule_ip(rule, actual)
        except features.FeatureError as exc:
            raise ApiError(exc.status, str(exc), exc.reason) from None
        rule["ipVersion"] = actual

    def certificate_map_users(self, project: str, name: str) -> list[str]:
        """Target HTTPS proxies that use a Certificate Manager map (Certificate Manager refuses to delete it)."""
        wanted = f"//certificatemanager.googleapis.com/projects/{project}/locations/global/certificateMaps/{name}"
        with self._lock:
            self._settle()
            return sorted(o["selfLink"] for (c, _, _), b in self._store.items() if c == "targetHttpsProxies"
                          for o in b.values() if o.get("certificateMap") == wanted)

    def _set_policy(self, req: Request, coll: Collection, project: str, zone: str | None, name: str, op: str,
                    field_name: str, value: Any, policy_type: str | None = None) -> Response:
        """setSecurityPolicy, setEdgeSecurityPolicy, setSslPolicy: a reference to an existing policy, or none."""
        current = self._lookup(coll, project, zone, name)
        resolved: str | None = None
        if value:
            ref = next(r for r in coll.refs if r.path == field_name)
            resolved = self._canonical_ref(value, ref, project)
            policy = self._by_url(str(resolved))
            if policy_type is not None and policy is not None and policy.get("type", "CLOUD_ARMOR") != policy_type:
                raise ApiError(400, f"Invalid value for field '{field_name}': '{value}'. {op} takes a security "
                               f"policy of type {policy_type}, not {policy.get('type', 'CLOUD_ARMOR')}.", "invalid")

        def apply() -> None:
            if resolved is None:
                current.pop(field_name, None)
            else:
                current[field_name] = resolved
            if "fingerprint" in current:
                current["fingerprint"] = _fingerprint()

        return self._start(req, op, coll, project, zone, name, apply, current["id"])

    def _m_setSecurityPolicy(self, req: Request, coll: Collection, project: str, zone: str | None,
                             name: str, body: Obj) -> Response:
        return self._set_policy(req, coll, project, zone, name, "setSecurityPolicy", "securityPolicy",
                                body.get("securityPolicy"), "CLOUD_ARMOR")

    def _m_setEdgeSecurityPolicy(self, req: Request, coll: Collection, project: str, zone: str | None,
                                 name: str, body: Obj) -> Response:
        return self._set_policy(req, coll, project, zone, name, "setEdgeSecurityPolicy", "edgeSecurityPolicy",
                                body.get("securityPolicy"), "CLOUD_ARMOR_EDGE")

    def _m_setSslPolicy(self, req: Request, coll: Collection, project: str, zone: str | None,
                        name: str, body: Obj) -> Response:
        return self._set_policy(req, coll, project, zone, name, "setSslPolicy", "sslPolicy", body.get("sslPolicy"))

    def _m_setCertificateMap(self, req: Request, coll: Collection, project: str, zone: str | None,
                             name: str, body: Obj) -> Response:
        current = self._lookup(coll, project, zone, name)
        value = body.get("certificateMap")
        if value:
            try:
                value = features.check_certificate_map(value, self.certificate_map_exists, prefix="")
            except features.FeatureError as exc:
                raise ApiError(exc.status, str(exc), exc.reason) from None

        def apply() -> None:
            if value:
                current["certificateMap"] = value
            else:
                current.pop("certificateMap", None)
            current["fingerprint"] = _fingerprint()

        return self._start(req, "setCertificateMap", coll, project, zone, name, apply, current["id"])

    def _m_setQuicOverride(self, req: Request, coll: Collection, project: str, zone: str | None,
                           name: str, body: Obj) -> Response:
        current = self._lookup(coll, project, zone, name)
        value = body.get("quicOverride") or "NONE"

        def apply() -> None:
            current["quicOverride"] = value
            current["fingerprint"] = _fingerprint()

        return self._start(req, "setQuicOverride", coll, project, zone, name, apply, current["id"])

    def _rule_priority(self, req: Request) -> int:
        return int(req.param("priority") or 0)

    def _m_addRule(self, req: Request, coll: Collection, project: str, zone: str | None, name: str,
                   body: Obj) -> Response:
        policy = self._lookup(coll, project, zone, name)
        rule = copy.deepcopy(body)
        rule.setdefault("priority", 0)
        try:
            features.check_rule(rule)
        except features.FeatureError as exc:
            raise ApiError(exc.status, str(exc), exc.reason) from None
        if any(int(r.get("priority", 0)) == int(rule["priority"]) for r in policy.get("rules") or []):
            raise ApiError(400, f"Invalid value for field 'resource.priority': '{rule['priority']}'. A rule with "
                           "this priority already exists in the security policy.", "invalid")

        def apply() -> None:
            policy.setdefault("rules", []).append(rule)
            features.security_policy_defaults(policy)
            policy["fingerprint"] = _fingerprint()

        return self._start(req, "addSecurityPolicyRule", coll, project, zone, name, apply, policy["id"])

    def _policy_rule(self, policy: Obj, priority: int) -> Obj:
        rule: Obj | None = next((r for r in policy.get("rules") or [] if int(r.get("priority", 0)) == priority),
                                None)
        if rule is None:
            raise ApiError(400, f"Invalid value for field 'priority': '{priority}'. The security policy has no "
                           "rule with this priority.", "invalid")
        return rule

    def _m_getRule(self, req: Request, coll: Collection, project: str, zone: str | None, name: str,
                   body: Obj) -> Response:
        policy = self._lookup(coll, project, zone, name)
        return Response(200, copy.deepcopy(self._policy_rule(policy, self._rule_priority(req))))

    def _m_patchRule(self, req: Request, coll: Collection, project: str, zone: str | None, name: str,
                     body: Obj) -> Response:
        policy = self._lookup(coll, project, zone, name)
        priority = self._rule_priority(req)
        rule = self._policy_rule(policy, priority)
        merged = _merge(copy.deepcopy(rule), body)
        try:
            features.check_rule(merged)
            others = [r for r in policy.get("rules") or [] if r is not rule]
            features.check_security_policy({**policy, "rules": [*others, merged]})
        except features.FeatureError as exc:
            raise ApiError(exc.status, str(exc), exc.reason) from None
        if priority == features.DEFAULT_RULE_PRIORITY and int(merged["priority"]) != priority:
            raise ApiError(400, "Invalid value for field 'resource.priority': the default rule keeps priority "
                           f"{priority}.", "invalid")

        def apply() -> None:
            policy["rules"] = [merged if r is rule else r for r in policy.get("rules") or []]
            features.security_policy_defaults(policy)
            policy["fingerprint"] = _fingerprint()

        return self._start(req, "patchSecurityPolicyRule", coll, project, zone, name, apply, policy["id"])

    def _m_removeRule(self, req: Request, coll: Collection, project: str, zone: str | None, name: str,
                      body: Obj) -> Response:
        policy = self._lookup(coll, project, zone, name)
        priority = self._rule_priority(req)
        rule = self._policy_rule(policy, priority)
        if priority == features.DEFAULT_RULE_PRIORITY:
            raise ApiError(400, f"Invalid value for field 'priority': '{priority}'. The default rule of a security "
                           "policy cannot be removed.", "invalid")

        def apply() -> None:
            policy["rules"] = [r for r in policy.get("rules") or [] if r is not rule]
            policy["fingerprint"] = _fingerprint()

        return self._start(req, "removeSecurityPolicyRule", coll, project, zone, name, apply, policy["id"])


def _check_neg_backends(backends: list[Obj]) -> None:
    """Compute's rules for zonal network endpoint group backends (GCE_VM_IP_PORT, what GKE's NEG controller makes).

    A backend service's backends are all instance groups or all network endpoint groups; and a NEG backend balances
    by RATE (with a target: maxRatePerEndpoint or maxRate) or CONNECTION, never UTILIZATION (the API's default
    when balancingMode is not given), which only instance groups support.
    """
    kinds = {"neg" if "/networkEndpointGroups/" in str(b.get("group", "")) else "ig" for b in backends}
    if len(kinds) > 1:
        raise ApiError(400, "Invalid value for field 'resource.backends': a backend service cannot mix instance "
                       "group backends and network endpoint group backends.", "invalid")
    if kinds != {"neg"}:
        return
    for i, b in enumerate(backends):
        mode = b.get("balancingMode", "UTILIZATION")
        if mode not in ("RATE", "CONNECTION"):
            raise ApiError(400, f"Invalid value for field 'resource.backends[{i}].balancingMode': '{mode}'. "
                           "Balancing mode must be RATE or CONNECTION for network endpoint group backends of type "
                           "GCE_VM_IP_PORT.", "invalid")
        if mode == "RATE" and b.get("maxRatePerEndpoint") is None and b.get("maxRate") is None:
            raise ApiError(400, f"Invalid value for field 'resource.backends[{i}]': ''. Exactly one of maxRate or "
                           "maxRatePerEndpoint must be set for the RATE balancing mode with a network endpoint "
                           "group.", "invalid")


def _certificate_facts(pem: str) -> Obj:
    """What Compute derives from a self-managed certificate; one that does not parse is refused, as Google does."""
    from cryptography import x509

    try:
        leaf = x509.load_pem_x509_certificates(pem.encode())[0]
    except ValueError:
        raise ApiError(400, "The SSL certificate could not be parsed.", "sslCertificateCouldNotParseCert") from None
    try:
        names = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(
            x509.DNSName)
    except x509.ExtensionNotFound:
        names = []
    return {"expireTime": leaf.not_valid_after_utc.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "subjectAlternativeNames": names}


def _port_span(rule: Obj) -> tuple[int, int]:
    """First and last port a forwarding rule listens on. A global rule to a target proxy without portRange gets the
    proxy's default port (80 for HTTP, 443 for HTTPS); anything unreadable is taken as every port."""
    ports = str(rule.get("portRange") or "")
    if not ports:
        ports = "443" if "/targetHttpsProxies/" in str(rule.get("target", "")) else "80"
    first, _, last = ports.partition("-")
    try:
        return int(first), int(last or first)
    except ValueError:
        return 1, 65535


def _plural_key(coll: Collection) -> str:
    return coll.segment  # addresses, forwardingRules: the key aggregated lists use per scope


def _values(obj: Any, path: str) -> list[Any]:
    """Values at a dotted path where ``[]`` steps into lists."""
    current = [obj]
    for part in path.split("."):
        is_list = part.endswith("[]")
        key = part.removesuffix("[]")
        nxt = []
        for c in current:
            if isinstance(c, dict) and key in c:
                v = c[key]
                if is_list and isinstance(v, list):
                    nxt.extend(v)
                elif not is_list:
                    nxt.append(v)
        current = nxt
    return current


def _map_ref(obj: Any, path: str, fn: Callable[[Any], Any]) -> None:
    head, _, rest = path.partition(".")
    key = head.removesuffix("[]")
    if not isinstance(obj, dict) or key not in obj or obj[key] is None:
        return
    if head.endswith("[]"):
        if not isinstance(obj[key], list):
            return
        if rest:
            for item in obj[key]:
                _map_ref(item, rest, fn)
        else:
            obj[key] = [fn(v) for v in obj[key]]
    elif rest:
        _map_ref(obj[key], rest, fn)
    else:
        obj[key] = fn(obj[key])


def _merge(target: Obj, patch: Obj) -> Obj:
    """JSON merge patch (arrays replaced whole), as Compute's PATCH applies it."""
    for key, value in patch.items():
        if key in OUTPUT_ONLY or key == "fingerprint":
            continue
        if value is None:
            target.pop(key, None)
        elif isinstance(value, dict) and isinstance(target.get(key), dict):
            target[key] = _merge(target[key], value)
        else:
            target[key] = copy.deepcopy(value)
    return target
