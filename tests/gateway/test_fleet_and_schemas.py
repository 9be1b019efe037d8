"""`fleet enable --features gateway` through google-cloud-gke-hub, then a gateway on that fleet; the Gateway API
schemas kept in gitlab_mci/gateway/schemas accept what gitlab-mci renders and refuse what GKE would refuse."""

from __future__ import annotations

import copy
import dataclasses
import json
import os
import subprocess
from typing import Any

import pytest

from gitlab_mci.errors import UserError
from gitlab_mci.gateway.manifests import desired
from gitlab_mci.gateway.model import AppService, GatewayModel, Serving, validate
from gitlab_mci.sim.spec import parse_spec
from tests.cli_helpers import run_cli as cli
from tests.conftest import RunningSim
from tests.gateway.conftest import deploy_app


def test_fleet_enable_for_gateway_enables_both_features_once_and_a_gateway_then_applies(
        make_sim: Any, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    running: RunningSim = make_sim(parse_spec({
        "clusters": [{"name": "prod1", "location": "us-central1-a", "nodes": 1},
                     {"name": "prod2", "location": "europe-west1", "nodes": 1}], "mciProvisioningDelay": 0.05}))
    for name in ("prod1", "prod2"):
        deploy_app(running, name, replicas=1)
    for key, value in running.env.items():
        monkeypatch.setenv(key, value)
    running.sim.journal.reset()
    args = ["fleet", "enable", "--context", "prod1,prod2", "--features", "gateway"]
    code, out, err = cli([*args, "--dry-run"], capsys)
    assert code == 0, err
    assert out.splitlines() == [
        "+ membership prod1 (us-central1-a/prod1)", "+ membership prod2 (europe-west1/prod2)",
        "+ feature multiclusterservicediscovery",
        "+ feature multiclusteringress (config membership projects/demo-project/locations/global/memberships/prod1)"]
    assert running.sim.journal.writes() == []
    code, out, err = cli(args, capsys)
    assert code == 0, err
    assert running.sim.gkehub.feature_enabled("multiclusterservicediscovery")
    assert running.sim.gkehub.config_link() == "us-central1-a/prod1"
    running.sim.journal.reset()
    assert cli(args, capsys)[0] == 0 and running.sim.journal.writes() == []
    code, out, _ = cli(["fleet", "status"], capsys)
    assert code == 0 and "multiclusterservicediscovery: enabled (gateway mode needs it)" in out.splitlines()
    assert cli(["fleet", "enable", "--context", "prod1", "--features", "mesh"], capsys)[2].strip() == \
        "gitlab-mci: error: --features mesh: not a mode (ingress, gateway)"
    # GKE installs the net.gke.io CRDs and the multi-cluster GatewayClasses once the features are on.
    assert running.sim.mcs.settle() and running.sim.gateway.settle()
    code, out, err = cli(["gateway", "apply", "--lb", "shop", "--context", "prod1,prod2", "--service",
                          "shop-auto-deploy"], capsys)
    assert code == 0, err
    assert "ready at http://" in out
    # gcloud reads the fleet features and the controller's URL map (route rules, weighted backend services).
    assert json.loads(gcloud(running, "container", "fleet", "multi-cluster-services", "describe"))["name"].endswith(
        "/features/multiclusterservicediscovery")
    maps = json.loads(gcloud(running, "compute", "url-maps", "list", "--filter=name~^gkemcg1-"))
    [rule] = maps[0]["pathMatchers"][0]["routeRules"]
    assert sorted(w["backendService"].rsplit("/", 1)[-1].split("-5000-")[0]
                  for w in rule["routeAction"]["weightedBackendServices"]) == [
        "gkemcg1-default-shop-auto-deploy-prod1", "gkemcg1-default-shop-auto-deploy-prod2"]
    assert cli(["gateway", "delete", "--lb", "shop", "--context", "prod1,prod2"], capsys)[0] == 0


def gcloud(running: RunningSim, *args: str) -> str:
    done = subprocess.run(["gcloud", *args, "--format=json", "--quiet"], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "CLOUDSDK_CONFIG": str(running.files.gcloud_config)})
    assert done.returncode == 0, done.stderr
    return done.stdout


