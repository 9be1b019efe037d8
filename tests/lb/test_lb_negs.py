"""`lb apply --backends neg`: the load balancer sends requests straight to the pods, through the zonal NEGs GKE's NEG
controller keeps in sync (the simulator's), with the real clients (google-cloud-compute, kubernetes, requests)."""

from __future__ import annotations

import json
import time
from collections import Counter
from typing import Any

import pytest
import requests
from google.cloud import compute_v1
from kubernetes import client as k8s

from gitlab_mci.gcp import Compute
from tests.cli_helpers import run_cli as cli
from tests.conftest import RunningSim
from tests.lb.neg_world import BASE, NEG, PORT, SERVICE, WHERE, P, kube, neg_world, serving_url
from tests.traffic import Load

BS = f"gmci-bsn-shop-{PORT}"
HC = f"gmci-hcn-shop-{PORT}"
# Health checks as the failover test sets them: out of rotation within interval × threshold + one interval.
INTERVAL, THRESHOLD = 1, 2
DETECTION = INTERVAL * THRESHOLD + INTERVAL
EPSILON = 0.5  # thread scheduling and request round trips on a loaded machine


@pytest.fixture
def world(make_sim: Any, monkeypatch: pytest.MonkeyPatch) -> RunningSim:
    return neg_world(make_sim, monkeypatch)


def _apply(capsys: pytest.CaptureFixture[str], *extra: str) -> tuple[int, str, str]:
    return cli(["lb", "apply", *BASE, "--backends", "neg", "--timeout", "30", *extra], capsys)


