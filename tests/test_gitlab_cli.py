"""`gitlab-mci gitlab setup|teardown|gate` against the fake GitLab, through the real python-gitlab client."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from gitlab_mci.cli import main
from gitlab_mci.sim.gitlab import (
    FakeGitLab,
    JobScript,
    PipelineRequest,
    PipelineScript,
    Project,
    demo_fake,
    serve,
)
from gitlab_mci.sim.httpd import FaultRule, Faults, Journal, SimServer

TOKEN = "glpat-cli-test-token-9876543210"
JOB_TOKEN = "glcbt-cli-job-token-9876543210"
SECRET = "s3cr3t-Value_from-env-42"
SHA = "c0ffee" + "0" * 34
CI_ENV = ("CI_SERVER_URL", "CI_API_V4_URL", "CI_PROJECT_ID", "CI_PROJECT_PATH", "CI_JOB_TOKEN", "CI_COMMIT_SHA",
          "CI_COMMIT_REF_NAME", "GITLAB_TOKEN")


@dataclass
class Result:
    code: int
    out: str
    err: str

    @property
    def text(self) -> str:
        return self.out + self.err


@dataclass
class Env:
    fake: FakeGitLab
    project: Project
    server: SimServer
    journal: Journal
    capsys: pytest.CaptureFixture[str]

    def run(self, *args: str) -> Result:
        self.capsys.readouterr()
        try:
            main(list(args))
            code = 0
        except SystemExit as exc:
            code = int(exc.code or 0)
        out, err = self.capsys.readouterr()
        return Result(code, out, err)

    def writes(self) -> list[str]:
        time.sleep(0.05)  # the server records a request just after answering it
        return [f"{e.method} {e.path}" for e in self.journal.writes()]


@pytest.fixture(scope="module")
def server() -> Iterator[SimServer]:
    with serve(FakeGitLab(), journal=Journal(), faults=Faults()) as srv:
        yield srv


@pytest.fixture
def env(server: SimServer, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> Env:
    for name in CI_ENV:
        monkeypatch.delenv(name, raising=False)
    fake = FakeGitLab()
    fake.add_token(TOKEN)
    fake.add_token(JOB_TOKEN, kind="job")
    project = fake.add_project("group/app", project_id=7)
    server.handler = fake.handle
    assert server.journal is not None and server.faults is not None
    server.journal.reset()
    server.faults.clear()
    monkeypatch.setenv("CI_API_V4_URL", server.url + "/api/v4")
    monkeypatch.setenv("CI_PROJECT_ID", "7")
    monkeypatch.setenv("GITLAB_TOKEN", TOKEN)
    monkeypatch.setenv("PROD2_SA_TOKEN", SECRET)
    return Env(fake, project, server, server.journal, capsys)


def assert_no_secrets(result: Result) -> None:
    for secret in (TOKEN, JOB_TOKEN, SECRET):
        assert secret not in result.text


def one_line_error(result: Result) -> str:
    assert result.code == 1, result
    lines = result.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("gitlab-mci: error: "), result.err
    return lines[0]


ENVS_YAML = """\
variables:
  GOOGLE_CLOUD_PROJECT: demo-project
  MCI_NODE_PORT: 30999
environments:
  prod1:
    KUBE_CONTEXT: group/agents:prod1
    KUBE_NAMESPACE: app
    KUBE_INGRESS_BASE_DOMAIN: prod1.example.com
  prod2:
    KUBE_CONTEXT: group/agents:prod2
    KUBE_NAMESPACE: app
    KUBE_INGRESS_BASE_DOMAIN: prod2.example.com
    MCI_DEPLOY_TOKEN: {from_env: PROD2_SA_TOKEN}
    MCI_KUBECONFIG: {from_file: kubeconfig.yaml, type: file}
    MCI_ENABLED: true
