"""A project that already has its own Helm values (the recipe's values.yaml on port 8080) adopts gitlab-mci:
the deploy keeps the app's ports, pins the node port, and `nodeport pin` then has nothing to change."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from kubernetes import client as k8s

from tests.cli_helpers import run_cli

RECIPE_VALUES = "service:\n  type: NodePort\n  externalPort: 8080\n  internalPort: 8080\n"


@pytest.mark.parametrize("how", ["HELM_UPGRADE_EXTRA_ARGS --values", ".gitlab/auto-deploy-values.yaml"])
def test_recipe_project_on_8080_deploys_on_8080_with_the_pinned_node_port_and_pin_changes_nothing(
    how: str, clusters: Any, capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    c = clusters("prod1", "prod2")
    monkeypatch.chdir(tmp_path)
    for var in ("HELM_UPGRADE_VALUES_FILE", "MCI_NODE_PORT", "MCI_SERVICE_PORT", "MCI_INTERNAL_PORT",
                "MCI_VALUES_FILE", "MCI_DISABLE_INGRESS", "MCI_CONTEXTS"):
        monkeypatch.delenv(var, raising=False)
    (tmp_path / ".gitlab").mkdir()
    if how.startswith("HELM_UPGRADE_EXTRA_ARGS"):
        (tmp_path / "values.yaml").write_text(RECIPE_VALUES)
        monkeypatch.setenv("HELM_UPGRADE_EXTRA_ARGS", "--atomic --values values.yaml")
    else:
        (tmp_path / ".gitlab" / "auto-deploy-values.yaml").write_text(RECIPE_VALUES)
        monkeypatch.setenv("HELM_UPGRADE_EXTRA_ARGS", "--atomic")

    code, _, err = run_cli(["helm", "values", "--values-file", ".gitlab/mci-values.yaml"], capsys)
    assert code == 0, err
    code, extra, err = run_cli(["helm", "extra-args", "--values-file", ".gitlab/mci-values.yaml"], capsys)
    assert code == 0, err
    assert "keeping service.externalPort=8080" in err
    monkeypatch.setenv("HELM_UPGRADE_EXTRA_ARGS", extra.strip())
    for name in ("prod1", "prod2"):
        # The stand-in passes .gitlab/auto-deploy-values.yaml (when it exists) before the extra arguments, like
        # auto-deploy does.
        code, out, err = run_cli(["sim", "deploy", "--context", name, "--release", "shop"], capsys)
        assert code == 0, err
        assert "Service shop-auto-deploy (NodePort web:8080→30999)" in out

    for name in ("prod1", "prod2"):
        core = k8s.CoreV1Api(k8s.ApiClient(k8s.Configuration(host=c.urls[name])))
        svc = core.read_namespaced_service("shop-auto-deploy", "default")
        assert [(p.port, p.target_port, p.node_port) for p in svc.spec.ports] == [(8080, 8080, 30999)]
        pods = core.list_namespaced_pod("default", label_selector="app=shop,track=stable").items
        assert pods and all([p.container_port for p in pod.spec.containers[0].ports] == [8080] for pod in pods)
        assert pods[0].spec.containers[0].readiness_probe.http_get.port == 8080

    c.journal.reset()
    for name in ("prod1", "prod2"):
        code, out, err = run_cli(["nodeport", "pin", "--context", name, "--release", "shop"], capsys)
        assert code == 0, err
        assert out.strip() == f"{name}: Service default/shop-auto-deploy port 8080 already uses node port 30999"
    assert c.journal.writes() == []
    code, _, err = run_cli(["nodeport", "verify", "--release", "shop"], capsys)
    assert code == 0, err
