"""The example's pipeline, run by gitlab-ci-local (every job in the local shell) against the simulator.

`examples/auto-devops-two-clusters/local/run.sh` sets the run up as a user would: the example as a git repository,
the template and the local Auto DevOps stand-in in gitlab-ci-local's include cache, the scoped CI/CD variables, and
a detached simulator (`gitlab-mci sim up --detach`). The tests assert on the simulator's final state — Services in
both clusters, Compute resources — not only on job logs.

gitlab-ci-local 4.73.0 (the last to run on Node 20) comes from `npm install --prefix .tools` (.ci/run does it); it
also needs rsync. Without them the tests are skipped, except under CI=true, where they fail.
"""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import subprocess
import sys
import time
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
DEPLOY_JOBS = ("production", "production_manual", "staging", "review", "canary", "rollout", "timed rollout")
# With STAGING_ENABLED the production deploys are manual, and the pin jobs need them: gitlab-ci-local runs them only
# when named.
MANUAL = ("--manual", "production_manual: [prod1]", "--manual", "production_manual: [prod2]")


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

    def run(self, *args: str, variables: Path | None = None, fresh: bool = True) -> subprocess.CompletedProcess[str]:
        """run.sh WORKDIR ARGS…, by default with a fresh gitlab-ci-local state (no artifacts of an earlier pipeline);
        ``fresh=False`` keeps the directory as a shell runner that reuses its builds directory would."""
        if fresh:
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
        text = (EXAMPLE / ".gitlab-ci.yml").read_text()
        self.app.mkdir(parents=True, exist_ok=True)  # run.sh makes the git checkout around it
        for old, new in replacements:
            assert old in text, old
            text = text.replace(old, new)
        (self.app / name).write_text(text)
        return name

    def variables(self, name: str, extra: str) -> Path:
        """The example's scoped-variables file plus some YAML lines; returns its path."""
        path = self.work / name
        path.write_text((EXAMPLE / "local" / "gitlab-ci-local-variables.yml").read_text() + extra)
        return path

    def log(self, job: str) -> str:
        return (self.app / ".gitlab-ci-local" / "output" / f"{safe(job)}.log").read_text()

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


def safe(job: str) -> str:
    """gitlab-ci-local's file name for a job (its safeDockerString: runs of other characters base64url-encoded)."""
    return re.sub(r"[^\w-]+", lambda m: base64.urlsafe_b64encode(m.group().encode()).decode().rstrip("="), job)


def listeners(example: Example, vip: str) -> dict[int, str]:
    """Port -> the simulated data plane's URL, for every listener of the address ``vip``."""
    with urllib.request.urlopen(f"{example.sim_env()['GITLAB_MCI_COMPUTE_ENDPOINT']}/_sim/state", timeout=10) as resp:
        return {item["port"]: item["url"] for item in json.load(resp)["listeners"] if item["vip"] == vip}


def lb_url(example: Example) -> str:
    """Where the load balancer's address (gmci-ip-shop) serves HTTP."""
    [address] = [a for a in example.compute("addresses") if a["name"] == "gmci-ip-shop"]
    return listeners(example, address["address"])[80]


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
    assert not [job for job in ran if job.startswith(DEPLOY_JOBS)], ran  # Auto DevOps deploys nothing either
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


def _pipeline_in_mode(example: Example, mode: str, *features: str, env_job: str = "mci-pin") -> str:
    """The example's pipeline with ``mode`` (the fleet enabled first, once, as its users do) run to green: the
    per-environment job (``env_job``: the pins, or gateway mode's exports), load balancer and status jobs pass, no
    other per-environment job ran, and every cluster serves the chart's own ClusterIP Service (NEG backends, no node
    port). Returns the variant's file for the teardown."""
    assert example.run("--list").returncode == 0  # the checkout and its simulator
    example.gitlab_mci("fleet", "enable", "--context", "prod1,prod2", "--config-context", "prod1", *features)
    variant = example.variant(f"{mode}.gitlab-ci.yml",
                              ("      lb_name: shop\n",
                               f"      lb_name: shop\n      mode: {mode}\n      config_context: prod1\n"))
    proc = example.run("--file", variant)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    ran = results(proc.stdout)
    jobs = (f"{env_job}: [prod1]", f"{env_job}: [prod2]", "mci-lb", "mci-status")
    assert {job: ran[job] for job in jobs} == dict.fromkeys(jobs, "PASS")
    others = {"mci-pin", "mci-expose", "mci-export"} - {env_job}
    assert not [job for job in ran if job.split(":")[0] in others], ran
    for context in CONTEXTS:
        assert example.kubectl(context, "get", "service", "shop-auto-deploy", "-n", "shop")["spec"]["type"] == "ClusterIP"
    return variant


