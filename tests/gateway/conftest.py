"""A three-cluster fleet (prod3 regional) with the app deployed in each, multi-cluster Services and Gateway enabled
(prod1 the config cluster), clients pointed at a private simulator."""

from __future__ import annotations

from typing import Any

import pytest
from kubernetes import client as k8s

from gitlab_mci.sim.spec import parse_spec
from tests.conftest import RunningSim

LABELS = {"app": "shop", "tier": "web", "track": "stable"}
CLUSTERS = ("prod1", "prod2", "prod3")


def api(running: RunningSim, cluster: str) -> k8s.ApiClient:
    return k8s.ApiClient(k8s.Configuration(host=running.sim.kube_url(cluster)))


def deploy_app(running: RunningSim, cluster: str, namespace: str = "default", replicas: int = 2) -> None:
    """The auto-deploy-app chart's Deployment and ClusterIP Service (port 5000, named web)."""
    a = api(running, cluster)
    if namespace != "default":
        k8s.CoreV1Api(a).create_namespace({"metadata": {"name": namespace}})
    k8s.AppsV1Api(a).create_namespaced_deployment(namespace, {
        "metadata": {"name": "shop"},
        "spec": {"replicas": replicas, "selector": {"matchLabels": LABELS}, "template": {
            "metadata": {"labels": LABELS},
            "spec": {"containers": [{"name": "app", "image": "x", "ports": [{"containerPort": 5000}],
                                     "readinessProbe": {"httpGet": {"path": "/healthz", "port": 5000}}}]}}}})
    k8s.CoreV1Api(a).create_namespaced_service(namespace, {
        "metadata": {"name": "shop-auto-deploy", "labels": {"app": "shop"}},
        "spec": {"type": "ClusterIP", "selector": LABELS,
                 "ports": [{"name": "web", "port": 5000, "targetPort": 5000, "protocol": "TCP"}]}})


@pytest.fixture
def gateway_world(make_sim: Any, monkeypatch: pytest.MonkeyPatch) -> RunningSim:
    """prod1 (us-central1-a, config cluster), prod2 (europe-west1-b) and prod3 (regional us-east1): fleet members
    with multi-cluster Services and Gateway enabled, the app in each; an empty journal."""
    running: RunningSim = make_sim(parse_spec({
        "clusters": [{"name": "prod1", "location": "us-central1-a", "nodes": 2},
                     {"name": "prod2", "location": "europe-west1-b", "nodes": 2},
                     {"name": "prod3", "location": "us-east1", "nodes": 3}],
        "mciProvisioningDelay": 0.05}))
    for name in CLUSTERS:
        deploy_app(running, name)
        running.sim.gkehub.register(name)
    running.sim.gkehub.enable_feature("multiclusterservicediscovery")
    running.sim.gkehub.enable_mci("prod1")
    for key, value in running.env.items():
        monkeypatch.setenv(key, value)
    assert running.sim.mcs.settle() and running.sim.gateway.settle()
    running.sim.journal.reset()
    return running
