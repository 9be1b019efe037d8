"""The one place that builds Google Compute clients and waits on their operations.

The endpoint comes from ``GITLAB_MCI_COMPUTE_ENDPOINT`` (default: Google's); a plain-``http`` loopback endpoint (the
simulator) gets anonymous credentials, anything else Application Default Credentials. Operations are polled
through the operations ``wait`` method of the *same* endpoint — google-cloud-compute's own poller would go to
compute.googleapis.com — and a finished operation with ``error`` set is a failure even when the library would
return quietly.

gitlab-mci's own commands call Compute through :attr:`Compute.rest` (:mod:`gitlab_mci.compute_rest`, REST JSON,
no google-cloud-compute import: see docs/performance.md); :meth:`Compute.client` gives google-cloud-compute clients
for the same endpoint and credentials, for Python users and the tests.
"""

from __future__ import annotations

import functools
import os
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar
from urllib.parse import urlsplit

from gitlab_mci.compute_rest import ComputeApiError, ComputeRest
from gitlab_mci.errors import UserError

DEFAULT_ENDPOINT = "https://compute.googleapis.com"
C = TypeVar("C")
T = TypeVar("T")


class OperationError(Exception):
    """A Compute operation finished with an error (or did not finish in time)."""

    def __init__(self, message: str, *, reasons: list[str] | None = None, status: int | None = None) -> None:
        super().__init__(" ".join(message.split()))
        self.reasons = reasons or []
        self.status = status


TRANSIENT_STATUS = frozenset({429, 500, 502, 503, 504})
RATE_LIMIT_REASONS = frozenset({"rateLimitExceeded", "userRateLimitExceeded"})


def default_backoff() -> float:
    """First wait after a transient error (doubling up to 8 s); ``GITLAB_MCI_RETRY_BACKOFF`` overrides it (tests)."""
    return float(os.environ.get("GITLAB_MCI_RETRY_BACKOFF", "0.5"))


def is_transient(exc: Any) -> bool:
    """429, 5xx and 403 rate limits: worth retrying; anything else is an answer."""
    reason = (exc.errors[0] or {}).get("reason") if getattr(exc, "errors", None) else None
    return getattr(exc, "code", None) in TRANSIENT_STATUS or reason in RATE_LIMIT_REASONS


def is_api_error(exc: BaseException) -> bool:
    """An error the API answered: ours (:class:`ComputeApiError`) or google-api-core's, which is only checked for
    when api_core is loaded already (importing it costs grpc: a command that does not use it never pays)."""
    if isinstance(exc, ComputeApiError):
        return True
    gexc = sys.modules.get("google.api_core.exceptions")
    return gexc is not None and isinstance(exc, gexc.GoogleAPICallError)


def retry_transient(fn: Callable[[], T], *, retries: int = 5, backoff: float | None = None) -> T:
    """``fn()``, retried with exponential backoff while it fails transiently; the last error is raised as is."""
    delay = default_backoff() if backoff is None else backoff
    for attempt in range(retries + 1):
        try:
            return fn()
        except Exception as exc:
            if not is_api_error(exc) or not is_transient(exc) or attempt == retries:
                raise
        time.sleep(delay)
        delay = min(delay * 2, 8.0)
    raise AssertionError("unreachable")


def _is_local(endpoint: str) -> bool:
    parts = urlsplit(endpoint)
    return parts.scheme == "http" and (parts.hostname or "").startswith(("127.", "localhost", "::1"))


def project_from_env(explicit: str | None = None) -> str:
    """``--project``, else ``GOOGLE_CLOUD_PROJECT``, else ``CLOUDSDK_CORE_PROJECT``."""
    project = explicit or os.environ.get("GOOGLE_CLOUD_PROJECT") or os.environ.get("CLOUDSDK_CORE_PROJECT")
    if not project:
        raise UserError("no Google Cloud project: pass --project or set GOOGLE_CLOUD_PROJECT")
    return project


