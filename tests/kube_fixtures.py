"""Emulated GKE API servers with a kubeconfig, for tests of commands that only talk to Kubernetes."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from gitlab_mci.sim.httpd import Journal, SimServer


@dataclass
class Clusters:
    kubeconfig: Path
    journal: Journal
    servers: dict[str, Any] = field(default_factory=dict)  # name -> KubeApiServer
    urls: dict[str, str] = field(default_factory=dict)

    def add_app_service(self, cluster: str, release: str = "app", namespace: str = "default",
                        type_: str = "NodePort", node_port: int | None = None, name: str | None = None) -> dict:
        """A Service shaped like the auto-deploy-app chart renders it."""
        port: dict[str, Any] = {"name": "web", "port": 5000, "targetPort": 5000, "protocol": "TCP"}
        if node_port is not None:
            port["nodePort"] = node_port
        svc = {
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"name": name or f"{release}-auto-deploy", "namespace": namespace,
                         "labels": {"app": release, "release": release, "track": "stable", "tier": "web"}},
            "spec": {"type": type_, "ports": [port], "selector": {"app": release, "tier": "web", "track": "stable"}},
        }
        created: dict = self.servers[cluster].seed(svc)
        return created

    def service(self, cluster: str, name: str, namespace: str = "default") -> dict:
        found = self.servers[cluster].get("v1", "Service", name, namespace)
        assert found is not None
        return found


@pytest.fixture
def clusters(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """Factory: ``clusters("prod1", "prod2")`` starts emulated API servers and points KUBECONFIG at them."""
    from gitlab_mci.sim.kube import KubeApiServer

    started: list[SimServer] = []

    def factory(*names: str, latency: float = 0.0) -> Clusters:
        journal = Journal()
        result = Clusters(tmp_path / "kubeconfig", journal)
        for i, name in enumerate(names):
            kube = KubeApiServer(name, seed=i)
            server = SimServer(kube.handle, service=f"kube:{name}", journal=journal, latency=latency).start()
            started.append(server)
            result.servers[name] = kube
            result.urls[name] = server.url
        config = {
            "apiVersion": "v1", "kind": "Config",
            "clusters": [{"name": n, "cluster": {"server": u}} for n, u in result.urls.items()],
            "users": [{"name": "u", "user": {}}],
            "contexts": [{"name": n, "context": {"cluster": n, "user": "u"}} for n in result.urls],
            "current-context": names[0],
        }
        result.kubeconfig.write_text(yaml.safe_dump(config))
        monkeypatch.setenv("KUBECONFIG", str(result.kubeconfig))
        return result

    yield factory
    for server in started:
        server.stop()
