"""``gitlab-mci hosted``: GKE-hosted Multi Cluster Ingress — plan, apply, status, delete."""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import click

from gitlab_mci.cli.options import routing, stack
from gitlab_mci.errors import UserError


def _where(f: Any) -> Any:
    """Options every hosted command takes: which load balancer, in which config cluster and namespace."""
    decorators = [
        click.option("--lb", "lb_name", envvar="MCI_LB_NAME", required=True,
                     help="Load balancer name: the MultiClusterIngress (and BackendConfig/FrontendConfig) name; "
                          "must not start with mci- [env: MCI_LB_NAME]."),
        click.option("--context", "contexts", multiple=True, envvar="MCI_CONTEXTS",
                     help="Kubeconfig context of every cluster to serve from, as CONTEXT or CONTEXT=LOCATION/NAME "
                          "(the fleet link); repeat or comma-separate [env: MCI_CONTEXTS]."),
        click.option("--config-context", envvar="MCI_CONFIG_CONTEXT",
                     help="Context of the fleet's config cluster, where the objects are written (default: the "
                          "first --context) [env: MCI_CONFIG_CONTEXT]."),
        click.option("--namespace", "-n", envvar="KUBE_NAMESPACE", default="default", show_default=True,
                     help="Namespace of the app; the objects go to the same namespace of the config cluster "
                          "[env: KUBE_NAMESPACE]."),
        click.option("--project", envvar="GOOGLE_CLOUD_PROJECT",
                     help="Google Cloud project of the fleet [env: GOOGLE_CLOUD_PROJECT]."),
        click.option("--kubeconfig", type=click.Path(dir_okay=False, path_type=Path),
                     help="Kubeconfig file (default: KUBECONFIG)."),
    ]
    return stack(decorators)(f)


def _options(f: Any) -> Any:
    """Options of the commands that build the desired objects (plan, apply)."""
    decorators = [
        click.option("--static-ip", envvar="MCI_STATIC_IP",
                     help="Name of a reserved global address; its IP goes into networking.gke.io/static-ip "
                          "[env: MCI_STATIC_IP]."),
        click.option("--ssl-certificate", "ssl_certificates", multiple=True, envvar="MCI_SSL_CERTIFICATES",
                     help="Name of an existing (pre-shared) SSL certificate; repeat or comma-separate, up to 15 "
                          "[env: MCI_SSL_CERTIFICATES]."),
        click.option("--https-redirect", is_flag=True, envvar="MCI_HTTPS_REDIRECT",
                     help="Redirect HTTP to HTTPS (a FrontendConfig); needs --ssl-certificate "
                          "[env: MCI_HTTPS_REDIRECT]."),
        click.option("--health-check-path", envvar="MCI_HEALTH_CHECK_PATH",
                     help="Health check path (a BackendConfig); default: GKE's [env: MCI_HEALTH_CHECK_PATH]."),
        click.option("--adopt", is_flag=True, help="Take over same-named objects gitlab-mci did not create."),
        click.option("--output", "-o", type=click.Choice(["text", "json"]), default="text", show_default=True,
                     help="Output format."),
    ]
    return _where(routing(stack(decorators)(f)))


def _prepare(kw: dict[str, Any], text: bool) -> Any:
    from gitlab_mci.hosted.model import Inputs
    from gitlab_mci.hosted.prepare import prepare

    return prepare(Inputs(
        lb=kw["lb_name"], contexts=kw["contexts"], config_context=kw["config_context"], ingress=kw["ingress"],
        service=kw["service"], port=kw["port"], namespace=kw["namespace"], project=kw["project"],
        static_ip=kw["static_ip"], https_redirect=kw["https_redirect"], ssl_certificates=kw["ssl_certificates"],
        health_check_path=kw["health_check_path"], kubeconfig=kw["kubeconfig"], adopt=kw["adopt"]))


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
    """GKE-hosted Multi Cluster Ingress: MultiClusterService + MultiClusterIngress in the fleet's config cluster."""


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
@click.option("--detailed-exitcode", is_flag=True, help="Exit 2 when there are changes, 0 when there are none.")
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
@click.option("--timeout", type=float, default=900.0, show_default=True, envvar="MCI_TIMEOUT",
              help="Seconds to wait for the VIP [env: MCI_TIMEOUT].")
@click.option("--no-wait", is_flag=True, help="Do not wait for the VIP.")
@click.option("--dotenv", type=click.Path(dir_okay=False, path_type=Path),
              help="Write MCI_VIP and MCI_URL to this dotenv file (for GitLab's artifacts:reports:dotenv).")
def apply_cmd(timeout: float, no_wait: bool, dotenv: Path | None, **kw: Any) -> None:
    """Create or update the MultiClusterService(s), MultiClusterIngress and configs, then wait for the VIP.

    Every check runs before the first write; a re-run with nothing to change writes nothing.
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
    url = (f"https://{vip}/" if model.https_redirect else f"http://{vip}/") if vip else None
    if kw["output"] == "json":
        click.echo(json.dumps({"changes": [c.as_json() for c in changes], "vip": vip, "url": url}, indent=2))
    elif vip:
        click.echo(f"MultiClusterIngress {model.namespace}/{model.lb} ready at {url} (VIP {vip}, "
                   f"{time.monotonic() - started:.1f}s)")
    else:
        click.echo(f"MultiClusterIngress {model.namespace}/{model.lb} applied; not waiting for the VIP")
    if dotenv is not None and vip:
        dotenv.write_text(f"MCI_VIP={vip}\nMCI_URL={url}\n")


@command.command("status")
@_where
@click.option("--output", "-o", "--format", type=click.Choice(["text", "json", "markdown"]), default="text",
              show_default=True, help="Output format; markdown adds a Mermaid diagram of the cloud resources.")
@click.option("--wait", type=float, default=0.0, show_default=True,
              help="Seconds to wait for a VIP; exit 3 if there is none by then.")
def status_cmd(output: str, wait: float, **kw: Any) -> None:
    """VIP, cloud resources (status.CloudResources) and cluster selection of the MultiClusterIngress."""
    from gitlab_mci.hosted.engine import backoff, render_markdown, render_status, status

    cluster = _config_cluster(kw)
    started = time.monotonic()
    while True:
        state = status(cluster, kw["namespace"], kw["lb_name"])
        if state is None or state["vip"] or time.monotonic() >= started + wait:
            break
        time.sleep(min(backoff(time.monotonic() - started, 2.0), max(0.05, started + wait - time.monotonic())))
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
@click.option("--timeout", type=float, default=900.0, show_default=True, envvar="MCI_TIMEOUT",
              help="Seconds to wait for each object's finalizers [env: MCI_TIMEOUT].")
@click.option("--no-wait", is_flag=True, help="Do not wait for the finalizers (GKE's cleanup) to finish.")
def delete_cmd(timeout: float, no_wait: bool, **kw: Any) -> None:
    """Delete the MultiClusterIngress, then its MultiClusterServices and configs, waiting until each is gone.

    Only objects labelled for this load balancer are touched; the static IP and certificates are never deleted.
    Idempotent.
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
