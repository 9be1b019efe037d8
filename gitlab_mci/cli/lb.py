"""``gitlab-mci lb``: the self-managed global load balancer — plan, apply, destroy."""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import click

from gitlab_mci.errors import UserError


def _options(f: Any) -> Any:
    decorators = [
        click.option("--lb", "lb_name", envvar="MCI_LB_NAME", required=True,
                     help="Load balancer name; resources are named gmci-<kind>-<lb>… [env: MCI_LB_NAME]."),
        click.option("--context", "contexts", multiple=True, envvar="MCI_CONTEXTS",
                     help="Kubeconfig context of every production cluster; repeat or comma-separate "
                          "[env: MCI_CONTEXTS]."),
        click.option("--ingress", type=click.Path(dir_okay=False, path_type=Path), envvar="MCI_INGRESS_FILE",
                     help="Ingress or MultiClusterIngress manifest with the routing [env: MCI_INGRESS_FILE]."),
        click.option("--service", envvar="MCI_SERVICE", help="Instead of --ingress: the one backend Service "
                                                            "[env: MCI_SERVICE]."),
        click.option("--port", envvar="MCI_SERVICE_PORT", default="5000", show_default=True,
                     help="With --service: its port, number or name [env: MCI_SERVICE_PORT]."),
        click.option("--namespace", "-n", envvar="KUBE_NAMESPACE", default="default", show_default=True,
                     help="Namespace of the Services [env: KUBE_NAMESPACE]."),
        click.option("--project", envvar="GOOGLE_CLOUD_PROJECT", help="Google Cloud project "
                                                                      "[env: GOOGLE_CLOUD_PROJECT]."),
        click.option("--static-ip", envvar="MCI_STATIC_IP", help="Name of a global address to use (reused if it "
                     "exists, reserved if not; never deleted) [env: MCI_STATIC_IP]."),
        click.option("--scheme", envvar="MCI_SCHEME", default="EXTERNAL_MANAGED", show_default=True,
                     type=click.Choice(["EXTERNAL_MANAGED", "EXTERNAL"]),
                     help="Load balancing scheme [env: MCI_SCHEME]."),
        click.option("--health-check-path", envvar="MCI_HEALTH_CHECK_PATH",
                     help="Health check path (default: the pods' readiness probe path) "
                          "[env: MCI_HEALTH_CHECK_PATH]."),
        click.option("--timeout-sec", type=int, default=30, show_default=True, help="Backend timeout in seconds."),
        click.option("--balancing-mode", type=click.Choice(["UTILIZATION", "RATE"]), default="UTILIZATION",
                     show_default=True, help="Backend balancing mode."),
        click.option("--adopt", is_flag=True, help="Take over same-named resources gitlab-mci did not create."),
        click.option("--concurrency", type=int, default=64, show_default=True,
                     help="Compute operations run at once (named ports on every instance group are one level)."),
        click.option("--kubeconfig", type=click.Path(dir_okay=False, path_type=Path),
                     help="Kubeconfig file (default: KUBECONFIG)."),
        click.option("--output", "-o", type=click.Choice(["text", "json"]), default="text", show_default=True,
                     help="Output format."),
    ]
    for d in reversed(decorators):
        f = d(f)
    return f


def _prepare(kw: dict[str, Any]) -> tuple[Any, Any, Any]:
    """Validate every input, then discover: nothing is written before this returns."""
    from gitlab_mci import kube
    from gitlab_mci.gcp import Compute
    from gitlab_mci.ingress import from_service, load_ingress
    from gitlab_mci.lb import desired as desired_mod
    from gitlab_mci.lb.discovery import discover
    from gitlab_mci.lb.engine import ComputeApi
    from gitlab_mci.lb.names import check_lb_name
    from gitlab_mci.nodeport import parallel

    check_lb_name(kw["lb_name"])
    if kw["ingress"] and kw["service"]:
        raise UserError("give either --ingress or --service, not both")
    if kw["ingress"]:
        model = load_ingress(kw["ingress"])
    elif kw["service"]:
        port: int | str = int(kw["port"]) if str(kw["port"]).isdigit() else kw["port"]
        model = from_service(kw["service"], port, kw["lb_name"])
    else:
        raise UserError("no routing: pass --ingress FILE or --service NAME (or set MCI_INGRESS_FILE / MCI_SERVICE)")
    contexts = [c for v in kw["contexts"] for c in v.replace(" ", ",").split(",") if c]
    if not contexts:
        raise UserError("no clusters: pass --context for every production cluster (or set MCI_CONTEXTS)")
    if kw["kubeconfig"]:
        os.environ["KUBECONFIG"] = str(kw["kubeconfig"])
    compute = Compute.from_env(kw["project"])
    options = desired_mod.Options(lb=kw["lb_name"], project=compute.project, scheme=kw["scheme"],
                                  static_ip=kw["static_ip"], health_check_path=kw["health_check_path"],
                                  timeout_sec=kw["timeout_sec"], balancing_mode=kw["balancing_mode"])
    clusters = parallel(contexts, kube.connect)
    infos = discover(clusters, compute, kw["namespace"], sorted({b.service for b in model.backends()}))
    return desired_mod.build(model, options, infos), ComputeApi(compute), compute


