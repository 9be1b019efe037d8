"""``gitlab-mci lb``: the self-managed global load balancer — plan, apply, destroy."""

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
    backends_option,
    contexts_option,
    detailed_exitcode_option,
    dotenv_option,
    dry_run_option,
    features_options,
    https_redirect_option,
    kubeconfig_option,
    lb_option,
    namespace_option,
    output_option,
    project_option,
    release_ip_option,
    routing,
    ssl_certificate_option,
    stack,
    static_ip_option,
    timeout_option,
    timeout_sec_option,
    wait_option,
    weight_option,
)
from gitlab_mci.errors import UserError

# Options lb plan/apply and lb takeover share: defined once so they read the same in both.
_scheme_option = click.option(
    "--scheme", envvar="MCI_SCHEME", default="EXTERNAL_MANAGED", show_default=True,
    type=click.Choice(["EXTERNAL_MANAGED", "EXTERNAL"]),
    help="Load balancing scheme: global external Application LB, or classic [env: MCI_SCHEME].")
_backend_tuning = [
    click.option("--health-check-path", envvar="MCI_HEALTH_CHECK_PATH",
                 help="Health check path (default: the pods' readiness probe path, which must agree across "
                      "clusters) [env: MCI_HEALTH_CHECK_PATH]."),
    click.option("--check-interval-sec", type=int, default=5, show_default=True,
                 help="Seconds between health checks (also their timeout)."),
    click.option("--unhealthy-threshold", type=int, default=2, show_default=True,
                 help="Failed health checks before a backend is taken out of rotation."),
    timeout_sec_option,
]
_balancing_mode_option = click.option(
    "--balancing-mode", type=click.Choice(["UTILIZATION", "RATE", "CONNECTION"]), default=None,
    help="Backend balancing mode (default: UTILIZATION with instance groups, RATE with NEGs; CONNECTION: NEGs only).")


def _common(f: Any) -> Any:
    """Options every lb command takes: which load balancer, where."""
    return stack([lb_option, contexts_option, namespace_option, project_option, static_ip_option,
                  kubeconfig_option])(f)


def _options(f: Any) -> Any:
    """Options of the commands that build the desired state (plan, apply, destroy)."""
    decorators: list[Any] = [
        _scheme_option,
        click.option("--http/--no-http", "http", default=None, envvar="MCI_HTTP",
                     help="Serve HTTP on port 80 (default: on, unless the Ingress has "
                          "kubernetes.io/ingress.allow-http: \"false\") [env: MCI_HTTP]."),
        https_redirect_option,
        ssl_certificate_option,
        click.option("--certificate-file", type=FILE, envvar="MCI_CERTIFICATE_FILE",
                     help="PEM certificate chain of a self-managed certificate [env: MCI_CERTIFICATE_FILE]."),
        click.option("--key-file", type=FILE, envvar="MCI_KEY_FILE",
                     help="PEM private key of --certificate-file; never printed [env: MCI_KEY_FILE]."),
        click.option("--tls-secret", "tls_secrets", multiple=True, envvar="MCI_TLS_SECRETS",
                     help="kubernetes.io/tls Secret (in --namespace of the first --context) to serve as a "
                          "self-managed certificate; the Ingress's spec.tls secrets are added [env: MCI_TLS_SECRETS]."),
        click.option("--managed-domain", "managed_domains", multiple=True, envvar="MCI_MANAGED_DOMAINS",
                     help="Domain of a Google-managed certificate; repeat or comma-separate "
                          "[env: MCI_MANAGED_DOMAINS]."),
        *_backend_tuning,
        backends_option,
        _balancing_mode_option,
        timeout_option(300.0),
        weight_option,
        features_options,
        adopt_option,
        click.option("--concurrency", type=int, default=64, show_default=True,
                     help="Compute operations run at once (named ports on every instance group are one level)."),
        output_option(["text", "json"]),
    ]
    return _common(routing(stack(decorators)(f)))


