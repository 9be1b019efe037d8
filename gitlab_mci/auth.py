"""Google credentials for CI jobs: GitLab's OIDC ID token → Workload Identity Federation, or a JSON key as fallback.

The OIDC path needs no Google library: GitLab puts a JWT in an environment variable (``id_tokens:``), we write it to
a private file and write next to it the ``external_account`` credentials JSON that google-auth, the Google Cloud
client libraries and gcloud read through ``GOOGLE_APPLICATION_CREDENTIALS``. The token is exchanged for a Google
access token only when a client first needs one (at ``token_url``), so nothing here calls the network.

The key-file path validates a JSON key (a File-type CI/CD variable) and loads it with google-auth, which is imported
only there. Neither path ever prints the token or a private key.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import re
import shlex
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gitlab_mci.errors import UserError

SUBJECT_TOKEN_TYPE_JWT = "urn:ietf:params:oauth:token-type:jwt"
STS_TOKEN_URL = "https://sts.googleapis.com/v1/token"
IMPERSONATION_URL = "https://iamcredentials.googleapis.com/v1/projects/-/serviceAccounts/{}:generateAccessToken"
DEFAULT_TOKEN_ENV = "GITLAB_OIDC_TOKEN"

_AUDIENCE = re.compile(
    r"\A//iam\.googleapis\.com/projects/(?P<number>\d+)/locations/global/workloadIdentityPools/"
    r"(?P<pool>[a-z0-9-]+)/providers/(?P<provider>[a-z0-9-]+)\Z")
# Pool and provider IDs: 4-32 lowercase letters, digits and hyphens (Google's rule; "gcp-" is reserved for pools).
_POOL_ID = re.compile(r"\A[a-z0-9-]{4,32}\Z")
_SERVICE_ACCOUNT = re.compile(r"\A[a-zA-Z0-9._%+-]+@[a-zA-Z0-9.-]+\.[a-zA-Z]{2,}\Z")
_B64URL = re.compile(r"\A[A-Za-z0-9_-]*\Z")


# ----------------------------------------------------------------------------------------------------------------------
# The audience


def wif_audience(*, project_number: str | None = None, pool: str | None = None, provider: str | None = None,
                 audience: str | None = None) -> str:
    """The Workload Identity Federation audience: a full ``audience`` or one built from its three parts."""
    parts = {"--project-number": project_number, "--pool": pool, "--provider": provider}
    if audience:
        if any(parts.values()):
            raise UserError("give either --audience or --project-number/--pool/--provider, not both")
        if audience.startswith("https://iam.googleapis.com/"):
            raise UserError(f"--audience {audience!r} is the ID token's audience; the credentials need the "
                            f"resource name: {audience.replace('https:', '', 1)}")
        if not _AUDIENCE.match(audience):
            raise UserError(f"--audience {audience!r} is not //iam.googleapis.com/projects/NUMBER/locations/global/"
                            "workloadIdentityPools/POOL/providers/PROVIDER")
        return audience
    missing = [flag for flag, value in parts.items() if not value]
    if missing:
        raise UserError(f"missing {', '.join(missing)} (or give the full --audience) to name the workload "
                        "identity provider")
    assert project_number and pool and provider
    if not project_number.isdigit():
        raise UserError(f"--project-number {project_number!r}: expected the numeric project number, not the ID")
    for flag, value in (("--pool", pool), ("--provider", provider)):
        if not _POOL_ID.match(value):
            raise UserError(f"{flag} {value!r}: expected 4-32 lowercase letters, digits or hyphens")
    return (f"//iam.googleapis.com/projects/{project_number}/locations/global/workloadIdentityPools/{pool}"
            f"/providers/{provider}")


def impersonation_url(service_account: str) -> str:
    """The IAM Credentials URL that turns the federated token into one for ``service_account``."""
    if not _SERVICE_ACCOUNT.match(service_account):
        raise UserError(f"--service-account {service_account!r}: expected an email like "
                        "deployer@PROJECT.iam.gserviceaccount.com")
    return IMPERSONATION_URL.format(service_account)


# ----------------------------------------------------------------------------------------------------------------------
# The ID token


@dataclass(frozen=True)
class JwtInfo:
    """What a JWT says about itself (never the token)."""

    header: dict[str, Any]
    claims: dict[str, Any]
    warnings: tuple[str, ...] = ()

    @property
    def audiences(self) -> list[str]:
        aud = self.claims.get("aud")
        if isinstance(aud, str):
            return [aud]
        return [a for a in aud if isinstance(a, str)] if isinstance(aud, list) else []

    def describe(self) -> str:
        """One line about the token: issuer, subject, audience and expiry."""
        bits = [f"issuer {self.claims.get('iss', '?')}", f"subject {self.claims.get('sub', '?')}"]
        if self.audiences:
            bits.append(f"audience {', '.join(self.audiences)}")
        exp = self.claims.get("exp")
        if isinstance(exp, (int, float)):
            left = exp - time.time()
            bits.append(f"expires in {left / 60:.0f} min" if left > 0 else "expired")
        return ", ".join(bits)


def _b64url_json(part: str, what: str, source: str) -> dict[str, Any]:
    if not _B64URL.match(part) or not part:
        raise UserError(f"{source} is not a JWT: its {what} is not base64url")
    try:
        data = json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))
    except (binascii.Error, ValueError):
        raise UserError(f"{source} is not a JWT: its {what} does not decode to JSON") from None
    if not isinstance(data, dict):
        raise UserError(f"{source} is not a JWT: its {what} is not a JSON object")
    return data


def inspect_jwt(token: str, *, source: str, expected_audiences: Sequence[str] = (), strict_audience: bool = False,
                now: float | None = None) -> JwtInfo:
    """Check that ``token`` is a well-formed JWT and read its claims; the signature is Google's to verify.

    A mismatching ``aud`` is an error when ``strict_audience`` (the user named it), else a warning; an expired or
    not-yet-valid token is a warning (the job may still be starting). Messages name ``source``, never the token.
    """
    parts = token.strip().split(".")
    if len(parts) != 3:
        raise UserError(f"{source} is not a JWT: expected 3 dot-separated parts, found {len(parts)}")
    header = _b64url_json(parts[0], "header", source)
    claims = _b64url_json(parts[1], "payload", source)
    if not parts[2] or not _B64URL.match(parts[2]):
        raise UserError(f"{source} is not a JWT: its signature is missing or not base64url")
    if "alg" not in header:
        raise UserError(f"{source} is not a JWT: its header has no 'alg'")
    info = JwtInfo(header, claims)
    warnings: list[str] = []
    now = time.time() if now is None else now
    exp = claims.get("exp")
    if not isinstance(exp, (int, float)):
        warnings.append(f"{source} has no expiry (exp); Google's STS will reject it")
    elif exp <= now:
        warnings.append(f"{source} expired {(now - exp) / 60:.0f} min ago; Google's STS will reject it")
    nbf = claims.get("nbf")
    if isinstance(nbf, (int, float)) and nbf > now + 60:
        warnings.append(f"{source} is not valid before {(nbf - now):.0f}s from now (clock skew?)")
    if expected_audiences and not set(expected_audiences) & set(info.audiences):
        got = ", ".join(info.audiences) or "none"
        message = (f"{source} has audience {got}, expected {' or '.join(expected_audiences)} "
                   "(set `aud:` under id_tokens in .gitlab-ci.yml)")
        if strict_audience:
            raise UserError(message)
        warnings.append(message + "; fine if the provider lists it in its allowed audiences")
    return JwtInfo(header, claims, tuple(warnings))


# ----------------------------------------------------------------------------------------------------------------------
# Files


def write_private(path: Path, data: str) -> None:
    """Write ``data`` to ``path`` readable by the owner only (0600), also when the file already exists."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, data.encode())
    finally:
        os.close(fd)


