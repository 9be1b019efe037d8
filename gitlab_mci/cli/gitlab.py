"""``gitlab-mci gitlab``: environment-scoped CI/CD variables, the teardown trigger and the deployment gate."""

from __future__ import annotations

import json
from pathlib import Path

import click

from gitlab_mci.cli.options import FILE, Decorator, dry_run_option, no_wait_option, output_option, timeout_option
from gitlab_mci.errors import UserError

# GitLab's predefined CI/CD variables are read by gitlab.Settings (with fallbacks), not by click.
url_option = click.option(
    "--url", default=None, metavar="URL",
    help="GitLab server or API v4 URL [env: CI_API_V4_URL, else CI_SERVER_URL].")
# In `gitlab` commands --project is the GitLab project; no command here takes a Google Cloud project.
project_option = click.option(
    "--project", "-p", default=None, metavar="ID|PATH",
    help="GitLab project ID or path like group/app [env: CI_PROJECT_ID].")


def environment_option(required: bool = False) -> Decorator:
    """``-e/--environment``: GitLab environments, for the commands that act on some."""
    return click.option("--environment", "-e", "environments", multiple=True, required=required,
                        metavar="NAME[,NAME]", help="GitLab environment name; repeat or comma-separate for several.")



@click.group()
def command() -> None:
    """CI/CD variables per environment, the teardown trigger and the deployment gate (python-gitlab).

    Credentials: GITLAB_TOKEN (a project or personal access token with the api scope), else CI_JOB_TOKEN (read
    only). Tokens and secret values are never printed.
    """


def _split(values: tuple[str, ...]) -> list[str]:
    out: list[str] = []
    for value in values:
        out.extend(v.strip() for v in value.split(",") if v.strip())
    return list(dict.fromkeys(out))


@command.command("setup")
@click.option("--file", "-f", "file", required=True, type=FILE,
              help="YAML description of the environments and their variables.")
@project_option
@url_option
@dry_run_option
@output_option(["text", "json"])
def setup(file: Path, project: str | None, url: str | None, dry_run: bool, output: str) -> None:
    """Create or update the environment-scoped CI/CD variables described in --file.

    The whole file is validated before GitLab is contacted. Variables that already match cause no write, so a
    second run changes nothing. Names that look like secrets (…_TOKEN, …_KEY, …_PASSWORD) and values taken
    from the environment (from_env) or a file (from_file) are masked (when GitLab can mask them) and protected.
    Values are never printed.
    """
    from gitlab_mci import gitlab as gm

    envs = gm.load_envs_file(file)
    settings = gm.Settings.from_env(url=url, project=project or envs.project)
    settings = settings.with_secrets([v.value for v in envs.variables if v.secret])
    settings.require_project()
    gl = gm.connect(settings, need_write=True)
    proj = gm.get_project(gl, settings)
    plan = gm.plan_variables(proj, envs, settings)
    if not dry_run:
        gm.apply_plan(proj, plan, settings)
    done = {"create": "created", "update": "updated", "unchanged": "unchanged"}
    would = {"create": "would create", "update": "would update", "unchanged": "unchanged"}
    rows = []
    for change in plan:
        v = change.desired
        flags = [name for name, on in (("masked", v.masked), ("protected", v.protected), ("raw", v.raw)) if on]
        notes = [f"changed: {', '.join(change.changed)}"] if change.changed else []
        if v.note:
            notes.append(v.note)
        rows.append({
            "environment": v.scope, "key": v.key, "action": (would if dry_run else done)[change.action],
            "type": v.variable_type, "flags": flags, "note": "; ".join(notes),
        })
    if output == "json":
        click.echo(json.dumps({"project": proj.path_with_namespace, "dry_run": dry_run, "variables": rows},
                              indent=2))
        return
    headers = ("ENVIRONMENT", "VARIABLE", "ACTION", "TYPE", "FLAGS", "NOTE")
    table = [(r["environment"], r["key"], r["action"], r["type"], ",".join(r["flags"]) or "-", r["note"])
             for r in rows]
    widths = [max(len(str(x)) for x in col) for col in zip(headers, *table, strict=False)]
    for line in (headers, *table):
        click.echo("  ".join(str(x).ljust(w) for x, w in zip(line, widths, strict=True)).rstrip())
    counts = {a: sum(1 for c in plan if c.action == a) for a in ("create", "update", "unchanged")}
    verb = "would be " if dry_run else ""
    click.echo(f"{proj.path_with_namespace}: {counts['create']} {verb}created, {counts['update']} {verb}updated, "
               f"{counts['unchanged']} unchanged")


