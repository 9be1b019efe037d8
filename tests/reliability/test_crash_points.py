"""Crash-point sweep: an apply that stops after its k-th write, for every k, then a second apply → the same load
balancer as a clean apply.

"Stops" is simulated at the API: from the (k+1)-th write on, Compute refuses every write (HTTP 400, not retried),
as if the job had been killed; reads still answer, so the first apply ends with its in-flight work and an error.
"""

from __future__ import annotations

from typing import Any

import pytest

from gitlab_mci.sim.httpd import FaultRule
from tests.cli_helpers import run_cli as cli
from tests.conftest import RunningSim
from tests.reliability.conftest import APPLY, DESTROY, WRITE_METHODS, WRITE_PATHS, owned

# Allocated addresses differ between runs; that the rule uses the address is checked on its own.
_VOLATILE = {"id", "creationTimestamp", "fingerprint", "labelFingerprint", "selfLink", "users", "usedBy", "kind",
             "status", "region", "address", "IPAddress"}


def state(running: RunningSim) -> dict[str, Any]:
    """The load balancer as a comparable value: owned resources and our named ports, without ids and stamps."""
    result: dict[str, Any] = {
        r["name"]: {k: v for k, v in r.items() if k not in _VOLATILE} for r in owned(running)}
    for g in running.sim.compute.resources("instanceGroups"):
        result[f"namedPorts/{g['name']}"] = sorted((p["name"], p["port"]) for p in g.get("namedPorts", []))
    return result


def _writes(running: RunningSim) -> int:
    return len([e for e in running.sim.journal.writes("compute")])


@pytest.fixture
def clean(env: RunningSim, capsys: pytest.CaptureFixture[str]) -> tuple[dict[str, Any], int]:
    """A clean apply's final state and its number of write calls; then everything destroyed again."""
    env.sim.journal.reset()
    assert cli(APPLY, capsys)[0] == 0
    writes = _writes(env)
    snapshot = state(env)
    assert cli(DESTROY, capsys)[0] == 0
    return snapshot, writes


def test_an_apply_stopped_after_any_write_is_completed_by_the_next(
        env: RunningSim, clean: tuple[dict[str, Any], int], capsys: pytest.CaptureFixture[str]) -> None:
    want, total = clean
    assert total >= 9  # address, firewall, health check, named ports ×2, backend service, URL map, proxy, rule
    for k in range(total):
        env.sim.faults.clear()
        env.sim.faults.add(FaultRule(status=400, service="compute", method=WRITE_METHODS, path=WRITE_PATHS,
                                     nth=k + 1, onward=True))
        code, _, err = cli(APPLY, capsys)
        assert code == 1 and len(err.strip().splitlines()) == 1, (k, err)
        env.sim.faults.clear()
        code, _, err = cli(APPLY, capsys)
        assert code == 0, (k, err)
        assert state(env) == want, f"after stopping at write {k}"
        ip = env.sim.compute.get("globalAddresses", "gmci-ip-shop", project="demo-project")["address"]
        assert env.sim.compute.get("globalForwardingRules", "gmci-fr-shop-http", project="demo-project")[
            "IPAddress"] == ip
        env.sim.journal.reset()
        assert "No changes" in cli(APPLY, capsys)[1]
        assert env.sim.journal.writes() == []
        assert cli(DESTROY, capsys)[0] == 0