@click.group()
def command() -> None:
    """The self-managed global external HTTP load balancer: plan, apply, destroy."""


@command.command("plan")
@_options
@click.option("--detailed-exitcode", is_flag=True, help="Exit 2 when there are changes, 0 when there are none.")
def plan_cmd(detailed_exitcode: bool, **kw: Any) -> None:
    """Show what `apply` would change, without changing anything."""
    from gitlab_mci.lb import engine, report

    desired, api, _ = _prepare(kw)
    changes = engine.diff(desired, engine.read_actual(api, desired), adopt=kw["adopt"])
    click.echo(json.dumps(report.as_json(changes), indent=2) if kw["output"] == "json" else report.render(changes))
    if detailed_exitcode and changes:
        sys.exit(2)


@command.command("apply")
@_options
@click.option("--dotenv", type=click.Path(dir_okay=False, path_type=Path),
              help="Write MCI_VIP and MCI_URL to this dotenv file (for GitLab's artifacts:reports:dotenv).")
def apply_cmd(dotenv: Path | None, **kw: Any) -> None:
    """Create or update the load balancer so it matches the inputs; no write when it already does."""
    from gitlab_mci.lb import engine, report

    desired, api, _ = _prepare(kw)
    actual = engine.read_actual(api, desired)
    changes = engine.diff(desired, actual, adopt=kw["adopt"])
    text = kw["output"] == "text"
    if text:
        click.echo(report.summary(changes))
    started = time.monotonic()

    def progress(event: str, change: engine.Change) -> None:
        if text and event != "start":
            click.echo(f"  {'✓' if event == 'done' else '✗'} {change.action} {change.collection}/{change.name} "
                       f"({time.monotonic() - started:.1f}s)")

    outcome = engine.execute(api, changes, concurrency=kw["concurrency"], progress=progress)
    address = next(r for r in desired.resources.values() if r.collection == "globalAddresses")
    known = actual.resources.get(address.key)
    if outcome.failed:
        vip = None
    elif known is not None and address.key not in outcome.done:
        vip = known.get("address")  # unchanged: no need to read it again
    else:
        vip = (api.get("globalAddresses", address.name) or {}).get("address")
    if kw["output"] == "json":
        click.echo(json.dumps({"changes": report.as_json(changes), "failed": outcome.failed, "vip": vip}, indent=2))
    if outcome.failed:
        first = next(iter(outcome.failed.items()))
        raise UserError(f"{len(outcome.failed)} change(s) failed, {len(outcome.skipped)} skipped; first: "
                        f"{first[0]}: {first[1]} (run apply again to continue)")
    if text:
        click.echo(f"load balancer {kw['lb_name']} ready at http://{vip}/ ({time.monotonic() - started:.1f}s)")
    if dotenv is not None and vip:
        dotenv.write_text(f"MCI_VIP={vip}\nMCI_URL=http://{vip}/\n")


@command.command("destroy")
@_options
@click.option("--release-ip", is_flag=True, help="Also delete the global IP address (kept by default).")
def destroy_cmd(release_ip: bool, **kw: Any) -> None:
    """Delete every resource gitlab-mci created for this load balancer, and only those."""
    from gitlab_mci.lb import engine, report

    desired, api, _ = _prepare(kw)
    changes = engine.destroy_changes(desired, engine.read_actual(api, desired), release_ip=release_ip)
    if kw["output"] == "text":
        click.echo(report.render(changes))
    outcome = engine.execute(api, changes, concurrency=kw["concurrency"])
    if outcome.failed:
        first = next(iter(outcome.failed.items()))
        raise UserError(f"{len(outcome.failed)} deletion(s) failed; first: {first[0]}: {first[1]}")
