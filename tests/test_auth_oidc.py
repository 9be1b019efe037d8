"""`gitlab-mci auth`: GitLab ID token → external_account credentials google-auth accepts; key files as fallback."""

from __future__ import annotations

import base64
import json
import os
import stat
import subprocess
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import pytest

from gitlab_mci.cli import main

NUMBER, POOL, PROVIDER = "123456789012", "gitlab-pool", "gitlab-provider"
AUDIENCE = f"//iam.googleapis.com/projects/{NUMBER}/locations/global/workloadIdentityPools/{POOL}/providers/{PROVIDER}"
SA = "deployer@demo-project.iam.gserviceaccount.com"
AUTH_ENV = ("GITLAB_OIDC_TOKEN", "GOOGLE_APPLICATION_CREDENTIALS", "GOOGLE_CLOUD_PROJECT", "MCI_WIF_PROJECT_NUMBER",
            "MCI_WIF_POOL", "MCI_WIF_PROVIDER", "MCI_WIF_AUDIENCE", "MCI_WIF_SERVICE_ACCOUNT", "CI_JOB_ID")


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def make_jwt(**claims: object) -> str:
    payload = {"iss": "https://gitlab.example.com", "sub": "project_path:group/app:ref_type:branch:ref:main",
               "aud": "https:" + AUDIENCE, "exp": int(time.time()) + 300, "iat": int(time.time()),
               "project_path": "group/app", **claims}
    header = {"alg": "RS256", "typ": "JWT", "kid": "k1"}
    return ".".join([b64(json.dumps(header).encode()), b64(json.dumps(payload).encode()), b64(os.urandom(64))])


@dataclass
class Result:
    code: int
    out: str
    err: str


@pytest.fixture
def run(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]):
    for name in AUTH_ENV:
        monkeypatch.delenv(name, raising=False)

    def runner(*args: str) -> Result:
        capsys.readouterr()
        try:
            main(list(args))
            code = 0
        except SystemExit as exc:
            code = int(exc.code or 0)
        out, err = capsys.readouterr()
        return Result(code, out, err)

    return runner


def one_line_error(result: Result) -> str:
    assert result.code == 1, result
    lines = result.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("gitlab-mci: error: "), result.err
    return lines[0]


def oidc_args(tmp_path: Path, *extra: str) -> list[str]:
    return ["auth", "gitlab-oidc", "--project-number", NUMBER, "--pool", POOL, "--provider", PROVIDER,
            "--dir", str(tmp_path / "creds"), *extra]


