"""A stateful fake of the parts of GitLab's REST API v4 that gitlab-mci uses.

The real ``python-gitlab`` client should not be able to tell it from GitLab for these calls: projects (by id or
URL-encoded path), project CI/CD variables (environment scopes, ``filter[environment_scope]``, masking rules,
pagination headers), environments (filters, ``last_deployment``, stop), deployments (filters and ordering),
pipelines (created with ``ref``, ``variables`` and ``inputs``; jobs from a scripted model the test configures, whose
statuses move ``created`` → ``running`` → ``success``/``failed`` as time passes), jobs (get, play a manual job) and
``PRIVATE-TOKEN`` / ``JOB-TOKEN`` authentication, with GitLab's status codes and error bodies.

Serve it with :class:`gitlab_mci.sim.httpd.SimServer` (``service="gitlab"``) and seed it from Python::

    fake = FakeGitLab()
    fake.add_token("glpat-secret")
    project = fake.add_project("group/app")
    project.pipeline_script = lambda req: [JobScript("deploy-prod1", environment="prod1", duration=0.2)]
    with SimServer(fake.handle, service="gitlab", journal=journal) as server:
        gl = gitlab.Gitlab(server.url, private_token="glpat-secret")

Where GitLab's behaviour is not modelled (other endpoints, GraphQL, roles and job-token allowlists), the fake
answers 404 or 401 rather than pretending: a CI job token works only on the environment and deployment endpoints,
as on GitLab.
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qs, quote, unquote, urlencode

from gitlab_mci.sim.httpd import Faults, Journal, Request, Response, SimServer

SERVICE = "gitlab"

# GitLab's own rules (app/models/concerns/ci/maskable.rb): masked values are one "word" of at least 8 characters;
# expanded (non-raw) values are further limited to a base64-like alphabet plus a few separators.
_MASKABLE = re.compile(r"\A[a-zA-Z0-9_+=/@:.~-]{8,}\Z")
_MASKABLE_RAW = re.compile(r"\A\S{8,}\Z")
_KEY = re.compile(r"\A[a-zA-Z0-9_]{1,255}\Z")
_SCOPE = re.compile(r"\A[a-zA-Z0-9_/${}. *-]+\Z")
_VARIABLE_TYPES = ("env_var", "file")
_JOB_FINAL = ("success", "failed", "canceled", "skipped")
_DEPLOYMENT_ORDER = ("id", "iid", "created_at", "updated_at", "finished_at", "ref")
_DEPLOYMENT_STATUSES = ("created", "running", "success", "failed", "canceled", "skipped", "blocked")
_ENVIRONMENT_STATES = ("available", "stopping", "stopped")
# The endpoints (of those faked) where GitLab accepts CI_JOB_TOKEN: environments and deployments.
_JOB_TOKEN_ROUTES = frozenset({"_list_environments", "_get_environment", "_stop_environment", "_list_deployments",
                               "_get_deployment"})
MAX_PER_PAGE = 100
DEFAULT_PER_PAGE = 20


def _iso(ts: float | None) -> str | None:
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def _bool(value: Any, default: bool = False) -> bool:
    if value is None:
        return default
    if isinstance(value, bool):
        return value
    return str(value).strip().lower() in ("true", "1", "yes", "t")


class ApiError(Exception):
    """An error answer: raised anywhere in a handler, turned into GitLab's JSON error body."""

    def __init__(self, status: int, body: Any) -> None:
        super().__init__(f"{status} {body}")
        self.status = status
        self.body = body


def _message(status: int, text: str) -> ApiError:
    return ApiError(status, {"message": text})


def _not_found(what: str) -> ApiError:
    return _message(404, f"404 {what} Not Found")


def _bad_request(reason: str | None = None) -> ApiError:
    return _message(400, "400 Bad request" + (f" - {reason}" if reason else ""))


def _validation(errors: dict[str, list[str]]) -> ApiError:
    # ActiveRecord validation failures: {"message": {"attribute": ["problem", ...]}}.
    return ApiError(400, {"message": errors})


def _param_error(text: str) -> ApiError:
    # Grape's parameter validation answers {"error": "..."} rather than {"message": ...}.
    return ApiError(400, {"error": text})


# --------------------------------------------------------------------------------------------------------------------
# The model


@dataclass
class Variable:
    """One project CI/CD variable; ``key`` + ``environment_scope`` is unique within a project."""

    key: str
    value: str
    environment_scope: str = "*"
    variable_type: str = "env_var"
    protected: bool = False
    masked: bool = False
    hidden: bool = False
    raw: bool = False
    description: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "variable_type": self.variable_type,
            "key": self.key,
            # Hidden variables never reveal their value through the API.
            "value": None if self.hidden else self.value,
            "hidden": self.hidden,
            "protected": self.protected,
            "masked": self.masked,
            "raw": self.raw,
            "environment_scope": self.environment_scope,
            "description": self.description,
        }


@dataclass
class JobScript:
    """One job of the scripted pipeline model: what it is and how it ends.

    ``when="manual"`` jobs wait to be played; they do not block later stages unless ``allow_failure`` is false.
    A job with ``environment`` makes a deployment (``action="start"``) or stops that environment on success
    (``action="stop"``). ``duration`` is seconds from the job's start to its ``outcome``.
    """

    name: str
    stage: str = "deploy"
    when: str = "on_success"
    outcome: str = "success"
    duration: float = 0.0
    environment: str | None = None
    action: str = "start"
    allow_failure: bool | None = None

    def __post_init__(self) -> None:
        if self.when not in ("on_success", "manual"):
            raise ValueError(f"JobScript.when must be on_success or manual, not {self.when!r}")
        if self.outcome not in ("success", "failed"):
            raise ValueError(f"JobScript.outcome must be success or failed, not {self.outcome!r}")
        if self.action not in ("start", "stop"):
            raise ValueError(f"JobScript.action must be start or stop, not {self.action!r}")


