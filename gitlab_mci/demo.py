"""``gitlab-mci demo``: the whole story on the local simulator, checked as it goes.

Two simulated GKE clusters; the app deployed to each the way the pipeline does it (values, HELM_UPGRADE_EXTRA_ARGS,
the deploy step, the node port pin); one global load balancer; real HTTP through it; a cluster failed and healed;
everything torn down. Every step is the real command, run in this process against the simulator, and every
expectation is checked: the demo exits non-zero if one does not hold.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import tempfile
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from gitlab_mci.errors import UserError

ENVIRONMENTS = (("prod1", "us-central1-a"), ("prod2", "europe-west1-b"))
RELEASE = "shop"  # HELM_RELEASE_NAME: the same Service name in every cluster
LB = "demo"
NODE_PORT = "30999"
CHECK_INTERVAL = 1  # seconds; with an unhealthy threshold of 2, a failed cluster is out after ~2-3 s
UNHEALTHY_THRESHOLD = 2


class DemoFailed(UserError):
    """An expectation of the demo did not hold."""


class Stopped(Exception):
    """A step failed: the later steps depend on it, so the story ends there (teardown still runs)."""


@dataclass
class Step:
    title: str
    ok: bool = True
    detail: str = ""
    seconds: float = 0.0


@dataclass
class Report:
    steps: list[Step] = field(default_factory=list)
    figures: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return all(s.ok for s in self.steps)


class Output:
    """Plain lines (CI, pipes) or a live spinner per step on a terminal (rich, when installed)."""

    def __init__(self, *, fancy: bool, verbose: bool) -> None:
        self.verbose = verbose
        self.console: Any = None
        if fancy:
            try:
                from rich.console import Console
            except ImportError:  # rich is optional: plain lines are just as informative
                fancy = False
            else:
                self.console = Console(highlight=False)
        self.fancy = fancy

    @contextlib.contextmanager
    def step(self, report: Report, title: str) -> Iterator[Step]:
        step = Step(title)
        started = time.monotonic()
        status = self.console.status(title) if self.fancy else contextlib.nullcontext()
        if not self.fancy:
            print(f"==> {title}", flush=True)
        failed = False
        try:
            with status:
                yield step
        except (UserError, OSError) as exc:
            step.ok, step.detail, failed = False, str(exc), True
        finally:
            step.seconds = time.monotonic() - started
            report.steps.append(step)
            mark = "✓" if step.ok else "✗"
            line = f"{mark} {title}" + (f": {step.detail}" if step.detail else "") + f" ({step.seconds:.1f}s)"
            if self.fancy:
                self.console.print(f"[{'green' if step.ok else 'red'}]{line}[/]")
            else:
                print(f"    {line}", flush=True)
        if failed:
            raise Stopped

    def note(self, text: str) -> None:
        """A line of figures under a step, always shown."""
        if self.fancy:
            self.console.print(f"      {text}", markup=False)
        else:
            print(f"      {text}", flush=True)

    def command_output(self, text: str) -> None:
        if self.verbose and text.strip():
            for line in text.rstrip().splitlines():
                print(f"      | {line}", flush=True)


def run_cli(args: list[str], out: Output) -> tuple[int, str]:
    """Run a gitlab-mci command in this process, as a job would run it; returns (exit code, output)."""
    buffer = io.StringIO()
    code = call_main(args, buffer, buffer)
    text = buffer.getvalue()
    out.command_output(f"$ gitlab-mci {' '.join(args)}\n{text}")
    return code, text


def call_main(args: list[str], stdout: io.TextIOBase | TextIO, stderr: io.TextIOBase | TextIO) -> int:
    """The CLI's entry point in this process, its output into ``stdout`` and ``stderr``; its exit code."""
    from gitlab_mci.cli import main

    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        try:
            main(args)
        except SystemExit as exc:
            return int(exc.code or 0)
    return 0


def expect(cond: bool, message: str) -> None:
    if not cond:
        raise DemoFailed(message)


def must(args: list[str], out: Output) -> str:
    code, text = run_cli(args, out)
    expect(code == 0, f"`gitlab-mci {' '.join(args)}` exited {code}: {text.strip().splitlines()[-1:] or ''}")
    return text


