"""Certificate Manager v1 (certificatemanager.googleapis.com): certificates, certificate maps and their entries.

A separate API from Compute, served by its own endpoint like GKE Hub (gcloud reaches it through
``[api_endpoint_overrides] certificatemanager``). Paths are Google's: ``/v1/projects/P/locations/global/
certificateMaps/M/certificateMapEntries/E``, ``/v1/projects/P/locations/global/certificates/C``. Every create,
patch and delete answers a long-running ``Operation`` that is already ``done``, with the resource in ``response``.

Rules enforced (Certificate Manager API reference): maps live in location ``global`` for a global external
Application Load Balancer; a map with entries cannot be deleted ("Remove all the entries from the map before calling
this method"); an entry has either a ``hostname`` or the ``PRIMARY`` matcher and names existing certificates; a
certificate is ``selfManaged`` (PEM certificate and key; the key is never returned) or ``managed`` (domains). A map
a target HTTPS proxy uses is not deleted either (Compute's reference would dangle). Facts and sources:
docs/simulator-features.md.
"""

from __future__ import annotations

import copy
import os
import re
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from gitlab_mci.sim.httpd import Request, Response

Obj = dict[str, Any]
_TYPE = "type.googleapis.com/google.cloud.certificatemanager.v1."
_ID_RE = re.compile(r"^[a-z]([-a-z0-9]{0,61}[a-z0-9])?$")
_HOST_RE = re.compile(r"^(\*\.)?([a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?\.)+[a-z]{2,63}$")
_STATUS = {400: "INVALID_ARGUMENT", 404: "NOT_FOUND", 409: "ALREADY_EXISTS", 405: "METHOD_NOT_ALLOWED",
           501: "UNIMPLEMENTED"}


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class _Error(Exception):
    def __init__(self, code: int, message: str, status: str | None = None) -> None:
        super().__init__(message)
        self.code, self.status = code, status or _STATUS.get(code, "UNKNOWN")

    def response(self) -> Response:
        return Response(self.code, {"error": {"code": self.code, "message": str(self), "status": self.status}})


