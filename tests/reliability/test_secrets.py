"""No secret reaches any output or log: certificate private keys, service-account keys, GitLab ID tokens."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from tests.cli_helpers import run_cli as cli
from tests.conftest import RunningSim
from tests.pki import write_pair
from tests.reliability.conftest import APPLY, DESTROY
from tests.test_auth_oidc import make_jwt, oidc_args, service_account_key


def _secret_bits(pem_or_token: str) -> list[str]:
    """Pieces of a secret long enough that finding one means the secret leaked."""
    lines = [line for line in pem_or_token.splitlines() if line and not line.startswith("-----")]
    return [line[:40] for line in lines[:3]] if lines else [pem_or_token[-40:]]


def test_apply_with_a_key_file_certificate_and_an_oidc_token_prints_no_secret(
        env: RunningSim, tmp_path: Path, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture,
        monkeypatch: pytest.MonkeyPatch) -> None:
    caplog.set_level(logging.DEBUG)
    crt, key, key_pem = write_pair(tmp_path, "tls")
    sa_path, sa_pem = service_account_key(tmp_path)
    token = make_jwt()
    secrets = _secret_bits(key_pem) + _secret_bits(sa_pem) + [token.split(".")[2][:40], token[:60]]
    outputs: list[str] = []

    monkeypatch.setenv("GITLAB_OIDC_TOKEN", token)
    code, out, err = cli(oidc_args(tmp_path, "--service-account", "deployer@demo-project.iam.gserviceaccount.com"),
                         capsys)
    assert code == 0, err
    outputs += [out, err]
    monkeypatch.delenv("GITLAB_OIDC_TOKEN")
    code, out, err = cli(["auth", "gitlab-oidc", "--key-file", str(sa_path)], capsys)
    assert code == 0, err
    outputs += [out, err]
    code, out, err = cli(["auth", "check", "--key-file", str(sa_path)], capsys)
    outputs += [out, err]

    cert_args = ["--certificate-file", str(crt), "--key-file", str(key)]
    for args in ([*APPLY, *cert_args], [*APPLY, *cert_args, "--output", "json"],
                 ["lb", "plan", *APPLY[2:], *cert_args, "--output", "json"], [*DESTROY, "--output", "json"],
                 [*APPLY, *cert_args]):
        code, out, err = cli(args, capsys)
        assert code == 0, err
        outputs += [out, err]
    # The simulator keeps the private key (it must serve it) but never answers it.
    certs = env.sim.compute.resources("sslCertificates")
    assert certs and all("privateKey" not in r for r in certs)
    code, out, err = cli(DESTROY, capsys)
    outputs += [out, err]
    # A failing run's error message must not quote the key either.
    broken = tmp_path / "broken.key"
    broken.write_text(key_pem.replace("PRIVATE KEY-----\n", "PRIVATE KEY-----\nAAAA", 1))
    code, out, err = cli([*APPLY, "--certificate-file", str(crt), "--key-file", str(broken)], capsys)
    assert code == 1
    outputs += [out, err]

    journal = "\n".join(f"{e.method} {e.path}" for e in env.sim.journal.entries())
    everything = "\n".join(outputs) + caplog.text + journal
    assert outputs and journal
    leaked = [s for s in secrets if s in everything]
    assert leaked == []
