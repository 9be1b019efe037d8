"""``gitlab-mci sim``: run the local Google Cloud + GKE simulator and steer it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import click

from gitlab_mci.errors import UserError

DEFAULT_STATE_DIR = ".gitlab-mci/sim"

state_dir_option = click.option(
    "--state-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=DEFAULT_STATE_DIR,
    show_default=True,
    envvar="GITLAB_MCI_SIM_DIR",
    help="Where the simulator writes kubeconfig, env files, gcloud config and state.json [env: GITLAB_MCI_SIM_DIR].",
)


@click.group()
def command() -> None:
    """Start, stop and inspect the local Google Cloud + GKE simulator.

    The simulator serves a Compute Engine v1 API and one Kubernetes API per simulated GKE cluster on loopback
    ports, so gitlab-mci, gcloud and kubectl can be tried and tested without a cloud account.
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


def _running_state(state_dir: Path) -> dict[str, Any]:
    state = _read_state(state_dir)
    if state is None or not _alive(int(state.get("pid", 0))):
        raise UserError(f"no simulator is running with state dir {state_dir} (start one with `gitlab-mci sim up`)")
    return state


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
@click.option("--detach", "-d", is_flag=True, help="Run in the background; stop it with `gitlab-mci sim down`.")
@click.option("--timeout", type=float, default=30.0, show_default=True,
              help="With --detach: seconds to wait for the simulator to serve.")
def up(spec_path: Path | None, state_dir: Path, detach: bool, timeout: float) -> None:
    """Start the simulator (in the foreground until Ctrl-C, or with --detach in the background)."""
    from gitlab_mci.sim.spec import load_spec

    spec = load_spec(spec_path)  # validate before starting anything, in both modes
    existing = _read_state(state_dir)
    if existing is not None and _alive(int(existing.get("pid", 0))):
        raise UserError(
            f"a simulator is already running with state dir {state_dir} (pid {existing['pid']}); "
            "stop it with `gitlab-mci sim down` or pick another --state-dir"
        )
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
            click.echo(f"running in the background (pid {proc.pid}); stop it with `gitlab-mci sim down`")
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
@click.option("--timeout", type=float, default=10.0, show_default=True, help="Seconds to wait for it to stop.")
def down(state_dir: Path, timeout: float) -> None:
    """Stop a simulator started with `gitlab-mci sim up --detach`."""
    state = _read_state(state_dir)
    if state is None or not _alive(int(state.get("pid", 0))):
        (state_dir / "state.json").unlink(missing_ok=True)
        click.echo(f"no simulator running with state dir {state_dir}")
        return
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
@click.option("--output", "-o", type=click.Choice(["text", "json"]), default="text", show_default=True,
              help="Output format.")
def status(state_dir: Path, output: str) -> None:
    """Show the endpoints of the running simulator."""
    state = _running_state(state_dir)
    live = _admin(state, "GET", "state")
    if output == "json":
        click.echo(json.dumps({**live, "files": state["files"]}, indent=2))
    else:
        _print_summary(live, state["files"])


@command.command("env")
@state_dir_option
def env(state_dir: Path) -> None:
    """Print `export` lines that point gitlab-mci, kubectl and gcloud at the running simulator.

    Use as: eval "$(gitlab-mci sim env)".
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
@click.option("--writes", is_flag=True, help="Only requests that change something (not GET).")
@click.option("--output", "-o", type=click.Choice(["text", "json"]), default="text", show_default=True,
              help="Output format.")
def journal(state_dir: Path, reset: bool, writes: bool, output: str) -> None:
    """Print the requests the simulator served: service, method, path, status, duration."""
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
    """Inject faults into the running simulator (HTTP errors, failed operations, latency)."""


@fault.command("add")
@state_dir_option
@click.option("--action", type=click.Choice(["status", "latency", "operation_error"]), default="status",
              show_default=True, help="Answer an HTTP error, add latency, or make the Compute operation fail.")
@click.option("--status", "status_code", type=int, default=503, show_default=True,
              help="HTTP status for --action status (429, 500, 502, 503, 504, 403).")
@click.option("--reason", default=None, help="Error reason, e.g. rateLimitExceeded with --status 403.")
@click.option("--latency", type=float, default=0.0, help="Seconds to add, for --action latency.")
@click.option("--service", default="*", show_default=True, help="compute, kube, or kube:CLUSTER.")
@click.option("--method", default="*", show_default=True, help="HTTP method to match.")
@click.option("--path", default=".*", show_default=True, help="Regular expression searched in the request path.")
@click.option("--probability", type=float, default=1.0, show_default=True, help="Chance that a match fires.")
@click.option("--seed", type=int, default=None, help="Seed for --probability, for reproducible schedules.")
@click.option("--nth", type=int, default=None, help="Fire only on the n-th matching request.")
@click.option("--times", type=int, default=None, help="Fire at most this many times.")
def fault_add(state_dir: Path, status_code: int, **rule: Any) -> None:
    """Add a fault rule."""
    state = _running_state(state_dir)
    body = {k: v for k, v in rule.items() if v is not None}
    body["status"] = status_code
    click.echo(json.dumps(_admin(state, "POST", "faults", body)))


@fault.command("list")
@state_dir_option
def fault_list(state_dir: Path) -> None:
    """List the active fault rules and how often each matched and fired."""
    state = _running_state(state_dir)
    for rule in _admin(state, "GET", "faults")["faults"]:
        click.echo(json.dumps(rule))


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


def _register_deploy() -> None:
    from gitlab_mci.cli.sim_deploy import deploy_cmd

    command.add_command(deploy_cmd)


_register_deploy()
