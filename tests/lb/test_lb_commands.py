"""`gitlab-mci lb plan|apply|destroy` end to end on the simulator, with the real clients."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from gitlab_mci.lb.engine import ORDER
from gitlab_mci.sim.httpd import FaultRule
from gitlab_mci.sim.spec import parse_spec
from tests.cli_helpers import run_cli as cli
from tests.conftest import RunningSim
from tests.lb.test_discovery import deploy_app

BASE = ["--lb", "shop", "--context", "prod1,prod2", "--service", "shop-auto-deploy", "--port", "web"]
WHERE = BASE[:4]  # what destroy and status need: no routing


@pytest.fixture
def world(app_world: RunningSim) -> RunningSim:
    return app_world


def owned(running: RunningSim, lb: str = "shop") -> list[str]:
    return sorted(r["name"] for r in running.sim.compute.resources()
                  if str(r.get("description", "")).startswith(f"gitlab-mci:lb={lb} "))


def test_apply_reapply_plan_and_destroy(world: RunningSim, capsys: pytest.CaptureFixture[str],
                                        tmp_path: Path) -> None:
    code, out, _ = cli(["lb", "plan", *BASE, "--detailed-exitcode"], capsys)
    assert code == 2 and "+ backendServices/gmci-bs-shop-30999" in out and "Plan: 7 to add, 2 to change" in out
    assert world.sim.journal.writes() == []
    dotenv = tmp_path / "mci.env"
    code, out, err = cli(["lb", "apply", *BASE, "--dotenv", str(dotenv)], capsys)
    assert code == 0, err
    assert owned(world) == ["gmci-bs-shop-30999", "gmci-fr-shop-http", "gmci-fw-shop", "gmci-hc-shop-30999",
                            "gmci-hp-shop", "gmci-ip-shop", "gmci-um-shop"]
    vip = world.sim.compute.get("globalAddresses", "gmci-ip-shop", project="demo-project")["address"]
    assert dotenv.read_text() == f"MCI_VIP={vip}\nMCI_URL=http://{vip}/\n"
    bs = world.sim.compute.get("backendServices", "gmci-bs-shop-30999", project="demo-project")
    assert len(bs["backends"]) == 2 and bs["portName"] == "gmci-30999-shop"
    hc = world.sim.compute.get("healthChecks", "gmci-hc-shop-30999", project="demo-project")
    assert hc["httpHealthCheck"] == {**hc["httpHealthCheck"], "port": 30999, "requestPath": "/healthz"}
    groups = world.sim.compute.resources("instanceGroups")
    assert all({"name": "gmci-30999-shop", "port": 30999} in g["namedPorts"] for g in groups)

    world.sim.journal.reset()
    code, out, _ = cli(["lb", "apply", *BASE], capsys)
    assert code == 0 and "No changes" in out
    assert world.sim.journal.writes() == []
    # Compute reads: one list per collection, discovery's two aggregated lists (instances, instance groups, whose
    # named ports the diff reuses) and the forwarding rules on our address (one that is not ours would make the
    # last write fail) — per project, not per resource or per cluster. (The simulator's own state, read to print
    # the URL its data plane serves, is no Compute call.)
    reads = [e for e in world.sim.journal.reads("compute") if not e.path.startswith("/_sim/")]
    assert len(reads) == len(ORDER) + 3
    code, _, _ = cli(["lb", "plan", *BASE, "--detailed-exitcode"], capsys)
    assert code == 0

    code, out, err = cli(["lb", "destroy", *WHERE], capsys)
    assert code == 0, err
    assert owned(world) == ["gmci-ip-shop"]  # the global IP survives unless asked
    assert all(not any(p["name"].startswith("gmci-") for p in g.get("namedPorts", []))
               for g in world.sim.compute.resources("instanceGroups"))
    code, _, _ = cli(["lb", "destroy", *WHERE, "--release-ip"], capsys)
    assert code == 0 and owned(world) == []


def test_destroy_leaves_users_and_other_load_balancers_alone(world: RunningSim,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    world.sim.compute.seed("globalAddresses", {"name": "users-ip", "description": "mine"}, project="demo-project")
    assert cli(["lb", "apply", *BASE], capsys)[0] == 0
    other = ["--lb", "cart", *BASE[2:]]
    assert cli(["lb", "apply", *other], capsys)[0] == 0
    assert cli(["lb", "destroy", *WHERE, "--release-ip"], capsys)[0] == 0
    assert owned(world) == []
    assert len(owned(world, "cart")) == 7
    # Both load balancers serve node port 30999 from the same instance groups: cart's named port stays.
    assert all({"name": "gmci-30999-cart", "port": 30999} in g["namedPorts"]
               and not any(p["name"] == "gmci-30999-shop" for p in g["namedPorts"])
               for g in world.sim.compute.resources("instanceGroups"))
    assert world.sim.compute.get("globalAddresses", "users-ip", project="demo-project") is not None


def test_a_static_ip_reserved_by_the_user_is_used_and_kept(world: RunningSim,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    world.sim.compute.seed("globalAddresses", {"name": "web-ip"}, project="demo-project")
    assert cli(["lb", "apply", *BASE, "--static-ip", "web-ip"], capsys)[0] == 0
    ip = world.sim.compute.get("globalAddresses", "web-ip", project="demo-project")
    rule = world.sim.compute.get("globalForwardingRules", "gmci-fr-shop-http", project="demo-project")
    assert rule["IPAddress"] == ip["address"] and "description" not in ip
    assert cli(["lb", "destroy", *WHERE, "--static-ip", "web-ip", "--release-ip"], capsys)[0] == 0
    assert world.sim.compute.get("globalAddresses", "web-ip", project="demo-project") is not None


def test_an_unowned_resource_with_our_name_is_an_error_before_any_write(
    world: RunningSim, capsys: pytest.CaptureFixture[str]
) -> None:
    world.sim.compute.seed("healthChecks", {"name": "gmci-hc-shop-30999", "type": "TCP",
                                            "tcpHealthCheck": {"port": 1}}, project="demo-project")
    world.sim.journal.reset()
    code, _, err = cli(["lb", "apply", *BASE], capsys)
    assert code == 1 and "healthChecks/gmci-hc-shop-30999 exists but was not created by gitlab-mci" in err
    assert world.sim.journal.writes() == []


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--lb", "shop", "--context", "prod1,prod2", "--service", "nope"],
         "Service 'nope' (routed to by the Ingress) does not exist in context 'prod1'"),
        (["--lb", "s" * 41, "--context", "prod1", "--service", "shop-auto-deploy"], "at most 40 characters"),
        (["--lb", "shop", "--context", "prod9", "--service", "shop-auto-deploy"], "unknown kubeconfig context 'prod9'"),
        (["--lb", "shop", "--service", "shop-auto-deploy"], "no clusters"),
        (["--lb", "shop", "--context", "prod1"], "no routing"),
    ],
)
def test_bad_input_fails_before_any_write(world: RunningSim, capsys: pytest.CaptureFixture[str],
                                          args: list[str], message: str) -> None:
    code, _, err = cli(["lb", "apply", *args], capsys)
    assert code == 1 and message in err and len(err.splitlines()) == 1
    assert world.sim.journal.writes() == []


def test_node_port_mismatch_between_clusters_is_refused(make_sim: Any, monkeypatch: pytest.MonkeyPatch,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    running = make_sim(parse_spec({"clusters": [{"name": "prod1"}, {"name": "prod2", "location": "europe-west1-b"}]}))
    deploy_app(running, "prod1", 30999)
    deploy_app(running, "prod2", 31000)
    for key, value in running.env.items():
        monkeypatch.setenv(key, value)
    running.sim.journal.reset()
    code, _, err = cli(["lb", "apply", *BASE], capsys)
    assert code == 1 and "different node ports across clusters (prod1: 30999, prod2: 31000)" in err
    assert running.sim.journal.writes() == []


def test_ingress_rules_become_the_url_map(world: RunningSim, capsys: pytest.CaptureFixture[str],
                                          tmp_path: Path) -> None:
    ingress = tmp_path / "ingress.yaml"
    ingress.write_text("apiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata: {name: shop}\nspec:\n"
                       "  rules:\n  - host: shop.example.com\n    http:\n      paths:\n"
                       "      - {path: /api, pathType: Prefix, backend: {service: {name: shop-auto-deploy, "
                       "port: {name: web}}}}\n")
    code, _, err = cli(["lb", "apply", "--lb", "shop", "--context", "prod1,prod2", "--ingress", str(ingress)], capsys)
    assert code == 0, err
    um = world.sim.compute.get("urlMaps", "gmci-um-shop", project="demo-project")
    assert um["hostRules"] == [{"hosts": ["shop.example.com"], "pathMatcher": "m0"}]
    assert um["pathMatchers"][0]["pathRules"][0]["paths"] == ["/api", "/api/*"]


def test_a_failure_half_way_then_apply_again_converges(world: RunningSim,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    world.sim.faults.add(FaultRule(action="operation_error", service="compute", method="POST",
                                   path="/global/urlMaps$", times=1))
    code, _, err = cli(["lb", "apply", *BASE], capsys)
    assert code == 1 and "run apply again" in err
    assert "gmci-fr-shop-http" not in owned(world)  # what depends on the failed URL map was not attempted
    code, _, err = cli(["lb", "apply", *BASE], capsys)
    assert code == 0, err
    assert len(owned(world)) == 7
    world.sim.journal.reset()
    assert "No changes" in cli(["lb", "plan", *BASE], capsys)[1]
