"""`gitlab-mci neg expose|verify`: the Service gets our NEG annotation and GKE's NEG controller answers with
``cloud.google.com/neg-status``. Emulated API servers with the real kubernetes client; a stand-in for GKE's NEG
controller (a client of the API server like the real one) answers the annotation, or stays silent."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import urllib.request
from typing import Any

import pytest

from tests.cli_helpers import run_cli

NEG = "cloud.google.com/neg"
STATUS = "cloud.google.com/neg-status"
ZONES = ["europe-west1-b", "europe-west1-c"]


def neg_controller(c: Any, cluster: str, zones: list[str] = ZONES) -> list[str]:
    """GKE's NEG controller for one cluster: for every Service annotated with exposed_ports, write neg-status
    (port -> the asked name, else a GKE-style one) from another thread, through the API, as GKE does. Returns the
    list of Services it wrote status for."""
    server, url = c.servers[cluster], c.urls[cluster]
    wrote: list[str] = []

    def write(ns: str, name: str, status: str) -> None:
        body = json.dumps({"metadata": {"annotations": {STATUS: status}}}).encode()
        req = urllib.request.Request(f"{url}/api/v1/namespaces/{ns}/services/{name}", data=body, method="PATCH",
                                     headers={"Content-Type": "application/merge-patch+json"})
        urllib.request.urlopen(req, timeout=10).read()
        wrote.append(f"{ns}/{name}")

    def on_change(event: str, obj: dict) -> None:
        if obj.get("kind") != "Service" or event == "DELETED":
            return
        notes = obj["metadata"].get("annotations") or {}
        if NEG not in notes:
            return
        ports = json.loads(notes[NEG]).get("exposed_ports") or {}
        negs = {p: (v or {}).get("name") or f"k8s1-0123abcd-{obj['metadata']['name']}-{p}" for p, v in ports.items()}
        status = json.dumps({"network_endpoint_groups": negs, "zones": zones})
        current = notes.get(STATUS)
        if current is not None and json.loads(current) == json.loads(status):
            return
        threading.Thread(target=write, args=(obj["metadata"]["namespace"], obj["metadata"]["name"], status),
                         daemon=True).start()

    server.add_listener(on_change)
    return wrote


def annotations_of(c: Any, cluster: str, name: str = "app-auto-deploy") -> dict[str, str]:
    return dict(c.service(cluster, name)["metadata"].get("annotations") or {})


def expose(capsys: pytest.CaptureFixture[str], *extra: str) -> tuple[int, str, str]:
    return run_cli(["neg", "expose", "--context", "prod1", "--release", "app", "--lb", "shop", "--timeout", "10",
                    *extra], capsys)


def test_expose_annotates_a_clusterip_service_and_reports_the_negs_and_zones(
    clusters: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    c = clusters("prod1")
    c.add_app_service("prod1", type_="ClusterIP")
    neg_controller(c, "prod1")
    code, out, err = expose(capsys)
    assert code == 0, err
    svc = c.service("prod1", "app-auto-deploy")
    assert json.loads(svc["metadata"]["annotations"][NEG]) == {"exposed_ports": {"5000": {"name": "gmci-neg-shop-5000"}}}
    assert svc["spec"]["type"] == "ClusterIP"
    assert "nodePort" not in svc["spec"]["ports"][0]
    assert out.strip() == ("prod1: Service default/app-auto-deploy port 5000 is now exposed as NEG gmci-neg-shop-5000 "
                           "in europe-west1-b, europe-west1-c")


def test_rerun_of_expose_makes_no_write(clusters: Any, capsys: pytest.CaptureFixture[str]) -> None:
    c = clusters("prod1")
    c.add_app_service("prod1", type_="ClusterIP")
    neg_controller(c, "prod1")
    assert expose(capsys)[0] == 0
    c.journal.reset()
    code, out, err = expose(capsys, "-o", "json")
    assert code == 0, err
    assert c.journal.writes() == []
    assert json.loads(out) == {"cluster": "prod1", "service": "default/app-auto-deploy", "type": "ClusterIP",
                               "port": 5000, "neg": "gmci-neg-shop-5000", "zones": ZONES, "status": "ok"}


def test_a_service_already_exposing_another_port_keeps_it_and_the_users_other_annotations(
    clusters: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    """The user exposes a metrics port as a NEG of their own (autoneg), and has other annotations."""
    c = clusters("prod1")
    theirs = {NEG: json.dumps({"exposed_ports": {"9090": {"name": "metrics-neg"}}}),
              "prometheus.io/scrape": "true", "cloud.google.com/backend-config": '{"default": "bc"}'}
    svc = {"apiVersion": "v1", "kind": "Service",
           "metadata": {"name": "app-auto-deploy", "namespace": "default", "annotations": theirs,
                        "labels": {"app": "app", "track": "stable", "tier": "web"}},
           "spec": {"type": "ClusterIP", "selector": {"app": "app"},
                    "ports": [{"name": "web", "port": 5000, "targetPort": 5000},
                              {"name": "metrics", "port": 9090, "targetPort": 9090}]}}
    c.servers["prod1"].seed(svc)
    neg_controller(c, "prod1")
    code, _, err = expose(capsys)
    assert code == 0, err
    now = annotations_of(c, "prod1")
    assert json.loads(now[NEG]) == {"exposed_ports": {"9090": {"name": "metrics-neg"},
                                                      "5000": {"name": "gmci-neg-shop-5000"}}}
    assert now["prometheus.io/scrape"] == "true"
    assert now["cloud.google.com/backend-config"] == '{"default": "bc"}'


def test_expose_on_a_cluster_whose_neg_controller_never_answers_exits_3(
    clusters: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    """E.g. a routes-based (not VPC-native) cluster: GKE writes no neg-status."""
    c = clusters("prod1")
    c.add_app_service("prod1", type_="ClusterIP")
    code, _, err = run_cli(["neg", "expose", "--context", "prod1", "--release", "app", "--lb", "shop",
                            "--timeout", "1"], capsys)
    assert code == 3
    assert err.splitlines()[0] == ("gitlab-mci: waiting for GKE's NEG controller to report NEG gmci-neg-shop-5000 for "
                                   "Service default/app-auto-deploy port 5000 (0s of 1s)")
    last = err.splitlines()[-1]
    assert last == ("gitlab-mci: error: context 'prod1': GKE's NEG controller wrote no cloud.google.com/neg-status "
                    "for port 5000 of Service default/app-auto-deploy within 1s; NEGs need a VPC-native cluster "
                    "(check `kubectl describe service app-auto-deploy` for events)")
    # The annotation stays: a later run (or the controller catching up) needs no other write.
    assert NEG in annotations_of(c, "prod1")


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("missing-service", "context 'prod1': no Service default/nothing-auto-deploy"),
        ("port-not-on-the-service", "context 'prod1': Service default/app-auto-deploy: Service has no port '8080' "
                                    "(ports: web:5000)"),
        ("port-exposed-under-another-name",
         "context 'prod1': Service default/app-auto-deploy already exposes port 5000 as NEG 'theirs' "
         "(cloud.google.com/neg); load balancer shop needs it named gmci-neg-shop-5000: remove that port from the "
         "annotation (or use that load balancer's name)"),
        ("annotation-not-json", "context 'prod1': Service default/app-auto-deploy: annotation cloud.google.com/neg is "
                                "not JSON"),
        ("bad-lb-name", "load balancer name 'Shop!' must be lowercase letters"),
        ("no-release", "no release: pass --release or --service"),
    ],
)
def test_bad_inputs_are_one_line_and_write_nothing(
    case: str, message: str, clusters: Any, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    c = clusters("prod1")
    svc = c.add_app_service("prod1", type_="ClusterIP")
    if case == "port-exposed-under-another-name":
        svc["metadata"]["annotations"] = {NEG: json.dumps({"exposed_ports": {"5000": {"name": "theirs"}}})}
    elif case == "annotation-not-json":
        svc["metadata"]["annotations"] = {NEG: "exposed_ports: 5000"}
    if "annotations" in svc["metadata"]:
        c.servers["prod1"].seed({**svc, "metadata": {**svc["metadata"], "name": "other", "uid": None}})
    monkeypatch.delenv("CI_ENVIRONMENT_SLUG", raising=False)
    monkeypatch.delenv("HELM_RELEASE_NAME", raising=False)
    args = ["neg", "expose", "--context", "prod1", "--release", "app", "--lb", "shop", "--timeout", "1"]
    if case == "missing-service":
        args[5] = "nothing"
    elif case == "port-not-on-the-service":
        args += ["--port", "8080"]
    elif case in ("port-exposed-under-another-name", "annotation-not-json"):
        args += ["--service", "other"]
        message = message.replace("app-auto-deploy", "other")
    elif case == "bad-lb-name":
        args[7] = "Shop!"
    elif case == "no-release":
        args = ["neg", "expose", "--context", "prod1", "--lb", "shop"]
    c.journal.reset()
    code, _, err = run_cli(args, capsys)
    assert code == 1, err
    assert len(err.splitlines()) == 1 and err.startswith("gitlab-mci: error: ")
    assert message in err
    assert c.journal.writes() == []


def test_a_neg_name_another_service_asks_for_is_refused(clusters: Any, capsys: pytest.CaptureFixture[str]) -> None:
    """Two releases in one cluster behind one load balancer name: the second would take the first's NEG."""
    c = clusters("prod1")
    c.add_app_service("prod1", type_="ClusterIP")
    neg_controller(c, "prod1")
    assert expose(capsys)[0] == 0
    c.add_app_service("prod1", release="blue", type_="ClusterIP")
    c.journal.reset()
    code, _, err = run_cli(["neg", "expose", "--context", "prod1", "--release", "blue", "--lb", "shop"], capsys)
    assert code == 1
    assert err.strip() == ("gitlab-mci: error: context 'prod1': NEG gmci-neg-shop-5000 is already asked for by "
                           "Service default/app-auto-deploy; one load balancer name serves one Service per cluster")
    assert c.journal.writes() == []


