"""``gitlab-mci nodeport``: one node port for the app's Service in every production cluster."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING

import click

from gitlab_mci.cli.options import (
    context_option,
    contexts_option,
    kubeconfig_option,
    namespace_option,
    output_option,
    release_option,
    timeout_option,
)
from gitlab_mci.errors import UserError
from gitlab_mci.helm import DEFAULT_NODE_PORT, NODE_PORT_MAX, NODE_PORT_MIN, check_node_port, parse_port

if TYPE_CHECKING:
    from gitlab_mci import neg, nodeport


def _node_port(value: str) -> int | None:
    """``None`` for ``auto``; else a port in the NodePort range."""
    if value.strip().lower() == "auto":
        return None
    return check_node_port(parse_port(value, "--node-port / MCI_NODE_PORT"), "--node-port / MCI_NODE_PORT")


def _contexts(values: tuple[str, ...]) -> list[str]:
    return [c for v in values for c in v.replace(" ", ",").split(",") if c]


def _release(release: str | None, service: str | None) -> str | None:
    if not release and not service:
        raise UserError("no release: pass --release or --service, or set HELM_RELEASE_NAME or CI_ENVIRONMENT_SLUG")
    return release


service_option = click.option("--service", envvar="MCI_SERVICE", default=None,
                              help="Service name, instead of finding it from the release [env: MCI_SERVICE].")
port_option = click.option(
    "--port", envvar="MCI_SERVICE_PORT_NAME", default=None,
    help="Service port (name or number); default: the port named `web`, else the only port "
         "[env: MCI_SERVICE_PORT_NAME].")


def _use_kubeconfig(path: Path | None) -> None:
    if path is not None:
        import os

        os.environ["KUBECONFIG"] = str(path)


@click.group()
def command() -> None:
    """Pin, verify or choose the node port of the app's Service across clusters."""


@command.command("pin")
@context_option
@release_option
@namespace_option
@service_option
@port_option
@click.option("--node-port", envvar="MCI_NODE_PORT", default=str(DEFAULT_NODE_PORT), show_default=True,
              metavar="PORT|auto",
              help=f"The node port to pin ({NODE_PORT_MIN}-{NODE_PORT_MAX}), the same as `helm values` and `helm "
                   "extra-args` use; `auto`: the one the Service already uses in every cluster of --auto-contexts "
                   "if no other Service holds it there, else the lowest port free in all of them "
                   "[env: MCI_NODE_PORT].")
@click.option("--auto-contexts", "auto_contexts", multiple=True, envvar="MCI_CONTEXTS", metavar="CONTEXTS",
              help="With --node-port auto: every production cluster's context, so that each pin job chooses the "
                   "same port; repeat or comma-separate; default: every context of the kubeconfig "
                   "[env: MCI_CONTEXTS].")
@kubeconfig_option
@timeout_option(60.0)
def pin_cmd(context: str | None, release: str | None, namespace: str, service: str | None, port: str | None,
            node_port: str, auto_contexts: tuple[str, ...], kubeconfig: Path | None, timeout: float) -> None:
    """Make the app's Service in one cluster use the pinned node port (no write when it already does).

    --timeout bounds the wait until the Service reports the node port.
    """
    from gitlab_mci import kube, nodeport

    wanted = _node_port(node_port)
    ref = nodeport.ServiceRef(namespace, _release(release, service), service, port)
    _use_kubeconfig(kubeconfig)
    cluster = kube.connect(context)
    if wanted is None:
        names = _contexts(auto_contexts) or kube.list_contexts()
        others = nodeport.parallel([n for n in names if n != cluster.context], kube.connect)
        wanted, why = nodeport.choose_auto([cluster, *others], ref)
        click.echo(f"node port auto: {wanted}, {why}", err=True)
    row = nodeport.pin(cluster, ref, wanted, timeout=timeout)
    verb = "already uses" if row.status == "ok" else "now uses"
    click.echo(f"{row.cluster}: Service {row.service} port {row.port} {verb} node port {row.node_port}")


@command.command("verify")
@contexts_option
@release_option
@namespace_option
@service_option
@port_option
@click.option("--node-port", envvar="MCI_NODE_PORT", default=None, metavar="PORT|auto",
              help=f"The node port every Service must use ({NODE_PORT_MIN}-{NODE_PORT_MAX}), or `auto`: any, as long "
                   f"as each Service has the same in every cluster. Default: {DEFAULT_NODE_PORT} (as `helm values` "
                   "pins), or `auto` with --ingress (its Services cannot share a node port) [env: MCI_NODE_PORT].")
@click.option("--ingress", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="Check every Service this Ingress routes to (default backend and all path backends).")
@kubeconfig_option
@output_option(["text", "json"])
def verify_cmd(contexts: tuple[str, ...], release: str | None, namespace: str, service: str | None,
               port: str | None, node_port: str | None, ingress: Path | None, kubeconfig: Path | None,
               output: str) -> None:
    """Check that the Service has the pinned node port in every cluster; exit 1 when any differs or is missing.

    Without --context, every context of the kubeconfig is checked.
    """
    from gitlab_mci import kube, nodeport

    if node_port is None:
        node_port = "auto" if ingress is not None else str(DEFAULT_NODE_PORT)
    wanted = _node_port(node_port)
    if ingress is not None:
        refs = [nodeport.ServiceRef(namespace, None, name, p) for name, p in _ingress_backends(ingress)]
    else:
        refs = [nodeport.ServiceRef(namespace, _release(release, service), service, port)]
    _use_kubeconfig(kubeconfig)
    names = _contexts(contexts) or kube.list_contexts()
    clusters = nodeport.parallel(names, kube.connect)
    rows = nodeport.verify(clusters, refs, wanted)
    report_rows(rows, output, nodeport.render_table(rows), "pinned")


def report_rows(rows: Sequence[nodeport.Row] | Sequence[neg.Row], output: str, table: str, state: str) -> None:
    """Print a verify report (``table`` as text, else the rows as JSON); exit 1 naming each Service not ``state``."""
    if output == "json":
        click.echo(json.dumps([asdict(r) for r in rows], indent=2))
    else:
        click.echo(table)
    bad = [r for r in rows if not r.ok]
    if bad:
        raise UserError(f"{len(bad)} of {len(rows)} Service(s) are not {state}: "
                        + ", ".join(f"{r.cluster} {r.service} ({r.status})" for r in bad))


@command.command("choose")
@contexts_option
@kubeconfig_option
def choose_cmd(contexts: tuple[str, ...], kubeconfig: Path | None) -> None:
    """Print the lowest node port that is free in every given cluster (default: every context of the kubeconfig)."""
    from gitlab_mci import kube, nodeport

    _use_kubeconfig(kubeconfig)
    names = _contexts(contexts) or kube.list_contexts()
    click.echo(nodeport.choose_free(nodeport.parallel(names, kube.connect)))


def _ingress_backends(path: Path) -> list[tuple[str, str | None]]:
    """(service, port) pairs an Ingress routes to, via the shared Ingress model."""
    from gitlab_mci.ingress import load_ingress

    model = load_ingress(path)
    return [(b.service, str(b.port)) for b in model.backends()]