def _published(example: Example, vip: str, status_line: str) -> None:
    """The load balancer job's dotenv carries ``vip`` and the status job's report says ``status_line``."""
    dotenv = (example.app / ".gitlab-ci-local/artifacts/mci-lb/.gitlab-ci-reports/dotenv/mci.env").read_text()
    assert f"MCI_VIP={vip}\n" in dotenv
    assert status_line in (example.app / ".gitlab-ci-local/artifacts/mci-status/mci-status.md").read_text()


def _torn_down(example: Example, variant: str) -> None:
    down = example.run("--file", variant, "--input", "mci_teardown=true")
    assert down.returncode == 0, down.stdout[-4000:] + down.stderr[-2000:]
    assert results(down.stdout)["mci-teardown"] == "PASS"


def test_hosted_mode_deploys_without_node_ports_and_publishes_the_multi_cluster_ingress_vip(example: Example) -> None:
    hosted = _pipeline_in_mode(example, "hosted")
    mci = example.kubectl("prod1", "get", "multiclusteringress", "shop", "-n", "shop")
    _published(example, mci["status"]["VIP"], f"VIP: {mci['status']['VIP']}")

    _torn_down(example, hosted)
    assert example.kubectl("prod1", "get", "multiclusteringress", "-n", "shop")["items"] == []


def test_gateway_mode_exports_every_cluster_and_publishes_the_gateways_address(example: Example) -> None:
    gateway = _pipeline_in_mode(example, "gateway", "--features", "gateway", env_job="mci-export")
    # Each environment's job exported its cluster; the one mci-lb after them wrote no export.
    lb_log = (example.app / ".gitlab-ci-local/output/mci-lb.log").read_text()
    assert "ServiceExport" not in lb_log and "+ Gateway shop/shop (prod1)" in lb_log, lb_log[-3000:]
    for context in CONTEXTS:  # and its per-cluster export
        assert example.kubectl(context, "get", "serviceexport", f"shop-auto-deploy-{context}", "-n", "shop")
    gw = example.kubectl("prod1", "get", "gateway", "shop", "-n", "shop")
    address = gw["status"]["addresses"][0]["value"]
    _published(example, address, f"address: {address}")

    _torn_down(example, gateway)
    assert example.kubectl("prod1", "get", "gateways", "-n", "shop")["items"] == []
    for context in CONTEXTS:
        assert example.kubectl(context, "get", "serviceexports", "-n", "shop")["items"] == []


def test_a_teardown_pipeline_runs_no_deploy_job_whatever_auto_devops_would_deploy(listing: Example) -> None:
    example = listing
    for args in ((), ("--variable", "STAGING_ENABLED=true"), ("--variable", "CANARY_ENABLED=true"),
                 ("--variable", "INCREMENTAL_ROLLOUT_MODE=timed"), ("--variable", "INCREMENTAL_ROLLOUT_MODE=manual")):
        deploy = listed(example, *args)
        assert [job for job in deploy if job.startswith(DEPLOY_JOBS)], args  # they do run in a deploy pipeline
        for teardown in (("--input", "mci_teardown=true"), ("--variable", "MCI_TEARDOWN=true")):
            jobs = listed(example, *args, *teardown)
            assert [job for job in jobs if job.startswith(DEPLOY_JOBS)] == [], (args, teardown)
            assert "mci-teardown" in jobs


