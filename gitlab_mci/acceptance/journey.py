"""The user's journey, step by step, each step the real gitlab-mci command with the arguments a user would type.

Commands run in this process through the CLI's entry point (``gitlab_mci.cli.main``), so a run pays the Google
libraries' import once, not once per command; Helm (on real clusters) and kubectl run as the user's own tools.
Every expectation is checked, and whatever the run created is removed in ``finally`` — or, after a crash, by
``gitlab-mci acceptance cleanup --run-id``.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import shlex
import ssl
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

from gitlab_mci.acceptance import inventory
from gitlab_mci.acceptance.target import CRASH_AFTER, RUN_LABEL, RunNames, Target
from gitlab_mci.errors import UserError

# In order; `GITLAB_MCI_ACCEPTANCE_CRASH_AFTER=<step>` exits hard right after one of them.
STEPS = ("preflight", "gitlab", "namespaces", "helm-values", "deploy", "nodeport", "lb-apply", "lb-status",
         "traffic", "reapply", "drain", "lb-destroy", "hosted-apply", "hosted-traffic", "hosted-delete",
         "gitlab-delete", "namespaces-delete", "verify")
# Variables a pipeline or a shell may have set that would change what the journey's commands do: the journey
# passes everything as options, and runs without these.
_SCRUB = re.compile(r"^(MCI_|KUBE_CONTEXT$|KUBE_NAMESPACE$|HELM_UPGRADE_|HELM_RELEASE_NAME$|CI_ENVIRONMENT_SLUG$"
                    r"|GITLAB_CI$)")
HEALTH = ["--check-interval-sec", "1", "--unhealthy-threshold", "2"]


class Failed(UserError):
    """An expectation of the journey did not hold."""


def _expect(cond: bool, message: str) -> None:
    if not cond:
        raise Failed(message)


class Journey:
    """One run: its names, its target, its output."""

    def __init__(self, target: Target, names: RunNames, *, echo: Callable[[str], None] = print,
                 verbose: bool = False, requests: int = 40) -> None:
        self.target, self.names, self.echo, self.verbose, self.requests = target, names, echo, verbose, requests
        self.tmp = Path(tempfile.mkdtemp(prefix=f"gitlab-mci-acceptance-{names.run_id}-"))
        self.node_port = ""
        self.extra_args = ""
        self.contexts = ",".join(target.contexts)
        self.url = ""
        self.https_url = ""
        self.hosted_url = ""
        self.tls: ssl.SSLContext | None = None
        # Request timing: the simulator converges in seconds; Google's front ends take minutes to program a new
        # load balancer and tens of seconds to act on a health change.
        self.patience = 900.0 if target.live else 30.0

    # --- running commands ----------------------------------------------------------------------------------

    def cli(self, *args: str, expect: int | tuple[int, ...] = 0) -> str:
        """``gitlab-mci ARGS`` through the CLI's entry point; its output. Exit codes other than ``expect`` fail."""
        from gitlab_mci.cli import main

        buffer = io.StringIO()
        code = 0
        with contextlib.redirect_stdout(buffer), contextlib.redirect_stderr(buffer):
            try:
                main(list(args))
            except SystemExit as exc:
                code = int(exc.code or 0) if not isinstance(exc.code, str) else 1
        text = buffer.getvalue()
        wanted = expect if isinstance(expect, tuple) else (expect,)
        self.echo(f"    $ gitlab-mci {shlex.join(args)}  → exit {code}")
        if self.verbose or code not in wanted:
            for line in text.rstrip().splitlines():
                self.echo(f"      | {line}")
        _expect(code in wanted, f"`gitlab-mci {shlex.join(args)}` exited {code}, expected "
                                f"{' or '.join(map(str, wanted))}")
        return text

    def kubectl(self, context: str, *args: str, stdin: str | None = None) -> str:
        self.echo(f"    $ kubectl --context {context} {shlex.join(args)}")
        if stdin is None:
            return inventory.kubectl(self.target, context, *args)
        base = ["kubectl", "--context", context,
                *(["--kubeconfig", self.target.kubeconfig] if self.target.kubeconfig else [])]
        done = subprocess.run([*base, *args], input=stdin, capture_output=True, text=True, timeout=120, check=False)
        _expect(done.returncode == 0, f"kubectl {' '.join(args)}: {done.stderr.strip()}")
        return done.stdout

    @contextlib.contextmanager
    def step(self, name: str, title: str) -> Iterator[None]:
        assert name in STEPS
        started = time.monotonic()
        self.echo(f"==> {name}: {title}")
        yield
        self.echo(f"    ✓ {name} ({time.monotonic() - started:.1f}s)")
        if os.environ.get(CRASH_AFTER) == name:
            self.echo(f"    {CRASH_AFTER}={name}: exiting hard, as a killed job would")
            os._exit(137)

    # --- the story -----------------------------------------------------------------------------------------

    def run(self) -> None:
        """Every step in order. The caller cleans up in ``finally``."""
        n, t = self.names, self.target
        with self.step("preflight", "no earlier run left anything behind"):
            preflight(t)
        if t.gitlab_url:
            self.gitlab()
        with self.step("namespaces", f"namespace {n.namespace} in {self.contexts}"):
            for context in t.contexts:
                manifest = {"apiVersion": "v1", "kind": "Namespace",
                            "metadata": {"name": n.namespace, "labels": {RUN_LABEL: n.run_id}}}
                self.kubectl(context, "apply", "-f", "-", stdin=json.dumps(manifest))
        with self.step("helm-values", "a node port free everywhere; helm values and HELM_UPGRADE_EXTRA_ARGS"):
            self.node_port = self.cli("nodeport", "choose", "--context", self.contexts).strip()
            values = self.tmp / "mci-values.yaml"
            common = ["--node-port", self.node_port, "--internal-port", "80", "--values-file", str(values),
                      "--deploy-values-file", str(self.tmp / "no-deploy-values.yaml")]
            self.cli("helm", "values", *common)
            self.extra_args = self.cli("helm", "extra-args", *common, "--extra-args", "--atomic").strip()
            _expect(str(values) in self.extra_args, f"HELM_UPGRADE_EXTRA_ARGS does not pass {values}")
        with self.step("deploy", f"release {n.release} in each cluster ("
                       + ("helm upgrade --install" if t.live else "the simulator's stand-in, sim deploy") + ")"):
            for context in t.contexts:
                self.deploy(context)
        with self.step("nodeport", f"pin node port {self.node_port} in each cluster, verify it is the same"):
            for context in t.contexts:
                self.cli("nodeport", "pin", "--context", context, "--release", n.release, "-n", n.namespace,
                         "--node-port", self.node_port)
            self.cli("nodeport", "verify", "--context", self.contexts, "--release", n.release, "-n", n.namespace,
                     "--node-port", self.node_port)
        lb = ["--lb", n.lb, "--context", self.contexts, "-n", n.namespace]
        cert, key = self.certificate()
        route = ["--service", n.service, "--port", "web", "--certificate-file", str(cert), "--key-file", str(key),
                 *HEALTH]
        with self.step("lb-apply", f"lb plan shows changes, lb apply creates load balancer {n.lb} (HTTP and HTTPS)"):
            self.cli("lb", "plan", *lb, *route, "--detailed-exitcode", expect=2)
            applied = json.loads(self.cli("lb", "apply", *lb, *route, "-o", "json"))
            _expect(bool(applied["vip"]) and bool(applied["changes"]), "apply created nothing or gave no VIP")
            self.url = applied.get("served_at") or applied["url"]
            self.https_url = f"https://{applied['vip']}/" if t.live else _served(t, applied["url"], 443)
            self.echo(f"    VIP {applied['vip']} ({applied['url']}), requests go to {self.url} and {self.https_url}")
        with self.step("lb-status", "every cluster and zone has healthy backends"):
            self.cli("lb", "status", *lb, "--wait", str(int(self.patience)))
        with self.step("traffic", f"{self.requests} HTTP and {self.requests} HTTPS requests through the VIP: "
                       "both clusters answer, over TLS with the run's certificate"):
            self.echo(f"    HTTP: {_counts(self.until_both(self.url))}")
            self.echo(f"    HTTPS: {_counts(self.until_both(self.https_url))}")
        with self.step("reapply", "lb plan and lb apply again: no change"):
            self.cli("lb", "plan", *lb, *route, "--detailed-exitcode")
            again = json.loads(self.cli("lb", "apply", *lb, *route, "-o", "json"))
            _expect(again["changes"] == [], f"re-apply changed {len(again['changes'])} resource(s)")
        first, second = t.contexts[0], t.contexts[1]
        with self.step("drain", f"scale the app in {first} to 0: traffic moves to {second}; scale back"):
            self.scale(first, 0)
            moved = self.until_only(self.url, second)
            self.echo(f"    after the drain: {_counts(moved)}")
            self.cli("lb", "status", *lb, expect=3)
            self.scale(first, 1)
            self.cli("lb", "status", *lb, "--wait", str(int(self.patience)))
            self.echo(f"    back: {_counts(self.until_both(self.url))}")
        with self.step("lb-destroy", f"lb destroy --release-ip removes load balancer {n.lb}"):
            self.cli("lb", "destroy", *lb, "--release-ip")
            left = [w for w in inventory.scan(t, n.run_id).of(n.run_id)
                    if ": namespace " not in w and not w.startswith("GitLab variable")]
            _expect(not left, f"lb destroy left: {', '.join(left)}")
        if t.hosted:
            self.hosted()
        if t.gitlab_url:
            with self.step("gitlab-delete", "delete the run's CI/CD variables"):
                delete_gitlab_variables(t, n, self.echo)
        with self.step("namespaces-delete", f"delete namespace {n.namespace} (and the release in it)"):
            delete_namespaces(t, n, self.echo)
        with self.step("verify", f"nothing of run {n.run_id} is left"):
            left = inventory.scan(t, n.run_id).of(n.run_id)
            _expect(not left, f"left behind: {', '.join(left)}")

    def gitlab(self) -> None:
        """The GitLab helpers against the GitLab project: variables per environment (twice: the second changes
        nothing), and the deployment gate, which must refuse environments that never deployed."""
        n, t = self.names, self.target
        where = ["-p", t.gitlab_project, "--url", t.gitlab_url]
        with self.step("gitlab", f"gitlab setup: CI/CD variables of environments {n.environment('…')}; gitlab gate"):
            envs = self.tmp / "environments.yaml"
            envs.write_text(json.dumps({"environments": {
                n.environment(c): {"MCI_ACCEPTANCE_RUN": n.run_id, "MCI_LB_NAME": n.lb} for c in t.contexts}}))
            first = json.loads(self.cli("gitlab", "setup", "-f", str(envs), *where, "-o", "json"))
            _expect({v["action"] for v in first["variables"]} == {"created"}, f"setup: {first['variables']}")
            again = json.loads(self.cli("gitlab", "setup", "-f", str(envs), *where, "-o", "json"))
            _expect({v["action"] for v in again["variables"]} == {"unchanged"}, "a second setup changed variables")
            gate = self.cli("gitlab", "gate", "-e", ",".join(n.environment(c) for c in t.contexts),
                            "--sha", "0" * 40, *where, expect=1)
            _expect(n.environment(t.contexts[0]) in gate, "the gate's refusal does not name the environment")

    def hosted(self) -> None:
        """Hosted mode: the same app behind GKE's own Multi Cluster Ingress."""
        n, t = self.names, self.target
        fleet = ",".join(t.fleet_contexts)
        where = ["--lb", n.hosted_lb, "--context", fleet, "--config-context", t.contexts[0], "-n", n.namespace]
        with self.step("hosted-apply", f"MultiClusterIngress {n.hosted_lb}: hosted plan, apply, status"):
            if not t.live:  # on a real project the fleet is a prerequisite the maintainer sets up (see the docs)
                self.cli("fleet", "enable", "--context", fleet, "--config-context", t.contexts[0])
            self.cli("hosted", "plan", *where, "--service", n.service, "--port", "web", "--detailed-exitcode",
                     expect=2)
            applied = json.loads(self.cli("hosted", "apply", *where, "--service", n.service, "--port", "web",
                                          "--timeout", str(int(self.patience)), "-o", "json"))
            _expect(bool(applied.get("vip")), "hosted apply gave no VIP")
            self.hosted_url = applied["url"]
            self.cli("hosted", "status", *where, "--wait", str(int(self.patience)))
        with self.step("hosted-traffic", "requests through the hosted VIP: both clusters answer"):
            url = self.hosted_url if t.live else _served(t, self.hosted_url, 80)
            self.echo(f"    {_counts(self.until_both(url))}")
        with self.step("hosted-delete", f"hosted delete removes {n.hosted_lb} and what GKE made for it"):
            self.cli("hosted", "delete", *where, "--timeout", str(int(self.patience)))

    # --- steps' helpers ------------------------------------------------------------------------------------

    def certificate(self) -> tuple[Path, Path]:
        """A self-signed certificate for the run (acc-<id>.example), made here and never kept; requests over HTTPS
        trust exactly it, so an answer proves the load balancer serves the run's certificate."""
        from gitlab_mci.selfsigned import self_signed

        pem, key = self_signed(f"{self.names.lb}.example", days=2)
        cert_path, key_path = self.tmp / "run.crt", self.tmp / "run.key"
        cert_path.write_text(pem)
        key_path.touch(mode=0o600)
        key_path.write_text(key)
        self.tls = ssl.create_default_context(cadata=pem)
        self.tls.check_hostname = False  # the VIP is an IP address; the chain must still be the run's certificate
        return cert_path, key_path

    def deploy(self, context: str) -> None:
        n = self.names
        if not self.target.live:
            self.cli("sim", "deploy", "--context", context, "--release", n.release, "-n", n.namespace,
                     "--extra-args", self.extra_args)
            return
        repository, _, tag = self.target.image.rpartition(":")
        helm = ["helm", "upgrade", "--install", n.release, *shlex.split(self.target.chart),
                "--namespace", n.namespace, "--kube-context", context, "--wait", "--timeout", "10m",
                *(["--kubeconfig", self.target.kubeconfig] if self.target.kubeconfig else []),
                "--set", f"image.repository={repository}", "--set", f"image.tag={tag}",
                "--set", "ingress.enabled=false", *shlex.split(self.extra_args)]
        self.echo(f"    $ {shlex.join(helm)}")
        done = subprocess.run(helm, capture_output=True, text=True, timeout=900, check=False)
        _expect(done.returncode == 0, f"helm upgrade --install in {context}: "
                                      f"{(done.stderr.strip().splitlines() or ['(no output)'])[-1]}")

    def scale(self, context: str, replicas: int) -> None:
        patch = json.dumps({"spec": {"replicas": replicas}})
        self.kubectl(context, "-n", self.names.namespace, "patch", "deployment", self.names.release,
                     "--type", "merge", "-p", patch)

    def pods(self) -> dict[str, str]:
        """Pod name → context, read from each cluster: which cluster answered a request."""
        out: dict[str, str] = {}
        for context in self.target.contexts:
            listing = json.loads(self.kubectl(context, "-n", self.names.namespace, "get", "pods", "-o", "json"))
            out.update({p["metadata"]["name"]: context for p in listing.get("items") or []})
        return out

    def who(self, url: str, pods: dict[str, str]) -> str:
        """The context whose pod answered one request, ``error`` for a failed one, ``unknown`` for a stranger."""
        pod = answering_pod(url, tls=self.tls)
        if pod is None:
            return "error"
        if pod not in pods:
            pods.update(self.pods())
        return pods.get(pod, "unknown")

    def until_both(self, url: str) -> Counter[str]:
        """Wait until requests succeed, then send ``requests`` of them: every one answered, by both clusters."""
        pods = self.pods()
        deadline = time.monotonic() + self.patience
        while self.who(url, pods) == "error":  # a new Google load balancer answers 404/502 for minutes
            _expect(time.monotonic() < deadline, f"{url} did not answer within {self.patience:.0f}s")
            time.sleep(1.0)
        seen: Counter[str] = Counter(self.who(url, pods) for _ in range(self.requests))
        _expect(seen["error"] == 0 and seen["unknown"] == 0, f"failed or unexplained answers: {_counts(seen)}")
        _expect(all(seen[c] for c in self.target.contexts), f"not every cluster answered: {_counts(seen)}")
        return seen

    def until_only(self, url: str, survivor: str, settle: int = 20) -> Counter[str]:
        """Send requests until the last ``settle`` all came from ``survivor``; then those are the answer."""
        pods = self.pods()
        deadline = time.monotonic() + self.patience
        run: Counter[str] = Counter()
        while run[survivor] < settle:
            who = self.who(url, pods)
            run = run + Counter({who: 1}) if who == survivor else Counter()
            _expect(time.monotonic() < deadline, f"traffic did not move to {survivor} within {self.patience:.0f}s")
            time.sleep(0.05)
        return run


