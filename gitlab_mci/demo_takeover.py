"""``gitlab-mci demo --takeover``: the recipe's kubemci load balancer taken over by gitlab-mci, traffic flowing.

The recipe's world on the simulator: the app deployed to prod1 and prod2 as the pipeline does it, then the classic
load balancer `kubemci create` built (``gitlab-mci sim kubemci``) on a reserved global address with an uploaded
certificate. Requests go through that address, over HTTP and HTTPS, from before ``gitlab-mci lb takeover`` until
after the old chain is gone; the demo counts every answer and fails if a single request failed. Every step is the
real command, run in this process against the simulator.
"""

from __future__ import annotations

import io
import json
import ssl
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

from gitlab_mci.demo import (
    CHECK_INTERVAL,
    ENVIRONMENTS,
    RELEASE,
    UNHEALTHY_THRESHOLD,
    Output,
    Report,
    call_main,
    deploy_app,
    expect,
    must,
    on_simulator,
    simulated_url,
    summary_line,
)
from gitlab_mci.selfsigned import self_signed

LB = "shop"  # the kubemci load balancer's name, kept for gitlab-mci's
ADDRESS = "web-ip"  # the recipe's `gcloud compute addresses create web-ip --global`
STEP_WAIT = 1.0  # seconds each migration step is held
RATE = 40.0  # requests per second in all, half over HTTP and half over HTTPS (the issue asks for at least 20)


# ---------------------------------------------------------------------------------------------------------------------
# Traffic


@dataclass(frozen=True)
class Answer:
    """One request through the load balancer: when it was sent, where, and what came back."""

    t: float  # monotonic time it was sent
    port: int
    status: int  # HTTP status; 0 when nothing answered
    path: str  # which of Google's front ends served it: classic | managed (the simulator's header)
    cluster: str  # the answering pod's cluster

    @property
    def ok(self) -> bool:
        return self.status == 200


def _insecure() -> ssl.SSLContext:
    context = ssl.create_default_context()
    context.check_hostname, context.verify_mode = False, ssl.CERT_NONE  # the demo's self-signed certificate
    return context


def ask(url: str, port: int, context: ssl.SSLContext | None = None) -> Answer:
    """One GET of ``url``; never raises (a failure is an answer with its status, or 0)."""
    from gitlab_mci.sim.dataplane import PATH_HEADER

    sent = time.monotonic()
    try:
        with urllib.request.urlopen(url.rstrip("/") + "/", timeout=5, context=context) as resp:
            body = json.loads(resp.read())
            return Answer(sent, port, resp.status, resp.headers.get(PATH_HEADER, ""), str(body.get("cluster", "")))
    except urllib.error.HTTPError as exc:
        return Answer(sent, port, exc.code, exc.headers.get(PATH_HEADER, "") if exc.headers else "", "")
    except (OSError, ValueError):
        return Answer(sent, port, 0, "", "")


class Traffic:
    """Requests at a steady rate through each URL (port → URL), one thread per URL, until stopped."""

    def __init__(self, urls: dict[int, str], rate: float = RATE) -> None:
        self.urls, self.interval = urls, len(urls) / rate
        self._answers: list[Answer] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._send, args=(port, url), daemon=True,
                                          name=f"traffic-{port}") for port, url in urls.items()]
        self.started = self.stopped = 0.0

    def _send(self, port: int, url: str) -> None:
        context = _insecure() if url.startswith("https:") else None
        due = time.monotonic()
        while not self._stop.is_set():
            answer = ask(url, port, context)
            with self._lock:
                self._answers.append(answer)
            due = max(due + self.interval, time.monotonic() - self.interval)  # a slow answer: no burst after it
            self._stop.wait(max(0.0, due - time.monotonic()))

    def __enter__(self) -> Traffic:
        self.started = time.monotonic()
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()

    def stop(self) -> None:
        if not self._stop.is_set():
            self._stop.set()
            for thread in self._threads:
                thread.join(timeout=10)
            self.stopped = time.monotonic()

    @property
    def answers(self) -> list[Answer]:
        with self._lock:
            return list(self._answers)

    def more(self, n: int, timeout: float = 30.0) -> list[Answer]:
        """Wait (bounded) until ``n`` more requests have been answered; returns them."""
        start = len(self.answers)
        deadline = time.monotonic() + timeout
        while len(self.answers) < start + n:
            if time.monotonic() > deadline:
                raise TimeoutError(f"only {len(self.answers) - start} of {n} requests answered in {timeout:.0f}s")
            self._stop.wait(0.02)
        return self.answers[start:]