def test_an_environment_removed_from_the_input_leaves_the_load_balancer_on_a_reused_runner_directory(
        example: Example) -> None:
    both = example.run()
    assert both.returncode == 0, both.stdout[-4000:] + both.stderr[-2000:]
    [backend] = example.compute("backendServices")
    assert len(backend["backends"]) == 2
    one = example.variant("one-env.gitlab-ci.yml", ("environments: [prod1, prod2]", "environments: [prod1]"))
    proc = example.run("--file", one, fresh=False)  # the same directory, nothing wiped, as a shell runner does
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    assert "clusters prod1, namespace shop" in example.log("mci-lb")
    [backend] = example.compute("backendServices")
    assert [b["group"].rsplit("/zones/", 1)[1].split("/")[0] for b in backend["backends"]] == ["us-central1-a"]
    reports = list((example.app / ".gitlab-ci-local/artifacts").glob(f"{safe('mci-pin: [prod1]')}/.gitlab-ci-reports/dotenv/*"))
    assert reports and all("PROD2" not in f.read_text() for f in reports), reports


def test_a_projects_own_production_before_script_keeps_the_node_port(example: Example) -> None:
    own = example.variant("own-before-script.gitlab-ci.yml", ("      teardown: $[[ inputs.mci_teardown ]]\n", (
        "      teardown: $[[ inputs.mci_teardown ]]\n\nproduction:\n  before_script:\n"
        "    - echo \"our own setup before the deploy\"\n")))
    proc = example.run("--file", own)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    assert "our own setup before the deploy" in example.log("production: [prod1]")
    for context in CONTEXTS:
        svc = example.kubectl(context, "get", "service", "shop-auto-deploy", "-n", "shop")
        assert (svc["spec"]["type"], svc["spec"]["ports"][0]["nodePort"]) == ("NodePort", 30999)


def _staging_in_prod1(example: Example) -> Path:
    """Staging enabled, deploying to prod1's cluster and namespace (scoped variables of the environment staging)."""
    text = (EXAMPLE / "local" / "gitlab-ci-local-variables.yml").read_text()
    text = text.replace("    prod2: prod2\n", "    prod2: prod2\n    staging: prod1\n", 1)
    text = text.replace("    global: shop\n", "    global: shop\n    staging: shop\n")
    text = text.replace("    prod2: prod2.example.com\n", "    prod2: prod2.example.com\n    staging: staging.example.com\n")
    path = example.work / "staging-in-prod1.yml"
    path.write_text(text + 'STAGING_ENABLED: "true"\n')
    return path


def test_staging_deploy_in_a_production_namespace_with_an_unscoped_release_name_is_refused_before_any_deploy(
        example: Example) -> None:
    # The setup the docs used to recommend: HELM_RELEASE_NAME unscoped, so staging would deploy release `shop` too.
    legacy = example.variant("legacy-release.gitlab-ci.yml", ("      release: shop\n", ""),
                             ("      teardown: $[[ inputs.mci_teardown ]]\n",
                              "      teardown: $[[ inputs.mci_teardown ]]\n\nvariables:\n  HELM_RELEASE_NAME: shop\n"))
    proc = example.run("--file", legacy, *MANUAL, variables=_staging_in_prod1(example))
    assert proc.returncode != 0
    ran = results(proc.stdout)
    assert ran["mci-check-staging"] == "FAIL"
    assert not [job for job in ran if job.startswith(DEPLOY_JOBS)], ran
    assert "would overwrite the production release shop of prod1" in example.log("mci-check-staging")
    assert example.kubectl("prod1", "get", "services", "-n", "shop")["items"] == []  # nothing deployed


def test_staging_in_a_production_namespace_with_the_release_input_leaves_production_behind_the_load_balancer(
        example: Example) -> None:
    first = example.run()  # production deployed and behind the load balancer
    assert first.returncode == 0, first.stdout[-4000:] + first.stderr[-2000:]
    proc = example.run(*MANUAL, variables=_staging_in_prod1(example))
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    ran = results(proc.stdout)
    assert ran["mci-check-staging"] == "PASS" and ran["staging"] == "PASS"
    prod = example.kubectl("prod1", "get", "service", "shop-auto-deploy", "-n", "shop")
    assert (prod["spec"]["type"], prod["spec"]["ports"][0]["nodePort"]) == ("NodePort", 30999)
    assert example.kubectl("prod1", "get", "service", "staging-auto-deploy", "-n", "shop")["spec"]["type"] == "ClusterIP"
    assert "prod1 / us-central1-a (3/3)" in example.log("mci-status")


