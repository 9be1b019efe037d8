"""`gitlab-mci ci-local`: a user's own project, prepared by the command, runs its pipeline with gitlab-ci-local.

The end-to-end test builds a project the way a user has one (a git checkout with an origin remote and a
.gitlab-ci.yml that includes Auto DevOps and the template), with no scoped-variables file of its own beyond
STAGING_ENABLED and its staging environment, and runs exactly the command `gitlab-mci ci-local` prints.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from gitlab_mci import cilocal
from gitlab_mci.errors import UserError
from tests.ci.test_gitlab_ci_local import EXAMPLE, GCL, _missing, results

VENV_BIN = Path(sys.executable).parent
CI = """include:
  - template: Auto-DevOps.gitlab-ci.yml
  - project: platform/gitlab-mci
    ref: v0.1.0
    file: /ci-templates/mci.gitlab-ci.yml
    inputs:
      environments: [eu, us]
      lb_name: cart
      release: cart
"""


def _git_project(path: Path, ci: str, remote: str = "git@gitlab.internal:shop/cart.git") -> Path:
    path.mkdir(parents=True)
    (path / ".gitlab-ci.yml").write_text(ci)
    shutil.copy(EXAMPLE / "Dockerfile", path / "Dockerfile")
    for args in (["init", "-q", "-b", "main"], ["remote", "add", "origin", remote], ["add", "-A"],
                 ["-c", "user.name=u", "-c", "user.email=u@example.com", "commit", "-qm", "cart"],
                 ["update-ref", "refs/remotes/origin/main", "HEAD"],
                 ["symbolic-ref", "refs/remotes/origin/HEAD", "refs/remotes/origin/main"]):
        subprocess.run(["git", "-C", str(path), *args], check=True)
    return path


@pytest.fixture
def sim(tmp_path: Path) -> Iterator[Path]:
    state = tmp_path / "sim"
    env = {**os.environ, "PATH": f"{VENV_BIN}:{os.environ['PATH']}"}
    subprocess.run([str(VENV_BIN / "gitlab-mci"), "sim", "up", "--detach", "--spec",
                    str(EXAMPLE / "local" / "sim-spec.yaml"), "--state-dir", str(state)], env=env, check=True,
                   capture_output=True)
    yield state
    subprocess.run([str(VENV_BIN / "gitlab-mci"), "sim", "down", "--state-dir", str(state)], env=env,
                   capture_output=True)


def _ci_local(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(VENV_BIN / "gitlab-mci"), "ci-local", *args], capture_output=True, text=True)


def test_own_project_pipeline_runs_with_the_printed_gitlab_ci_local_command(tmp_path: Path, sim: Path) -> None:
    reason = _missing()
    if reason:
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)
    project = _git_project(tmp_path / "cart", CI)
    variables = tmp_path / "vars.yml"  # staging on, in its own namespace of the eu cluster
    variables.write_text('STAGING_ENABLED: "true"\nKUBE_CONTEXT:\n  values:\n    staging: prod1\n'
                         "KUBE_NAMESPACE:\n  values:\n    staging: cart-staging\n"
                         "KUBE_INGRESS_BASE_DOMAIN:\n  values:\n    staging: staging.example.com\n")
    proc = _ci_local("--project-dir", str(project), "--state-dir", str(sim), "--variables", str(variables),
                     "--gitlab-ci-local", str(GCL))
    assert proc.returncode == 0, proc.stderr
    assert "environment eu: context prod1\nenvironment us: context prod2\n" in proc.stdout
    line = proc.stdout.splitlines()[-1].strip()
    assert line == (f"cd {project} && {GCL} --force-shell-executor "
                    "--manual 'production_manual: [eu]' --manual 'production_manual: [us]'")
    env = {**os.environ, "PATH": f"{VENV_BIN}:{os.environ['PATH']}"}
    env.pop("GITLAB_MCI_SIM_DIR", None)
    run = subprocess.run(["bash", "-c", line + " --no-color"], env=env, capture_output=True, text=True, timeout=240)
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-2000:]
    ran = results(run.stdout)
    for job in ("mci-check-staging", "staging", "production_manual: [eu]", "production_manual: [us]",
                "mci-pin: [eu]", "mci-pin: [us]", "mci-lb", "mci-status"):
        assert ran[job] == "PASS", job
    sim_env = dict(line.split("=", 1) for line in (sim / "sim.env").read_text().splitlines())
    for context in ("prod1", "prod2"):
        svc = json.loads(subprocess.run(
            ["kubectl", "--context", context, "get", "service", "cart-auto-deploy", "-n", "cart", "-o", "json"],
            env={**env, **sim_env}, capture_output=True, text=True, check=True).stdout)
        assert (svc["spec"]["type"], svc["spec"]["ports"][0]["nodePort"]) == ("NodePort", 30999)


def test_command_refuses_a_project_without_the_template_and_writes_nothing(tmp_path: Path, sim: Path) -> None:
    project = _git_project(tmp_path / "plain", "include:\n  - template: Auto-DevOps.gitlab-ci.yml\n")
    proc = _ci_local("--project-dir", str(project), "--state-dir", str(sim))
    assert proc.returncode == 1
    assert proc.stderr.startswith("gitlab-mci: error: ") and "does not include the gitlab-mci template" in proc.stderr
    assert len(proc.stderr.splitlines()) == 1
    assert not (project / ".gitlab-ci-local-variables.yml").exists()
    assert not (project / ".gitlab-ci-local").exists()


def test_command_without_a_running_simulator_says_how_to_start_one(tmp_path: Path) -> None:
    project = _git_project(tmp_path / "cart", CI)
    proc = _ci_local("--project-dir", str(project), "--state-dir", str(tmp_path / "nosim"))
    assert proc.returncode == 1 and "gitlab-mci sim up --detach" in proc.stderr


def test_bad_context_option_is_a_one_line_error(tmp_path: Path) -> None:
    proc = _ci_local("--project-dir", str(tmp_path), "--context", "eu")
    assert proc.returncode == 1 and "expected ENVIRONMENT=CONTEXT" in proc.stderr


@pytest.mark.parametrize(("include", "expected"), [
    ({"project": "platform/gitlab-mci", "ref": "v1", "file": "/ci-templates/mci.gitlab-ci.yml"},
     "gitlab.internal/platform/gitlab-mci/v1/ci-templates/mci.gitlab-ci.yml"),
    ({"project": "platform/gitlab-mci", "file": "/ci-templates/mci.gitlab-ci.yml"},
     "gitlab.internal/platform/gitlab-mci/HEAD/ci-templates/mci.gitlab-ci.yml"),
    ({"component": "$CI_SERVER_FQDN/platform/gitlab-mci/mci@0.1.0"},
     "gitlab.internal/platform/gitlab-mci/0.1.0/templates/mci.yml"),
])
def test_the_template_include_is_cached_where_gitlab_ci_local_looks(include: dict[str, Any], expected: str) -> None:
    data = {"include": [{"template": "Auto-DevOps.gitlab-ci.yml"}, include]}
    cache = cilocal.include_cache(data, "gitlab.internal", Path("t.yml"), Path("ad.yml"))
    assert cache == {Path(expected): Path("t.yml"), Path(cilocal.TEMPLATE_CACHE) / cilocal.AUTO_DEVOPS: Path("ad.yml")}


def test_environments_map_to_clusters_by_name_then_in_order() -> None:
    assert cilocal.map_environments(["prod2", "eu"], ["prod1", "prod2"], {}) == {"prod2": "prod2", "eu": "prod1"}
    assert cilocal.map_environments(["eu"], ["prod1", "prod2"], {"eu": "prod2"}) == {"eu": "prod2"}
    with pytest.raises(UserError, match="no simulated cluster left"):
        cilocal.map_environments(["a", "b", "c"], ["prod1", "prod2"], {})
    with pytest.raises(UserError, match="does not deploy"):
        cilocal.map_environments(["eu"], ["prod1"], {"us": "prod1"})


def test_the_projects_own_scoped_values_win(tmp_path: Path) -> None:
    variables: dict[str, Any] = {"KUBE_NAMESPACE": "everywhere", "KUBE_CONTEXT": {"values": {"eu": "mine"}}}
    cilocal._scoped(variables, "KUBE_NAMESPACE", "eu", "cart")
    cilocal._scoped(variables, "KUBE_CONTEXT", "eu", "prod1")
    cilocal._scoped(variables, "KUBE_CONTEXT", "us", "prod2")
    assert variables == {"KUBE_NAMESPACE": "everywhere", "KUBE_CONTEXT": {"values": {"eu": "mine", "us": "prod2"}}}


def test_help_follows_the_cli_grammar() -> None:
    out = subprocess.run([str(VENV_BIN / "gitlab-mci"), "ci-local", "--help"], capture_output=True, text=True,
                         check=True).stdout
    assert "-o, --output [text|json]" in out and "--variables FILE" in out
