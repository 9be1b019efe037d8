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


def _gitlab_mci(*args: str, env: dict[str, str] | None = None, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("GITLAB_MCI_", "MCI_"))}
    return subprocess.run([sys.executable, "-m", "gitlab_mci", *args], capture_output=True, text=True,
                          timeout=timeout, env={**clean, **GITLAB_ENV, **(env or {})}, check=False)


GITLAB_TOKEN = "glpat-acceptance-test-token-0123456789"
# Set for every acceptance command: the GitLab steps run against the fake GitLab's project.
GITLAB_ENV: dict[str, str] = {}


@pytest.fixture(scope="module")
def state_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """One simulator and one fake GitLab for the module (per xdist worker), started and stopped as a user does."""
    root = tmp_path_factory.mktemp("acceptance")
    spec = root / "spec.yaml"
    spec.write_text(yaml.safe_dump(SPEC))
    state = root / "sim"
    up = _gitlab_mci("sim", "up", "--detach", "--state-dir", str(state), "--spec", str(spec))
    assert up.returncode == 0, up.stderr
    fake = subprocess.Popen([sys.executable, "-m", "gitlab_mci.sim.gitlab", "--token", GITLAB_TOKEN],
                            stdout=subprocess.PIPE, text=True)
    assert fake.stdout is not None
    settings = dict(fake.stdout.readline().strip().split("=", 1) for _ in range(3))
    GITLAB_ENV.update({"GITLAB_MCI_LIVE_GITLAB_URL": settings["CI_SERVER_URL"],
                       "GITLAB_MCI_LIVE_GITLAB_TOKEN": GITLAB_TOKEN, "GITLAB_MCI_LIVE_GITLAB_PROJECT": "group/app"})
    try:
        yield state
    finally:
        fake.terminate()
        fake.wait(10)
        _gitlab_mci("sim", "down", "--state-dir", str(state))


def _what_is_left(state_dir: Path, run_id: str) -> list[str]:
    """Everything carrying the run id, read with the real clients: Compute resources, named ports, namespaces."""
    from google.api_core.client_options import ClientOptions
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import compute_v1
    from kubernetes import client as kclient
    from kubernetes import config as kconfig

    env = dict(line.split("=", 1) for line in (state_dir / "sim.env").read_text().splitlines() if "=" in line)
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

    project = gitlab.Gitlab(GITLAB_ENV["GITLAB_MCI_LIVE_GITLAB_URL"], private_token=GITLAB_TOKEN).projects.get(
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


def test_the_whole_journey_passes_on_the_simulator_and_leaves_nothing(state_dir: Path) -> None:
    run = _gitlab_mci("acceptance", "run", "--state-dir", str(state_dir), "--run-id", "whole1")
    assert run.returncode == 0, run.stdout + run.stderr
    assert all(f"✓ {step} (" in run.stdout for step in STEPS), run.stdout
    assert "acceptance run whole1 passed" in run.stdout
    assert _what_is_left(state_dir, "whole1") == []


# After `namespaces-delete` nothing of the run exists any more (`verify` only looks, and the whole-journey test
# proves that): every step before it is a kill point.
KILL_POINTS = list(STEPS[:STEPS.index("namespaces-delete")])


@pytest.mark.parametrize("step", KILL_POINTS)
def test_a_run_killed_after_a_step_leaves_nothing_once_cleanup_ran(state_dir: Path, step: str) -> None:
    run_id = "k" + "".join(c for c in step if c.isalnum())[:9]
    crashed = _gitlab_mci("acceptance", "run", "--state-dir", str(state_dir), "--run-id", run_id,
                          env={"GITLAB_MCI_ACCEPTANCE_CRASH_AFTER": step})
    assert crashed.returncode == 137, crashed.stdout + crashed.stderr  # os._exit: no finally, no cleanup ran
    assert f"✓ {step} (" in crashed.stdout and "cleanup of run" not in crashed.stdout
    created = _what_is_left(state_dir, run_id)
    if step != "preflight":
        assert created, "the killed run had created something: otherwise this test proves nothing"
        if step == "lb-apply":
            refused = _gitlab_mci("acceptance", "run", "--state-dir", str(state_dir))
            assert refused.returncode == 1
            assert f"gitlab-mci acceptance cleanup --run-id {run_id}" in refused.stderr, refused.stderr
            assert "==> namespaces" not in refused.stdout  # refused before creating anything
    cleanup = _gitlab_mci("acceptance", "cleanup", "--state-dir", str(state_dir), "--run-id", run_id)
    assert cleanup.returncode == 0, cleanup.stdout + cleanup.stderr
    assert _what_is_left(state_dir, run_id) == []
    if step == "preflight":
        assert f"nothing of run {run_id}" in cleanup.stdout


def test_a_real_project_is_not_touched_without_the_confirmation_variable(tmp_path: Path) -> None:
    env = {"GITLAB_MCI_LIVE_PROJECT": "my-project", "GITLAB_MCI_LIVE_CONTEXTS": "gke-a,gke-b",
           "GITLAB_MCI_COMPUTE_ENDPOINT": "", "GITLAB_MCI_LIVE_CONFIRM": ""}
    result = CliRunner().invoke(cli, ["acceptance", "run", "--run-id", "conf1"], env=env, prog_name="gitlab-mci")
    assert result.exit_code == 1
    # What it would create and cost comes first, then the refusal; no cloud call was made (none could succeed).
    assert "gmci-fr-acc-conf1-http" in result.output and "per hour" in result.output
    assert "GITLAB_MCI_LIVE_CONFIRM=yes" in str(result.exception)


def test_a_step_that_fails_is_cleaned_up_by_the_run_itself(state_dir: Path) -> None:
    """Not killed, but failing (Compute refuses backend services): the run's `finally` removes what it made."""
    fault = _gitlab_mci("sim", "fault", "add", "--state-dir", str(state_dir), "--service", "compute",
                        "--method", "POST", "--path", "backendServices", "--status", "400")
    assert fault.returncode == 0, fault.stderr
    try:
        run = _gitlab_mci("acceptance", "run", "--state-dir", str(state_dir), "--run-id", "fails1")
    finally:
        _gitlab_mci("sim", "fault", "clear", "--state-dir", str(state_dir))
    assert run.returncode == 1, run.stdout + run.stderr
    assert "✓ nodeport (" in run.stdout and "✓ lb-apply (" not in run.stdout
    assert "==> cleanup of run fails1" in run.stdout
    assert _what_is_left(state_dir, "fails1") == []


def test_cleanup_leaves_what_only_looks_like_a_run(state_dir: Path) -> None:
    """A resource with the run's name but not our marker, a namespace with its name but not its label: not ours."""
    from google.api_core.client_options import ClientOptions
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import compute_v1
    from kubernetes import client as kclient
    from kubernetes import config as kconfig

    env = dict(line.split("=", 1) for line in (state_dir / "sim.env").read_text().splitlines() if "=" in line)
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
        cleanup = _gitlab_mci("acceptance", "cleanup", "--state-dir", str(state_dir), "--run-id", "other1")
        assert cleanup.returncode == 0, cleanup.stderr
        assert "nothing of run other1" in cleanup.stdout
        assert sorted(_what_is_left(state_dir, "other1")) == ["healthChecks/gmci-hc-acc-other1",
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