def answering_pod(url: str, timeout: float = 5.0, tls: ssl.SSLContext | None = None) -> str | None:
    """The pod that answered one GET: the simulator's JSON ``pod``, or nginxdemos/hello's ``Server name:``."""
    try:
        with urllib.request.urlopen(url, timeout=timeout, context=tls if url.startswith("https:") else None) \
                as response:
            body = response.read().decode(errors="replace")
            if response.status != 200:
                return None
    except (urllib.error.URLError, OSError, ValueError):
        return None
    with contextlib.suppress(ValueError):
        answer = json.loads(body)
        if isinstance(answer, dict) and answer.get("pod"):
            return str(answer["pod"])
    found = re.search(r"Server name:\s*(\S+)", body)
    return found.group(1) if found else ""


def _counts(seen: Counter[str]) -> str:
    return ", ".join(f"{k} {v}" for k, v in sorted(seen.items()))


def _served(target: Target, url: str, port: int) -> str:
    """The simulator serves a VIP's port 80 or 443 on a loopback port: the URL to request instead."""
    from urllib.parse import urlsplit

    vip = urlsplit(url).hostname
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        with urllib.request.urlopen(f"{target.compute_endpoint}/_sim/state", timeout=5) as answer:
            for item in json.loads(answer.read()).get("listeners") or []:
                if item.get("vip") == vip and item.get("port") == port:
                    return f"{item['url']}/"
        time.sleep(0.1)
    raise Failed(f"the simulator serves no listener for {url}")


