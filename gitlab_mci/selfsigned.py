"""A self-signed certificate made on the spot, for runs that need HTTPS with a certificate of their own (the takeover
demo's uploaded certificate, the acceptance run's): never kept beyond the run."""

from __future__ import annotations


def self_signed(host: str, *, days: int = 30) -> tuple[str, str]:
    """A self-signed certificate for ``host``, valid for ``days``, and its key (PEM). Its subject is its issuer, so a
    client that trusts exactly it (``ssl.create_default_context(cadata=cert)``) accepts the chain."""
    from datetime import UTC, datetime, timedelta

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host)])
    now = datetime.now(UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - timedelta(hours=1))
            .not_valid_after(now + timedelta(days=days))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(host)]), critical=False)
            .sign(key, hashes.SHA256()))
    return (cert.public_bytes(serialization.Encoding.PEM).decode(),
            key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                              serialization.NoEncryption()).decode())
