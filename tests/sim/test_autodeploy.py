"""The Auto DevOps deploy stand-in renders what the chart renders, from the values and flags gitlab-mci produces."""

from __future__ import annotations

import json
from pathlib import Path

import kubernetes_validate
import pytest
from kubernetes import client as k8s

from gitlab_mci.sim.autodeploy import Release, manifests, values_for
from tests.cli_helpers import run_cli as cli
from tests.conftest import RunningSim


@pytest.fixture
def env(sim: RunningSim, monkeypatch: pytest.MonkeyPatch) -> RunningSim:
    for key, value in sim.env.items():
        monkeypatch.setenv(key, value)
    return sim


def test_chart_defaults_give_a_cluster_ip_service_named_like_the_chart() -> None:
    deployment, service = manifests(Release("prod1", "shop", values_for("")))
    assert deployment["metadata"]["name"] == "prod1" and service["metadata"]["name"] == "prod1-auto-deploy"
    assert service["spec"]["type"] == "ClusterIP" and "nodePort" not in service["spec"]["ports"][0]
    assert service["spec"]["selector"] == {"app": "prod1", "track": "stable", "tier": "web"}
    canary = manifests(Release("prod1", "shop", {**values_for(""), "application": {"track": "canary",
                                                                                    "tier": "web"}}))
    assert canary[1]["metadata"]["name"] == "prod1-canary-auto-deploy"
    for doc in (deployment, service, *canary):
        kubernetes_validate.validate(doc, "1.30", strict=True)


