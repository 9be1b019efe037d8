"""The simulated multi-cluster Services and Gateway controllers as a user of kubectl sees them: ServiceImports in
every member after the delay, Gateway and HTTPRoute status, Warning events when something cannot be built, hosts
routed apart, the finalizer; and `gitlab-mci gateway` quoting the controller when it does not get ready."""

from __future__ import annotations

import json
import os
import subprocess
from typing import Any

import pytest
import requests

from gitlab_mci.errors import UserError
from tests.cli_helpers import run_cli as cli
from tests.conftest import RunningSim
from tests.gateway.conftest import CLUSTERS


def kubectl(running: RunningSim, *args: str, stdin: str | None = None, context: str = "prod1") -> str:
    done = subprocess.run(["kubectl", "--context", context, *args], capture_output=True, text=True, timeout=60,
                          input=stdin, env={**os.environ, "KUBECONFIG": str(running.files.kubeconfig)})
    assert done.returncode == 0, done.stderr
    return done.stdout


def export(running: RunningSim, cluster: str, name: str) -> None:
    kubectl(running, "apply", "-f", "-", context=cluster, stdin=json.dumps({
        "apiVersion": "net.gke.io/v1", "kind": "ServiceExport", "metadata": {"name": name, "namespace": "default"}}))


def test_service_imports_appear_in_every_member_only_after_the_delay(gateway_world: RunningSim) -> None:
    # A delay far longer than the check takes, so "not yet" does not depend on how fast kubectl answers.
    gateway_world.sim.mcs.delay = 60.0
    export(gateway_world, "prod2", "shop-auto-deploy")
    # Right after the export: no import yet anywhere (GKE takes minutes; the simulator its delay).
    assert json.loads(kubectl(gateway_world, "get", "serviceimports", "-o", "json"))["items"] == []
    gateway_world.sim.mcs.delay = 0.0
    gateway_world.sim.mcs.poke()
    assert gateway_world.sim.mcs.settle()
    for cluster in CLUSTERS:
        found = json.loads(kubectl(gateway_world, "get", "serviceimport", "shop-auto-deploy", "-o", "json",
                                   context=cluster))
        assert found["status"]["clusters"] == [{"cluster": "prod2"}]
        assert found["spec"]["ports"] == [{"name": "web", "port": 5000, "protocol": "TCP"}]
    exported = json.loads(kubectl(gateway_world, "get", "serviceexport", "shop-auto-deploy", "-o", "json",
                                  context="prod2"))
    assert {c["type"]: c["status"] for c in exported["status"]["conditions"]} == {"Initialized": "True",
                                                                                 "Exported": "True"}
    export(gateway_world, "prod3", "no-such-service")
    assert gateway_world.sim.mcs.settle()
    missing = json.loads(kubectl(gateway_world, "get", "serviceexport", "no-such-service", "-o", "json",
                                 context="prod3"))
    assert {c["type"]: c["reason"] for c in missing["status"]["conditions"]}["Exported"] == "NoService"
    assert "no-such-service" not in kubectl(gateway_world, "get", "serviceimports")
    kubectl(gateway_world, "delete", "serviceexport", "shop-auto-deploy", context="prod2")
    assert gateway_world.sim.mcs.settle()
    assert json.loads(kubectl(gateway_world, "get", "serviceimports", "-o", "json", context="prod3"))["items"] == []


BROKEN = """\
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: shop, namespace: default}
spec:
  gatewayClassName: gke-l7-global-external-managed-mc
  addresses: [{type: NamedAddress, value: nope-ip}]
  listeners: [{name: http, protocol: HTTP, port: 80}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: shop, namespace: default}
spec:
  parentRefs: [{name: shop}]
  rules:
  - backendRefs: [{name: shop-auto-deploy, port: 5000}]
"""