RECIPE_VALUES = "service:\n  type: NodePort\n  externalPort: 8080\n  internalPort: 8080\n"  # the recipe's values.yaml


def test_a_project_whose_own_values_run_the_app_on_8080_is_deployed_on_8080_and_served_by_the_load_balancer(
        example: Example) -> None:
    """The recipe's setup: values.yaml on 8080 passed by `--values values.yaml` in the production environments'
    HELM_UPGRADE_EXTRA_ARGS, the template's port inputs left at their defaults. The template used to append its own
    5000 and mci-check refused the project; now the app keeps 8080 and only gains the pinned NodePort."""
    from kubernetes import client as k8s
    from kubernetes import config as k8s_config

    example.app.mkdir(parents=True, exist_ok=True)  # committed by run.sh with the example's files
    (example.app / "values.yaml").write_text(RECIPE_VALUES)
    variables = example.variables("own-values.yml", "HELM_UPGRADE_EXTRA_ARGS:\n  values:\n"
                                                    "    prod1: --values values.yaml\n    prod2: --values values.yaml\n")
    proc = example.run(variables=variables)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    assert results(proc.stdout) == {
        "mci-check: [prod1]": "PASS", "mci-check: [prod2]": "PASS", "build": "PASS", "test": "PASS",
        "production: [prod1]": "PASS", "production: [prod2]": "PASS",
        "mci-pin: [prod1]": "PASS", "mci-pin: [prod2]": "PASS", "mci-lb": "PASS", "mci-status": "PASS"}
    assert "keeping service.externalPort=8080 from values.yaml" in example.log("mci-check: [prod1]")
    assert ("HELM_UPGRADE_EXTRA_ARGS=--values values.yaml --set service.type=NodePort --set service.nodePort=30999 "
            "--set ingress.enabled=false") in example.log("production: [prod1]")

    for context in CONTEXTS:
        api = k8s_config.new_client_from_config(config_file=example.sim_env()["KUBECONFIG"], context=context)
        core = k8s.CoreV1Api(api)
        svc = core.read_namespaced_service("shop-auto-deploy", "shop")
        assert svc.spec.type == "NodePort"
        assert [(p.port, p.target_port, p.node_port) for p in svc.spec.ports] == [(8080, 8080, 30999)]
        pods = core.list_namespaced_pod("shop", label_selector="app=shop,track=stable").items
        assert pods and all([p.container_port for p in pod.spec.containers[0].ports] == [8080] for pod in pods)

    for backend_health in ("prod1 / us-central1-a (3/3)", "prod2 / europe-west1-b (3/3)"):
        assert backend_health in example.log("mci-status")
    # A request through the simulator's data plane, to the load balancer's VIP, reaches the app.
    url = lb_url(example)
    with urllib.request.urlopen(f"{url}/", timeout=10) as resp:
        assert resp.status == 200


def test_manual_drain_job_takes_prod1_out_and_the_next_pipeline_keeps_it_drained(example: Example) -> None:
    def scalers() -> dict[str, float]:
        [backend] = example.compute("backendServices")
        return {b["group"].rsplit("/zones/", 1)[1].split("/")[0]: b.get("capacityScaler", 1)
                for b in backend["backends"]}

    proc = example.run("--manual", "mci-drain: [prod1]")
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    ran = results(proc.stdout)
    assert ran["mci-lb"] == "PASS" and ran["mci-drain: [prod1]"] == "PASS", ran
    assert "mci-drain: [prod2]" not in ran and not [job for job in ran if job.startswith("mci-undrain")]
    assert "prod1 drained" in example.log("mci-drain: [prod1]")
    assert scalers() == {"us-central1-a": 0, "europe-west1-b": 1}
    # The next pipeline's mci-lb keeps the drain; its status shows it.
    again = example.run()
    assert again.returncode == 0 and results(again.stdout)["mci-lb"] == "PASS", again.stdout[-4000:]
    assert scalers() == {"us-central1-a": 0, "europe-west1-b": 1}
    assert "| prod1 | us-central1-a | 3/3 | drained |" in example.log("mci-status")
    back = example.run("--manual", "mci-undrain: [prod1]")
    assert back.returncode == 0 and results(back.stdout)["mci-undrain: [prod1]"] == "PASS", back.stdout[-4000:]
    assert scalers() == {"us-central1-a": 1, "europe-west1-b": 1}


