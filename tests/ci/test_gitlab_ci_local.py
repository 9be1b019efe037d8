"""The example's pipeline, run by gitlab-ci-local (every job in the local shell) against the simulator.

`examples/auto-devops-two-clusters/local/run.sh` sets the run up as a user would: the example as a git repository,
the template and the local Auto DevOps stand-in in gitlab-ci-local's include cache, the scoped CI/CD variables, and
a detached simulator (`gitlab-mci sim up --detach`). The tests assert on the simulator's final state — Services in
both clusters, Compute resources — not only on job logs.

gitlab-ci-local 4.73.0 (the last to run on Node 20) comes from `npm install --prefix .tools` (.ci/run does it); it
also needs rsync. Without them the tests are skipped, except under CI=true, where they fail.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
GCL = ROOT / ".tools" / "node_modules" / ".bin" / "gitlab-ci-local"
EXAMPLE = ROOT / "examples" / "auto-devops-two-clusters"
RUN = EXAMPLE / "local" / "run.sh"
GOLDEN = Path(__file__).parent / "golden" / "example-preview.yml"
VENV_BIN = Path(sys.executable).parent
CONTEXTS = ("prod1", "prod2")


def _missing() -> str | None:
    if not GCL.exists():
        return f"gitlab-ci-local not installed at {GCL} (npm install --prefix .tools gitlab-ci-local@4.73.0)"
    for tool in ("rsync", "git", "kubectl"):
        if shutil.which(tool) is None:
            return f"{tool} not found"
    return None


@pytest.fixture(scope="module", autouse=True)
def _tools() -> None:
    reason = _missing()
    if reason:
        if os.environ.get("CI"):
            pytest.fail(f"{reason}: .ci/run installs it; these tests must run in CI")
        pytest.skip(reason)


class Example:
    """One checkout of the example with its own simulator."""

    def __init__(self, work: Path) -> None:
        self.work = work
        self.app = work / "app"
        self.env = {**os.environ, "PATH": f"{VENV_BIN}:{os.environ['PATH']}"}
        self.env.pop("GITLAB_MCI_SIM_DIR", None)
        self._sim_env: dict[str, str] = {}

    def run(self, *args: str, variables: Path | None = None) -> subprocess.CompletedProcess[str]:
        """run.sh WORKDIR ARGS…, with a fresh gitlab-ci-local state (no artifacts of an earlier pipeline)."""
        shutil.rmtree(self.app / ".gitlab-ci-local", ignore_errors=True)
        env = dict(self.env)
        if variables is not None:
            env["EXAMPLE_VARIABLES"] = str(variables)
        return subprocess.run(["bash", str(RUN), str(self.work), "--no-color", "--home", str(self.work / "home"),
                               *args], env=env, capture_output=True, text=True, timeout=240, cwd=self.work)

    def sim_env(self) -> dict[str, str]:
        """The simulator's endpoints (`gitlab-mci sim env`), read once it runs."""
        if not self._sim_env:
            out = subprocess.run([str(VENV_BIN / "gitlab-mci"), "sim", "env", "--state-dir", str(self.work / "sim")],
                                 capture_output=True, text=True, check=True).stdout
            self._sim_env = dict(re.findall(r"^export (\w+)=(.*)$", out, re.M))
        return self._sim_env

    def kubectl(self, context: str, *args: str) -> Any:
        env = {**self.env, **self.sim_env()}
        out = subprocess.run(["kubectl", "--context", context, *args, "-o", "json"], env=env, capture_output=True,
                             text=True, check=True).stdout
        return json.loads(out)

    def compute(self, collection: str) -> list[dict[str, Any]]:
        """Items of a global Compute collection, read straight from the simulator's REST API."""
        env = self.sim_env()
        url = f"{env['GITLAB_MCI_COMPUTE_ENDPOINT']}/compute/v1/projects/{env['GOOGLE_CLOUD_PROJECT']}/global/{collection}"
        with urllib.request.urlopen(url, timeout=10) as resp:
            items: list[dict[str, Any]] = json.load(resp).get("items", [])
        return items

    def ours(self, collection: str) -> list[str]:
        return sorted(item["name"] for item in self.compute(collection) if item["name"].endswith("-shop")
                      or "-shop-" in item["name"])

    def gitlab_mci(self, *args: str) -> subprocess.CompletedProcess[str]:
        """gitlab-mci pointed at this checkout's simulator."""
        return subprocess.run([str(VENV_BIN / "gitlab-mci"), *args], env={**self.env, **self.sim_env()},
                              capture_output=True, text=True, check=True)

    def variant(self, name: str, *replacements: tuple[str, str]) -> str:
        """Write a copy of the example's .gitlab-ci.yml with some lines changed; returns its file name."""
        text = (self.app / ".gitlab-ci.yml").read_text()
        for old, new in replacements:
            assert old in text, old
            text = text.replace(old, new)
        (self.app / name).write_text(text)
        return name

    def log(self, job: str) -> str:
        return (self.app / ".gitlab-ci-local" / "output" / f"{job}.log").read_text()

    def stop(self) -> None:
        subprocess.run([str(VENV_BIN / "gitlab-mci"), "sim", "down", "--state-dir", str(self.work / "sim")],
                       capture_output=True, env=self.env)


