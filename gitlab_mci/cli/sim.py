"""``gitlab-mci sim``: run the local Google Cloud + GKE simulator and steer it."""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import click

from gitlab_mci.cli.helm import _common as _helm_options
from gitlab_mci.cli.options import FILE, contexts_option, lb_option, state_dir_option, static_ip_option, timeout_option
from gitlab_mci.cli.options import output_option as shared_output_option
from gitlab_mci.errors import UserError

output_option = shared_output_option(["text", "json"])
# The app's node port, read the same as `helm values` reads it (the one option, the one meaning).
_node_port_option = _helm_options[0]


class NotRunning(UserError):
    """`sim status` with no simulator: "not running" is its answer, exit 3 (not ready), not an error."""

    exit_code = 3


@click.group()
def command() -> None:
    """Start, stop and inspect the local Google Cloud + GKE simulator.

    The simulator serves a Compute Engine v1 API, a GKE Hub (fleet) API and one Kubernetes API per simulated GKE
    cluster on loopback ports, and answers HTTP(S) on the VIP of every load balancer created in it, so gitlab-mci,
    gcloud and kubectl can be tried and tested without a cloud account.
    """


def _read_state(state_dir: Path) -> dict[str, Any] | None:
    path = state_dir / "state.json"
    try:
        state: dict[str, Any] = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return state


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _running_state(state_dir: Path, error: type[UserError] = UserError) -> dict[str, Any]:
    state = _read_state(state_dir)
    if state is None or not _alive(int(state.get("pid", 0))):
        raise error(f"no simulator is running with state dir {state_dir} (start one with `gitlab-mci sim up`)")
    return state


def _down_command(state_dir: Path) -> str:
    """The `sim down` that stops this simulator: with --state-dir unless the default or the env var finds it."""
    ctx = click.get_current_context(silent=True)
    source = ctx.get_parameter_source("state_dir") if ctx is not None else None
    given = source is click.core.ParameterSource.COMMANDLINE
    return f"gitlab-mci sim down --state-dir {shlex.quote(str(state_dir))}" if given else "gitlab-mci sim down"


def _ignore_in_git(state_dir: Path) -> None:
    """Create the state dir with a .gitignore of everything, so `sim up` in a repository leaves it clean.

    Only a directory `sim up` creates gets one: a user's existing directory (even `.`) is left as it is.
    """
    if not state_dir.exists():
        state_dir.mkdir(parents=True)
        (state_dir / ".gitignore").write_text("# Written by `gitlab-mci sim up`: the simulator's state.\n*\n")


def _print_summary(state: dict[str, Any], files: dict[str, str]) -> None:
    click.echo(f"Compute Engine API  {state['compute']}  (project {state['project']})")
    if state.get("gkehub"):
        click.echo(f"GKE Hub (fleet) API {state['gkehub']}  (gitlab-mci fleet enable, hosted Multi Cluster Ingress)")
    for name, c in state["clusters"].items():
        click.echo(f"GKE cluster {name:<8} {c['server']}  {c['location']}, {c['nodes']} nodes")
    for item in state.get("listeners") or []:
        click.echo(f"load balancer       {item['vip']}:{item['port']} → {item['url']}  "
                   f"(forwarding rule {item['rule']})")
    click.echo(f"kubeconfig          {files['kubeconfig']}  (one context per cluster)")
    click.echo(f"environment         source {files['env']}")


@command.command("up")
@click.option("--spec", "spec_path", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="YAML file describing project, network and clusters (default: prod1 in us-central1-a and prod2 "
                   "in europe-west1-b, 3 nodes each).")
@state_dir_option
@click.option("--detach", "-d", is_flag=True,
              help="Run in the background; stop it with `gitlab-mci sim down` (and the same --state-dir).")
