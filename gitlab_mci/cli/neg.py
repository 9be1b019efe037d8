"""``gitlab-mci neg``: the app's Service exposed as standalone network endpoint groups, for `lb --backends neg`."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

from gitlab_mci.cli.nodeport import (
    _contexts,
    _release,
    _use_kubeconfig,
    port_option,
    report_rows,
    service_option,
)
from gitlab_mci.cli.options import (
    FILE,
    context_option,
    contexts_option,
    kubeconfig_option,
    lb_option,
    namespace_option,
    output_option,
    release_option,
    timeout_option,
)

if TYPE_CHECKING:
    from gitlab_mci.lb.names import Namer
    from gitlab_mci.nodeport import ServiceRef

F = TypeVar("F", bound=Callable[..., Any])


def _service_options(fn: F) -> F:
    """The options both commands find the load balancer's Service with (in this order in --help)."""
    for option in reversed((lb_option, release_option, namespace_option, service_option, port_option,
                            kubeconfig_option)):
        fn = option(fn)
    return fn


def _service(lb_name: str, release: str | None, namespace: str, service: str | None, port: str | None,
             kubeconfig: Path | None) -> tuple[Namer, ServiceRef]:
    """The load balancer's names and the Service the options point at; the kubeconfig given, if any, in effect."""
    from gitlab_mci.lb.names import Namer
    from gitlab_mci.nodeport import ServiceRef

    ref = ServiceRef(namespace, _release(release, service), service, port)
    _use_kubeconfig(kubeconfig)
    return Namer(lb_name), ref


@click.group()
def command() -> None:
    """Expose the app's Service as network endpoint groups (container-native backends), or verify it.

    With `lb apply --backends neg` the load balancer sends traffic straight to the pods, through zonal network
    endpoint groups (NEGs) that GKE's NEG controller keeps in sync with the ready pods. They exist once the Service
    carries the `cloud.google.com/neg` annotation naming them: `neg expose` writes it in each deploy job's cluster,
    instead of `nodeport pin`. Clusters must be VPC-native.
    """


@command.command("expose")
@context_option
@_service_options
@timeout_option(300.0)
@click.option("--dotenv", type=FILE, default=None,
              help="Also append MCI_NEG_NAME and MCI_NEG_ZONES_<CONTEXT> to this dotenv file (for GitLab's "
                   "artifacts:reports:dotenv).")
@output_option(["text", "json"])
def expose_cmd(context: str | None, lb_name: str, release: str | None, namespace: str, service: str | None,
               port: str | None, kubeconfig: Path | None, timeout: float, dotenv: Path | None, output: str) -> None:
    """Annotate the app's Service in one cluster so GKE makes our NEG for its port, and wait until it has.

    The Service gets `cloud.google.com/neg` with `exposed_ports` naming the load balancer's NEG for the serving port
    (`gmci-neg-<lb>-<port>`), merged into an annotation it already has; its other annotations and its type stay as
    they are (ClusterIP needs no node port). No write when it already carries it. --timeout bounds the wait until
    GKE's NEG controller reports the NEG and its zones in `cloud.google.com/neg-status` (exit 3 when it does not).
    """
    from gitlab_mci import kube, neg

    namer, ref = _service(lb_name, release, namespace, service, port, kubeconfig)
    cluster = kube.connect(context)
    row = neg.expose(cluster, ref, namer, timeout=timeout,
                     progress=lambda line: click.echo(f"gitlab-mci: {line}", err=True))
    if dotenv is not None:
        with dotenv.open("a") as fh:
            fh.writelines(line + "\n" for line in neg.dotenv_lines(row))
    if output == "json":
        click.echo(json.dumps(asdict(row), indent=2))
        return
    verb = "is exposed" if row.status == "ok" else "is now exposed"
    click.echo(f"{row.cluster}: Service {row.service} port {row.port} {verb} as NEG {row.neg} in "
               f"{', '.join(row.zones)}")


@command.command("verify")
@contexts_option
@_service_options
@output_option(["text", "json"])
def verify_cmd(contexts: tuple[str, ...], lb_name: str, release: str | None, namespace: str, service: str | None,
               port: str | None, kubeconfig: Path | None, output: str) -> None:
    """Check that the Service is exposed as the load balancer's NEG in every cluster; exit 1 when one is not.

    A Service is `ok` when it asks for the NEG and GKE reports it in at least one zone, `pending` when GKE has not
    yet, `not-exposed` without the annotation. Without --context, every context of the kubeconfig is checked.
    """
    from gitlab_mci import kube, neg, nodeport

    namer, ref = _service(lb_name, release, namespace, service, port, kubeconfig)
    names = _contexts(contexts) or kube.list_contexts()
    rows = neg.verify(nodeport.parallel(names, kube.connect), ref, namer)
    report_rows(rows, output, neg.render_table(rows), "exposed")
