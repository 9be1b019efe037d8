"""A two-cluster fleet in a private simulator, the app's Service deployed in both, clients pointed at it."""

from __future__ import annotations

from typing import Any

import pytest
from kubernetes import client as k8s

from gitlab_mci.sim.spec import parse_spec
from tests.conftest import RunningSim

LABELS = {"app": "shop", "tier": "web", "track": "stable"}


def deploy_service(running: RunningSim, cluster: str, namespace: str = "default", name: str = "shop-auto-deploy",
                   release: str = "shop") -> None:
    """The Service the auto-deploy-app chart renders (ClusterIP: hosted MCI needs no NodePort)."""
    api = k8s.ApiClient(k8s.Configuration(host=running.sim.kube_url(cluster)))
    core = k8s.CoreV1Api(api)
    if namespace != "default":
        core.create_namespace({"metadata": {"name": namespace}})
    labels = {**LABELS, "app": release}
    core.create_namespaced_service(namespace, {
        "metadata": {"name": name, "labels": {"app": release, "release": release, "tier": "web", "track": "stable"}},
        "spec": {"type": "ClusterIP", "selector": labels,
                 "ports": [{"name": "web", "port": 5000, "targetPort": 5000, "protocol": "TCP"}]}})


def make_fleet(make_sim: Any, monkeypatch: pytest.MonkeyPatch) -> RunningSim:
    """prod1 (config cluster) and prod2, both fleet members, with the app's Service; clients pointed at them."""
    running: RunningSim = make_sim(parse_spec({
        "clusters": [{"name": "prod1", "location": "us-central1-a"}, {"name": "prod2", "location": "europe-west1-b"}],
        "mciProvisioningDelay": 0.05}))
    for name in ("prod1", "prod2"):
        deploy_service(running, name)
        running.sim.gkehub.register(name)
    running.sim.gkehub.enable_mci("prod1")
    for key, value in running.env.items():
        monkeypatch.setenv(key, value)
    return running


@pytest.fixture
def fleet(make_sim: Any, monkeypatch: pytest.MonkeyPatch) -> RunningSim:
    """The fleet of :func:`make_fleet`, with an empty journal."""
    running = make_fleet(make_sim, monkeypatch)
    running.sim.journal.reset()
    return running