@timeout_option(30.0)
def up(spec_path: Path | None, state_dir: Path, detach: bool, timeout: float) -> None:
    """Start the simulator (in the foreground until Ctrl-C, or with --detach in the background).

    With --detach, --timeout bounds the wait until the simulator serves.

    The state directory gets the files that point clients at it (see `gitlab-mci sim env`); one it creates also
    gets a .gitignore, so starting the simulator inside a repository leaves `git status` clean.
    """
    from gitlab_mci.sim.spec import load_spec

    spec = load_spec(spec_path)  # validate before starting anything, in both modes
    existing = _read_state(state_dir)
    if existing is not None and _alive(int(existing.get("pid", 0))):
        raise UserError(
            f"a simulator is already running with state dir {state_dir} (pid {existing['pid']}); "
            f"stop it with `{_down_command(state_dir)}` or pick another --state-dir"
        )
    _ignore_in_git(state_dir)
    if detach:
        _start_detached(spec_path, state_dir, timeout)
        return
    _serve(spec, state_dir)


def _start_detached(spec_path: Path | None, state_dir: Path, timeout: float) -> None:
    state_dir.mkdir(parents=True, exist_ok=True)
    (state_dir / "state.json").unlink(missing_ok=True)
    log = state_dir / "sim.log"
    args = [sys.executable, "-m", "gitlab_mci", "sim", "up", "--state-dir", str(state_dir)]
    if spec_path is not None:
        args += ["--spec", str(spec_path)]
    with log.open("wb") as out:
        proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state = _read_state(state_dir)
        if state is not None and state.get("pid") == proc.pid and state.get("ready"):
            _print_summary(state, state["files"])
            click.echo(f"running in the background (pid {proc.pid}); stop it with `{_down_command(state_dir)}`")
            return
        if proc.poll() is not None:
            tail = log.read_text(errors="replace").strip().splitlines()[-1:] or ["(no output)"]
            raise UserError(f"the simulator exited with code {proc.returncode}: {tail[0]} (log: {log})")
        time.sleep(0.05)
    proc.terminate()
    raise UserError(f"the simulator did not start within {timeout:g}s (log: {log})")


def _serve(spec: Any, state_dir: Path) -> None:
    from gitlab_mci.sim.runtime import Simulator

    stop = False

    def _on_signal(signum: int, frame: object) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)
    sim = Simulator(spec).start()
    try:
        files = sim.write_files(state_dir)
        state = json.loads(files.state.read_text())
        _print_summary(state, state["files"])
        click.echo("serving; press Ctrl-C to stop", err=True)
        sys.stdout.flush()
        while not stop:
            time.sleep(0.2)
    finally:
        sim.stop()
        (Path(state_dir) / "state.json").unlink(missing_ok=True)
        click.echo("simulator stopped", err=True)


@command.command("down")
@state_dir_option
@timeout_option(10.0)
def down(state_dir: Path, timeout: float) -> None:
    """Stop the simulator of this state dir (started with `gitlab-mci sim up --detach`, or in another terminal).

    It is killed if it has not stopped within --timeout.

    Exits 1 when no simulator runs there: nothing was stopped.
    """
    state = _read_state(state_dir)
    if state is None or not _alive(int(state.get("pid", 0))):
        (state_dir / "state.json").unlink(missing_ok=True)  # a stale one, left by a killed simulator
        raise UserError(f"no simulator is running with state dir {state_dir}; nothing stopped")
    pid = int(state["pid"])
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and _alive(pid):
        time.sleep(0.05)
    if _alive(pid):
        os.kill(pid, signal.SIGKILL)
    (state_dir / "state.json").unlink(missing_ok=True)
    click.echo(f"simulator stopped (pid {pid})")


@command.command("status")
@state_dir_option
@output_option
def status(state_dir: Path, output: str) -> None:
    """Show the endpoints of the running simulator and the load balancers it serves.

    Exit codes: 0 a simulator runs with this state dir; 3 none runs (said on stderr); 1 it cannot be reached.
    """
    state = _running_state(state_dir, NotRunning)
    live = _admin(state, "GET", "state")
    if output == "json":
        click.echo(json.dumps({**live, "files": state["files"]}, indent=2))
    else:
        _print_summary(live, state["files"])


@command.command("env")
@state_dir_option
def env(state_dir: Path) -> None:
    """Print `export` lines that point gitlab-mci, kubectl and gcloud at the running simulator.

    Use as: eval "$(gitlab-mci sim env)". They include GITLAB_MCI_SIM_DIR, so the other `gitlab-mci sim` commands
    then find this simulator without --state-dir.
    """
    state = _running_state(state_dir)
    click.echo(Path(state["files"]["env"]).read_text(), nl=False)


