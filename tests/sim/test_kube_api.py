"""The Kubernetes API emulator through the official kubernetes client and through kubectl."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException


@pytest.fixture
def api(clusters: Any) -> Any:
    c = clusters("prod1")
    c.servers["prod1"].seed({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "n1"}})
    c.servers["prod1"].seed({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "n2"}})
    c.api = k8s.ApiClient(k8s.Configuration(host=c.urls["prod1"]))
    c.install = c.servers["prod1"].install_gke_crds
    return c


def svc(name: str, node_port: int | None = None, type_: str = "NodePort", port: int = 80) -> dict[str, Any]:
    p: dict[str, Any] = {"name": "web", "port": port, "targetPort": 8080}
    if node_port is not None:
        p["nodePort"] = node_port
    return {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "labels": {"app": name}},
            "spec": {"type": type_, "selector": {"app": name}, "ports": [p]}}


def test_service_crud_node_port_allocation_and_conflicts(api: Any) -> None:
    core = k8s.CoreV1Api(api.api)
    random_port = core.create_namespaced_service("default", svc("a"))
    assert 30000 <= random_port.spec.ports[0].node_port <= 32767 and random_port.spec.cluster_ip
    kept = core.create_namespaced_service("default", svc("b", 31000))
    assert kept.spec.ports[0].node_port == 31000
    with pytest.raises(ApiException) as conflict:
        core.create_namespaced_service("default", svc("c", 31000))
    status = json.loads(conflict.value.body)
    assert conflict.value.status == 422 and status["reason"] == "Invalid"
    assert status["details"]["causes"] == [{"reason": "FieldValueInvalid", "field": "spec.ports[0].nodePort",
                                            "message": "Invalid value: 31000: provided port is already allocated"}]
    assert status["message"] == ('Service "c" is invalid: spec.ports[0].nodePort: Invalid value: 31000: '
                                 "provided port is already allocated")
    with pytest.raises(ApiException) as out_of_range:
        core.create_namespaced_service("default", svc("d", 80))
    assert out_of_range.value.status == 422 and "The range of valid ports is 30000-32767" in out_of_range.value.body
    # Strategic merge patch: ports merge by `port`, so only the node port changes.
    patched = core.patch_namespaced_service("b", "default", {"spec": {"ports": [{"port": 80, "nodePort": 31001}]}})
    assert [(p.name, p.port, p.target_port, p.node_port) for p in patched.spec.ports] == [("web", 80, 8080, 31001)]
    core.create_namespaced_service("default", svc("c", 31000))  # released by the patch
    # Back to ClusterIP: the node ports the user did not touch go away with the type.
    clusterip = core.patch_namespaced_service("c", "default", {"spec": {"type": "ClusterIP"}})
    assert clusterip.spec.ports[0].node_port is None
    core.delete_namespaced_service("c", "default")
    with pytest.raises(ApiException) as gone:
        core.read_namespaced_service("c", "default")
    assert gone.value.status == 404 and json.loads(gone.value.body)["message"] == 'services "c" not found'


def test_stale_resource_version_is_a_conflict(api: Any) -> None:
    core = k8s.CoreV1Api(api.api)
    first = core.create_namespaced_config_map("default", {"metadata": {"name": "cm"}, "data": {"a": "1"}})
    core.patch_namespaced_config_map("cm", "default", {"data": {"a": "2"}})
    first.data = {"a": "3"}
    with pytest.raises(ApiException) as info:
        core.replace_namespaced_config_map("cm", "default", first)
    assert info.value.status == 409 and json.loads(info.value.body)["reason"] == "Conflict"
    with pytest.raises(ApiException) as dup:
        core.create_namespaced_config_map("default", {"metadata": {"name": "cm"}})
    assert dup.value.status == 409 and json.loads(dup.value.body)["reason"] == "AlreadyExists"
    with pytest.raises(ApiException) as ns:
        core.create_namespaced_config_map("nowhere", {"metadata": {"name": "cm"}})
    assert ns.value.status == 404 and json.loads(ns.value.body)["message"] == 'namespaces "nowhere" not found'


def test_label_selectors_and_pagination(api: Any) -> None:
    core = k8s.CoreV1Api(api.api)
    for name, labels in (("s1", {"app": "x", "track": "stable"}), ("s2", {"app": "x", "track": "canary"}),
                         ("s3", {"app": "y"})):
        core.create_namespaced_secret("default", {"metadata": {"name": name, "labels": labels}})
    names = lambda sel: [s.metadata.name for s in core.list_namespaced_secret("default", label_selector=sel).items]  # noqa: E731
    assert names("app=x,track=stable") == ["s1"]
    assert names("app in (x,y),track!=canary") == ["s1", "s3"]
    assert names("!track") == ["s3"] and names("track") == ["s1", "s2"]
    assert names("app notin (x)") == ["s3"]
    page = core.list_namespaced_secret("default", limit=2)
    rest = core.list_namespaced_secret("default", limit=2, _continue=page.metadata._continue)
    assert [s.metadata.name for s in page.items + rest.items] == ["s1", "s2", "s3"]


def test_deployment_makes_ready_pods_and_endpoints(api: Any) -> None:
    apps, core = k8s.AppsV1Api(api.api), k8s.CoreV1Api(api.api)
    labels = {"app": "web", "tier": "web", "track": "stable"}
    apps.create_namespaced_deployment("default", {
        "metadata": {"name": "web"},
        "spec": {"replicas": 3, "selector": {"matchLabels": labels}, "template": {
            "metadata": {"labels": labels},
            "spec": {"containers": [{"name": "app", "image": "x", "ports": [{"containerPort": 5000, "name": "web"}],
                                     "readinessProbe": {"httpGet": {"path": "/healthz", "port": 5000}}}]}}}})
    core.create_namespaced_service("default", {"metadata": {"name": "web"}, "spec": {
        "selector": labels, "ports": [{"name": "web", "port": 5000, "targetPort": "web"}]}})
    pods = core.list_namespaced_pod("default", label_selector="app=web").items
    assert len(pods) == 3 and {p.spec.node_name for p in pods} == {"n1", "n2"}
    assert all(p.status.phase == "Running" for p in pods)
    assert pods[0].spec.containers[0].readiness_probe.http_get.path == "/healthz"
    ep = core.read_namespaced_endpoints("web", "default")
    assert len(ep.subsets[0].addresses) == 3 and ep.subsets[0].ports[0].port == 5000
    assert apps.read_namespaced_deployment("web", "default").status.ready_replicas == 3
    apps.patch_namespaced_deployment("web", "default", {"spec": {"replicas": 1}})
    assert len(core.list_namespaced_pod("default", label_selector="app=web").items) == 1
    apps.delete_namespaced_deployment("web", "default")
    assert core.list_namespaced_pod("default").items == []


def test_custom_objects_merge_patch_status_and_finalizers(api: Any) -> None:
    api.install()
    custom = k8s.CustomObjectsApi(api.api)
    body = {"apiVersion": "networking.gke.io/v1", "kind": "MultiClusterIngress",
            "metadata": {"name": "shop", "finalizers": ["mci.finalizer.networking.gke.io"]},
            "spec": {"template": {"spec": {"backend": {"serviceName": "shop", "servicePort": 80}}}}}
    custom.create_namespaced_custom_object("networking.gke.io", "v1", "default", "multiclusteringresses", body)
    custom.patch_namespaced_custom_object("networking.gke.io", "v1", "default", "multiclusteringresses", "shop",
                                          {"metadata": {"annotations": {"networking.gke.io/static-ip": "1.2.3.4"}}})
    custom.patch_namespaced_custom_object_status("networking.gke.io", "v1", "default", "multiclusteringresses",
                                                 "shop", {"status": {"VIP": "1.2.3.4"}})
    got = custom.get_namespaced_custom_object("networking.gke.io", "v1", "default", "multiclusteringresses", "shop")
    assert got["status"]["VIP"] == "1.2.3.4" and got["spec"]["template"]["spec"]["backend"]["servicePort"] == 80
    custom.delete_namespaced_custom_object("networking.gke.io", "v1", "default", "multiclusteringresses", "shop")
    pending = custom.get_namespaced_custom_object("networking.gke.io", "v1", "default", "multiclusteringresses",
                                                  "shop")
    assert pending["metadata"]["deletionTimestamp"]
    custom.patch_namespaced_custom_object("networking.gke.io", "v1", "default", "multiclusteringresses", "shop",
                                          {"metadata": {"finalizers": None}})
    with pytest.raises(ApiException) as gone:
        custom.get_namespaced_custom_object("networking.gke.io", "v1", "default", "multiclusteringresses", "shop")
    assert gone.value.status == 404


def kubectl(c: Any, *args: str, stdin: str | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(["kubectl", *args], input=stdin, capture_output=True, text=True, timeout=60,
                          env={**os.environ, "KUBECONFIG": str(c.kubeconfig)})
    if check:
        assert done.returncode == 0, done.stderr
    return done


def test_kubectl_get_patch_apply_describe_delete_and_conflict(api: Any, tmp_path: Path) -> None:
    api.install()
    nodes = json.loads(kubectl(api, "get", "nodes", "-o", "json").stdout)
    assert [n["metadata"]["name"] for n in nodes["items"]] == ["n1", "n2"]
    manifest = tmp_path / "app.yaml"
    manifest.write_text(json.dumps(svc("shop", 30999)))
    assert "service/shop created" in kubectl(api, "apply", "-f", str(manifest)).stdout
    manifest.write_text(json.dumps(svc("shop", 31999)))
    assert "service/shop configured" in kubectl(api, "apply", "-f", str(manifest)).stdout
    assert "service/shop unchanged" in kubectl(api, "apply", "-f", str(manifest)).stdout
    assert kubectl(api, "get", "svc", "shop", "-o", "jsonpath={.spec.ports[0].nodePort}").stdout == "31999"
    kubectl(api, "patch", "service", "shop", "-p", '{"spec":{"ports":[{"port":80,"nodePort":30500}]}}')
    assert kubectl(api, "get", "svc", "-l", "app=shop", "-o", "jsonpath={.items[0].spec.ports[0].nodePort}"
                   ).stdout == "30500"
    assert "NodePort:                 web  30500/TCP" in kubectl(api, "describe", "service", "shop").stdout
    table = kubectl(api, "get", "svc", "shop").stdout.splitlines()
    assert table[0].split() == ["NAME", "TYPE", "CLUSTER-IP", "EXTERNAL-IP", "PORT(S)", "AGE"]
    assert table[1].split()[:5] == ["shop", "NodePort", table[1].split()[2], "<none>", "80:30500/TCP"]
    clash = kubectl(api, "create", "-f", "-", stdin=json.dumps(svc("clash", 30500)), check=False)
    assert clash.returncode == 1 and "provided port is already allocated" in clash.stderr
    mci = {"apiVersion": "networking.gke.io/v1", "kind": "MultiClusterIngress", "metadata": {"name": "shop"},
           "spec": {"template": {"spec": {"backend": {"serviceName": "shop", "servicePort": 80}}}}}
    kubectl(api, "apply", "-f", "-", stdin=json.dumps(mci))
    # The controller side writes status through the status subresource, as GKE's controller does.
    custom = k8s.CustomObjectsApi(api.api)
    custom.patch_namespaced_custom_object_status("networking.gke.io", "v1", "default", "multiclusteringresses",
                                                 "shop", {"status": {"VIP": "203.0.113.7"}})
    assert kubectl(api, "get", "multiclusteringress", "shop", "-o", "jsonpath={.status.VIP}").stdout == "203.0.113.7"
    assert kubectl(api, "get", "mci", "-o", "yaml").stdout.count("kind: MultiClusterIngress") == 1
    assert 'service "shop" deleted' in kubectl(api, "delete", "service", "shop").stdout
    assert kubectl(api, "get", "svc", "shop", check=False).returncode == 1