def preflight(target: Target) -> None:
    """Refuse to start while an earlier run's resources exist: they would confuse the checks, and cost money."""
    left = inventory.scan(target)
    if left.by_run:
        runs = sorted(left.by_run)
        detail = "; ".join(f"{r}: {', '.join(left.of(r)[:3])}{' …' if len(left.of(r)) > 3 else ''}" for r in runs)
        commands = " && ".join(f"gitlab-mci acceptance cleanup --run-id {r}" for r in runs)
        raise UserError(f"earlier acceptance run(s) left resources in {target.where} ({detail}); "
                        f"remove them first: {commands}")


def delete_namespaces(target: Target, names: RunNames, echo: Callable[[str], None]) -> None:
    """Delete the run's namespace in every cluster — only where it carries the run's label."""
    for context in target.contexts:
        listing = json.loads(inventory.kubectl(target, context, "get", "namespaces", "-l",
                                               f"{RUN_LABEL}={names.run_id}", "-o", "json"))
        if any(ns["metadata"]["name"] == names.namespace for ns in listing.get("items") or []):
            echo(f"    $ kubectl --context {context} delete namespace {names.namespace} --wait")
            inventory.kubectl(target, context, "delete", "namespace", names.namespace, "--wait=true",
                              "--timeout=600s")