def _admin(state: dict[str, Any], method: str, what: str, body: Any = None) -> Any:
    url = f"{state['compute']}/_sim/{what}"
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return json.loads(resp.read() or b"{}")
    except urllib.error.HTTPError as exc:
        detail = json.loads(exc.read() or b"{}").get("error", {}).get("message", str(exc))
        raise UserError(f"simulator refused {method} /_sim/{what}: {detail}") from None
    except OSError as exc:
        raise UserError(f"cannot reach the simulator at {state['compute']}: {exc}") from None


@command.command("journal")
@state_dir_option
@click.option("--reset", is_flag=True, help="Clear the journal after printing it.")
@click.option("--writes", is_flag=True,
              help="Only requests that ask for a change (by API method: insert, patch, delete, setNamedPorts… — "
                   "not get, list, getHealth or an operation's wait, though some of those are POSTs).")
@output_option
def journal(state_dir: Path, reset: bool, writes: bool, output: str) -> None:
    """Print the API requests the simulator served: service, method, status, duration, path.

    Text: one line per request and their count on stderr; json: a list of entries, each with `write` (whether it
    asked for a change). The parts of a batch request are listed one by one after it.
    """
    state = _running_state(state_dir)
    entries = _admin(state, "GET", "journal")["entries"]
    if writes:
        entries = [e for e in entries if e["write"]]
    if output == "json":
        click.echo(json.dumps(entries, indent=2))
    else:
        for e in entries:
            fault = f"  [{e['fault']}]" if e.get("fault") else ""
            click.echo(f"{e['service']:<14} {e['method']:<6} {e['status']} {e['duration'] * 1000:7.1f}ms "
                       f"{e['path']}{fault}")
        click.echo(f"{len(entries)} request(s)", err=True)
    if reset:
        _admin(state, "DELETE", "journal")


@command.group("fault")
def fault() -> None:
    """Inject faults into the simulator's APIs: HTTP errors, latency, failed Compute operations.

    To make a cluster or a zone stop serving the load balancer's traffic, see `gitlab-mci sim fail`.
    """


@fault.command("add")
@state_dir_option
@click.option("--action", type=click.Choice(["status", "latency", "operation_error"]), default="status",
              show_default=True,
              help="Answer an HTTP error, add latency, or accept a Compute write whose operation then fails.")
@click.option("--status", "status_code", type=int, default=503, show_default=True,
              help="HTTP status for --action status, e.g. 429, 500, 502, 503, 504 or 403 (a rate limit).")
@click.option("--reason", default=None,
              help="The reason in Google's error body (default by status: rateLimitExceeded, backendError…).")
@click.option("--latency", type=float, default=0.0, help="Seconds to add, for --action latency.")
@click.option("--service", default="*", show_default=True,
              help="compute, gkehub, kube (every cluster) or kube:CLUSTER; * for every service.")
@click.option("--method", default="*", show_default=True,
              help="HTTP method to match, or several like POST|PATCH; * for any.")
@click.option("--path", default=".*", show_default=True, help="Regular expression searched in the request path.")
@click.option("--probability", type=float, default=1.0, show_default=True, help="Chance that a match fires.")
@click.option("--seed", type=int, default=None, help="Seed for --probability, for reproducible schedules.")
@click.option("--nth", type=int, default=None, help="Fire only on the n-th matching request.")
@click.option("--times", type=int, default=None, help="Fire at most this many times.")
@output_option
def fault_add(state_dir: Path, status_code: int, output: str, **rule: Any) -> None:
    """Add a fault rule to the running simulator; it applies to every request that follows.

    Text: the rule in words; json: the rule as the simulator stores it.
    """
    state = _running_state(state_dir)
    body = {k: v for k, v in rule.items() if v is not None}
    body["status"] = status_code
    added = _admin(state, "POST", "faults", body)
    click.echo(json.dumps(added, indent=2) if output == "json" else f"fault added: {describe_fault(added)}")


