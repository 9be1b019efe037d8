"""Discovery walks real clients from Nodes to instance groups, with batched reads, including Shared VPC."""

from __future__ import annotations

from typing import Any

import pytest
from kubernetes import client as k8s

from gitlab_mci import kube
from gitlab_mci.errors import UserError
from gitlab_mci.gcp import Compute
from gitlab_mci.lb.discovery import discover
from gitlab_mci.sim.spec import parse_spec
from tests.conftest import RunningSim


def deploy_app(running: RunningSim, cluster: str, node_port: int, probe: str = "/healthz") -> None:
    api = k8s.ApiClient(k8s.Configuration(host=running.sim.kube_url(cluster)))
    labels = {"app": "shop", "tier": "web", "track": "stable"}
    k8s.AppsV1Api(api).create_namespaced_deployment("default", {
        "metadata": {"name": "shop"},
        "spec": {"replicas": 2, "selector": {"matchLabels": labels}, "template": {"metadata": {"labels": labels},
                 "spec": {"containers": [{"name": "app", "image": "x", "ports": [{"containerPort": 5000}],
                                          "readinessProbe": {"httpGet": {"path": probe, "port": 5000}}}]}}}})
    k8s.CoreV1Api(api).create_namespaced_service("default", {
        "metadata": {"name": "shop-auto-deploy", "labels": {"app": "shop"}},
        "spec": {"type": "NodePort", "selector": labels,
                 "ports": [{"name": "web", "port": 5000, "targetPort": 5000, "nodePort": node_port}]}})


def test_discovery_finds_groups_network_tags_and_services(make_sim: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    running = make_sim(parse_spec({"clusters": [{"name": "prod1", "location": "us-central1-a"},
                                                {"name": "prod2", "location": "europe-west1", "nodes": 1}]}))
    for name in ("prod1", "prod2"):
        deploy_app(running, name, 30999)
    monkeypatch.setenv("KUBECONFIG", str(running.files.kubeconfig))
    clusters = [kube.connect("prod1"), kube.connect("prod2")]
    running.sim.journal.reset()
    infos = discover(clusters, Compute("demo-project", running.sim.compute_url), "default", ["shop-auto-deploy"])
    world = {r.spec.name: r for r in running.sim.records}
    for info in infos:
        rec = world[info.context]
        assert {g.rsplit("/", 1)[1] for g in info.groups} == set(rec.groups)
        assert info.zones == tuple(sorted(rec.spec.zones))
        assert info.network.endswith("/projects/demo-project/global/networks/default")
        assert info.tags == (rec.network_tag,)
        svc = info.services["shop-auto-deploy"]
        assert svc.port("web") == svc.port(5000) and svc.port(5000).node_port == 30999
        assert svc.readiness_path == "/healthz"
    compute_reads = running.sim.journal.reads("compute")
    assert len(compute_reads) == 2, [e.path for e in compute_reads]  # one aggregated list of each kind
    assert running.sim.journal.writes() == []


def test_shared_vpc_network_comes_from_the_host_project(make_sim: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    running = make_sim(parse_spec({"project": "app-project", "networkProject": "host-project", "network": "shared",
                                   "clusters": [{"name": "a", "nodes": 1}]}))
    monkeypatch.setenv("KUBECONFIG", str(running.files.kubeconfig))
    (info,) = discover([kube.connect("a")], Compute("app-project", running.sim.compute_url), "default", [])
    assert info.network.endswith("/projects/host-project/global/networks/shared")
    assert info.project == "app-project" and info.services == {}


def test_a_node_that_is_not_a_gke_instance_is_a_clear_error(make_sim: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    running = make_sim(parse_spec({"clusters": [{"name": "a", "nodes": 1}]}))
    running.sim.clusters["a"].seed({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "laptop"},
                                    "spec": {"providerID": "kind://docker/laptop"}})
    monkeypatch.setenv("KUBECONFIG", str(running.files.kubeconfig))
    with pytest.raises(UserError, match="node laptop has providerID 'kind://docker/laptop'"):
        discover([kube.connect("a")], Compute("demo-project", running.sim.compute_url), "default", [])
