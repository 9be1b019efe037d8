"""``gitlab-mci helm``: the chart values and HELM_UPGRADE_EXTRA_ARGS for the production deploys."""

from __future__ import annotations

from pathlib import Path

import click

from gitlab_mci.helm import (
    CHART_PORT,
    DEFAULT_NODE_PORT,
    NODE_PORT_MAX,
    NODE_PORT_MIN,
    HelmSettings,
    extra_args,
    parse_port,
    render_values,
)


def _settings(node_port: str, service_port: str, internal_port: str | None, disable_ingress: bool,
              values_file: str | None) -> HelmSettings:
    ext = parse_port(service_port, "--service-port / MCI_SERVICE_PORT")
    return HelmSettings(
        node_port=parse_port(node_port, "--node-port / MCI_NODE_PORT", NODE_PORT_MIN, NODE_PORT_MAX),
        external_port=ext,
        internal_port=parse_port(internal_port, "--internal-port / MCI_INTERNAL_PORT") if internal_port else ext,
        disable_ingress=disable_ingress,
        values_file=values_file or None,
    )


_common = [
    click.option("--node-port", envvar="MCI_NODE_PORT", default=str(DEFAULT_NODE_PORT), show_default=True,
                 help=f"Node port pinned in every cluster, {NODE_PORT_MIN}-{NODE_PORT_MAX} [env: MCI_NODE_PORT]."),
    click.option("--service-port", envvar="MCI_SERVICE_PORT", default=str(CHART_PORT), show_default=True,
                 help="The Service's port, the chart's service.externalPort [env: MCI_SERVICE_PORT]."),
    click.option("--internal-port", envvar="MCI_INTERNAL_PORT", default=None,
                 help="The container port, service.internalPort (default: the service port) "
                      "[env: MCI_INTERNAL_PORT]."),
    click.option("--disable-ingress/--keep-ingress", envvar="MCI_DISABLE_INGRESS", default=False,
                 show_default=True,
                 help="Turn off the chart's nginx Ingress for this app [env: MCI_DISABLE_INGRESS]."),
]


def _with_common(f: click.decorators.FC) -> click.decorators.FC:
    for option in reversed(_common):
        f = option(f)
    return f


@click.group()
def command() -> None:
    """Helm values and HELM_UPGRADE_EXTRA_ARGS for Auto DevOps' auto-deploy-app chart."""


@command.command("values")
@_with_common
@click.option("--output", "-o", type=click.Path(dir_okay=False, path_type=Path), default=None,
              envvar="MCI_VALUES_FILE", help="Write to this file instead of stdout [env: MCI_VALUES_FILE].")
def values(node_port: str, service_port: str, internal_port: str | None, disable_ingress: bool,
           output: Path | None) -> None:
    """Write the chart values: a NodePort Service with the pinned node port."""
    text = render_values(_settings(node_port, service_port, internal_port, disable_ingress, None))
    if output is None:
        click.echo(text, nl=False)
    else:
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(text)
        click.echo(f"wrote {output}", err=True)


@command.command("extra-args")
@_with_common
@click.option("--values-file", envvar="MCI_VALUES_FILE", default=None,
              help="Also pass this values file (written by `helm values -o`) [env: MCI_VALUES_FILE].")
@click.option("--existing", envvar="HELM_UPGRADE_EXTRA_ARGS", default="", show_default=False,
              help="The current arguments to keep [env: HELM_UPGRADE_EXTRA_ARGS].")
def extra_args_cmd(node_port: str, service_port: str, internal_port: str | None, disable_ingress: bool,
                   values_file: str | None, existing: str) -> None:
    """Print the new HELM_UPGRADE_EXTRA_ARGS: the existing arguments plus what gitlab-mci needs.

    Running it again on its own output changes nothing. Arguments that contradict the pinned Service
    (e.g. --set service.type=ClusterIP, another service.nodePort) are refused.
    """
    click.echo(extra_args(existing, _settings(node_port, service_port, internal_port, disable_ingress, values_file)))