@fault.command("list")
@state_dir_option
@output_option
def fault_list(state_dir: Path, output: str) -> None:
    """List the fault rules in force and how often each matched and fired.

    Text: one numbered line per rule; json: a list of rules.
    """
    rules = _admin(_running_state(state_dir), "GET", "faults")["faults"]
    if output == "json":
        click.echo(json.dumps(rules, indent=2))
        return
    for i, rule in enumerate(rules, 1):
        click.echo(f"{i}  {describe_fault(rule)}")
    if not rules:
        click.echo("no fault rules")


def describe_fault(rule: dict[str, Any]) -> str:
    """A fault rule in words: what it does, to which requests, when, and how often it matched and fired."""
    action = rule.get("action", "status")
    if action == "latency":
        what = f"add {rule.get('latency', 0):g}s of latency to"
    elif action == "operation_error":
        what = "fail the Compute operation of"
    else:
        what = f"answer {rule.get('status')}" + (f" {rule['reason']}" if rule.get("reason") else "") + " to"
    method = rule.get("method", "*")
    service = rule.get("service", "*")
    path = rule.get("path", ".*")
    requests = f"{method} requests" if method != "*" else "any request"
    if service != "*":
        requests += f" to {service}"
    if path != ".*":
        requests += f" whose path matches '{path}'"
    if rule.get("nth") is not None:
        when = f"on match {rule['nth']} {'and after' if rule.get('onward') else 'only'}"
    elif rule.get("probability", 1.0) < 1.0:
        when = f"with probability {rule['probability']:g}" + (f" (seed {rule['seed']})" if "seed" in rule else "")
    else:
        when = "every match"
    if rule.get("times") is not None:
        when += f", at most {rule['times']} times"
    return f"{what} {requests}, {when} (matched {rule.get('matched', 0)}, fired {rule.get('fired', 0)})"


@fault.command("clear")
@state_dir_option
def fault_clear(state_dir: Path) -> None:
    """Remove every fault rule."""
    _admin(_running_state(state_dir), "DELETE", "faults")
    click.echo("faults cleared")


_MODE_HELP = ("pods: the pods stop answering (health checks fail, requests that reach them fail); nodes: the nodes "
              "stop answering at all (probes time out). Default: pods for a cluster, nodes for a zone.")


@command.command("fail")
@click.argument("target")
@click.option("--mode", type=click.Choice(["pods", "nodes"]), default=None, help=_MODE_HELP)
@state_dir_option
def fail_cmd(target: str, mode: str | None, state_dir: Path) -> None:
    """Make a cluster (TARGET is its name) or a zone (TARGET like us-central1-a) stop serving.

    The load balancer's health checks notice after their interval × unhealthy threshold and traffic moves to
    the healthy backends; `gitlab-mci sim heal TARGET` brings it back.
    """
    state = _running_state(state_dir)
    answer = _admin(state, "POST", "dataplane/fail", {"target": target, **({"mode": mode} if mode else {})})
    fault = answer["fault"]
    click.echo(f"{fault['kind']} {fault['target']}: {fault['mode']} stopped answering")


@command.command("heal")
@click.argument("target", required=False)
@click.option("--mode", type=click.Choice(["pods", "nodes"]), default=None,
              help="Heal only this kind of failure (default: every failure of TARGET).")
@click.option("--all", "heal_all", is_flag=True, help="Heal every failed cluster and zone.")
@state_dir_option
def heal_cmd(target: str | None, mode: str | None, heal_all: bool, state_dir: Path) -> None:
    """Undo `gitlab-mci sim fail` for a cluster or zone (or --all); health checks then bring it back."""
    if (target is None) == (not heal_all):
        raise UserError("name a cluster or zone to heal, or use --all")
    state = _running_state(state_dir)
    body = {"target": target, **({"mode": mode} if mode else {})} if target else {}
    answer = _admin(state, "POST", "dataplane/heal", body)
    for fault in answer["healed"]:
        click.echo(f"{fault['kind']} {fault['target']}: {fault['mode']} answer again")
    if not answer["healed"]:
        click.echo(f"nothing to heal{f' for {target}' if target else ''}")