def delete_gitlab_variables(target: Target, names: RunNames, echo: Callable[[str], None]) -> None:
    """Delete the run's CI/CD variables: only the run's keys, in the run's environment scopes."""
    if not target.gitlab_url:
        return
    project = inventory.gitlab_project(target)
    for _run, key, scope in inventory.gitlab_variables(target, names.run_id):
        echo(f"    delete GitLab variable {key} ({scope})")
        project.variables.delete(key, query_data={"filter[environment_scope]": scope})


def _has_mci(target: Target, names: RunNames) -> bool:
    """Whether the run's MultiClusterIngress exists in the config cluster (no such kind there: it does not)."""
    done = inventory.run_kubectl(target, target.contexts[0], "-n", names.namespace, "get", "multiclusteringress",
                                 names.hosted_lb, "--ignore-not-found", "-o", "name")
    return done.returncode == 0 and bool(done.stdout.strip())


def scrubbed_environment(target: Target) -> dict[str, str]:
    """Set the target's variables and drop those that would steer the commands elsewhere; the old environment."""
    saved = dict(os.environ)
    for key in [k for k in os.environ if _SCRUB.match(k) and k != CRASH_AFTER]:
        del os.environ[key]
    os.environ.update(target.env)
    return saved


def cleanup(target: Target, names: RunNames, echo: Callable[[str], None] = print) -> list[str]:
    """Remove everything of one run (load balancer, hosted Multi Cluster Ingress, namespaces); what is left."""
    journey = Journey(target, names, echo=echo)
    contexts = ",".join(target.contexts)
    before = inventory.scan(target, names.run_id).of(names.run_id)
    if not before:
        echo(f"nothing of run {names.run_id} in {target.where}")
        return []
    echo(f"run {names.run_id} left: {', '.join(before)}")
    errors: list[str] = []

    def attempt(*args: str) -> None:
        try:
            journey.cli(*args)
        except UserError as exc:
            errors.append(str(exc))

    compute = [w for w in before if not w.startswith("GitLab variable") and ": namespace " not in w]
    if any("/mci-" not in w for w in compute):
        attempt("lb", "destroy", "--lb", names.lb, "--context", contexts, "-n", names.namespace, "--release-ip")
    if _has_mci(target, names) or any("/mci-" in w for w in compute):
        # The MultiClusterIngress lives in the run's namespace of the config cluster; its finalizer is removed once
        # GKE deleted what it made, so delete it before the namespace.
        fleet = ",".join(target.fleet_contexts)
        attempt("hosted", "delete", "--lb", names.hosted_lb, "--context", fleet, "--config-context",
                target.contexts[0], "-n", names.namespace, "--timeout", str(int(journey.patience)))
    try:
        delete_namespaces(target, names, echo)
    except UserError as exc:
        errors.append(str(exc))
    try:
        delete_gitlab_variables(target, names, echo)
    except Exception as exc:  # python-gitlab's errors: report, then say what is left
        errors.append(f"GitLab: {exc}")
    left = inventory.scan(target, names.run_id).of(names.run_id)
    for error in errors:
        echo(f"    note: {error}")
    return left