def _prepare(kw: dict[str, Any]) -> Any:
    """Validate every input, then discover: nothing is written before this returns."""
    from gitlab_mci.features.sources import Flags
    from gitlab_mci.lb.inputs import Inputs, prepare, split_contexts
    from gitlab_mci.lb.traffic import parse_weights

    if kw["concurrency"] < 1:
        raise UserError(f"--concurrency {kw['concurrency']}: must be at least 1")
    # Checked offline, before any cloud call; kept for settle() once Compute has been read.
    kw["parsed_weights"] = parse_weights(kw["weights"], split_contexts(kw["contexts"]))
    return prepare(Inputs(
        lb=kw["lb_name"], contexts=kw["contexts"], ingress=kw["ingress"], service=kw["service"], port=kw["port"],
        namespace=kw["namespace"], project=kw["project"], static_ip=kw["static_ip"], scheme=kw["scheme"],
        health_check_path=kw["health_check_path"], check_interval_sec=kw["check_interval_sec"],
        unhealthy_threshold=kw["unhealthy_threshold"], timeout_sec=kw["timeout_sec"],
        balancing_mode=kw["balancing_mode"], http=kw["http"], https_redirect=kw["https_redirect"],
        ssl_certificates=kw["ssl_certificates"], certificate_file=kw["certificate_file"], key_file=kw["key_file"],
        tls_secrets=kw["tls_secrets"], managed_domains=kw["managed_domains"], kubeconfig=kw["kubeconfig"],
        backends=kw["backends"], neg_timeout=kw["timeout"],
        feature_flags=Flags.from_kw(kw), features_file=kw["features_file"],
        progress=lambda line: click.echo(f"gitlab-mci: {line}", err=True)))


@click.group()
def command() -> None:
    """The self-managed global external HTTP(S) load balancer: plan, apply, status, destroy.

    What gitlab-mci creates for a load balancer is named gmci-<kind>-<lb>… after --lb, and it changes nothing
    else. --context lists every production cluster; --namespace is the app's, where its Services (and
    --tls-secret Secrets) are.
    """


def _echo_plan(changes: list[Any], output: str, notes: list[str] | None = None) -> None:
    from gitlab_mci.lb import report

    if output == "json":
        click.echo(json.dumps(report.as_json(changes), indent=2))
        return
    click.echo(report.render(changes))
    for note in notes or []:
        click.echo(f"Note: {note}")


@command.command("plan")
@_options
@release_ip_option
@detailed_exitcode_option
def plan_cmd(detailed_exitcode: bool, release_ip: bool, **kw: Any) -> None:
    """Show what `apply` would change, without changing anything.

    With --backends neg it first waits, like apply, for the NEGs (up to --timeout). Notes after the plan say
    what it keeps (an address gitlab-mci reserved, unused since --static-ip) and where requests no Ingress rule
    matches go when the scheme cannot answer 404 for them.
    """
    from gitlab_mci.lb import engine

    prepared = _prepare(kw)
    actual = prepared.read_actual()
    _settle(prepared, actual, kw)
    changes = engine.diff(prepared.desired, actual, adopt=kw["adopt"], release_ip=release_ip)
    _echo_plan(changes, kw["output"], engine.notes(prepared.desired, actual, release_ip=release_ip))
    if detailed_exitcode and changes:
        sys.exit(2)


def _settle(prepared: Any, actual: Any, kw: dict[str, Any]) -> None:
    """Each cluster's capacityScaler: --weight, else what Compute records; a drained cluster stays drained."""
    from gitlab_mci.lb.traffic import settle

    settle(prepared.desired, actual, prepared.clusters, kw["parsed_weights"])


