"""Per-cluster traffic control on the simulator with the real clients: weights, drain, undrain, and what survives
the next pipeline's `lb apply` (docs/traffic-control.md)."""

from __future__ import annotations

import json
import math
import time
from collections import Counter
from typing import Any

import pytest
import requests
from google.api_core import exceptions as gexc
from google.cloud import compute_v1

from gitlab_mci.gcp import Compute
from tests.cli_helpers import run_cli as cli
from tests.clients import backend_service as read_backend_service
from tests.conftest import RunningSim
from tests.traffic import Load, cluster_of

P = "demo-project"
BASE = ["--lb", "shop", "--context", "prod1,prod2", "--service", "shop-auto-deploy", "--port", "web"]
WHERE = BASE[:4]
BS = "gmci-bs-shop-30999"
# How soon after `lb drain` returns the simulator sends a drained cluster no new request (docs/traffic-control.md):
# the data plane sees Compute's change on its next look (every 0.1 s), plus one request interval.
SIM_DRAIN_SECONDS = 1.0


@pytest.fixture
def world(app_world: RunningSim) -> RunningSim:
    return app_world


def scalers(world: RunningSim) -> dict[str, float]:
    """Each cluster's capacityScaler as Compute holds it, read with the real client."""
    bs = read_backend_service(world, BS)
    zone_of = {"us-central1-a": "prod1", "europe-west1-b": "prod2"}
    return {zone_of[b.group.split("/zones/")[1].split("/")[0]]: b.capacity_scaler for b in bs.backends}


def serving_url(world: RunningSim) -> str:
    assert world.sim.dataplane.wait_health("HEALTHY", timeout=15)
    vip = world.sim.compute.get("globalAddresses", "gmci-ip-shop", project=P)["address"]
    return world.sim.dataplane.url_for(vip, 80)


def routed_drained(world: RunningSim, services: list[str], zone: str) -> None:
    """Wait (at most SIM_DRAIN_SECONDS) until the data plane routes ``services`` with ``zone``'s groups drained."""
    deadline = time.monotonic() + SIM_DRAIN_SECONDS
    while True:
        world.sim.dataplane.refresh()
        views = {v["name"]: v["capacity"] for v in world.sim.dataplane.services() if v["name"] in services}
        if len(views) == len(services) and all(c == 0.0 for v in views.values() for g, c in v.items()
                                               if f"/zones/{zone}/" in g):
            return
        assert time.monotonic() < deadline, views
        time.sleep(0.02)


