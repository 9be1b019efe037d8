"""`nodeport verify` and `pin` over 15 clusters vs 1, with 100 ms added to every Kubernetes API answer.

Target (issue 3): 15 clusters within 1.5× the time of one — the clusters are asked in parallel.
Run: ``.venv/bin/python -m bench.nodeport_bench``.
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

import yaml

from gitlab_mci import kube, nodeport
from gitlab_mci.sim.httpd import Journal, SimServer
from gitlab_mci.sim.kube import KubeApiServer

LATENCY = 0.1


def _world(n: int, directory: Path) -> list[SimServer]:
    servers = []
    for i in range(n):
        api = KubeApiServer(f"c{i}", seed=i)
        api.seed({"apiVersion": "v1", "kind": "Service",
                  "metadata": {"name": "app-auto-deploy", "namespace": "default",
                               "labels": {"app": "app", "track": "stable"}},
                  "spec": {"type": "NodePort", "ports": [{"name": "web", "port": 5000, "nodePort": 31000 + i}]}})
        servers.append(SimServer(api.handle, service=f"kube:c{i}", journal=Journal(), latency=LATENCY).start())
    config = {"apiVersion": "v1", "kind": "Config", "users": [{"name": "u", "user": {}}],
              "clusters": [{"name": f"c{i}", "cluster": {"server": s.url}} for i, s in enumerate(servers)],
              "contexts": [{"name": f"c{i}", "context": {"cluster": f"c{i}", "user": "u"}} for i in range(n)],
              "current-context": "c0"}
    (directory / "kubeconfig").write_text(yaml.safe_dump(config))
    os.environ["KUBECONFIG"] = str(directory / "kubeconfig")
    return servers


def measure(n: int) -> tuple[float, float]:
    with tempfile.TemporaryDirectory() as d:
        servers = _world(n, Path(d))
        try:
            ref = nodeport.ServiceRef("default", "app")
            clusters = nodeport.parallel([f"c{i}" for i in range(n)], kube.connect)
            t0 = time.perf_counter()
            nodeport.verify(clusters, [ref], 30999)
            verify = time.perf_counter() - t0
            t0 = time.perf_counter()
            nodeport.parallel(clusters, lambda c: nodeport.pin(c, ref, 30999, timeout=30))
            pin = time.perf_counter() - t0
            return verify, pin
        finally:
            for s in servers:
                s.stop()


def main() -> None:
    one = min(measure(1) for _ in range(3))
    many = min(measure(15) for _ in range(3))
    print(f"nodeport over emulated clusters, {LATENCY * 1000:.0f} ms added per API call (best of 3)")
    print(f"{'command':<10}{'1 cluster':>12}{'15 clusters':>14}{'ratio':>8}{'target':>8}")
    for label, a, b in (("verify", one[0], many[0]), ("pin", one[1], many[1])):
        print(f"{label:<10}{a:>11.2f}s{b:>13.2f}s{b / a:>8.2f}{1.5:>8.1f}")


if __name__ == "__main__":
    main()