def external_account_info(*, audience: str, token_file: Path, service_account: str | None = None,
                          lifetime: int | None = None) -> dict[str, Any]:
    """The ``external_account`` credentials (google-auth's identity-pool format) that read the token file."""
    info: dict[str, Any] = {
        "type": "external_account",
        "audience": audience,
        "subject_token_type": SUBJECT_TOKEN_TYPE_JWT,
        "token_url": STS_TOKEN_URL,
        "credential_source": {"file": str(token_file), "format": {"type": "text"}},
    }
    if service_account:
        info["service_account_impersonation_url"] = impersonation_url(service_account)
        if lifetime is not None:
            info["service_account_impersonation"] = {"token_lifetime_seconds": lifetime}
    return info


@dataclass(frozen=True)
class OidcCredentials:
    """What ``gitlab-oidc`` wrote: the two files and the token's description."""

    token_file: Path
    credentials_file: Path
    audience: str
    token: JwtInfo = field(repr=False)


def write_oidc_credentials(token: str, *, directory: Path, audience: str, source: str,
                           service_account: str | None = None, expected_audiences: Sequence[str] = (),
                           strict_audience: bool = False) -> OidcCredentials:
    """Validate the GitLab ID token, then write it (0600) and the credentials JSON that points at it."""
    info = inspect_jwt(token, source=source, expected_audiences=expected_audiences,
                       strict_audience=strict_audience)
    directory = directory.resolve()
    token_file = directory / "gitlab-oidc-token.jwt"
    credentials_file = directory / "google-credentials.json"
    credentials = external_account_info(audience=audience, token_file=token_file, service_account=service_account)
    write_private(token_file, token.strip())
    write_private(credentials_file, json.dumps(credentials, indent=2) + "\n")
    return OidcCredentials(token_file, credentials_file, audience, info)


