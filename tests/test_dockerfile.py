"""The job image's rules, checked by reading the Dockerfile (there is no Docker engine here) and its inputs."""

from __future__ import annotations

import importlib.util
import json
import re
import subprocess
import sys
import tomllib
from pathlib import Path
from types import ModuleType

import pytest
from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parent.parent
TEST_ONLY = {"pytest", "pytest-xdist", "ruff", "mypy", "types-pyyaml", "types-requests", "check-jsonschema",
             "kubernetes-validate", "google-api-python-client", "gitlab-mci"}


def instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, with comments dropped and continuation lines joined."""
    out: list[tuple[str, str]] = []
    pending = ""
    for line in path.read_text().splitlines():
        stripped = line.strip()
        if not pending and (not stripped or stripped.startswith("#")):
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        full = (pending + stripped).strip()
        pending = ""
        keyword, _, args = full.partition(" ")
        out.append((keyword.upper(), " ".join(args.split())))
    return out


def stages(instrs: list[tuple[str, str]]) -> list[list[tuple[str, str]]]:
    result: list[list[tuple[str, str]]] = []
    for ins in instrs:
        if ins[0] == "FROM":
            result.append([])
        if result:
            result[-1].append(ins)
    return result


def freeze_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("freeze_constraints", ROOT / ".ci" / "freeze_constraints.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def dockerfile() -> list[tuple[str, str]]:
    return instructions(ROOT / "Dockerfile")


def test_base_images_are_pinned(dockerfile: list[tuple[str, str]]) -> None:
    args = dict(a.split("=", 1) for k, a in dockerfile if k == "ARG" and "=" in a)
    froms = [a.split()[0] for k, a in dockerfile if k == "FROM"]
    assert len(froms) >= 2, "a build stage and a slim runtime stage"
    for image in froms:
        resolved = re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], image)
        tag = resolved.partition(":")[2]
        assert "@sha256:" in resolved or re.match(r"\d+\.\d+\.\d+-", tag), f"unpinned base image {resolved}"
        assert "slim" in tag or "@sha256:" in resolved


def test_runtime_stage_runs_as_non_root_without_entrypoint(dockerfile: list[tuple[str, str]]) -> None:
    final = stages(dockerfile)[-1]
    users = [a for k, a in final if k == "USER"]
    assert users, "the runtime stage must set USER"
    user = users[-1].split(":")[0]
    assert user not in ("root", "0")
    created = " ".join(a for k, a in final if k == "RUN")
    assert re.search(rf"useradd .*\b{user}\b", created), "the USER must be created in the image"
    entrypoints = [a for k, a in final if k == "ENTRYPOINT"]
    assert entrypoints in ([], ["[]"])
    assert json.loads([a for k, a in final if k == "CMD"][-1]) == ["gitlab-mci", "--help"]


def test_no_test_extras_and_no_compilers(dockerfile: list[tuple[str, str]]) -> None:
    runs = [a for k, a in dockerfile if k == "RUN"]
    for run in runs:
        assert not re.search(r"\.\[[^\]]*\]", run), f"installs extras: {run}"
        assert not re.search(r"\b(gcc|g\+\+|build-essential|clang|make)\b", run), f"installs a compiler: {run}"
    pip_installs = [r for r in runs if "pip install" in r]
    assert any("--only-binary=:all:" in r and "constraints.txt" in r for r in pip_installs)
    assert any("--no-deps" in r and r.rstrip().split("&&")[0].strip().endswith(" .") for r in pip_installs)
    final = stages(dockerfile)[-1]
    # The runtime stage only copies the finished environment in: nothing is built there.
    assert not [a for k, a in final if k == "RUN" and "pip" in a]
    assert any(k == "COPY" and a.startswith("--from=build") for k, a in final)


def test_constraints_pin_exactly_the_runtime_closure() -> None:
    pins: dict[str, str] = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            assert re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*==[A-Za-z0-9.+!-]+", line), f"not pinned with ==: {line}"
            name, version = line.split("==")
            pins[name.lower()] = version
    assert not TEST_ONLY & set(pins), TEST_ONLY & set(pins)
    freeze = freeze_module()
    missing = set(freeze.closure(freeze.runtime_requirements())) - set(pins)
    assert not missing, f"constraints.txt lacks {sorted(missing)}: run .venv/bin/python .ci/freeze_constraints.py"
    for raw in tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]:
        req = Requirement(raw)
        name = freeze.canonical(req.name)
        assert req.specifier.contains(pins[name], prereleases=True), f"{name}=={pins[name]} violates {raw}"


def test_dockerignore_keeps_the_context_small() -> None:
    lines = [ln.strip() for ln in (ROOT / ".dockerignore").read_text().splitlines()
             if ln.strip() and not ln.startswith("#")]
    assert lines[0] == "*", "allow-list: exclude everything, then re-include"
    allowed = {ln[1:].rstrip("/") for ln in lines if ln.startswith("!")}
    copied: set[str] = set()
    for keyword, args in instructions(ROOT / "Dockerfile"):
        if keyword == "COPY" and not args.startswith("--from"):
            copied.update(p.rstrip("/") for p in args.split()[:-1])
    assert copied <= allowed, f"COPY of files the context excludes: {copied - allowed}"
    assert not allowed & {".venv", "tests", ".git", ".gitlab-mci", "bench"}


def test_own_pipeline_is_valid_gitlab_ci() -> None:
    proc = subprocess.run([sys.executable, "-m", "check_jsonschema", "--builtin-schema", "vendor.gitlab-ci",
                           str(ROOT / ".gitlab-ci.yml")], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    text = (ROOT / ".gitlab-ci.yml").read_text()
    assert "bash .ci/run" in text and "$CI_COMMIT_TAG" in text and "docker build" in text
