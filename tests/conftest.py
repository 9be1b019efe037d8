"""Shared fixtures: one simulator per test session (cheap to share, reset between tests) and fresh ones on demand."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from gitlab_mci.sim.runtime import SimFiles, Simulator
from gitlab_mci.sim.spec import WorldSpec, load_spec

pytest_plugins = ["tests.kube_fixtures"]


class RunningSim:
    """A started simulator plus the files that point clients at it."""

    def __init__(self, sim: Simulator, files: SimFiles) -> None:
        self.sim = sim
        self.files = files

    @property
    def env(self) -> dict[str, str]:
        return self.sim.env(self.files)


def _start(spec: WorldSpec, state_dir: Path) -> RunningSim:
    sim = Simulator(spec).start()
    return RunningSim(sim, sim.write_files(state_dir))


@pytest.fixture(scope="session")
def shared_sim(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningSim]:
    """The default two-cluster world, started once. Tests must not leave resources or faults behind."""
    running = _start(load_spec(None), tmp_path_factory.mktemp("shared-sim"))
    yield running
    running.sim.stop()


@pytest.fixture
def sim(shared_sim: RunningSim) -> Iterator[RunningSim]:
    """The shared simulator with a clean journal and no faults."""
    shared_sim.sim.journal.reset()
    shared_sim.sim.faults.clear()
    yield shared_sim
    shared_sim.sim.faults.clear()


@pytest.fixture
def make_sim(tmp_path: Path) -> Iterator[Callable[[WorldSpec], RunningSim]]:
    """Start a private simulator from a spec; stopped after the test."""
    started: list[RunningSim] = []

    def factory(spec: WorldSpec) -> RunningSim:
        running = _start(spec, tmp_path / f"sim{len(started)}")
        started.append(running)
        return running

    yield factory
    for running in started:
        running.sim.stop()



@pytest.fixture
def make_app_world(make_sim: Callable[[WorldSpec], RunningSim],
                   monkeypatch: pytest.MonkeyPatch) -> Callable[..., RunningSim]:
    """A private prod1 (us-central1-a) + prod2 (europe-west1-b) world with the app deployed on node port 30999 in
    both, the environment pointing clients at it, and a clean journal; nodes per cluster as asked."""
    from gitlab_mci.sim.spec import parse_spec
    from tests.lb.test_discovery import deploy_app

    def factory(prod1_nodes: int = 3, prod2_nodes: int = 3) -> RunningSim:
        running = make_sim(parse_spec({"clusters": [
            {"name": "prod1", "location": "us-central1-a", "nodes": prod1_nodes},
            {"name": "prod2", "location": "europe-west1-b", "nodes": prod2_nodes}]}))
        for name in ("prod1", "prod2"):
            deploy_app(running, name, 30999)
        for key, value in running.env.items():
            monkeypatch.setenv(key, value)
        running.sim.journal.reset()
        return running

    return factory


@pytest.fixture
def app_world(make_app_world: Callable[..., RunningSim]) -> RunningSim:
    """The default app world (three nodes per cluster)."""
    return make_app_world()