def _run(changes: list[Any], api: Any, kw: dict[str, Any]) -> Any:
    """Run the changes with a line per finished resource and how long that change took (the total is the
    caller's last line)."""
    from gitlab_mci.lb import engine

    text = kw["output"] == "text"

    def progress(event: str, change: engine.Change, seconds: float) -> None:
        if text and event != "start":
            mark = "✓" if event == "done" else "✗"
            click.echo(f"  {mark} {change.action} {change.collection}/{change.name} ({seconds:.1f}s)")

    return engine.execute(api, changes, concurrency=kw["concurrency"], progress=progress)


def _url(desired: Any, vip: str) -> str:
    certs = next((r for r in desired.resources.values() if r.collection == "targetHttpsProxies"), None)
    http = any(r.key.endswith("-http") for r in desired.resources.values() if r.collection == "globalForwardingRules")
    managed = [d for r in desired.resources.values() if r.collection == "sslCertificates"
               for d in (r.body.get("managed") or {}).get("domains", [])]
    if certs is not None and managed:
        return f"https://{managed[0]}/"
    return f"http://{vip}/" if http or certs is None else f"https://{vip}/"


def _served_at(api: Any, url: str, vip: str, *, timeout: float = 5.0) -> str | None:
    """Under the simulator, the loopback URL its data plane serves ``url`` on (the VIP's port 80/443 is an ephemeral
    port there); waits up to ``timeout`` for the data plane to open it. None against Google."""
    import urllib.request
    from urllib.parse import urlsplit

    if not api.compute.local:
        return None
    endpoint = api.compute.endpoint
    scheme = urlsplit(url).scheme
    port = 443 if scheme == "https" else 80
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(f"{endpoint}/_sim/state", timeout=5) as answer:
                state = json.loads(answer.read())
        except (OSError, ValueError):
            return None  # a local endpoint that is not our simulator
        for item in state.get("listeners") or []:
            if item.get("vip") == vip and item.get("port") == port:
                return f"{item['url']}/"
        if time.monotonic() >= deadline:
            return None
        time.sleep(0.1)  # the data plane opens listeners on its next look at Compute


@command.command("apply")
@_options
@release_ip_option
@dotenv_option
def apply_cmd(dotenv: Path | None, release_ip: bool, **kw: Any) -> None:
    """Create or update the load balancer so it matches the inputs; no write when it already does.

    Owned resources that are no longer wanted (a removed backend, an old certificate) are deleted once nothing
    refers to them — except an address gitlab-mci reserved, which DNS points at: it is kept (and said so) unless
    --release-ip is given. Run it again after a failure: it continues from what exists. Under the simulator the
    last line names the loopback URL its data plane serves the load balancer on.

    With --backends neg it first waits (up to --timeout, saying so on stderr) until GKE's NEG controller has made
    the Service's NEG in every zone of every cluster, with endpoints. Switching --backends builds the backend
    service of the other kind, moves the URL map once it is healthy, then removes the old one: no failed request.
    """
    from gitlab_mci.lb import engine, report
    from gitlab_mci.progress import section

    started = time.monotonic()
    text = kw["output"] == "text"
    with section("mci_discover", f"gitlab-mci: reading clusters and load balancer {kw['lb_name']}",
                 collapsed=True, enabled=text):
        prepared = _prepare(kw)
        desired, api = prepared.desired, prepared.api
        actual = prepared.read_actual()
        _settle(prepared, actual, kw)
        changes = engine.diff(desired, actual, adopt=kw["adopt"], release_ip=release_ip)
        notes = engine.notes(desired, actual, release_ip=release_ip)
        if text:
            for info in prepared.clusters:
                if prepared.neg_wait is not None:
                    click.echo(f"  {info.context}: {sum(len(u) for u in info.negs.values())} NEG(s) in "
                               f"{', '.join(info.zones)}")
                else:
                    click.echo(f"  {info.context}: {len(info.groups)} instance group(s) in {', '.join(info.zones)}")
            if prepared.neg_wait is not None:
                click.echo(f"  NEGs ready after {prepared.neg_wait.seconds:.1f}s")
    if text:
        click.echo(report.summary(changes))
        for note in notes:
            click.echo(f"Note: {note}")
    if changes:
        with section("mci_apply", f"gitlab-mci: applying {len(changes)} change(s)", enabled=text):
            outcome = _run(changes, api, kw)
    else:
        outcome = engine.Outcome()
    address = next(r for r in desired.resources.values() if r.collection == "globalAddresses")
    known = actual.resources.get(address.key)
    if outcome.failed:
        vip = None
    elif known is not None and address.key not in outcome.done:
        vip = known.get("address")  # unchanged: no need to read it again
    else:
        vip = (api.get("globalAddresses", address.name) or {}).get("address")
    url = _url(desired, vip) if vip else None
    served = _served_at(api, url, vip) if url and vip else None
    if kw["output"] == "json":
        click.echo(json.dumps({"changes": report.as_json(changes), "failed": outcome.failed,
                               "skipped": outcome.skipped, "notes": notes, "vip": vip, "url": url,
                               **({"neg_wait_s": round(prepared.neg_wait.seconds, 2)}
                                  if prepared.neg_wait is not None else {}),
                               **({"served_at": served} if served else {})}, indent=2))
    if text:
        for key in outcome.skipped:
            click.echo(f"  - skipped {key} (it waits on a failed change)")
    if outcome.failed:
        first = next(iter(outcome.failed.items()))
        raise UserError(f"{len(outcome.failed)} change(s) failed, {len(outcome.skipped)} skipped; first: "
                        f"{first[0]}: {first[1]} (run apply again to continue)")
    if text:
        where = f"{served} (the simulator's data plane, serving {url})" if served else f"{url} (VIP {vip})"
        click.echo(f"load balancer {kw['lb_name']} ready at {where} in {time.monotonic() - started:.1f}s")
    if dotenv is not None and vip:
        dotenv.write_text(f"MCI_VIP={vip}\nMCI_URL={url}\n")


