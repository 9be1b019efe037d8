"""`lb apply` from scratch on 15 clusters × 3 zones with 0.2 s operation latency; no-op re-apply; destroy.

Targets (issue 4): apply ≤ 1.5× the chain's critical path (depth × latency) and ≥ 5× faster than concurrency 1;
a no-op re-apply makes no write. Run: ``.venv/bin/python -m bench.lb_bench``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
from typing import Any

import yaml
from kubernetes import client as k8s

from gitlab_mci import kube
from gitlab_mci.gcp import Compute
from gitlab_mci.ingress import from_service
from gitlab_mci.lb import desired as desired_mod
from gitlab_mci.lb import engine
from gitlab_mci.lb.discovery import discover
from gitlab_mci.nodeport import parallel
from gitlab_mci.sim.spec import generated_spec

LATENCY = 0.2
DEPTH = 5  # address/firewall/health check/named ports → backend service → URL map → proxy → forwarding rule


def _deploy(sim: Any, cluster: str) -> None:
    api = k8s.ApiClient(k8s.Configuration(host=sim.kube_url(cluster)))
    k8s.CoreV1Api(api).create_namespaced_service("default", {
        "metadata": {"name": "shop-auto-deploy"},
        "spec": {"type": "NodePort", "selector": {"app": "shop"},
                 "ports": [{"name": "web", "port": 5000, "nodePort": 30999}]}})


class _Remote:
    """The simulator in its own process, as a real API is: its CPU time is not the client's."""

    def __init__(self, clusters: int, directory: str, latency: float = LATENCY) -> None:
        spec = generated_spec(clusters, zones_per_cluster=3, nodes_per_zone=3)
        raw = {"project": spec.project, "operationLatency": latency,
               "clusters": [{"name": c.name, "location": c.location, "zones": list(c.zones), "nodes": 3}
                            for c in spec.clusters]}
        path = os.path.join(directory, "world.yaml")
        with open(path, "w") as f:
            yaml.safe_dump(raw, f)
        self.dir = os.path.join(directory, "state")
        subprocess.run([sys.executable, "-m", "gitlab_mci", "sim", "up", "--detach", "--spec", path,
                        "--state-dir", self.dir], check=True, capture_output=True)
        with open(os.path.join(self.dir, "state.json")) as f:
            state = json.load(f)
        self.compute_url = state["compute"]
        self.clusters = {n: c["server"] for n, c in state["clusters"].items()}
        self.kubeconfig = state["files"]["kubeconfig"]

    def kube_url(self, cluster: str) -> str:
        return self.clusters[cluster]

    def journal(self) -> list[dict[str, Any]]:
        with urllib.request.urlopen(self.compute_url + "/_sim/journal") as resp:
            entries: list[dict[str, Any]] = json.loads(resp.read())["entries"]
        return entries

    def reset(self) -> None:
        urllib.request.urlopen(urllib.request.Request(self.compute_url + "/_sim/journal", method="DELETE")).read()

    def stop(self) -> None:
        subprocess.run([sys.executable, "-m", "gitlab_mci", "sim", "down", "--state-dir", self.dir],
                       check=True, capture_output=True)


def _count(entries: list[dict[str, Any]], write: bool) -> int:
    reads_by_post = ("/listInstances", "/getHealth", "/wait", "/listNetworkEndpoints")
    def is_write(e: dict[str, Any]) -> bool:
        return e["method"] != "GET" and not e["path"].split("?")[0].endswith(reads_by_post)
    return sum(1 for e in entries if e["service"] == "compute" and not e["path"].startswith("/_sim/")
               and is_write(e) == write)


def calls_by_kind(entries: list[dict[str, Any]]) -> dict[str, int]:
    """Compute calls by method and collection (``POST backendServices``, ``GET operations``…)."""
    counts: dict[str, int] = {}
    for e in entries:
        if e["service"] != "compute" or e["path"].startswith("/_sim/"):
            continue
        # /compute/v1/projects/P/{global/ | zones/Z/ | regions/R/ | aggregated/ | }KIND[/NAME[/METHOD]]
        parts = [p for p in e["path"].split("?")[0].split("/") if p][4:]
        if parts[:1] in (["zones"], ["regions"]):
            parts = parts[2:]
        elif parts[:1] in (["global"], ["aggregated"]):
            parts = parts[1:]
        kind = parts[0] if parts else "?"
        if len(parts) >= 3:
            kind = f"{kind}.{parts[2]}"  # a method on a resource: instanceGroups.setNamedPorts
        key = f"{e['method']} {kind}"
        counts[key] = counts.get(key, 0) + 1
    return dict(sorted(counts.items()))