"""


@pytest.fixture
def envs_file(tmp_path: Path) -> Path:
    (tmp_path / "kubeconfig.yaml").write_text("apiVersion: v1\nkind: Config\nclusters: []\n")
    path = tmp_path / "envs.yaml"
    path.write_text(ENVS_YAML)
    return path


# --- setup ------------------------------------------------------------------------------------------------------------

def test_setup_creates_scoped_variables_then_is_idempotent(env: Env, envs_file: Path) -> None:
    first = env.run("gitlab", "setup", "--file", str(envs_file))
    assert first.code == 0, first.err
    assert_no_secrets(first)
    v = env.project.variable
    assert v("KUBE_CONTEXT", "prod1").value == "group/agents:prod1"  # type: ignore[union-attr]
    assert v("KUBE_CONTEXT", "prod2").value == "group/agents:prod2"  # type: ignore[union-attr]
    assert v("MCI_NODE_PORT", "*").value == "30999"  # type: ignore[union-attr]
    assert v("MCI_ENABLED", "prod2").value == "true"  # type: ignore[union-attr]
    token = v("MCI_DEPLOY_TOKEN", "prod2")
    assert token is not None and token.value == SECRET and token.masked and token.protected
    kubeconfig = v("MCI_KUBECONFIG", "prod2")
    # A file is a secret, but a multi-line value cannot be masked: protected only.
    assert kubeconfig is not None and kubeconfig.variable_type == "file"
    assert kubeconfig.protected and not kubeconfig.masked
    assert not v("KUBE_NAMESPACE", "prod1").protected  # type: ignore[union-attr]
    lines = first.out.splitlines()
    assert lines[0].split() == ["ENVIRONMENT", "VARIABLE", "ACTION", "TYPE", "FLAGS", "NOTE"]
    row = next(line for line in lines if "MCI_DEPLOY_TOKEN" in line).split()
    assert row == ["prod2", "MCI_DEPLOY_TOKEN", "created", "env_var", "masked,protected"]
    assert "not maskable" in next(line for line in lines if "MCI_KUBECONFIG" in line)
    assert lines[-1] == "group/app: 11 created, 0 updated, 0 unchanged"
    assert len(env.writes()) == 11

    env.journal.reset()
    second = env.run("gitlab", "setup", "--file", str(envs_file))
    assert second.code == 0, second.err
    assert env.writes() == []
    assert second.out.splitlines()[-1] == "group/app: 0 created, 0 updated, 11 unchanged"


def test_setup_updates_only_what_differs(env: Env, envs_file: Path) -> None:
    assert env.run("gitlab", "setup", "-f", str(envs_file)).code == 0
    env.project.variable("KUBE_NAMESPACE", "prod2").value = "old"  # type: ignore[union-attr]
    env.project.variable("MCI_DEPLOY_TOKEN", "prod2").protected = False  # type: ignore[union-attr]
    env.journal.reset()
    result = env.run("gitlab", "setup", "-f", str(envs_file))
    assert result.code == 0, result.err
    assert_no_secrets(result)
    assert sorted(env.writes()) == [
        "PUT /api/v4/projects/7/variables/KUBE_NAMESPACE?filter%5Benvironment_scope%5D=prod2",
        "PUT /api/v4/projects/7/variables/MCI_DEPLOY_TOKEN?filter%5Benvironment_scope%5D=prod2",
    ]
    assert env.project.variable("KUBE_NAMESPACE", "prod1").value == "app"  # type: ignore[union-attr]
    rows = {tuple(line.split()[:2]): line for line in result.out.splitlines()}
    assert "changed: value" in rows[("prod2", "KUBE_NAMESPACE")]
    assert "changed: protected" in next(line for line in result.out.splitlines() if "MCI_DEPLOY_TOKEN" in line)


def test_setup_dry_run_writes_nothing(env: Env, envs_file: Path) -> None:
    result = env.run("gitlab", "setup", "-f", str(envs_file), "--dry-run", "-o", "json")
    assert result.code == 0, result.err
    assert env.writes() == [] and env.project.variables == []
    assert '"would create"' in result.out
    assert_no_secrets(result)


def test_setup_reads_every_page_of_existing_variables(env: Env, envs_file: Path) -> None:
    for i in range(150):
        env.fake.add_variable(env.project, f"OTHER_{i}", "x", environment_scope="staging")
    env.fake.add_variable(env.project, "KUBE_NAMESPACE", "app", environment_scope="prod2")  # on page 2
    result = env.run("gitlab", "setup", "-f", str(envs_file))
    assert result.code == 0, result.err
    assert "unchanged" in next(line for line in result.out.splitlines() if "prod2" in line and "KUBE_NAMESPACE" in
                               line)
    time.sleep(0.05)
    assert len([e for e in env.journal.reads() if "/variables" in e.path]) == 2
    assert len(env.writes()) == 10


@pytest.mark.parametrize(("text", "expected"), [
    ("environments: [prod1\n", "malformed YAML at line 2"),
    ("enviroments: {prod1: {A: b}}\n", "unknown key 'enviroments'"),
    ("environments: {prod1: {A: {value: b, colour: red}}}\n", "environments.prod1.A: unknown key 'colour'"),
    ("environments: {prod1: {BAD-KEY: b}}\n", "environments.prod1.BAD-KEY: variable names"),
    ("environments: {prod1: {A: {value: short, masked: true}}}\n", "environments.prod1.A: value cannot be masked"),
    ("environments: {prod1: {A: {from_env: NOT_SET_ANYWHERE}}}\n", "NOT_SET_ANYWHERE is not set"),
    ("environments: {prod1: {A: {value: b, type: blob}}}\n", "environments.prod1.A.type"),
    ("environments: {prod1: {A: null}}\n", "environments.prod1.A: no value"),
    ("variables: {A: b}\n", "environments: expected a mapping"),
    ("- a\n- b\n", "expected a mapping"),
])
def test_setup_rejects_bad_files_before_any_request(env: Env, tmp_path: Path, text: str, expected: str) -> None:
    path = tmp_path / "envs.yaml"
    path.write_text(text)
    line = one_line_error(env.run("gitlab", "setup", "-f", str(path)))
    assert str(path) in line and expected in line
    time.sleep(0.05)
    assert env.journal.entries() == []


def test_setup_missing_file_is_one_line(env: Env, tmp_path: Path) -> None:
    line = one_line_error(env.run("gitlab", "setup", "-f", str(tmp_path / "nope.yaml")))
    assert "nope.yaml: cannot read" in line


def test_setup_needs_an_access_token(env: Env, envs_file: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("GITLAB_TOKEN")
    assert "no GitLab token" in one_line_error(env.run("gitlab", "setup", "-f", str(envs_file)))
    monkeypatch.setenv("CI_JOB_TOKEN", JOB_TOKEN)
    result = env.run("gitlab", "setup", "-f", str(envs_file))
    assert "set GITLAB_TOKEN" in one_line_error(result)
    assert_no_secrets(result)


def test_setup_wrong_token_is_one_line_without_the_token(env: Env, envs_file: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GITLAB_TOKEN", "glpat-wrong-wrong-wrong")
    result = env.run("gitlab", "setup", "-f", str(envs_file))
    line = one_line_error(result)
    assert "rejected GITLAB_TOKEN (401 Unauthorized)" in line and "glpat-wrong" not in result.text


def test_setup_bad_url_is_named(env: Env, envs_file: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    line = one_line_error(env.run("gitlab", "setup", "-f", str(envs_file), "--url", "gitlab.example.com"))
    assert "bad GitLab URL 'gitlab.example.com' (from --url)" in line
    monkeypatch.setenv("CI_API_V4_URL", "ftp://x")
    assert "(from CI_API_V4_URL)" in one_line_error(env.run("gitlab", "setup", "-f", str(envs_file)))


def test_unreachable_server_names_the_url(env: Env, envs_file: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    started = time.monotonic()
    result = env.run("gitlab", "setup", "-f", str(envs_file), "--url", url)
    line = one_line_error(result)
    assert f"cannot reach GitLab at {url}" in line
    assert time.monotonic() - started < 10
    assert_no_secrets(result)


def test_setup_unknown_project(env: Env, envs_file: Path) -> None:
    line = one_line_error(env.run("gitlab", "setup", "-f", str(envs_file), "--project", "group/nope"))
    assert "reading project group/nope" in line and "404 Project Not Found" in line


def test_setup_uses_the_project_named_in_the_file(env: Env, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CI_PROJECT_ID")
    path = tmp_path / "envs.yaml"
    path.write_text("project: group/app\nenvironments: {prod1: {A: b}}\n")
    assert env.run("gitlab", "setup", "-f", str(path)).code == 0
    assert env.project.variable("A", "prod1") is not None


# --- teardown ---------------------------------------------------------------------------------------------------------

def teardown_script(outcome: str = "success") -> PipelineScript:
    def script(req: PipelineRequest) -> list[JobScript]:
        if req.inputs.get("mci_teardown") or req.variables.get("MCI_TEARDOWN") == "true":
            return [JobScript("mci-teardown-prod1", stage="cleanup", duration=0.2, outcome=outcome,
                              environment="prod1", action="stop")]
        return [JobScript("deploy-prod1", environment="prod1")]
    return script


@pytest.mark.parametrize("outcome", ["success", "failed"])
def test_teardown_with_inputs(env: Env, outcome: str) -> None:
    env.project.declared_inputs = {"mci_teardown", "mci_teardown_environments"}
    env.project.pipeline_script = teardown_script(outcome)
    result = env.run("gitlab", "teardown", "--interval", "0.05", "--timeout", "10", "-e", "prod1")
    assert_no_secrets(result)
    pipeline = env.project.pipelines[-1]
    assert pipeline.inputs == {"mci_teardown": True, "mci_teardown_environments": "prod1"}
    assert f"started teardown pipeline #{pipeline.id} on main" in result.out
    assert f"pipeline #{pipeline.id}: running" in result.out
    if outcome == "success":
        assert result.code == 0, result.err
        assert f"teardown success: pipeline #{pipeline.id}" in result.out
    else:
        line = one_line_error(result)
        assert f"teardown pipeline #{pipeline.id} failed: failed job(s) mci-teardown-prod1" in line


def test_teardown_falls_back_to_a_pipeline_variable(env: Env) -> None:
    env.project.pipeline_script = teardown_script()
    result = env.run("gitlab", "teardown", "--interval", "0.05", "--ref", "main")
    assert result.code == 0, result.err
    assert "falling back to the pipeline variable MCI_TEARDOWN=true" in result.out
    assert env.project.pipelines[-1].variables == {"MCI_TEARDOWN": "true"}


def test_teardown_when_inputs_and_variables_are_both_refused(env: Env) -> None:
    env.project.pipeline_variables_allowed = False
    line = one_line_error(env.run("gitlab", "teardown", "--interval", "0.05"))
    assert "declare `mci_teardown` under `spec: inputs:`" in line
    assert env.project.pipelines == []


def test_teardown_no_wait_returns_at_once(env: Env) -> None:
    env.project.declared_inputs = {"mci_teardown"}
    env.project.pipeline_script = teardown_script()
    result = env.run("gitlab", "teardown", "--no-wait")
    assert result.code == 0 and "(not waiting)" in result.out
    assert env.project.pipelines[-1].status == "running"


def test_teardown_times_out(env: Env) -> None:
    env.project.declared_inputs = {"mci_teardown"}
    env.project.pipeline_script = lambda req: [JobScript("slow", duration=30)]
    line = one_line_error(env.run("gitlab", "teardown", "--interval", "0.05", "--timeout", "0.3"))
    assert "is still running after 0.3s" in line


@pytest.mark.parametrize("outcome", ["success", "failed"])
def test_teardown_plays_the_manual_job(env: Env, outcome: str) -> None:
    env.fake.run_pipeline(env.project, [JobScript("old", when="manual")])
    pipeline = env.fake.run_pipeline(env.project, [
        JobScript("deploy-prod1", environment="prod1"),
        JobScript("mci-teardown", stage="cleanup", when="manual", duration=0.2, outcome=outcome),
    ])
    result = env.run("gitlab", "teardown", "--mode", "job", "--interval", "0.05")
    job = pipeline.jobs[1]
    assert f"played job mci-teardown #{job.id} of pipeline #{pipeline.id}" in result.out
    assert job.played_at is not None
    if outcome == "success":
        assert result.code == 0, result.err
        assert f"teardown success: job #{job.id}" in result.out
    else:
        assert f"teardown job mci-teardown #{job.id} failed" in one_line_error(result)


def test_teardown_job_mode_without_a_playable_job(env: Env) -> None:
    assert "does not apply to --mode job" in one_line_error(env.run("gitlab", "teardown", "--mode", "job", "-e", "x"))
    env.fake.run_pipeline(env.project, [JobScript("deploy")])
    assert "has a job named 'mci-teardown'" in one_line_error(env.run("gitlab", "teardown", "--mode", "job"))
    env.fake.run_pipeline(env.project, [JobScript("mci-teardown")])
    line = one_line_error(env.run("gitlab", "teardown", "--mode", "job"))
    assert "is success, not waiting to be played" in line


@pytest.mark.parametrize("outcome", ["success", "failed"])
def test_teardown_stops_environments(env: Env, outcome: str) -> None:
    env.fake.run_pipeline(env.project, [
        JobScript("deploy-prod1", environment="prod1"),
        JobScript("stop-prod1", stage="cleanup", when="manual", environment="prod1", action="stop", duration=0.2,
                  outcome=outcome),
    ])
    env.fake.add_environment(env.project, "prod2")
    result = env.run("gitlab", "teardown", "--mode", "stop", "-e", "prod1,prod2", "--interval", "0.05")
    assert "stopping environment prod1" in result.out
    if outcome == "success":
        assert result.code == 0, result.err
        assert "environment prod1: stopping" in result.out
        assert "teardown stopped: environment prod1" in result.out
        assert "teardown stopped: environment prod2" in result.out
        assert {e.name: e.state for e in env.project.environments} == {"prod1": "stopped", "prod2": "stopped"}
    else:
        assert "environment prod1 is available again: its stop job failed" in one_line_error(result)


def test_teardown_stop_needs_existing_environments(env: Env) -> None:
    assert "needs --environment" in one_line_error(env.run("gitlab", "teardown", "--mode", "stop"))
    line = one_line_error(env.run("gitlab", "teardown", "--mode", "stop", "-e", "prod9"))
    assert "environment 'prod9' does not exist" in line
    assert env.writes() == []


# --- gate -------------------------------------------------------------------------------------------------------------

def test_gate_passes_when_every_environment_runs_the_commit(env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CI_COMMIT_SHA", SHA)
    env.fake.add_deployment(env.project, "prod1", sha="1" * 40)
    env.fake.add_deployment(env.project, "prod1", sha=SHA)
    env.fake.add_deployment(env.project, "prod2", sha=SHA)
    result = env.run("gitlab", "gate", "--environment", "prod1,prod2")
    assert result.code == 0, result.err
    assert result.out.splitlines()[-1] == f"gate: prod1, prod2 all run {SHA[:8]}"
    assert env.writes() == []


def test_gate_works_with_the_job_token(env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("GITLAB_TOKEN")
    monkeypatch.setenv("CI_JOB_TOKEN", JOB_TOKEN)
    env.fake.add_deployment(env.project, "prod1", sha=SHA)
    result = env.run("gitlab", "gate", "-e", "prod1", "--sha", SHA)
    assert result.code == 0, result.err
    assert_no_secrets(result)


def test_gate_fails_naming_each_environment(env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CI_COMMIT_SHA", SHA)
    env.fake.add_deployment(env.project, "prod1", sha=SHA)
    env.fake.add_deployment(env.project, "prod2", sha="b" * 40)  # wrong sha
    env.fake.add_deployment(env.project, "prod3", sha="c" * 40)
    env.fake.add_deployment(env.project, "prod3", sha=SHA, status="failed")  # right sha, failed
    env.fake.add_environment(env.project, "prod4")  # never deployed
    result = env.run("gitlab", "gate", "-e", "prod1", "-e", "prod2,prod3,prod4,prod5")
    line = one_line_error(result)
    assert line == (f"gitlab-mci: error: gate: not every environment runs {SHA[:8]}: "
                    "prod2 (last deployment #2 is at bbbbbbbb), prod3 (last deployment #4 failed), "
                    "prod4 (never deployed), prod5 (no such environment)")


def test_gate_needs_a_commit(env: Env) -> None:
    assert "pass --sha or set CI_COMMIT_SHA" in one_line_error(env.run("gitlab", "gate", "-e", "prod1"))


def test_gate_sees_a_running_deployment_as_not_done(env: Env) -> None:
    env.fake.run_pipeline(env.project, [JobScript("deploy-prod1", environment="prod1", duration=5)], sha=SHA)
    line = one_line_error(env.run("gitlab", "gate", "-e", "prod1", "--sha", SHA))
    assert "prod1 (last deployment #1 running)" in line


# --- transient errors and the whole flow -----------------------------------------------------------------------------

def test_transient_errors_on_reads_are_retried(env: Env, envs_file: Path) -> None:
    assert env.server.faults is not None
    env.server.faults.add(FaultRule(service="gitlab", method="GET", path="/variables", status=503, times=2))
    result = env.run("gitlab", "setup", "-f", str(envs_file))
    assert result.code == 0, result.err
    assert len(env.project.variables) == 11


def test_a_failed_pipeline_creation_is_not_retried(env: Env) -> None:
    assert env.server.faults is not None
    env.project.declared_inputs = {"mci_teardown"}
    env.server.faults.add(FaultRule(service="gitlab", method="POST", path="/pipeline$", status=503, times=1))
    line = one_line_error(env.run("gitlab", "teardown", "--interval", "0.05"))
    assert "GitLab refused creating a teardown pipeline on main (HTTP 503" in line
    assert env.writes() == ["POST /api/v4/projects/7/pipeline"]


def test_demo_pipeline_end_to_end(env: Env, envs_file: Path, server: SimServer) -> None:
    """setup → a pushed pipeline deploys prod1 and prod2 → the gate passes at its commit → teardown job."""
    import gitlab

    fake = demo_fake(token=TOKEN, job_duration=0.5)
    server.handler = fake.handle
    assert env.run("gitlab", "setup", "-f", str(envs_file), "-p", "group/app").code == 0
    project = gitlab.Gitlab(server.url, private_token=TOKEN).projects.get("group/app")
    pipeline = project.pipelines.create({"ref": "main"})
    sha = pipeline.sha
    early = env.run("gitlab", "gate", "-e", "prod1,prod2", "--sha", sha, "-p", "group/app")
    assert "prod1 (last deployment #1 running)" in one_line_error(early)
    deadline = time.time() + 5
    while pipeline.status != "success" and time.time() < deadline:
        time.sleep(0.05)
        pipeline.refresh()
    assert pipeline.status == "success"
    gate = env.run("gitlab", "gate", "-e", "prod1,prod2", "--sha", sha, "-p", "group/app")
    assert gate.code == 0, gate.err
    down = env.run("gitlab", "teardown", "--mode", "job", "-p", "group/app", "--interval", "0.05")
    assert down.code == 0, down.err
    assert "teardown success: job" in down.out
