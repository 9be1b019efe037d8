"""`gitlab-mci nodeport pin|verify|choose` against emulated clusters, with the real kubernetes client and kubectl."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.cli_helpers import run_cli


def node_port_of(svc: dict) -> int:
    return int(svc["spec"]["ports"][0]["nodePort"])


def test_pin_patches_the_node_port_then_makes_no_write(clusters: Any, capsys: pytest.CaptureFixture[str]) -> None:
    c = clusters("prod1")
    c.add_app_service("prod1", node_port=31500)
    code, out, err = run_cli(["nodeport", "pin", "--context", "prod1", "--release", "app", "--node-port", "30999"],
                             capsys)
    assert code == 0, err
    assert "now uses node port 30999" in out
    assert node_port_of(c.service("prod1", "app-auto-deploy")) == 30999
    c.journal.reset()
    code, out, _ = run_cli(["nodeport", "pin", "--context", "prod1", "--release", "app", "--node-port", "30999"],
                           capsys)
    assert code == 0 and "already uses node port 30999" in out
    assert c.journal.writes() == []


def test_pin_reads_ci_variables_and_finds_the_service_by_labels(
    clusters: Any, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    c = clusters("prod1")
    c.servers["prod1"].seed({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "shop-123"}})
    c.add_app_service("prod1", release="prod1", namespace="shop-123", name="custom-name")
    monkeypatch.setenv("KUBE_CONTEXT", "prod1")
    monkeypatch.setenv("KUBE_NAMESPACE", "shop-123")
    monkeypatch.setenv("CI_ENVIRONMENT_SLUG", "prod1")
    monkeypatch.setenv("MCI_NODE_PORT", "31001")
    code, _, err = run_cli(["nodeport", "pin"], capsys)
    assert code == 0, err
    assert node_port_of(c.service("prod1", "custom-name", "shop-123")) == 31001


def test_pin_refuses_a_port_held_by_another_service_and_writes_nothing(
    clusters: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    c = clusters("prod1")
    c.add_app_service("prod1", release="other", node_port=30999)
    c.add_app_service("prod1", release="app", node_port=31000)
    c.journal.reset()
    code, _, err = run_cli(["nodeport", "pin", "--context", "prod1", "--release", "app", "--node-port", "30999"],
                           capsys)
    assert code == 1
    assert err.splitlines() == [
        "gitlab-mci: error: context 'prod1': node port 30999 is already used by Service default/other-auto-deploy; "
        "pick another --node-port (or `--node-port auto`)"
    ]
    assert c.journal.writes() == []
    assert node_port_of(c.service("prod1", "app-auto-deploy")) == 31000


def test_pin_auto_chooses_the_lowest_free_port_when_the_clusters_disagree(
    clusters: Any, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("MCI_CONTEXTS", raising=False)
    c = clusters("prod1", "prod2")
    c.add_app_service("prod1", release="a", node_port=30000)
    c.add_app_service("prod1", release="b", node_port=30001)
    c.add_app_service("prod1", release="app", node_port=32000)
    c.add_app_service("prod2", release="app", node_port=32001)
    code, _, err = run_cli(["nodeport", "pin", "--context", "prod1", "--release", "app", "--node-port", "auto"],
                             capsys)
    assert code == 0, err
    assert "node port auto: 30002, the lowest free in all of prod1, prod2" in err
    assert node_port_of(c.service("prod1", "app-auto-deploy")) == 30002
    # Another Service takes 30002 in prod2: the app moves to 30003 in both, and then stays there.
    c.add_app_service("prod2", release="a", node_port=30002)
    code, _, err = run_cli(["nodeport", "pin", "--context", "prod2", "--release", "app", "--node-port", "auto"],
                           capsys)
    assert code == 0, err
    assert "node port auto: 30003, the lowest free in all of prod1, prod2" in err
    code, out, err = run_cli(["nodeport", "pin", "--context", "prod1", "--release", "app", "--node-port", "auto"],
                             capsys)
    assert "node port auto: 30003, the lowest free in all of prod1, prod2" in err
    assert "now uses node port 30003" in out
    code, out, err = run_cli(["nodeport", "pin", "--context", "prod2", "--release", "app", "--node-port", "auto"],
                             capsys)
    assert "node port auto: 30003, the one the Service already uses, free in all of prod1, prod2" in err
    assert "already uses node port 30003" in out


def test_choose_finds_a_port_free_in_all_clusters(clusters: Any, capsys: pytest.CaptureFixture[str]) -> None:
    c = clusters("prod1", "prod2")
    c.add_app_service("prod1", release="a", node_port=30000)
    c.add_app_service("prod2", release="b", node_port=30001)
    code, out, err = run_cli(["nodeport", "choose", "--context", "prod1,prod2"], capsys)
    assert (code, out.strip()) == (0, "30002"), err


def test_verify_prints_a_table_and_fails_on_a_mismatch(clusters: Any, capsys: pytest.CaptureFixture[str]) -> None:
    c = clusters("prod1", "prod2", "prod3")
    for name in ("prod1", "prod2"):
        c.add_app_service(name, node_port=30999)
    c.add_app_service("prod3", node_port=31000)
    code, out, err = run_cli(["nodeport", "verify", "--release", "app", "--node-port", "30999"], capsys)
    assert code == 1
    lines = out.splitlines()
    assert lines[0].split() == ["CLUSTER", "SERVICE", "TYPE", "PORT", "NODE", "PORT", "STATUS"]
    assert re.match(r"prod1\s+default/app-auto-deploy\s+NodePort\s+5000\s+30999\s+ok", lines[1])
    assert re.match(r"prod3\s+default/app-auto-deploy\s+NodePort\s+5000\s+31000\s+mismatch", lines[3])
    assert err.splitlines() == [
        "gitlab-mci: error: 1 of 3 Service(s) are not pinned: prod3 default/app-auto-deploy (mismatch)"
    ]
    # Without an expected port, the clusters must agree with each other.
    code, out, _ = run_cli(["nodeport", "verify", "--release", "app", "--context", "prod1,prod2"], capsys)
    assert code == 0 and out.count(" ok") == 2


def test_verify_reports_missing_and_clusterip_services(clusters: Any, capsys: pytest.CaptureFixture[str]) -> None:
    c = clusters("prod1", "prod2")
    c.add_app_service("prod1", type_="ClusterIP")
    code, out, _ = run_cli(["nodeport", "verify", "--release", "app", "-o", "json"], capsys)
    assert code == 1
    rows = yaml.safe_load(out)
    assert [(r["cluster"], r["status"]) for r in rows] == [("prod1", "not-nodeport"), ("prod2", "missing")]


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("unknown-context", "unknown kubeconfig context 'nope' (known: prod1)"),
        ("missing-namespace", "namespace 'ghost' does not exist in context 'prod1'"),
        ("missing-service", "no Service default/nothing-auto-deploy"),
        ("clusterip", "Service default/app-auto-deploy is ClusterIP, not NodePort"),
        ("out-of-range", "--node-port / MCI_NODE_PORT: 80 is out of range (30000-32767)"),
        ("not-a-number", "--node-port / MCI_NODE_PORT: 'x' is not a number"),
        ("unreachable", "cannot reach the cluster of context 'dead' at http://127.0.0.1:"),
        ("no-kubeconfig", "no kubeconfig found at"),
        ("no-release", "no release: pass --release or --service"),
    ],
)
def test_pin_failures_are_one_line(
    case: str, message: str, clusters: Any, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    c = clusters("prod1")
    c.add_app_service("prod1", type_="ClusterIP" if case == "clusterip" else "NodePort")
    args = ["nodeport", "pin", "--context", "prod1", "--release", "app", "--node-port", "30999"]
    monkeypatch.delenv("CI_ENVIRONMENT_SLUG", raising=False)
    monkeypatch.delenv("HELM_RELEASE_NAME", raising=False)
    if case == "unknown-context":
        args[3] = "nope"
    elif case == "missing-namespace":
        args += ["--namespace", "ghost"]
    elif case == "missing-service":
        args[5] = "nothing"
    elif case == "out-of-range":
        args[7] = "80"
    elif case == "not-a-number":
        args[7] = "x"
    elif case == "unreachable":
        cfg = yaml.safe_load(c.kubeconfig.read_text())
        cfg["clusters"].append({"name": "dead", "cluster": {"server": f"http://127.0.0.1:{_closed_port()}"}})
        cfg["contexts"].append({"name": "dead", "context": {"cluster": "dead", "user": "u"}})
        c.kubeconfig.write_text(yaml.safe_dump(cfg))
        args[3] = "dead"
    elif case == "no-kubeconfig":
        monkeypatch.setenv("KUBECONFIG", str(tmp_path / "absent"))
    elif case == "no-release":
        args = ["nodeport", "pin", "--context", "prod1", "--node-port", "30999"]
    c.journal.reset()
    code, _, err = run_cli(args, capsys)
    assert code == 1
    assert len(err.splitlines()) == 1 and err.startswith("gitlab-mci: error: ")
    assert message in err
    assert c.journal.writes() == []


def test_blog_recipe_with_kubectl_ends_in_the_same_state_as_pin(
    clusters: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    """The manual step gitlab-mci replaces: download the Service, sed its nodePort, apply it back."""
    c = clusters("manual", "tool")
    for name in ("manual", "tool"):
        c.add_app_service(name, node_port=31777)
    env = {**os.environ, "KUBECONFIG": str(c.kubeconfig)}
    script = ("kubectl --context manual get services -l app=app -o yaml"
              " | sed 's/nodePort: [0-9]*/nodePort: 30999/' | kubectl --context manual apply -f -")
    subprocess.run(["bash", "-o", "pipefail", "-c", script], env=env, check=True, capture_output=True, timeout=60)
    code, _, err = run_cli(["nodeport", "pin", "--context", "tool", "--release", "app", "--node-port", "30999"],
                           capsys)
    assert code == 0, err
    manual = c.service("manual", "app-auto-deploy")["spec"]
    tool = c.service("tool", "app-auto-deploy")["spec"]
    assert manual["ports"] == tool["ports"]
    assert manual["type"] == tool["type"] == "NodePort"


def test_nodeport_commands_import_no_google_cloud_module(clusters: Any) -> None:
    c = clusters("prod1")
    c.add_app_service("prod1", node_port=30999)
    code = ("import sys\nfrom gitlab_mci.cli import main\n"
            "main(['nodeport', 'verify', '--release', 'app', '--node-port', '30999'])\n"
            "main(['nodeport', 'pin', '--context', 'prod1', '--release', 'app', '--node-port', '30999'])\n"
            "print('GOOGLE', sorted(m for m in sys.modules if m.startswith(('google.cloud', 'google.api_core'))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                         env={**os.environ, "KUBECONFIG": str(c.kubeconfig)})
    assert out.returncode == 0, out.stderr
    assert "GOOGLE []" in out.stdout


def test_verify_with_an_ingress_checks_every_backend_service(
    clusters: Any, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    c = clusters("prod1", "prod2")
    for name in ("prod1", "prod2"):
        c.add_app_service(name, release="web", node_port=30999 if name == "prod1" else 31500, name="web")
        c.add_app_service(name, release="api", node_port=31000, name="api")
    ingress = tmp_path / "ingress.yaml"
    ingress.write_text(
        "apiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata: {name: shop}\nspec:\n"
        "  defaultBackend: {service: {name: api, port: {number: 5000}}}\n"
        "  rules:\n  - http:\n      paths:\n"
        "      - {path: /, pathType: Prefix, backend: {service: {name: web, port: {name: web}}}}\n"
    )
    code, out, _ = run_cli(["nodeport", "verify", "--ingress", str(ingress), "-o", "json"], capsys)
    rows = yaml.safe_load(out)
    assert code == 1
    assert sorted((r["cluster"], r["service"], r["status"]) for r in rows) == [
        ("prod1", "default/api", "ok"), ("prod1", "default/web", "mismatch"),
        ("prod2", "default/api", "ok"), ("prod2", "default/web", "mismatch"),
    ]


# ---------------------------------------------------------------------------------------------------------------------
# One default node port everywhere (issue 12, item 1)


def test_pin_after_the_readme_steps_keeps_the_node_port_the_helm_values_set(
    clusters: Any, capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """README: `helm values`, `helm extra-args`, deploy, then `nodeport pin` with no --node-port: nothing moves."""
    c = clusters("prod1", "prod2")
    monkeypatch.chdir(tmp_path)
    for var in ("MCI_NODE_PORT", "HELM_UPGRADE_EXTRA_ARGS", "HELM_UPGRADE_VALUES_FILE", "MCI_VALUES_FILE"):
        monkeypatch.delenv(var, raising=False)
    assert run_cli(["helm", "values", "--values-file", ".gitlab/mci-values.yaml"], capsys)[0] == 0
    code, extra, err = run_cli(["helm", "extra-args", "--values-file", ".gitlab/mci-values.yaml"], capsys)
    assert code == 0, err
    for name in ("prod1", "prod2"):
        code, _, err = run_cli(["sim", "deploy", "--context", name, "--release", "shop", "--extra-args",
                                extra.strip()], capsys)
        assert code == 0, err
        assert node_port_of(c.service(name, "shop-auto-deploy")) == 30999
    c.journal.reset()
    code, out, err = run_cli(["nodeport", "pin", "--context", "prod1", "--release", "shop"], capsys)
    assert code == 0, err
    assert out.strip() == "prod1: Service default/shop-auto-deploy port 5000 already uses node port 30999"
    assert c.journal.writes() == []
    code, out, err = run_cli(["nodeport", "verify", "--release", "shop"], capsys)
    assert code == 0, err


def test_verify_without_node_port_expects_the_default_30999(
    clusters: Any, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two clusters that agree with each other on another port are still not what the Helm values pinned."""
    monkeypatch.delenv("MCI_NODE_PORT", raising=False)
    c = clusters("prod1", "prod2")
    for name in ("prod1", "prod2"):
        c.add_app_service(name, node_port=31000)
    code, _, err = run_cli(["nodeport", "verify", "--release", "app"], capsys)
    assert code == 1
    assert "2 of 2 Service(s) are not pinned" in err
    code, _out, err = run_cli(["nodeport", "verify", "--release", "app", "--node-port", "auto"], capsys)
    assert code == 0, err