def test_example_pipeline_with_neg_backends_exposes_instead_of_pinning_and_serves_from_the_pods(
        example: Example) -> None:
    """`backends: neg`: the deploys annotate the chart's ClusterIP Service, mci-expose waits for GKE's NEGs (no pin
    job, no node port), mci-lb builds NEG backends, and the VIP answers; the teardown pipeline removes ours."""
    neg = example.variant("neg.gitlab-ci.yml", ("      lb_name: shop\n", "      lb_name: shop\n      backends: neg\n"))
    proc = example.run("--file", neg)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    assert results(proc.stdout) == {
        "mci-check: [prod1]": "PASS", "mci-check: [prod2]": "PASS", "build": "PASS", "test": "PASS",
        "production: [prod1]": "PASS", "production: [prod2]": "PASS",
        "mci-expose: [prod1]": "PASS", "mci-expose: [prod2]": "PASS", "mci-lb": "PASS", "mci-status": "PASS"}
    annotation = '{"exposed_ports":{"5000":{"name":"gmci-neg-shop-5000"}}}'
    assert ('HELM_UPGRADE_EXTRA_ARGS=--set-json service.annotations.cloud\\.google\\.com/neg="{\\"exposed_ports\\":'
            '{\\"5000\\":{\\"name\\":\\"gmci-neg-shop-5000\\"}}}" --set ingress.enabled=false'
            ) in example.log("production: [prod1]")
    for context, zone in (("prod1", "us-central1-a"), ("prod2", "europe-west1-b")):
        svc = example.kubectl(context, "get", "service", "shop-auto-deploy", "-n", "shop")
        assert svc["spec"]["type"] == "ClusterIP" and "nodePort" not in svc["spec"]["ports"][0]
        assert svc["metadata"]["annotations"]["cloud.google.com/neg"] == annotation
        assert json.loads(svc["metadata"]["annotations"]["cloud.google.com/neg-status"]) == {
            "network_endpoint_groups": {"5000": "gmci-neg-shop-5000"}, "zones": [zone]}
        assert f"is exposed as NEG gmci-neg-shop-5000 in {zone}" in example.log(f"mci-expose: [{context}]")
    dotenv = (example.app / ".gitlab-ci-local/artifacts" / safe("mci-expose: [prod1]") /
              ".gitlab-ci-reports/dotenv/mci-pin-prod1.env").read_text()
    assert dotenv.splitlines() == ["MCI_PIN_CONTEXT_PROD1=prod1", "MCI_PIN_NAMESPACE_PROD1=shop",
                                   "MCI_NEG_NAME=gmci-neg-shop-5000", "MCI_NEG_ZONES_PROD1=us-central1-a"]

    # The load balancer's backends are the two clusters' zonal NEGs, not instance groups.
    backends = [b["group"] for bs in example.compute("backendServices") for b in bs["backends"]]
    assert sorted(g.split("/zones/")[1] for g in backends) == [
        "europe-west1-b/networkEndpointGroups/gmci-neg-shop-5000", "us-central1-a/networkEndpointGroups/gmci-neg-shop-5000"]
    url = lb_url(example)
    with urllib.request.urlopen(f"{url}/", timeout=10) as resp:
        assert resp.status == 200

    down = example.run("--file", neg, "--input", "mci_teardown=true")
    assert down.returncode == 0, down.stdout[-4000:] + down.stderr[-2000:]
    assert results(down.stdout)["mci-teardown"] == "PASS"
    for collection in ("forwardingRules", "targetHttpProxies", "urlMaps", "backendServices", "healthChecks",
                       "firewalls"):
        assert example.ours(collection) == [], collection


