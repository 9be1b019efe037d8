"""The simulator's HTTP plumbing: one small threaded server per endpoint, a shared request journal and fault injection.

Every simulated API (the Compute emulator, one Kubernetes API server per cluster) is a ``Handler``: a callable that
takes a :class:`Request` and returns a :class:`Response`. :class:`SimServer` serves a handler on loopback, records
each request in the :class:`Journal` and applies the :class:`Faults` that match it before the handler sees it.
"""

from __future__ import annotations

import json
import random
import re
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

JSONValue = Any


@dataclass
class Request:
    """One HTTP request as the simulated APIs see it."""

    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: bytes = b""
    service: str = ""

    def param(self, name: str, default: str | None = None) -> str | None:
        """The first value of query parameter ``name``."""
        values = self.query.get(name)
        return values[0] if values else default

    def json(self) -> JSONValue:
        """The body parsed as JSON (``None`` when empty); raises ``ValueError`` on malformed JSON."""
        if not self.body:
            return None
        return json.loads(self.body)

    @property
    def content_type(self) -> str:
        return self.headers.get("content-type", "").split(";")[0].strip().lower()


@dataclass
class Response:
    """What a handler answers. ``body`` is serialised as JSON unless it is bytes.

    ``parts`` are the requests served inside this one (the parts of a batch); the journal records each of them.
    """

    status: int = 200
    body: JSONValue = None
    headers: dict[str, str] = field(default_factory=dict)
    content_type: str = "application/json"
    parts: list[Served] = field(default_factory=list)

    def encode(self) -> bytes:
        if self.body is None:
            return b""
        if isinstance(self.body, bytes):
            return self.body
        if isinstance(self.body, str):
            return self.body.encode()
        return json.dumps(self.body).encode()


@dataclass
class Served:
    """A request answered inside another one (a part of a batch request), for the journal."""

    request: Request
    response: Response
    duration: float
    fault: str | None = None


Handler = Callable[[Request], Response]
# Whether a request asks for a change of state (a write), as the service it is sent to defines it.
WriteClassifier = Callable[[Request], bool]


def verb_is_write(req: Request) -> bool:
    """The default: any method but GET, HEAD and OPTIONS (right for Kubernetes; Compute reads with some POSTs)."""
    return req.method not in ("GET", "HEAD", "OPTIONS")


@dataclass(frozen=True)
class JournalEntry:
    """One served request: which simulated service, what was asked, what was answered, and how long it took.

    ``write`` says whether the request asked for a change of state, decided by the API method it calls (for
    Compute: insert, patch, setNamedPorts… are writes; get, list, getHealth, operations.wait are not), not by its
    HTTP verb. A batch request is journaled as one read plus one entry per part.
    """

    service: str
    method: str
    path: str
    status: int
    duration: float
    started: float
    fault: str | None = None
    write: bool = False

    @property
    def is_write(self) -> bool:
        return self.write


