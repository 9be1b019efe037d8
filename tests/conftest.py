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