def test_what_the_controller_cannot_build_is_in_conditions_and_warning_events(
        gateway_world: RunningSim, capsys: pytest.CaptureFixture[str]) -> None:
    from gitlab_mci import kube
    from gitlab_mci.gateway.engine import wait_ready

    kubectl(gateway_world, "apply", "-f", "-", stdin=BROKEN)
    assert gateway_world.sim.gateway.settle()
    gw = json.loads(kubectl(gateway_world, "get", "gateway", "shop", "-o", "json"))
    programmed = next(c for c in gw["status"]["conditions"] if c["type"] == "Programmed")
    assert (programmed["status"], programmed["message"]) == ("False", "NamedAddress 'nope-ip': no global address "
                                                                      "of that name")
    assert gw["status"]["addresses"] == [] and gw["metadata"]["finalizers"] == ["gateway.finalizer.networking.gke.io"]
    route = json.loads(kubectl(gateway_world, "get", "httproute", "shop", "-o", "json"))
    resolved = next(c for c in route["status"]["parents"][0]["conditions"] if c["type"] == "ResolvedRefs")
    assert resolved["status"] == "False" and "a multi-cluster Gateway routes to ServiceImports" in resolved["message"]
    events = kubectl(gateway_world, "get", "events", "--field-selector", "type=Warning", "-o", "json")
    said = {(e["involvedObject"]["kind"], e["message"]) for e in json.loads(events)["items"]}
    assert ("Gateway", "NamedAddress 'nope-ip': no global address of that name") in said
    assert any(kind == "HTTPRoute" and "ServiceImports (group net.gke.io)" in msg for kind, msg in said)
    assert not [r for r in gateway_world.sim.compute.resources() if r["name"].startswith("gkemcg1-")]

    with pytest.raises(UserError) as caught:
        wait_ready(kube.connect("prod1"), "default", "shop", ["shop"], timeout=0.3, interval=0.1)
    assert str(caught.value) == ("Gateway default/shop is not ready after 0.3s; GKE says: Programmed=False (Invalid): "
                                 "NamedAddress 'nope-ip': no global address of that name; see `gitlab-mci gateway "
                                 "status`")
    code, out, _ = cli(["gateway", "status", "--lb", "shop", "--context", "prod1", "--wait", "0.2"], capsys)
    assert code == 3
    assert "  Programmed: False (Invalid): NamedAddress 'nope-ip': no global address of that name" in out
    assert "  warning: NamedAddress 'nope-ip': no global address of that name" in out

    kubectl(gateway_world, "delete", "httproute,gateway", "shop", "--wait=false")
    assert gateway_world.sim.gateway.settle()
    assert "No resources found" in subprocess.run(
        ["kubectl", "--context", "prod1", "get", "gateways"], capture_output=True, text=True, timeout=60,
        env={**os.environ, "KUBECONFIG": str(gateway_world.files.kubeconfig)}).stderr


HOSTS = """\
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: web, namespace: default}
spec:
  gatewayClassName: gke-l7-global-external-managed-mc
  listeners: [{name: http, protocol: HTTP, port: 80}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: a, namespace: default}
spec:
  parentRefs: [{name: web}]
  hostnames: [a.example.com]
  rules: [{backendRefs: [{group: net.gke.io, kind: ServiceImport, name: shop-auto-deploy-a, port: 5000}]}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: b, namespace: default}
spec:
  parentRefs: [{name: web}]
  hostnames: [b.example.com]
  rules: [{backendRefs: [{group: net.gke.io, kind: ServiceImport, name: shop-auto-deploy-b, port: 5000}]}]
"""


def test_routes_for_different_hostnames_are_routed_apart(gateway_world: RunningSim) -> None:
    for cluster, name in (("prod2", "shop-auto-deploy-a"), ("prod3", "shop-auto-deploy-b")):
        svc = json.loads(kubectl(gateway_world, "get", "service", "shop-auto-deploy", "-o", "json", context=cluster))
        kubectl(gateway_world, "apply", "-f", "-", context=cluster, stdin=json.dumps({
            "apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "namespace": "default"},
            "spec": {"selector": svc["spec"]["selector"], "ports": svc["spec"]["ports"]}}))
        export(gateway_world, cluster, name)
    assert gateway_world.sim.mcs.settle()
    kubectl(gateway_world, "apply", "-f", "-", stdin=HOSTS)
    assert gateway_world.sim.gateway.settle()
    gw: Any = json.loads(kubectl(gateway_world, "get", "gateway", "web", "-o", "json"))
    target = gateway_world.sim.dataplane.url_for(gw["status"]["addresses"][0]["value"])
    for cluster in ("prod2", "prod3"):
        assert gateway_world.sim.dataplane.wait_health("HEALTHY", cluster=cluster, timeout=20)
    for host, cluster in (("a.example.com", "prod2"), ("b.example.com", "prod3")):
        answers = {requests.get(target, headers={"Host": host}, timeout=5).json()["cluster"] for _ in range(6)}
        assert answers == {cluster}, (host, answers)
    kubectl(gateway_world, "delete", "httproute,gateway", "--all")
    assert gateway_world.sim.gateway.settle()
    assert not [r for r in gateway_world.sim.compute.resources() if r["name"].startswith("gkemcg1-")]
