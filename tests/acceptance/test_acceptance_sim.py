"""The acceptance suite, proven on the simulator on every run: the whole journey passes, and a run killed after any
of its steps leaves nothing once `gitlab-mci acceptance cleanup --run-id` ran.

The runner is driven as a user drives it (a `gitlab-mci acceptance …` process); what is left is checked with the
real google-cloud-compute and kubernetes clients, not with the suite's own inventory.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner

from gitlab_mci.acceptance.journey import STEPS
from gitlab_mci.cli import cli

# One zone per cluster and fast operations: the journey's time is mostly health checks.
SPEC = {"project": "acc-project", "operationLatency": 0.02, "managedCertDelay": 0.5, "mciProvisioningDelay": 0.5,
        "clusters": [{"name": "prod1", "location": "us-central1-a", "nodes": 1},
                     {"name": "prod2", "location": "europe-west1-b", "nodes": 1}]}


GITLAB_TOKEN = "glpat-acceptance-test-token-0123456789"


@dataclass
class World:
    """A simulator and a fake GitLab, started as a user does; every acceptance command of a test runs against one.

    Runs in one world take turns (a run refuses to start while another's resources exist); worlds are independent.
    """

    state_dir: Path
    gitlab: subprocess.Popen[str]
    env: dict[str, str]  # the GitLab steps' variables: they run against the fake GitLab's project

    def gitlab_mci(self, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        clean = {k: v for k, v in os.environ.items() if not k.startswith(("GITLAB_MCI_", "MCI_"))}
        if args[0] in ("acceptance", "sim") and args[1] not in ("up",):
            args = (*args, "--state-dir", str(self.state_dir))
        return subprocess.run([sys.executable, "-m", "gitlab_mci", *args], capture_output=True, text=True,
                              timeout=300, env={**clean, **self.env, **(env or {})}, check=False)

    @classmethod
    def start(cls, root: Path) -> World:
        root.mkdir(parents=True, exist_ok=True)
        spec = root / "spec.yaml"
        spec.write_text(yaml.safe_dump(SPEC))
        fake = subprocess.Popen([sys.executable, "-m", "gitlab_mci.sim.gitlab", "--token", GITLAB_TOKEN],
                                stdout=subprocess.PIPE, text=True)
        assert fake.stdout is not None
        settings = dict(fake.stdout.readline().strip().split("=", 1) for _ in range(3))
        world = cls(root / "sim", fake, {"GITLAB_MCI_LIVE_GITLAB_URL": settings["CI_SERVER_URL"],
                                         "GITLAB_MCI_LIVE_GITLAB_TOKEN": GITLAB_TOKEN,
                                         "GITLAB_MCI_LIVE_GITLAB_PROJECT": "group/app"})
        up = world.gitlab_mci("sim", "up", "--detach", "--state-dir", str(world.state_dir), "--spec", str(spec))
        assert up.returncode == 0, up.stderr
        return world

    def stop(self) -> None:
        self.gitlab.terminate()
        self.gitlab.wait(10)
        self.gitlab_mci("sim", "down")


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    """One world for the module (per xdist worker)."""
    started = World.start(tmp_path_factory.mktemp("acceptance"))
    yield started
    started.stop()


def _what_is_left(world: World, run_id: str) -> list[str]:
    """Everything carrying the run id, read with the real clients: Compute resources, named ports, namespaces."""
    from google.api_core.client_options import ClientOptions
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import compute_v1
    from kubernetes import client as kclient
    from kubernetes import config as kconfig

    env = dict(line.split("=", 1) for line in (world.state_dir / "sim.env").read_text().splitlines() if "=" in line)
    options = ClientOptions(api_endpoint=env["GITLAB_MCI_COMPUTE_ENDPOINT"])
    project = SPEC["project"]
    left: list[str] = []
    clients: dict[str, Any] = {
        "forwardingRules": compute_v1.GlobalForwardingRulesClient, "addresses": compute_v1.GlobalAddressesClient,
        "targetHttpProxies": compute_v1.TargetHttpProxiesClient, "urlMaps": compute_v1.UrlMapsClient,
        "backendServices": compute_v1.BackendServicesClient, "healthChecks": compute_v1.HealthChecksClient,
        "firewalls": compute_v1.FirewallsClient, "sslCertificates": compute_v1.SslCertificatesClient,
    }
    for kind, cls in clients.items():
        api = cls(credentials=AnonymousCredentials(), transport="rest", client_options=options)
        for item in api.list(project=project):
            if run_id in item.name or run_id in (item.description or ""):
                left.append(f"{kind}/{item.name}")
    groups = compute_v1.InstanceGroupsClient(credentials=AnonymousCredentials(), transport="rest",
                                             client_options=options)
    for _zone, scoped in groups.aggregated_list(project=project):
        for group in scoped.instance_groups:
            left += [f"{group.name} named port {p.name}" for p in group.named_ports if run_id in p.name]
    import gitlab

    project = gitlab.Gitlab(world.env["GITLAB_MCI_LIVE_GITLAB_URL"], private_token=GITLAB_TOKEN).projects.get(
        "group/app")
    left += [f"GitLab variable {v.key} ({v.environment_scope})" for v in project.variables.list(iterator=True)
             if run_id in v.environment_scope]
    for context in ("prod1", "prod2"):
        core = kclient.CoreV1Api(kconfig.new_client_from_config(config_file=env["KUBECONFIG"], context=context))
        left += [f"{context}: namespace {ns.metadata.name}" for ns in core.list_namespace().items
                 if run_id in ns.metadata.name]
        left += [f"{context}: service {s.metadata.name}" for s in core.list_service_for_all_namespaces().items
                 if run_id in s.metadata.name]
    return left


def _until(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    """Wait for a simulated Compute operation (0.02 s here) to land."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "the operation did not finish"
        time.sleep(0.02)


def test_the_whole_journey_passes_on_the_simulator_and_leaves_nothing(world: World) -> None:
    run = world.gitlab_mci("acceptance", "run", "--run-id", "whole1")
    assert run.returncode == 0, run.stdout + run.stderr
    assert all(f"✓ {step} (" in run.stdout for step in STEPS), run.stdout
    assert "acceptance run whole1 passed" in run.stdout
    assert _what_is_left(world, "whole1") == []


# After `namespaces-delete` nothing of the run exists any more (`verify` only looks, and the whole-journey test
# proves that): every step before it is a kill point.
KILL_POINTS = list(STEPS[:STEPS.index("namespaces-delete")])
# Kill points run in this many worlds at once, each taking its share in turn: a run mostly waits for health checks
# and controllers, so the worlds overlap their waiting instead of adding it up.
WORLDS = 4


def _kill_and_clean(world: World, step: str) -> str | None:
    """Kill a run right after ``step``, clean up with the command a user would run; what went wrong, if anything."""
    run_id = "k" + "".join(c for c in step if c.isalnum())[:9]
    crashed = world.gitlab_mci("acceptance", "run", "--run-id", run_id, env={"GITLAB_MCI_ACCEPTANCE_CRASH_AFTER": step})
    # os._exit: no finally, no cleanup ran
    if crashed.returncode != 137 or f"✓ {step} (" not in crashed.stdout or "cleanup of run" in crashed.stdout:
        return f"the run did not die after {step}: exit {crashed.returncode}\n{crashed.stdout}{crashed.stderr}"
    created = _what_is_left(world, run_id)
    if step != "preflight" and not created:
        return f"killed after {step}, the run had created nothing: this would prove nothing"
    if step == "lb-apply":
        refused = world.gitlab_mci("acceptance", "run")
        if (refused.returncode != 1 or f"gitlab-mci acceptance cleanup --run-id {run_id}" not in refused.stderr
                or "==> namespaces" in refused.stdout):
            return f"a new run did not refuse to start over run {run_id}'s resources: {refused.stderr}"
    cleanup = world.gitlab_mci("acceptance", "cleanup", "--run-id", run_id)
    left = _what_is_left(world, run_id)
    if cleanup.returncode != 0 or left:
        return f"after {step} and cleanup (exit {cleanup.returncode}), left: {left}\n{cleanup.stdout}{cleanup.stderr}"
    if step == "preflight" and f"nothing of run {run_id}" not in cleanup.stdout:
        return f"cleanup of a run that created nothing did not say so: {cleanup.stdout}"
    return None


def test_a_run_killed_after_any_step_leaves_nothing_once_cleanup_ran(world: World, tmp_path: Path) -> None:
    # Longest first, each to the least loaded world: the later the step, the longer its run.
    shares: list[list[str]] = [[] for _ in range(WORLDS)]
    for step in sorted(KILL_POINTS, key=STEPS.index, reverse=True):
        min(shares, key=lambda share: sum(STEPS.index(s) + 2 for s in share)).append(step)

    def take_turns(i: int) -> list[tuple[str, str | None]]:
        mine = world if i == 0 else World.start(tmp_path / f"world{i}")
        try:
            return [(step, _kill_and_clean(mine, step)) for step in shares[i]]
        finally:
            if mine is not world:
                mine.stop()

    with ThreadPoolExecutor(WORLDS) as pool:
        problems = {step: problem for results in pool.map(take_turns, range(WORLDS))
                    for step, problem in results if problem}
    assert sorted(s for share in shares for s in share) == sorted(KILL_POINTS)
    assert problems == {}


def test_a_real_project_is_not_touched_without_the_confirmation_variable(tmp_path: Path) -> None:
    env = {"GITLAB_MCI_LIVE_PROJECT": "my-project", "GITLAB_MCI_LIVE_CONTEXTS": "gke-a,gke-b",
           "GITLAB_MCI_COMPUTE_ENDPOINT": "", "GITLAB_MCI_LIVE_CONFIRM": ""}
    result = CliRunner().invoke(cli, ["acceptance", "run", "--run-id", "conf1"], env=env, prog_name="gitlab-mci")
    assert result.exit_code == 1
    # What it would create and cost comes first, then the refusal; no cloud call was made (none could succeed).
    assert "gmci-fr-acc-conf1-http" in result.output and "per hour" in result.output
    assert "GITLAB_MCI_LIVE_CONFIRM=yes" in str(result.exception)


def test_a_step_that_fails_is_cleaned_up_by_the_run_itself(world: World) -> None:
    """Not killed, but failing (Compute refuses backend services): the run's `finally` removes what it made."""
    fault = world.gitlab_mci("sim", "fault", "add", "--service", "compute", "--method", "POST",
                             "--path", "backendServices", "--status", "400")
    assert fault.returncode == 0, fault.stderr
    try:
        run = world.gitlab_mci("acceptance", "run", "--run-id", "fails1")
    finally:
        world.gitlab_mci("sim", "fault", "clear")
    assert run.returncode == 1, run.stdout + run.stderr
    assert "✓ nodeport (" in run.stdout and "✓ lb-apply (" not in run.stdout
    assert "==> cleanup of run fails1" in run.stdout
    assert _what_is_left(world, "fails1") == []


def test_cleanup_leaves_what_only_looks_like_a_run(world: World) -> None:
    """A resource with the run's name but not our marker, a namespace with its name but not its label: not ours."""
    from google.api_core.client_options import ClientOptions
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import compute_v1
    from kubernetes import client as kclient
    from kubernetes import config as kconfig

    env = dict(line.split("=", 1) for line in (world.state_dir / "sim.env").read_text().splitlines() if "=" in line)
    checks = compute_v1.HealthChecksClient(credentials=AnonymousCredentials(), transport="rest",
                                           client_options=ClientOptions(api_endpoint=env["GITLAB_MCI_COMPUTE_ENDPOINT"]))
    check = compute_v1.HealthCheck(name="gmci-hc-acc-other1", description="a colleague's", type_="HTTP",
                                   http_health_check=compute_v1.HTTPHealthCheck(port=80, request_path="/"))
    # Not .result(): google-cloud-compute's poller would ask Google, not the endpoint given (see gitlab_mci/gcp.py).
    checks.insert(project=SPEC["project"], health_check_resource=check)
    _until(lambda: any(c.name == check.name for c in checks.list(project=SPEC["project"])))
    core = kclient.CoreV1Api(kconfig.new_client_from_config(config_file=env["KUBECONFIG"], context="prod1"))
    core.create_namespace({"metadata": {"name": "acc-other1"}})
    try:
        cleanup = world.gitlab_mci("acceptance", "cleanup", "--run-id", "other1")
        assert cleanup.returncode == 0, cleanup.stderr
        assert "nothing of run other1" in cleanup.stdout
        assert sorted(_what_is_left(world, "other1")) == ["healthChecks/gmci-hc-acc-other1",
                                                              "prod1: namespace acc-other1"]
    finally:
        checks.delete(project=SPEC["project"], health_check="gmci-hc-acc-other1")
        _until(lambda: all(c.name != check.name for c in checks.list(project=SPEC["project"])))
        core.delete_namespace("acc-other1")


def test_every_variable_a_real_run_reads_is_documented_and_the_manual_job_runs_the_suite() -> None:
    from gitlab_mci.acceptance import target

    root = Path(__file__).resolve().parents[2]
    doc = (root / "docs" / "acceptance.md").read_text()
    read = {v for k, v in vars(target).items() if k.startswith("LIVE_") and isinstance(v, str)}
    assert read and all(f"`{name}`" in doc for name in read), sorted(n for n in read if f"`{n}`" not in doc)
    assert "gitlab-mci acceptance cleanup --run-id" in doc
    job = yaml.safe_load((root / ".gitlab-ci.yml").read_text())["acceptance-live"]
    assert job["rules"][0]["when"] == "manual"
    assert any("gitlab-mci acceptance run" in line for line in job["script"])


def test_a_dry_run_says_what_it_would_create_and_cost_and_creates_nothing(world: World) -> None:
    dry = world.gitlab_mci("acceptance", "run", "--run-id", "dry1", "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert "gmci-fr-acc-dry1-http" in dry.stdout and "per hour" in dry.stdout and "nothing is billed" in dry.stdout
    assert "gitlab-mci acceptance cleanup --run-id dry1" in dry.stdout
    assert "dry run: nothing created" in dry.stdout and "==> " not in dry.stdout
    assert _what_is_left(world, "dry1") == []
