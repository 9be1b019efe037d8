"""Two applies of the same load balancer at once (two CI jobs without a resource group) agree."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.cli_helpers import run_cli as cli
from tests.conftest import RunningSim
from tests.reliability.conftest import APPLY, DESTROY, owned


def test_two_concurrent_applies_both_succeed_and_leave_one_consistent_load_balancer(
        env: RunningSim, capsys: pytest.CaptureFixture[str]) -> None:
    child_env = {**os.environ, **env.env}
    procs = [subprocess.Popen([sys.executable, "-m", "gitlab_mci", *APPLY], env=child_env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(2)]
    results = [p.communicate(timeout=120) for p in procs]
    for proc, (out, err) in zip(procs, results, strict=True):
        # Each finds the other's creations: ours (same marker) are accepted, not errors.
        assert proc.returncode == 0, out + err
    names = sorted(r["name"] for r in owned(env))
    assert names == ["gmci-bs-shop-30999", "gmci-fr-shop-http", "gmci-fw-shop", "gmci-hc-shop-30999",
                     "gmci-hp-shop", "gmci-ip-shop", "gmci-um-shop"]
    groups = env.sim.compute.resources("instanceGroups")
    assert all([p["name"] for p in g["namedPorts"]] == ["gmci-30999-shop"] for g in groups)
    env.sim.journal.reset()
    code, out, _ = cli(APPLY, capsys)
    assert code == 0 and "No changes" in out and env.sim.journal.writes() == []
    assert cli(DESTROY, capsys)[0] == 0 and owned(env) == []


def test_two_concurrent_destroys_both_succeed(env: RunningSim, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli(APPLY, capsys)[0] == 0
    child_env = {**os.environ, **env.env}
    procs = [subprocess.Popen([sys.executable, "-m", "gitlab_mci", *DESTROY], env=child_env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    for proc in procs:
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, out + err
    assert owned(env) == []
