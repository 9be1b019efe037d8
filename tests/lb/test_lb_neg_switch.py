"""Switching a live load balancer between instance groups and NEGs, both ways, under 20 requests/s: a backend service
cannot mix the two kinds, so the switch is a second backend service, healthy before the URL map moves to it; what
the old kind needed (backend service, health check, named ports, firewall rule) is gone afterwards."""

from __future__ import annotations

from typing import Any

import pytest
from google.cloud import compute_v1

from gitlab_mci.gcp import Compute
from tests.cli_helpers import run_cli as cli
from tests.conftest import RunningSim
from tests.lb.neg_world import BASE, PORT, P, neg_world, serving_url
from tests.traffic import Load

NODE_PORT = 30999


def _owned(running: RunningSim) -> dict[str, set[str]]:
    """Names of this load balancer's backend services, health checks and firewall rules, and our named ports, as
    the real client lists them."""
    gc = Compute(P, running.sim.compute_url)
    out = {
        "backendServices": {x.name for x in gc.client(compute_v1.BackendServicesClient).list(project=P)},
        "healthChecks": {x.name for x in gc.client(compute_v1.HealthChecksClient).list(project=P)},
        "firewalls": {x.name for x in gc.client(compute_v1.FirewallsClient).list(project=P)
                      if x.name.startswith("gmci-")},
    }
    groups = gc.client(compute_v1.InstanceGroupsClient).aggregated_list(project=P)
    out["namedPorts"] = {p.name for _, scoped in groups for g in scoped.instance_groups for p in g.named_ports
                         if p.name.startswith("gmci-")}
    return out


def _switch(running: RunningSim, capsys: pytest.CaptureFixture[str], backends: str) -> None:
    """Plan, then apply with ``backends`` under 20 requests/s: no request fails; the next apply writes nothing."""
    running.sim.journal.reset()
    code, out, err = cli(["lb", "plan", *BASE, "--backends", backends, "--timeout", "30", "--check-interval-sec",
                          "1", "--detailed-exitcode"], capsys)
    new = f"gmci-bsn-shop-{PORT}" if backends == "neg" else f"gmci-bs-shop-{NODE_PORT}"
    old = f"gmci-bs-shop-{NODE_PORT}" if backends == "neg" else f"gmci-bsn-shop-{PORT}"
    assert code == 2 and f"backendServices/{new}" in out and f"backendServices/{old}" in out, out + err
    assert running.sim.journal.writes() == []
    url = serving_url(running)
    with Load(url) as load:
        load.hold(1.0)
        code, out, err = cli(["lb", "apply", *BASE, "--backends", backends, "--timeout", "30",
                              "--check-interval-sec", "1"], capsys)
        assert code == 0, out + err
        load.hold(1.5)  # requests after the old kind is gone
    assert len(load.log) >= 40 and load.failed == [], load.failed[:5]
    running.sim.journal.reset()
    code, out, err = cli(["lb", "apply", *BASE, "--backends", backends, "--timeout", "30",
                          "--check-interval-sec", "1"], capsys)
    assert code == 0 and "No changes" in out, out + err
    assert running.sim.journal.writes() == []


def test_instance_groups_to_negs_and_back_under_load_fails_no_request_and_leaves_nothing_of_the_old_kind(
        make_sim: Any, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    # Compute's operations take a while, as Google's do: what runs in parallel with what matters (the old firewall
    # rule must outlive the old backend service, whose probes it lets in).
    running = neg_world(make_sim, monkeypatch, node_port=NODE_PORT, spec={"operationLatency": 0.5})
    code, out, err = cli(["lb", "apply", *BASE, "--check-interval-sec", "1"], capsys)
    assert code == 0, out + err
    assert running.sim.dataplane.wait_health("HEALTHY", timeout=15)
    groups_kind = _owned(running)
    assert groups_kind == {"backendServices": {f"gmci-bs-shop-{NODE_PORT}"},
                           "healthChecks": {f"gmci-hc-shop-{NODE_PORT}"}, "firewalls": {"gmci-fw-shop"},
                           "namedPorts": {f"gmci-{NODE_PORT}-shop"}}

    _switch(running, capsys, "neg")
    assert _owned(running) == {"backendServices": {f"gmci-bsn-shop-{PORT}"},
                               "healthChecks": {f"gmci-hcn-shop-{PORT}"}, "firewalls": {"gmci-fwn-shop"},
                               "namedPorts": set()}

    _switch(running, capsys, "instance-groups")
    assert _owned(running) == groups_kind


def test_a_drained_cluster_and_the_weights_carry_over_a_switch_to_negs(
        make_sim: Any, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    running = neg_world(make_sim, monkeypatch, node_port=NODE_PORT)
    assert cli(["lb", "apply", *BASE, "--weight", "prod1=2"], capsys)[0] == 0
    assert cli(["lb", "drain", "prod2", *BASE[:4]], capsys)[0] == 0
    code, out, err = cli(["lb", "apply", *BASE, "--backends", "neg", "--timeout", "30", "--check-interval-sec", "1"],
                         capsys)
    assert code == 0, out + err
    bs = Compute(P, running.sim.compute_url).client(compute_v1.BackendServicesClient).get(
        project=P, backend_service=f"gmci-bsn-shop-{PORT}")
    scalers = {b.group.split("/zones/")[1].split("/")[0]: b.capacity_scaler for b in bs.backends}
    assert scalers == {"us-central1-a": 1.0, "europe-west1-b": 0.0, "europe-west1-c": 0.0, "europe-west1-d": 0.0}
    code, out, _ = cli(["lb", "undrain", "prod2", *BASE[:4]], capsys)
    assert code == 0 and "capacityScaler 0.5 (weight 1)" in out, out
