"""The data plane during a kubemci chain's migration: TEST_BY_PERCENTAGE splits requests between Google's classic
and managed front ends (the simulator-only header ``x-gitlab-mci-sim-path`` says which), and no request fails while
the states step with traffic flowing."""

from __future__ import annotations

import json
import math
import threading
import time
import urllib.error
import urllib.request
from collections import Counter

from gitlab_mci.sim.dataplane import PATH_HEADER
from tests.conftest import RunningSim
from tests.sim.classic_chain import kubemci_chain, patch_backend_service, patch_rule, routed


def _get(url: str) -> tuple[int, str, str]:
    """(status, path header, cluster) of one request; a refused or failed one is status 0 or its HTTP status."""
    try:
        with urllib.request.urlopen(url + "/", timeout=5) as resp:
            return resp.status, resp.headers.get(PATH_HEADER, ""), json.loads(resp.read())["cluster"]
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers.get(PATH_HEADER, ""), ""
    except OSError:
        return 0, "", ""


def _chain_serving(running: RunningSim) -> str:
    built = kubemci_chain(running, static_ip="web-ip")
    assert running.sim.dataplane.wait_health("HEALTHY", timeout=10)
    return running.sim.dataplane.url_for(built.vip, 80)


def _within_five_sigma(count: int, n: int, percent: float) -> None:
    """The managed count is Binomial(n, p): 5 standard deviations either side (a false alarm once in ~1.7 million
    runs, and the seeded draws make each run the same anyway)."""
    p = percent / 100.0
    mean, sigma = n * p, math.sqrt(n * p * (1 - p))
    assert abs(count - mean) <= 5 * sigma, f"{count} of {n} managed at {percent}% (mean {mean}, sigma {sigma:.2f})"


def test_test_by_percentage_sends_about_that_share_of_a_classic_chains_requests_to_the_managed_path(
        app_world: RunningSim) -> None:
    url = _chain_serving(app_world)
    assert {_get(url)[1] for _ in range(20)} == {"classic"}, "before the migration: all classic"
    patch_backend_service(app_world, external_managed_migration_state="PREPARE")
    routed(app_world, externalManagedMigrationState="PREPARE")
    assert {_get(url)[1] for _ in range(20)} == {"classic"}, "PREPARE moves no traffic"
    n = 400
    for percent in (10.0, 30.0, 75.0):
        patch_backend_service(app_world, external_managed_migration_state="TEST_BY_PERCENTAGE",
                              external_managed_migration_testing_percentage=percent)
        routed(app_world, externalManagedMigrationState="TEST_BY_PERCENTAGE",
               externalManagedMigrationTestingPercentage=percent)
        app_world.sim.dataplane.reseed(int(percent))
        answers = [_get(url) for _ in range(n)]
        assert {status for status, _, _ in answers} == {200}
        paths = Counter(path for _, path, _ in answers)
        assert set(paths) <= {"classic", "managed"} and sum(paths.values()) == n
        _within_five_sigma(paths["managed"], n, percent)
        assert {cluster for _, _, cluster in answers} == {"prod1", "prod2"}, "both clusters serve on both paths"
    patch_backend_service(app_world, external_managed_migration_state="TEST_ALL_TRAFFIC")
    routed(app_world, externalManagedMigrationState="TEST_ALL_TRAFFIC")
    assert {_get(url)[1] for _ in range(50)} == {"managed"}
    patch_backend_service(app_world, load_balancing_scheme="EXTERNAL_MANAGED")
    routed(app_world, loadBalancingScheme="EXTERNAL_MANAGED", externalManagedMigrationState=None)
    assert {_get(url)[1] for _ in range(50)} == {"managed"}, "after the scheme change: all managed"


def test_no_request_fails_while_a_classic_chain_migrates_with_traffic_flowing(app_world: RunningSim) -> None:
    url = _chain_serving(app_world)
    results: list[tuple[int, str, str]] = []
    stop = threading.Event()

    def traffic() -> None:
        while not stop.is_set():
            results.append(_get(url))

    sender = threading.Thread(target=traffic, daemon=True)
    started = time.monotonic()
    sender.start()
    try:
        # Each step, then its state as the data plane routes it, then 30 requests served in that state.
        steps: list[tuple[dict[str, object], dict[str, object]]] = [
            ({"external_managed_migration_state": "PREPARE"}, {"externalManagedMigrationState": "PREPARE"}),
            ({"external_managed_migration_state": "TEST_BY_PERCENTAGE",
              "external_managed_migration_testing_percentage": 10.0},
             {"externalManagedMigrationState": "TEST_BY_PERCENTAGE", "externalManagedMigrationTestingPercentage": 10}),
            ({"external_managed_migration_testing_percentage": 50.0},
             {"externalManagedMigrationTestingPercentage": 50}),
            ({"external_managed_migration_state": "TEST_ALL_TRAFFIC"},
             {"externalManagedMigrationState": "TEST_ALL_TRAFFIC"}),
            ({"load_balancing_scheme": "EXTERNAL_MANAGED"}, {"loadBalancingScheme": "EXTERNAL_MANAGED"}),
        ]
        for step, seen in steps:
            patch_backend_service(app_world, **step)
            routed(app_world, **seen)
            before = len(results)
            while len(results) < before + 30:
                time.sleep(0.01)
        patch_rule(app_world, load_balancing_scheme="EXTERNAL_MANAGED")
        before = len(results)
        while len(results) < before + 30:
            time.sleep(0.01)
    finally:
        stop.set()
        sender.join(timeout=10)
    elapsed = time.monotonic() - started
    failed = [r for r in results if r[0] != 200]
    print(f"{len(results)} requests in {elapsed:.1f}s, {len(failed)} failed")
    assert not failed, failed[:5]
    paths = [path for _, path, _ in results]
    assert paths[0] == "classic" and paths[-1] == "managed" and set(paths) == {"classic", "managed"}
