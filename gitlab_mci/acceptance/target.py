"""Where the acceptance journey runs, the names of one run, and what it creates and roughly costs.

The simulator is the default: a running ``gitlab-mci sim up --detach`` found by its state directory. A real
Google Cloud project is used only when ``GITLAB_MCI_LIVE_PROJECT`` names it, and only with
``GITLAB_MCI_LIVE_CONFIRM=yes`` — the journey creates billable resources there.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import string
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gitlab_mci.errors import UserError

LIVE_PROJECT = "GITLAB_MCI_LIVE_PROJECT"
LIVE_CONTEXTS = "GITLAB_MCI_LIVE_CONTEXTS"
LIVE_KUBECONFIG = "GITLAB_MCI_LIVE_KUBECONFIG"
LIVE_CONFIRM = "GITLAB_MCI_LIVE_CONFIRM"
LIVE_CHART = "GITLAB_MCI_LIVE_CHART"
LIVE_IMAGE = "GITLAB_MCI_LIVE_IMAGE"
LIVE_HOSTED = "GITLAB_MCI_LIVE_HOSTED"
# The GitLab helpers' steps run when these name a GitLab project (a real one, or the fake GitLab in tests).
LIVE_GITLAB_URL = "GITLAB_MCI_LIVE_GITLAB_URL"
LIVE_GITLAB_TOKEN = "GITLAB_MCI_LIVE_GITLAB_TOKEN"
LIVE_GITLAB_PROJECT = "GITLAB_MCI_LIVE_GITLAB_PROJECT"
# A test hook: the runner exits hard (os._exit, no finally, no cleanup) right after the named step, as a killed
# job would. tests/acceptance uses it to prove that `acceptance cleanup` alone removes what the run left.
CRASH_AFTER = "GITLAB_MCI_ACCEPTANCE_CRASH_AFTER"

# Every name of a run starts with this; never `mci-` (GKE's hosted Multi Cluster Ingress owns that prefix).
PREFIX = "acc-"
RUN_ID = re.compile(r"^[a-z][a-z0-9]{3,11}$")
RUN_LABEL = "gitlab-mci.dev/acceptance-run"
GOOGLE_ENDPOINT = "https://compute.googleapis.com"
# The image a real cluster runs: it answers on port 80 with its pod's name ("Server name: …"), which tells which
# cluster served a request. The simulated pods answer JSON with their name.
DEFAULT_IMAGE = "nginxdemos/hello:plain-text"
DEFAULT_CHART = "auto-deploy-app --repo https://charts.gitlab.io"


def new_run_id() -> str:
    """A short lowercase id, unique enough for concurrent runs in one project (36^5 after a letter)."""
    alphabet = string.ascii_lowercase + string.digits
    return secrets.choice(string.ascii_lowercase) + "".join(secrets.choice(alphabet) for _ in range(5))


def check_run_id(run_id: str) -> str:
    if not RUN_ID.match(run_id):
        raise UserError(f"run id {run_id!r} must be 4-12 lowercase letters and digits, starting with a letter "
                        "(as `acceptance run` prints it)")
    return run_id


@dataclass(frozen=True)
class RunNames:
    """Every name one run gives what it creates: all carry the run id."""

    run_id: str

    @property
    def lb(self) -> str:
        """The self-managed load balancer: its Compute resources are gmci-<kind>-acc-<id>…"""
        return f"{PREFIX}{self.run_id}"

    @property
    def hosted_lb(self) -> str:
        """The hosted MultiClusterIngress (GKE names what it creates mci-…, after this)."""
        return f"{PREFIX}{self.run_id}-h"

    @property
    def namespace(self) -> str:
        return f"{PREFIX}{self.run_id}"

    @property
    def release(self) -> str:
        return f"{PREFIX}{self.run_id}"

    @property
    def service(self) -> str:
        return f"{self.release}-auto-deploy"

    def lb_names(self) -> tuple[str, str]:
        return self.lb, self.hosted_lb

    def environment(self, context: str) -> str:
        """The GitLab environment (scope of the CI/CD variables) of one cluster in this run."""
        return f"{PREFIX}{self.run_id}-{context}"


def lb_run_id(lb: str) -> str | None:
    """The run id of a load balancer name an acceptance run gave (``acc-<id>`` or ``acc-<id>-h``), else None."""
    if not lb.startswith(PREFIX):
        return None
    rest = lb[len(PREFIX):].removesuffix("-h")
    return rest if RUN_ID.match(rest) else None


@dataclass
class Target:
    """The endpoints of one journey: project, clusters (kubeconfig contexts), and how to deploy there."""

    live: bool
    project: str
    contexts: tuple[str, ...]
    compute_endpoint: str
    env: dict[str, str] = field(default_factory=dict)  # set for every command of the run
    kubeconfig: str | None = None
    chart: str = DEFAULT_CHART
    image: str = DEFAULT_IMAGE
    hosted: bool = True
    fleet_contexts: tuple[str, ...] = ()  # CONTEXT=LOCATION/NAME for hosted mode
    gitlab_url: str = ""
    gitlab_project: str = ""

    @property
    def where(self) -> str:
        kind = "Google Cloud project" if self.live else "simulator, project"
        return f"{kind} {self.project}, clusters {', '.join(self.contexts)}"


def from_environment(state_dir: Path, environ: dict[str, str] | None = None) -> Target:
    """The target the environment names: a real project when GITLAB_MCI_LIVE_PROJECT is set, else the simulator
    running with ``state_dir``."""
    env = dict(os.environ if environ is None else environ)
    target = _live(env) if env.get(LIVE_PROJECT) else _simulator(state_dir)
    named = [env.get(k, "") for k in (LIVE_GITLAB_URL, LIVE_GITLAB_TOKEN, LIVE_GITLAB_PROJECT)]
    if any(named) and not all(named):
        raise UserError(f"the GitLab steps need all of {LIVE_GITLAB_URL}, {LIVE_GITLAB_TOKEN} and "
                        f"{LIVE_GITLAB_PROJECT} (or none of them)")
    if all(named):
        target.gitlab_url, target.gitlab_project = named[0], named[2]
        target.env["GITLAB_TOKEN"] = named[1]  # what `gitlab-mci gitlab …` reads; never printed
    return target


def require_confirmation(target: Target, environ: dict[str, str] | None = None) -> None:
    """A real project only with GITLAB_MCI_LIVE_CONFIRM=yes (cleanup needs none: it deletes only a run's own)."""
    env = os.environ if environ is None else environ
    if target.live and env.get(LIVE_CONFIRM) != "yes":
        raise UserError(f"the journey creates billable resources in project {target.project} (listed above); "
                        f"set {LIVE_CONFIRM}=yes to go ahead")


def _live(env: dict[str, str]) -> Target:
    project = env[LIVE_PROJECT]
    raw = [c.strip() for c in env.get(LIVE_CONTEXTS, "").split(",") if c.strip()]
    if len(raw) < 2:
        raise UserError(f"{LIVE_CONTEXTS} must name at least two kubeconfig contexts (comma-separated), one per GKE "
                        "cluster; add =LOCATION/NAME to a context whose name does not say its cluster")
    if env.get("GITLAB_MCI_COMPUTE_ENDPOINT"):
        raise UserError(f"{LIVE_PROJECT} names a real project but GITLAB_MCI_COMPUTE_ENDPOINT points elsewhere "
                        f"({env['GITLAB_MCI_COMPUTE_ENDPOINT']}); unset one of them")
    kubeconfig = env.get(LIVE_KUBECONFIG) or env.get("KUBECONFIG")
    extra = {"GOOGLE_CLOUD_PROJECT": project, **({"KUBECONFIG": kubeconfig} if kubeconfig else {})}
    return Target(live=True, project=project, contexts=tuple(c.split("=", 1)[0] for c in raw),
                  compute_endpoint=GOOGLE_ENDPOINT, env=extra, kubeconfig=kubeconfig,
                  chart=env.get(LIVE_CHART) or DEFAULT_CHART, image=env.get(LIVE_IMAGE) or DEFAULT_IMAGE,
                  hosted=env.get(LIVE_HOSTED) == "yes", fleet_contexts=tuple(raw))


def _simulator(state_dir: Path) -> Target:
    try:
        state: dict[str, Any] = json.loads((state_dir / "state.json").read_text())
    except (OSError, ValueError):
        raise UserError(f"no simulator with state dir {state_dir}: start one with `gitlab-mci sim up --detach "
                        f"--state-dir {state_dir}`, or set {LIVE_PROJECT} (and the other GITLAB_MCI_LIVE_* "
                        "variables, see docs/acceptance.md) to run against a real project") from None
    dotenv = Path(state["files"]["dotenv"]).read_text()
    env = dict(line.split("=", 1) for line in dotenv.splitlines() if "=" in line)
    contexts = tuple(state["clusters"])
    if len(contexts) < 2:
        raise UserError(f"the simulator in {state_dir} has {len(contexts)} cluster(s); the journey needs two")
    return Target(live=False, project=state["project"], contexts=contexts[:2], compute_endpoint=state["compute"],
                  env=env, kubeconfig=env.get("KUBECONFIG"), fleet_contexts=contexts[:2])


# What one run creates in Google Cloud, with a rough hourly list price in USD. An ESTIMATE from Google's public
# pricing pages (Cloud Load Balancing: forwarding rules, first 5 billed together; external IPv4 address in use;
# Multi Cluster Ingress standalone, per backend pod), read when this was written: check the pricing pages for
# your region and contract. Health checks and backend services of a load balancer carry no separate charge;
# traffic is billed per GB and the journey sends a few hundred small requests.
COSTS: tuple[tuple[str, str, float], ...] = (
    ("self-managed", "global forwarding rules gmci-fr-acc-<id>-http and -https (the first 5 rules are billed "
                     "together)", 0.025),
    ("self-managed", "global external IPv4 address, gmci-ip-acc-<id>", 0.005),
    ("self-managed", "backend service, URL map, target HTTP and HTTPS proxies, a self-signed SSL certificate, "
                     "health check, firewall rule (gmci-*-acc-<id>*)", 0.0),
    ("self-managed", "named port gmci-<nodeport>-acc-<id> on each cluster's instance groups", 0.0),
    ("hosted", "MultiClusterIngress acc-<id>-h: GKE's forwarding rule, address, backend service (mci-…)", 0.03),
    ("hosted", "Multi Cluster Ingress standalone billing, 2 backend pods", 0.0082),
    ("both", "namespace acc-<id> in each cluster: 1 pod (Deployment acc-<id>) on existing nodes", 0.0),
    ("gitlab", "CI/CD variables scoped to the environments acc-<id>-<context> in the GitLab project", 0.0),
)


def plan_text(names: RunNames, target: Target) -> str:
    """What the run will create and roughly what it costs per hour, for the user to read before it starts."""
    lines = [f"acceptance run {names.run_id} against the {target.where}", "It will create (and delete at the end):"]
    total = 0.0
    for mode, what, price in COSTS:
        if (mode == "hosted" and not target.hosted) or (mode == "gitlab" and not target.gitlab_url):
            continue
        total += price
        cost = f"~${price:.3f}/h" if price else "no separate charge"
        lines.append(f"  - {what.replace('<id>', names.run_id)}  [{mode}; {cost}]")
    note = ("estimate from Google's list prices; a run takes about 15 minutes" if target.live
            else "nothing is billed: this is the simulator")
    lines.append(f"Roughly ${total:.2f} per hour while it exists ({note}).")
    lines.append(f"If the run is killed: gitlab-mci acceptance cleanup --run-id {names.run_id}")
    return "\n".join(lines)
