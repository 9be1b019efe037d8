"""GitLab side of gitlab-mci: environment-scoped CI/CD variables, the teardown trigger and the deployment gate.

Everything goes through ``python-gitlab`` (imported lazily, only by the functions that talk to GitLab). Settings come
from flags or from the variables GitLab gives every job (``CI_API_V4_URL``/``CI_SERVER_URL``, ``CI_PROJECT_ID``,
``CI_JOB_TOKEN``, ``CI_COMMIT_SHA``, ``CI_COMMIT_REF_NAME``) plus ``GITLAB_TOKEN`` for an access token.
Tokens and secret values never reach output or error messages: every message built from a GitLab or HTTP error
passes through :meth:`Settings.redact`.

Data flows one way, as elsewhere in gitlab-mci: ``load_envs_file`` (validated description) → ``plan_variables``
(compare with what GitLab has) → ``apply_plan`` (write only the differences) → a table of results.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from gitlab_mci import __version__
from gitlab_mci.errors import UserError

if TYPE_CHECKING:
    import gitlab
    from gitlab.v4.objects import Project

# The same rules GitLab applies (Ci::Maskable): a maskable value is one word of 8+ characters; values that GitLab
# expands (not raw) are further limited to this alphabet.
_MASKABLE = re.compile(r"\A[a-zA-Z0-9_+=/@:.~-]{8,}\Z")
_MASKABLE_RAW = re.compile(r"\A\S{8,}\Z")
_KEY = re.compile(r"\A[A-Za-z0-9_]{1,255}\Z")
# Environment names (and scopes, which may use * wildcards) as GitLab allows them.
_SCOPE = re.compile(r"\A[a-zA-Z0-9_/${}. *-]+\Z")
# Key parts that mark a value as a secret: masked and protected unless the file says otherwise.
_SECRET_PARTS = frozenset({"TOKEN", "SECRET", "SECRETS", "PASSWORD", "PASSWD", "PASS", "KEY", "KEYS", "CREDENTIAL",
                           "CREDENTIALS", "PRIVATE", "APIKEY", "PAT", "CERT", "JSON"})
_MAX_VALUE = 10_000
_FINAL_PIPELINE = ("success", "failed", "canceled", "skipped")
_FINAL_JOB = ("success", "failed", "canceled", "skipped")
DEFAULT_TEARDOWN_INPUT = "mci_teardown"
DEFAULT_TEARDOWN_VARIABLE = "MCI_TEARDOWN"
DEFAULT_TEARDOWN_JOB = "mci-teardown"
REDACTED = "[MASKED]"


# ----------------------------------------------------------------------------------------------------------------------
# Settings and the client


@dataclass(frozen=True)
class Settings:
    """Where GitLab is, which project, and the credentials to use (never printed)."""

    url: str
    project: str | None = None
    token: str | None = field(default=None, repr=False)
    job_token: str | None = field(default=None, repr=False)
    sha: str | None = None
    ref: str | None = None
    url_source: str = "--url"
    timeout: float = 30.0
    extra_secrets: tuple[str, ...] = field(default=(), repr=False)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, *, url: str | None = None,
                 project: str | None = None, sha: str | None = None, ref: str | None = None) -> Settings:
        """Settings from flags (the keyword arguments) falling back to the CI variables GitLab provides.

        Raises :class:`UserError` for a URL that is not ``http(s)://host[/path]``.
        """
        env = os.environ if env is None else env
        source = "--url"
        if not url:
            if env.get("CI_API_V4_URL"):
                url, source = env["CI_API_V4_URL"], "CI_API_V4_URL"
            elif env.get("CI_SERVER_URL"):
                url, source = env["CI_SERVER_URL"], "CI_SERVER_URL"
            else:
                raise UserError("no GitLab URL: pass --url or set CI_SERVER_URL (GitLab sets it in every job)")
        return cls(
            url=normalise_url(url, source),
            project=project or env.get("CI_PROJECT_ID") or env.get("CI_PROJECT_PATH") or None,
            token=env.get("GITLAB_TOKEN") or None,
            job_token=env.get("CI_JOB_TOKEN") or None,
            sha=sha or env.get("CI_COMMIT_SHA") or None,
            ref=ref or env.get("CI_COMMIT_REF_NAME") or None,
            url_source=source,
        )

    def with_secrets(self, secrets: Sequence[str]) -> Settings:
        """A copy that also redacts ``secrets`` (e.g. the values being written) from every message."""
        return replace(self, extra_secrets=(*self.extra_secrets, *[s for s in secrets if s]))

    def redact(self, text: str) -> str:
        """``text`` with every token and known secret value replaced by ``[MASKED]``."""
        secrets = [s for s in (self.token, self.job_token, *self.extra_secrets) if s]
        # Longest first, so a secret that contains another is replaced whole.
        for secret in sorted(set(secrets), key=len, reverse=True):
            text = text.replace(secret, REDACTED)
        return text

    def require_project(self) -> str:
        """The project id or path; :class:`UserError` when none was given."""
        if not self.project:
            raise UserError("no GitLab project: pass --project ID|group/path or set CI_PROJECT_ID")
        return self.project


def normalise_url(url: str, source: str = "--url") -> str:
    """The server URL python-gitlab wants (``https://host[/prefix]``) from a server or ``…/api/v4`` URL."""
    parts = urlsplit(url.strip())
    if parts.scheme not in ("http", "https") or not parts.netloc or parts.query or parts.fragment:
        raise UserError(f"bad GitLab URL {url!r} (from {source}): expected http(s)://host[/path]")
    path = parts.path.rstrip("/")
    if path.endswith("/api/v4"):
        path = path[: -len("/api/v4")]
    return f"{parts.scheme}://{parts.netloc}{path}"


def connect(settings: Settings, *, need_write: bool = False) -> gitlab.Gitlab:
    """A python-gitlab client for ``settings``: access token first, else the CI job token.

    ``need_write`` refuses a job token up front (it cannot manage variables, pipelines or jobs through the API).
    """
    import gitlab
    import requests
    from requests.adapters import HTTPAdapter
    from urllib3.util.retry import Retry

    if not settings.token and not settings.job_token:
        raise UserError("no GitLab token: set GITLAB_TOKEN (an access token with the api scope) "
                        "or run in a CI job, which provides CI_JOB_TOKEN")
    if need_write and not settings.token:
        raise UserError("this command changes the project, which CI_JOB_TOKEN may not do: set GITLAB_TOKEN to a "
                        "project or personal access token with the api scope (a masked, protected CI/CD variable)")
    session = requests.Session()
    # Connection failures are retried for every method (nothing was sent); 5xx only for idempotent methods, so a
    # pipeline is never created twice. python-gitlab itself honours 429 Retry-After.
    retry = Retry(total=4, connect=2, read=0, status=3, backoff_factor=0.3, raise_on_status=False,
                  status_forcelist=(500, 502, 503, 504), respect_retry_after_header=True)
    session.mount("http://", HTTPAdapter(max_retries=retry))
    session.mount("https://", HTTPAdapter(max_retries=retry))
    return gitlab.Gitlab(
        settings.url,
        private_token=settings.token,
        job_token=None if settings.token else settings.job_token,
        timeout=settings.timeout,
        per_page=100,
        user_agent=f"gitlab-mci/{__version__}",
        session=session,
    )


@contextmanager
def api_errors(settings: Settings, doing: str) -> Iterator[None]:
    """Turn python-gitlab and HTTP failures while ``doing`` something into one redacted line."""
    import gitlab
    import requests

    try:
        yield
    except gitlab.GitlabAuthenticationError:
        if settings.token:
            raise UserError(f"GitLab at {settings.url} rejected GITLAB_TOKEN (401 Unauthorized) while {doing}: "
                            "check that the token is valid, not expired and has the api scope") from None
        raise UserError(f"GitLab at {settings.url} rejected CI_JOB_TOKEN (401 Unauthorized) while {doing}: "
                        "a job token reaches only some endpoints; set GITLAB_TOKEN") from None
    except gitlab.GitlabError as exc:
        code = exc.response_code
        message = _error_text(exc.error_message)
        hint = ""
        if code == 403:
            hint = ("; the token lacks permission" if settings.token
                    else "; CI_JOB_TOKEN may not do this: set GITLAB_TOKEN")
        status = f"HTTP {code}: " if code else ""
        raise UserError(settings.redact(f"GitLab refused {doing} ({status}{message}){hint}")) from None
    except requests.exceptions.ConnectionError:
        raise UserError(f"cannot reach GitLab at {settings.url} while {doing} (from {settings.url_source}): "
                        "connection failed") from None
    except requests.exceptions.Timeout:
        raise UserError(f"GitLab at {settings.url} did not answer within {settings.timeout:g}s while {doing}") \
            from None
    except requests.exceptions.RequestException as exc:
        raise UserError(settings.redact(f"HTTP error talking to GitLab at {settings.url} while {doing}: "
                                        f"{type(exc).__name__}")) from None


def _error_text(message: Any) -> str:
    # GitLab errors are a string, or {"attribute": ["problem", ...]} for validation failures.
    if isinstance(message, bytes):
        message = message.decode(errors="replace")
    if isinstance(message, dict):
        parts = []
        for attr, problems in message.items():
            items = problems if isinstance(problems, list) else [problems]
            parts.append(f"{attr} " + ", ".join(str(p) for p in items) if attr != "base"
                         else ", ".join(str(p) for p in items))
        message = "; ".join(parts)
    return " ".join(str(message).split())[:300]


def get_project(gl: gitlab.Gitlab, settings: Settings, *, lazy: bool = False) -> Project:
    """The project of ``settings`` (by id or path); ``lazy`` makes no request (a job token may not read it)."""
    project_id = settings.require_project()
    with api_errors(settings, f"reading project {project_id}"):
        project: Project = gl.projects.get(project_id, lazy=lazy)
    return project


# ----------------------------------------------------------------------------------------------------------------------
# The environments file


@dataclass(frozen=True)
class DesiredVariable:
    """One variable the environments file asks for. ``secret`` values are never printed."""

    key: str
    scope: str
    value: str = field(repr=False)
    variable_type: str = "env_var"
    protected: bool = False
    masked: bool = False
    raw: bool = False
    description: str | None = None
    secret: bool = False
    note: str = ""


@dataclass(frozen=True)
class EnvsFile:
    """The validated environments file: the project (if named) and the variables, in file order."""

    path: Path
    project: str | None
    variables: tuple[DesiredVariable, ...]

    @property
    def environments(self) -> list[str]:
        return sorted({v.scope for v in self.variables if v.scope != "*"})


_TOP_KEYS = ("project", "variables", "environments")
_VAR_KEYS = ("value", "from_env", "from_file", "type", "masked", "protected", "raw", "description")


def looks_secret(key: str) -> bool:
    """Whether a variable name says it holds a secret (``…_TOKEN``, ``…_KEY``, ``…_PASSWORD``…)."""
    return any(part in _SECRET_PARTS for part in key.upper().split("_"))


def maskable(value: str, *, raw: bool = False) -> bool:
    """Whether GitLab accepts ``value`` for a masked variable."""
    return bool((_MASKABLE_RAW if raw else _MASKABLE).match(value))


def load_envs_file(path: Path, env: Mapping[str, str] | None = None) -> EnvsFile:
    """Read and validate the environments file completely, before anything talks to GitLab.

    Every problem is a one-line :class:`UserError` naming the file and the key.
    """
    from gitlab_mci.files import load_yaml, read_text

    env = os.environ if env is None else env
    doc = load_yaml(read_text(path, "the environments file"), str(path))
    if not isinstance(doc, dict):
        raise UserError(f"{path}: expected a mapping with 'environments' (and optionally 'variables', 'project')")
    unknown = sorted(str(k) for k in doc if k not in _TOP_KEYS)
    if unknown:
        raise UserError(f"{path}: unknown key {unknown[0]!r} (expected: {', '.join(_TOP_KEYS)})")
    project = doc.get("project")
    if project is not None and not isinstance(project, (str, int)):
        raise UserError(f"{path}: project: expected a project ID or path like group/app")
    out: list[DesiredVariable] = []
    common = doc.get("variables") or {}
    if not isinstance(common, dict):
        raise UserError(f"{path}: variables: expected a mapping of NAME: value")
    for key, spec in common.items():
        out.append(_desired(path, f"variables.{key}", key, "*", spec, env))
    envs = doc.get("environments")
    if not isinstance(envs, dict) or not envs:
        raise UserError(f"{path}: environments: expected a mapping of environment name to its variables")
    for name, variables in envs.items():
        if not isinstance(name, str) or not _SCOPE.match(name):
            raise UserError(f"{path}: environments.{name}: not a valid environment name or scope "
                            "(letters, digits, '-', '_', '/', '.', '*', '$', '{', '}' and spaces)")
        if name == "*":
            raise UserError(f"{path}: environments.*: put project-wide variables under 'variables'")
        if not isinstance(variables, dict) or not variables:
            raise UserError(f"{path}: environments.{name}: expected a mapping of NAME: value")
        for key, spec in variables.items():
            out.append(_desired(path, f"environments.{name}.{key}", key, name, spec, env))
    return EnvsFile(path, str(project) if project is not None else None, tuple(out))


def _desired(path: Path, where: str, key: Any, scope: str, spec: Any, env: Mapping[str, str]) -> DesiredVariable:
    if not isinstance(key, str) or not _KEY.match(key):
        raise UserError(f"{path}: {where}: variable names may contain only letters, digits and '_'")
    from_env = False
    if isinstance(spec, dict):
        unknown = sorted(str(k) for k in spec if k not in _VAR_KEYS)
        if unknown:
            raise UserError(f"{path}: {where}: unknown key {unknown[0]!r} (expected: {', '.join(_VAR_KEYS)})")
        sources = [k for k in ("value", "from_env", "from_file") if k in spec]
        if len(sources) != 1:
            raise UserError(f"{path}: {where}: give exactly one of value, from_env, from_file")
        if "from_env" in spec:
            name = spec["from_env"]
            if not isinstance(name, str) or not name:
                raise UserError(f"{path}: {where}.from_env: expected an environment variable name")
            if name not in env:
                raise UserError(f"{path}: {where}.from_env: environment variable {name} is not set")
            value, from_env = env[name], True
        elif "from_file" in spec:
            file = (path.parent / str(spec["from_file"])).resolve()
            try:
                value = file.read_text()
            except OSError as exc:
                raise UserError(f"{path}: {where}.from_file: cannot read {file}: {exc.strerror or exc}") from None
            from_env = True  # file contents (keys, kubeconfigs) are treated as secrets
        else:
            value = _scalar(path, f"{where}.value", spec["value"])
        vtype = spec.get("type", "env_var")
        if vtype not in ("env_var", "file"):
            raise UserError(f"{path}: {where}.type: expected env_var or file, not {vtype!r}")
        flags: dict[str, bool] = {}
        for flag in ("masked", "protected", "raw"):
            if flag in spec:
                if not isinstance(spec[flag], bool):
                    raise UserError(f"{path}: {where}.{flag}: expected true or false")
                flags[flag] = spec[flag]
        description = spec.get("description")
        if description is not None and not isinstance(description, str):
            raise UserError(f"{path}: {where}.description: expected a string")
    else:
        value = _scalar(path, where, spec)
        vtype, description = "env_var", None
        flags = {}
    if len(value) > _MAX_VALUE:
        raise UserError(f"{path}: {where}: value is longer than {_MAX_VALUE} characters")
    secret = from_env or looks_secret(key) or flags.get("masked", False)
    raw = flags.get("raw", False)
    note = ""
    if "masked" in flags:
        masked = flags["masked"]
        if masked and not maskable(value, raw=raw):
            raise UserError(f"{path}: {where}: value cannot be masked (GitLab needs 8 or more characters, one line, "
                            "only letters, digits and _+=/@:.~-; or set raw: true to allow any non-space character)")
    else:
        masked = secret and maskable(value, raw=raw)
        if secret and not masked:
            note = "not maskable"
    protected = flags.get("protected", secret)
    return DesiredVariable(key, scope, value, vtype, protected, masked, raw, description, secret, note)


def _scalar(path: Path, where: str, value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (str, int, float)):
        return str(value)
    if value is None:
        raise UserError(f"{path}: {where}: no value (use an empty string \"\" for an empty variable)")
    raise UserError(f"{path}: {where}: expected a string, number or boolean, or a mapping with value/from_env")


# ----------------------------------------------------------------------------------------------------------------------
# Variables: plan and apply


@dataclass(frozen=True)
class VariableChange:
    """What setup does (or did) to one variable: ``create``, ``update`` or ``unchanged``."""

    desired: DesiredVariable
    action: str
    changed: tuple[str, ...] = ()


def plan_variables(project: Project, envs: EnvsFile, settings: Settings) -> list[VariableChange]:
    """Compare the file with the project's variables (one paginated list) and say what must change."""
    with api_errors(settings, "listing CI/CD variables"):
        existing = {(v.key, v.environment_scope): v.attributes
                    for v in project.variables.list(get_all=True)}
    plan = []
    for want in envs.variables:
        have = existing.get((want.key, want.scope))
        if have is None:
            plan.append(VariableChange(want, "create"))
            continue
        changed = []
        if have.get("hidden") and have.get("value") is None:
            # A hidden variable's value cannot be read back; leave it alone rather than rewrite it on every run.
            pass
        elif have.get("value") != want.value:
            changed.append("value")
        for attr, value in (("variable_type", want.variable_type), ("protected", want.protected),
                            ("masked", want.masked), ("raw", want.raw)):
            current = bool(have.get(attr)) if isinstance(value, bool) else have.get(attr)
            if current != value:
                changed.append(attr)
        if want.description is not None and have.get("description") != want.description:
            changed.append("description")
        plan.append(VariableChange(want, "update" if changed else "unchanged", tuple(changed)))
    return plan


def apply_plan(project: Project, plan: Sequence[VariableChange], settings: Settings) -> None:
    """Create and update the variables of ``plan``; ``unchanged`` ones cause no request at all."""
    for change in plan:
        want = change.desired
        data: dict[str, Any] = {
            "value": want.value,
            "variable_type": want.variable_type,
            "protected": want.protected,
            "masked": want.masked,
            "raw": want.raw,
        }
        if want.description is not None:
            data["description"] = want.description
        label = f"{want.key} (scope {want.scope})"
        if change.action == "create":
            with api_errors(settings, f"creating variable {label}"):
                project.variables.create({"key": want.key, "environment_scope": want.scope, **data})
        elif change.action == "update":
            with api_errors(settings, f"updating variable {label}"):
                project.variables.update(want.key, data, filter={"environment_scope": want.scope})


# ----------------------------------------------------------------------------------------------------------------------
# Waiting


Echo = Callable[[str], None]


@dataclass
class Waiter:
    """Bounded polling with a progress line whenever the watched status changes."""

    timeout: float
    interval: float
    echo: Echo
    sleep: Callable[[float], None] = time.sleep
    clock: Callable[[], float] = time.monotonic

    def until(self, what: str, poll: Callable[[], str], done: Callable[[str], bool]) -> str:
        """Poll until ``done(status)``; the last status, or :class:`UserError` after ``timeout`` seconds."""
        deadline = self.clock() + self.timeout
        last = None
        started = self.clock()
        while True:
            status = poll()
            if status != last:
                self.echo(f"{what}: {status} ({self.clock() - started:.0f}s)")
                last = status
            if done(status):
                return status
            if self.clock() >= deadline:
                raise UserError(f"{what} is still {status} after {self.timeout:g}s (raise --timeout, or check "
                                "it in GitLab)")
            self.sleep(min(self.interval, max(0.0, deadline - self.clock())))


# ----------------------------------------------------------------------------------------------------------------------
# Teardown


@dataclass(frozen=True)
class TeardownResult:
    """How teardown was started, what it is called in GitLab, and its final status (``None`` if not waited)."""

    mode: str
    target: str
    url: str | None
    status: str | None


def teardown_by_pipeline(project: Project, settings: Settings, *, ref: str, environments: Sequence[str],
                         input_name: str, variable_name: str, echo: Echo,
                         waiter: Waiter | None) -> TeardownResult:
    """Create a teardown pipeline on ``ref`` driven by an input; fall back to a pipeline variable if refused."""
    import gitlab

    inputs: dict[str, Any] = {input_name: True}
    if environments:
        inputs[f"{input_name}_environments"] = ",".join(environments)
    pipeline = None
    with api_errors(settings, f"creating a teardown pipeline on {ref}"):
        try:
            pipeline = project.pipelines.create({"ref": ref, "inputs": inputs})
        except gitlab.GitlabCreateError as exc:
            text = _error_text(exc.error_message)
            if exc.response_code != 400 or "input" not in text.lower():
                raise
            echo(f"GitLab rejected pipeline inputs ({settings.redact(text)}); "
                 f"falling back to the pipeline variable {variable_name}=true")
        if pipeline is None:
            variables = [{"key": variable_name, "value": "true"}]
            if environments:
                variables.append({"key": f"{variable_name}_ENVIRONMENTS", "value": ",".join(environments)})
            try:
                pipeline = project.pipelines.create({"ref": ref, "variables": variables})
            except gitlab.GitlabCreateError as exc:
                text = _error_text(exc.error_message)
                if "permission" in text.lower() and "variable" in text.lower():
                    raise UserError(
                        f"GitLab refused both the pipeline input {input_name} and the pipeline variable "
                        f"{variable_name} ({text}): declare `{input_name}` under `spec: inputs:` in the project's "
                        ".gitlab-ci.yml, or use --mode job") from None
                raise
    assert pipeline is not None
    created = pipeline
    url = getattr(created, "web_url", None)
    echo(f"started teardown pipeline #{pipeline.id} on {ref}: {url}")
    if waiter is None:
        return TeardownResult("inputs", f"pipeline #{pipeline.id}", url, None)

    def poll() -> str:
        with api_errors(settings, f"reading pipeline #{created.id}"):
            created.refresh()
        return str(created.status)

    status = waiter.until(f"pipeline #{pipeline.id}", poll, lambda s: s in _FINAL_PIPELINE)
    if status != "success":
        with api_errors(settings, f"listing the jobs of pipeline #{pipeline.id}"):
            failed = [j.name for j in pipeline.jobs.list(get_all=True) if j.status == "failed"]
        which = f": failed job(s) {', '.join(failed)}" if failed else ""
        raise UserError(f"teardown pipeline #{pipeline.id} {status}{which} ({url})")
    return TeardownResult("inputs", f"pipeline #{pipeline.id}", url, status)


def teardown_by_job(project: Project, settings: Settings, *, ref: str, job_name: str, echo: Echo,
                    waiter: Waiter | None, search_pipelines: int = 20) -> TeardownResult:
    """Play the manual teardown job ``job_name`` of the latest pipeline on ``ref`` that has it."""
    with api_errors(settings, f"listing pipelines on {ref}"):
        pipelines = project.pipelines.list(ref=ref, order_by="id", sort="desc", per_page=search_pipelines,
                                           get_all=False)
    found = None
    for summary in pipelines:
        pipeline = project.pipelines.get(summary.id, lazy=True)
        with api_errors(settings, f"listing the jobs of pipeline #{summary.id}"):
            jobs = [j for j in pipeline.jobs.list(get_all=True) if j.name == job_name]
        if jobs:
            found = (summary, max(jobs, key=lambda j: j.id))
            break
    if found is None:
        raise UserError(f"no pipeline on {ref} (latest {search_pipelines}) has a job named {job_name!r}: "
                        "pass --job NAME, or --mode inputs")
    summary, job_summary = found
    if job_summary.status != "manual":
        raise UserError(f"job {job_name!r} #{job_summary.id} of pipeline #{summary.id} is {job_summary.status}, "
                        "not waiting to be played (run a new pipeline, or use --mode inputs)")
    job = project.jobs.get(job_summary.id, lazy=True)
    with api_errors(settings, f"playing job {job_name} #{job_summary.id}"):
        job.play()
    url = getattr(job_summary, "web_url", None)
    echo(f"played job {job_name} #{job_summary.id} of pipeline #{summary.id}: {url}")
    if waiter is None:
        return TeardownResult("job", f"job #{job_summary.id}", url, None)

    def poll() -> str:
        with api_errors(settings, f"reading job #{job_summary.id}"):
            return str(project.jobs.get(job_summary.id).status)

    status = waiter.until(f"job {job_name} #{job_summary.id}", poll, lambda s: s in _FINAL_JOB)
    if status != "success":
        raise UserError(f"teardown job {job_name} #{job_summary.id} {status} ({url})")
    return TeardownResult("job", f"job #{job_summary.id}", url, status)


def find_environment(project: Project, settings: Settings, name: str) -> Any | None:
    """The environment called exactly ``name``, or ``None``."""
    with api_errors(settings, f"looking up environment {name}"):
        envs = [e for e in project.environments.list(name=name, get_all=True) if e.name == name]
    return envs[0] if envs else None


def teardown_by_stop(project: Project, settings: Settings, *, environments: Sequence[str], echo: Echo,
                     waiter: Waiter | None) -> list[TeardownResult]:
    """Stop each environment (GitLab runs its ``on_stop`` job) and wait until it is stopped."""
    if not environments:
        raise UserError("--mode stop needs --environment NAME (one or more)")
    found = {}
    for name in environments:
        env = find_environment(project, settings, name)
        if env is None:
            raise UserError(f"environment {name!r} does not exist in project {settings.project}")
        found[name] = env
    results = []
    for name, env in found.items():
        with api_errors(settings, f"stopping environment {name}"):
            env.stop()
        echo(f"stopping environment {name} (#{env.id})")
        if waiter is None:
            results.append(TeardownResult("stop", f"environment {name}", None, None))
            continue
        state = _wait_stopped(project, settings, name, int(env.id), waiter)
        results.append(TeardownResult("stop", f"environment {name}", None, state))
    return results


def _wait_stopped(project: Project, settings: Settings, name: str, env_id: int, waiter: Waiter) -> str:
    seen_stopping = False

    def poll() -> str:
        nonlocal seen_stopping
        with api_errors(settings, f"reading environment {name}"):
            state = str(project.environments.get(env_id).state)
        seen_stopping = seen_stopping or state == "stopping"
        return state

    # "available" again after "stopping" means the on_stop job failed.
    state = waiter.until(f"environment {name}", poll, lambda s: s == "stopped" or (s == "available" and seen_stopping))
    if state != "stopped":
        raise UserError(f"environment {name} is {state} again: its stop job failed (see the environment's "
                        "deployments in GitLab)")
    return state


# ----------------------------------------------------------------------------------------------------------------------
# The deployment gate


@dataclass(frozen=True)
class GateResult:
    """One environment's verdict: ``ok`` or the reason it is not."""

    environment: str
    ok: bool
    reason: str
    deployment_id: int | None = None


def check_gate(project: Project, settings: Settings, environments: Sequence[str], sha: str) -> list[GateResult]:
    """Whether each environment's latest deployment succeeded at ``sha``."""
    results = []
    for name in environments:
        if find_environment(project, settings, name) is None:
            results.append(GateResult(name, False, "no such environment"))
            continue
        with api_errors(settings, f"listing deployments of {name}"):
            latest = project.deployments.list(environment=name, order_by="id", sort="desc", per_page=1,
                                              get_all=False)
        if not latest:
            results.append(GateResult(name, False, "never deployed"))
            continue
        dep = latest[0]
        if dep.status != "success":
            results.append(GateResult(name, False, f"last deployment #{dep.id} {dep.status}", dep.id))
        elif dep.sha != sha:
            results.append(GateResult(name, False, f"last deployment #{dep.id} is at {dep.sha[:8]}", dep.id))
        else:
            results.append(GateResult(name, True, f"deployment #{dep.id} succeeded", dep.id))
    return results
