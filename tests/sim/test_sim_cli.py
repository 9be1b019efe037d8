"""`gitlab-mci sim`: start detached or in the foreground, point kubectl and gcloud at it, journal, faults, stop."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

GITLAB_MCI = [sys.executable, "-m", "gitlab_mci"]


def run(*args: str, env: dict[str, str] | None = None, check: bool = True,
        cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if k != "GITLAB_MCI_SIM_DIR"}  # not the runner's own simulator
    return subprocess.run(list(args), capture_output=True, text=True, env={**base, **(env or {})},
                          check=check, timeout=120, cwd=cwd)


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
    # The command it suggests stops that simulator, not one in the default state dir.
    assert f"stop it with `gitlab-mci sim down --state-dir {detached}`" in again.stderr


def test_after_eval_of_sim_env_status_and_down_find_that_simulator(tmp_path: Path) -> None:
    state, elsewhere = tmp_path / "shop-sim", tmp_path / "elsewhere"
    elsewhere.mkdir()
    up = run(*GITLAB_MCI, "sim", "up", "--detach", "--state-dir", str(state))
    assert f"stop it with `gitlab-mci sim down --state-dir {state}`" in up.stdout
    # eval "$(gitlab-mci sim env --state-dir …)", then the other sim commands without --state-dir, from anywhere.
    exported = run(*GITLAB_MCI, "sim", "env", "--state-dir", str(state)).stdout
    env = dict(re.findall(r"^export (\w+)=(.*)$", exported, re.M))
    assert env["GITLAB_MCI_SIM_DIR"] == str(state)
    try:
        status = run(*GITLAB_MCI, "sim", "status", env=env, cwd=elsewhere, check=False)
        assert status.returncode == 0 and "Compute Engine API" in status.stdout, status.stderr
        journal = run(*GITLAB_MCI, "sim", "journal", env=env, cwd=elsewhere, check=False)
        assert journal.returncode == 0, journal.stderr
    finally:
        down = run(*GITLAB_MCI, "sim", "down", env=env, cwd=elsewhere, check=False)
    assert down.returncode == 0 and down.stdout.startswith("simulator stopped (pid "), down.stderr
    assert not (state / "state.json").exists()
    # Nothing left to stop or to report on: both say so and exit non-zero (status: 3, "not running").
    again = run(*GITLAB_MCI, "sim", "down", env=env, cwd=elsewhere, check=False)
    assert again.returncode == 1 and again.stdout == ""
    assert again.stderr == f"gitlab-mci: error: no simulator is running with state dir {state}; nothing stopped\n"
    status = run(*GITLAB_MCI, "sim", "status", env=env, cwd=elsewhere, check=False)
    assert status.returncode == 3 and status.stderr.startswith("gitlab-mci: error: no simulator is running")


def test_the_default_state_dir_stays_out_of_git(tmp_path: Path) -> None:
    repo = tmp_path / "app"
    repo.mkdir()
    run("git", "init", "-q", str(repo))
    run(*GITLAB_MCI, "sim", "up", "--detach", cwd=repo)
    try:
        assert (repo / ".gitlab-mci" / "sim" / "state.json").exists()
        assert run("git", "status", "--porcelain", "--untracked-files=all", cwd=repo).stdout == ""
    finally:
        run(*GITLAB_MCI, "sim", "down", cwd=repo)
    # And in this repository, where the simulator is tried from the checkout.
    root = Path(__file__).resolve().parents[2]
    assert run("git", "check-ignore", "-q", ".gitlab-mci/sim/state.json", cwd=root, check=False).returncode == 0


def test_fault_add_and_list_print_text_or_json(detached: Path) -> None:
    where = ["--state-dir", str(detached)]
    added = run(*GITLAB_MCI, "sim", "fault", "add", "--service", "compute", "--method", "POST", "--path",
                "/global/addresses$", "--status", "503", "--times", "2", *where)
    assert added.stdout == ("fault added: answer 503 to POST requests to compute whose path matches "
                            "'/global/addresses$', every match, at most 2 times (matched 0, fired 0)\n")
    run(*GITLAB_MCI, "sim", "fault", "add", "--action", "latency", "--latency", "0.5", "--nth", "3", *where)
    listed = run(*GITLAB_MCI, "sim", "fault", "list", *where).stdout.splitlines()
    assert listed == [
        "1  answer 503 to POST requests to compute whose path matches '/global/addresses$', every match, "
        "at most 2 times (matched 0, fired 0)",
        "2  add 0.5s of latency to any request, on match 3 only (matched 0, fired 0)",
    ]
    rules = json.loads(run(*GITLAB_MCI, "sim", "fault", "list", "-o", "json", *where).stdout)
    assert [(r["action"], r["status"], r.get("times"), r["matched"]) for r in rules] == [("status", 503, 2, 0),
                                                                                   ("latency", 503, None, 0)]
    rule = json.loads(run(*GITLAB_MCI, "sim", "fault", "add", "--status", "429", "-o", "json", *where).stdout)
    assert rule["status"] == 429 and rule["service"] == "*"
    # A fault on every compute request does not lock the user out of clearing it.
    run(*GITLAB_MCI, "sim", "fault", "add", "--service", "compute", "--status", "500", *where)
    assert run(*GITLAB_MCI, "sim", "fault", "clear", *where).stdout == "faults cleared\n"
    assert run(*GITLAB_MCI, "sim", "fault", "list", *where).stdout == "no fault rules\n"


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
