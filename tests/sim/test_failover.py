"""Failover through the simulated load balancer, measured against the health check's own detection time.

After `gitlab-mci sim fail prod1`, requests are sent continuously. Google takes a backend out of rotation after
``unhealthyThreshold`` failed probes, ``checkIntervalSec`` apart; the first failed probe comes at most one interval
after the failure. So all traffic must be on prod2 within interval × unhealthy threshold + one interval (3 s with
interval 1 s and threshold 2) — plus EPSILON for thread scheduling and the requests' own round trips, nothing else
— and no request may fail from then on. Healing is measured the same way with the healthy threshold.
"""

from __future__ import annotations

import time

import pytest
import requests
from google.cloud import compute_v1

from gitlab_mci.gcp import Compute
from tests.cli_helpers import run_cli as cli
from tests.conftest import RunningSim
from tests.sim.test_dataplane import SHOP, P, vip
from tests.sim.test_dataplane import world as world  # the fixture

INTERVAL = 1
UNHEALTHY_THRESHOLD = 2
HEALTHY_THRESHOLD = 2
EPSILON = 0.5  # thread scheduling and request round trips on a loaded CI machine
PAUSE = 0.02  # between requests


def _who(url: str) -> str:
    try:
        answer = requests.get(url, timeout=2)
    except requests.RequestException:
        return "error"
    return str(answer.json()["cluster"]) if answer.status_code == 200 else "error"


def _observe(url: str, seconds: float, *, until: str | None = None, then: float = 0.5) -> list[tuple[float, str]]:
    """(seconds since start, answering cluster or "error") for requests sent during ``seconds`` (or until ``then``
    seconds after ``until`` first answered)."""
    started = time.monotonic()
    seen: list[tuple[float, str]] = []
    while (now := time.monotonic() - started) < seconds:
        seen.append((now, _who(url)))
        first = next((at for at, who in seen if who == until), None)
        if first is not None and now >= first + then:
            break
        time.sleep(PAUSE)
    return seen


def _settled_at(seen: list[tuple[float, str]], wanted: set[str]) -> float | None:
    """When the final unbroken run of answers from ``wanted`` began (None: the last answer is not one)."""
    start = None
    for at, who in seen:
        start = (at if start is None else start) if who in wanted else None
    return start


def test_failover_to_prod2_within_the_health_checks_detection_time_and_back_after_heal(
        world: RunningSim, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = cli(["lb", "apply", *SHOP, "--check-interval-sec", str(INTERVAL),
                        "--unhealthy-threshold", str(UNHEALTHY_THRESHOLD)], capsys)
    assert code == 0, err
    # The health check as Google would run it, with every value that matters here set through the real client.
    gc = Compute(P, world.sim.compute_url)
    checks = gc.client(compute_v1.HealthChecksClient)
    hc = checks.get(project=P, health_check="gmci-hc-shop-30999")
    assert (hc.check_interval_sec, hc.unhealthy_threshold) == (INTERVAL, UNHEALTHY_THRESHOLD)
    gc.wait(checks.patch(project=P, health_check=hc.name, health_check_resource=compute_v1.HealthCheck(
        healthy_threshold=HEALTHY_THRESHOLD, timeout_sec=INTERVAL)))
    assert world.sim.dataplane.wait_health("HEALTHY", timeout=5)
    url = world.sim.dataplane.url_for(vip(world), 80)
    before = _observe(url, 0.3)
    assert {who for _, who in before} == {"prod1", "prod2"}

    detection = INTERVAL * UNHEALTHY_THRESHOLD + INTERVAL
    code, out, _ = cli(["sim", "fail", "prod1", "--state-dir", str(world.files.state_dir)], capsys)
    assert code == 0, out
    seen = _observe(url, detection + 1.5)  # past the deadline, to see that no request fails afterwards
    switched = _settled_at(seen, {"prod2"})
    assert switched is not None, seen[-5:]
    with capsys.disabled():  # the measurement, for the record (pytest -s shows it)
        print(f"\nfailover: 100 % on prod2 after {switched:.2f}s (limit {detection}s + {EPSILON}s); "
              f"{sum(w == 'error' for _, w in seen)} failed request(s) before that, {len(seen)} requests in all")
    assert switched <= detection + EPSILON, f"traffic left prod1 after {switched:.2f}s"
    after = [who for at, who in seen if at >= switched]
    assert set(after) == {"prod2"} and len(after) >= 1.5 / (PAUSE + 0.05)  # many requests, every one on prod2

    code, _, _ = cli(["sim", "heal", "prod1", "--state-dir", str(world.files.state_dir)], capsys)
    assert code == 0
    back = _observe(url, INTERVAL * HEALTHY_THRESHOLD + INTERVAL + EPSILON, until="prod1")
    returned = next((at for at, who in back if who == "prod1"), None)
    with capsys.disabled():
        print(f"heal: prod1 answers again after {returned or 0:.2f}s")
    assert returned is not None and returned <= INTERVAL * HEALTHY_THRESHOLD + INTERVAL + EPSILON
    assert "error" not in {who for _, who in back}  # coming back never breaks a request
    assert {who for at, who in back if at >= returned} == {"prod1", "prod2"}
