"""The fake GitLab API, driven by the real python-gitlab client over HTTP: it answers as GitLab does."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import gitlab
import pytest
import requests

from gitlab_mci.sim.gitlab import FakeGitLab, JobScript, Project, project_path_id, serve
from gitlab_mci.sim.httpd import Journal, SimServer

TOKEN = "glpat-fake-token-0123456789"
JOB_TOKEN = "glcbt-fake-job-token-0123456789"


@dataclass
class Ctx:
    fake: FakeGitLab
    project: Project
    server: SimServer
    journal: Journal
    gl: gitlab.Gitlab

    @property
    def api(self) -> gitlab.v4.objects.Project:
        return self.gl.projects.get(self.project.id, lazy=True)


@pytest.fixture(scope="module")
def server() -> Iterator[SimServer]:
    # One HTTP server per module (stopping one takes half a second); each test swaps in a fresh fake.
    with serve(FakeGitLab(), journal=Journal()) as srv:
        yield srv


@pytest.fixture
def ctx(server: SimServer) -> Ctx:
    fake = FakeGitLab()
    fake.add_token(TOKEN)
    fake.add_token(JOB_TOKEN, kind="job")
    project = fake.add_project("group/app", project_id=42)
    server.handler = fake.handle
    assert server.journal is not None
    server.journal.reset()
    return Ctx(fake, project, server, server.journal, gitlab.Gitlab(server.url, private_token=TOKEN))


def settled(journal: Journal) -> Journal:
    """The journal once the server has recorded the last request (it records after answering)."""
    time.sleep(0.05)
    return journal


def message(exc: gitlab.GitlabError) -> Any:
    """The decoded error body python-gitlab kept (a string or GitLab's validation dict)."""
    return exc.error_message


def raw_get(ctx: Ctx, path: str, **params: str) -> requests.Response:
    return requests.get(f"{ctx.server.url}/api/v4{path}", params=params, headers={"PRIVATE-TOKEN": TOKEN},
                        timeout=5)


# --- projects and authentication --------------------------------------------------------------------------------------

def test_project_by_id_and_by_url_encoded_path(ctx: Ctx) -> None:
    assert ctx.gl.projects.get(42).path_with_namespace == "group/app"
    assert ctx.gl.projects.get("group/app").id == 42
    assert any("/projects/group%2Fapp" in e.path for e in settled(ctx.journal).entries())
    assert raw_get(ctx, f"/projects/{project_path_id('group/app')}").json()["default_branch"] == "main"


def test_missing_project_is_gitlabs_404(ctx: Ctx) -> None:
    with pytest.raises(gitlab.GitlabGetError) as err:
        ctx.gl.projects.get("group/nope")
    assert err.value.response_code == 404
    assert raw_get(ctx, "/projects/999").json() == {"message": "404 Project Not Found"}


@pytest.mark.parametrize("headers", [
    {}, {"PRIVATE-TOKEN": "wrong"}, {"JOB-TOKEN": TOKEN}, {"PRIVATE-TOKEN": JOB_TOKEN}])
def test_missing_or_wrong_token_is_401(ctx: Ctx, headers: dict[str, str]) -> None:
    resp = requests.get(f"{ctx.server.url}/api/v4/projects/42", headers=headers, timeout=5)
    assert resp.status_code == 401
    assert resp.json() == {"message": "401 Unauthorized"}


def test_python_gitlab_sees_401_as_authentication_error(ctx: Ctx) -> None:
    with pytest.raises(gitlab.GitlabAuthenticationError):
        gitlab.Gitlab(ctx.server.url, private_token="nope").projects.get(42)


def test_job_token_works_only_on_environments_and_deployments(ctx: Ctx) -> None:
    gl = gitlab.Gitlab(ctx.server.url, job_token=JOB_TOKEN)
    project = gl.projects.get(42, lazy=True)
    assert project.environments.list(get_all=True) == []
    assert project.deployments.list(get_all=True) == []
    with pytest.raises(gitlab.GitlabAuthenticationError):
        gl.projects.get(42)
    with pytest.raises(gitlab.GitlabAuthenticationError):
        project.variables.create({"key": "A", "value": "b"})


def test_unknown_route_is_404(ctx: Ctx) -> None:
    resp = raw_get(ctx, "/projects/42/nothing-here")
    assert resp.status_code == 404 and resp.json() == {"error": "404 Not Found"}


# --- variables --------------------------------------------------------------------------------------------------------

def test_variables_paginate_with_gitlabs_headers(ctx: Ctx) -> None:
    for i in range(130):
        ctx.fake.add_variable(ctx.project, f"VAR_{i:03}", f"value-{i}", environment_scope="prod1")
    resp = raw_get(ctx, "/projects/42/variables", per_page="50", page="2")
    assert resp.headers["x-page"] == "2" and resp.headers["x-per-page"] == "50"
    assert resp.headers["x-total"] == "130" and resp.headers["x-next-page"] == "3"
    assert resp.headers["x-total-pages"] == "3" and resp.headers["x-prev-page"] == "1"
    assert 'rel="next"' in resp.headers["Link"] and "page=3" in resp.links["next"]["url"]
    assert resp.json()[0]["key"] == "VAR_050"

    ctx.journal.reset()
    keys = [v.key for v in ctx.api.variables.list(get_all=True, per_page=100)]
    assert keys == [f"VAR_{i:03}" for i in range(130)]
    assert len(settled(ctx.journal).reads()) == 2  # python-gitlab followed the Link header once

    with pytest.warns(UserWarning):  # python-gitlab warns when a list was cut at one page
        assert len(ctx.api.variables.list()) == 20


def test_duplicate_key_and_scope_is_400_already_taken(ctx: Ctx) -> None:
    ctx.api.variables.create({"key": "KUBE_CONTEXT", "value": "a", "environment_scope": "prod1"})
    ctx.api.variables.create({"key": "KUBE_CONTEXT", "value": "b", "environment_scope": "prod2"})
    with pytest.raises(gitlab.GitlabCreateError) as err:
        ctx.api.variables.create({"key": "KUBE_CONTEXT", "value": "c", "environment_scope": "prod2"})
    assert err.value.response_code == 400
    assert message(err.value) == {"key": ["(KUBE_CONTEXT) has already been taken"]}


def test_several_scopes_need_the_environment_scope_filter(ctx: Ctx) -> None:
    for scope, value in (("prod1", "ctx-1"), ("prod2", "ctx-2")):
        ctx.api.variables.create({"key": "KUBE_CONTEXT", "value": value, "environment_scope": scope})
    with pytest.raises(gitlab.GitlabGetError) as err:
        ctx.api.variables.get("KUBE_CONTEXT")
    assert err.value.response_code == 409
    assert "filter[environment_scope]" in str(err.value.error_message)
    with pytest.raises(gitlab.GitlabUpdateError):
        ctx.api.variables.update("KUBE_CONTEXT", {"value": "x"})
    with pytest.raises(gitlab.GitlabDeleteError):
        ctx.api.variables.delete("KUBE_CONTEXT")

    assert ctx.api.variables.get("KUBE_CONTEXT", filter={"environment_scope": "prod2"}).value == "ctx-2"
    ctx.api.variables.update("KUBE_CONTEXT", {"value": "new-2"}, filter={"environment_scope": "prod2"})
    assert ctx.project.variable("KUBE_CONTEXT", "prod2").value == "new-2"  # type: ignore[union-attr]
    assert ctx.project.variable("KUBE_CONTEXT", "prod1").value == "ctx-1"  # type: ignore[union-attr]
    ctx.api.variables.delete("KUBE_CONTEXT", filter={"environment_scope": "prod1"})
    # With one scope left, the key alone is enough again.
    assert ctx.api.variables.get("KUBE_CONTEXT").environment_scope == "prod2"
    with pytest.raises(gitlab.GitlabGetError) as missing:
        ctx.api.variables.get("KUBE_CONTEXT", filter={"environment_scope": "prod1"})
    assert missing.value.error_message == "404 Variable Not Found"


@pytest.mark.parametrize(("value", "raw", "ok"), [
    ("short", False, False),
    ("has a space in it", False, False),
    ("line1\nline2-long", False, False),
    ("bang!bang!bang", False, False),
    ("bang!bang!bang", True, True),
    ("abc_DEF+/=@:.~-123", False, True),
])
def test_masked_values_follow_gitlabs_rules(ctx: Ctx, value: str, raw: bool, ok: bool) -> None:
    data = {"key": "SECRET", "value": value, "masked": True, "raw": raw}
    if ok:
        assert ctx.api.variables.create(data).masked is True
    else:
        with pytest.raises(gitlab.GitlabCreateError) as err:
            ctx.api.variables.create(data)
        assert message(err.value) == {"value": ["is invalid"]}


def test_variable_attributes_round_trip(ctx: Ctx) -> None:
    ctx.api.variables.create({"key": "KEY_JSON", "value": '{"a": 1}', "variable_type": "file", "protected": True,
                              "environment_scope": "prod1", "description": "key"})
    got = ctx.api.variables.get("KEY_JSON", filter={"environment_scope": "prod1"}).attributes
    assert {k: got[k] for k in ("variable_type", "protected", "masked", "raw", "hidden", "description")} == {
        "variable_type": "file", "protected": True, "masked": False, "raw": False, "hidden": False,
        "description": "key"}
    with pytest.raises(gitlab.GitlabCreateError) as err:
        ctx.api.variables.create({"key": "X", "value": "y", "variable_type": "weird"})
    assert err.value.error_message == "variable_type does not have a valid value"
    with pytest.raises(gitlab.GitlabCreateError) as bad_key:
        ctx.api.variables.create({"key": "BAD-KEY", "value": "y"})
    assert "key" in bad_key.value.error_message


def test_hidden_variables_never_show_their_value(ctx: Ctx) -> None:
    ctx.api.variables.create({"key": "HIDDEN_TOKEN", "value": "abcdefgh12345", "masked_and_hidden": True})
    got = ctx.api.variables.get("HIDDEN_TOKEN")
    assert got.value is None and got.hidden is True and got.masked is True


# --- environments and deployments -------------------------------------------------------------------------------------

def test_environment_filters_and_last_deployment(ctx: Ctx) -> None:
    ctx.fake.add_deployment(ctx.project, "prod1", sha="a" * 40)
    ctx.fake.add_deployment(ctx.project, "prod1", sha="b" * 40, status="failed")
    ctx.fake.add_environment(ctx.project, "prod2")
    ctx.fake.add_environment(ctx.project, "review/x", state="stopped", tier="development")
    names = lambda envs: sorted(e.name for e in envs)  # noqa: E731
    assert names(ctx.api.environments.list(get_all=True)) == ["prod1", "prod2", "review/x"]
    assert names(ctx.api.environments.list(name="prod1", get_all=True)) == ["prod1"]
    assert names(ctx.api.environments.list(search="prod", get_all=True)) == ["prod1", "prod2"]
    assert names(ctx.api.environments.list(states="stopped", get_all=True)) == ["review/x"]
    env = ctx.api.environments.get(ctx.api.environments.list(name="prod1")[0].id)
    # last_deployment is the latest *successful* one, as in GitLab.
    assert env.last_deployment["sha"] == "a" * 40 and env.last_deployment["status"] == "success"
    assert ctx.api.environments.get(ctx.project.environment("prod2").id).last_deployment is None  # type: ignore[union-attr]


def test_deployments_filter_and_order(ctx: Ctx) -> None:
    for sha, status, env in (("1" * 40, "success", "prod1"), ("2" * 40, "failed", "prod1"),
                             ("3" * 40, "success", "prod2")):
        ctx.fake.add_deployment(ctx.project, env, sha=sha, status=status)
    latest = ctx.api.deployments.list(environment="prod1", order_by="id", sort="desc", per_page=1, get_all=False)
    assert [(d.sha[0], d.status) for d in latest] == [("2", "failed")]
    ok = ctx.api.deployments.list(environment="prod1", status="success", get_all=True)
    assert [d.sha[0] for d in ok] == ["1"]
    assert [d.environment["name"] for d in ctx.api.deployments.list(get_all=True)] == ["prod1", "prod1", "prod2"]
    with pytest.raises(gitlab.GitlabListError) as err:
        ctx.api.deployments.list(order_by="colour", get_all=True)
    assert err.value.response_code == 400


def test_stopping_an_environment_runs_its_stop_job(ctx: Ctx) -> None:
    ctx.fake.run_pipeline(ctx.project, [
        JobScript("deploy", environment="prod1"),
        JobScript("stop-prod1", stage="cleanup", when="manual", environment="prod1", action="stop", duration=0.3),
    ])
    env = ctx.api.environments.list(name="prod1")[0]
    env.stop()
    assert ctx.api.environments.get(env.id).state == "stopping"
    time.sleep(0.4)
    assert ctx.api.environments.get(env.id).state == "stopped"


def test_stopping_without_a_stop_job_is_immediate(ctx: Ctx) -> None:
    ctx.fake.add_environment(ctx.project, "prod2")
    env = ctx.api.environments.list(name="prod2")[0]
    env.stop()
    assert ctx.api.environments.get(env.id).state == "stopped"


# --- pipelines and jobs -----------------------------------------------------------------------------------------------

def test_pipeline_moves_from_created_to_success(ctx: Ctx) -> None:
    ctx.fake.pipeline_start_delay = 0.2
    ctx.project.pipeline_script = lambda req: [
        JobScript("deploy-prod1", environment="prod1", duration=0.2),
        JobScript("lb", stage="lb", duration=0.1),
    ]
    pipeline = ctx.api.pipelines.create({"ref": "main"})
    assert pipeline.status == "created" and pipeline.ref == "main"
    seen = [pipeline.status]
    deadline = time.time() + 5
    while pipeline.status not in ("success", "failed") and time.time() < deadline:
        time.sleep(0.05)
        pipeline.refresh()
        if pipeline.status != seen[-1]:
            seen.append(pipeline.status)
    assert seen == ["created", "running", "success"]
    assert [(j.name, j.status) for j in pipeline.jobs.list(get_all=True)] == [
        ("deploy-prod1", "success"), ("lb", "success")]
    dep = ctx.api.deployments.list(environment="prod1", get_all=True)[0]
    assert dep.status == "success" and dep.deployable["name"] == "deploy-prod1"


def test_failed_job_fails_the_pipeline_and_skips_later_stages(ctx: Ctx) -> None:
    ctx.project.pipeline_script = lambda req: [
        JobScript("deploy-prod1", environment="prod1", outcome="failed"),
        JobScript("lb", stage="lb"),
        JobScript("teardown", stage="cleanup", when="manual"),
    ]
    pipeline = ctx.api.pipelines.create({"ref": "main"})
    assert pipeline.status == "failed"
    assert {j.name: j.status for j in pipeline.jobs.list(get_all=True)} == {
        "deploy-prod1": "failed", "lb": "skipped", "teardown": "skipped"}
    assert ctx.api.deployments.list(environment="prod1", get_all=True)[0].status == "failed"


def test_pipeline_inputs_and_variables_are_checked(ctx: Ctx) -> None:
    seen = []
    ctx.project.pipeline_script = lambda req: seen.append(req) or [JobScript("x")]  # type: ignore[func-returns-value]
    with pytest.raises(gitlab.GitlabCreateError) as no_spec:
        ctx.api.pipelines.create({"ref": "main", "inputs": {"mci_teardown": True}})
    assert "spec" in str(no_spec.value.error_message)
    ctx.project.declared_inputs = {"other"}
    with pytest.raises(gitlab.GitlabCreateError) as unknown:
        ctx.api.pipelines.create({"ref": "main", "inputs": {"mci_teardown": True}})
    assert message(unknown.value) == {"base": ["unknown input arguments: mci_teardown"]}
    ctx.project.declared_inputs = {"mci_teardown"}
    ctx.api.pipelines.create({"ref": "main", "inputs": {"mci_teardown": True}})
    assert seen[-1].inputs == {"mci_teardown": True}

    ctx.project.pipeline_variables_allowed = False
    with pytest.raises(gitlab.GitlabCreateError) as locked:
        ctx.api.pipelines.create({"ref": "main", "variables": [{"key": "MCI_TEARDOWN", "value": "true"}]})
    assert message(locked.value) == {"base": ["Insufficient permissions to set pipeline variables"]}
    ctx.project.pipeline_variables_allowed = True
    ctx.api.pipelines.create({"ref": "main", "variables": [{"key": "MCI_TEARDOWN", "value": "true"}]})
    assert seen[-1].variables == {"MCI_TEARDOWN": "true"}
    with pytest.raises(gitlab.GitlabCreateError) as bad_ref:
        ctx.api.pipelines.create({"ref": "nope"})
    assert message(bad_ref.value) == {"base": ["Reference not found"]}


def test_manual_jobs_play_once(ctx: Ctx) -> None:
    pipeline = ctx.fake.run_pipeline(ctx.project, [
        JobScript("deploy"), JobScript("teardown", stage="cleanup", when="manual", duration=0.2)])
    deploy, teardown = pipeline.jobs
    assert ctx.api.pipelines.get(pipeline.id).status == "success"  # a non-blocking manual job does not hold it
    with pytest.raises(gitlab.GitlabJobPlayError) as err:
        ctx.api.jobs.get(deploy.id, lazy=True).play()
    assert err.value.response_code == 400 and err.value.error_message == "400 Bad request - Unplayable Job"
    job = ctx.api.jobs.get(teardown.id)
    assert job.status == "manual"
    job.play()
    assert ctx.api.jobs.get(teardown.id).status == "running"
    assert ctx.api.pipelines.get(pipeline.id).status == "running"
    time.sleep(0.3)
    assert ctx.api.jobs.get(teardown.id).status == "success"
    with pytest.raises(gitlab.GitlabJobPlayError):
        ctx.api.jobs.get(teardown.id, lazy=True).play()
    manual = ctx.api.pipelines.get(pipeline.id).jobs.list(scope="success", get_all=True)
    assert sorted(j.name for j in manual) == ["deploy", "teardown"]


def test_latest_pipeline_listing(ctx: Ctx) -> None:
    first = ctx.fake.run_pipeline(ctx.project, [JobScript("a")])
    second = ctx.fake.run_pipeline(ctx.project, [JobScript("b")])
    latest = ctx.api.pipelines.list(ref="main", order_by="id", sort="desc", per_page=1, get_all=False)
    assert [p.id for p in latest] == [second.id]
    assert [p.id for p in ctx.api.pipelines.list(sort="asc", get_all=True)] == [first.id, second.id]
