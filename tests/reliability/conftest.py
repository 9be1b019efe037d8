"""Shared world for the reliability suite: two small clusters with the app deployed, reset between schedules."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from typing import Any

import pytest

from gitlab_mci.sim.spec import parse_spec
from tests.conftest import RunningSim
from tests.lb.test_discovery import deploy_app

P = "demo-project"
LB = ["--lb", "shop", "--context", "prod1,prod2"]
APPLY = ["lb", "apply", *LB, "--service", "shop-auto-deploy", "--port", "web"]
DESTROY = ["lb", "destroy", *LB, "--release-ip"]
# Compute calls that change something (POST reads excluded: operation waits, getHealth, listInstances).
WRITE_METHODS = "POST|PUT|PATCH|DELETE"
WRITE_PATHS = r"^(?!.*/(wait|getHealth|listInstances)(\?|$))"


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--soak", action="store_true", default=False,
                     help="Reliability suite: ten times the seeded schedules (for manual runs; slow).")


@pytest.fixture(scope="session")
def soak(request: pytest.FixtureRequest) -> int:
    return 10 if request.config.getoption("--soak") else 1


def owned(running: RunningSim, lb: str = "shop") -> list[dict[str, Any]]:
    return [r for r in running.sim.compute.resources()
            if str(r.get("description", "")).startswith(f"gitlab-mci:lb={lb} ")]


def unowned_snapshot(running: RunningSim) -> dict[str, Any]:
    """Every resource gitlab-mci does not own, as JSON, minus what Compute recomputes (fingerprints, users)."""
    volatile = {"fingerprint", "labelFingerprint", "users", "usedBy", "status"}
    out: dict[str, Any] = {}
    for r in running.sim.compute.resources():
        if str(r.get("description", "")).startswith("gitlab-mci:"):
            continue
        # (An empty list and an absent field are the same resource: named ports removed leave `namedPorts: []`.)
        out[r["selfLink"]] = {k: v for k, v in copy.deepcopy(r).items() if k not in volatile and v != []}
    return out


@pytest.fixture(scope="module")
def rworld(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningSim]:
    """One small world per module (and xdist worker): prod1 and prod2, one zone and one node each."""
    from gitlab_mci.sim.runtime import Simulator

    spec = parse_spec({"clusters": [{"name": "prod1", "location": "us-central1-a", "nodes": 1},
                                    {"name": "prod2", "location": "europe-west1-b", "nodes": 1}]})
    sim = Simulator(spec).start()
    running = RunningSim(sim, sim.write_files(tmp_path_factory.mktemp("reliability")))
    for name in ("prod1", "prod2"):
        deploy_app(running, name, 30999)
    # A user's own resources, which no cycle may touch.
    sim.compute.seed("globalAddresses", {"name": "users-ip", "description": "mine"}, project=P)
    sim.compute.seed("firewalls", {"name": "users-fw", "network": f"projects/{P}/global/networks/default",
                                   "allowed": [{"IPProtocol": "tcp", "ports": ["22"]}],
                                   "sourceRanges": ["10.0.0.0/8"]}, project=P)
    from tests.pki import self_signed

    cert, key = self_signed("users.example.com")
    sim.compute.seed("sslCertificates", {"name": "users-cert", "description": "mine", "type": "SELF_MANAGED",
                                         "certificate": cert, "privateKey": key}, project=P)
    yield running
    sim.stop()


@pytest.fixture
def env(rworld: RunningSim, monkeypatch: pytest.MonkeyPatch) -> Iterator[RunningSim]:
    for key, value in rworld.env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("GITLAB_MCI_RETRY_BACKOFF", "0.01")  # retries are counted, not waited for
    rworld.sim.faults.clear()
    rworld.sim.journal.reset()
    yield rworld
    rworld.sim.faults.clear()