def test_neg_backends_over_a_zonal_and_a_regional_cluster_serve_from_pods_of_both(
        world: RunningSim, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = _apply(capsys, "--check-interval-sec", str(INTERVAL))
    assert code == 0, out + err
    assert "prod2: 3 NEG(s) in europe-west1-b, europe-west1-c, europe-west1-d" in out, out
    gc = Compute(P, world.sim.compute_url)
    bs = gc.client(compute_v1.BackendServicesClient).get(project=P, backend_service=BS)
    zones = sorted(b.group.split("/zones/")[1].split("/")[0] for b in bs.backends)
    assert zones == ["europe-west1-b", "europe-west1-c", "europe-west1-d", "us-central1-a"]
    assert all(b.group.endswith(f"/networkEndpointGroups/{NEG}") for b in bs.backends)
    assert {b.balancing_mode for b in bs.backends} == {"RATE"} and all(b.max_rate_per_endpoint > 0
                                                                       for b in bs.backends)
    hc = gc.client(compute_v1.HealthChecksClient).get(project=P, health_check=HC)
    assert hc.http_health_check.port_specification == "USE_SERVING_PORT"
    assert hc.http_health_check.request_path == "/healthz"
    fw = gc.client(compute_v1.FirewallsClient).get(project=P, firewall="gmci-fwn-shop")
    assert [(a.I_p_protocol, list(a.ports)) for a in fw.allowed] == [("tcp", ["5000"])]  # the pods' port
    assert set(fw.source_ranges) == {"130.211.0.0/22", "35.191.0.0/16"} and fw.target_tags
    # No node port, no named port: instance groups are not used.
    groups = gc.client(compute_v1.InstanceGroupsClient).aggregated_list(project=P)
    assert not [p for _, scoped in groups for g in scoped.instance_groups for p in g.named_ports
                if p.name.startswith("gmci-")]

    assert world.sim.dataplane.wait_health("HEALTHY", timeout=15)
    url = serving_url(world)
    with requests.Session() as s:
        replies = [s.get(f"{url}/", timeout=5) for _ in range(60)]
    assert {r.status_code for r in replies} == {200}
    assert set(Counter(r.headers["X-Sim-Backend"].split("/")[0] for r in replies)) == {"prod1", "prod2"}

    # Healthy endpoints per cluster and zone, from getHealth on the NEG backends.
    code, out, err = cli(["lb", "status", *WHERE, "-o", "json"], capsys)
    assert code == 0, out + err
    rows = json.loads(out)["backends"]
    assert {(r["cluster"], r["zone"]) for r in rows} == {
        ("prod1", "us-central1-a"), ("prod2", "europe-west1-b"), ("prod2", "europe-west1-c"),
        ("prod2", "europe-west1-d")}
    assert sum(r["healthy"] for r in rows if r["cluster"] == "prod1") == 3
    assert sum(r["healthy"] for r in rows if r["cluster"] == "prod2") == 3
    code, out, _ = cli(["lb", "status", *WHERE], capsys)
    assert "NEG" in out.splitlines()[1] + out and out.rstrip().endswith("healthy")

    # The next pipeline's apply: nothing to do.
    world.sim.journal.reset()
    code, out, err = _apply(capsys, "--check-interval-sec", str(INTERVAL))
    assert code == 0 and "No changes" in out, out + err
    assert world.sim.journal.writes() == []


def test_weights_and_drain_work_per_cluster_with_neg_backends(
        world: RunningSim, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = _apply(capsys, "--weight", "prod1=2", "-o", "json")
    assert code == 0 and json.loads(out)["neg_wait_s"] >= 0, out + err
    gc = Compute(P, world.sim.compute_url)
    bs = gc.client(compute_v1.BackendServicesClient).get(project=P, backend_service=BS)
    scaler = {b.group.split("/zones/")[1].split("/")[0]: b.capacity_scaler for b in bs.backends}
    assert scaler == {"us-central1-a": 1.0, "europe-west1-b": 0.5, "europe-west1-c": 0.5, "europe-west1-d": 0.5}
    code, out, err = cli(["lb", "drain", "prod2", *WHERE], capsys)
    assert code == 0 and "prod2 drained" in out, out + err
    bs = gc.client(compute_v1.BackendServicesClient).get(project=P, backend_service=BS)
    assert {b.capacity_scaler for b in bs.backends if "europe" in b.group} == {0.0}
    world.sim.journal.reset()
    assert "No changes" in _apply(capsys)[1]  # the drain and the weight survive the next apply
    assert world.sim.journal.writes() == []


def test_a_rollout_under_20_requests_per_second_fails_no_request(
        world: RunningSim, capsys: pytest.CaptureFixture[str]) -> None:
    assert _apply(capsys, "--check-interval-sec", str(INTERVAL))[0] == 0
    assert world.sim.dataplane.wait_health("HEALTHY", timeout=15)
    before = {p.metadata.name for p in k8s.CoreV1Api(kube(world, "prod1")).list_namespaced_pod("default").items}
    with Load(serving_url(world)) as load:
        load.hold(1.0)  # traffic before the rollout
        k8s.AppsV1Api(kube(world, "prod1")).patch_namespaced_deployment("shop", "default", {
            "spec": {"template": {"metadata": {"annotations": {"rollout": "2"}}}}})
        deadline = time.monotonic() + 60
        while True:  # until every pod of prod1 is a new one, and ready
            pods = k8s.CoreV1Api(kube(world, "prod1")).list_namespaced_pod("default").items
            ready = [p for p in pods if any(c.type == "Ready" and c.status == "True"
                                            for c in (p.status.conditions or []))]
            if len(ready) == 3 and not {p.metadata.name for p in pods} & before:
                break
            assert time.monotonic() < deadline, [p.metadata.name for p in pods]
            time.sleep(0.2)
        load.hold(2.0)
    assert len(load.log) >= 40 and load.failed == [], load.failed[:5]
    assert {c for _, _, c in load.log[-20:]} >= {"prod1"}  # the new pods serve


def test_failed_pods_of_one_cluster_move_traffic_within_the_detection_time(
        world: RunningSim, capsys: pytest.CaptureFixture[str]) -> None:
    assert _apply(capsys, "--check-interval-sec", str(INTERVAL), "--unhealthy-threshold", str(THRESHOLD))[0] == 0
    assert world.sim.dataplane.wait_health("HEALTHY", timeout=15)
    url = serving_url(world)
    code, out, _ = cli(["sim", "fail", "prod1", "--state-dir", str(world.files.state_dir)], capsys)
    assert code == 0, out
    failed_at = time.monotonic()
    try:
        with Load(url) as load:
            load.hold(DETECTION + EPSILON + 2.0)
        settled = next((sent for sent, status, who in load.log if status == 200 and who == "prod2"
                        and all(w == "prod2" for s2, _, w in load.log if s2 >= sent)), None)
        assert settled is not None, load.log[-5:]
        assert settled - failed_at <= DETECTION + EPSILON, (settled - failed_at, load.log[:10])
    finally:
        world.sim.dataplane.heal()


# --- bad inputs: one line, nothing written ---------------------------------------------------------------------------

def _refused(running: RunningSim, capsys: pytest.CaptureFixture[str], args: list[str], *words: str) -> str:
    running.sim.journal.reset()
    code, _, err = cli(args, capsys)
    line = err.strip().splitlines()[-1] if err.strip() else ""
    assert code == 1 and line.startswith("gitlab-mci: error:"), err
    assert len([x for x in err.strip().splitlines() if x.startswith("gitlab-mci: error")]) == 1
    for word in words:
        assert word in line, line
    assert running.sim.journal.writes() == []
    return line


def test_a_cluster_without_vpc_native_networking_is_refused_naming_instance_groups(
        make_sim: Any, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    running = neg_world(make_sim, monkeypatch, prod2_vpc_native=False)
    _refused(running, capsys, ["lb", "apply", *BASE, "--backends", "neg"],
             "prod2", "VPC-native", "--backends instance-groups")


def test_a_service_not_exposed_is_refused_naming_the_expose_step(
        make_sim: Any, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    running = neg_world(make_sim, monkeypatch, exposed=False)
    _refused(running, capsys, ["lb", "apply", *BASE, "--backends", "neg"], SERVICE, "gitlab-mci neg expose")


def test_a_neg_still_missing_in_a_zone_after_the_wait_is_refused(
        make_sim: Any, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    # GKE's NEG controller slower than the wait allows.
    running = neg_world(make_sim, monkeypatch, spec={"negSyncDelay": 60})
    began = time.monotonic()
    line = _refused(running, capsys, ["lb", "apply", *BASE, "--backends", "neg", "--timeout", "2"],
                    "after 2s", "NEG")
    assert time.monotonic() - began < 15, line


def test_utilization_balancing_is_refused_for_negs_before_any_call(
        world: RunningSim, capsys: pytest.CaptureFixture[str]) -> None:
    world.sim.journal.reset()
    _refused(world, capsys, ["lb", "apply", *BASE, "--backends", "neg", "--balancing-mode", "UTILIZATION"],
             "UTILIZATION", "RATE")
    assert world.sim.journal.reads("compute") == []


def test_connection_balancing_is_for_negs_only(world: RunningSim, capsys: pytest.CaptureFixture[str]) -> None:
    _refused(world, capsys, ["lb", "plan", *BASE, "--balancing-mode", "CONNECTION"], "CONNECTION",
             "--backends instance-groups")


def test_two_clusters_in_one_zone_asking_for_the_same_neg_name_are_refused_without_waiting(
        make_sim: Any, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    from gitlab_mci.sim.spec import parse_spec
    from tests.lb.neg_world import deploy

    running = make_sim(parse_spec({"clusters": [{"name": "prod1", "location": "us-central1-a", "nodes": 1},
                                                {"name": "prod2", "location": "us-central1-a", "nodes": 1}]}))
    for name in ("prod1", "prod2"):
        deploy(running, name, replicas=1)
    for key, value in running.env.items():
        monkeypatch.setenv(key, value)
    began = time.monotonic()
    _refused(running, capsys, ["lb", "apply", *BASE, "--backends", "neg", "--timeout", "60"],
             "us-central1-a", NEG, "own NEG name")
    assert time.monotonic() - began < 30


def test_a_neg_the_controller_cannot_make_is_refused_after_the_wait_with_the_controllers_reason(
        make_sim: Any, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    from gitlab_mci.sim.spec import parse_spec
    from tests.lb.neg_world import LABELS, deploy, expose_annotation

    running = make_sim(parse_spec({"clusters": [{"name": "prod1", "location": "us-central1-a", "nodes": 1},
                                                {"name": "prod2", "location": "europe-west1-b", "nodes": 1}]}))
    # Another Service of prod1 has the NEG name already: GKE's controller makes no NEG for ours, and says why.
    api = kube(running, "prod1")
    k8s.CoreV1Api(api).create_namespaced_service("default", {
        "metadata": {"name": "older", "annotations": expose_annotation()},
        "spec": {"selector": LABELS, "ports": [{"name": "web", "port": PORT, "targetPort": 5000}]}})
    deadline = time.monotonic() + 10
    while not (k8s.CoreV1Api(api).read_namespaced_service("older", "default").metadata.annotations or {}).get(
            "cloud.google.com/neg-status"):
        assert time.monotonic() < deadline
        time.sleep(0.1)
    for name in ("prod1", "prod2"):
        deploy(running, name, replicas=1)
    for key, value in running.env.items():
        monkeypatch.setenv(key, value)
    line = _refused(running, capsys, ["lb", "apply", *BASE, "--backends", "neg", "--timeout", "3"],
                    "prod1", "after 3s", "NEG controller says")
    assert NEG in line


def test_a_port_the_service_does_not_have_is_refused(world: RunningSim, capsys: pytest.CaptureFixture[str]) -> None:
    _refused(world, capsys, ["lb", "apply", *WHERE, "--service", SERVICE, "--port", "8080", "--backends", "neg"],
             SERVICE, "no port 8080 (its ports: web 5000)")


def test_destroy_removes_what_gitlab_mci_made_and_leaves_the_controllers_negs(
        world: RunningSim, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("MCI_BACKENDS", "neg")  # as a pipeline sets it once for every job
    assert cli(["lb", "apply", *BASE], capsys)[0] == 0
    assert Compute(P, world.sim.compute_url).client(compute_v1.BackendServicesClient).get(
        project=P, backend_service=BS).backends
    code, out, err = cli(["lb", "destroy", *WHERE], capsys)
    assert code == 0, out + err
    gc = Compute(P, world.sim.compute_url)
    assert not [x.name for x in gc.client(compute_v1.BackendServicesClient).list(project=P)]
    assert not [x.name for x in gc.client(compute_v1.FirewallsClient).list(project=P) if x.name.startswith("gmci")]
    negs = gc.client(compute_v1.NetworkEndpointGroupsClient).aggregated_list(project=P)
    assert sorted(n.zone.rsplit("/", 1)[1] for _, scoped in negs for n in scoped.network_endpoint_groups
                  if n.name == NEG) == ["europe-west1-b", "europe-west1-c", "europe-west1-d", "us-central1-a"]


def test_a_zone_without_a_pod_of_the_app_is_not_unhealthy_while_its_cluster_serves(
        make_sim: Any, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    running = neg_world(make_sim, monkeypatch, replicas=1)  # prod2 is regional: two of its zones have no pod
    assert _apply(capsys, "--check-interval-sec", str(INTERVAL))[0] == 0
    code, out, err = cli(["lb", "status", *WHERE, "--wait", "15", "-o", "json"], capsys)
    assert code == 0, out + err
    rows = [r for r in json.loads(out)["backends"] if r["cluster"] == "prod2"]
    assert sorted((r["healthy"], r["total"]) for r in rows) == [(0, 0), (0, 0), (1, 1)]
    running.sim.dataplane.fail("prod2")
    try:
        assert running.sim.dataplane.wait_health("UNHEALTHY", cluster="prod2", timeout=10)
        code, out, _ = cli(["lb", "status", *WHERE], capsys)
        assert code == 3 and "NOT healthy: some serving cluster has no healthy endpoint" in out, out
    finally:
        running.sim.dataplane.heal()


def test_negs_gke_names_itself_are_used_as_the_controller_reports_them(
        world: RunningSim, capsys: pytest.CaptureFixture[str]) -> None:
    # A Service exposed by hand without a name: GKE names its NEGs k8s1-…; neg-status says which.
    for cluster in ("prod1", "prod2"):
        k8s.CoreV1Api(kube(world, cluster)).patch_namespaced_service(SERVICE, "default", {"metadata": {
            "annotations": {"cloud.google.com/neg": json.dumps({"exposed_ports": {str(PORT): {}}})}}})
    code, out, err = _apply(capsys)
    assert code == 0, out + err
    bs = Compute(P, world.sim.compute_url).client(compute_v1.BackendServicesClient).get(project=P, backend_service=BS)
    names = {b.group.rsplit("/", 1)[1] for b in bs.backends}
    assert len(bs.backends) == 4 and all(n.startswith("k8s1-") for n in names), names
    assert world.sim.dataplane.wait_health("HEALTHY", timeout=15)
    with requests.Session() as s:
        assert s.get(f"{serving_url(world)}/", timeout=5).status_code == 200


def test_a_cluster_whose_negs_have_no_endpoint_after_the_wait_is_refused(
        make_sim: Any, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    running = neg_world(make_sim, monkeypatch, replicas=0)  # NEGs made, but no pod to put in them
    _refused(running, capsys, ["lb", "apply", *BASE, "--backends", "neg", "--timeout", "2"],
             "has no endpoint (no ready pod)", "after 2s")