@pytest.fixture
def example(tmp_path: Path) -> Iterator[Example]:
    """A checkout with its own simulator, for a test that runs jobs."""
    ex = Example(tmp_path)
    yield ex
    ex.stop()


@pytest.fixture(scope="module")
def listing(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Example]:
    """One checkout shared by the tests that only list or preview the pipeline (no job runs, nothing changes)."""
    ex = Example(tmp_path_factory.mktemp("listing"))
    yield ex
    ex.stop()


def results(output: str) -> dict[str, str]:
    """Job name → PASS / FAIL / WARN from gitlab-ci-local's summary."""
    return dict((name.strip(), status) for status, name in re.findall(r"^ (PASS|FAIL|WARN) +(.+?) *$", output, re.M))


def listed(example: Example, *args: str) -> dict[str, dict[str, Any]]:
    proc = example.run("--list-json", *args)
    assert proc.returncode == 0, proc.stderr
    jobs = json.loads(proc.stdout[proc.stdout.index("["):])
    return {job["name"]: job for job in jobs if job["when"] != "never"}  # --list-json shows when:never jobs too


def test_example_pipeline_deploys_pins_provisions_then_tears_down(example: Example) -> None:
    proc = example.run()
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    assert results(proc.stdout) == {
        "mci-check: [prod1]": "PASS", "mci-check: [prod2]": "PASS", "build": "PASS", "test": "PASS",
        "production: [prod1]": "PASS", "production: [prod2]": "PASS",
        "mci-pin: [prod1]": "PASS", "mci-pin: [prod2]": "PASS", "mci-lb": "PASS", "mci-status": "PASS"}

    # Both clusters run the app behind a NodePort Service on the pinned port, from the deploy's Helm arguments.
    for context in CONTEXTS:
        svc = example.kubectl(context, "get", "service", "shop-auto-deploy", "-n", "shop")
        assert svc["spec"]["type"] == "NodePort"
        assert [(p["port"], p["nodePort"]) for p in svc["spec"]["ports"]] == [(5000, 30999)]
        assert example.kubectl(context, "get", "deployment", "shop", "-n", "shop")["metadata"]["name"] == "shop"

    # One load balancer over both clusters; its address reached the status job through the dotenv report.
    [address] = [a for a in example.compute("addresses") if a["name"] == "gmci-ip-shop"]
    [rule] = example.compute("forwardingRules")
    assert rule["IPAddress"] == address["address"] and rule["loadBalancingScheme"] == "EXTERNAL_MANAGED"
    [backend] = example.compute("backendServices")
    assert sorted(b["group"].rsplit("/zones/", 1)[1].split("/")[0] for b in backend["backends"]) == [
        "europe-west1-b", "us-central1-a"]
    dotenv = (example.app / ".gitlab-ci-local/artifacts/mci-lb/.gitlab-ci-reports/dotenv/mci.env").read_text()
    assert f"MCI_VIP={address['address']}\n" in dotenv
    assert f"MCI_URL=http://{address['address']}/\n" in dotenv
    assert f"load balancer shop at http://{address['address']}/ (VIP {address['address']})" in example.log("mci-status")
    for backend_health in ("prod1 / us-central1-a (3/3)", "prod2 / europe-west1-b (3/3)"):  # every node healthy
        assert backend_health in example.log("mci-status")
    assert "flowchart" in (example.app / ".gitlab-ci-local/artifacts/mci-status/mci-status.md").read_text()

    # A teardown pipeline (the project's input mci_teardown): the teardown job runs, no other gitlab-mci job does.
    down = example.run("--input", "mci_teardown=true")
    assert down.returncode == 0, down.stdout[-4000:] + down.stderr[-2000:]
    ran = results(down.stdout)
    assert ran["mci-teardown"] == "PASS"
    assert not [job for job in ran if job.startswith(("mci-check", "mci-pin", "mci-lb", "mci-status"))]
    for collection in ("forwardingRules", "targetHttpProxies", "urlMaps", "backendServices", "healthChecks",
                       "firewalls"):
        assert example.ours(collection) == [], collection
    assert [a["name"] for a in example.compute("addresses")] == ["gmci-ip-shop"]  # the IP is kept unless asked