MODEL = GatewayModel(
    lb="shop", namespace="default", gateway_class="gke-l7-global-external-managed-mc",
    clusters=[Serving("prod1", "prod1", 9), Serving("prod2", "prod2", 1)],
    services={"web": AppService("web", {"app": "shop"}, ({"name": "web", "port": 5000, "targetPort": 5000,
                                                          "protocol": "TCP"},))},
    rules=[{"matches": [{"path": {"type": "PathPrefix", "value": "/api"},
                         "headers": [{"name": "x-canary", "value": "true"}]}],
            "backendRefs": [{"service": "web", "port": "web", "weight": 1}]}],
    hostnames=["shop.example.com"], static_ip="web-ip", pre_shared_certs=("shop-cert",), https_redirect=True)


def test_every_rendered_gateway_and_httproute_is_valid_and_weights_are_per_cluster() -> None:
    objects = [d.obj for d in desired(MODEL, "prod1")]
    assert [(o["kind"], o["metadata"]["name"]) for o in objects] == [
        ("Service", "web-prod1"), ("Service", "web-prod2"), ("ServiceExport", "web-prod1"),
        ("ServiceExport", "web-prod2"), ("Gateway", "shop"), ("HTTPRoute", "shop"), ("HTTPRoute", "shop-redirect")]
    for obj in objects[4:]:
        validate(obj, "test")
    route = objects[5]
    assert route["spec"]["parentRefs"] == [{"name": "shop", "sectionName": "https"}]
    assert route["spec"]["rules"][0]["backendRefs"] == [
        {"group": "net.gke.io", "kind": "ServiceImport", "name": "web-prod1", "port": 5000, "weight": 9},
        {"group": "net.gke.io", "kind": "ServiceImport", "name": "web-prod2", "port": 5000, "weight": 1}]
    assert objects[4]["spec"]["addresses"] == [{"type": "NamedAddress", "value": "web-ip"}]


def _break(kind: str, change: Any) -> dict[str, Any]:
    obj = copy.deepcopy(next(d.obj for d in desired(MODEL, "prod1") if d.obj["kind"] == kind))
    change(obj["spec"])
    return obj


@pytest.mark.parametrize(("kind", "change", "said"), [
    ("Gateway", lambda s: s.pop("gatewayClassName"), "'gatewayClassName' is a required property"),
    ("Gateway", lambda s: s["listeners"][0].update(name="HTTP"), "spec.listeners.0.name"),
    ("Gateway", lambda s: s["listeners"][0].update(port=70000), "spec.listeners.0.port"),
    ("HTTPRoute", lambda s: s["rules"][0]["backendRefs"][0].update(weight=2_000_000), "weight"),
    ("HTTPRoute", lambda s: s["rules"][0]["matches"][0]["path"].update(type="Glob"), "path.type"),
    ("HTTPRoute", lambda s: s.update(rules=[{}] * 17), "spec.rules"),
])
def test_the_schemas_refuse_what_the_gateway_api_refuses(kind: str, change: Any, said: str) -> None:
    with pytest.raises(UserError) as caught:
        validate(_break(kind, change), "test")
    assert said in str(caught.value), caught.value


POLICY_MODEL = dataclasses.replace(
    MODEL, backend_policy={"timeoutSec": 45, "logging": {"enabled": True, "sampleRate": 500000}},
    gateway_policy={"sslPolicy": "shop-tls"})


@pytest.mark.parametrize(("kind", "change", "said"), [
    ("GCPBackendPolicy", lambda s: s["default"].update(timeoutSec=0), "spec.default.timeoutSec"),
    ("GCPBackendPolicy", lambda s: s["default"]["logging"].update(sampleRate=0.5), "spec.default.logging.sampleRate"),
    ("GCPBackendPolicy", lambda s: s["default"].update(cdn={"enabled": True}), "spec.default"),
    ("GCPBackendPolicy", lambda s: s["targetRef"].update(kind="Service"), "spec.targetRef.kind"),
    ("GCPGatewayPolicy", lambda s: s["default"].update(sslPolicy=""), "spec.default.sslPolicy"),
])
def test_the_policy_schemas_refuse_what_gke_refuses(kind: str, change: Any, said: str) -> None:
    rendered = [d.obj for d in desired(POLICY_MODEL, "prod1") if d.obj["kind"] == kind]
    assert len(rendered) == (1 if kind == "GCPGatewayPolicy" else 2)  # a backend policy per cluster's ServiceImport
    for obj in rendered:
        validate(obj, "test")
    broken = copy.deepcopy(rendered[0])
    change(broken["spec"])
    with pytest.raises(UserError) as caught:
        validate(broken, "test")
    assert said in str(caught.value), caught.value