@dataclass(frozen=True)
class PipelineRequest:
    """What a pipeline was created with; the project's ``pipeline_script`` turns it into jobs."""

    ref: str
    sha: str
    variables: dict[str, str]
    inputs: dict[str, Any]
    source: str


PipelineScript = Callable[[PipelineRequest], list[JobScript]]


def _default_script(req: PipelineRequest) -> list[JobScript]:
    return [JobScript("build", stage="build")]


@dataclass
class Job:
    """A job of a pipeline; its status is derived from the clock (see :meth:`FakeGitLab._refresh`)."""

    id: int
    pipeline: Pipeline
    script: JobScript
    created_at: float
    status: str = "created"
    started_at: float | None = None
    finished_at: float | None = None
    played_at: float | None = None
    deployment: Deployment | None = None

    @property
    def name(self) -> str:
        return self.script.name

    @property
    def allow_failure(self) -> bool:
        if self.script.allow_failure is not None:
            return self.script.allow_failure
        return self.script.when == "manual"

    def to_json(self, base_url: str) -> dict[str, Any]:
        p = self.pipeline
        duration = None
        if self.started_at is not None:
            duration = round((self.finished_at or time.time()) - self.started_at, 3)
        return {
            "id": self.id,
            "name": self.name,
            "stage": self.script.stage,
            "status": self.status,
            "ref": p.ref,
            "tag": False,
            "allow_failure": self.allow_failure,
            "when": self.script.when,
            "created_at": _iso(self.created_at),
            "started_at": _iso(self.started_at),
            "finished_at": _iso(self.finished_at),
            "duration": duration,
            "user": p.project.gitlab.user_json(),
            "commit": {"id": p.sha, "short_id": p.sha[:8]},
            "pipeline": p.summary(base_url),
            "environment": (
                {"name": self.script.environment, "action": self.script.action} if self.script.environment else None
            ),
            "web_url": f"{base_url}/{p.project.path_with_namespace}/-/jobs/{self.id}",
            "project": {"ci_job_token_scope_enabled": False},
        }


@dataclass
class Pipeline:
    """A pipeline and its jobs."""

    id: int
    iid: int
    project: Project
    ref: str
    sha: str
    source: str
    created_at: float
    start_delay: float
    variables: dict[str, str]
    inputs: dict[str, Any]
    jobs: list[Job] = field(default_factory=list)
    status: str = "created"
    started_at: float | None = None
    finished_at: float | None = None

    def summary(self, base_url: str) -> dict[str, Any]:
        return {
            "id": self.id,
            "iid": self.iid,
            "project_id": self.project.id,
            "sha": self.sha,
            "ref": self.ref,
            "status": self.status,
            "source": self.source,
            "created_at": _iso(self.created_at),
            "updated_at": _iso(self.finished_at or self.started_at or self.created_at),
            "web_url": f"{base_url}/{self.project.path_with_namespace}/-/pipelines/{self.id}",
        }

    def to_json(self, base_url: str) -> dict[str, Any]:
        duration = None
        if self.started_at is not None and self.finished_at is not None:
            duration = int(self.finished_at - self.started_at)
        return {
            **self.summary(base_url),
            "before_sha": "0" * 40,
            "tag": False,
            "yaml_errors": None,
            "user": self.project.gitlab.user_json(),
            "started_at": _iso(self.started_at),
            "finished_at": _iso(self.finished_at),
            "committed_at": None,
            "duration": duration,
            "queued_duration": None,
            "coverage": None,
            "detailed_status": {"group": self.status, "label": self.status, "text": self.status},
        }


@dataclass
class Environment:
    """A project environment. ``state`` is available, stopping or stopped."""

    id: int
    name: str
    project: Project
    created_at: float
    external_url: str | None = None
    state: str = "available"
    tier: str = "production"
    updated_at: float = 0.0
    stop_job: Job | None = None

    @property
    def slug(self) -> str:
        slug = re.sub(r"[^a-z0-9]+", "-", self.name.lower()).strip("-")[:24]
        return slug or "env"

    def to_json(self, base_url: str, *, with_last_deployment: bool) -> dict[str, Any]:
        body: dict[str, Any] = {
            "id": self.id,
            "name": self.name,
            "slug": self.slug,
            "external_url": self.external_url,
            "state": self.state,
            "tier": self.tier,
            "created_at": _iso(self.created_at),
            "updated_at": _iso(self.updated_at or self.created_at),
            "auto_stop_at": None,
        }
        if with_last_deployment:
            # GitLab's Environment#last_deployment is the latest *successful* deployment.
            done = [d for d in self.project.deployments if d.environment is self and d.status == "success"]
            last = max(done, key=lambda d: d.id) if done else None
            body["last_deployment"] = last.to_json(base_url, with_environment=False) if last else None
        return body


@dataclass
class Deployment:
    """A deployment of ``sha`` to an environment, made by a job (``deployable``) or seeded directly."""

    id: int
    iid: int
    project: Project
    environment: Environment
    ref: str
    sha: str
    status: str
    created_at: float
    updated_at: float
    finished_at: float | None = None
    job: Job | None = None

    def to_json(self, base_url: str, *, with_environment: bool = True) -> dict[str, Any]:
        body: dict[str, Any] = {
            "id": self.id,
            "iid": self.iid,
            "ref": self.ref,
            "sha": self.sha,
            "status": self.status,
            "created_at": _iso(self.created_at),
            "updated_at": _iso(self.updated_at),
            "finished_at": _iso(self.finished_at),
            "user": self.project.gitlab.user_json(),
            "deployable": self.job.to_json(base_url) if self.job else None,
        }
        if with_environment:
            body["environment"] = self.environment.to_json(base_url, with_last_deployment=False)
        return body


