"""``gitlab-mci sim deploy``: the Auto DevOps deploy step's stand-in for simulated clusters."""

from __future__ import annotations

import os
from pathlib import Path

import click

from gitlab_mci.cli.options import (
    context_option,
    extra_args_option,
    kubeconfig_option,
    namespace_option,
    release_option,
)
from gitlab_mci.errors import UserError
from gitlab_mci.helm import DEPLOY_VALUES_FILE


@click.command("deploy")
@context_option
@release_option
@namespace_option
@click.option("--values", "-f", "values_files", multiple=True, type=click.Path(dir_okay=False, path_type=Path),
              help="Helm values file(s), applied in order before HELM_UPGRADE_EXTRA_ARGS (default: "
                   "HELM_UPGRADE_VALUES_FILE, else .gitlab/auto-deploy-values.yaml, when it exists, like the deploy "
                   "script).")
@extra_args_option
@click.option("--track", default="stable", show_default=True, help="application.track (stable or canary).")
@click.option("--replicas", type=int, help="replicaCount (default: the values', else 1).")
@kubeconfig_option
def deploy_cmd(context: str | None, release: str | None, namespace: str, values_files: tuple[Path, ...],
               extra_args: str, track: str, replicas: int | None, kubeconfig: Path | None) -> None:
    """Deploy what the auto-deploy-app chart would (Deployment <release>, Service <release>-auto-deploy).

    A stand-in for `auto-deploy deploy` in simulated clusters, where Helm and images are not available: it renders
    the chart's Deployment and Service from the values Helm would use (the chart's defaults, then the values files in
    order, then the --set flags in order; the last wins), and creates or replaces them.
    """
    from gitlab_mci import kube
    from gitlab_mci.sim.autodeploy import Release, deploy, values_for

    if not release:
        raise UserError("no release: pass --release or set HELM_RELEASE_NAME or CI_ENVIRONMENT_SLUG")
    if kubeconfig:
        os.environ["KUBECONFIG"] = str(kubeconfig)
    files = [str(f) for f in values_files]
    default_file = os.environ.get("HELM_UPGRADE_VALUES_FILE") or DEPLOY_VALUES_FILE
    if not files and Path(default_file).is_file():
        files = [default_file]  # what the deploy script does when the file exists
    values = values_for(extra_args, files)
    values["application"]["track"] = track
    if replicas is not None:
        values["replicaCount"] = replicas
    rel = Release(release, namespace, values)
    cluster = kube.connect(context)
    service = deploy(cluster, rel)
    ports = ", ".join(f"{p.get('name')}:{p.get('port')}" + (f"→{p['nodePort']}" if p.get("nodePort") else "")
                      for p in service["spec"]["ports"])
    click.echo(f"deployed {rel.deployment_name} to {cluster.context}: Service {rel.service_name} "
               f"({service['spec']['type']} {ports})")