class Journal:
    """Thread-safe record of every request the simulator served, for tests and benchmarks."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._entries: list[JournalEntry] = []

    def record(self, entry: JournalEntry) -> None:
        with self._lock:
            self._entries.append(entry)

    def entries(self, service: str | None = None) -> list[JournalEntry]:
        """All entries, or those of services whose name starts with ``service`` (e.g. ``"kube"``, ``"compute"``)."""
        with self._lock:
            items = list(self._entries)
        if service is None:
            return items
        return [e for e in items if e.service == service or e.service.startswith(service + ":")]

    def writes(self, service: str | None = None) -> list[JournalEntry]:
        return [e for e in self.entries(service) if e.is_write]

    def reads(self, service: str | None = None) -> list[JournalEntry]:
        return [e for e in self.entries(service) if not e.is_write]

    def reset(self) -> None:
        with self._lock:
            self._entries.clear()

    def to_json(self) -> list[dict[str, Any]]:
        return [asdict(e) for e in self.entries()]


# Google's error bodies for the status codes a fault can inject; the Kubernetes servers answer with a Status instead.
_FAULT_REASONS = {
    429: ("rateLimitExceeded", "Rate Limit Exceeded"),
    403: ("rateLimitExceeded", "Rate Limit Exceeded"),
    500: ("backendError", "Internal error. Please try again or contact Google Support."),
    502: ("badGateway", "Bad Gateway"),
    503: ("backendError", "The service is currently unavailable."),
    504: ("backendError", "Deadline exceeded."),
}


@dataclass
class FaultRule:
    """One fault: which requests it matches and what it does to them.

    ``action`` is ``"status"`` (answer ``status`` without calling the handler), ``"latency"`` (sleep ``latency``
    seconds, then serve normally) or ``"operation_error"`` (serve, but the Compute operation finishes with an error).
    A rule fires on every match, on the ``nth`` match only (or from it ``onward``), or with ``probability`` drawn
    from a generator seeded by ``seed``; ``times`` bounds how often it fires in total. ``method`` may list several
    methods: ``"POST|PUT|PATCH|DELETE"``.
    """

    action: str = "status"
    status: int = 503
    reason: str | None = None
    latency: float = 0.0
    service: str = "*"
    method: str = "*"
    path: str = ".*"
    probability: float = 1.0
    seed: int | None = None
    nth: int | None = None
    onward: bool = False  # with nth: fire on the nth match and every one after (a client that "crashed")
    times: int | None = None
    matched: int = 0
    fired: int = 0
    _rng: random.Random = field(default_factory=random.Random, repr=False)
    _path_re: re.Pattern[str] = field(default=re.compile(".*"), repr=False)

    def __post_init__(self) -> None:
        if self.action not in ("status", "latency", "operation_error"):
            raise ValueError(f"fault action must be status, latency or operation_error, not {self.action!r}")
        if not 0.0 <= self.probability <= 1.0:
            raise ValueError("fault probability must be between 0 and 1")
        self._rng = random.Random(self.seed)
        self._path_re = re.compile(self.path)

    def matches(self, req: Request) -> bool:
        if self.service != "*" and req.service != self.service and not req.service.startswith(self.service + ":"):
            return False
        # A method or an alternation of methods ("POST|PUT|PATCH|DELETE").
        if self.method != "*" and req.method.upper() not in self.method.upper().split("|"):
            return False
        return self._path_re.search(req.path) is not None

    def should_fire(self) -> bool:
        """Count a match and decide whether this one fires (called with the Faults lock held)."""
        self.matched += 1
        if self.times is not None and self.fired >= self.times:
            return False
        if self.nth is not None:
            hit = self.matched >= self.nth if self.onward else self.matched == self.nth
        else:
            hit = self._rng.random() < self.probability if self.probability < 1.0 else True
        if hit:
            self.fired += 1
        return hit

    def describe(self) -> dict[str, Any]:
        return {
            k: v for k, v in asdict(self).items() if not k.startswith("_") and v is not None
        }


class Faults:
    """The active fault rules, shared by every simulated endpoint."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._rules: list[FaultRule] = []

    def add(self, rule: FaultRule) -> FaultRule:
        with self._lock:
            self._rules.append(rule)
        return rule

    def clear(self) -> None:
        with self._lock:
            self._rules.clear()

    def rules(self) -> list[FaultRule]:
        with self._lock:
            return list(self._rules)

    def pick(self, req: Request, actions: tuple[str, ...] = ("status", "latency")) -> list[FaultRule]:
        """The rules with one of ``actions`` that fire for this request (each rule counts the match)."""
        fired = []
        with self._lock:
            for rule in self._rules:
                if rule.action in actions and rule.matches(req) and rule.should_fire():
                    fired.append(rule)
        return fired


def google_error(status: int, message: str, reason: str, domain: str = "global") -> Response:
    """An error in the shape Google's JSON APIs use (what google-api-core turns into its exceptions)."""
    status_names = {
        400: "INVALID_ARGUMENT", 401: "UNAUTHENTICATED", 403: "PERMISSION_DENIED", 404: "NOT_FOUND",
        409: "ALREADY_EXISTS", 412: "FAILED_PRECONDITION", 429: "RESOURCE_EXHAUSTED", 500: "INTERNAL",
        501: "UNIMPLEMENTED", 502: "UNAVAILABLE", 503: "UNAVAILABLE", 504: "DEADLINE_EXCEEDED",
    }
    return Response(
        status,
        {
            "error": {
                "code": status,
                "message": message,
                "errors": [{"message": message, "domain": domain, "reason": reason}],
                "status": status_names.get(status, "UNKNOWN"),
            }
        },
    )


def kube_status(status: int, reason: str, message: str, details: dict[str, Any] | None = None) -> Response:
    """A Kubernetes ``Status`` error body, as kube-apiserver answers."""
    body: dict[str, Any] = {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": status,
    }
    if details:
        body["details"] = details
    return Response(status, body)