def test_expose_writes_a_dotenv_for_the_load_balancer_job(
    clusters: Any, capsys: pytest.CaptureFixture[str], tmp_path: Any
) -> None:
    c = clusters("prod1")
    c.add_app_service("prod1", type_="ClusterIP")
    neg_controller(c, "prod1")
    dotenv = tmp_path / "neg.env"
    dotenv.write_text("MCI_PIN_CONTEXT_PROD1=prod1\n")
    code, _, err = expose(capsys, "--dotenv", str(dotenv))
    assert code == 0, err
    assert dotenv.read_text().splitlines() == [
        "MCI_PIN_CONTEXT_PROD1=prod1", "MCI_NEG_NAME=gmci-neg-shop-5000",
        "MCI_NEG_ZONES_PROD1=europe-west1-b,europe-west1-c"]


def test_verify_checks_every_cluster_and_fails_on_one_not_exposed(
    clusters: Any, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("MCI_CONTEXTS", raising=False)
    c = clusters("prod1", "prod2")
    for name in ("prod1", "prod2"):
        c.add_app_service(name, type_="ClusterIP")
    neg_controller(c, "prod1")
    assert expose(capsys)[0] == 0
    c.journal.reset()
    code, out, err = run_cli(["neg", "verify", "--release", "app", "--lb", "shop"], capsys)
    assert code == 1
    lines = out.splitlines()
    assert lines[0].split() == ["CLUSTER", "SERVICE", "PORT", "NEG", "ZONES", "STATUS"]
    assert lines[1].split() == ["prod1", "default/app-auto-deploy", "5000", "gmci-neg-shop-5000",
                                "europe-west1-b,europe-west1-c", "ok"]
    assert lines[2].split() == ["prod2", "default/app-auto-deploy", "5000", "gmci-neg-shop-5000", "-",
                                "not-exposed"]
    assert err.strip() == "gitlab-mci: error: 1 of 2 Service(s) are not exposed: prod2 default/app-auto-deploy " \
                          "(not-exposed)"
    assert c.journal.writes() == []


def test_neg_commands_import_no_google_cloud_module(clusters: Any) -> None:
    c = clusters("prod1")
    c.add_app_service("prod1", type_="ClusterIP")
    code = ("import sys\nfrom gitlab_mci.cli import main\n"
            "try:\n    main(['neg', 'expose', '--context', 'prod1', '--release', 'app', '--lb', 'shop', "
            "'--timeout', '0'])\nexcept SystemExit:\n    pass\n"
            "print('GOOGLE', sorted(m for m in sys.modules if m.startswith(('google.cloud', 'google.api_core'))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                         env={**os.environ, "KUBECONFIG": str(c.kubeconfig)})
    assert "GOOGLE []" in out.stdout, out.stderr


# --- against the simulator's GKE NEG controller (the real NEGs in Compute) ------------------------------------------


def _sim_world(make_sim: Any, monkeypatch: pytest.MonkeyPatch, **prod2: Any) -> Any:
    from gitlab_mci.sim.spec import parse_spec

    running = make_sim(parse_spec({"negSyncDelay": 0.05, "clusters": [
        {"name": "prod1", "location": "us-central1-a", "nodes": 1},
        {"name": "prod2", "location": "europe-west1", "nodes": 1, **prod2}]}))
    for key, value in running.env.items():
        monkeypatch.setenv(key, value)
    return running


def _deploy(capsys: pytest.CaptureFixture[str], cluster: str) -> None:
    code, _, err = run_cli(["sim", "deploy", "--context", cluster, "--release", "app"], capsys)
    assert code == 0, err


def test_expose_on_a_regional_cluster_reports_the_neg_gke_made_in_each_of_its_zones(
    make_sim: Any, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    running = _sim_world(make_sim, monkeypatch)
    _deploy(capsys, "prod2")  # the chart's ClusterIP Service, as Auto DevOps deploys it
    code, out, err = run_cli(["neg", "expose", "--context", "prod2", "--release", "app", "--lb", "shop",
                              "--timeout", "30", "-o", "json"], capsys)
    assert code == 0, err
    row = json.loads(out)
    zones = sorted(n["zone"].rsplit("/", 1)[1] for n in running.sim.compute.resources("networkEndpointGroups")
                   if n["name"] == "gmci-neg-shop-5000")
    assert len(zones) == 3 and row["zones"] == zones
    assert (row["type"], row["neg"], row["status"]) == ("ClusterIP", "gmci-neg-shop-5000", "exposed")
    running.sim.journal.reset()
    code, out, err = run_cli(["neg", "expose", "--context", "prod2", "--release", "app", "--lb", "shop"], capsys)
    assert code == 0, err
    assert "is exposed as NEG gmci-neg-shop-5000 in europe-west1-" in out
    assert [e for e in running.sim.journal.writes() if e.service.startswith("kube")] == []


def test_expose_on_a_routes_based_cluster_exits_3_with_what_gke_says(
    make_sim: Any, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    _sim_world(make_sim, monkeypatch, vpcNative=False)
    _deploy(capsys, "prod2")
    code, _, err = run_cli(["neg", "expose", "--context", "prod2", "--release", "app", "--lb", "shop",
                            "--timeout", "2"], capsys)
    assert code == 3
    last = err.splitlines()[-1]
    assert last.startswith("gitlab-mci: error: context 'prod2': GKE's NEG controller wrote no "
                           "cloud.google.com/neg-status for port 5000 of Service default/app-auto-deploy within 2s; "
                           "GKE's NEG controller says: NEGs (network endpoint groups) need a VPC-native cluster")
