"""Test certificates made on the fly (never checked in): self-signed, for given names, optionally expired."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path


def self_signed(common_name: str = "shop.example.com", *, days: int = 30,
                expired: bool = False) -> tuple[str, str]:
    """(certificate PEM, private key PEM)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = datetime.now(UTC)
    start, end = (now - timedelta(days=60), now - timedelta(days=1)) if expired else (now - timedelta(hours=1),
                                                                                        now + timedelta(days=days))
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(start).not_valid_after(end)
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(common_name)]), critical=False)
            .sign(key, hashes.SHA256()))
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption()).decode()
    return cert.public_bytes(serialization.Encoding.PEM).decode(), key_pem


def write_pair(directory: Path, stem: str, **kwargs: object) -> tuple[Path, Path, str]:
    """Files ``<stem>.crt`` and ``<stem>.key``; also returns the key text (to check it never leaks)."""
    cert, key = self_signed(**kwargs)  # type: ignore[arg-type]
    cert_path, key_path = directory / f"{stem}.crt", directory / f"{stem}.key"
    cert_path.write_text(cert)
    key_path.write_text(key)
    return cert_path, key_path, key
