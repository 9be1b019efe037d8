"""A private simulator of clusters in distinct zones, the app deployed to each on one node port, clients pointed at
it: for tests that need a cluster more (or fewer) than the shared two-cluster ``app_world``."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from gitlab_mci.sim.spec import parse_spec
from tests.conftest import RunningSim

ZONES = {"prod1": "us-central1-a", "prod2": "europe-west1-b", "prod3": "asia-east1-a"}


def app_clusters(make_sim: Callable[[Any], RunningSim], monkeypatch: pytest.MonkeyPatch,
                 names: tuple[str, ...] = ("prod1", "prod2", "prod3"), *, nodes: int = 2,
                 node_port: int = 30999) -> RunningSim:
    """``names`` (each in its zone of :data:`ZONES`) with ``nodes`` nodes each, the app on ``node_port``."""
    from tests.lb.test_discovery import deploy_app

    running = make_sim(parse_spec({"clusters": [{"name": n, "location": ZONES[n], "nodes": nodes} for n in names]}))
    for name in names:
        deploy_app(running, name, node_port)
    for key, value in running.env.items():
        monkeypatch.setenv(key, value)
    return running
