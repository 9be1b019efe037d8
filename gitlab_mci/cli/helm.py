"""``gitlab-mci helm``: the chart values and HELM_UPGRADE_EXTRA_ARGS for the production deploys."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import click

from gitlab_mci.cli.options import backends_option, extra_args_option
from gitlab_mci.helm import (
    CHART_PORT,
    DEFAULT_NODE_PORT,
    DEPLOY_VALUES_FILE,
    NODE_PORT_MAX,
    NODE_PORT_MIN,
    HelmSettings,
    Request,
    check_values_file,
    parse_port,
    render_values,
    resolve,
    user_values,
)
from gitlab_mci.helm import extra_args as build_extra_args

FC = TypeVar("FC", bound=Callable[..., object])


def _port(text: str | None, what: str, low: int = 1, high: int = 65535) -> int | None:
    """A port flag or variable; unset or empty means not asked (the user's values, else the default)."""
    if text is None or not text.strip():
        return None
    return parse_port(text, what, low, high)


def _settings(node_port: str | None, service_port: str | None, internal_port: str | None, disable_ingress: bool,
              extra_args: str, deploy_values_file: Path | None, values_file: Path | None, backends: str,
              lb_name: str | None) -> HelmSettings:
    """Resolve the request against the user's own values; say on stderr which of their values were kept."""
    request = Request(
        node_port=_port(node_port, "--node-port / MCI_NODE_PORT", NODE_PORT_MIN, NODE_PORT_MAX),
        external_port=_port(service_port, "--service-port / MCI_SERVICE_PORT"),
        internal_port=_port(internal_port, "--internal-port / MCI_INTERNAL_PORT"),
        disable_ingress=disable_ingress,
        values_file=str(values_file) if values_file else None,
        backends=backends,
        lb_name=lb_name or None,
    )
    settings, notes = resolve(request, user_values(extra_args, deploy_values_file, request.values_file))
    for note in notes:
        click.echo(f"gitlab-mci: {note}", err=True)
    return settings


_common = [
    click.option("--node-port", envvar="MCI_NODE_PORT", default=None, metavar="PORT",
                 help=f"Node port pinned in every cluster, {NODE_PORT_MIN}-{NODE_PORT_MAX}; default "
                      f"{DEFAULT_NODE_PORT}, the same as `nodeport pin` [env: MCI_NODE_PORT]."),
    click.option("--service-port", envvar="MCI_SERVICE_PORT", default=None, metavar="PORT",
                 help=f"The Service's port, the chart's service.externalPort; default: your values' "
                      f"service.externalPort, else {CHART_PORT} [env: MCI_SERVICE_PORT]."),
    click.option("--internal-port", envvar="MCI_INTERNAL_PORT", default=None, metavar="PORT",
                 help="The container port, service.internalPort; default: the --service-port given, else your "
                      f"values' service.internalPort, else {CHART_PORT} [env: MCI_INTERNAL_PORT]."),
    click.option("--disable-ingress/--keep-ingress", envvar="MCI_DISABLE_INGRESS", default=False,
                 show_default=True,
                 help="Turn off the chart's nginx Ingress for this app [env: MCI_DISABLE_INGRESS]."),
    extra_args_option,
    backends_option,
    # Not the shared --lb: only `--backends neg` needs it (the NEG is named after the load balancer).
    click.option("--lb", "lb_name", envvar="MCI_LB_NAME", default=None,
                 help="With --backends neg: the load balancer's name, which names the NEG [env: MCI_LB_NAME]."),
    click.option("--deploy-values-file", envvar="HELM_UPGRADE_VALUES_FILE", default=DEPLOY_VALUES_FILE,
                 show_default=True, type=click.Path(dir_okay=False, path_type=Path),
                 help="The values file auto-deploy passes before HELM_UPGRADE_EXTRA_ARGS, read when it exists "
                      "[env: HELM_UPGRADE_VALUES_FILE]."),
]


def _with_common(f: FC) -> FC:
    for option in reversed(_common):
        f = option(f)
    return f


@click.group()
def command() -> None:
    """Helm values and HELM_UPGRADE_EXTRA_ARGS for Auto DevOps' auto-deploy-app chart.

    Both read your own values first (the values file auto-deploy passes, then the --values files and --set flags of
    HELM_UPGRADE_EXTRA_ARGS, the last winning as in Helm): a value you set for a key gitlab-mci sets is kept (a line
    on stderr says so) unless a flag or variable asks for another, which is refused naming your value.
    """


@command.command("values")
@_with_common
@click.option("--values-file", type=click.Path(dir_okay=False, path_type=Path), default=None,
              envvar="MCI_VALUES_FILE",
              help="The values file: `helm values` writes it (else stdout), `helm extra-args` passes it to Helm "
                   "[env: MCI_VALUES_FILE].")
def values(node_port: str | None, service_port: str | None, internal_port: str | None, disable_ingress: bool,
           extra_args: str, backends: str, lb_name: str | None, deploy_values_file: Path | None,
           values_file: Path | None) -> None:
    """Write the chart values: a NodePort Service with the pinned node port, ports consistent with your values.

    With --backends neg: a ClusterIP Service whose service.annotations carry the `cloud.google.com/neg` annotation
    naming the load balancer's NEG for its port (your other annotations are merged by Helm, untouched).
    """
    text = render_values(_settings(node_port, service_port, internal_port, disable_ingress, extra_args,
                                   deploy_values_file, values_file, backends, lb_name))
    if values_file is None:
        click.echo(text, nl=False)
    else:
        values_file.parent.mkdir(parents=True, exist_ok=True)
        values_file.write_text(text)
        click.echo(f"wrote {values_file}", err=True)


@command.command("extra-args")
@_with_common
@click.option("--values-file", type=click.Path(dir_okay=False, path_type=Path), default=None,
              envvar="MCI_VALUES_FILE",
              help="The values file: `helm values` writes it (else stdout), `helm extra-args` passes it to Helm "
                   "[env: MCI_VALUES_FILE].")
def extra_args_cmd(node_port: str | None, service_port: str | None, internal_port: str | None,
                   disable_ingress: bool, extra_args: str, backends: str, lb_name: str | None,
                   deploy_values_file: Path | None, values_file: Path | None) -> None:
    """Print the new HELM_UPGRADE_EXTRA_ARGS: the existing arguments plus what gitlab-mci needs.

    Running it again on its own output changes nothing. Arguments and values that contradict the pinned Service
    (e.g. --set service.type=ClusterIP, another service.nodePort) are refused; a values file from `helm values` that
    disagrees with these inputs too. With --backends neg the Service keeps its type and gets the NEG annotation
    (`--set-json service.annotations.cloud\\.google\\.com/neg=…`) instead of a node port.
    """
    settings = _settings(node_port, service_port, internal_port, disable_ingress, extra_args, deploy_values_file,
                         values_file, backends, lb_name)
    check_values_file(settings)
    click.echo(build_extra_args(extra_args, settings))
