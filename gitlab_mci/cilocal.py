"""Run a project's own pipeline on this machine with gitlab-ci-local, against the running simulator.

gitlab-ci-local (npm, 4.73.0 on Node 20) runs `.gitlab-ci.yml` jobs in the local shell, but three things of a real
GitLab are missing for an Auto DevOps project that includes the gitlab-mci template: Auto DevOps itself (an
`include: template:` it cannot fetch, whose deploy image needs Helm and a real cluster), the gitlab-mci template
(an `include: project:` or `component:` on your GitLab), and the CI/CD variables scoped to each environment. This
module prepares all three in the project's checkout:

- the Auto DevOps stand-in and the template are put where gitlab-ci-local caches includes
  (``.gitlab-ci-local/includes/<host>/…``), so it never downloads them;
- ``.gitlab-ci-local-variables.yml`` gets the project's scoped variables (a file in the same format, optional), the
  simulator's endpoints (KUBECONFIG, GITLAB_MCI_*_ENDPOINT, GOOGLE_CLOUD_PROJECT), and, for every production
  environment the template's ``environments`` input names, a KUBE_CONTEXT (a simulated cluster), KUBE_NAMESPACE and
  KUBE_INGRESS_BASE_DOMAIN unless the project's file sets them;
- the gitlab-ci-local command line: ``--force-shell-executor``, plus ``--manual`` for the ``production_manual``
  jobs when STAGING_ENABLED or CANARY_ENABLED makes them manual (the pin jobs need them).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml

from gitlab_mci.errors import UserError

TEMPLATE_FILE = "/ci-templates/mci.gitlab-ci.yml"
COMPONENT_NAME = "mci"
AUTO_DEVOPS = "Auto-DevOps.gitlab-ci.yml"
# Where gitlab-ci-local 4.73.0 looks for `include: template:` files in its cache.
TEMPLATE_CACHE = "gitlab.com/gitlab-org/gitlab/-/raw/HEAD/lib/gitlab/ci/templates"
VARIABLES_FILE = ".gitlab-ci-local-variables.yml"
# The simulator's endpoints jobs need; directories (CLOUDSDK_CONFIG) are left out: gitlab-ci-local copies file paths.
SIM_VARIABLES = re.compile(r"^(KUBECONFIG|GITLAB_MCI_[A-Z]+_ENDPOINT|GOOGLE_CLOUD_PROJECT)$")
_SOURCE_TREE = Path(__file__).resolve().parents[1]


def source_file(relative: str) -> Path | None:
    """A file of the gitlab-mci source tree this package runs from (a checkout or an editable install)."""
    path = _SOURCE_TREE / relative
    return path if path.is_file() else None


def default_gitlab_ci_local() -> str:
    """gitlab-ci-local as installed by `npm install --prefix .tools` in the gitlab-mci checkout, else from PATH."""
    local = _SOURCE_TREE / ".tools" / "node_modules" / ".bin" / "gitlab-ci-local"
    return str(local) if local.exists() else "gitlab-ci-local"


@dataclass
class Plan:
    """What `prepare` writes and the command that runs the pipeline."""

    project_dir: Path
    variables_file: Path
    variables: dict[str, Any]
    includes: dict[Path, Path] = field(default_factory=dict)  # cache path -> source file
    environments: dict[str, str] = field(default_factory=dict)  # production environment -> context
    command: list[str] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        return {"project_dir": str(self.project_dir), "variables_file": str(self.variables_file),
                "includes": {str(k): str(v) for k, v in self.includes.items()},
                "environments": self.environments, "command": self.command}


class _Loader(yaml.SafeLoader):
    """Reads a .gitlab-ci.yml: `!reference` tags are kept as plain lists."""


def _reference(loader: yaml.SafeLoader, node: yaml.Node) -> list[Any]:
    assert isinstance(node, yaml.SequenceNode)
    return loader.construct_sequence(node)


_Loader.add_constructor("!reference", _reference)


def read_ci_file(path: Path) -> dict[str, Any]:
    """The body of a .gitlab-ci.yml (after its `spec:` header, if any)."""
    try:
        text = path.read_text()
    except OSError as exc:
        raise UserError(f"cannot read {path}: {exc.strerror}") from None
    head, sep, body = text.partition("\n---\n")
    if not sep or "spec:" not in head:
        body = text
    try:
        data = yaml.load(body, Loader=_Loader) or {}
    except yaml.YAMLError as exc:
        raise UserError(f"{path} is not valid YAML: {str(exc).splitlines()[0]}") from None
    if not isinstance(data, dict):
        raise UserError(f"{path}: expected a mapping of jobs and keywords")
    return data


def _include_items(data: Mapping[str, Any]) -> list[Any]:
    raw = data.get("include") or []
    return raw if isinstance(raw, list) else [raw]


def template_include(data: Mapping[str, Any]) -> dict[str, Any] | None:
    """The `include:` item that brings in the gitlab-mci template (project file or component), if any."""
    for item in _include_items(data):
        if not isinstance(item, dict):
            continue
        if item.get("file") == TEMPLATE_FILE or str(item.get("component", "")).split("@")[0].endswith(
                f"/{COMPONENT_NAME}"):
            return item
    return None


def git_remote_host(project_dir: Path) -> str:
    """The host of the checkout's `origin` remote: gitlab-ci-local resolves project includes on it."""
    proc = subprocess.run(["git", "-C", str(project_dir), "remote", "get-url", "origin"], capture_output=True,
                          text=True)
    url = proc.stdout.strip()
    if proc.returncode != 0 or not url:
        raise UserError(f"{project_dir} is not a git checkout with an `origin` remote; gitlab-ci-local needs one "
                        "(git init && git remote add origin https://gitlab.example.com/group/project.git)")
    # https://host/group/project.git, or scp-like git@host:group/project.git
    host = (urlsplit(url).hostname or "") if "://" in url else url.split("@", 1)[-1].split(":", 1)[0]
    if not host:
        raise UserError(f"cannot tell the host of the origin remote {url!r}")
    return host