@dataclass
class Compute:
    """Compute clients for one endpoint and project, created once and shared across threads."""

    project: str
    endpoint: str = DEFAULT_ENDPOINT
    _clients: dict[type, Any] = field(default_factory=dict, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _rest: ComputeRest | None = field(default=None, repr=False)

    @classmethod
    def from_env(cls, project: str | None = None) -> Compute:
        endpoint = os.environ.get("GITLAB_MCI_COMPUTE_ENDPOINT") or DEFAULT_ENDPOINT
        if not endpoint.startswith(("http://", "https://")):
            raise UserError(f"GITLAB_MCI_COMPUTE_ENDPOINT={endpoint!r} is not an http(s) URL")
        return cls(project_from_env(project), endpoint.rstrip("/"))

    @property
    def local(self) -> bool:
        return _is_local(self.endpoint)

    @property
    def rest(self) -> ComputeRest:
        """The REST JSON transport for this endpoint (what gitlab-mci's commands use), created once."""
        with self._lock:
            if self._rest is None:
                # Anonymous (no Authorization header at all) for the simulator, ADC otherwise.
                self._rest = ComputeRest(self.endpoint, self.project,
                                         None if self.local else _default_credentials())
            return self._rest

    def client(self, cls: type[C]) -> C:
        """A client of ``cls`` (e.g. ``compute_v1.BackendServicesClient``) for this endpoint."""
        with self._lock:
            if cls not in self._clients:
                from google.api_core.client_options import ClientOptions

                kwargs: dict[str, Any] = {}
                if self.endpoint != DEFAULT_ENDPOINT:
                    kwargs["client_options"] = ClientOptions(api_endpoint=self.endpoint)
                if self.local:
                    from google.auth.credentials import AnonymousCredentials

                    kwargs["credentials"] = AnonymousCredentials()  # type: ignore[no-untyped-call]
                else:
                    kwargs["credentials"] = _default_credentials()
                self._clients[cls] = cls(**kwargs)
            client: C = self._clients[cls]
            return client

    def wait(self, operation: Any, *, timeout: float = 600.0, what: str = "") -> Any:
        """Wait for an operation (REST JSON from :attr:`rest`; or google-cloud-compute's ``ExtendedOperation``,
        ``Operation`` or its name) and raise :class:`OperationError` on any error."""
        if isinstance(operation, dict):
            return self._wait_json(operation, timeout=timeout, what=what)
        from google.cloud import compute_v1

        op = getattr(operation, "_extended_operation", operation)
        name = op if isinstance(op, str) else op.name
        zone = None if isinstance(op, str) else (op.zone.rsplit("/", 1)[-1] if op.zone else None)
        deadline = time.monotonic() + timeout
        current = op
        while True:
            status = getattr(current, "status", None)
            if status is not None and getattr(status, "name", str(status)) == "DONE":
                break
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise OperationError(f"{what or name}: operation {name} did not finish within {timeout:g}s")
            # `wait` returns when the operation is done or after about two minutes, whichever is first.
            if zone:
                current = retry_transient(functools.partial(
                    self.client(compute_v1.ZoneOperationsClient).wait,
                    project=self.project, zone=zone, operation=name, timeout=min(remaining, 130)))
            else:
                current = retry_transient(functools.partial(
                    self.client(compute_v1.GlobalOperationsClient).wait,
                    project=self.project, operation=name, timeout=min(remaining, 130)))
        error = getattr(current, "error", None)
        errors = list(getattr(error, "errors", []) or [])
        http_status = int(getattr(current, "http_error_status_code", 0) or 0)
        if errors or http_status:
            reasons = [e.code for e in errors]
            messages = "; ".join(e.message for e in errors) or str(getattr(current, "http_error_message", ""))
            raise OperationError(f"{what or current.operation_type} failed: {messages}", reasons=reasons,
                                 status=http_status or None)
        return current

    def _wait_json(self, op: dict[str, Any], *, timeout: float, what: str) -> dict[str, Any]:
        name = op["name"]
        deadline = time.monotonic() + timeout
        current = op
        while current.get("status") != "DONE":
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise OperationError(f"{what or name}: operation {name} did not finish within {timeout:g}s")
            current = retry_transient(functools.partial(self.rest.wait_operation, current, min(remaining, 130)))
        errors = list((current.get("error") or {}).get("errors") or [])
        http_status = int(current.get("httpErrorStatusCode") or 0)
        if errors or http_status >= 400:
            reasons = [str(e.get("code", "")) for e in errors]
            messages = "; ".join(str(e.get("message", "")) for e in errors) or str(current.get("httpErrorMessage", ""))
            raise OperationError(f"{what or current.get('operationType', name)} failed: {messages}", reasons=reasons,
                                 status=http_status or None)
        return current


def credentials_for(endpoint: str) -> Any:
    """Anonymous credentials for a plain-http loopback endpoint (the simulator), else Application Default
    Credentials: the rule every Google client here follows (Compute above, GKE Hub in :mod:`gitlab_mci.fleet`)."""
    if _is_local(endpoint):
        from google.auth.credentials import AnonymousCredentials

        return AnonymousCredentials()  # type: ignore[no-untyped-call]
    return _default_credentials()


def _default_credentials() -> Any:
    import google.auth
    from google.auth.exceptions import DefaultCredentialsError

    try:
        credentials, _ = google.auth.default(scopes=["https://www.googleapis.com/auth/cloud-platform"])
    except DefaultCredentialsError:
        raise UserError(
            "no Google credentials: set GOOGLE_APPLICATION_CREDENTIALS (or run `gitlab-mci auth gitlab-oidc` in CI)"
        ) from None
    return credentials