class CertificateManagerEmulator:
    """Certificates, certificate maps and map entries of the simulated project(s), served at ``/v1/``."""

    def __init__(self, projects: tuple[str, ...]) -> None:
        self.projects = projects
        self._lock = threading.RLock()
        self._store: dict[str, Obj] = {}  # full resource name -> resource (private fields start with _)
        self._ops: dict[str, Obj] = {}
        # Target HTTPS proxies that use a map (Compute's side), for in-use refusals and gclbTargets.
        self.map_users: Callable[[str, str], list[str]] | None = None
        self._revision = 0

    # --- public API (Compute emulator, data plane, tests) -----------------------------------------------------

    def map_exists(self, project: str, name: str) -> bool:
        with self._lock:
            return f"projects/{project}/locations/global/certificateMaps/{name}" in self._store

    def revision(self) -> int:
        return self._revision

    def map_certificates(self, project: str, name: str) -> list[tuple[str, Obj]]:
        """(hostname or "" for PRIMARY, stored certificate with its private fields) for each entry of a map."""
        prefix = f"projects/{project}/locations/global/certificateMaps/{name}/certificateMapEntries/"
        with self._lock:
            out = []
            for full, entry in sorted(self._store.items()):
                if not full.startswith(prefix):
                    continue
                for cert_name in entry.get("certificates") or []:
                    cert = self._store.get(cert_name)
                    if cert is not None:
                        out.append((str(entry.get("hostname") or ""), copy.deepcopy(cert)))
            return out

    # --- HTTP ----------------------------------------------------------------------------------------------------

    def handle(self, req: Request) -> Response:
        if not req.path.startswith("/v1/"):
            return _Error(404, f"The requested URL {req.path} was not found on this server.").response()
        path = req.path.removeprefix("/v1/").rstrip("/")
        try:
            with self._lock:
                return self._dispatch(req, path)
        except _Error as exc:
            return exc.response()

    def _dispatch(self, req: Request, path: str) -> Response:
        parts = path.split("/")
        if len(parts) < 5 or parts[0] != "projects" or parts[2] != "locations":
            raise _Error(404, f"The requested URL /v1/{path} was not found on this server.")
        project, location = parts[1], parts[3]
        if project not in self.projects:
            raise _Error(403, f"Permission 'certificatemanager.certs.list' denied on resource '//certificatemanager."
                         f"googleapis.com/projects/{project}/locations/{location}' (or it may not exist).",
                         "PERMISSION_DENIED")
        if parts[4] == "operations" and len(parts) == 6 and req.method == "GET":
            op = self._ops.get(path)
            if op is None:
                raise _Error(404, f"Operation '{path}' not found")
            return Response(200, op)
        rest = parts[4:]
        if rest[0] == "certificateMaps" and len(rest) <= 2:
            return self._call(req, path, "certificateMaps", "certificateMapId", "CertificateMap", location)
        if rest[0] == "certificateMaps" and len(rest) in (3, 4) and rest[2] == "certificateMapEntries":
            parent = "/".join(parts[:6])
            if parent not in self._store:
                raise _Error(404, f"Resource '{parent}' was not found")
            return self._call(req, path, "certificateMapEntries", "certificateMapEntryId", "CertificateMapEntry",
                              location)
        if rest[0] == "certificates" and len(rest) <= 2:
            return self._call(req, path, "certificates", "certificateId", "Certificate", location)
        raise _Error(501, f"gitlab-mci simulator does not implement {req.method} /v1/{path}", "UNIMPLEMENTED")

    def _call(self, req: Request, path: str, segment: str, id_param: str, kind: str, location: str) -> Response:
        collection_path = path if path.endswith(segment) else path.rsplit("/", 1)[0]
        if path == collection_path:
            if req.method == "GET":
                return Response(200, self._list(collection_path, segment, req))
            if req.method == "POST":
                rid = req.param(id_param) or ""
                if not _ID_RE.match(rid):
                    raise _Error(400, f"{id_param} '{rid}' must match [a-z]([-a-z0-9]*[a-z0-9])? (at most 63).")
                if location != "global" and segment != "certificates":
                    raise _Error(400, f"Location '{location}' is not supported: certificate maps used by a global "
                                 "external Application Load Balancer are in location 'global'.")
                full = f"{collection_path}/{rid}"
                if full in self._store:
                    raise _Error(409, f"Resource '{full}' already exists")
                body = self._body(req)
                resource = self._create(segment, full, body)
                return Response(200, self._operation("create", kind, resource, full))
            raise _Error(405, f"Method {req.method} is not allowed for /v1/{path}", "METHOD_NOT_ALLOWED")
        found = self._store.get(path)
        if found is None:
            raise _Error(404, f"Resource '{path}' was not found")
        if req.method == "GET":
            return Response(200, self._render(path, found))
        if req.method == "DELETE":
            self._check_delete(segment, path)
            del self._store[path]
            self._revision += 1
            return Response(200, self._operation("delete", kind, None, path))
        if req.method == "PATCH":
            body = self._body(req)
            mask = [m.strip() for m in (req.param("updateMask") or "").split(",") if m.strip()]
            if not mask:
                raise _Error(400, "update_mask is required")
            for field in mask:
                if field not in ("description", "labels", "certificates", "hostname"):
                    raise _Error(400, f"update_mask path '{field}' is not updatable")
                if field in body:
                    found[field] = copy.deepcopy(body[field])
            if segment == "certificateMapEntries":
                self._check_entry(found)
            found["updateTime"] = _now()
            self._revision += 1
            return Response(200, self._operation("update", kind, found, path))
        raise _Error(405, f"Method {req.method} is not allowed for /v1/{path}", "METHOD_NOT_ALLOWED")

    @staticmethod
    def _body(req: Request) -> Obj:
        try:
            body = req.json() or {}
        except ValueError:
            raise _Error(400, "Invalid JSON payload received.") from None
        if not isinstance(body, dict):
            raise _Error(400, "Invalid JSON payload received. Expected an object.")
        return body

    def _list(self, collection_path: str, segment: str, req: Request) -> Obj:
        prefix = collection_path + "/"
        items = [self._render(n, o) for n, o in sorted(self._store.items())
                 if n.startswith(prefix) and "/" not in n[len(prefix):]]
        size = int(req.param("pageSize") or 500) or 500
        start = int(req.param("pageToken") or 0) if (req.param("pageToken") or "0").isdigit() else 0
        out: Obj = {segment: items[start:start + size]} if items else {}
        if start + size < len(items):
            out["nextPageToken"] = str(start + size)
        return out

    def _create(self, segment: str, full: str, body: Obj) -> Obj:
        allowed = {"certificateMaps": {"description", "labels"},
                   "certificateMapEntries": {"description", "labels", "hostname", "matcher", "certificates"},
                   "certificates": {"description", "labels", "scope", "selfManaged", "managed"}}[segment]
        unknown = set(body) - allowed - {"name", "createTime", "updateTime"}
        if unknown:
            raise _Error(400, f'Invalid JSON payload received. Unknown name "{sorted(unknown)[0]}": Cannot find '
                         "field.")
        now = _now()
        resource: Obj = {**copy.deepcopy(body), "name": full, "createTime": now, "updateTime": now}
        if segment == "certificateMapEntries":
            self._check_entry(resource)
            resource["state"] = "ACTIVE"
        if segment == "certificates":
            self._check_certificate(resource)
        self._store[full] = resource
        self._revision += 1
        return resource

    def _check_entry(self, entry: Obj) -> None:
        hostname, matcher = entry.get("hostname"), entry.get("matcher")
        if bool(hostname) == bool(matcher):
            raise _Error(400, "A certificate map entry has exactly one of hostname and matcher.")
        if matcher is not None and matcher != "PRIMARY":
            raise _Error(400, f"Invalid value for matcher: '{matcher}'. The only matcher is PRIMARY.")
        if hostname is not None and not _HOST_RE.match(str(hostname).lower()):
            raise _Error(400, f"Invalid hostname '{hostname}': a domain name, optionally starting with '*.'.")
        certs = entry.get("certificates") or []
        if len(certs) != 1:
            raise _Error(400, "A certificate map entry names one certificate (certificates: "
                         "[projects/P/locations/global/certificates/C]).")
        for cert in certs:
            if not re.match(r"^projects/[^/]+/locations/[^/]+/certificates/[^/]+$", str(cert)):
                raise _Error(400, f"Invalid certificate name '{cert}': projects/P/locations/L/certificates/C.")
            if cert not in self._store:
                raise _Error(404, f"Resource '{cert}' was not found")

    def _check_certificate(self, cert: Obj) -> None:
        self_managed, managed = cert.get("selfManaged"), cert.get("managed")
        if bool(self_managed) == bool(managed):
            raise _Error(400, "A certificate is either selfManaged or managed.")
        if managed:
            domains = managed.get("domains") or []
            if not domains:
                raise _Error(400, "A managed certificate needs at least one domain.")
            cert["managed"] = {**managed, "state": "ACTIVE"}
            cert["sanDnsnames"] = list(domains)
            return
        pem, key = (self_managed or {}).get("pemCertificate"), (self_managed or {}).get("pemPrivateKey")
        if not pem or not key:
            raise _Error(400, "A self-managed certificate needs pemCertificate and pemPrivateKey.")
        from cryptography import x509

        try:
            leaf = x509.load_pem_x509_certificates(str(pem).encode())[0]
        except ValueError:
            raise _Error(400, "The certificate PEM could not be parsed.") from None
        try:
            names = list(leaf.extensions.get_extension_for_class(
                x509.SubjectAlternativeName).value.get_values_for_type(x509.DNSName))
        except x509.ExtensionNotFound:
            names = []
        cert["_key"] = str(key)
        cert["pemCertificate"] = str(pem)
        cert["sanDnsnames"] = names
        cert["expireTime"] = leaf.not_valid_after_utc.strftime("%Y-%m-%dT%H:%M:%SZ")
        cert["selfManaged"] = {}  # the key is input only; Google answers neither PEM inside selfManaged

    def _check_delete(self, segment: str, path: str) -> None:
        if segment == "certificateMaps":
            if any(n.startswith(path + "/certificateMapEntries/") for n in self._store):
                raise _Error(400, f"Certificate map '{path}' has entries: remove all the entries from the map before "
                             "deleting it.", "FAILED_PRECONDITION")
            users = self.map_users(path.split("/")[1], path.rsplit("/", 1)[-1]) if self.map_users else []
            if users:
                raise _Error(400, f"Certificate map '{path}' is in use by {users[0]}.", "FAILED_PRECONDITION")
        if segment == "certificates":
            for name, other in self._store.items():
                if path in (other.get("certificates") or []):
                    raise _Error(400, f"Certificate '{path}' is in use by '{name}'.", "FAILED_PRECONDITION")

    def _render(self, full: str, resource: Obj) -> Obj:
        out = {k: copy.deepcopy(v) for k, v in resource.items() if not k.startswith("_")}
        if "/certificateMaps/" in full and "/certificateMapEntries/" not in full and self.map_users is not None:
            users = self.map_users(full.split("/")[1], full.rsplit("/", 1)[-1])
            if users:
                out["gclbTargets"] = [{"targetHttpsProxy": "//compute.googleapis.com/" + u.split("/compute/v1/", 1)[-1]}
                                      for u in users]
        return out

    def _operation(self, verb: str, kind: str, resource: Obj | None, target: str) -> Obj:
        location = target.split("/")[3]
        project = target.split("/")[1]
        name = f"projects/{project}/locations/{location}/operations/operation-{int(time.time() * 1000)}-" \
               f"{os.urandom(6).hex()}"
        now = _now()
        response = {"@type": f"{_TYPE}{kind}", **self._render(target, resource)} if resource is not None \
            else {"@type": "type.googleapis.com/google.protobuf.Empty"}
        op = {"name": name, "done": True, "response": response,
              "metadata": {"@type": f"{_TYPE}OperationMetadata", "createTime": now, "endTime": now,
                           "target": target, "verb": verb, "requestedCancellation": False, "apiVersion": "v1"}}
        self._ops[name] = op
        return op