def include_cache(data: Mapping[str, Any], host: str, template: Path, auto_devops: Path) -> dict[Path, Path]:
    """Cache paths (relative to `.gitlab-ci-local/includes`) -> the files to put there."""
    cache: dict[Path, Path] = {}
    for item in _include_items(data):
        if isinstance(item, dict) and item.get("template") == AUTO_DEVOPS:
            cache[Path(TEMPLATE_CACHE) / AUTO_DEVOPS] = auto_devops
    item = template_include(data)
    if item is not None and "project" in item:
        ref = str(item.get("ref") or "HEAD")
        cache[Path(host) / str(item["project"]) / ref / TEMPLATE_FILE.lstrip("/")] = template
    elif item is not None:
        path, _, version = str(item["component"]).partition("@")
        comp_host, _, rest = path.partition("/")
        comp_host = host if comp_host in ("$CI_SERVER_FQDN", "${CI_SERVER_FQDN}") else comp_host
        project = rest.rsplit("/", 1)[0]
        cache[Path(comp_host) / project / version / "templates" / f"{COMPONENT_NAME}.yml"] = template
    return cache


def simulator_variables(state_dir: Path) -> dict[str, str]:
    """The running simulator's endpoints, from its state directory (what `gitlab-mci sim env` prints)."""
    try:
        state = json.loads((state_dir / "state.json").read_text())
        pid = int(state["pid"])
        os.kill(pid, 0)
        text = Path(state["files"]["dotenv"]).read_text()
        clusters = list(state["clusters"])
    except (OSError, ValueError, KeyError, TypeError):
        raise UserError(f"no simulator is running with state dir {state_dir} (start one with "
                        f"`gitlab-mci sim up --detach --state-dir {state_dir}`)") from None
    values = dict(line.split("=", 1) for line in text.splitlines() if "=" in line)
    out = {k: v for k, v in values.items() if SIM_VARIABLES.match(k)}
    out["MCI_SIM_CLUSTERS"] = ",".join(clusters)
    return out


def map_environments(environments: Sequence[str], clusters: Sequence[str],
                     given: Mapping[str, str]) -> dict[str, str]:
    """Production environment -> kubeconfig context: as given, else the cluster of the same name, else in order."""
    unknown = sorted(set(given) - set(environments))
    if unknown:
        raise UserError(f"--context names environment(s) the template does not deploy: {', '.join(unknown)} "
                        f"(its environments input: {', '.join(environments)})")
    free = [c for c in clusters if c not in given.values() and c not in environments]
    out: dict[str, str] = {}
    for env in environments:
        if env in given:
            out[env] = given[env]
        elif env in clusters:
            out[env] = env
        elif free:
            out[env] = free.pop(0)
        else:
            raise UserError(f"no simulated cluster left for environment {env!r} (clusters: {', '.join(clusters)}); "
                            "pass --context ENV=CONTEXT or add a cluster to the simulator's spec")
    return out


