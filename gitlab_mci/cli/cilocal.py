"""``gitlab-mci ci-local``: prepare a project to run its own pipeline with gitlab-ci-local against the simulator."""

from __future__ import annotations

import json
import shlex
from pathlib import Path

import click

from gitlab_mci.cli.options import output_option, state_dir_option
from gitlab_mci.errors import UserError


def _contexts(values: tuple[str, ...]) -> dict[str, str]:
    out: dict[str, str] = {}
    for value in values:
        env, sep, context = value.partition("=")
        if not sep or not env or not context:
            raise UserError(f"--context {value!r}: expected ENVIRONMENT=CONTEXT, e.g. prod1=prod1")
        out[env] = context
    return out


@click.command("ci-local")
@click.option("--project-dir", type=click.Path(file_okay=False, exists=True, path_type=Path), default=Path("."),
              show_default=True, help="The project's git checkout (with an origin remote).")
@click.option("--ci-file", type=click.Path(dir_okay=False, path_type=Path), default=Path(".gitlab-ci.yml"),
              show_default=True,
              help="The CI file in the project (passed on to gitlab-ci-local as --file when not the default).")
@click.option("--variables", "variables_file", type=click.Path(dir_okay=False, path_type=Path),
              help="The project's CI/CD variables in gitlab-ci-local's format (KEY: value, or KEY: {values: {ENV: "
                   "value}} for environment scopes); copied into the project's .gitlab-ci-local-variables.yml.")
@click.option("--context", "contexts", multiple=True, metavar="ENV=CONTEXT",
              help="Kubeconfig context (simulated cluster) of a production environment; repeat. Default: the "
                   "cluster named like the environment, else the clusters in order.")
@click.option("--namespace", default=None,
              help="KUBE_NAMESPACE of the production environments and the load balancer's (default: the "
                   "template's release input, else `default`), unless --variables sets it.")
@state_dir_option
@click.option("--template", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="The gitlab-mci CI template to serve for the project's include (default: "
                   "ci-templates/mci.gitlab-ci.yml of this gitlab-mci checkout).")
@click.option("--auto-devops", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="The stand-in served for `include: template: Auto-DevOps.gitlab-ci.yml` (default: "
                   "examples/auto-devops-two-clusters/local/auto-devops.gitlab-ci.yml of this checkout).")
@click.option("--gitlab-ci-local", "gitlab_ci_local", envvar="GITLAB_CI_LOCAL", default=None,
              help="The gitlab-ci-local executable in the printed command (default: .tools/node_modules/.bin/"
                   "gitlab-ci-local of this checkout, else from PATH) [env: GITLAB_CI_LOCAL].")
@output_option(["text", "json"])
def command(project_dir: Path, ci_file: Path, variables_file: Path | None, contexts: tuple[str, ...],
            namespace: str | None, state_dir: Path, template: Path | None, auto_devops: Path | None,
            gitlab_ci_local: str | None, output: str) -> None:
    """Prepare a project's checkout to run its pipeline with gitlab-ci-local against the running simulator.

    Puts the Auto DevOps stand-in and the gitlab-mci template where gitlab-ci-local caches includes, writes
    .gitlab-ci-local-variables.yml (the --variables file, the simulator's endpoints and, per production
    environment of the template's `environments` input, KUBE_CONTEXT, KUBE_NAMESPACE and KUBE_INGRESS_BASE_DOMAIN
    unless already set), and prints the gitlab-ci-local command to run (with --manual for the production_manual
    jobs when STAGING_ENABLED or CANARY_ENABLED is set). Start the simulator first: `gitlab-mci sim up --detach`.
    """
    from gitlab_mci import cilocal

    wanted = _contexts(contexts)
    template = template or cilocal.source_file("ci-templates/mci.gitlab-ci.yml")
    auto_devops = auto_devops or cilocal.source_file(
        "examples/auto-devops-two-clusters/local/auto-devops.gitlab-ci.yml")
    if template is None or auto_devops is None:
        raise UserError("this gitlab-mci is not run from its source checkout: pass --template and --auto-devops "
                        "(ci-templates/mci.gitlab-ci.yml, examples/auto-devops-two-clusters/local/"
                        "auto-devops.gitlab-ci.yml of a gitlab-mci checkout)")
    plan = cilocal.prepare(project_dir.resolve(), ci_file=str(ci_file), state_dir=state_dir, template=template,
                           auto_devops=auto_devops, variables_file=variables_file, contexts=wanted,
                           namespace=namespace, gitlab_ci_local=gitlab_ci_local or cilocal.default_gitlab_ci_local())
    cilocal.write(plan)
    if output == "json":
        click.echo(json.dumps(plan.as_json(), indent=2))
        return
    for env, context in plan.environments.items():
        click.echo(f"environment {env}: context {context}")
    click.echo(f"wrote {plan.variables_file}")
    for target in plan.includes:
        click.echo(f"cached {target.relative_to(plan.project_dir)}")
    click.echo("run:")
    click.echo(f"  cd {shlex.quote(str(plan.project_dir))} && {shlex.join(plan.command)}")