@dataclass
class Project:
    """A project: its variables, environments, deployments, pipelines and the scripted pipeline model."""

    id: int
    path_with_namespace: str
    gitlab: FakeGitLab
    default_branch: str = "main"
    branches: dict[str, str] = field(default_factory=dict)
    variables: list[Variable] = field(default_factory=list)
    environments: list[Environment] = field(default_factory=list)
    deployments: list[Deployment] = field(default_factory=list)
    pipelines: list[Pipeline] = field(default_factory=list)
    # The model of `.gitlab-ci.yml`: which jobs a new pipeline gets.
    pipeline_script: PipelineScript = field(default=lambda req: _default_script(req))
    # Names of the pipeline inputs the project's CI configuration declares (`spec: inputs:`); None: no header at all.
    declared_inputs: set[str] | None = None
    # GitLab.com locks pipeline variables down on new projects; False answers like that setting.
    pipeline_variables_allowed: bool = True

    @property
    def name(self) -> str:
        return self.path_with_namespace.rsplit("/", 1)[-1]

    def to_json(self, base_url: str) -> dict[str, Any]:
        namespace = self.path_with_namespace.rsplit("/", 1)[0] if "/" in self.path_with_namespace else ""
        return {
            "id": self.id,
            "name": self.name,
            "path": self.name,
            "path_with_namespace": self.path_with_namespace,
            "name_with_namespace": self.path_with_namespace.replace("/", " / "),
            "namespace": {"full_path": namespace, "path": namespace.rsplit("/", 1)[-1]},
            "default_branch": self.default_branch,
            "web_url": f"{base_url}/{self.path_with_namespace}",
            "visibility": "private",
            "ci_pipeline_variables_minimum_override_role": (
                "developer" if self.pipeline_variables_allowed else "no_one_allowed"
            ),
        }

    def environment(self, name: str) -> Environment | None:
        return next((e for e in self.environments if e.name == name), None)

    def variable(self, key: str, scope: str = "*") -> Variable | None:
        """The variable ``key`` in ``scope`` (for test assertions)."""
        return next((v for v in self.variables if v.key == key and v.environment_scope == scope), None)


# --------------------------------------------------------------------------------------------------------------------
# The fake


_Route = tuple[str, re.Pattern[str], Callable[..., Response]]