def _namer_api(kw: dict[str, Any]) -> tuple[Any, Any, list[Any]]:
    """For commands that need no routing: the load balancer's names, Compute, and the clusters' node groups."""
    from gitlab_mci import kube
    from gitlab_mci.gcp import Compute
    from gitlab_mci.lb.discovery import discover
    from gitlab_mci.lb.engine import ComputeApi
    from gitlab_mci.lb.inputs import check_resource_name, split_contexts
    from gitlab_mci.lb.names import Namer
    from gitlab_mci.nodeport import parallel

    namer = Namer(kw["lb_name"])
    if kw["static_ip"]:
        check_resource_name(kw["static_ip"], "--static-ip")
    if kw["kubeconfig"]:
        os.environ["KUBECONFIG"] = str(kw["kubeconfig"])
    contexts = split_contexts(kw["contexts"])
    compute = Compute.from_env(kw["project"])
    clusters = parallel(contexts, kube.connect)
    infos = discover(clusters, compute, kw["namespace"], []) if clusters else []
    return namer, ComputeApi(compute), infos


@command.command("destroy")
@_common
@release_ip_option
@click.option("--concurrency", type=int, default=64, show_default=True,
              help="Compute operations run at once (named ports on every instance group are one level).")
@output_option(["text", "json"])
def destroy_cmd(release_ip: bool, **kw: Any) -> None:
    """Delete every resource gitlab-mci created for this load balancer, and only those; idempotent.

    Needs no routing input and works after the app or a cluster is gone: our named ports are removed from the
    instance groups our backend services use and from those of the --context clusters.
    """
    from gitlab_mci.lb import engine
    from gitlab_mci.progress import section

    started = time.monotonic()
    text = kw["output"] == "text"
    with section("mci_destroy_read", f"gitlab-mci: reading load balancer {kw['lb_name']}", collapsed=True,
                 enabled=text):
        namer, api, infos = _namer_api(kw)
        actual = engine.read_for_destroy(api, namer, {g for c in infos for g in c.groups})
        changes = engine.destroy_changes(namer, actual, release_ip=release_ip)
    if not changes:
        if text:
            kept = sorted(have["name"] for key, have in actual.resources.items()
                          if key.startswith("globalAddresses/") and namer.owns(have))
            click.echo(f"Nothing to delete: no resource of load balancer {kw['lb_name']} owned by gitlab-mci is left"
                       + (f" but the address {', '.join(kept)}, kept unless --release-ip" if kept else "") + ".")
        else:
            _echo_plan(changes, kw["output"])
        return
    _echo_plan(changes, kw["output"])
    with section("mci_destroy", f"gitlab-mci: deleting {len(changes)} resource(s)", enabled=text):
        outcome = _run(changes, api, kw)
    if outcome.failed:
        first = next(iter(outcome.failed.items()))
        raise UserError(f"{len(outcome.failed)} deletion(s) failed; first: {first[0]}: {first[1]} "
                        "(run destroy again to continue)")
    if text:
        click.echo(f"load balancer {kw['lb_name']} destroyed in {time.monotonic() - started:.1f}s")


