"""``gitlab-mci hosted``: GKE-hosted Multi Cluster Ingress — plan, apply, status, delete."""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import click

from gitlab_mci.cli.options import (
    adopt_option,
    detailed_exitcode_option,
    dotenv_option,
    features_options,
    fleet_where,
    https_redirect_option,
    no_wait_option,
    output_option,
    routing,
    ssl_certificate_option,
    stack,
    static_ip_option,
    timeout_option,
    wait_option,
)
from gitlab_mci.errors import UserError

_where = fleet_where


def _options(f: Any) -> Any:
    """Options of the commands that build the desired objects (plan, apply)."""
    decorators: list[Any] = [
        static_ip_option,
        ssl_certificate_option,
        https_redirect_option,
        click.option("--health-check-path", envvar="MCI_HEALTH_CHECK_PATH",
                     help="Health check path (a BackendConfig; default: GKE's) [env: MCI_HEALTH_CHECK_PATH]."),
        features_options,
        adopt_option,
        output_option(["text", "json"]),
    ]
    return _where(routing(stack(decorators)(f)))


def inputs_kw(kw: dict[str, Any]) -> dict[str, Any]:
    """The fields of :class:`gitlab_mci.hosted.model.Inputs` from a plan/apply command's options (the gateway
    commands' Inputs add their own)."""
    from gitlab_mci.features.sources import Flags

    return dict(
        lb=kw["lb_name"], contexts=kw["contexts"], config_context=kw["config_context"], ingress=kw["ingress"],
        service=kw["service"], port=kw["port"], namespace=kw["namespace"], project=kw["project"],
        static_ip=kw["static_ip"], https_redirect=kw["https_redirect"], ssl_certificates=kw["ssl_certificates"],
        health_check_path=kw["health_check_path"], kubeconfig=kw["kubeconfig"], adopt=kw["adopt"],
        feature_flags=Flags.from_kw(kw), features_file=kw["features_file"])


def _prepare(kw: dict[str, Any], text: bool) -> Any:
    from gitlab_mci.hosted.model import Inputs
    from gitlab_mci.hosted.prepare import prepare

    return prepare(Inputs(**inputs_kw(kw)))


def _config_cluster(kw: dict[str, Any]) -> Any:
    """For status and delete: the config cluster (--config-context, else the first --context, else current)."""
    from gitlab_mci import kube
    from gitlab_mci.fleet import parse_context, parse_contexts
    from gitlab_mci.hosted.model import check_namespace, check_object_name

    check_object_name(kw["lb_name"], "--lb (the MultiClusterIngress name)")
    check_namespace(kw["namespace"])
    if kw["kubeconfig"]:
        os.environ["KUBECONFIG"] = str(kw["kubeconfig"])
    if kw["config_context"]:
        context: str | None = parse_context(kw["config_context"]).context
    else:
        specs = parse_contexts(kw["contexts"])
        context = specs[0].context if specs else None
    return kube.connect(context)


@click.group()
def command() -> None:
    """GKE-hosted Multi Cluster Ingress: plan, apply, status, delete.

    MultiClusterService + MultiClusterIngress in the fleet's config cluster. --lb names the MultiClusterIngress
    (and its BackendConfig/FrontendConfig); it must not start with mci-. --context lists the clusters to serve from
    (none: every fleet member); CONTEXT=LOCATION/NAME names a context's GKE cluster when the context name does not.
    The objects go to --namespace of the config cluster.
    """


def _where_line(prepared: Any) -> str:
    links = prepared.model.links
    serving = ", ".join(links) if links else f"every fleet member ({', '.join(prepared.members)})"
    return f"config cluster {prepared.config.context}; serving from {serving}"


def _echo_plan(prepared: Any, changes: list[Any], output: str) -> None:
    from gitlab_mci.hosted.engine import summary

    if output == "json":
        click.echo(json.dumps({"changes": [c.as_json() for c in changes],
                               "clusters": prepared.model.links or "all fleet members",
                               "desired": prepared.desired}, indent=2))
        return
    click.echo(_where_line(prepared))
    for change in changes:
        click.echo(change.describe())
    click.echo(summary(changes))


