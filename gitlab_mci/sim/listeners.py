"""Real HTTP(S) sockets for the simulated load balancer's forwarding rules (loopback addresses only).

A :class:`Listener` is a small threaded HTTP server; every request is handed to a ``serve`` callback (the data
plane), which answers status, headers and body. HTTPS listeners pick their certificate per connection (SNI) from a
callback too, so a proxy's certificates can change without reopening the socket. What the front end knows about the
request beyond method, host and path (its headers, the client's address, the TLS version) is :func:`incoming` in
the serving thread. IPv6 VIPs are served on ``::1``.
"""

from __future__ import annotations

import contextlib
import hashlib
import ipaddress
import os
import socket
import ssl
import tempfile
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass(frozen=True)
class Incoming:
    """What a front end knows about the request it is serving: headers, client address, TLS parameters."""

    headers: dict[str, str] = field(default_factory=dict)
    client: str = "127.0.0.1"
    client_port: int = 0
    protocol: str = "HTTP/1.0"
    tls_version: str = ""  # "TLSv1.3" …, empty over plain HTTP
    tls_cipher: str = ""
    sni: str = ""


_current = threading.local()
_TLS_VERSIONS = {"TLS_1_0": ssl.TLSVersion.TLSv1, "TLS_1_1": ssl.TLSVersion.TLSv1_1,
                 "TLS_1_2": ssl.TLSVersion.TLSv1_2, "TLS_1_3": ssl.TLSVersion.TLSv1_3}


def incoming() -> Incoming:
    """The request being served in this thread (an empty :class:`Incoming` outside a listener's handler)."""
    found = getattr(_current, "value", None)
    return found if isinstance(found, Incoming) else Incoming()


def request_headers() -> dict[str, str]:
    """The headers (lower-case names) of the request the calling ``serve`` callback is answering (route rules'
    header matches read them); empty outside a request."""
    return {k.lower(): v for k, v in incoming().headers.items()}


@dataclass
class Reply:
    """What the data plane answers to one request."""

    status: int
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)


# (method, host header, path with query, listener) → reply
Serve = Callable[[str, str, str, "Listener"], Reply]
# server name (SNI, may be None) → (certificate PEM, private key PEM) or None
CertPicker = Callable[[str | None], tuple[str, str] | None]


def bind_address(vip: str) -> str:
    """Where a VIP is served: the VIP itself when it is an IPv4 loopback address, ``::1`` for an IPv6 VIP, else
    127.0.0.1 (never anything else)."""
    try:
        ip = ipaddress.ip_address(vip)
        if ip.version == 6:
            return "::1"
        if ip in ipaddress.ip_network("127.0.0.0/8"):
            return vip
    except ValueError:
        pass
    return "127.0.0.1"


def ipv6_loopback() -> bool:
    """Whether this machine can listen on ``::1`` (containers without IPv6 cannot)."""
    try:
        with socket.socket(socket.AF_INET6) as s:
            s.bind(("::1", 0))
    except OSError:
        return False
    return True


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    # HTTP/1.0: one request per connection, so a closed listener never answers through a kept-alive socket.
    protocol_version = "HTTP/1.0"

    def _answer(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)
        listener = self.server.listener
        tls_version, cipher, sni = "", "", ""
        if isinstance(self.connection, ssl.SSLSocket):
            tls_version = self.connection.version() or ""
            cipher = (self.connection.cipher() or ("",))[0]
            sni = getattr(self.connection, "sni", "") or ""
        _current.value = Incoming({k: v for k, v in self.headers.items()}, str(self.client_address[0]),
                                  int(self.client_address[1]), self.request_version, tls_version, cipher, sni)
        try:
            reply = listener.serve(self.command, self.headers.get("Host") or "", self.path, listener)
        finally:
            _current.value = None
        self.send_response(reply.status)
        headers = {"Content-Type": "application/json", **reply.headers, "Content-Length": str(len(reply.body)),
                   "Via": "1.1 google"}
        for key, value in headers.items():
            self.send_header(key, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(reply.body)

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = do_OPTIONS = _answer

    def log_message(self, format: str, *args: Any) -> None:
        pass


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False

    def __init__(self, address: tuple[str, int], listener: Listener) -> None:
        self.listener = listener
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        super().__init__(address, _Handler)

    def get_request(self) -> tuple[Any, Any]:
        sock, addr = super().get_request()
        context = self.listener.tls_context
        if context is not None:
            # An SSL object takes its protocol versions from the context when it is made (here, in the accept
            # loop's one thread), so the SSL policy in force now applies to this connection.
            wanted = self.listener.min_tls() if self.listener.min_tls is not None else ""
            context.minimum_version = _TLS_VERSIONS.get(wanted, ssl.TLSVersion.MINIMUM_SUPPORTED)
            # The handshake happens in the request's own thread (on first read), never in the accept loop.
            sock = context.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)
        return sock, addr

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # a client that hangs up or fails the TLS handshake is not the simulator's problem


