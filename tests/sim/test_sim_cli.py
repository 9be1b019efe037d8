"""`gitlab-mci sim`: start detached or in the foreground, point kubectl and gcloud at it, journal, faults, stop."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

GITLAB_MCI = [sys.executable, "-m", "gitlab_mci"]


def run(*args: str, env: dict[str, str] | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(args), capture_output=True, text=True, env={**os.environ, **(env or {})},
                          check=check, timeout=120)


def env_from(state_dir: Path) -> dict[str, str]:
    lines = (state_dir / "sim.env").read_text().splitlines()
    return dict(line.split("=", 1) for line in lines if line)


@pytest.fixture
def detached(tmp_path: Path):
    state = tmp_path / "state"
    out = run(*GITLAB_MCI, "sim", "up", "--detach", "--state-dir", str(state))
    assert "GKE cluster prod1" in out.stdout and "running in the background" in out.stdout
    yield state
    run(*GITLAB_MCI, "sim", "down", "--state-dir", str(state))


def test_detached_simulator_serves_kubectl_and_gcloud_and_records_requests(detached: Path) -> None:
    env = env_from(detached)
    nodes = run("kubectl", "--context", "prod2", "get", "nodes", "-o", "json", env=env)
    items = json.loads(nodes.stdout)["items"]
    assert len(items) == 3
    assert all(i["spec"]["providerID"].startswith("gce://demo-project/europe-west1-b/") for i in items)

    run("gcloud", "compute", "addresses", "create", "cli-ip", "--global", "--quiet", env=env)
    listed = run("gcloud", "compute", "addresses", "list", "--format=json", env=env)
    assert [a["name"] for a in json.loads(listed.stdout)] == ["cli-ip"]

    journal = run(*GITLAB_MCI, "sim", "journal", "--writes", "-o", "json", "--state-dir", str(detached))
    writes = json.loads(journal.stdout)
    assert any(w["method"] == "POST" and w["path"].split("?")[0].endswith("/global/addresses") for w in writes)

    run(*GITLAB_MCI, "sim", "fault", "add", "--service", "compute", "--path", "/global/addresses",
        "--status", "503", "--state-dir", str(detached))
    failed = run("gcloud", "compute", "addresses", "describe", "cli-ip", "--global", env=env, check=False)
    assert failed.returncode != 0
    run(*GITLAB_MCI, "sim", "fault", "clear", "--state-dir", str(detached))
    run("gcloud", "compute", "addresses", "describe", "cli-ip", "--global", env=env)

    status = json.loads(run(*GITLAB_MCI, "sim", "status", "-o", "json", "--state-dir", str(detached)).stdout)
    assert set(status["clusters"]) == {"prod1", "prod2"}


def test_second_up_with_same_state_dir_is_refused(detached: Path) -> None:
    again = run(*GITLAB_MCI, "sim", "up", "--detach", "--state-dir", str(detached), check=False)
    assert again.returncode == 1
    assert again.stderr.strip().startswith("gitlab-mci: error: a simulator is already running")
    assert len(again.stderr.strip().splitlines()) == 1


def test_foreground_simulator_stops_cleanly_on_interrupt(tmp_path: Path) -> None:
    state = tmp_path / "fg"
    proc = subprocess.Popen([*GITLAB_MCI, "sim", "up", "--state-dir", str(state)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 30
    while not (state / "state.json").exists():
        assert proc.poll() is None and time.monotonic() < deadline
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=20)
    assert proc.returncode == 0, err
    assert "Compute Engine API" in out and "simulator stopped" in err
    assert not (state / "state.json").exists()


def test_bad_spec_is_one_line_and_starts_nothing(tmp_path: Path) -> None:
    spec = tmp_path / "world.yaml"
    spec.write_text("clusters:\n  - name: Prod_1\n")
    result = run(*GITLAB_MCI, "sim", "up", "--detach", "--spec", str(spec), "--state-dir", str(tmp_path / "s"),
                 check=False)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        f"gitlab-mci: error: {spec}: clusters[0].name: must be a lowercase RFC 1035 name of at most 40 characters"
    ]
    assert not (tmp_path / "s").exists()


def test_commands_on_a_stopped_simulator_say_so(tmp_path: Path) -> None:
    result = run(*GITLAB_MCI, "sim", "journal", "--state-dir", str(tmp_path), check=False)
    assert result.returncode == 1
    assert "no simulator is running" in result.stderr