def fault_response(rule: FaultRule, req: Request) -> Response:
    """The error a ``status`` fault answers, in the dialect of the service it hit."""
    if req.service.startswith("kube"):
        reasons = {429: "TooManyRequests", 500: "InternalError", 503: "ServiceUnavailable", 504: "Timeout"}
        return kube_status(rule.status, reasons.get(rule.status, "InternalError"), "injected fault")
    reason, message = _FAULT_REASONS.get(rule.status, ("backendError", "Injected fault"))
    return google_error(rule.status, message, rule.reason or reason)


def _call(handler: Handler, req: Request) -> Response:
    try:
        return handler(req)
    except Exception as exc:  # a bug in the simulator must be loud, not a dropped connection
        return Response(500, {"error": {"code": 500, "message": f"simulator error: {exc!r}"}})


class _RequestHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Headers and body go out in two writes; with Nagle's algorithm on, the client's delayed ACK then holds each
    # answer on a kept-alive connection for ~40 ms.
    disable_nagle_algorithm = True
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _serve(self) -> None:
        started = time.time()
        t0 = time.perf_counter()
        split = urlsplit(self.path)
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        req = Request(
            method=self.command,
            path=split.path,
            query=parse_qs(split.query, keep_blank_values=True),
            headers={k.lower(): v for k, v in self.headers.items()},
            body=body,
            service=self.server.sim.service,
        )
        sim = self.server.sim
        if sim.admin_prefix is not None and req.path.startswith(sim.admin_prefix):
            # The simulator's own admin API: no faults (`sim fault clear` must always work), no journal entry.
            self._answer(_call(sim.handler, req))
            return
        fault_name: str | None = None
        resp: Response | None = None
        for rule in sim.faults.pick(req) if sim.faults is not None else []:
            if rule.action == "latency":
                time.sleep(rule.latency)
                fault_name = fault_name or f"latency {rule.latency}s"
            elif resp is None:
                resp = fault_response(rule, req)
                fault_name = f"status {rule.status}"
        if sim.latency:
            time.sleep(sim.latency)
        if resp is None:
            resp = _call(sim.handler, req)
        # Recorded before the answer is sent, so a client that has its answer always finds the entry.
        if sim.journal is not None:
            sim.journal.record(
                JournalEntry(
                    service=sim.service,
                    method=req.method,
                    path=req.path + (f"?{split.query}" if split.query else ""),
                    status=resp.status,
                    duration=time.perf_counter() - t0,
                    started=started,
                    fault=fault_name,
                    write=sim.is_write(req),
                )
            )
            for part in resp.parts:
                query = urlencode(part.request.query, doseq=True)
                sim.journal.record(
                    JournalEntry(
                        service=sim.service,
                        method=part.request.method,
                        path=part.request.path + (f"?{query}" if query else ""),
                        status=part.response.status,
                        duration=part.duration,
                        started=started,
                        fault=part.fault,
                        write=sim.is_write(part.request),
                    )
                )
        self._answer(resp)

    def _answer(self, resp: Response) -> None:
        payload = resp.encode()
        self.send_response(resp.status)
        if payload or resp.status not in (204, 304):
            self.send_header("Content-Type", resp.content_type)
        for k, v in resp.headers.items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(payload)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = _serve


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128

    def __init__(self, addr: tuple[str, int], sim: SimServer) -> None:
        self.sim = sim
        super().__init__(addr, _RequestHandler)


class SimServer:
    """Serves one handler over plain HTTP on a loopback address, in a background thread."""

    def __init__(
        self,
        handler: Handler,
        *,
        service: str,
        journal: Journal | None = None,
        faults: Faults | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        latency: float = 0.0,
        is_write: WriteClassifier = verb_is_write,
        admin_prefix: str | None = None,
    ) -> None:
        self.handler = handler
        self.service = service
        self.is_write = is_write
        self.admin_prefix = admin_prefix
        self.journal = journal
        self.faults = faults
        self.latency = latency
        self._httpd = _Server((host, port), self)
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        return int(self._httpd.server_address[1])

    @property
    def url(self) -> str:
        host = self._httpd.server_address[0]
        return f"http://{host!s}:{self.port}"

    def start(self) -> SimServer:
        # A short poll interval makes stop() (shutdown) take ~50 ms instead of up to 0.5 s per server.
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05},
                                        name=f"sim-{self.service}", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> SimServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