class Listener:
    """One forwarding rule's socket: ``scheme://address:port`` on loopback, in a background thread."""

    def __init__(self, key: str, vip: str, port: int, scheme: str, serve: Serve,
                 certs: CertPicker | None = None, *, min_tls: Callable[[], str] | None = None) -> None:
        self.key, self.vip, self.vip_port, self.scheme = key, vip, port, scheme
        self.serve = serve
        self._certs = certs
        self.min_tls = min_tls  # the SSL policy's minTlsVersion ("TLS_1_2" …; "" for none), asked per connection
        self._contexts: dict[str, ssl.SSLContext] = {}
        self.tls_context: ssl.SSLContext | None = None
        if scheme == "https":
            self.tls_context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            self.tls_context.sni_callback = self._sni
            default = certs(None) if certs else None
            if default is not None:
                self._load(self.tls_context, *default)
        self._httpd = _Server((bind_address(vip), 0), self)
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05},
                                        name=f"sim-lb-{vip}:{port}", daemon=True)
        self._thread.start()

    @property
    def address(self) -> tuple[str, int]:
        host, port = self._httpd.server_address[:2]
        return str(host), int(port)

    @property
    def url(self) -> str:
        host, port = self.address
        return f"{self.scheme}://[{host}]:{port}" if ":" in host else f"{self.scheme}://{host}:{port}"

    def close(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)

    # --- TLS -----------------------------------------------------------------------------------------------------

    @staticmethod
    def _load(context: ssl.SSLContext, cert: str, key: str) -> None:
        # ssl loads certificates from files only: write them to a private temporary file for the moment it reads.
        fd, path = tempfile.mkstemp(prefix="gitlab-mci-lb-", suffix=".pem")
        try:
            with os.fdopen(fd, "w") as out:
                out.write(key.strip() + "\n" + cert.strip() + "\n")
            context.load_cert_chain(path)
        finally:
            with contextlib.suppress(OSError):
                os.unlink(path)

    def _sni(self, sock: ssl.SSLObject | ssl.SSLSocket, server_name: str | None, _ctx: ssl.SSLContext) -> None:
        with contextlib.suppress(AttributeError):
            sock.sni = server_name or ""  # type: ignore[union-attr]  # for {tls_sni_hostname}
        pair = self._certs(server_name) if self._certs else None
        if pair is None:
            return None
        digest = hashlib.sha256("".join(pair).encode()).hexdigest()
        context = self._contexts.get(digest)
        if context is None:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            self._load(context, *pair)
            self._contexts[digest] = context
        sock.context = context
        return None


def self_signed(domains: list[str], days: int = 90) -> tuple[str, str]:
    """A certificate and key for ``domains`` (what a Google-managed certificate looks like to the simulator)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, domains[0] if domains else "localhost")])
    issuer = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "gitlab-mci simulator managed certificates")])
    now = datetime.now(UTC)
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - timedelta(hours=1))
            .not_valid_after(now + timedelta(days=days))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(d) for d in domains or ["localhost"]]),
                           critical=False)
            .sign(key, hashes.SHA256()))
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption()).decode()
    return cert.public_bytes(serialization.Encoding.PEM).decode(), key_pem


def port_free(host: str, port: int) -> bool:
    """Whether ``host:port`` can be bound right now (used by tests to check listeners are gone)."""
    with socket.socket() as s:
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True