def test_writes_credentials_google_auth_accepts(run, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    token = make_jwt()
    monkeypatch.setenv("GITLAB_OIDC_TOKEN", token)
    result = run(*oidc_args(tmp_path, "--service-account", SA, "--project", "demo-project"))
    assert result.code == 0, result.err
    assert token not in result.out + result.err
    creds_file = tmp_path / "creds" / "google-credentials.json"
    token_file = tmp_path / "creds" / "gitlab-oidc-token.jwt"
    assert result.out.splitlines() == [
        f"GOOGLE_APPLICATION_CREDENTIALS={creds_file}",
        f"CLOUDSDK_AUTH_CREDENTIAL_FILE_OVERRIDE={creds_file}",
        "GOOGLE_CLOUD_PROJECT=demo-project",
    ]
    for path in (creds_file, token_file):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert token_file.read_text() == token
    info = json.loads(creds_file.read_text())
    assert info == {
        "type": "external_account",
        "audience": AUDIENCE,
        "subject_token_type": "urn:ietf:params:oauth:token-type:jwt",
        "token_url": "https://sts.googleapis.com/v1/token",
        "credential_source": {"file": str(token_file), "format": {"type": "text"}},
        "service_account_impersonation_url": "https://iamcredentials.googleapis.com/v1/projects/-/serviceAccounts/"
                                             f"{SA}:generateAccessToken",
    }
    assert "subject project_path:group/app" in result.err

    import google.auth
    from google.auth import identity_pool

    with warnings.catch_warnings():
        # google-auth deprecates the generic loader (it does not validate what it loads); it still must accept it.
        warnings.simplefilter("ignore", DeprecationWarning)
        credentials, project = google.auth.load_credentials_from_file(str(creds_file))
    assert isinstance(credentials, identity_pool.Credentials)
    assert project is None  # no scopes: google-auth did not try to look the project up
    assert credentials.service_account_email == SA
    assert credentials.retrieve_subject_token(None) == token  # reads our file, no network
    direct = identity_pool.Credentials.from_file(str(creds_file))
    assert direct.info["audience"] == AUDIENCE and direct.info["credential_source"]["file"] == str(token_file)


def test_full_audience_and_export_format(run, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CI_TOKEN_X", make_jwt())
    dotenv = tmp_path / "gcp.env"
    result = run("auth", "gitlab-oidc", "--token-env", "CI_TOKEN_X", "--audience", AUDIENCE, "--format", "export",
                 "--dir", str(tmp_path / "my dir"), "--dotenv", str(dotenv))
    assert result.code == 0, result.err
    creds = tmp_path / "my dir" / "google-credentials.json"
    assert result.out.splitlines()[0] == f"export GOOGLE_APPLICATION_CREDENTIALS='{creds}'"
    assert dotenv.read_text().splitlines()[0] == f"GOOGLE_APPLICATION_CREDENTIALS={creds}"
    assert "service_account_impersonation_url" not in json.loads(creds.read_text())


@pytest.mark.parametrize(("args", "expected"), [
    (["--audience", "https:" + AUDIENCE], "is the ID token's audience"),
    (["--audience", "//iam.googleapis.com/projects/x"], "is not //iam.googleapis.com/projects/NUMBER"),
    (["--audience", AUDIENCE, "--pool", POOL], "either --audience or"),
    (["--pool", POOL], "missing --project-number, --provider"),
    (["--project-number", "my-project", "--pool", POOL, "--provider", PROVIDER], "expected the numeric"),
    (["--project-number", NUMBER, "--pool", "P", "--provider", PROVIDER], "--pool 'P'"),
    (["--audience", AUDIENCE, "--service-account", "not-an-email"], "--service-account 'not-an-email'"),
])
def test_bad_provider_settings_are_one_line(run, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                            args: list[str], expected: str) -> None:
    monkeypatch.setenv("GITLAB_OIDC_TOKEN", make_jwt())
    assert expected in one_line_error(run("auth", "gitlab-oidc", "--dir", str(tmp_path), *args))
    assert not (tmp_path / "google-credentials.json").exists()


def _jwt_variants() -> list[tuple[str, str]]:
    good = make_jwt().split(".")
    return [
        ("not-a-jwt", "expected 3 dot-separated parts, found 1"),
        ("a.b", "found 2"),
        (f"{good[0]}.{good[1]}.", "signature is missing"),
        (f"{b64(b'not json')}.{good[1]}.{good[2]}", "header does not decode to JSON"),
        (f"{good[0]}.{b64(b'[1, 2]')}.{good[2]}", "payload is not a JSON object"),
        (f"{good[0]}.pay+load/.{good[2]}", "payload is not base64url"),
        (f"{b64(b'{}')}.{good[1]}.{good[2]}", "header has no 'alg'"),
    ]


@pytest.mark.parametrize(("token", "expected"), _jwt_variants())
def test_malformed_token_is_one_line_without_the_token(run, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                       token: str, expected: str) -> None:
    monkeypatch.setenv("GITLAB_OIDC_TOKEN", token)
    result = run(*oidc_args(tmp_path))
    line = one_line_error(result)
    assert "GITLAB_OIDC_TOKEN is not a JWT" in line and expected in line
    assert token not in result.out + result.err
    assert not (tmp_path / "creds").exists()


def test_expired_token_and_other_audience_warn(run, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GITLAB_OIDC_TOKEN", make_jwt(exp=int(time.time()) - 600, aud="https://gitlab.example.com"))
    result = run(*oidc_args(tmp_path))
    assert result.code == 0, result.err
    warnings = [line for line in result.err.splitlines() if line.startswith("gitlab-mci: warning:")]
    assert any("expired 10 min ago" in w for w in warnings)
    assert any("has audience https://gitlab.example.com, expected https://iam.googleapis.com/" in w for w in warnings)


def test_expected_audience_is_enforced(run, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GITLAB_OIDC_TOKEN", make_jwt(aud=["a", "b"]))
    line = one_line_error(run(*oidc_args(tmp_path, "--expect-aud", "c")))
    assert "GITLAB_OIDC_TOKEN has audience a, b, expected c" in line
    assert run(*oidc_args(tmp_path, "--expect-aud", "b")).code == 0


def test_missing_token_without_fallback(run, tmp_path: Path) -> None:
    line = one_line_error(run(*oidc_args(tmp_path)))
    assert "GITLAB_OIDC_TOKEN is not set" in line and "id_tokens" in line


# --- key files --------------------------------------------------------------------------------------------------------

def service_account_key(tmp_path: Path) -> tuple[Path, str]:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption()).decode()
    path = tmp_path / "sa.json"
    path.write_text(json.dumps({
        "type": "service_account", "project_id": "demo-project", "private_key_id": "abc123",
        "private_key": pem, "client_email": SA, "client_id": "1",
        "token_uri": "https://oauth2.googleapis.com/token",
    }))
    return path, pem


def test_key_file_fallback(run, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path, pem = service_account_key(tmp_path)
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(path))
    result = run(*oidc_args(tmp_path))
    assert result.code == 0, result.err
    assert result.out.splitlines() == [
        f"GOOGLE_APPLICATION_CREDENTIALS={path}", f"CLOUDSDK_AUTH_CREDENTIAL_FILE_OVERRIDE={path}",
        "GOOGLE_CLOUD_PROJECT=demo-project"]
    assert f"service_account credentials for {SA}" in result.err
    assert "google.oauth2.service_account.Credentials" in result.err
    body = pem.splitlines()[1]
    assert body not in result.out + result.err


def test_check_says_which_kind(run, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path, pem = service_account_key(tmp_path)
    result = run("auth", "check", "--key-file", str(path))
    assert result.code == 0 and f"service_account credentials for {SA} (project demo-project)" in result.out
    assert pem.splitlines()[1] not in result.out + result.err

    monkeypatch.setenv("GITLAB_OIDC_TOKEN", make_jwt())
    assert run(*oidc_args(tmp_path, "--service-account", SA)).code == 0
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(tmp_path / "creds" / "google-credentials.json"))
    result = run("auth", "check")
    assert result.code == 0, result.err
    assert f"external_account credentials for {SA} via {AUDIENCE}" in result.out
    assert "identity_pool.Credentials" in result.out


@pytest.mark.parametrize(("content", "expected"), [
    ('{"type": "authorized_user", "refresh_token": "r"}', "holds a person's credentials"),
    ('{"type": "service_account", "client_email": "x@y.z"}', "without private_key, token_uri"),
    ('{"type": "weird"}', "has type 'weird'"),
    ("not json at all", "is not JSON"),
])
def test_bad_key_files(run, tmp_path: Path, content: str, expected: str) -> None:
    path = tmp_path / "key.json"
    path.write_text(content)
    assert expected in one_line_error(run("auth", "check", "--key-file", str(path)))


def test_broken_private_key_never_printed(run, tmp_path: Path) -> None:
    path, pem = service_account_key(tmp_path)
    data = json.loads(path.read_text())
    lines = pem.splitlines()
    data["private_key"] = "\n".join([lines[0], lines[1][::-1], *lines[2:]])  # still PEM-shaped, not a key
    path.write_text(json.dumps(data))
    result = run("auth", "check", "--key-file", str(path))
    line = one_line_error(result)
    assert "google-auth cannot load" in line
    assert lines[1][::-1] not in result.out + result.err and lines[2] not in result.out + result.err


def test_json_in_an_env_var_instead_of_a_file(run, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", '{"type": "service_account", "private_key": "SECRETKEY"}')
    result = run("auth", "check")
    assert "holds JSON instead of a file path: make the CI/CD variable of type File" in one_line_error(result)
    assert "SECRETKEY" not in result.out + result.err


# --- start-up cost ----------------------------------------------------------------------------------------------------

PROBE = """
import atexit, sys, time
t0 = time.perf_counter()
def report():
    mods = sorted(m for m in sys.modules if m == "google" or m.startswith(("google.", "gitlab", "requests")))
    print("MODULES", " ".join(m for m in mods if not m.startswith("gitlab_mci")), file=sys.stderr)
    print("SECONDS", time.perf_counter() - t0, file=sys.stderr)
atexit.register(report)
from gitlab_mci.cli import main
main(sys.argv[1:])
"""


def probe(*args: str, env: dict[str, str]) -> tuple[int, set[str], str]:
    proc = subprocess.run([sys.executable, "-c", PROBE, *args], capture_output=True, text=True, timeout=60,
                          env={k: v for k, v in {**os.environ, **env}.items() if k not in AUTH_ENV or k in env})
    mods = next(line for line in proc.stderr.splitlines() if line.startswith("MODULES")).split()[1:]
    return proc.returncode, set(mods), proc.stdout + proc.stderr


def test_oidc_path_imports_no_google_or_gitlab_library(tmp_path: Path) -> None:
    code, mods, output = probe(*oidc_args(tmp_path), env={"GITLAB_OIDC_TOKEN": make_jwt()})
    assert code == 0, output
    assert not {m for m in mods if m.startswith(("google", "gitlab", "requests"))}, mods


def test_key_file_path_imports_google_auth_but_no_cloud_client(tmp_path: Path) -> None:
    path, _ = service_account_key(tmp_path)
    code, mods, output = probe("auth", "check", "--key-file", str(path), env={})
    assert code == 0, output
    assert "google.auth" in mods
    assert not {m for m in mods if m.startswith("google.cloud") or m.startswith("google.api_core")}, mods


def test_gitlab_commands_import_no_google_library(tmp_path: Path) -> None:
    code, mods, output = probe("gitlab", "gate", "-e", "prod1", "--url", "http://127.0.0.1:9", "--project", "1",
                               env={"CI_COMMIT_SHA": "a" * 40, "GITLAB_TOKEN": "x"})
    assert code == 1 and "cannot reach GitLab at http://127.0.0.1:9" in output
    assert "gitlab" in mods
    assert not {m for m in mods if m.startswith("google")}, mods
