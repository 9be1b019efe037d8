"""`gitlab-mci sim journal`: what a pipeline did to the simulated cloud, and `--writes` for what it changed."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.cli_helpers import run_cli as cli
from tests.conftest import RunningSim

LB = ["--lb", "shop", "--context", "prod1,prod2", "--service", "shop-auto-deploy", "--port", "web"]


@pytest.fixture
def world(app_world: RunningSim) -> RunningSim:
    return app_world


def journal(world: RunningSim, capsys: pytest.CaptureFixture[str], *args: str) -> list[dict[str, Any]]:
    code, out, err = cli(["sim", "journal", "-o", "json", "--state-dir", str(world.files.state_dir), *args], capsys)
    assert code == 0, err
    entries: list[dict[str, Any]] = json.loads(out)
    return entries


def test_a_no_op_reapply_of_a_load_balancer_shows_no_writes(world: RunningSim,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = cli(["lb", "apply", *LB], capsys)
    assert code == 0, err
    written = journal(world, capsys, "--writes", "--reset")
    # The first apply created the chain: inserts and the named ports, and nothing it only read or waited on.
    assert any(e["method"] == "POST" and e["path"].split("?")[0].endswith("/global/forwardingRules") for e in written)
    assert not [e for e in written if e["path"].split("?")[0].endswith(("/wait", "/getHealth"))]
    # The pipeline of an unchanged app: apply again, then report health (getHealth: POSTs that change nothing).
    code, out, err = cli(["lb", "apply", *LB], capsys)
    assert code == 0 and "No changes" in out, err
    code, _, err = cli(["lb", "status", *LB[:4]], capsys)
    assert code in (0, 3), err  # 3 until the first health checks pass; here only what status calls matters
    assert journal(world, capsys, "--writes") == []
    everything = journal(world, capsys)
    assert any(e["path"].split("?")[0].endswith("/getHealth") for e in everything)
    assert all(e["write"] is False for e in everything)
    # The journal records the API calls, not `gitlab-mci sim journal`'s own calls to the simulator.
    assert not [e for e in everything if e["path"].startswith("/_sim/")]


def test_journal_text_lists_requests_and_counts_them(world: RunningSim, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = cli(["lb", "status", *LB[:4]], capsys)  # no load balancer yet: reads, then an error
    assert code == 1
    code, out, err = cli(["sim", "journal", "--writes", "--state-dir", str(world.files.state_dir)], capsys)
    assert code == 0 and out == "" and err == "0 request(s)\n"
