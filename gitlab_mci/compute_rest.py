"""A small Compute v1 REST transport: JSON in, JSON out, over one pooled urllib3 connection manager.

Why not google-cloud-compute here: its package ``__init__`` imports all ~100 service clients, their transports and
the proto-plus types (1.2-1.4 s and ~90 MB in every process, whichever single client is wanted), and the engine
works in REST JSON anyway, so every request and answer was converted to messages and back for nothing. urllib3 is
already imported by the Kubernetes client; credentials (google-auth) are loaded only for a real endpoint. See
docs/performance.md for the measurements. google-cloud-compute stays the documented client for Python users and
the independent client of the tests.

Errors are :class:`ComputeApiError`, shaped like ``google.api_core.exceptions.GoogleAPICallError`` (``code``,
``message``, ``errors``, ``reason``) so :func:`gitlab_mci.gcp.is_transient` reads both; api_core itself is not
imported (it pulls in grpc: +65 ms, +12 MB).
"""

from __future__ import annotations

import builtins
import json
import threading
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlencode

PREFIX = "/compute/v1/projects/"


class ComputeApiError(Exception):
    """An HTTP error answered by the Compute API (or a connection that failed, as a 503)."""

    def __init__(self, code: int, message: str, errors: list[dict[str, Any]] | None = None) -> None:
        super().__init__(f"{code} {message}")
        self.code = code
        self.message = message
        self.errors = errors or []

    @property
    def reason(self) -> str | None:
        return str(self.errors[0].get("reason")) if self.errors and self.errors[0].get("reason") else None


class ComputeRest:
    """Compute calls for one endpoint (``https://compute.googleapis.com`` or the simulator) and project.

    Thread-safe: one instance is shared by the engine's workers. ``credentials`` is ``None`` for an anonymous
    endpoint (the plain-http loopback simulator), else google-auth credentials, refreshed as they expire.
    """

    def __init__(self, endpoint: str, project: str, credentials: Any = None, *, pool: int = 64) -> None:
        import urllib3

        self.endpoint = endpoint.rstrip("/")
        self.project = project
        self._credentials = credentials
        self._auth_lock = threading.Lock()
        # No urllib3 retries: transient errors are retried by gcp.retry_transient, with backoff and a requestId.
        self._http = urllib3.PoolManager(num_pools=4, maxsize=pool, block=False, retries=False)

    # -- the one request method ------------------------------------------------------------------------------

    def request(self, method: str, path: str, *, params: dict[str, Any] | None = None,
                body: dict[str, Any] | None = None, timeout: float = 150.0) -> dict[str, Any]:
        """``method`` on ``/compute/v1/projects/{path}``; the answer's JSON, or :class:`ComputeApiError`."""
        import urllib3

        query = urlencode({k: v for k, v in (params or {}).items() if v is not None})
        url = f"{self.endpoint}{PREFIX}{path}" + (f"?{query}" if query else "")
        headers = {"Accept": "application/json"}
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        if self._credentials is not None:
            self._authorize(method, url, headers)
        try:
            resp = self._http.request(method, url, body=data, headers=headers,
                                      timeout=urllib3.Timeout(connect=30.0, read=timeout))
        except urllib3.exceptions.HTTPError as exc:
            # Nothing answered: retried like a 503 (an insert's retry carries the same requestId).
            raise ComputeApiError(503, f"{method} {url}: connection failed: {exc}") from None
        text = resp.data.decode("utf-8", "replace")
        if resp.status >= 400:
            raise _error(method, url, resp.status, text)
        answer: dict[str, Any] = json.loads(text) if text.strip() else {}
        return answer

    def _authorize(self, method: str, url: str, headers: dict[str, str]) -> None:
        from google.auth.transport.urllib3 import Request

        with self._auth_lock:  # one refresh at a time, not one per worker
            self._credentials.before_request(Request(self._http), method, url, headers)  # type: ignore[no-untyped-call]

    # -- what the callers use --------------------------------------------------------------------------------

    def get(self, path: str, *, project: str | None = None) -> dict[str, Any]:
        return self.request("GET", f"{project or self.project}/{path}")

    def get_or_none(self, path: str, *, project: str | None = None) -> dict[str, Any] | None:
        """The resource, or ``None`` when it does not exist (404)."""
        try:
            return self.get(path, project=project)
        except ComputeApiError as exc:
            if exc.code == 404:
                return None
            raise

    def pages(self, path: str, *, params: dict[str, Any] | None = None,
              project: str | None = None) -> Iterator[dict[str, Any]]:
        """Every page of a list (``nextPageToken``)."""
        token = None
        while True:
            page = self.request("GET", f"{project or self.project}/{path}", params={**(params or {}),
                                                                                   "pageToken": token})
            yield page
            token = page.get("nextPageToken")
            if not token:
                return

    def list(self, path: str, *, filter: str | None = None, project: str | None = None,
             max_results: int | None = None) -> list[dict[str, Any]]:
        """Every item of a collection (all pages), optionally filtered server-side."""
        params = {"filter": filter, "maxResults": max_results}
        return [item for page in self.pages(path, params=params, project=project) for item in page.get("items", [])]

    def aggregated(self, kind: str, *, project: str | None = None,
                   max_results: int | None = None) -> builtins.list[tuple[str, dict[str, Any]]]:
        """``aggregated/{kind}``: ``(scope, item)`` for every item of every scope, all pages (``zones/us-x1-a``)."""
        out = []
        for page in self.pages(f"aggregated/{kind}", params={"maxResults": max_results}, project=project):
            for scope, scoped in (page.get("items") or {}).items():
                out += [(scope, item) for item in scoped.get(kind, [])]
        return out

    def post(self, path: str, body: dict[str, Any] | None = None, *, params: dict[str, Any] | None = None,
             project: str | None = None) -> dict[str, Any]:
        return self.request("POST", f"{project or self.project}/{path}", params=params, body=body or {})

    def wait_operation(self, operation: dict[str, Any], timeout: float) -> dict[str, Any]:
        """One ``operations.wait`` call on this endpoint (returns when done or after about two minutes)."""
        name = operation["name"]
        zone = str(operation.get("zone") or "").rsplit("/", 1)[-1]
        region = str(operation.get("region") or "").rsplit("/", 1)[-1]
        scope = f"zones/{zone}" if zone else f"regions/{region}" if region else "global"
        project = _project_of(operation) or self.project
        return self.request("POST", f"{project}/{scope}/operations/{name}/wait", timeout=timeout + 10)


def _project_of(operation: dict[str, Any]) -> str | None:
    link = str(operation.get("selfLink") or "")
    return link.split("/projects/", 1)[1].split("/", 1)[0] if "/projects/" in link else None


def _error(method: str, url: str, status: int, text: str) -> ComputeApiError:
    """What ``google.api_core.exceptions.from_http_response`` would make of the answer: same code, message
    (``METHOD URL: message``) and ``errors``."""
    try:
        payload = json.loads(text)
    except ValueError:
        payload = {}
    error = payload.get("error") if isinstance(payload, dict) else None
    if not isinstance(error, dict):
        error = {}
    message = str(error.get("message") or text.strip() or f"HTTP {status}")
    errors = [e for e in error.get("errors", []) if isinstance(e, dict)]
    return ComputeApiError(status, f"{method} {url}: {message}", errors)