@command.command("status")
@_common
@output_option(["text", "json", "markdown"], "fmt")
@wait_option
def status_cmd(fmt: str, wait: float, **kw: Any) -> None:
    """VIP, listeners, backend health, weight and drain state per cluster and zone (from getHealth), and every
    certificate the load balancer serves (pre-shared, self-managed, Google-managed) with its state.

    With NEG backends the health counts healthy endpoints (pods) per cluster and zone; a zone with no pod of the
    app shows 0/0 and is not unhealthy while its cluster's other zones serve.

    Exit codes: 0 healthy (every cluster and zone not drained has a healthy backend); 3 not healthy (after --wait,
    if given); 1 the load balancer does not exist.
    """
    from gitlab_mci.lb import status as status_mod

    namer, api, infos = _namer_api(kw)
    deadline = time.monotonic() + wait
    while True:
        state = status_mod.gather(api, namer, infos, static_ip=kw["static_ip"])
        if state.healthy or time.monotonic() >= deadline or not state.exists:
            break
        time.sleep(min(2.0, max(0.1, deadline - time.monotonic())))
    render = {"text": status_mod.render_text, "json": status_mod.render_json,
              "markdown": status_mod.render_markdown}[fmt]
    click.echo(render(state))
    if not state.exists:
        raise UserError(f"load balancer {kw['lb_name']!r} not found in project {api.project}")
    if not state.healthy:
        sys.exit(3)