def test_switching_the_example_from_instance_groups_to_neg_under_load_fails_no_request(example: Example) -> None:
    """docs/ci-template.md's switch: one pipeline with `backends: neg` that keeps the node port (the user's
    HELM_UPGRADE_EXTRA_ARGS), then the plain `backends: neg` pipeline, both under 20 requests/s on the VIP."""
    from tests.traffic import Load

    first = example.run()
    assert first.returncode == 0, first.stdout[-4000:] + first.stderr[-2000:]
    url = lb_url(example)
    neg = example.variant("neg.gitlab-ci.yml", ("      lb_name: shop\n", "      lb_name: shop\n      backends: neg\n"))
    keep = "--set service.type=NodePort --set service.nodePort=30999"
    keep_node_port = example.variables("keep-node-port.yml", f"HELM_UPGRADE_EXTRA_ARGS:\n  values:\n"
                                                              f"    prod1: {keep}\n    prod2: {keep}\n")
    with Load(url) as switching:
        switching.hold(0.5)  # traffic before the pipeline starts
        began = time.monotonic()
        proc = example.run("--file", neg, variables=keep_node_port)
        ended = time.monotonic()
        switching.hold(1.0)  # and after it ends
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    assert results(proc.stdout)["mci-expose: [prod1]"] == "PASS" and "mci-pin: [prod1]" not in results(proc.stdout)
    backends = [b["group"] for bs in example.compute("backendServices") for b in bs["backends"]]
    assert backends and all("/networkEndpointGroups/" in g for g in backends), backends
    assert switching.spans(began, ended) and switching.failed == [], switching.failed[:5]

    with Load(url) as settled:  # the node port goes: nothing uses it any more
        settled.hold(0.5)
        began = time.monotonic()
        proc = example.run("--file", neg)
        ended = time.monotonic()
        settled.hold(2.0)  # 40 requests after the pipeline, for the clusters that answer them
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    for context in CONTEXTS:
        assert example.kubectl(context, "get", "service", "shop-auto-deploy", "-n", "shop")["spec"]["type"] == "ClusterIP"
    assert settled.spans(began, ended) and settled.failed == [], settled.failed[:5]
    assert {cluster for _, status, cluster in settled.log[-40:]} == {"prod1", "prod2"}


def _compute_writes(example: Example) -> int:
    """Compute writes the simulator has served so far (its journal)."""
    url = f"{example.sim_env()['GITLAB_MCI_COMPUTE_ENDPOINT']}/_sim/journal"
    with urllib.request.urlopen(url, timeout=10) as resp:
        entries = json.load(resp)["entries"]
    return sum(1 for e in entries if e["service"] == "compute" and e["write"])


def _the_recipes_world(example: Example, tmp_path: Path) -> tuple[str, dict[int, str]]:
    """What the recipe left running: the app deployed by the production jobs (release shop on node port 30999 in both
    clusters), and kubemci's classic chain on the reserved address web-ip with the user's certificate. Returns the
    address and its listeners (port → loopback URL)."""
    from tests.pki import write_pair

    deployed = example.run("production: [prod1]", "production: [prod2]")
    assert deployed.returncode == 0, deployed.stdout[-4000:] + deployed.stderr[-2000:]
    cert, key, _ = write_pair(tmp_path, "shop")
    made = json.loads(example.gitlab_mci("sim", "kubemci", "--lb", "shop", "--static-ip", "web-ip", "--context",
                                         "prod1,prod2", "--certificate-file", str(cert), "--key-file", str(key),
                                         "--state-dir", str(example.work / "sim"), "-o", "json").stdout)
    vip: str = made["vip"]
    served = listeners(example, vip)
    assert sorted(served) == [80, 443]
    return vip, served


