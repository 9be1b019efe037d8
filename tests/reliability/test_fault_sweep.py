"""Seeded fault sweep: transient errors (5 % of Compute calls) and failed operations (1 % of writes) on every
apply → destroy cycle; each cycle ends with nothing owned and the user's resources as they were."""

from __future__ import annotations

import random

import pytest

from gitlab_mci.sim.httpd import FaultRule
from tests.cli_helpers import run_cli as cli
from tests.conftest import RunningSim
from tests.reliability.conftest import APPLY, DESTROY, WRITE_METHODS, WRITE_PATHS, owned, unowned_snapshot

SCHEDULES = 100
BATCHES = 10  # parametrized so xdist spreads them
ATTEMPTS = 8  # a user re-runs a failed job; a run that failed half-way is completed by the next one


def _faults(seed: int) -> list[FaultRule]:
    rng = random.Random(seed)
    share = [0.02, 0.01, 0.01, 0.01]  # 503, 500, 429, 403 rateLimitExceeded: 5 % of Compute calls
    rules = [FaultRule(status=status, probability=p, seed=rng.randrange(2**32), service="compute",
                       reason="rateLimitExceeded" if status == 403 else None)
             for status, p in zip((503, 500, 429, 403), share, strict=True)]
    rules.append(FaultRule(action="operation_error", probability=0.01, seed=rng.randrange(2**32),
                           service="compute", method=WRITE_METHODS, path=WRITE_PATHS))
    return rules


def _until_ok(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    errors = []
    for attempt in range(1, ATTEMPTS + 1):
        code, _, err = cli(args, capsys)
        if code == 0:
            return attempt, ""
        assert len(err.strip().splitlines()) == 1, err  # even under faults: one line
        errors.append(err.strip())
    return ATTEMPTS + 1, " | ".join(errors)


@pytest.mark.parametrize("batch", range(BATCHES))
def test_apply_then_destroy_under_faults_leaves_nothing_and_touches_nothing_else(
        env: RunningSim, capsys: pytest.CaptureFixture[str], soak: int, batch: int) -> None:
    before = unowned_snapshot(env)
    fired = 0
    for schedule in range(batch * soak * SCHEDULES // BATCHES, (batch + 1) * soak * SCHEDULES // BATCHES):
        env.sim.faults.clear()
        for rule in _faults(schedule):
            env.sim.faults.add(rule)
        attempts, errors = _until_ok(APPLY, capsys)
        assert attempts <= ATTEMPTS, f"schedule {schedule}: apply never succeeded: {errors}"
        names = [r["name"] for r in owned(env)]
        assert len(names) == len(set(names)) == 7, f"schedule {schedule}: {sorted(names)}"
        attempts, errors = _until_ok(DESTROY, capsys)
        assert attempts <= ATTEMPTS, f"schedule {schedule}: destroy never succeeded: {errors}"
        fired += sum(r.fired for r in env.sim.faults.rules())
        env.sim.faults.clear()
        assert owned(env) == [], f"schedule {schedule}: left {[r['name'] for r in owned(env)]}"
        groups = env.sim.compute.resources("instanceGroups")
        assert all(not p["name"].startswith("gmci-") for g in groups for p in g.get("namedPorts", []))
        assert unowned_snapshot(env) == before, f"schedule {schedule} changed a resource it does not own"
    assert fired > 0  # the sweep injected faults (it would prove nothing otherwise)