def _traffic_change(cluster: str, drain: bool, force: bool, kw: dict[str, Any]) -> None:
    """Drain (capacityScaler 0) or undrain (its weight back) one cluster's backends in every backend service."""
    from gitlab_mci.lb import traffic
    from gitlab_mci.lb.engine import read_named
    from gitlab_mci.lb.inputs import split_contexts

    verb = "drain" if drain else "undrain"
    contexts = split_contexts(kw["contexts"])
    if cluster not in contexts:
        raise UserError(f"lb {verb} {cluster}: unknown cluster; the clusters are the --context ones "
                        f"({', '.join(contexts) or 'none given'})")
    namer, api, infos = _namer_api(kw)
    services = [v for k, v in sorted(read_named(api, namer).items())
                if k.startswith("backendServices/") and namer.owns(v)]
    if not services:
        raise UserError(f"load balancer {kw['lb_name']!r} not found in project {api.project} (run lb apply first)")
    groups = traffic.cluster_of(infos)
    now = traffic.current(services, groups)
    if cluster not in now:
        raise UserError(f"lb {verb} {cluster}: no backend of load balancer {kw['lb_name']!r} is in cluster "
                        f"{cluster!r} (run lb apply with it among --context first)")
    state = {**now, cluster: traffic.ClusterTraffic(cluster, now[cluster].weight, drain)}
    for bs in services:
        serving = traffic.serving_elsewhere(bs, groups, cluster)
        if drain and serving == 0 and len(bs.get("backends") or []) <= 1:
            raise UserError(f"lb drain {cluster}: it is the only backend of backendServices/{bs['name']}, and "
                            "Compute refuses capacity 0 for a backend service's only backend")
        if drain and serving == 0 and not force:
            raise UserError(f"lb drain {cluster}: it is the last cluster serving backendServices/{bs['name']}; "
                            "draining it fails every request (pass --force to do it anyway)")
    writes = [(bs, traffic.with_drain(bs, groups, cluster, state)) for bs in services]
    writes = [(bs, backends) for bs, backends in writes if backends != bs.get("backends")]
    timeout = max((int((bs.get("connectionDraining") or {}).get("drainingTimeoutSec") or 0) for bs in services),
                  default=0)
    for bs, _ in writes:
        # From the backend service as read with the fingerprint the write sends (again after a concurrent change):
        # a backend added meanwhile is kept; only this cluster's capacityScaler changes.
        api.patch("backendServices", bs["name"],
                  lambda fresh, bs=bs: {"backends": traffic.with_drain(fresh or bs, groups, cluster, state)})
    result = {"cluster": cluster, "drained": drain, "weight": now[cluster].weight,
              "capacityScaler": traffic.scaler(state[cluster], state), "changed": [bs["name"] for bs, _ in writes],
              "drainingTimeoutSec": timeout}
    if kw["output"] == "json":
        click.echo(json.dumps(result, indent=2))
        return
    if not writes:
        click.echo(f"{cluster} is already {'drained' if drain else 'serving'}: nothing to change")
    elif drain:
        others = ", ".join(c for c, t in sorted(state.items()) if not t.drained) or "no cluster"
        click.echo(f"{cluster} drained: capacityScaler 0 on its backends in {len(writes)} backend service(s); new "
                   f"requests go to {others}; requests in flight finish (connection draining: up to {timeout}s)")
    else:
        click.echo(f"{cluster} serving again: capacityScaler {result['capacityScaler']:g} (weight "
                   f"{now[cluster].weight:g}) in {len(writes)} backend service(s)")


@command.command("drain")
@click.argument("cluster")
@_common
@click.option("--force", is_flag=True, help="Drain even the last cluster still serving (every request then fails).")
@output_option(["text", "json"])
def drain_cmd(cluster: str, force: bool, **kw: Any) -> None:
    """Take CLUSTER (a --context) out of the load balancer for maintenance: capacityScaler 0 on its backends.

    New requests go to the other clusters at once; requests in flight finish (the backend service's connection
    draining timeout). The drain is recorded in Compute, so a later `lb apply` keeps it; `lb undrain` ends it.
    Refused for the last cluster still serving unless --force.
    """
    _traffic_change(cluster, True, force, kw)


@command.command("undrain")
@click.argument("cluster")
@_common
@output_option(["text", "json"])
def undrain_cmd(cluster: str, **kw: Any) -> None:
    """Bring a drained CLUSTER back: its backends' capacityScaler returns to its weight (recorded in Compute)."""
    _traffic_change(cluster, False, False, kw)


@command.command("takeover")
@lb_option
@contexts_option
@click.option("--address", required=True, metavar="ADDRESS",
              help="IP address, or name of the global address, of the running load balancer to take over.")
@routing
@namespace_option
@project_option
@kubeconfig_option
@_scheme_option
@stack(_backend_tuning)
@_balancing_mode_option
@click.option("--step-wait", type=click.FloatRange(min=0), default=None, metavar="SECONDS",
              help="Seconds to hold each migration step before the next (default: 360 against Google, whose front "
                   "ends take minutes to follow each step; 0 against the simulator).")
@timeout_option(600)
@click.option("--concurrency", type=int, default=64, show_default=True,
              help="Compute operations run at once (named ports on every instance group are one level).")