class FakeGitLab:
    """The fake GitLab instance: tokens, projects and the request handler (``handle``) to serve with ``SimServer``.

    ``clock`` returns seconds since the epoch (wall clock by default); job durations and ``pipeline_start_delay``
    are measured on it. Every public method and the handler are safe to call from several threads.
    """

    def __init__(self, *, clock: Callable[[], float] = time.time, pipeline_start_delay: float = 0.0) -> None:
        self.clock = clock
        self.pipeline_start_delay = pipeline_start_delay
        self.projects: list[Project] = []
        self._tokens: dict[str, str] = {}
        self._lock = threading.RLock()
        self._ids: dict[str, int] = {}
        self._routes: list[_Route] = [
            ("GET", re.compile(r"/version"), self._version),
            ("GET", re.compile(r"/user"), self._user),
            ("GET", re.compile(r"/projects/(?P<pid>[^/]+)"), self._get_project),
            ("GET", re.compile(r"/projects/(?P<pid>[^/]+)/variables"), self._list_variables),
            ("POST", re.compile(r"/projects/(?P<pid>[^/]+)/variables"), self._create_variable),
            ("GET", re.compile(r"/projects/(?P<pid>[^/]+)/variables/(?P<key>[^/]+)"), self._get_variable),
            ("PUT", re.compile(r"/projects/(?P<pid>[^/]+)/variables/(?P<key>[^/]+)"), self._update_variable),
            ("DELETE", re.compile(r"/projects/(?P<pid>[^/]+)/variables/(?P<key>[^/]+)"), self._delete_variable),
            ("GET", re.compile(r"/projects/(?P<pid>[^/]+)/environments"), self._list_environments),
            ("GET", re.compile(r"/projects/(?P<pid>[^/]+)/environments/(?P<eid>\d+)"), self._get_environment),
            ("POST", re.compile(r"/projects/(?P<pid>[^/]+)/environments/(?P<eid>\d+)/stop"), self._stop_environment),
            ("GET", re.compile(r"/projects/(?P<pid>[^/]+)/deployments"), self._list_deployments),
            ("GET", re.compile(r"/projects/(?P<pid>[^/]+)/deployments/(?P<did>\d+)"), self._get_deployment),
            ("POST", re.compile(r"/projects/(?P<pid>[^/]+)/pipeline"), self._create_pipeline),
            ("GET", re.compile(r"/projects/(?P<pid>[^/]+)/pipelines"), self._list_pipelines),
            ("GET", re.compile(r"/projects/(?P<pid>[^/]+)/pipelines/(?P<plid>\d+)"), self._get_pipeline),
            ("GET", re.compile(r"/projects/(?P<pid>[^/]+)/pipelines/(?P<plid>\d+)/jobs"), self._list_pipeline_jobs),
            ("GET", re.compile(r"/projects/(?P<pid>[^/]+)/jobs"), self._list_jobs),
            ("GET", re.compile(r"/projects/(?P<pid>[^/]+)/jobs/(?P<jid>\d+)"), self._get_job),
            ("POST", re.compile(r"/projects/(?P<pid>[^/]+)/jobs/(?P<jid>\d+)/play"), self._play_job),
        ]

    # ---- seeding and inspection -----------------------------------------------------------------------------------

    def _next_id(self, kind: str) -> int:
        self._ids[kind] = self._ids.get(kind, 0) + 1
        return self._ids[kind]

    def add_token(self, token: str, kind: str = "private") -> None:
        """Accept ``token`` as a personal/project access token (``"private"``) or a CI job token (``"job"``)."""
        if kind not in ("private", "job"):
            raise ValueError("token kind must be private or job")
        with self._lock:
            self._tokens[token] = kind

    def add_project(self, path_with_namespace: str, *, project_id: int | None = None,
                    default_branch: str = "main", sha: str | None = None) -> Project:
        """Create a project whose default branch points at ``sha`` (a fixed fake commit by default)."""
        with self._lock:
            pid = project_id if project_id is not None else 1000 + self._next_id("project")
            head = sha or hashlib.sha1(path_with_namespace.encode()).hexdigest()
            project = Project(pid, path_with_namespace, self, default_branch=default_branch,
                              branches={default_branch: head})
            self.projects.append(project)
            return project

    def add_variable(self, project: Project, key: str, value: str, **attrs: Any) -> Variable:
        """Seed a variable without the API's validation (to model state made by hand)."""
        with self._lock:
            var = Variable(key, value, **attrs)
            project.variables.append(var)
            return var

    def add_environment(self, project: Project, name: str, *, external_url: str | None = None,
                        state: str = "available", tier: str = "production") -> Environment:
        """Create an environment (GitLab makes one on a job's first deployment to it)."""
        with self._lock:
            now = self.clock()
            env = Environment(self._next_id("environment"), name, project, now, external_url, state, tier, now)
            project.environments.append(env)
            return env

    def add_deployment(self, project: Project, environment: str, *, sha: str, status: str = "success",
                       ref: str | None = None) -> Deployment:
        """Record a finished (or running) deployment of ``sha`` to ``environment`` (created if missing)."""
        if status not in _DEPLOYMENT_STATUSES:
            raise ValueError(f"deployment status must be one of {', '.join(_DEPLOYMENT_STATUSES)}")
        with self._lock:
            env = project.environment(environment) or self.add_environment(project, environment)
            now = self.clock()
            dep = Deployment(self._next_id("deployment"), len(project.deployments) + 1, project, env,
                             ref or project.default_branch, sha, status, now, now,
                             now if status in ("success", "failed", "canceled") else None)
            project.deployments.append(dep)
            return dep

    def run_pipeline(self, project: Project, jobs: list[JobScript], *, ref: str | None = None,
                     sha: str | None = None, age: float = 0.0) -> Pipeline:
        """Create a pipeline with ``jobs`` directly (as if pushed ``age`` seconds ago), bypassing the script."""
        with self._lock:
            ref = ref or project.default_branch
            sha = sha or project.branches.get(ref) or project.branches[project.default_branch]
            return self._new_pipeline(project, PipelineRequest(ref, sha, {}, {}, "push"), jobs,
                                      created_at=self.clock() - age)

    def pipeline(self, pipeline_id: int) -> Pipeline:
        """A pipeline by id, its statuses brought up to date (for test assertions)."""
        with self._lock:
            for project in self.projects:
                self._refresh(project)
                for p in project.pipelines:
                    if p.id == pipeline_id:
                        return p
        raise KeyError(pipeline_id)

    # ---- pipeline mechanics ---------------------------------------------------------------------------------------

    def _new_pipeline(self, project: Project, req: PipelineRequest, scripts: list[JobScript],
                      created_at: float | None = None) -> Pipeline:
        now = self.clock() if created_at is None else created_at
        pipeline = Pipeline(self._next_id("pipeline"), len(project.pipelines) + 1, project, req.ref, req.sha,
                            req.source, now, self.pipeline_start_delay, dict(req.variables), dict(req.inputs))
        for script in scripts:
            job = Job(self._next_id("job"), pipeline, script, now)
            job.status = "manual" if script.when == "manual" else "created"
            pipeline.jobs.append(job)
            if script.environment and script.action == "start":
                env = project.environment(script.environment) or self.add_environment(project, script.environment)
                dep = Deployment(self._next_id("deployment"), len(project.deployments) + 1, project, env, req.ref,
                                 req.sha, "created", now, now, job=job)
                project.deployments.append(dep)
                job.deployment = dep
        project.pipelines.append(pipeline)
        self._refresh(project)
        return pipeline

    def _refresh(self, project: Project) -> None:
        """Bring every job, pipeline, deployment and environment of ``project`` up to the clock."""
        now = self.clock()
        for pipeline in project.pipelines:
            self._refresh_pipeline(pipeline, now)

    def _refresh_pipeline(self, pipeline: Pipeline, now: float) -> None:
        stages: list[str] = []
        for job in pipeline.jobs:
            if job.script.stage not in stages:
                stages.append(job.script.stage)
        # Stages run in order; a stage starts when every blocking job of the one before has finished.
        t: float | None = pipeline.created_at + pipeline.start_delay
        failed = False
        for stage in stages:
            jobs = [j for j in pipeline.jobs if j.script.stage == stage]
            stage_end: float | None = t
            stage_failed = False
            for job in jobs:
                if job.script.when == "manual":
                    start = job.played_at
                    blocking = not job.allow_failure
                else:
                    start = t
                    blocking = True
                if failed and job.played_at is None:
                    # After a failed stage, later jobs (manual ones too) are skipped, as GitLab does.
                    self._set_job(job, "skipped", None, None, now)
                    continue
                if start is None or now < start:
                    if job.script.when == "manual" and job.played_at is None:
                        self._set_job(job, "manual", None, None, now)
                    if blocking:
                        stage_end = None
                    continue
                end = start + job.script.duration
                if now < end:
                    self._set_job(job, "running", start, None, now)
                    if blocking:
                        stage_end = None
                    continue
                self._set_job(job, job.script.outcome, start, end, now)
                if job.script.outcome == "failed" and not job.allow_failure:
                    stage_failed = True
                if blocking and stage_end is not None:
                    stage_end = max(stage_end, end)
            failed = failed or stage_failed
            t = stage_end
            if t is None:
                # Later stages wait; their jobs stay created (or manual).
                for later in pipeline.jobs:
                    if stages.index(later.script.stage) > stages.index(stage) and later.script.when != "manual":
                        self._set_job(later, "created", None, None, now)
                break
        self._set_pipeline_status(pipeline, now)

    def _set_job(self, job: Job, status: str, started: float | None, finished: float | None, now: float) -> None:
        if job.status == status:
            return
        job.status = status
        job.started_at = started
        job.finished_at = finished
        if job.deployment is not None:
            dep = job.deployment
            dep.status = {"manual": "created", "pending": "created"}.get(status, status)
            dep.updated_at = finished or started or now
            dep.finished_at = finished if status in _JOB_FINAL else None
        env_name = job.script.environment
        if env_name and job.script.action == "stop":
            env = job.pipeline.project.environment(env_name)
            if env is not None and status == "success":
                env.state, env.updated_at, env.stop_job = "stopped", finished or now, None
            elif env is not None and status == "failed" and env.state == "stopping":
                env.state, env.updated_at = "available", finished or now
            elif env is not None and status == "running":
                env.state, env.updated_at = "stopping", started or now
        if env_name and job.script.action == "start" and status == "success":
            env = job.pipeline.project.environment(env_name)
            if env is not None:
                env.state, env.updated_at = "available", finished or now

    def _set_pipeline_status(self, pipeline: Pipeline, now: float) -> None:
        statuses = [j.status for j in pipeline.jobs]
        if now < pipeline.created_at + pipeline.start_delay:
            status = "created"
        elif any(s in ("running", "pending") for s in statuses):
            status = "running"
        elif any(j.status == "failed" and not j.allow_failure for j in pipeline.jobs):
            status = "failed"
        elif any(j.status == "manual" and not j.allow_failure for j in pipeline.jobs):
            status = "manual"
        elif any(s == "created" for s in statuses):
            status = "running"
        else:
            status = "success"
        if status == pipeline.status:
            return
        pipeline.status = status
        if status != "created" and pipeline.started_at is None:
            pipeline.started_at = pipeline.created_at + pipeline.start_delay
        finished = [j.finished_at for j in pipeline.jobs if j.finished_at is not None]
        if status in ("success", "failed"):
            pipeline.finished_at = max(finished) if finished else now
        else:
            pipeline.finished_at = None

    # ---- HTTP -----------------------------------------------------------------------------------------------------

    def handle(self, req: Request) -> Response:
        """Answer one HTTP request the way GitLab's API v4 would."""
        path = req.path
        if not path.startswith("/api/v4/"):
            return Response(404, {"error": "404 Not Found"})
        sub = path[len("/api/v4"):].rstrip("/")
        matched_path = False
        for method, pattern, func in self._routes:
            m = pattern.fullmatch(sub)
            if not m:
                continue
            matched_path = True
            if method != req.method.upper() and not (method == "GET" and req.method.upper() == "HEAD"):
                continue
            try:
                kind = self._authenticate(req)
                if kind == "job" and func.__name__ not in _JOB_TOKEN_ROUTES:
                    # GitLab accepts a job token only on the routes that allow it; elsewhere it is no credential.
                    raise _message(401, "401 Unauthorized")
                params = self._params(req)
                groups = {k: unquote(v) for k, v in m.groupdict().items()}
                with self._lock:
                    resp: Response = func(req, params, kind, **groups)
                return resp
            except ApiError as exc:
                return Response(exc.status, exc.body)
        if matched_path:
            return Response(405, {"error": "405 Method Not Allowed"})
        return Response(404, {"error": "404 Not Found"})

    def _authenticate(self, req: Request) -> str:
        token = req.headers.get("private-token")
        kind = "private"
        if token is None and req.headers.get("job-token") is not None:
            token, kind = req.headers["job-token"], "job"
        if token is None:
            auth = req.headers.get("authorization", "")
            if auth.lower().startswith("bearer "):
                token = auth[7:].strip()
        if token is None:
            values = req.query.get("private_token")
            token = values[0] if values else None
        if token is None or self._tokens.get(token) != kind:
            raise _message(401, "401 Unauthorized")
        return kind

    @staticmethod
    def _params(req: Request) -> dict[str, Any]:
        # Grape merges query string and body parameters; bodies may be JSON or form-encoded.
        params: dict[str, Any] = {k: (v[0] if len(v) == 1 else v) for k, v in req.query.items()}
        if req.body:
            if req.content_type == "application/json":
                try:
                    body = req.json()
                except ValueError:
                    raise _bad_request("Invalid JSON") from None
                if isinstance(body, dict):
                    params.update(body)
            else:
                form = parse_qs(req.body.decode(errors="replace"), keep_blank_values=True)
                params.update({k: (v[0] if len(v) == 1 else v) for k, v in form.items()})
        return params

    @staticmethod
    def _base_url(req: Request) -> str:
        return f"http://{req.headers.get('host', '127.0.0.1')}"

    def _project(self, pid: str) -> Project:
        for project in self.projects:
            if str(project.id) == pid or project.path_with_namespace == pid:
                return project
        raise _not_found("Project")

    @staticmethod
    def _require_private(kind: str) -> None:
        # Belt and braces: endpoints that change the project never take a job token.
        if kind != "private":
            raise _message(403, "403 Forbidden")

    def _paginate(self, req: Request, params: dict[str, Any], items: list[dict[str, Any]]) -> Response:
        try:
            page = max(1, int(params.get("page") or 1))
            per_page = min(MAX_PER_PAGE, max(1, int(params.get("per_page") or DEFAULT_PER_PAGE)))
        except ValueError:
            raise _param_error("page is invalid") from None
        total = len(items)
        total_pages = max(1, -(-total // per_page))
        chunk = items[(page - 1) * per_page: page * per_page]
        base = self._base_url(req) + req.path
        query = {k: v for k, v in req.query.items() if k not in ("page", "per_page")}

        def link(p: int) -> str:
            q = urlencode([*((k, x) for k, vs in query.items() for x in vs), ("page", str(p)),
                           ("per_page", str(per_page))])
            return f"{base}?{q}"

        links = []
        if page > 1:
            links.append(f'<{link(page - 1)}>; rel="prev"')
        if page < total_pages:
            links.append(f'<{link(page + 1)}>; rel="next"')
        links.append(f'<{link(1)}>; rel="first"')
        links.append(f'<{link(total_pages)}>; rel="last"')
        headers = {
            "x-page": str(page),
            "x-per-page": str(per_page),
            "x-total": str(total),
            "x-total-pages": str(total_pages),
            "x-next-page": str(page + 1) if page < total_pages else "",
            "x-prev-page": str(page - 1) if page > 1 else "",
            "Link": ", ".join(links),
        }
        return Response(200, chunk, headers=headers)

    # ---- endpoints: instance and projects -------------------------------------------------------------------------

    def user_json(self) -> dict[str, Any]:
        return {"id": 1, "username": "mci-bot", "name": "MCI Bot", "state": "active"}

    def _version(self, req: Request, params: dict[str, Any], kind: str) -> Response:
        return Response(200, {"version": "17.11.0-fake", "revision": "fake"})

    def _user(self, req: Request, params: dict[str, Any], kind: str) -> Response:
        self._require_private(kind)
        return Response(200, self.user_json())

    def _get_project(self, req: Request, params: dict[str, Any], kind: str, pid: str) -> Response:
        return Response(200, self._project(pid).to_json(self._base_url(req)))

    # ---- endpoints: variables -------------------------------------------------------------------------------------

    def _list_variables(self, req: Request, params: dict[str, Any], kind: str, pid: str) -> Response:
        self._require_private(kind)
        project = self._project(pid)
        return self._paginate(req, params, [v.to_json() for v in project.variables])

    @staticmethod
    def _find_variable(project: Project, key: str, params: dict[str, Any]) -> Variable:
        scope = params.get("filter[environment_scope]")
        found = [v for v in project.variables if v.key == key and (scope is None or v.environment_scope == scope)]
        if not found:
            raise _not_found("Variable")
        if len(found) > 1:
            # GitLab refuses to guess which scope was meant (since 13.x; before, it picked one at random).
            raise _message(409, "There are multiple variables with provided parameters. "
                                "Please use 'filter[environment_scope]'")
        return found[0]

    @staticmethod
    def _validate_variable(project: Project, var: Variable, existing: Variable | None) -> None:
        errors: dict[str, list[str]] = {}
        if not _KEY.match(var.key):
            errors.setdefault("key", []).append("can contain only letters, digits and '_'.")
        if not _SCOPE.match(var.environment_scope):
            errors.setdefault("environment_scope", []).append(
                "can contain only letters, digits, '-', '_', '/', '$', '{', '}', '.', '*' and spaces")
        if var.masked and not (_MASKABLE_RAW if var.raw else _MASKABLE).match(var.value):
            errors.setdefault("value", []).append("is invalid")
        taken = [v for v in project.variables
                 if v is not existing and v.key == var.key and v.environment_scope == var.environment_scope]
        if taken:
            errors.setdefault("key", []).append(f"({var.key}) has already been taken")
        if errors:
            raise _validation(errors)

    @staticmethod
    def _check_enum(params: dict[str, Any], name: str, allowed: Iterable[str]) -> None:
        if name in params and params[name] not in allowed:
            raise _param_error(f"{name} does not have a valid value")

    def _create_variable(self, req: Request, params: dict[str, Any], kind: str, pid: str) -> Response:
        self._require_private(kind)
        project = self._project(pid)
        for required in ("key", "value"):
            if params.get(required) is None:
                raise _param_error(f"{required} is missing")
        self._check_enum(params, "variable_type", _VARIABLE_TYPES)
        hidden = _bool(params.get("masked_and_hidden"))
        var = Variable(
            key=str(params["key"]),
            value=str(params["value"]),
            environment_scope=str(params.get("environment_scope") or "*"),
            variable_type=str(params.get("variable_type") or "env_var"),
            protected=_bool(params.get("protected")),
            masked=hidden or _bool(params.get("masked")),
            hidden=hidden,
            raw=_bool(params.get("raw")),
            description=params.get("description"),
        )
        self._validate_variable(project, var, None)
        project.variables.append(var)
        return Response(201, var.to_json())

    def _get_variable(self, req: Request, params: dict[str, Any], kind: str, pid: str, key: str) -> Response:
        self._require_private(kind)
        return Response(200, self._find_variable(self._project(pid), key, params).to_json())

    def _update_variable(self, req: Request, params: dict[str, Any], kind: str, pid: str, key: str) -> Response:
        self._require_private(kind)
        project = self._project(pid)
        current = self._find_variable(project, key, params)
        self._check_enum(params, "variable_type", _VARIABLE_TYPES)
        updated = Variable(
            key=current.key,
            value=str(params["value"]) if params.get("value") is not None else current.value,
            environment_scope=str(params.get("environment_scope") or current.environment_scope),
            variable_type=str(params.get("variable_type") or current.variable_type),
            protected=_bool(params.get("protected"), current.protected),
            masked=_bool(params.get("masked"), current.masked),
            hidden=current.hidden,
            raw=_bool(params.get("raw"), current.raw),
            description=params.get("description", current.description),
        )
        if current.hidden and not updated.masked:
            raise _validation({"masked": ["cannot be unset for hidden variables"]})
        self._validate_variable(project, updated, current)
        project.variables[project.variables.index(current)] = updated
        return Response(200, updated.to_json())

    def _delete_variable(self, req: Request, params: dict[str, Any], kind: str, pid: str, key: str) -> Response:
        self._require_private(kind)
        project = self._project(pid)
        project.variables.remove(self._find_variable(project, key, params))
        return Response(204)

    # ---- endpoints: environments and deployments ------------------------------------------------------------------

    def _environment(self, project: Project, eid: str) -> Environment:
        env = next((e for e in project.environments if str(e.id) == eid), None)
        if env is None:
            raise _not_found("Environment")
        return env

    def _list_environments(self, req: Request, params: dict[str, Any], kind: str, pid: str) -> Response:
        project = self._project(pid)
        self._refresh(project)
        name, search, states = params.get("name"), params.get("search"), params.get("states")
        if name is not None and search is not None:
            raise _bad_request("cannot use name and search at the same time")
        if states is not None and states not in _ENVIRONMENT_STATES:
            raise _bad_request("Requested states are invalid")
        envs = [e for e in project.environments
                if (name is None or e.name == name)
                and (search is None or (len(search) >= 3 and search in e.name))
                and (states is None or e.state == states)]
        base = self._base_url(req)
        return self._paginate(req, params, [e.to_json(base, with_last_deployment=False) for e in envs])

    def _get_environment(self, req: Request, params: dict[str, Any], kind: str, pid: str, eid: str) -> Response:
        project = self._project(pid)
        self._refresh(project)
        env = self._environment(project, eid)
        return Response(200, env.to_json(self._base_url(req), with_last_deployment=True))

    def _stop_environment(self, req: Request, params: dict[str, Any], kind: str, pid: str, eid: str) -> Response:
        project = self._project(pid)
        self._refresh(project)
        env = self._environment(project, eid)
        now = self.clock()
        stop_job = None if _bool(params.get("force")) else self._stop_job_for(project, env)
        if stop_job is not None:
            # The on_stop job of the last successful deployment's pipeline runs; the environment is stopping
            # until it finishes.
            stop_job.played_at = now
            stop_job.status = "pending"
            env.state, env.updated_at, env.stop_job = "stopping", now, stop_job
            self._refresh(project)
        elif env.state != "stopped":
            env.state, env.updated_at = "stopped", now
        return Response(200, env.to_json(self._base_url(req), with_last_deployment=False))

    @staticmethod
    def _stop_job_for(project: Project, env: Environment) -> Job | None:
        done = [d for d in project.deployments if d.environment is env and d.status == "success" and d.job]
        if not done:
            return None
        last = max(done, key=lambda d: d.id)
        assert last.job is not None
        for job in last.job.pipeline.jobs:
            if (job.script.environment == env.name and job.script.action == "stop"
                    and job.script.when == "manual" and job.played_at is None):
                return job
        return None

    def _deployment_list(self, project: Project, params: dict[str, Any]) -> list[Deployment]:
        self._check_enum(params, "order_by", _DEPLOYMENT_ORDER)
        self._check_enum(params, "sort", ("asc", "desc"))
        self._check_enum(params, "status", _DEPLOYMENT_STATUSES)
        order_by = str(params.get("order_by") or "id")
        if order_by == "finished_at" and params.get("status") != "success":
            raise _bad_request("`finished_at` order requires `status=success`")
        deps = [d for d in project.deployments
                if (params.get("environment") is None or d.environment.name == params["environment"])
                and (params.get("status") is None or d.status == params["status"])]

        def sort_key(d: Deployment) -> Any:
            value = {"id": d.id, "iid": d.iid, "created_at": d.created_at, "updated_at": d.updated_at,
                     "finished_at": d.finished_at or 0.0, "ref": d.ref}[order_by]
            return (value, d.id)

        return sorted(deps, key=sort_key, reverse=params.get("sort", "asc") == "desc")

    def _list_deployments(self, req: Request, params: dict[str, Any], kind: str, pid: str) -> Response:
        project = self._project(pid)
        self._refresh(project)
        base = self._base_url(req)
        return self._paginate(req, params, [d.to_json(base) for d in self._deployment_list(project, params)])

    def _get_deployment(self, req: Request, params: dict[str, Any], kind: str, pid: str, did: str) -> Response:
        project = self._project(pid)
        self._refresh(project)
        dep = next((d for d in project.deployments if str(d.id) == did), None)
        if dep is None:
            raise _not_found("Deployment")
        return Response(200, dep.to_json(self._base_url(req)))

    # ---- endpoints: pipelines and jobs ----------------------------------------------------------------------------

    def _create_pipeline(self, req: Request, params: dict[str, Any], kind: str, pid: str) -> Response:
        self._require_private(kind)
        project = self._project(pid)
        ref = params.get("ref")
        if not ref:
            raise _param_error("ref is missing")
        variables: dict[str, str] = {}
        raw_vars = params.get("variables") or []
        if not isinstance(raw_vars, list):
            raise _param_error("variables is invalid")
        for item in raw_vars:
            if not isinstance(item, dict) or "key" not in item:
                raise _param_error("variables[key] is missing")
            variables[str(item["key"])] = str(item.get("value", ""))
        inputs = params.get("inputs") or {}
        if not isinstance(inputs, dict):
            raise _param_error("inputs is invalid")
        sha = project.branches.get(str(ref))
        if sha is None:
            raise _validation({"base": ["Reference not found"]})
        if variables and not project.pipeline_variables_allowed:
            raise _validation({"base": ["Insufficient permissions to set pipeline variables"]})
        if inputs:
            if project.declared_inputs is None:
                raise _validation({"base": ["Given inputs not defined in the `spec` section of the included "
                                            "configuration file"]})
            unknown = sorted(set(inputs) - project.declared_inputs)
            if unknown:
                raise _validation({"base": [f"unknown input arguments: {', '.join(unknown)}"]})
        request = PipelineRequest(str(ref), sha, variables, inputs, "api")
        scripts = project.pipeline_script(request)
        if not scripts:
            raise _validation({"base": ["Pipeline will not run for the selected trigger. The rules configuration "
                                        "prevented any jobs from being added to the pipeline."]})
        pipeline = self._new_pipeline(project, request, scripts)
        return Response(201, pipeline.to_json(self._base_url(req)))

    def _pipeline(self, project: Project, plid: str) -> Pipeline:
        self._refresh(project)
        pipeline = next((p for p in project.pipelines if str(p.id) == plid), None)
        if pipeline is None:
            raise _not_found("")
        return pipeline

    def _list_pipelines(self, req: Request, params: dict[str, Any], kind: str, pid: str) -> Response:
        project = self._project(pid)
        self._refresh(project)
        pipelines = [p for p in project.pipelines
                     if (params.get("ref") is None or p.ref == params["ref"])
                     and (params.get("status") is None or p.status == params["status"])
                     and (params.get("sha") is None or p.sha == params["sha"])]
        self._check_enum(params, "order_by", ("id", "status", "ref", "updated_at", "user_id"))
        self._check_enum(params, "sort", ("asc", "desc"))
        order_by = str(params.get("order_by") or "id")
        if order_by in ("status", "ref"):
            pipelines.sort(key=lambda p: (str(getattr(p, order_by)), p.id))
        else:
            pipelines.sort(key=lambda p: p.id)
        if params.get("sort", "desc") == "desc":
            pipelines.reverse()
        base = self._base_url(req)
        return self._paginate(req, params, [p.summary(base) for p in pipelines])

    def _get_pipeline(self, req: Request, params: dict[str, Any], kind: str, pid: str, plid: str) -> Response:
        return Response(200, self._pipeline(self._project(pid), plid).to_json(self._base_url(req)))

    @staticmethod
    def _scope_filter(params: dict[str, Any]) -> set[str] | None:
        scope = params.get("scope", params.get("scope[]"))
        if scope is None:
            return None
        return {scope} if isinstance(scope, str) else set(scope)

    def _list_pipeline_jobs(self, req: Request, params: dict[str, Any], kind: str, pid: str,
                            plid: str) -> Response:
        pipeline = self._pipeline(self._project(pid), plid)
        scope = self._scope_filter(params)
        base = self._base_url(req)
        jobs = [j.to_json(base) for j in pipeline.jobs if scope is None or j.status in scope]
        return self._paginate(req, params, jobs)

    def _list_jobs(self, req: Request, params: dict[str, Any], kind: str, pid: str) -> Response:
        project = self._project(pid)
        self._refresh(project)
        scope = self._scope_filter(params)
        base = self._base_url(req)
        jobs = [j for p in project.pipelines for j in p.jobs if scope is None or j.status in scope]
        jobs.sort(key=lambda j: j.id, reverse=True)
        return self._paginate(req, params, [j.to_json(base) for j in jobs])

    def _job(self, project: Project, jid: str) -> Job:
        self._refresh(project)
        for pipeline in project.pipelines:
            for job in pipeline.jobs:
                if str(job.id) == jid:
                    return job
        raise _not_found("")

    def _get_job(self, req: Request, params: dict[str, Any], kind: str, pid: str, jid: str) -> Response:
        return Response(200, self._job(self._project(pid), jid).to_json(self._base_url(req)))

    def _play_job(self, req: Request, params: dict[str, Any], kind: str, pid: str, jid: str) -> Response:
        self._require_private(kind)
        project = self._project(pid)
        job = self._job(project, jid)
        if job.script.when != "manual" or job.status != "manual":
            raise _bad_request("Unplayable Job")
        job.played_at = self.clock()
        job.status = "pending"
        self._refresh(project)
        return Response(200, job.to_json(self._base_url(req)))


def project_path_id(path_with_namespace: str) -> str:
    """``group/app`` as GitLab wants it in a URL path (``group%2Fapp``)."""
    return quote(path_with_namespace, safe="")


def dump_state(fake: FakeGitLab) -> str:
    """A JSON summary of every project (variables without values), for debugging a test."""
    out = []
    with fake._lock:
        for p in fake.projects:
            fake._refresh(p)
            out.append({
                "id": p.id,
                "path": p.path_with_namespace,
                "variables": [{"key": v.key, "scope": v.environment_scope} for v in p.variables],
                "environments": {e.name: e.state for e in p.environments},
                "pipelines": {pl.id: {"status": pl.status, "jobs": {j.name: j.status for j in pl.jobs}}
                              for pl in p.pipelines},
            })
    return json.dumps(out, indent=2)


@contextmanager
def serve(fake: FakeGitLab, *, journal: Journal | None = None, faults: Faults | None = None,
          host: str = "127.0.0.1") -> Iterator[SimServer]:
    """Serve ``fake`` on a free loopback port for the duration of the ``with`` block."""
    server = SimServer(fake.handle, service=SERVICE, journal=journal, faults=faults, host=host).start()
    try:
        yield server
    finally:
        server.stop()


def demo_fake(*, token: str, project: str = "group/app", environments: Sequence[str] = ("prod1", "prod2"),
              job_duration: float = 2.0) -> FakeGitLab:
    """A fake seeded for the local demo: one project whose pipelines deploy to ``environments`` and whose
    teardown (input ``mci_teardown`` or variable ``MCI_TEARDOWN``) stops them."""
    fake = FakeGitLab()
    fake.add_token(token)
    proj = fake.add_project(project, project_id=1)
    proj.declared_inputs = {"mci_teardown", "mci_teardown_environments"}

    def script(req: PipelineRequest) -> list[JobScript]:
        if req.inputs.get("mci_teardown") or req.variables.get("MCI_TEARDOWN") == "true":
            return [JobScript("mci-teardown", stage="cleanup", duration=job_duration)]
        jobs = [JobScript(f"deploy-{env}", stage="production", environment=env, duration=job_duration)
                for env in environments]
        return [*jobs, JobScript("mci-lb", stage="lb", duration=job_duration),
                JobScript("mci-teardown", stage="cleanup", when="manual", duration=job_duration)]

    proj.pipeline_script = script
    return fake


def main(argv: Sequence[str] | None = None) -> None:
    """``python -m gitlab_mci.sim.gitlab``: serve a demo fake GitLab in the foreground and print its settings."""
    import argparse

    parser = argparse.ArgumentParser(description="Serve a fake GitLab API v4 for the local demo.")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--token", default="glpat-demo-token")
    parser.add_argument("--project", default="group/app")
    parser.add_argument("--environments", default="prod1,prod2")
    args = parser.parse_args(argv)
    fake = demo_fake(token=args.token, project=args.project, environments=args.environments.split(","))
    server = SimServer(fake.handle, service=SERVICE, port=args.port).start()
    print(f"CI_SERVER_URL={server.url}\nCI_PROJECT_ID=1\nGITLAB_TOKEN={args.token}", flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        server.stop()


if __name__ == "__main__":
    main()