def tally(answers: list[Answer]) -> dict[str, Any]:
    """Counts of a list of answers: served, failed, by path, by cluster, by port."""
    return {"requests": len(answers), "served": sum(a.ok for a in answers),
            "failed": sum(not a.ok for a in answers),
            "paths": dict(sorted(Counter(a.path for a in answers if a.ok).items())),
            "clusters": dict(sorted(Counter(a.cluster for a in answers if a.ok).items())),
            "ports": dict(sorted(Counter(str(a.port) for a in answers).items()))}


def _counts(counter: dict[str, int]) -> str:
    return ", ".join(f"{k} {v}" for k, v in counter.items()) or "none"


# ---------------------------------------------------------------------------------------------------------------------
# Running the takeover with its progress timed


class _TimedLines(io.TextIOBase):
    """A stderr that keeps each line with the time it was written: the takeover's progress, one line per phase."""

    def __init__(self) -> None:
        self.lines: list[tuple[float, str]] = []
        self._partial = ""

    def write(self, text: str) -> int:
        self._partial += text
        while "\n" in self._partial:
            line, self._partial = self._partial.split("\n", 1)
            if line.strip():
                self.lines.append((time.monotonic(), line))
        return len(text)


@dataclass
class Phase:
    """One progress line of the takeover and what happened until the next: its duration and the traffic in it."""

    line: str
    seconds: float
    traffic: dict[str, Any]


def run_timed(args: list[str], out: Output) -> tuple[int, str, list[tuple[float, str]], float, float]:
    """A gitlab-mci command in this process: (exit code, stdout, stderr lines with their times, start, end)."""
    stdout, stderr = io.StringIO(), _TimedLines()
    started = time.monotonic()
    code = call_main(args, stdout, stderr)
    ended = time.monotonic()
    stderr.write("\n")
    out.command_output(f"$ gitlab-mci {' '.join(args)}\n{stdout.getvalue()}"
                       + "".join(f"{line}\n" for _, line in stderr.lines))
    return code, stdout.getvalue(), stderr.lines, started, ended


def phases(lines: list[tuple[float, str]], started: float, ended: float, answers: list[Answer]) -> list[Phase]:
    """The takeover writes a progress line when a step is done: each line ends a phase that began with the line
    before it (the first with the command); what follows the last line is the command's own end."""
    result = []
    begin = started
    for t, line in [*lines, (ended, "(done)")]:
        if line == "(done)" and t - begin < 0.05:
            break
        if "[wait]" in line and t - begin < 0.1:
            continue  # backends already healthy: the check belongs to the step it let through
        result.append(Phase(line.strip(), t - begin, tally([a for a in answers if begin <= a.t < t])))
        begin = t
    return result


# ---------------------------------------------------------------------------------------------------------------------
# The story


def run(*, verbose: bool = False, fancy: bool | None = None, rate: float = RATE, scheme: str = "EXTERNAL_MANAGED",
        operation_latency: float = 0.05, listener: Callable[[Any, str, int], str] | None = None) -> Report:
    """Run the takeover demo; the report says what held, its figures what was measured."""
    return on_simulator(
        {"operationLatency": operation_latency},
        lambda sim, tmp, out, report: _story(sim, tmp, out, report, rate, scheme, listener or simulated_url),
        verbose=verbose, fancy=fancy)


