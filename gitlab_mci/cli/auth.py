"""``gitlab-mci auth``: Google credentials for CI jobs (GitLab OIDC → Workload Identity Federation, or a key file)."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import click

from gitlab_mci.cli.options import FILE, project_option
from gitlab_mci.errors import UserError


@click.group()
def command() -> None:
    """Google credentials for jobs: GitLab OIDC to Workload Identity Federation, or a JSON key file.

    Secrets (the ID token, private keys) are never printed; stdout carries only KEY=value lines.
    """


def _default_dir() -> Path:
    # Outside the project directory, so the token never ends up in artifacts or caches.
    job = os.environ.get("CI_JOB_ID") or str(os.getpid())
    return Path(tempfile.gettempdir()) / f"gitlab-mci-auth-{job}"


def _warn(message: str) -> None:
    click.echo(f"gitlab-mci: warning: {message}", err=True)


def _emit(values: dict[str, str], fmt: str, dotenv: Path | None) -> None:
    from gitlab_mci.auth import env_lines

    lines = env_lines(values, fmt)
    for line in lines:
        click.echo(line)
    if dotenv is not None:
        with dotenv.open("a") as fh:
            fh.writelines(line + "\n" for line in env_lines(values, "dotenv"))


def _key_file_fallback(key_file: Path | None, project: str | None, fmt: str, dotenv: Path | None,
                       reason: str) -> None:
    from gitlab_mci import auth

    if key_file is not None:
        path, source = key_file, "--key-file"
    elif os.environ.get("GOOGLE_APPLICATION_CREDENTIALS"):
        path, source = Path(os.environ["GOOGLE_APPLICATION_CREDENTIALS"]), "GOOGLE_APPLICATION_CREDENTIALS"
    else:
        raise UserError(reason)
    info = auth.inspect_key_file(path, source=source)
    loaded = auth.load_with_google_auth(path, info, source=source)
    click.echo(f"{info.describe()}; google-auth loads it as {loaded}", err=True)
    values = {"GOOGLE_APPLICATION_CREDENTIALS": str(path.resolve()),
              "CLOUDSDK_AUTH_CREDENTIAL_FILE_OVERRIDE": str(path.resolve())}
    if project or info.project:
        values["GOOGLE_CLOUD_PROJECT"] = str(project or info.project)
    _emit(values, fmt, dotenv)


# Not -o/--output: these are not renderings of a report but the shell syntax of the variables a job reads,
# `eval "$(… --format export)"` (docs/cli.md, "Output formats").
format_option = click.option("--format", "fmt", type=click.Choice(["dotenv", "export"]), default="dotenv",
                             show_default=True, help="KEY=value lines, or `export` lines for eval.")
# Appends: the job's other commands may write the same dotenv report.
dotenv_option = click.option("--dotenv", type=FILE, default=None,
                             help="Also append the KEY=value lines to this dotenv file (for GitLab's "
                                  "artifacts:reports:dotenv).")
key_file_option = click.option(
    "--key-file", type=FILE, default=None,
    help="Credentials JSON: service_account or external_account, e.g. a File-type CI/CD variable "
         "[env: GOOGLE_APPLICATION_CREDENTIALS].")


@command.command("gitlab-oidc")
@click.option("--token-env", default="GITLAB_OIDC_TOKEN", show_default=True,
              help="Environment variable that holds the GitLab ID token (the name under `id_tokens:`).")
@click.option("--project-number", envvar="MCI_WIF_PROJECT_NUMBER", default=None,
              help="Number of the Google Cloud project that owns the pool [env: MCI_WIF_PROJECT_NUMBER].")
@click.option("--pool", envvar="MCI_WIF_POOL", default=None,
              help="Workload identity pool ID [env: MCI_WIF_POOL].")
@click.option("--provider", envvar="MCI_WIF_PROVIDER", default=None,
              help="Workload identity pool provider ID [env: MCI_WIF_PROVIDER].")
@click.option("--audience", envvar="MCI_WIF_AUDIENCE", default=None,
              help="Full audience //iam.googleapis.com/projects/N/locations/global/workloadIdentityPools/P/"
                   "providers/V instead of the three flags above [env: MCI_WIF_AUDIENCE].")
@click.option("--service-account", envvar="MCI_WIF_SERVICE_ACCOUNT", default=None,
              help="Service account to impersonate (optional; without it the federated identity is used "
                   "directly) [env: MCI_WIF_SERVICE_ACCOUNT].")
@click.option("--expect-aud", "expect_aud", default=None,
              help="Fail unless the ID token has this `aud` (default: warn unless it is the provider's "
                   "default audience).")
@click.option("--dir", "directory", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Where to write the token and credentials files (default: a private directory in $TMPDIR).")
@key_file_option
@project_option
@format_option
@dotenv_option
def gitlab_oidc(token_env: str, project_number: str | None, pool: str | None, provider: str | None,
                audience: str | None, service_account: str | None, expect_aud: str | None, directory: Path | None,
                key_file: Path | None, project: str | None, fmt: str, dotenv: Path | None) -> None:
    """Write Google credentials from the GitLab ID token and print GOOGLE_APPLICATION_CREDENTIALS=… lines.

    \b
    In .gitlab-ci.yml:
      id_tokens:
        GITLAB_OIDC_TOKEN:
          aud: https://iam.googleapis.com/projects/NUMBER/locations/global/workloadIdentityPools/POOL/providers/PROV
      script:
        - eval "$(gitlab-mci auth gitlab-oidc --format export)"

    Without the token variable, falls back to --key-file or GOOGLE_APPLICATION_CREDENTIALS (validated).
    --project is exported as GOOGLE_CLOUD_PROJECT for the job's later commands. --format export prints
    `export KEY=value` lines for eval; --dotenv also appends them to a dotenv report.
    """
    from gitlab_mci import auth

    token = os.environ.get(token_env)
    if not token:
        _key_file_fallback(
            key_file, project, fmt, dotenv,
            reason=f"{token_env} is not set: add `id_tokens: {{{token_env}: {{aud: …}}}}` to the job, or give "
                   "--key-file / GOOGLE_APPLICATION_CREDENTIALS")
        click.echo(f"gitlab-mci: {token_env} is not set; used the key file instead", err=True)
        return
    full_audience = auth.wif_audience(project_number=project_number, pool=pool, provider=provider,
                                      audience=audience)
    if service_account:
        auth.impersonation_url(service_account)  # validate before writing anything
    if expect_aud:
        expected, strict = [expect_aud], True
    else:
        expected, strict = ["https:" + full_audience, full_audience], False
    written = auth.write_oidc_credentials(
        token, directory=directory or _default_dir(), audience=full_audience, source=token_env,
        service_account=service_account, expected_audiences=expected, strict_audience=strict)
    for warning in written.token.warnings:
        _warn(warning)
    click.echo(f"GitLab ID token: {written.token.describe()}", err=True)
    click.echo(f"wrote {written.credentials_file} (external_account, reads {written.token_file})", err=True)
    values = {
        "GOOGLE_APPLICATION_CREDENTIALS": str(written.credentials_file),
        # gcloud reads the same file through this variable.
        "CLOUDSDK_AUTH_CREDENTIAL_FILE_OVERRIDE": str(written.credentials_file),
    }
    if project:
        values["GOOGLE_CLOUD_PROJECT"] = project
    _emit(values, fmt, dotenv)


@command.command("check")
@key_file_option
def check(key_file: Path | None) -> None:
    """Validate a credentials JSON (service_account or external_account) and load it with google-auth.

    Says which type it is and whom it acts as; never prints the private key.
    """
    from gitlab_mci import auth

    if key_file is not None:
        path, source = key_file, "--key-file"
    elif os.environ.get("GOOGLE_APPLICATION_CREDENTIALS"):
        path, source = Path(os.environ["GOOGLE_APPLICATION_CREDENTIALS"]), "GOOGLE_APPLICATION_CREDENTIALS"
    else:
        raise UserError("nothing to check: pass --key-file or set GOOGLE_APPLICATION_CREDENTIALS")
    info = auth.inspect_key_file(path, source=source)
    loaded = auth.load_with_google_auth(path, info, source=source)
    click.echo(f"{info.describe()}; google-auth loads it as {loaded}")