def fetch(url: str, timeout: float = 2.0) -> dict[str, Any] | None:
    """One request through the load balancer; the answering pod's JSON, or None on any failure."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            answer: dict[str, Any] = json.loads(response.read())
            return answer if response.status == 200 else None
    except (urllib.error.URLError, OSError, ValueError):
        return None


def sample(url: str, n: int, pause: float = 0.0) -> Counter[str]:
    """Who answers ``n`` requests: cluster name → count (``"error"`` for failures)."""
    seen: Counter[str] = Counter()
    for _ in range(n):
        answer = fetch(url)
        seen[str(answer.get("cluster")) if answer else "error"] += 1
        if pause:
            time.sleep(pause)
    return seen


def measure_failover(url: str, survivor: str, *, limit: float, interval: float = 0.05,
                     settle: int = 40) -> dict[str, Any]:
    """Send a request every ``interval`` from the moment of the failure, until the last ``settle`` answers all came
    from ``survivor`` (and at least ``limit`` has not passed).

    ``switch_s`` is when the unbroken run of survivor answers began: from then on every request was answered by the
    survivor. Failures before it (requests the load balancer still sent to the failed cluster while the health checks
    were detecting the failure) are counted, not hidden.
    """
    started = time.monotonic()
    answers: list[tuple[float, str]] = []
    run_start: float | None = None
    run_length = 0
    while True:
        now = time.monotonic() - started
        answer = fetch(url)
        who = str(answer.get("cluster")) if answer else "error"
        answers.append((now, who))
        if who == survivor:
            run_start = now if run_length == 0 else run_start
            run_length += 1
            if run_length >= settle:
                break
        else:
            run_length = 0
        if now > limit:
            raise DemoFailed(f"traffic did not settle on {survivor} within {limit:.1f}s")
        time.sleep(interval)
    assert run_start is not None
    before = Counter(who for t, who in answers if t < run_start)
    return {"switch_s": run_start, "before": dict(before), "errors_before": before["error"],
            "after": dict(Counter(who for t, who in answers if t >= run_start))}


def run(*, verbose: bool = False, fancy: bool | None = None, requests: int = 40,
        listener: Callable[[Any, str, int], str] | None = None) -> Report:
    """Run the demo; the report says what held."""
    return on_simulator(
        {"operationLatency": 0.05, "managedCertDelay": 1.0},
        lambda sim, tmp, out, report: _story(sim, tmp, out, report, requests, listener or simulated_url),
        verbose=verbose, fancy=fancy)


Story = Callable[[Any, Path, Output, Report], None]  # (simulator, scratch directory, output, report)


def on_simulator(spec: dict[str, Any], story: Story, *, verbose: bool, fancy: bool | None) -> Report:
    """Tell ``story`` on a fresh simulator of the demo's clusters (``spec`` adds to the simulator's spec) in a
    scratch directory; the environment the story changes is put back after. A step that fails ends the story
    (:class:`Stopped`); the report says what held."""
    from gitlab_mci.sim.runtime import Simulator
    from gitlab_mci.sim.spec import parse_spec

    fancy = (not os.environ.get("CI")) and os.isatty(1) if fancy is None else fancy
    out = Output(fancy=fancy, verbose=verbose)
    report = Report()
    parsed = parse_spec({"project": "demo-project", **spec,
                         "clusters": [{"name": n, "location": z, "nodes": 2} for n, z in ENVIRONMENTS]})
    saved_env = dict(os.environ)
    with tempfile.TemporaryDirectory(prefix="gitlab-mci-demo-") as tmp, Simulator(parsed) as sim:
        try:
            story(sim, Path(tmp), out, report)
        except Stopped:
            pass
        finally:
            os.environ.clear()
            os.environ.update(saved_env)
    return report


def simulated_url(sim: Any, vip: str, port: int) -> str:
    """Where the simulator's data plane serves ``vip:port`` (a demo's default listener)."""
    url: str = sim.dataplane.url_for(vip, port)
    return url


def deploy_app(sim: Any, tmp: Path, out: Output, report: Report) -> str:
    """The simulator's files and environment, then the app deployed to every environment as the pipeline does it;
    returns the clusters as a --context value."""
    files = sim.write_files(tmp / "sim")
    os.environ.update(sim.env(files))
    for key in ("GITLAB_CI", "HELM_UPGRADE_EXTRA_ARGS", "KUBE_CONTEXT", "MCI_LB_NAME"):
        os.environ.pop(key, None)
    contexts = ",".join(name for name, _ in ENVIRONMENTS)

    with out.step(report, f"simulator up: {', '.join(f'{n} ({z})' for n, z in ENVIRONMENTS)}") as step:
        step.detail = f"Compute at {sim.compute_url}"

    values = tmp / "auto-deploy-values.yaml"
    for env, _zone in ENVIRONMENTS:
        with out.step(report, f"pipeline, environment {env}: values, HELM_UPGRADE_EXTRA_ARGS, deploy, pin") as step:
            os.environ.update({"KUBE_CONTEXT": env, "CI_ENVIRONMENT_SLUG": env, "HELM_RELEASE_NAME": RELEASE,
                               "MCI_NODE_PORT": NODE_PORT, "KUBE_NAMESPACE": "default"})
            must(["helm", "values", "--values-file", str(values)], out)
            extra = must(["helm", "extra-args", "--values-file", str(values), "--extra-args", "--atomic"], out).strip()
            must(["sim", "deploy", "--extra-args", extra], out)
            must(["nodeport", "pin"], out)
            step.detail = f"Service {RELEASE}-auto-deploy on node port {NODE_PORT}"
    for key in ("KUBE_CONTEXT", "CI_ENVIRONMENT_SLUG"):
        os.environ.pop(key, None)

    with out.step(report, "node port verified in every cluster"):
        must(["nodeport", "verify", "--context", contexts], out)
    return contexts


def _story(sim: Any, tmp: Path, out: Output, report: Report, requests: int,
           listener: Callable[[Any, str, int], str]) -> None:
    contexts = deploy_app(sim, tmp, out, report)

    dotenv = tmp / "mci.env"
    with out.step(report, f"load balancer {LB}: apply") as step:
        started = time.monotonic()
        must(["lb", "apply", "--lb", LB, "--context", contexts, "--service", f"{RELEASE}-auto-deploy",
               "--port", "web", "--check-interval-sec", str(CHECK_INTERVAL),
               "--unhealthy-threshold", str(UNHEALTHY_THRESHOLD), "--dotenv", str(dotenv)], out)
        report.figures["apply_s"] = round(time.monotonic() - started, 2)
        found = dict(line.split("=", 1) for line in dotenv.read_text().split())
        vip = found["MCI_VIP"]
        url = listener(sim, vip, 80)
        step.detail = f"VIP {vip}, served locally at {url}"
        report.figures["vip"] = vip
        must(["lb", "apply", "--lb", LB, "--context", contexts, "--service", f"{RELEASE}-auto-deploy",
               "--port", "web", "--check-interval-sec", str(CHECK_INTERVAL),
               "--unhealthy-threshold", str(UNHEALTHY_THRESHOLD)], out)

    with out.step(report, "every cluster and zone has healthy backends (getHealth)"):
        must(["lb", "status", "--lb", LB, "--context", contexts, "--wait", "30"], out)

    with out.step(report, f"{requests} requests: both clusters serve") as step:
        seen = sample(url, requests)
        step.detail = ", ".join(f"{k} {v}" for k, v in sorted(seen.items()))
        expect(seen["error"] == 0, f"{seen['error']} request(s) failed")
        expect(all(seen[n] > 0 for n, _ in ENVIRONMENTS), "not every cluster answered")
        report.figures["before"] = dict(seen)

    detection = CHECK_INTERVAL * UNHEALTHY_THRESHOLD + CHECK_INTERVAL
    with out.step(report, "prod1 fails: traffic moves to prod2") as step:
        sim.dataplane.fail("prod1")
        failover = measure_failover(url, "prod2", limit=detection * 4 + 2)
        report.figures["failover"] = failover
        after = failover["after"]
        step.detail = (f"all traffic on prod2 after {failover['switch_s']:.1f}s (health check detection "
                       f"{detection}s); then {sum(after.values())} requests: "
                       + ", ".join(f"{k} {v}" for k, v in sorted(after.items())))
        expect(failover["switch_s"] <= detection + 0.5, f"failover took {failover['switch_s']:.1f}s, more than "
                f"the health checks' {detection}s")
        expect(set(after) == {"prod2"}, "requests failed or reached prod1 after the failover")

    with out.step(report, "prod1 heals: both clusters serve again") as step:
        sim.dataplane.heal("prod1")
        deadline = time.monotonic() + detection * 4
        while True:
            seen = sample(url, 10, pause=0.05)
            if seen["prod1"] and seen["prod2"]:
                break
            expect(time.monotonic() < deadline, "prod1 did not come back")
        step.detail = ", ".join(f"{k} {v}" for k, v in sorted(seen.items()))

    with out.step(report, "teardown: lb destroy --release-ip leaves nothing behind") as step:
        must(["lb", "destroy", "--lb", LB, "--context", contexts, "--release-ip"], out)
        left = [r["name"] for r in sim.compute.resources() if str(r.get("description", "")).startswith(
            f"gitlab-mci:lb={LB} ")]
        expect(not left, f"left behind: {', '.join(left)}")
        expect(fetch(url, timeout=0.5) is None, "the VIP still answers")
        step.detail = "0 owned resources"


def summary(report: Report) -> str:
    """The demo's last line: where it failed, or what it measured."""
    fo = report.figures.get("failover", {})
    return summary_line(report, "demo", (
        f"apply {report.figures.get('apply_s')}s; failover {fo.get('switch_s', 0):.1f}s with "
        f"{fo.get('errors_before', 0)} failed request(s) during detection and none after"))


def summary_line(report: Report, demo: str, figures: str) -> str:
    """``<demo> FAILED at: <the first step that failed>``, else ``<demo> passed: <steps>; <figures>``."""
    failed = [s for s in report.steps if not s.ok]
    total = sum(s.seconds for s in report.steps)
    if failed:
        return f"{demo} FAILED at: {failed[0].title} — {failed[0].detail} ({total:.1f}s)"
    return f"{demo} passed: {len(report.steps)} steps in {total:.1f}s; {figures}"