@command.command("plan")
@_options
@detailed_exitcode_option
def plan_cmd(detailed_exitcode: bool, **kw: Any) -> None:
    """Check everything and show what `apply` would change, without changing anything."""
    from gitlab_mci.hosted.engine import diff

    prepared = _prepare(kw, kw["output"] == "text")
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
    """Create or update the MultiClusterService(s), MultiClusterIngress and configs, then wait for the VIP.

    Every check runs before the first write; a re-run with nothing to change writes nothing. --timeout bounds the
    wait for the VIP (GKE can take about 10 minutes); --https-redirect needs --ssl-certificate.
    """
    from gitlab_mci.hosted.engine import diff, execute, summary, wait_for_vip
    from gitlab_mci.progress import section

    started = time.monotonic()
    text = kw["output"] == "text"

    def say(message: str) -> None:
        if text:
            click.echo(f"  {message} ({time.monotonic() - started:.1f}s)")

    with section("mci_hosted_check", f"gitlab-mci: checking clusters, fleet and project for {kw['lb_name']}",
                 collapsed=True, enabled=text):
        prepared = _prepare(kw, text)
        changes = diff(prepared)
        if text:
            click.echo(f"  {_where_line(prepared)}")
    if text:
        click.echo(summary(changes))
    model = prepared.model
    with section("mci_hosted_apply", f"gitlab-mci: applying {len(changes)} change(s)", enabled=text):
        execute(prepared.config, changes, progress=(lambda m: say(f"✓ {m}")) if text else None)
        vip = None
        if not no_wait:
            say(f"waiting for the VIP of MultiClusterIngress {model.namespace}/{model.lb} (up to {timeout:g}s)")
            mci = wait_for_vip(prepared.config, model.namespace, model.lb, timeout=timeout,
                               progress=say if text else None)
            vip = mci["status"]["VIP"]
    publish(kw["output"], changes, vip, model.https_redirect, dotenv,
            ready=lambda url: f"MultiClusterIngress {model.namespace}/{model.lb} ready at {url} (VIP {vip}, "
                              f"{time.monotonic() - started:.1f}s)",
            not_waiting=f"MultiClusterIngress {model.namespace}/{model.lb} applied; not waiting for the VIP")


def publish(output: str, changes: list[Any], address: str | None, https: bool, dotenv: Path | None, *,
            ready: Any, not_waiting: str) -> None:
    """What `apply` prints once done (``ready(url)`` or ``not_waiting``; JSON with -o json), and the dotenv file."""
    url = (f"https://{address}/" if https else f"http://{address}/") if address else None
    if output == "json":
        click.echo(json.dumps({"changes": [c.as_json() for c in changes], "vip": address, "url": url}, indent=2))
    elif address:
        click.echo(ready(url))
    else:
        click.echo(not_waiting)
    if dotenv is not None and address:
        dotenv.write_text(f"MCI_VIP={address}\nMCI_URL={url}\n")


@command.command("status")
@_where
@output_option(["text", "json", "markdown"])
@wait_option
def status_cmd(output: str, wait: float, **kw: Any) -> None:
    """VIP, cloud resources (status.CloudResources) and cluster selection of the MultiClusterIngress.

    Healthy, for --wait: the MultiClusterIngress has a VIP. `-o markdown` adds a Mermaid diagram of the cloud
    resources.
    """
    from gitlab_mci.hosted.engine import look, render_markdown, render_status, status

    cluster = _config_cluster(kw)
    state = look(lambda: status(cluster, kw["namespace"], kw["lb_name"]), lambda s: bool(s["vip"]), wait)
    if state is None:
        raise UserError(f"MultiClusterIngress {kw['namespace']}/{kw['lb_name']} not found in context "
                        f"{cluster.context!r}")
    if output == "json":
        click.echo(json.dumps(state, indent=2))
    else:
        click.echo(render_markdown(state) if output == "markdown" else render_status(state), nl=output == "text")
    if wait and not state["vip"]:
        sys.exit(3)


@command.command("delete")
@_where
@timeout_option(900.0)
@no_wait_option
def delete_cmd(timeout: float, no_wait: bool, **kw: Any) -> None:
    """Delete the MultiClusterIngress, then its MultiClusterServices and configs, waiting until each is gone.

    Only objects labelled for this load balancer are touched; the static IP and certificates are never deleted.
    Idempotent. --timeout bounds the wait for each object's finalizers (GKE's cleanup); --no-wait skips it.
    """
    from gitlab_mci.hosted.engine import delete

    started = time.monotonic()
    cluster = _config_cluster(kw)
    changes = delete(cluster, kw["namespace"], kw["lb_name"], timeout=timeout, wait=not no_wait,
                     progress=lambda m: click.echo(f"  ✓ {m} ({time.monotonic() - started:.1f}s)"))
    if not changes:
        click.echo(f"nothing to delete: no objects of load balancer {kw['lb_name']} in namespace {kw['namespace']}")
    else:
        click.echo(f"load balancer {kw['lb_name']} deleted ({len(changes)} object(s), "
                   f"{time.monotonic() - started:.1f}s)")