def _scoped(variables: dict[str, Any], key: str, scope: str, value: str) -> None:
    """Set `key` for environment `scope` unless the project's file already sets it there (or for every scope)."""
    current = variables.get(key)
    if isinstance(current, str):
        return  # one value for every environment, as the project wants
    entry = current if isinstance(current, dict) else {}
    values = entry.setdefault("values", {})
    if scope not in values and "*" not in values:
        values[scope] = value
    variables[key] = entry


def _truthy(value: Any) -> bool:
    if isinstance(value, dict):
        return any(_truthy(v) for v in (value.get("values") or {}).values())
    return value not in (None, "", False)


def prepare(project_dir: Path, *, ci_file: str = ".gitlab-ci.yml", state_dir: Path, template: Path,
            auto_devops: Path, variables_file: Path | None = None, contexts: Mapping[str, str] | None = None,
            namespace: str | None = None, gitlab_ci_local: str = "gitlab-ci-local") -> Plan:
    """Work out the include cache, the variables and the command; nothing is written (see `write`)."""
    for path, what in ((template, "--template"), (auto_devops, "--auto-devops")):
        if not path.is_file():
            raise UserError(f"{what}: {path} does not exist")
    data = read_ci_file(project_dir / ci_file)
    item = template_include(data)
    if item is None:
        raise UserError(f"{project_dir / ci_file} does not include the gitlab-mci template (an include with "
                        f"file: {TEMPLATE_FILE}, or a component named {COMPONENT_NAME})")
    inputs = item.get("inputs") or {}
    environments = inputs.get("environments", ["production"])
    if not isinstance(environments, list) or not all(isinstance(e, str) for e in environments):
        raise UserError("the template's environments input must be a list of environment names")
    host = git_remote_host(project_dir)
    sim = simulator_variables(state_dir)
    clusters = sim.pop("MCI_SIM_CLUSTERS").split(",")

    variables: dict[str, Any] = {}
    if variables_file is not None:
        try:
            loaded = yaml.safe_load(variables_file.read_text()) or {}
        except OSError as exc:
            raise UserError(f"cannot read --variables {variables_file}: {exc.strerror}") from None
        except yaml.YAMLError as exc:
            raise UserError(f"--variables {variables_file} is not valid YAML: {str(exc).splitlines()[0]}") from None
        if not isinstance(loaded, dict):
            raise UserError(f"--variables {variables_file}: expected KEY: value or KEY: {{values: {{ENV: value}}}}")
        variables.update(loaded)
    mapping = map_environments(environments, clusters, contexts or {})
    ns = namespace or str(inputs.get("release") or "default")
    for env, context in mapping.items():
        _scoped(variables, "KUBE_CONTEXT", env, context)
        _scoped(variables, "KUBE_NAMESPACE", env, ns)
        _scoped(variables, "KUBE_INGRESS_BASE_DOMAIN", env, f"{env}.example.com")
    lb_env = str(inputs.get("lb_environment") or "global")
    _scoped(variables, "KUBE_NAMESPACE", lb_env, ns)  # the teardown has no pin job to learn it from
    variables.update(sim)

    command = [gitlab_ci_local, "--force-shell-executor"]
    if ci_file != ".gitlab-ci.yml":
        command += ["--file", ci_file]
    if _truthy(variables.get("STAGING_ENABLED")) or _truthy(variables.get("CANARY_ENABLED")):
        for env in environments:  # manual deploys the pin jobs need
            command += ["--manual", f"production_manual: [{env}]"]
    cache = include_cache(data, host, template, auto_devops)
    base = project_dir / ".gitlab-ci-local" / "includes"
    return Plan(project_dir, project_dir / VARIABLES_FILE, variables, {base / k: v for k, v in cache.items()},
                mapping, command)


def write(plan: Plan) -> None:
    """Put the includes in gitlab-ci-local's cache and write the variables file."""
    for target, source in plan.includes.items():
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, target)
    plan.variables_file.write_text(
        "# Written by `gitlab-mci ci-local`: the project's scoped CI/CD variables, the simulator's endpoints and\n"
        "# the production environments' clusters. Rewritten on every run.\n"
        + yaml.safe_dump(plan.variables, sort_keys=False, default_flow_style=False))
