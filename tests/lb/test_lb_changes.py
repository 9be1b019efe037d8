"""Changing a live load balancer: clusters added and removed, routing changed, a node port moved; status; CI output."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client as k8s

from gitlab_mci.sim.spec import parse_spec
from tests.cli_helpers import run_cli as cli
from tests.conftest import RunningSim
from tests.lb.test_discovery import deploy_app
from tests.lb.test_lb_commands import owned

P = "demo-project"
SERVICE = ["--lb", "shop", "--service", "shop-auto-deploy", "--port", "web"]


@pytest.fixture
def three(make_sim: Any, monkeypatch: pytest.MonkeyPatch) -> RunningSim:
    running: RunningSim = make_sim(parse_spec({"clusters": [
        {"name": "prod1", "location": "us-central1-a"}, {"name": "prod2", "location": "europe-west1-b"},
        {"name": "prod3", "location": "asia-east1", "zones": ["asia-east1-a", "asia-east1-b"]}]}))
    for name in ("prod1", "prod2", "prod3"):
        deploy_app(running, name, 30999)
    for key, value in running.env.items():
        monkeypatch.setenv(key, value)
    return running


def _groups_of(running: RunningSim, cluster: str) -> list[dict[str, Any]]:
    rec = next(r for r in running.sim.records if r.spec.name == cluster)
    return [g for g in running.sim.compute.resources("instanceGroups") if g["name"] in rec.groups]


def _backend_groups(running: RunningSim) -> set[str]:
    bs = running.sim.compute.get("backendServices", "gmci-bs-shop-30999", project=P)
    return {b["group"].rsplit("/", 1)[1] for b in bs["backends"]}


def test_adding_and_removing_a_cluster_is_just_apply(three: RunningSim, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli(["lb", "apply", *SERVICE, "--context", "prod1,prod2"], capsys)[0] == 0
    prod3 = {g["name"] for g in _groups_of(three, "prod3")}
    assert not prod3 & _backend_groups(three)

    code, out, _err = cli(["lb", "plan", *SERVICE, "--context", "prod1,prod2,prod3"], capsys)
    assert code == 0 and "~ backendServices/gmci-bs-shop-30999" in out and "~ firewalls/gmci-fw-shop" in out
    assert cli(["lb", "apply", *SERVICE, "--context", "prod1,prod2,prod3"], capsys)[0] == 0
    assert prod3 <= _backend_groups(three) and len(prod3) == 2
    assert all({"name": "gmci-30999-shop", "port": 30999} in g["namedPorts"] for g in _groups_of(three, "prod3"))
    fw = three.sim.compute.get("firewalls", "gmci-fw-shop", project=P)
    tag3 = next(r.network_tag for r in three.sim.records if r.spec.name == "prod3")
    assert tag3 in fw["targetTags"]

    three.sim.journal.reset()
    assert cli(["lb", "apply", *SERVICE, "--context", "prod1,prod2"], capsys)[0] == 0
    assert not prod3 & _backend_groups(three)
    assert all(g.get("namedPorts", []) == [] for g in _groups_of(three, "prod3"))  # our named port released
    assert tag3 not in three.sim.compute.get("firewalls", "gmci-fw-shop", project=P)["targetTags"]
    # The named port is released only after the backend service stopped using the group.
    paths = [e.path for e in three.sim.journal.writes()]
    bs_update = next(i for i, p in enumerate(paths) if "/backendServices/" in p)
    assert all(i > bs_update for i, p in enumerate(paths) if "setNamedPorts" in p)


def test_a_node_port_can_move_without_downtime_or_a_cycle(three: RunningSim,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    where = ["--context", "prod1,prod2"]
    assert cli(["lb", "apply", *SERVICE, *where], capsys)[0] == 0
    for cluster in ("prod1", "prod2"):
        api = k8s.CoreV1Api(k8s.ApiClient(k8s.Configuration(host=three.sim.kube_url(cluster))))
        api.patch_namespaced_service("shop-auto-deploy", "default", {"spec": {"ports": [
            {"name": "web", "port": 5000, "targetPort": 5000, "nodePort": 31555}]}})
    code, _out, err = cli(["lb", "apply", *SERVICE, *where], capsys)
    assert code == 0, err
    assert "gmci-bs-shop-31555" in owned(three) and "gmci-bs-shop-30999" not in owned(three)
    um = three.sim.compute.get("urlMaps", "gmci-um-shop", project=P)
    assert um["defaultService"].endswith("/gmci-bs-shop-31555")
    for g in _groups_of(three, "prod1"):
        assert g["namedPorts"] == [{"name": "gmci-31555-shop", "port": 31555}]
    three.sim.journal.reset()
    assert "No changes" in cli(["lb", "apply", *SERVICE, *where], capsys)[1]
    assert three.sim.journal.writes() == []


def test_changing_host_and_path_rules_updates_the_url_map_in_place(three: RunningSim, tmp_path: Path,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    ingress = tmp_path / "ingress.yaml"

    def write(host: str, path: str) -> None:
        ingress.write_text(
            "apiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata: {name: shop}\nspec:\n"
            "  defaultBackend: {service: {name: shop-auto-deploy, port: {number: 5000}}}\n"
            f"  rules:\n  - host: {host}\n    http:\n      paths:\n"
            f"      - {{path: {path}, pathType: Prefix, backend: {{service: {{name: shop-auto-deploy, "
            "port: {number: 5000}}}}\n")

    args = ["lb", "apply", "--lb", "shop", "--context", "prod1,prod2", "--ingress", str(ingress)]
    write("a.example.com", "/api")
    assert cli(args, capsys)[0] == 0
    before = three.sim.compute.get("urlMaps", "gmci-um-shop", project=P)
    write("b.example.com", "/v2")
    three.sim.journal.reset()
    code, _out, err = cli(args, capsys)
    assert code == 0, err
    after = three.sim.compute.get("urlMaps", "gmci-um-shop", project=P)
    assert after["id"] == before["id"] and after["fingerprint"] != before["fingerprint"]
    assert after["hostRules"][0]["hosts"] == ["b.example.com"]
    assert after["pathMatchers"][0]["pathRules"][0]["paths"] == ["/v2", "/v2/*"]
    assert [(e.method, e.path.rsplit("/", 1)[1]) for e in three.sim.journal.writes()] == [("PUT", "gmci-um-shop")]


def test_status_shows_vip_health_per_cluster_and_zone_and_a_diagram(three: RunningSim, tmp_path: Path,
                                                                    capsys: pytest.CaptureFixture[str]) -> None:
    where = ["--lb", "shop", "--context", "prod1,prod2,prod3"]
    code, _, err = cli(["lb", "status", *where], capsys)
    assert code == 1 and "not found" in err
    assert cli(["lb", "apply", *SERVICE, "--context", "prod1,prod2,prod3", "--managed-domain", "shop.example.com"],
               capsys)[0] == 0
    # Without --wait, status exits 3 until the health checks have passed: wait for them.
    code, out, err = cli(["lb", "status", *where, "-o", "json", "--wait", "30"], capsys)
    assert code == 0, err
    state = json.loads(out)
    vip = three.sim.compute.get("globalAddresses", "gmci-ip-shop", project=P)["address"]
    assert state["vip"] == vip and {r["port"] for r in state["listeners"]} == {"80", "443"}
    assert {(b["cluster"], b["zone"]) for b in state["backends"]} == {
        ("prod1", "us-central1-a"), ("prod2", "europe-west1-b"), ("prod3", "asia-east1-a"), ("prod3", "asia-east1-b")}
    assert all(b["total"] > 0 for b in state["backends"])
    assert state["certificates"][0]["type"] == "MANAGED"
    code, out, _ = cli(["lb", "status", *where, "-o", "markdown"], capsys)
    assert code == 0 and "```mermaid" in out and "flowchart LR" in out and f"IP {vip}" in out
    assert "gmci-um-shop" in out and "prod3 / asia-east1-b" in out


def test_in_a_gitlab_job_apply_folds_its_output_into_sections(three: RunningSim, monkeypatch: pytest.MonkeyPatch,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("GITLAB_CI", "true")
    code, out, err = cli(["lb", "apply", *SERVICE, "--context", "prod1"], capsys)
    assert code == 0, err
    starts = [line for line in out.splitlines() if "section_start:" in line]
    ends = [line for line in out.splitlines() if "section_end:" in line]
    assert len(starts) == len(ends) == 2 and "mci_discover[collapsed=true]" in starts[0]
    assert "\x1b[0K" in starts[0] and "ready at http://" in out


def test_apply_json_output_is_machine_readable(three: RunningSim, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = cli(["lb", "apply", *SERVICE, "--context", "prod1", "--output", "json"], capsys)
    assert code == 0, err
    result = json.loads(out)
    assert result["failed"] == {} and result["url"] == f"http://{result['vip']}/"
    assert {c["collection"] for c in result["changes"]} >= {"backendServices", "urlMaps", "namedPorts"}


def test_status_wait_exits_3_when_a_cluster_stays_unhealthy(three: RunningSim,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    where = ["--lb", "shop", "--context", "prod1,prod2"]
    assert cli(["lb", "apply", *SERVICE, "--context", "prod1,prod2", "--check-interval-sec", "1"], capsys)[0] == 0
    assert cli(["lb", "status", *where, "--wait", "20"], capsys)[0] == 0  # both healthy once probed
    three.sim.dataplane.fail("prod1")
    assert three.sim.dataplane.wait_health("UNHEALTHY", cluster="prod1", timeout=5)  # the checks noticed
    code, out, _ = cli(["lb", "status", *where, "--wait", "2"], capsys)
    assert code == 3 and "NOT healthy" in out
    assert any(line.split()[1:3] == ["prod1", "us-central1-a"] and line.split()[-1].startswith("0/")
               for line in out.splitlines() if line.strip().startswith("gmci-bs-shop-30999"))
    three.sim.dataplane.heal()