def run(clusters: int, concurrency: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as d:
        sim = _Remote(clusters, d)
        try:
            os.environ["KUBECONFIG"] = sim.kubeconfig
            parallel(list(sim.clusters), lambda c: _deploy(sim, c))
            compute = Compute("demo-project", sim.compute_url)
            model = from_service("shop-auto-deploy", "web", "shop")
            sim.reset()
            t0 = time.perf_counter()
            conns = parallel(list(sim.clusters), kube.connect)
            infos = discover(conns, compute, "default", ["shop-auto-deploy"])
            want = desired_mod.build(model, desired_mod.Options("shop", "demo-project"), infos)
            discover_s = time.perf_counter() - t0
            api = engine.ComputeApi(compute)
            changes = engine.diff(want, engine.read_actual(api, want))
            t1 = time.perf_counter()
            outcome = engine.execute(api, changes, concurrency=concurrency)
            execute_s = time.perf_counter() - t1
            apply_s = time.perf_counter() - t0
            assert not outcome.failed, outcome.failed
            applied = sim.journal()
            writes = _count(applied, write=True)
            sim.reset()
            t0 = time.perf_counter()
            again = engine.diff(want, engine.read_actual(api, want))
            noop_s = time.perf_counter() - t0
            entries = sim.journal()
            noop_reads, noop_writes = _count(entries, write=False), _count(entries, write=True)
            assert not again
            t0 = time.perf_counter()
            outcome = engine.execute(api, engine.destroy_changes(want.namer, engine.read_actual(api, want)),
                                     concurrency=concurrency)
            destroy_s = time.perf_counter() - t0
            assert not outcome.failed, outcome.failed
            return {"clusters": clusters, "concurrency": concurrency, "apply_s": apply_s,
                    "discover_s": discover_s, "execute_s": execute_s, "writes": writes,
                    "reads": _count(applied, write=False), "calls": calls_by_kind(applied),
                    "noop_s": noop_s, "noop_reads": noop_reads, "noop_writes": noop_writes,
                    "destroy_s": destroy_s, "owned": len(want.resources)}
        finally:
            sim.stop()


def main() -> None:
    run(1, 64)  # warm-up (first connections, lazily imported modules): a per-process cost, see process_bench
    fast = run(15, 64)
    slow = run(15, 1)
    critical = DEPTH * LATENCY
    print(f"lb apply, 15 clusters x 3 zones, {LATENCY}s per operation; critical path {DEPTH} x {LATENCY}s = "
          f"{critical:.1f}s")
    print(f"apply (concurrency 64)   {fast['apply_s']:6.2f}s  {fast['apply_s'] / critical:5.2f}x critical path "
          f"(target <= 1.5x); {fast['writes']} write calls")
    print("(in process: start-up and imports are in `python -m bench.process_bench`, whole-process figures)")
    print(f"  of which discovery     {fast['discover_s']:6.2f}s; changes {fast['execute_s']:.2f}s = "
          f"{fast['execute_s'] / critical:.2f}x critical path")
    speedup = slow["apply_s"] / fast["apply_s"]
    print(f"apply (concurrency 1)    {slow['apply_s']:6.2f}s  concurrency speed-up {speedup:.1f}x (target >= 5x)")
    print(f"  changes only: concurrency 1 {slow['execute_s']:.2f}s vs {fast['execute_s']:.2f}s = "
          f"{slow['execute_s'] / fast['execute_s']:.1f}x")
    print(f"no-op re-apply           {fast['noop_s']:6.2f}s  {fast['noop_reads']} reads, {fast['noop_writes']} "
          f"writes ({fast['owned']} owned resources, 15 clusters)")
    print(f"destroy (concurrency 64) {fast['destroy_s']:6.2f}s")


if __name__ == "__main__":
    main()