def test_weights_3_to_1_send_three_quarters_of_the_requests_to_the_heavier_cluster(
        world: RunningSim, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = cli(["lb", "apply", *BASE, "--weight", "prod1=3", "--weight", "prod2=1"], capsys)
    assert code == 0, err
    assert scalers(world) == pytest.approx({"prod1": 1.0, "prod2": 0.3333}, abs=1e-4)
    url = serving_url(world)
    world.sim.dataplane.reseed(14)
    n = 400
    with requests.Session() as s:
        counts = Counter(cluster_of(s.get(f"{url}/", timeout=5)) for _ in range(n))
    # Binomial: the share of prod1 is 3/4 (capacity 1 : 1/3) within 5 standard deviations.
    p = 1.0 / (1.0 + 0.3333)
    sigma = math.sqrt(n * p * (1 - p))
    assert abs(counts["prod1"] - n * p) <= 5 * sigma, counts
    with capsys.disabled():
        print(f"\n3:1 weights: prod1 {counts['prod1']}/{n}, prod2 {counts['prod2']}/{n} "
              f"(expected {n * p:.0f} ± {5 * sigma:.0f})")


def test_a_cluster_drained_for_maintenance_stays_drained_when_the_next_pipeline_runs_lb_apply(
        world: RunningSim, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli(["lb", "apply", *BASE, "--weight", "prod1=2"], capsys)[0] == 0
    code, out, err = cli(["lb", "drain", "prod1", *WHERE], capsys)
    assert code == 0 and "prod1 drained" in out and "prod2" in out, err
    assert scalers(world) == {"prod1": 0.0, "prod2": 0.5}

    # The next pipeline: the same apply, without --weight, changes nothing.
    world.sim.journal.reset()
    code, out, err = cli(["lb", "apply", *BASE], capsys)
    assert code == 0 and "No changes" in out, err
    assert world.sim.journal.writes() == []
    # One that changes the backend service for another reason keeps the drain and the weight too.
    code, out, err = cli(["lb", "apply", *BASE, "--timeout-sec", "45"], capsys)
    assert code == 0 and "backendServices" in out, err
    assert scalers(world) == {"prod1": 0.0, "prod2": 0.5}

    # Undrain restores the weight recorded in Compute (2 : 1), not a flat 1.
    code, out, err = cli(["lb", "undrain", "prod1", *WHERE], capsys)
    assert code == 0 and "prod1 serving again" in out, err
    assert scalers(world) == {"prod1": 1.0, "prod2": 0.5}
    world.sim.journal.reset()
    assert cli(["lb", "undrain", "prod1", *WHERE], capsys)[1].startswith("prod1 is already serving")
    assert world.sim.journal.writes() == []
    code, out, _ = cli(["lb", "plan", *BASE, "--weight", "prod1=1", "--detailed-exitcode"], capsys)
    assert code == 2 and f"backendServices/{BS}" in out
    # Back to equal weights: the recorded weight is cleared, and the next apply makes no write.
    assert cli(["lb", "apply", *BASE, "--weight", "prod1=1"], capsys)[0] == 0
    assert scalers(world) == {"prod1": 1.0, "prod2": 1.0}
    world.sim.journal.reset()
    assert "No changes" in cli(["lb", "apply", *BASE], capsys)[1]
    assert world.sim.journal.writes() == []


def test_draining_the_last_serving_cluster_is_refused_unless_forced(
        world: RunningSim, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli(["lb", "apply", *BASE], capsys)[0] == 0
    assert cli(["lb", "drain", "prod1", *WHERE], capsys)[0] == 0
    world.sim.journal.reset()
    code, _, err = cli(["lb", "drain", "prod2", *WHERE], capsys)
    assert code == 1 and len(err.strip().splitlines()) == 1 and "last cluster serving" in err and "--force" in err
    assert world.sim.journal.writes() == []
    code, out, err = cli(["lb", "drain", "prod2", *WHERE, "--force", "-o", "json"], capsys)
    assert code == 0, err
    assert json.loads(out)["capacityScaler"] == 0.0 and scalers(world) == {"prod1": 0.0, "prod2": 0.0}


def test_one_cluster_alone_cannot_be_drained(make_sim: Any, monkeypatch: pytest.MonkeyPatch,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    from gitlab_mci.sim.spec import parse_spec
    from tests.lb.test_discovery import deploy_app

    running = make_sim(parse_spec({"clusters": [{"name": "prod1", "location": "us-central1-a", "nodes": 1}]}))
    deploy_app(running, "prod1", 30999)
    for key, value in running.env.items():
        monkeypatch.setenv(key, value)
    one = ["--lb", "shop", "--context", "prod1"]
    assert cli(["lb", "apply", *one, "--service", "shop-auto-deploy", "--port", "web"], capsys)[0] == 0
    running.sim.journal.reset()
    code, _, err = cli(["lb", "drain", "prod1", *one, "--force"], capsys)
    assert code == 1 and "only backend" in err and len(err.strip().splitlines()) == 1
    assert running.sim.journal.writes() == []


def test_compute_refuses_the_capacity_scalers_its_discovery_document_rules_out(
        world: RunningSim, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli(["lb", "apply", *BASE], capsys)[0] == 0
    client = Compute(P, world.sim.compute_url).client(compute_v1.BackendServicesClient)
    bs = client.get(project=P, backend_service=BS)
    for value in (0.05, 1.5):
        bs.backends[0].capacity_scaler = value
        with pytest.raises(gexc.BadRequest, match="capacityScaler"):
            client.patch(project=P, backend_service=BS, backend_service_resource=bs)
    only = compute_v1.BackendService(fingerprint=bs.fingerprint, backends=[compute_v1.Backend(
        group=bs.backends[0].group, capacity_scaler=0.0)])
    with pytest.raises(gexc.BadRequest, match="only one backend"):
        client.patch(project=P, backend_service=BS, backend_service_resource=only)


def test_status_shows_each_clusters_weight_and_drain_state(
        world: RunningSim, capsys: pytest.CaptureFixture[str]) -> None:
    # RATE mode too: capacityScaler scales whatever capacity the balancing mode defines.
    assert cli(["lb", "apply", *BASE, "--weight", "prod1=3", "--balancing-mode", "RATE"], capsys)[0] == 0
    assert scalers(world) == pytest.approx({"prod1": 1.0, "prod2": 0.3333}, abs=1e-4)
    assert cli(["lb", "drain", "prod2", *WHERE], capsys)[0] == 0
    code, out, err = cli(["lb", "status", *WHERE, "--wait", "15"], capsys)
    assert code == 0, out + err  # a drained cluster is out on purpose: not unhealthy
    rows = {line.split()[1]: line for line in out.splitlines() if line.strip().startswith(BS)}
    assert rows["prod1"].split()[4:] == ["3", "(x1)", "3/3"] and rows["prod2"].split()[4:] == ["drained", "3/3"]
    assert "drained (no new requests; `lb undrain` ends it): prod2" in out
    code, out, _ = cli(["lb", "status", *WHERE, "-o", "json"], capsys)
    clusters = json.loads(out)["clusters"]
    assert clusters == {"prod1": {"weight": 3.0, "drained": False, "capacityScaler": 1.0},
                        "prod2": {"weight": 1.0, "drained": True, "capacityScaler": 0.0}}
    code, out, _ = cli(["lb", "status", *WHERE, "-o", "markdown"], capsys)
    assert "| Weight |" in out and "| drained |" in out and "| 3 (x1) |" in out


def test_drain_under_20_requests_per_second_fails_no_request_and_moves_prod1s_share_to_0_and_back(
        world: RunningSim, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli(["lb", "apply", *BASE], capsys)[0] == 0
    url = serving_url(world)
    with Load(url) as load:
        load.hold(2.0)  # the load's baseline: both clusters serve
        began = time.monotonic()
        code, _, err = cli(["lb", "drain", "prod1", *WHERE], capsys)
        drained_at = time.monotonic()
        assert code == 0, err
        load.hold(3.0)
        code, _, err = cli(["lb", "undrain", "prod1", *WHERE], capsys)
        undrained_at = time.monotonic()
        assert code == 0, err
        load.hold(2.0)
    log, failed = load.log, load.failed
    assert failed == [], failed[:5]
    before = [c for t, _, c in log if t < began]
    during = [(t, c) for t, _, c in log if drained_at <= t < undrained_at]
    after = [(t, c) for t, _, c in log if t >= undrained_at]
    last_prod1 = max((t for t, c in during if c == "prod1"), default=drained_at)
    zero_within = last_prod1 - drained_at
    back_within = min(t for t, c in after if c == "prod1") - undrained_at
    settled = [c for t, c in during if t > drained_at + SIM_DRAIN_SECONDS]
    with capsys.disabled():
        print(f"\nlb drain prod1 under 20 requests/s: {len(log)} requests, {len(failed)} failed; prod1 share before "
              f"{before.count('prod1')}/{len(before)}; `lb drain` took {drained_at - began:.2f}s; prod1's share "
              f"reached 0 {zero_within:.2f}s after it returned (0 of the {len(settled)} requests after "
              f"{SIM_DRAIN_SECONDS:.0f}s); first prod1 answer {back_within:.2f}s after `lb undrain` returned")
    assert before.count("prod1") > 0 and before.count("prod2") > 0
    assert zero_within <= SIM_DRAIN_SECONDS and settled and "prod1" not in settled
    assert back_within <= SIM_DRAIN_SECONDS


def test_a_cluster_drained_by_hand_with_gcloud_stays_drained_and_lb_undrain_brings_it_back(
        world: RunningSim, capsys: pytest.CaptureFixture[str]) -> None:
    # Google's own maintenance recipe: `gcloud compute backend-services update-backend --capacity-scaler=0`.
    from tests.sim.test_compute_gcloud import gcloud

    assert cli(["lb", "apply", *BASE, "--weight", "prod2=2"], capsys)[0] == 0
    described = json.loads(gcloud(world, "compute", "backend-services", "describe", BS, "--global", "--format",
                                  "json"))
    by_zone = {b["group"].split("/zones/")[1].split("/")[0]: b for b in described["backends"]}
    assert by_zone["europe-west1-b"]["description"] == "gitlab-mci weight=2"  # the weight, as gcloud reads it
    assert by_zone["us-central1-a"]["capacityScaler"] == 0.5 and by_zone["europe-west1-b"]["capacityScaler"] == 1
    group = by_zone["us-central1-a"]["group"].rsplit("/", 1)[1]
    gcloud(world, "compute", "backend-services", "update-backend", BS, "--global", "--instance-group", group,
           "--instance-group-zone", "us-central1-a", "--capacity-scaler", "0")

    world.sim.journal.reset()
    code, out, err = cli(["lb", "apply", *BASE], capsys)
    assert code == 0 and "No changes" in out, err
    assert world.sim.journal.writes() == []
    code, out, _ = cli(["lb", "status", *WHERE, "-o", "json"], capsys)
    assert json.loads(out)["clusters"]["prod1"]["drained"] is True
    assert cli(["lb", "undrain", "prod1", *WHERE], capsys)[0] == 0
    assert scalers(world) == {"prod1": 0.5, "prod2": 1.0}


def test_a_drain_racing_a_colleagues_change_to_another_cluster_keeps_both(
        world: RunningSim, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    """Someone halves prod2's capacity with gcloud between `lb drain prod1`'s read and its write: Compute answers the
    write 412 (stale fingerprint), and the drain is computed again from what Compute now holds — prod2's 0.5 is
    not overwritten by the 1.0 the drain first read."""
    from gitlab_mci.lb import traffic
    from tests.sim.test_compute_gcloud import gcloud

    assert cli(["lb", "apply", *BASE], capsys)[0] == 0
    group = next(b.group for b in Compute(P, world.sim.compute_url).client(compute_v1.BackendServicesClient)
                 .get(project=P, backend_service=BS).backends if "/zones/europe-west1-b/" in b.group)
    original, calls = traffic.with_drain, []

    def racing(bs: Any, *args: Any) -> Any:
        calls.append(1)
        if len(calls) == 2:  # the first computation inside the write, from the resource as read with its fingerprint
            gcloud(world, "compute", "backend-services", "update-backend", BS, "--global", "--instance-group",
                   group.rsplit("/", 1)[1], "--instance-group-zone", "europe-west1-b", "--capacity-scaler", "0.5")
        return original(bs, *args)

    monkeypatch.setattr(traffic, "with_drain", racing)
    world.sim.journal.reset()
    code, _, err = cli(["lb", "drain", "prod1", *WHERE], capsys)
    assert code == 0, err
    assert scalers(world) == {"prod1": 0.0, "prod2": 0.5}
    assert any(e.status == 412 for e in world.sim.journal.entries()), "the stale write was not refused"


def test_a_cluster_added_while_another_is_drained_joins_serving_and_the_drain_stays(
        make_sim: Any, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    from tests.lb.app_clusters import app_clusters

    running = app_clusters(make_sim, monkeypatch, nodes=1)
    routing = ["--service", "shop-auto-deploy", "--port", "web"]
    two, three = ["--lb", "shop", "--context", "prod1,prod2"], ["--lb", "shop", "--context", "prod1,prod2,prod3"]
    assert cli(["lb", "apply", *two, *routing, "--weight", "prod2=2"], capsys)[0] == 0
    assert cli(["lb", "drain", "prod1", *two], capsys)[0] == 0
    code, _, err = cli(["lb", "apply", *three, *routing], capsys)
    assert code == 0, err
    bs = running.sim.compute.get("backendServices", BS, project=P)
    by_zone = {b["group"].split("/zones/")[1].split("/")[0]: b["capacityScaler"] for b in bs["backends"]}
    # prod3 joins with weight 1 (relative to prod2's 2); prod1 stays drained until undrained.
    assert by_zone == {"us-central1-a": 0.0, "europe-west1-b": 1.0, "asia-east1-a": 0.5}
    assert cli(["lb", "undrain", "prod1", *three], capsys)[0] == 0
    bs = running.sim.compute.get("backendServices", BS, project=P)
    assert sorted(b["capacityScaler"] for b in bs["backends"]) == [0.5, 0.5, 1.0]


INGRESS = """apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: shop}
spec:
  defaultBackend: {service: {name: shop-auto-deploy, port: {name: web}}}
  rules:
  - http:
      paths:
      - {path: /api, pathType: Prefix, backend: {service: {name: shop-api, port: {number: 8080}}}}
"""


def test_draining_a_cluster_covers_every_service_an_ingress_routes_to(
        world: RunningSim, capsys: pytest.CaptureFixture[str], tmp_path: Any) -> None:
    from kubernetes import client as k8s

    for cluster in ("prod1", "prod2"):
        core = k8s.CoreV1Api(k8s.ApiClient(k8s.Configuration(host=world.sim.kube_url(cluster))))
        core.create_namespaced_service("default", {"metadata": {"name": "shop-api"}, "spec": {
            "type": "NodePort", "selector": {"app": "shop", "tier": "web", "track": "stable"},
            "ports": [{"port": 8080, "targetPort": 5000, "nodePort": 31000}]}})
    ingress = tmp_path / "ingress.yaml"
    ingress.write_text(INGRESS)
    where = ["--lb", "shop", "--context", "prod1,prod2"]
    code, _, err = cli(["lb", "apply", *where, "--ingress", str(ingress)], capsys)
    assert code == 0, err
    code, out, err = cli(["lb", "drain", "prod1", *where, "-o", "json"], capsys)
    assert code == 0, err
    assert json.loads(out)["changed"] == ["gmci-bs-shop-30999", "gmci-bs-shop-31000"]
    url = serving_url(world)
    routed_drained(world, ["gmci-bs-shop-30999", "gmci-bs-shop-31000"], "us-central1-a")
    with requests.Session() as s:
        seen = Counter((path, cluster_of(s.get(f"{url}{path}", timeout=5))) for path in ("/", "/api/x") * 20)
    assert seen == {("/", "prod2"): 20, ("/api/x", "prod2"): 20}


def test_requests_in_flight_on_a_cluster_being_drained_finish_there(
        world: RunningSim, capsys: pytest.CaptureFixture[str]) -> None:
    from concurrent.futures import ThreadPoolExecutor

    from gitlab_mci.sim.dataplane import DELAY_PARAM

    assert cli(["lb", "apply", *BASE], capsys)[0] == 0
    url = serving_url(world)

    def slow() -> tuple[int, str, float]:
        r = requests.get(f"{url}/checkout?{DELAY_PARAM}=2", timeout=10)
        return r.status_code, cluster_of(r) if r.status_code == 200 else r.text, time.monotonic()

    with ThreadPoolExecutor(4) as pool:
        in_flight = [pool.submit(slow) for _ in range(4)]  # round robin: two on each cluster
        deadline = time.monotonic() + 1.5  # well before they answer (2 s after their backend was picked)
        while world.sim.dataplane.in_flight() != {"prod1": 2, "prod2": 2}:
            assert time.monotonic() < deadline, world.sim.dataplane.in_flight()
            time.sleep(0.01)
        code, _, err = cli(["lb", "drain", "prod1", *WHERE], capsys)
        drained_at = time.monotonic()
        assert code == 0, err
        done = [f.result() for f in in_flight]
    assert sorted((status, cluster) for status, cluster, _ in done) == [
        (200, "prod1"), (200, "prod1"), (200, "prod2"), (200, "prod2")]
    assert all(t > drained_at for _, c, t in done if c == "prod1")  # answered by prod1 after the drain
    assert world.sim.dataplane.in_flight() == {}
    routed_drained(world, [BS], "us-central1-a")
    with requests.Session() as s:
        assert {cluster_of(s.get(f"{url}/", timeout=5)) for _ in range(10)} == {"prod2"}