def test_values_and_extra_args_from_gitlab_mci_pin_the_node_port(env: RunningSim, tmp_path: Path,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    values = tmp_path / "mci-values.yaml"
    assert cli(["helm", "values", "--values-file", str(values), "--node-port", "31234"], capsys)[0] == 0
    code, out, _ = cli(["helm", "extra-args", "--node-port", "31234", "--values-file", str(values),
                        "--extra-args", "--atomic"], capsys)
    assert code == 0
    extra = out.strip()
    code, out, err = cli(["sim", "deploy", "--context", "prod1", "--release", "web1", "--extra-args", extra], capsys)
    assert code == 0, err
    assert "Service web1-auto-deploy (NodePort web:5000→31234)" in out
    core = k8s.CoreV1Api(k8s.ApiClient(k8s.Configuration(host=env.sim.kube_url("prod1"))))
    svc = core.read_namespaced_service("web1-auto-deploy", "default")
    ip = svc.spec.cluster_ip
    # An upgrade keeps the Service's address; the pinned port stays.
    assert cli(["sim", "deploy", "--context", "prod1", "--release", "web1", "--extra-args", extra], capsys)[0] == 0
    again = core.read_namespaced_service("web1-auto-deploy", "default")
    assert again.spec.cluster_ip == ip and again.spec.ports[0].node_port == 31234
    pods = core.list_namespaced_pod("default", label_selector="app=web1,track=stable")
    assert pods.items
    core.delete_namespaced_service("web1-auto-deploy", "default")
    k8s.AppsV1Api(core.api_client).delete_namespaced_deployment("web1", "default")


def test_a_bad_values_file_is_one_line(env: RunningSim, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "v.yaml"
    bad.write_text("service: [")
    code, _, err = cli(["sim", "deploy", "--context", "prod1", "--release", "x", "-f", str(bad)], capsys)
    assert code == 1 and "malformed YAML" in err and len(err.splitlines()) == 1
    code, _, err = cli(["sim", "deploy", "--context", "prod1"], capsys)
    assert code == 1 and "no release" in err


def test_values_resolve_like_helm_defaults_then_files_in_order_then_sets_in_order(tmp_path: Path) -> None:
    """The deploy stand-in resolves the way `helm upgrade` does: a --set beats every values file wherever it stands
    on the line, later files beat earlier ones, the last --set wins, and maps merge key by key."""
    first, second = tmp_path / "first.yaml", tmp_path / "second.yaml"
    first.write_text("service:\n  externalPort: 8080\n  internalPort: 8080\nreplicaCount: 2\n")
    second.write_text("service:\n  externalPort: 9090\n  nodePort: 31000\n")
    deploy_file = tmp_path / "auto-deploy-values.yaml"
    deploy_file.write_text("service:\n  type: NodePort\n  externalPort: 7070\nreplicaCount: 3\n")
    extra = (f"--set service.nodePort=31500 --values {first} -f={second} --set-string service.nodePort=31600 "
             "--set-json replicaCount=4")
    values = values_for(extra, [str(deploy_file)])
    assert values["service"] == {"type": "NodePort", "name": "web", "externalPort": 9090, "internalPort": 8080,
                                 "nodePort": "31600"}
    assert values["replicaCount"] == 4
    assert values["application"] == {"track": "stable", "tier": "web"}  # chart defaults kept where nothing is set
    _, service = manifests(Release("shop", "default", values))
    assert service["spec"]["ports"] == [{"name": "web", "port": 9090, "targetPort": 8080, "protocol": "TCP",
                                         "nodePort": 31600}]
    # Without the extra arguments: the deploy values file alone, over the chart's defaults.
    assert values_for("", [str(deploy_file)])["service"]["externalPort"] == 7070
    assert values_for("", [str(deploy_file)])["service"]["internalPort"] == 5000


def test_a_neg_deploy_annotates_the_service_keeping_the_users_annotations_and_gkes_status(
    env: RunningSim, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """`helm extra-args --backends neg` → the deploy: a ClusterIP Service with the NEG annotation and the user's own
    service.annotations; an upgrade keeps what GKE's NEG controller wrote (Helm's three-way merge does)."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "values.yaml").write_text('service:\n  annotations:\n    prometheus.io/scrape: "true"\n')
    code, out, err = cli(["helm", "extra-args", "--backends", "neg", "--lb", "shop", "--extra-args",
                          "--values values.yaml"], capsys)
    assert code == 0, err
    extra = out.strip()
    assert cli(["sim", "deploy", "--context", "prod1", "--release", "neg1", "--extra-args", extra], capsys)[0] == 0
    core = k8s.CoreV1Api(k8s.ApiClient(k8s.Configuration(host=env.sim.kube_url("prod1"))))
    svc = core.read_namespaced_service("neg1-auto-deploy", "default")
    assert svc.spec.type == "ClusterIP" and svc.spec.ports[0].node_port is None
    neg = '{"exposed_ports":{"5000":{"name":"gmci-neg-shop-5000"}}}'
    assert svc.metadata.annotations == {"prometheus.io/scrape": "true", "cloud.google.com/neg": neg}
    # The simulator's NEG controller (GKE's) writes neg-status on the annotated Service: wait for it rather than
    # write one by hand, which the controller would overwrite under the test's feet.
    assert env.sim.negs.settle(10)
    status = core.read_namespaced_service("neg1-auto-deploy", "default").metadata.annotations[
        "cloud.google.com/neg-status"]
    assert json.loads(status)["network_endpoint_groups"] == {"5000": "gmci-neg-shop-5000"}
    assert cli(["sim", "deploy", "--context", "prod1", "--release", "neg1", "--extra-args", extra], capsys)[0] == 0
    again = core.read_namespaced_service("neg1-auto-deploy", "default").metadata.annotations
    assert again["cloud.google.com/neg-status"] == status and again["cloud.google.com/neg"] == neg
    core.delete_namespaced_service("neg1-auto-deploy", "default")
    k8s.AppsV1Api(core.api_client).delete_namespaced_deployment("neg1", "default")
    core.delete_namespaced_config_map("neg1-auto-deploy-sim-release", "default")


def test_an_upgrade_drops_the_annotation_the_previous_release_set_like_helm(
    env: RunningSim, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Helm's three-way merge: back to instance groups, the NEG annotation the neg deploy set goes; what another
    writer put on the Service (an annotation of the user's kubectl, GKE's status) stays."""
    neg = ("--set-json service.annotations.cloud\\.google\\.com/neg="
           '"{\\"exposed_ports\\":{\\"5000\\":{\\"name\\":\\"gmci-neg-shop-5000\\"}}}"')
    assert cli(["sim", "deploy", "--context", "prod1", "--release", "neg2", "--extra-args", neg], capsys)[0] == 0
    core = k8s.CoreV1Api(k8s.ApiClient(k8s.Configuration(host=env.sim.kube_url("prod1"))))
    core.patch_namespaced_service("neg2-auto-deploy", "default", {"metadata": {"annotations": {"by-hand": "yes"}}})
    plain = "--set service.type=NodePort --set service.nodePort=31555"
    assert cli(["sim", "deploy", "--context", "prod1", "--release", "neg2", "--extra-args", plain], capsys)[0] == 0
    svc = core.read_namespaced_service("neg2-auto-deploy", "default")
    assert svc.metadata.annotations == {"by-hand": "yes"}
    assert (svc.spec.type, svc.spec.ports[0].node_port) == ("NodePort", 31555)
    core.delete_namespaced_service("neg2-auto-deploy", "default")
    k8s.AppsV1Api(core.api_client).delete_namespaced_deployment("neg2", "default")
    core.delete_namespaced_config_map("neg2-auto-deploy-sim-release", "default")