def test_a_failed_deploy_never_provisions(example: Example, tmp_path: Path) -> None:
    variables = tmp_path / "broken-prod2.yml"
    text = (EXAMPLE / "local" / "gitlab-ci-local-variables.yml").read_text()
    variables.write_text(text.replace("prod2: prod2", "prod2: no-such-cluster"))
    proc = example.run(variables=variables)
    assert proc.returncode != 0
    ran = results(proc.stdout)
    assert ran["production: [prod1]"] == "PASS" and ran["production: [prod2]"] == "FAIL"
    assert not [job for job in ran if job.startswith(("mci-pin", "mci-lb", "mci-status"))]
    for collection in ("addresses", "forwardingRules", "backendServices", "healthChecks", "firewalls"):
        assert example.ours(collection) == [], collection


def test_rules_manual_teardown_in_deploy_pipelines_and_the_teardown_pipeline(listing: Example) -> None:
    example = listing
    deploy = listed(example)
    assert deploy["mci-teardown"]["when"] == "manual" and deploy["mci-teardown"]["allow_failure"] is True
    assert deploy["mci-lb"]["when"] == "on_success"
    teardown = listed(example, "--input", "mci_teardown=true")
    assert teardown["mci-teardown"]["when"] == "on_success"
    assert {name for name in teardown if name.startswith("mci-")} == {"mci-teardown"}
    variable = listed(example, "--variable", "MCI_TEARDOWN=true")  # the pipeline-variable fallback
    assert {name for name in variable if name.startswith("mci-")} == {"mci-teardown"}


def test_merged_pipeline_matches_the_golden_preview(listing: Example) -> None:
    example = listing
    proc = example.run("--preview")
    assert proc.returncode == 0, proc.stderr
    preview = proc.stdout[proc.stdout.index("---"):]
    if os.environ.get("MCI_UPDATE_GOLDEN"):
        GOLDEN.parent.mkdir(exist_ok=True)
        GOLDEN.write_text(preview)
    assert preview == GOLDEN.read_text(), (
        "the merged pipeline changed; if on purpose, rerun with MCI_UPDATE_GOLDEN=1 and review the diff")


def test_the_template_works_as_a_ci_cd_component(listing: Example) -> None:
    example = listing
    as_project = example.run("--preview")
    assert as_project.returncode == 0, as_project.stderr
    text = (example.app / ".gitlab-ci.yml").read_text()
    project_include = "  - project: platform/gitlab-mci\n    ref: v0.1.0\n    file: /ci-templates/mci.gitlab-ci.yml\n"
    assert project_include in text
    (example.app / "component.gitlab-ci.yml").write_text(text.replace(
        project_include, "  - component: gitlab.example.com/platform/gitlab-mci/mci@0.1.0\n"))
    as_component = example.run("--file", "component.gitlab-ci.yml", "--preview")
    assert as_component.returncode == 0, as_component.stderr
    assert as_component.stdout[as_component.stdout.index("---"):] == as_project.stdout[as_project.stdout.index("---"):]


def test_hosted_mode_deploys_without_node_ports_and_publishes_the_multi_cluster_ingress_vip(example: Example) -> None:
    assert example.run("--list").returncode == 0  # the checkout and its simulator
    example.gitlab_mci("fleet", "enable", "--context", "prod1,prod2", "--config-context", "prod1")  # once per fleet
    hosted = example.variant("hosted.gitlab-ci.yml",
                             ("      lb_name: shop\n", "      lb_name: shop\n      mode: hosted\n      config_context: prod1\n"))
    proc = example.run("--file", hosted)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    ran = results(proc.stdout)
    assert {job: ran[job] for job in ("mci-pin: [prod1]", "mci-pin: [prod2]", "mci-lb", "mci-status")} == dict.fromkeys(
        ("mci-pin: [prod1]", "mci-pin: [prod2]", "mci-lb", "mci-status"), "PASS")
    for context in CONTEXTS:  # NEG backends: the chart's own ClusterIP Service, no node port
        assert example.kubectl(context, "get", "service", "shop-auto-deploy", "-n", "shop")["spec"]["type"] == "ClusterIP"
    mci = example.kubectl("prod1", "get", "multiclusteringress", "shop", "-n", "shop")
    dotenv = (example.app / ".gitlab-ci-local/artifacts/mci-lb/.gitlab-ci-reports/dotenv/mci.env").read_text()
    assert f"MCI_VIP={mci['status']['VIP']}\n" in dotenv
    assert f"VIP: {mci['status']['VIP']}" in (example.app / ".gitlab-ci-local/artifacts/mci-status/mci-status.md").read_text()

    down = example.run("--file", hosted, "--input", "mci_teardown=true")
    assert down.returncode == 0, down.stdout[-4000:] + down.stderr[-2000:]
    assert results(down.stdout)["mci-teardown"] == "PASS"
    assert example.kubectl("prod1", "get", "multiclusteringress", "-n", "shop")["items"] == []