def test_a_project_moving_from_kubemci_takes_it_over_in_the_manual_job_with_no_failed_request(
        example: Example, tmp_path: Path) -> None:
    """The recipe's project switches its .gitlab-ci.yml to the template with takeover_address: the pipeline deploys
    and pins as usual, `mci-takeover` (run by hand) moves the running kubemci load balancer while requests flow
    through its address, and `mci-lb` then finds nothing to change; the next pipeline, without the input, neither."""
    from gitlab_mci.demo_takeover import Traffic

    vip, listeners = _the_recipes_world(example, tmp_path)

    inputs = ("      lb_name: shop\n",
              "      lb_name: shop\n      static_ip: web-ip\n      certificates: mci1-ssl--shop\n")
    takeover = example.variant("takeover.gitlab-ci.yml", inputs,
                               ("      static_ip: web-ip\n", "      static_ip: web-ip\n      takeover_address: web-ip\n"))
    with Traffic(listeners, rate=20.0) as traffic:
        traffic.more(10)
        proc = example.run("--file", takeover, "--manual", "mci-takeover")
        assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
        ran = results(proc.stdout)
        assert {job: ran.get(job) for job in ("mci-takeover", "mci-lb", "mci-status")} == dict.fromkeys(
            ("mci-takeover", "mci-lb", "mci-status"), "PASS"), ran
        traffic.more(10)
    answers = traffic.answers
    failed = [a for a in answers if not a.ok]
    print(f"{len(answers)} requests through web-ip during the takeover pipeline, {len(failed)} failed")
    assert not failed, failed[:5]
    assert "taking over the load balancer on web-ip as shop" in example.log("mci-takeover")

    # kubemci's chain is gone; its address serves gitlab-mci's, and both clusters answer.
    assert [b["name"] for b in example.compute("backendServices") if b["name"].startswith("mci1-")] == []
    assert [b["name"] for b in example.compute("backendServices")], "gitlab-mci's backend service serves"
    rules = [r for r in example.compute("forwardingRules") if r["IPAddress"] == vip]
    assert sorted(r["portRange"] for r in rules) == ["443-443", "80-80"]
    assert {a.cluster for a in answers[-10:]} == {"prod1", "prod2"}

    # The next pipeline, the input dropped as docs/ci-template.md says: mci-lb changes nothing in Compute.
    after = example.variant("after.gitlab-ci.yml", inputs)
    before = _compute_writes(example)
    again = example.run("--file", after)
    assert again.returncode == 0, again.stdout[-4000:] + again.stderr[-2000:]
    assert results(again.stdout)["mci-lb"] == "PASS" and "mci-takeover" not in results(again.stdout)
    assert _compute_writes(example) == before, "the first apply after a takeover must find nothing to change"


def test_the_takeover_job_is_manual_and_blocking_only_in_a_takeover_pipeline(listing: Example) -> None:
    example = listing
    assert "mci-takeover" not in listed(example)  # the example has no takeover_address
    takeover = example.variant("takeover-listing.gitlab-ci.yml",
                               ("      lb_name: shop\n", "      lb_name: shop\n      takeover_address: web-ip\n"))
    jobs = listed(example, "--file", takeover)
    assert jobs["mci-takeover"]["when"] == "manual" and jobs["mci-takeover"]["allow_failure"] is False
    assert jobs["mci-lb"]["when"] == "on_success"
    down = listed(example, "--file", takeover, "--input", "mci_teardown=true")
    assert {name for name in down if name.startswith("mci-")} == {"mci-teardown"}


def test_a_takeover_whose_inputs_would_drop_https_stops_before_the_load_balancer_job_changes_anything(
        example: Example, tmp_path: Path) -> None:
    """A user who sets takeover_address but forgets the certificates input: the takeover itself keeps HTTPS, and the
    apply that follows would remove it. mci-takeover checks `lb plan` with the pipeline's inputs and fails, so mci-lb
    never runs, and HTTPS keeps serving."""
    from gitlab_mci.demo_takeover import Traffic

    vip, listeners = _the_recipes_world(example, tmp_path)
    forgot = example.variant("forgot-certificates.gitlab-ci.yml", (
        "      lb_name: shop\n", "      lb_name: shop\n      static_ip: web-ip\n      takeover_address: web-ip\n"))
    with Traffic(listeners, rate=20.0) as traffic:
        traffic.more(10)
        proc = example.run("--file", forgot, "--manual", "mci-takeover")
        traffic.more(10)
    assert proc.returncode != 0
    ran = results(proc.stdout)
    assert ran["mci-takeover"] == "FAIL" and "mci-lb" not in ran and "mci-status" not in ran, ran
    log = example.log("mci-takeover")
    assert "web-ip (" in log and "taken over in" in log  # the takeover itself finished, keeping HTTPS
    assert "- globalForwardingRules/mci1-fws--shop" in log  # what the apply would have deleted: the HTTPS rule
    assert "with these inputs mci-lb would change the load balancer just taken over" in log
    failed = [a for a in traffic.answers if not a.ok]
    assert not failed, failed[:5]
    rules = sorted(r["portRange"] for r in example.compute("forwardingRules") if r["IPAddress"] == vip)
    assert rules == ["443-443", "80-80"], "HTTPS is still served on the address"