@click.option("--rollback", is_flag=True,
              help="Go back to the old chain (while it still exists) and delete gitlab-mci's.")
@dry_run_option
@detailed_exitcode_option
@output_option(["text", "json", "markdown"])
def takeover_cmd(dry_run: bool, detailed_exitcode: bool, rollback: bool, **kw: Any) -> None:
    """Take over a running load balancer (kubemci's, or one made by hand) with no failed request.

    Discovers the chain on --address (forwarding rules, proxies, URL map, backend services, health checks,
    named ports, firewall rules), builds gitlab-mci's beside it, waits until it is healthy in every cluster and
    zone (getHealth), moves each forwarding rule onto it with setTarget (same IP and port; the rule is adopted,
    labelled gitlab-mci-lb=LB), migrates a classic chain to EXTERNAL_MANAGED with Compute's canary migration,
    verifies, then deletes what only the old chain used. The address and certificates are kept. No local state:
    run it again after any failure to continue; --rollback goes back until the old chain is deleted. Progress
    goes to stderr; -o markdown draws the chain as `lb status` does. Afterwards `lb apply` with the same inputs
    and --static-ip ADDRESS-NAME changes nothing.
    """
    from gitlab_mci.lb import takeover, takeover_report
    from gitlab_mci.lb.inputs import Inputs, split_contexts

    if detailed_exitcode and not dry_run:
        raise UserError("--detailed-exitcode goes with --dry-run")
    if kw["concurrency"] < 1:
        raise UserError(f"--concurrency {kw['concurrency']}: must be at least 1")
    started = time.monotonic()
    contexts = split_contexts(kw["contexts"])
    settings = takeover.Settings(address=kw["address"], contexts=contexts, scheme=kw["scheme"],
                                 timeout=kw["timeout"], concurrency=kw["concurrency"])
    inputs = Inputs(lb=kw["lb_name"], contexts=contexts, ingress=kw["ingress"], service=kw["service"],
                    port=kw["port"], namespace=kw["namespace"], project=kw["project"],
                    health_check_path=kw["health_check_path"], check_interval_sec=kw["check_interval_sec"],
                    unhealthy_threshold=kw["unhealthy_threshold"], timeout_sec=kw["timeout_sec"],
                    balancing_mode=kw["balancing_mode"], kubeconfig=kw["kubeconfig"])
    t = takeover.prepare(inputs, settings)
    local = bool(t.api.compute.local)
    t.settings.step_wait = kw["step_wait"] if kw["step_wait"] is not None else (0.0 if local else 360.0)
    planner = takeover.rollback_plan if rollback else takeover.plan
    world = takeover.read_world(t)
    steps = planner(t, world)
    pending = any(s.writes for s in steps)
    render = {"text": takeover_report.render_text, "json": takeover_report.render_json,
              "markdown": takeover_report.render_markdown}[kw["output"]]
    if dry_run:
        click.echo(render(t, world, steps, rollback=rollback, done=not pending))
        if detailed_exitcode and pending:
            sys.exit(2)
        return
    if kw["output"] == "text":
        click.echo(render(t, world, steps, rollback=rollback, done=not pending))

    def progress(line: str) -> None:
        click.echo(f"gitlab-mci: {line}", err=True)

    count = takeover.run(t, rollback=rollback, progress=progress)
    world = takeover.read_world(t)
    if kw["output"] == "json":
        click.echo(takeover_report.render_json(t, world, [], rollback=rollback, done=True))
    elif kw["output"] == "markdown":
        click.echo(takeover_report.render_markdown(t, world, [], rollback=rollback, done=True))
    else:
        what = "rolled back" if rollback else "taken over"
        address = (world.chain.address or {}).get("name", kw["address"])
        click.echo(f"{address} ({world.chain.ip}) {what} in {count} step(s), {time.monotonic() - started:.1f}s"
                   + ("" if rollback else f"; from now on: {takeover.apply_hint(t)} and the same routing"))
