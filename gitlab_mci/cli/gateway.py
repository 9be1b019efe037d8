"""``gitlab-mci gateway``: GKE multi-cluster Gateway — plan, apply, status, delete, weight, drain, undrain."""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import click

from gitlab_mci.cli.options import (
    FILE,
    adopt_option,
    detailed_exitcode_option,
    dotenv_option,
    features_options,
    fleet_contexts_option,
    fleet_where,
    https_redirect_option,
    kubeconfig_option,
    lb_option,
    namespace_option,
    no_wait_option,
    output_option,
    project_option,
    routing,
    ssl_certificate_option,
    stack,
    static_ip_option,
    timeout_option,
    timeout_sec_option,
    wait_option,
)
from gitlab_mci.errors import UserError

_where = fleet_where


_httproute_file_option = click.option(
    "--httproute-file", type=FILE, envvar="MCI_HTTPROUTE_FILE",
    help="Instead of --ingress: an HTTPRoute manifest whose rules (path and header matches, filters) route; its "
         "backendRefs to Services are split per cluster [env: MCI_HTTPROUTE_FILE].")


def _options(f: Any) -> Any:
    """Options of the commands that build the desired objects (plan, apply)."""
    decorators = [
        _httproute_file_option,
        click.option("--gateway-class", envvar="MCI_GATEWAY_CLASS", default="gke-l7-global-external-managed-mc",
                     show_default=True, help="A multi-cluster GatewayClass of the config cluster "
                                             "[env: MCI_GATEWAY_CLASS]."),
        click.option("--health-check-path", envvar="MCI_HEALTH_CHECK_PATH",
                     help="Health check path (a HealthCheckPolicy per cluster; default: GKE's) "
                          "[env: MCI_HEALTH_CHECK_PATH]."),
        timeout_sec_option,
        static_ip_option,
        ssl_certificate_option,
        https_redirect_option,
        adopt_option,
        output_option(["text", "json"]),
        features_options,
    ]
    return _where(routing(stack(decorators)(f)))


def _inputs(kw: dict[str, Any]) -> Any:
    from gitlab_mci.cli.hosted import inputs_kw
    from gitlab_mci.gateway.model import Inputs

    return Inputs(**inputs_kw(kw), gateway_class=kw["gateway_class"], httproute_file=kw["httproute_file"],
                  timeout_sec=kw["timeout_sec"])


def _prepare(kw: dict[str, Any]) -> Any:
    from gitlab_mci.gateway.prepare import prepare

    return prepare(_inputs(kw))