def env_lines(values: Mapping[str, str], fmt: str = "dotenv") -> list[str]:
    """``KEY=value`` lines for a dotenv report, or ``export KEY='value'`` lines for ``eval``."""
    if fmt == "export":
        return [f"export {k}={shlex.quote(v)}" for k, v in values.items()]
    for k, v in values.items():
        if "\n" in v:
            raise UserError(f"{k} would span several lines, which dotenv does not allow")
    return [f"{k}={v}" for k, v in values.items()]


# ----------------------------------------------------------------------------------------------------------------------
# JSON key files (fallback)


@dataclass(frozen=True)
class KeyFileInfo:
    """A validated credentials JSON: its type and who it acts as (never the key)."""

    path: Path
    type: str
    principal: str
    project: str | None

    def describe(self) -> str:
        """One line: the type and the principal."""
        where = f" (project {self.project})" if self.project else ""
        return f"{self.path}: {self.type} credentials for {self.principal}{where}"


def inspect_key_file(path: Path, *, source: str) -> KeyFileInfo:
    """Check that ``path`` is a service_account or external_account JSON; messages never contain its secrets."""
    raw = str(path)
    if raw.lstrip().startswith("{"):
        raise UserError(f"{source} holds JSON instead of a file path: make the CI/CD variable of type File")
    try:
        text = path.read_text()
    except OSError as exc:
        raise UserError(f"{source}: cannot read {path}: {exc.strerror or exc}") from None
    try:
        data = json.loads(text)
    except ValueError:
        raise UserError(f"{source}: {path} is not JSON (expected a service account key or external_account "
                        "credentials)") from None
    if not isinstance(data, dict):
        raise UserError(f"{source}: {path} is not a JSON object")
    kind = data.get("type")
    if kind == "service_account":
        missing = [k for k in ("client_email", "private_key", "token_uri") if not data.get(k)]
        if missing:
            raise UserError(f"{source}: {path} is a service_account key without {', '.join(missing)}")
        if "PRIVATE KEY-----" not in str(data["private_key"]):
            raise UserError(f"{source}: {path}: private_key is not a PEM private key")
        return KeyFileInfo(path, "service_account", str(data["client_email"]), data.get("project_id"))
    if kind == "external_account":
        missing = [k for k in ("audience", "subject_token_type", "token_url", "credential_source") if not data.get(k)]
        if missing:
            raise UserError(f"{source}: {path} is external_account credentials without {', '.join(missing)}")
        principal = str(data["audience"])
        sa_url = data.get("service_account_impersonation_url")
        if isinstance(sa_url, str) and "/serviceAccounts/" in sa_url:
            principal = sa_url.split("/serviceAccounts/", 1)[1].split(":", 1)[0] + f" via {principal}"
        return KeyFileInfo(path, "external_account", principal, None)
    if kind == "authorized_user":
        raise UserError(f"{source}: {path} holds a person's credentials (authorized_user); CI jobs should use "
                        "OIDC (gitlab-mci auth gitlab-oidc) or a service account key")
    raise UserError(f"{source}: {path} has type {kind!r}; expected service_account or external_account")


def load_with_google_auth(path: Path, info: KeyFileInfo, *, source: str) -> str:
    """Load ``path`` with the google-auth class for its type, as Google's clients will; that class's name.

    No network call. Imports google.auth (only here). The type-specific loaders are used because google-auth
    deprecates its generic ``load_credentials_from_file`` for files it has not validated.
    """
    import google.auth.exceptions

    try:
        if info.type == "service_account":
            from google.oauth2 import service_account

            credentials: Any = service_account.Credentials.from_service_account_file(  # type: ignore[no-untyped-call]
                str(path))
        else:
            data = json.loads(path.read_text())
            credential_source = data.get("credential_source") or {}
            if data.get("subject_token_type") == "urn:ietf:params:aws:token-type:aws4_request":
                from google.auth import aws

                credentials = aws.Credentials.from_file(str(path))  # type: ignore[no-untyped-call]
            elif isinstance(credential_source, dict) and "executable" in credential_source:
                from google.auth import pluggable

                credentials = pluggable.Credentials.from_file(str(path))  # type: ignore[no-untyped-call]
            else:
                from google.auth import identity_pool

                credentials = identity_pool.Credentials.from_file(str(path))  # type: ignore[no-untyped-call]
    except (google.auth.exceptions.GoogleAuthError, ValueError, KeyError, TypeError) as exc:
        # google-auth's messages name fields, never the key material; keep the first line only.
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise UserError(f"{source}: google-auth cannot load {path}: {first[:200]}") from None
    return type(credentials).__module__ + "." + type(credentials).__name__
