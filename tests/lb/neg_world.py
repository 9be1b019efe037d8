"""A world for NEG backends: the app in a zonal and a regional cluster, its Service exposed as `neg expose` does."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from kubernetes import client as k8s

from gitlab_mci.lb.names import Namer
from tests.conftest import RunningSim

P = "demo-project"
LB = "shop"
SERVICE = "shop-auto-deploy"
PORT = 5000
NEG = Namer(LB).neg_name(PORT)
WHERE = ["--lb", LB, "--context", "prod1,prod2"]
BASE = [*WHERE, "--service", SERVICE, "--port", "web"]
LABELS = {"app": "shop", "tier": "web", "track": "stable"}


def kube(running: RunningSim, cluster: str) -> k8s.ApiClient:
    return k8s.ApiClient(k8s.Configuration(host=running.sim.kube_url(cluster)))


def deploy(running: RunningSim, cluster: str, *, replicas: int = 3, node_port: int | None = None,
           exposed: bool = True) -> None:
    """The app; its Service ClusterIP (or NodePort on ``node_port``, for a load balancer of instance groups), with
    the NEG annotation `gitlab-mci neg expose` writes when ``exposed``."""
    api = kube(running, cluster)
    k8s.AppsV1Api(api).create_namespaced_deployment("default", {
        "metadata": {"name": "shop"},
        "spec": {"replicas": replicas, "selector": {"matchLabels": LABELS}, "template": {
            "metadata": {"labels": LABELS},
            "spec": {"containers": [{"name": "app", "image": "x", "ports": [{"name": "http", "containerPort": 5000}],
                                     "readinessProbe": {"httpGet": {"path": "/healthz", "port": 5000}}}]}}}})
    port: dict[str, Any] = {"name": "web", "port": PORT, "targetPort": "http"}
    if node_port is not None:
        port["nodePort"] = node_port
    k8s.CoreV1Api(api).create_namespaced_service("default", {
        "metadata": {"name": SERVICE, "labels": {"app": "shop"},
                     "annotations": {"team": "shop", **(expose_annotation() if exposed else {})}},
        "spec": {"type": "NodePort" if node_port else "ClusterIP", "selector": LABELS, "ports": [port]}})


def expose_annotation() -> dict[str, str]:
    return {"cloud.google.com/neg": json.dumps({"exposed_ports": {str(PORT): {"name": NEG}}})}


def expose(running: RunningSim, cluster: str) -> None:
    """What `gitlab-mci neg expose` does to an existing Service."""
    k8s.CoreV1Api(kube(running, cluster)).patch_namespaced_service(
        SERVICE, "default", {"metadata": {"annotations": expose_annotation()}})


def neg_world(make_sim: Callable[..., RunningSim], monkeypatch: Any, *, node_port: int | None = None,
              exposed: bool = True, prod2_vpc_native: bool = True, spec: dict[str, Any] | None = None,
              replicas: int = 3) -> RunningSim:
    """prod1 zonal (us-central1-a), prod2 regional (europe-west1: three zones), the app in both."""
    from gitlab_mci.sim.spec import parse_spec

    prod2: dict[str, Any] = {"name": "prod2", "location": "europe-west1", "nodes": 1}
    if not prod2_vpc_native:
        prod2["vpcNative"] = False
    running = make_sim(parse_spec({"clusters": [{"name": "prod1", "location": "us-central1-a", "nodes": 2}, prod2],
                                   **(spec or {})}))
    for name in ("prod1", "prod2"):
        deploy(running, name, node_port=node_port, exposed=exposed, replicas=replicas)
    for key, value in running.env.items():
        monkeypatch.setenv(key, value)
    running.sim.journal.reset()
    return running


def serving_url(running: RunningSim) -> str:
    vip = running.sim.compute.get("globalAddresses", f"gmci-ip-{LB}", project=P)["address"]
    return running.sim.dataplane.url_for(vip, 80)