def _connect(kw: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
    """For status, weights and delete: (the config cluster, every --context cluster by context)."""
    from gitlab_mci import kube
    from gitlab_mci.fleet import parse_context, parse_contexts
    from gitlab_mci.gateway.model import check_name
    from gitlab_mci.hosted.model import check_namespace
    from gitlab_mci.nodeport import parallel

    check_name(kw["lb_name"], "--lb (the Gateway and HTTPRoute name)")
    check_namespace(kw["namespace"])
    if kw["kubeconfig"]:
        os.environ["KUBECONFIG"] = str(kw["kubeconfig"])
    specs = parse_contexts(kw["contexts"])
    if kw["config_context"]:
        config: str | None = parse_context(kw["config_context"]).context
    else:
        config = specs[0].context if specs else None
    names = list(dict.fromkeys([*(s.context for s in specs), *([config] if config else [])]))
    clusters = dict(zip(names, parallel(names, kube.connect), strict=True)) if names else {}
    return (clusters[config] if config else kube.connect(None)), clusters


@click.group()
def command() -> None:
    """GKE multi-cluster Gateway: plan, apply, status, delete, and weights between clusters.

    A Service <service>-<cluster> and its ServiceExport in every --context cluster, a Gateway and HTTPRoutes (--lb
    names them) in the fleet's config cluster: GKE's multi-cluster Gateway, where each cluster is a weighted
    backendRef. CONTEXT=LOCATION/NAME names a context's GKE cluster when the context name does not.
    """


def _echo_plan(prepared: Any, changes: list[Any], output: str) -> None:
    from gitlab_mci.gateway.engine import summary

    if output == "json":
        click.echo(json.dumps({"changes": [c.as_json() for c in changes],
                               "weights": {c.cluster: c.weight for c in prepared.model.clusters},
                               "desired": [{"context": d.context, **d.obj} for d in prepared.desired]}, indent=2))
        return
    serving = ", ".join(f"{c.context} ({c.cluster}, weight {c.weight})" for c in prepared.model.clusters)
    click.echo(f"config cluster {prepared.config.context}; serving from {serving}")
    for change in changes:
        click.echo(change.describe())
    click.echo(summary(changes))


@command.command("plan")
@_options
@detailed_exitcode_option
def plan_cmd(detailed_exitcode: bool, **kw: Any) -> None:
    """Check everything and show what `apply` would change, without changing anything."""
    from gitlab_mci.gateway.engine import diff

    prepared = _prepare(kw)
    changes = diff(prepared)
    _echo_plan(prepared, changes, kw["output"])
    if detailed_exitcode and changes:
        sys.exit(2)


@command.command("apply")
@_options
@timeout_option(900.0)
@no_wait_option
@dotenv_option
def apply_cmd(timeout: float, no_wait: bool, dotenv: Path | None, **kw: Any) -> None:
    """Create or update the exports, the Gateway and the HTTPRoutes, then wait until the Gateway is Programmed.

    Every check runs before the first write; a re-run with nothing to change writes nothing, and keeps the weights
    set by `gateway weight`/`drain`. --timeout bounds the wait for Accepted/Programmed and the address (GKE can
    take several minutes); --https-redirect needs --ssl-certificate.
    """
    from gitlab_mci.cli.hosted import publish
    from gitlab_mci.gateway.engine import diff, execute, summary, wait_ready

    started = time.monotonic()
    text = kw["output"] == "text"

    def say(message: str) -> None:
        if text:
            click.echo(f"  {message} ({time.monotonic() - started:.1f}s)", err=True)

    prepared = _prepare(kw)
    changes = diff(prepared)
    if text:
        click.echo(summary(changes))
    execute(prepared.clusters, changes, progress=(lambda m: say(f"✓ {m}")) if text else None)
    model = prepared.model
    address = None
    if not no_wait:
        say(f"waiting for Gateway {model.namespace}/{model.lb} to be Programmed (up to {timeout:g}s)")
        routes = [d.obj["metadata"]["name"] for d in prepared.desired if d.obj["kind"] == "HTTPRoute"]
        address = wait_ready(prepared.config, model.namespace, model.lb, routes, timeout=timeout,
                             progress=say if text else None)
    publish(kw["output"], changes, address, model.https_redirect, dotenv,
            ready=lambda url: f"Gateway {model.namespace}/{model.lb} ready at {url} "
                              f"({time.monotonic() - started:.1f}s)",
            not_waiting=f"Gateway {model.namespace}/{model.lb} applied; not waiting for it")


@command.command("export")
@stack([lb_option, fleet_contexts_option, namespace_option, project_option, kubeconfig_option])
@routing
@_httproute_file_option
@adopt_option
@output_option(["text", "json"])
def export_cmd(output: str, **kw: Any) -> None:
    """Export one cluster's app: the Service <service>-<cluster> and its ServiceExport, in the --context cluster
    (default: the kubeconfig's current context).

    For the CI job of each production environment, after its deploy: `apply`, run once afterwards over every
    cluster, finds them as it would write them (no write) and adds the Gateway and HTTPRoutes. The same checks as
    apply for that cluster (namespace, the app's Service, the serviceexports CRD); never deletes anything.
    """
    from gitlab_mci.gateway.engine import diff, execute, summary
    from gitlab_mci.gateway.model import DEFAULT_CLASS
    from gitlab_mci.gateway.prepare import prepare_export

    kw.update(config_context=None, static_ip=None, https_redirect=False, ssl_certificates=(), health_check_path=None,
              gateway_class=DEFAULT_CLASS, timeout_sec=None, features_file=None)
    prepared = prepare_export(_inputs(kw))
    changes = diff(prepared)
    execute(prepared.clusters, changes)
    if output == "json":
        click.echo(json.dumps({"changes": [c.as_json() for c in changes]}, indent=2))
        return
    for change in changes:
        click.echo(change.describe())
    click.echo(summary(changes))


@command.command("status")
@_where
@output_option(["text", "json"])
@wait_option
def status_cmd(output: str, wait: float, **kw: Any) -> None:
    """Address, conditions, per-cluster weights and HTTPRoute conditions of the Gateway.

    Healthy, for --wait: the Gateway is Accepted and Programmed with an address.
    """
    from gitlab_mci.gateway.engine import look, render_status, status

    cluster, _ = _connect(kw)
    state = look(lambda: status(cluster, kw["namespace"], kw["lb_name"]), lambda s: bool(s["address"]), wait)
    if state is None:
        raise UserError(f"Gateway {kw['namespace']}/{kw['lb_name']} not found in context {cluster.context!r}")
    click.echo(json.dumps(state, indent=2) if output == "json" else render_status(state))
    if wait and not state["address"]:
        sys.exit(3)


@command.command("delete")
@_where
@timeout_option(900.0)
@no_wait_option
def delete_cmd(timeout: float, no_wait: bool, **kw: Any) -> None:
    """Delete the HTTPRoutes and the Gateway (waiting for GKE's finalizer), then the exports and per-cluster Services.

    Only objects labelled for this load balancer are touched, in the config cluster, every --context cluster and
    every cluster the HTTPRoute records; the static IP and certificates are never deleted. Idempotent.
    """
    from gitlab_mci.gateway.engine import delete

    started = time.monotonic()
    config, clusters = _connect(kw)
    clusters.update(_route_clusters(config, kw["namespace"], kw["lb_name"], clusters))
    changes = delete(clusters, config, kw["namespace"], kw["lb_name"], timeout=timeout, wait=not no_wait,
                     progress=lambda m: click.echo(f"  ✓ {m} ({time.monotonic() - started:.1f}s)", err=True))
    if not changes:
        click.echo(f"nothing to delete: no objects of load balancer {kw['lb_name']} in namespace {kw['namespace']}")
    else:
        click.echo(f"load balancer {kw['lb_name']} deleted ({len(changes)} object(s), "
                   f"{time.monotonic() - started:.1f}s)")


def _route_clusters(config: Any, namespace: str, lb: str, known: dict[str, Any]) -> dict[str, Any]:
    """The serving clusters the HTTPRoute records (context by cluster), so that a delete given only the config
    cluster still removes the exports in every cluster."""
    from gitlab_mci import kube
    from gitlab_mci.gateway.prepare import read, recorded_contexts

    recorded = recorded_contexts(read(config, "HTTPRoute", namespace, lb), lb)
    return {context: kube.connect(context) for context in recorded if context not in known
            and context != config.context}


def _reweigh(kw: dict[str, Any], output: str, wanted: dict[str, int], **how: str) -> None:
    """weight, drain, undrain: one write of the HTTPRoute's weights, then the shares."""
    from gitlab_mci.gateway.engine import set_weights

    config, _ = _connect(kw)
    new, change = set_weights(config, kw["namespace"], kw["lb_name"], wanted, **how)
    _weights_out(output, kw["lb_name"], new, change)


def _weights_out(output: str, lb: str, weights: dict[str, int], change: Any) -> None:
    if output == "json":
        click.echo(json.dumps({"lb": lb, "weights": weights, "changed": change is not None}, indent=2))
        return
    total = sum(weights.values()) or 1
    shares = ", ".join(f"{c}={w} ({100 * w / total:.0f} %)" for c, w in sorted(weights.items()))
    click.echo(f"{lb}: {shares}" + ("" if change is not None else " (no change)"))


@command.command("weight")
@click.argument("weights", nargs=-1, required=True, metavar="CLUSTER=WEIGHT...")
@_where
@output_option(["text", "json"])
def weight_cmd(weights: tuple[str, ...], output: str, **kw: Any) -> None:
    """Set the share of new requests each cluster gets (whole numbers 0..1000, relative), e.g. prod1=9 prod2=1.

    A cluster is its GKE cluster name or its --context; clusters not named keep their weight. The weights may not
    all be 0. One write: the HTTPRoute's weighted backendRefs; `apply` keeps them.
    """
    from gitlab_mci.gateway.model import parse_weights

    _reweigh(kw, output, parse_weights(weights))


@command.command("drain")
@click.argument("cluster")
@_where
@output_option(["text", "json"])
def drain_cmd(cluster: str, output: str, **kw: Any) -> None:
    """Send no new request to CLUSTER (weight 0; its weight is remembered for undrain); refused for the last one."""
    _reweigh(kw, output, {}, drain=cluster)


@command.command("undrain")
@click.argument("cluster")
@_where
@output_option(["text", "json"])
def undrain_cmd(cluster: str, output: str, **kw: Any) -> None:
    """Give CLUSTER its weight from before the drain again (1 when none was recorded)."""
    _reweigh(kw, output, {}, undrain=cluster)