def _story(sim: Any, tmp: Path, out: Output, report: Report, rate: float, scheme: str,
           listener: Callable[[Any, str, int], str]) -> None:
    from gitlab_mci.sim.kubemci import KubemciSpec

    contexts = deploy_app(sim, tmp, out, report)
    state_dir = str(tmp / "sim")
    old = KubemciSpec(LB, tuple(contexts.split(","))).names

    with out.step(report, f"the recipe's load balancer: sim kubemci --lb {LB} --static-ip {ADDRESS} "
                          "(HTTPS, certificate)") as step:
        cert, key = self_signed("shop.example.com")
        (tmp / "shop.crt").write_text(cert)
        (tmp / "shop.key").write_text(key)
        made = json.loads(must(["sim", "kubemci", "--lb", LB, "--static-ip", ADDRESS, "--context", contexts,
                                "--certificate-file", str(tmp / "shop.crt"), "--key-file", str(tmp / "shop.key"),
                                "--state-dir", state_dir, "-o", "json"], out))
        vip = made["vip"]
        report.figures["vip"] = vip
        expect(sim.dataplane.wait_health("HEALTHY", timeout=30), "kubemci's backends never became healthy")
        step.detail = f"classic chain {old['backend_service']} on {vip}:80 and :443, {len(made['resources'])} resources"

    traffic = Traffic({port: listener(sim, vip, port) for port in (80, 443)}, rate)
    with traffic:
        with out.step(report, f"traffic through {ADDRESS}: HTTP and HTTPS, {rate:g} requests/s") as step:
            first = tally(traffic.more(20))
            step.detail = f"{first['served']} served by {_counts(first['clusters'])}"
            expect(first["failed"] == 0, f"{first['failed']} request(s) failed before the takeover")
            expect(set(first["clusters"]) == {n for n, _ in ENVIRONMENTS}, "not every cluster answered")

        takeover = ["lb", "takeover", "--lb", LB, "--context", contexts, "--address", ADDRESS,
                    "--service", f"{RELEASE}-auto-deploy", "--port", "web", "--scheme", scheme,
                    "--check-interval-sec", str(CHECK_INTERVAL), "--unhealthy-threshold", str(UNHEALTHY_THRESHOLD),
                    # Each migration step held a second, so the traffic shows the canary's split (Google: minutes).
                    "--step-wait", str(STEP_WAIT)]
        with out.step(report, f"lb takeover --lb {LB} --address {ADDRESS} --scheme {scheme}") as step:
            mark = len(sim.journal.writes("compute"))
            code, _, lines, started, ended = run_timed(takeover, out)
            report.figures["takeover_s"] = round(ended - started, 2)
            report.figures["takeover_writes"] = len(sim.journal.writes("compute")) - mark
            during = [a for a in traffic.answers if started <= a.t < ended]
            report.figures["during"] = tally(during)
            report.figures["phases"] = [vars(p) for p in phases(lines, started, ended, traffic.answers)]
            step.detail = (f"{ended - started:.1f}s, {report.figures['takeover_writes']} writes; "
                           f"{report.figures['during']['served']} requests served meanwhile, "
                           f"{report.figures['during']['failed']} failed")
            expect(code == 0, f"`gitlab-mci {' '.join(takeover)}` exited {code}: "
                              f"{lines[-1][1] if lines else ''}")
        for phase in report.figures["phases"]:
            t = phase["traffic"]
            text = phase["line"].removeprefix("gitlab-mci: ")
            out.note(f"{phase['seconds']:5.1f}s {t['served']:>4} served {t['failed']} failed "
                     f"{'(' + _counts(t['paths']) + ')':<24} {text[:100] + '…' if len(text) > 101 else text}")

        with out.step(report, "takeover again: nothing to do (0 writes)") as step:
            mark = len(sim.journal.writes("compute"))
            code, _, lines, started, ended = run_timed(takeover, out)
            writes = len(sim.journal.writes("compute")) - mark
            report.figures["rerun"] = {"seconds": round(ended - started, 2), "writes": writes}
            step.detail = f"{ended - started:.1f}s"
            expect(code == 0, f"the second takeover exited {code}: {lines[-1][1] if lines else ''}")
            expect(writes == 0, f"the second takeover made {writes} write(s)")

        with out.step(report, f"the old chain is gone; the forwarding rules keep {ADDRESS}") as step:
            left = _kubemci_left(sim, old)
            expect(not left, f"left of kubemci's chain: {', '.join(left)}")
            rules = [r for r in sim.compute.resources("globalForwardingRules") if r.get("IPAddress") == vip]
            schemes = sorted({r.get("loadBalancingScheme", "") for r in rules})
            expect(sorted(r.get("portRange") for r in rules) == ["443-443", "80-80"],
                   f"the rules on {vip}: {[r.get('portRange') for r in rules]}")
            expect(schemes == [scheme], f"the rules on {vip} are {', '.join(schemes)}, not {scheme}")
            address = [a for a in sim.compute.resources("globalAddresses") if a.get("name") == ADDRESS]
            expect(bool(address) and address[0].get("address") == vip, f"the address {ADDRESS} is gone")
            certificate = old["certificate"]
            expect(any(c.get("name") == certificate for c in sim.compute.resources("sslCertificates")),
                   f"the user's certificate {certificate} was deleted")
            step.detail = (f"{', '.join(sorted(r['name'] for r in rules))} on {vip} ({scheme}), certificate "
                           f"{certificate} kept; kubemci's proxies, URL map, backend service, health check and "
                           "firewall deleted")

        with out.step(report, "every cluster and zone has healthy backends (getHealth)"):
            must(["lb", "status", "--lb", LB, "--context", contexts, "--wait", "30"], out)

        with out.step(report, "traffic after the takeover") as step:
            after = tally(traffic.more(20))
            step.detail = f"{after['served']} served by {_counts(after['clusters'])} on {_counts(after['paths'])}"
            expect(after["failed"] == 0, f"{after['failed']} request(s) failed after the takeover")
            path = "managed" if scheme == "EXTERNAL_MANAGED" else "classic"
            expect(set(after["paths"]) == {path}, f"served on {_counts(after['paths'])}, not all on {path}")
        traffic.stop()

    with out.step(report, f"traffic through {ADDRESS}, from before the takeover until after") as step:
        total = tally(traffic.answers)
        seconds = traffic.stopped - traffic.started
        report.figures["traffic"] = {**total, "seconds": round(seconds, 2),
                                     "rate": round(total["requests"] / seconds, 1) if seconds else 0.0}
        step.detail = (f"{total['served']} served, {total['failed']} failed in {seconds:.1f}s "
                       f"({report.figures['traffic']['rate']:g}/s); paths {_counts(total['paths'])}; "
                       f"clusters {_counts(total['clusters'])}")
        expect(total["failed"] == 0, f"{total['failed']} request(s) failed")

    with out.step(report, "teardown: lb destroy leaves nothing of gitlab-mci's, the address stays") as step:
        must(["lb", "destroy", "--lb", LB, "--context", contexts], out)
        rules = [r["name"] for r in sim.compute.resources("globalForwardingRules") if r.get("IPAddress") == vip]
        expect(not rules, f"forwarding rules left on {vip}: {', '.join(rules)}")
        expect(any(a.get("name") == ADDRESS for a in sim.compute.resources("globalAddresses")),
               f"the user's address {ADDRESS} was released")
        step.detail = f"{ADDRESS} ({vip}) kept: it is the user's"


def _kubemci_left(sim: Any, names: dict[str, str]) -> list[str]:
    """kubemci's resources still there, but for what a takeover keeps: the forwarding rules (adopted, on the
    user's address) and the user's certificate."""
    kept = {names["http_rule"], names["https_rule"], names["certificate"]}
    gone = set(names.values()) - kept
    present = {str(r.get("name")) for r in sim.compute.resources()}
    return sorted(gone & present)


def summary(report: Report) -> str:
    """The takeover demo's last line: where it failed, or what it measured."""
    t = report.figures.get("traffic", {})
    return summary_line(report, "takeover demo", (
        f"takeover {report.figures.get('takeover_s')}s in {len(report.figures.get('phases', []))} phases; "
        f"{t.get('served', 0)} requests served through {ADDRESS} ({t.get('rate', 0):g}/s), "
        f"{t.get('failed', 0)} failed"))
