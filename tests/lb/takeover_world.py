"""A user's running kubemci chain (the recipe's: static IP `web-ip`, optional certificate) in a private simulator,
and `lb takeover` run against it in-process."""

from __future__ import annotations

from typing import Any

import pytest

from gitlab_mci.sim.kubemci import Built, KubemciSpec, build
from tests.cli_helpers import run_cli
from tests.conftest import RunningSim

P = "demo-project"
ROUTING = ["--service", "shop-auto-deploy", "--port", "web"]
FAST = ["--check-interval-sec", "1", "--timeout", "60"]


def kubemci(running: RunningSim, clusters: tuple[str, ...] = ("prod1", "prod2"), **kwargs: Any) -> Built:
    """`kubemci create shop` over ``clusters`` on the static IP web-ip (the app on node port 30999)."""
    spec = KubemciSpec("shop", clusters, static_ip="web-ip", **kwargs)
    built = build(running.sim.compute_url, P, {c: running.sim.kube_url(c) for c in spec.clusters}, spec)
    assert running.sim.dataplane.wait_health("HEALTHY", timeout=20)
    return built


def takeover(capsys: pytest.CaptureFixture[str], contexts: str = "prod1,prod2", *extra: str,
             address: str = "web-ip") -> tuple[int, str, str]:
    return run_cli(["lb", "takeover", "--lb", "shop", "--context", contexts, "--address", address, *ROUTING,
                    *FAST, *extra], capsys)


def writes(running: RunningSim) -> int:
    return len(running.sim.journal.writes("compute"))
