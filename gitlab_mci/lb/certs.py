"""The load balancer's certificates: pre-shared names, self-managed PEM pairs (files or TLS Secrets), managed domains.

Everything is checked here, before any write: PEM that does not parse, a key that does not match its certificate,
an expired certificate, a bad domain. Private keys stay in memory and are never printed: :class:`PemPair` hides them
from ``repr`` so a traceback or a debug print cannot leak one.
"""

from __future__ import annotations

import base64
import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from gitlab_mci.errors import UserError
from gitlab_mci.files import read_text

MAX_CERTIFICATES = 15  # per target HTTPS proxy (REFERENCE §3)
_DOMAIN = re.compile(r"^(?=.{1,253}$)([a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?\.)+[a-z]{2,63}$")
_NAME = re.compile(r"^[a-z]([-a-z0-9]{0,61}[a-z0-9])?$")


@dataclass(frozen=True)
class PemPair:
    """A certificate chain and its private key, both PEM; ``origin`` says where they came from (for errors)."""

    certificate: str
    private_key: str = field(repr=False)
    origin: str = ""

    @property
    def digest(self) -> str:
        """Content hash: a new certificate gets a new resource name, which is how rotation works."""
        return hashlib.sha256(self.certificate.encode()).hexdigest()[:10]


@dataclass(frozen=True)
class Certificates:
    """What the HTTPS proxy serves."""

    pre_shared: tuple[str, ...] = ()
    self_managed: tuple[PemPair, ...] = ()
    managed_domains: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        total = len(self.pre_shared) + len(self.self_managed) + (1 if self.managed_domains else 0)
        if total > MAX_CERTIFICATES:
            raise UserError(f"{total} certificates: a target HTTPS proxy takes at most {MAX_CERTIFICATES}")
        for name in self.pre_shared:
            if not _NAME.match(name):
                raise UserError(f"--ssl-certificate {name!r} is not a valid certificate name")
        for domain in self.managed_domains:
            if not _DOMAIN.match(domain):
                raise UserError(f"--managed-domain {domain!r} is not a fully qualified domain name (wildcards are "
                                "not allowed in Google-managed certificates)")
        if len(self.managed_domains) > 100:
            raise UserError("a Google-managed certificate takes at most 100 domains")

    def __bool__(self) -> bool:
        return bool(self.pre_shared or self.self_managed or self.managed_domains)

    @property
    def managed_digest(self) -> str:
        return hashlib.sha256(",".join(sorted(self.managed_domains)).encode()).hexdigest()[:10]


def check_pair(pair: PemPair, *, now: datetime | None = None) -> PemPair:
    """Parse the certificate and key and check they belong together and the certificate is in date."""
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    try:
        chain = x509.load_pem_x509_certificates(pair.certificate.encode())
    except ValueError:
        raise UserError(f"{pair.origin}: not a PEM certificate (expected -----BEGIN CERTIFICATE-----)") from None
    try:
        key = serialization.load_pem_private_key(pair.private_key.encode(), password=None)
    except (ValueError, TypeError):
        # The parser's message may quote key material: say only what is wrong.
        raise UserError(f"{pair.origin}: the private key is not an unencrypted PEM private key") from None
    leaf = chain[0]
    public = serialization.PublicFormat.SubjectPublicKeyInfo
    if (key.public_key().public_bytes(serialization.Encoding.DER, public)
            != leaf.public_key().public_bytes(serialization.Encoding.DER, public)):
        raise UserError(f"{pair.origin}: the private key does not match the certificate")
    moment = now or datetime.now(UTC)
    if leaf.not_valid_after_utc <= moment:
        raise UserError(f"{pair.origin}: the certificate expired on {leaf.not_valid_after_utc:%Y-%m-%d}")
    return pair


def from_files(certificate: Path, key: Path) -> PemPair:
    """A self-managed certificate from PEM files."""
    return check_pair(PemPair(read_text(certificate, "the certificate"), read_text(key, "the private key"),
                              origin=f"{certificate} + {key}"))


def from_secret(data: dict[str, str] | None, where: str) -> PemPair:
    """A self-managed certificate from a ``kubernetes.io/tls`` Secret's data (base64 values)."""
    data = data or {}
    if "tls.crt" not in data or "tls.key" not in data:
        raise UserError(f"{where} has no tls.crt and tls.key (is it a kubernetes.io/tls Secret?)")
    try:
        cert, key = (base64.b64decode(data[k]).decode() for k in ("tls.crt", "tls.key"))
    except ValueError:
        raise UserError(f"{where}: tls.crt or tls.key is not base64-encoded PEM") from None
    return check_pair(PemPair(cert, key, origin=where))


def parse_list(values: Sequence[str]) -> tuple[str, ...]:
    """Repeated or comma-separated flag values, in order, each once."""
    out: list[str] = []
    for v in values:
        for item in v.replace(" ", ",").split(","):
            if item and item not in out:
                out.append(item)
    return tuple(out)