@command.command("teardown")
@environment_option()
@click.option("--mode", type=click.Choice(["inputs", "job", "stop"]), default="inputs", show_default=True,
              help="inputs: run a pipeline with the teardown input (pipeline variable as fallback); job: play the "
                   "manual teardown job of the latest pipeline; stop: stop the environment(s).")
@click.option("--ref", default=None,
              help="Branch for the pipeline (default: the project's default branch) [env: CI_COMMIT_REF_NAME].")
@click.option("--input", "input_name", default="mci_teardown", show_default=True,
              help="Pipeline input set to true (mode inputs); <input>_environments gets --environment.")
@click.option("--variable", "variable_name", default="MCI_TEARDOWN", show_default=True,
              help="Pipeline variable set to true when GitLab rejects the input (mode inputs).")
@click.option("--job", "job_name", default="mci-teardown", show_default=True,
              help="Name of the manual teardown job (mode job).")
@no_wait_option
@timeout_option(1800.0)
@click.option("--interval", type=click.FloatRange(min=0.01), default=5.0, show_default=True, metavar="SECONDS",
              help="Seconds between status checks.")
@project_option
@url_option
def teardown(environments: tuple[str, ...], mode: str, ref: str | None, input_name: str, variable_name: str,
             job_name: str, no_wait: bool, timeout: float, interval: float, project: str | None,
             url: str | None) -> None:
    """Start the teardown of the load balancer and environments, wait for it and report the final status.

    --environment: required with --mode stop (the environments to stop); with --mode inputs it is passed to the
    pipeline. Exits non-zero when the pipeline, job or stop fails or does not finish within --timeout.
    """
    from gitlab_mci import gitlab as gm

    names = _split(environments)
    if mode == "stop" and not names:
        raise UserError("--mode stop needs --environment NAME (one or more)")
    if mode == "job" and names:
        raise UserError("--environment does not apply to --mode job: the manual job tears down what its pipeline "
                        "deployed (use --mode inputs or --mode stop to choose environments)")
    settings = gm.Settings.from_env(url=url, project=project, ref=ref)
    settings.require_project()
    gl = gm.connect(settings, need_write=True)
    proj = gm.get_project(gl, settings)
    waiter = gm.Waiter(timeout=timeout, interval=interval, echo=click.echo) if not no_wait else None
    branch = settings.ref or proj.default_branch
    if mode == "inputs":
        results = [gm.teardown_by_pipeline(proj, settings, ref=branch, environments=names, input_name=input_name,
                                           variable_name=variable_name, echo=click.echo, waiter=waiter)]
    elif mode == "job":
        results = [gm.teardown_by_job(proj, settings, ref=branch, job_name=job_name, echo=click.echo,
                                      waiter=waiter)]
    else:
        results = gm.teardown_by_stop(proj, settings, environments=names, echo=click.echo, waiter=waiter)
    for result in results:
        if result.status is None:
            click.echo(f"teardown started: {result.target} (not waiting)")
        else:
            click.echo(f"teardown {result.status}: {result.target}" + (f" ({result.url})" if result.url else ""))


@command.command("gate")
@environment_option(required=True)
@click.option("--sha", default=None, help="Commit that must be deployed [env: CI_COMMIT_SHA].")
@project_option
@url_option
def gate(environments: tuple[str, ...], sha: str | None, project: str | None, url: str | None) -> None:
    """Fail unless every listed environment's last deployment succeeded at this commit.

    --environment lists the production environments that must all run it. Run it before provisioning the global
    load balancer, so it never points at a half-deployed app.
    """
    from gitlab_mci import gitlab as gm

    names = _split(environments)
    settings = gm.Settings.from_env(url=url, project=project, sha=sha)
    if not settings.sha:
        raise UserError("no commit to check: pass --sha or set CI_COMMIT_SHA")
    settings.require_project()
    gl = gm.connect(settings)
    # Lazy: the gate reads only environments and deployments, which CI_JOB_TOKEN may do.
    proj = gm.get_project(gl, settings, lazy=True)
    results = gm.check_gate(proj, settings, names, settings.sha)
    bad = [r for r in results if not r.ok]
    if bad:
        raise UserError(f"gate: not every environment runs {settings.sha[:8]}: "
                        + ", ".join(f"{r.environment} ({r.reason})" for r in bad))
    for r in results:
        click.echo(f"{r.environment}: {r.reason} at {settings.sha[:8]}")
    click.echo(f"gate: {', '.join(names)} all run {settings.sha[:8]}")