@command.command("kubemci")
@lb_option
@contexts_option
@_node_port_option
@static_ip_option
# The same options, in the same words, as `lb plan/apply` (the command-line grammar holds shared options alike).
@click.option("--certificate-file", type=FILE, envvar="MCI_CERTIFICATE_FILE",
              help="PEM certificate chain of a self-managed certificate [env: MCI_CERTIFICATE_FILE].")
@click.option("--key-file", type=FILE, envvar="MCI_KEY_FILE",
              help="PEM private key of --certificate-file; never printed [env: MCI_KEY_FILE].")
@click.option("--no-http", is_flag=True,
              help="No HTTP listener, only HTTPS (the Ingress's kubernetes.io/ingress.allow-http: \"false\").")
@state_dir_option
@output_option
def kubemci_cmd(lb_name: str, contexts: tuple[str, ...], node_port: str | None, static_ip: str | None,
                certificate_file: Path | None, key_file: Path | None, no_http: bool, state_dir: Path,
                output: str) -> None:
    """Build the classic load balancer `kubemci create` made, as the recipe's users still run it.

    Through the Compute API, as a user's gcloud would, and in kubemci's order and names: the named port
    port<NODE_PORT> on the node instance groups of the clusters (--context, default: every simulated cluster),
    health check mci1-hc-<NODE_PORT>--<LB>, backend service mci1-be-<NODE_PORT>--<LB> (EXTERNAL, RATE), URL map
    mci1-um--<LB>, HTTP proxy mci1-tp--<LB> and forwarding rule mci1-fw--<LB> on 80, with a certificate
    mci1-ssl--<LB>, HTTPS proxy mci1-tps--<LB> and forwarding rule mci1-fws--<LB> on 443, and firewall
    mci1-fr--<LB>. --static-ip names the global address the rules use (reserved when missing, as the recipe's
    `gcloud compute addresses create` does); without it the rules get an ephemeral IP. Nothing carries a gitlab-mci
    label or description.

    Every cluster must already serve the app on the node port (`gitlab-mci sim deploy`); otherwise nothing is made.
    """
    from gitlab_mci.helm import DEFAULT_NODE_PORT, check_node_port, parse_port
    from gitlab_mci.sim.kubemci import KubemciSpec, build, validate

    state = _running_state(state_dir)
    port = DEFAULT_NODE_PORT if node_port is None else check_node_port(
        parse_port(node_port, "--node-port / MCI_NODE_PORT"), "--node-port / MCI_NODE_PORT")
    clusters = [c for v in contexts for c in v.replace(" ", ",").split(",") if c] or list(state["clusters"])
    cert = key = None
    for path in (certificate_file, key_file):
        if path is not None and not path.is_file():
            raise UserError(f"no such file: {path}")
    if certificate_file is not None:
        cert = certificate_file.read_text()
    if key_file is not None:
        key = key_file.read_text()
    spec = KubemciSpec(lb_name, tuple(dict.fromkeys(clusters)), port, static_ip, cert, key, not no_http)
    validate(spec, list(state["clusters"]))
    built = build(state["compute"], state["project"],
                  {n: c["server"] for n, c in state["clusters"].items()}, spec)
    if output == "json":
        click.echo(json.dumps({"vip": built.vip, "resources": [{"collection": c, "name": n}
                                                               for c, n in built.resources]}, indent=2))
        return
    for collection, name in built.resources:
        click.echo(f"created {_KINDS.get(collection, collection)} {name}")
    click.echo(f"kubemci load balancer {lb_name} on {built.vip} (clusters {', '.join(spec.clusters)})")


_KINDS = {"globalAddresses": "address", "healthChecks": "health check", "backendServices": "backend service",
          "urlMaps": "URL map", "targetHttpProxies": "target HTTP proxy", "sslCertificates": "SSL certificate",
          "targetHttpsProxies": "target HTTPS proxy", "globalForwardingRules": "forwarding rule",
          "firewalls": "firewall rule"}


def _register_deploy() -> None:
    from gitlab_mci.cli.sim_deploy import deploy_cmd

    command.add_command(deploy_cmd)


_register_deploy()