def test_pin_auto_picks_one_port_free_in_every_cluster_when_their_lowest_free_ports_differ(
    clusters: Any, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("MCI_CONTEXTS", raising=False)
    c = clusters("prod1", "prod2", "prod3")
    # Lowest free port per cluster: prod1 30001, prod2 30000, prod3 30000; free in all three: 30003.
    c.add_app_service("prod1", release="a", node_port=30000)
    c.add_app_service("prod2", release="b", node_port=30001)
    c.add_app_service("prod3", release="c", node_port=30002)
    for i, name in enumerate(("prod1", "prod2", "prod3")):
        c.add_app_service(name, release="shop", node_port=31500 + i)
    for name in ("prod1", "prod2", "prod3"):
        code, out, err = run_cli(["nodeport", "pin", "--context", name, "--release", "shop", "--node-port", "auto"],
                                 capsys)
        assert code == 0, err
        assert "node port 30003" in out
    assert [node_port_of(c.service(n, "shop-auto-deploy")) for n in ("prod1", "prod2", "prod3")] == [30003] * 3
    # Once pinned, `auto` keeps the port the Service uses everywhere: no write, even in one cluster alone.
    c.journal.reset()
    code, out, err = run_cli(["nodeport", "pin", "--context", "prod2", "--release", "shop", "--node-port", "auto"],
                             capsys)
    assert code == 0 and "already uses node port 30003" in out, err
    assert c.journal.writes() == []


def test_pin_auto_considers_only_the_contexts_given(
    clusters: Any, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    c = clusters("prod1", "prod2", "other")
    c.add_app_service("prod2", release="b", node_port=30000)
    c.add_app_service("other", release="x", node_port=30001)
    c.add_app_service("prod1", release="shop", node_port=31500)
    c.add_app_service("prod2", release="shop", node_port=31501)
    monkeypatch.setenv("MCI_CONTEXTS", "prod1,prod2")
    code, _out, err = run_cli(["nodeport", "pin", "--context", "prod1", "--release", "shop", "--node-port", "auto"],
                             capsys)
    assert code == 0, err
    assert node_port_of(c.service("prod1", "shop-auto-deploy")) == 30001
    assert "30001" in err and "prod1, prod2" in err


def test_verify_help_says_check_not_pin(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_cli(["nodeport", "verify", "--help"], capsys)
    assert code == 0
    assert "to pin" not in out and "Service port (name or number)" in " ".join(out.split())
    assert "Default: 30999" in " ".join(out.split())
    code, out, _ = run_cli(["nodeport", "pin", "--help"], capsys)
    assert "The node port to pin" in " ".join(out.split()) and "[default: 30999]" in out


def test_pin_auto_before_the_app_reached_every_cluster_counts_their_ports_all_the_same(
    clusters: Any, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """prod2 has not been deployed to yet (no namespace `shop` there): its other Services' ports still count."""
    monkeypatch.delenv("MCI_CONTEXTS", raising=False)
    c = clusters("prod1", "prod2")
    c.servers["prod1"].seed({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "shop"}})
    c.add_app_service("prod1", release="shop", namespace="shop", node_port=31500)
    c.add_app_service("prod1", release="a", node_port=30000)
    c.add_app_service("prod2", release="b", node_port=30001)
    code, out, err = run_cli(["nodeport", "pin", "--context", "prod1", "--release", "shop", "-n", "shop",
                              "--node-port", "auto"], capsys)
    assert code == 0, err
    assert "node port auto: 31500, the one the Service already uses, free in all of prod1, prod2" in err
    c.add_app_service("prod2", release="c", node_port=31500)
    code, out, err = run_cli(["nodeport", "pin", "--context", "prod1", "--release", "shop", "-n", "shop",
                              "--node-port", "auto"], capsys)
    assert code == 0, err
    assert "now uses node port 30002" in out
