"""`lb apply --backends neg` from scratch on 15 clusters × 3 zones with 0.2 s operation latency, and the NEG wait.

The NEG wait (GKE's NEG controller making a NEG per zone and attaching the pods, after the Service is exposed) is the
controller's time, not ours: reported apart. The apply is measured once the NEGs exist (discovery still checks them
all: one aggregated list and one listNetworkEndpoints per NEG), against the chain's critical path (health check →
backend service → URL map → proxy → forwarding rule: 5 × latency; target ≤ 1.5×, as for instance groups).
Run: ``.venv/bin/python -m bench.neg_bench [clusters]``.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from typing import Any

from kubernetes import client as k8s

from bench.lb_bench import DEPTH, LATENCY, _count, _Remote, calls_by_kind
from gitlab_mci import kube
from gitlab_mci.gcp import Compute
from gitlab_mci.ingress import from_service
from gitlab_mci.lb import desired as desired_mod
from gitlab_mci.lb import engine, negs
from gitlab_mci.lb.discovery import discover
from gitlab_mci.lb.names import Namer
from gitlab_mci.nodeport import parallel

LABELS = {"app": "shop"}


def _deploy(sim: Any, cluster: str) -> None:
    """The app (three pods) and its ClusterIP Service, exposed as `gitlab-mci neg expose` does (each cluster's
    own NEG name: the generated clusters share zones pairwise)."""
    api = k8s.ApiClient(k8s.Configuration(host=sim.kube_url(cluster)))
    k8s.AppsV1Api(api).create_namespaced_deployment("default", {
        "metadata": {"name": "shop"},
        "spec": {"replicas": 3, "selector": {"matchLabels": LABELS}, "template": {
            "metadata": {"labels": LABELS},
            "spec": {"containers": [{"name": "app", "image": "x", "ports": [{"containerPort": 5000}]}]}}}})
    k8s.CoreV1Api(api).create_namespaced_service("default", {
        "metadata": {"name": "shop-auto-deploy", "annotations": {"cloud.google.com/neg": json.dumps(
            {"exposed_ports": {"5000": {"name": Namer("shop").neg_name(5000, cluster)}}})}},
        "spec": {"type": "ClusterIP", "selector": LABELS, "ports": [{"name": "web", "port": 5000,
                                                                      "targetPort": 5000}]}})


def _apply(sim: Any, compute: Compute, concurrency: int) -> dict[str, Any]:
    """Discovery (with the NEG wait), build, diff, execute: what `lb apply --backends neg` does."""
    model = from_service("shop-auto-deploy", "web", "shop")
    t0 = time.perf_counter()
    conns = parallel(list(sim.clusters), kube.connect)
    infos = discover(conns, compute, "default", ["shop-auto-deploy"])
    waited = negs.Waited()
    infos = negs.wait_for_negs(conns, infos, compute, "default", [negs.Wanted("shop-auto-deploy", 5000)],
                               timeout=300, waited=waited)
    want = desired_mod.build(model, desired_mod.Options("shop", "demo-project", balancing_mode="RATE",
                                                        backends="neg"), infos)
    discover_s = time.perf_counter() - t0
    api = engine.ComputeApi(compute)
    changes = engine.diff(want, engine.read_actual(api, want))
    t1 = time.perf_counter()
    outcome = engine.execute(api, changes, concurrency=concurrency)
    assert not outcome.failed, outcome.failed
    return {"apply_s": time.perf_counter() - t0, "discover_s": discover_s, "execute_s": time.perf_counter() - t1,
            "neg_wait_s": waited.seconds, "neg_rounds": waited.rounds, "want": want, "api": api}


def run(clusters: int, concurrency: int = 64) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as d:
        sim = _Remote(clusters, d)
        try:
            os.environ["KUBECONFIG"] = sim.kubeconfig
            compute = Compute("demo-project", sim.compute_url)
            exposed = time.perf_counter()
            parallel(list(sim.clusters), lambda c: _deploy(sim, c))
            # The NEG wait on its own: from the Services' exposure until every zone has its NEG with endpoints.
            conns = parallel(list(sim.clusters), kube.connect)
            waited = negs.Waited()
            negs.wait_for_negs(conns, discover(conns, compute, "default", ["shop-auto-deploy"]), compute,
                               "default", [negs.Wanted("shop-auto-deploy", 5000)], timeout=300, waited=waited,
                               progress=lambda line: print(line, file=sys.stderr, flush=True))
            neg_ready_s = time.perf_counter() - exposed
            sim.reset()
            result = _apply(sim, compute, concurrency)
            applied = sim.journal()
            want, api = result.pop("want"), result.pop("api")
            sim.reset()
            again = engine.diff(want, engine.read_actual(api, want))
            assert not again, again
            return {"clusters": clusters, "concurrency": concurrency, **result, "neg_ready_s": neg_ready_s,
                    "writes": _count(applied, write=True), "reads": _count(applied, write=False),
                    "calls": calls_by_kind(applied), "owned": len(want.resources)}
        finally:
            sim.stop()


def main() -> None:
    clusters = int(sys.argv[1]) if len(sys.argv) > 1 else 15
    run(1)  # warm-up: first connections and lazily imported modules are per-process costs
    r = run(clusters)
    critical = DEPTH * LATENCY
    print(f"lb apply --backends neg, {clusters} clusters x 3 zones, {LATENCY}s per operation; critical path "
          f"{DEPTH} x {LATENCY}s = {critical:.1f}s")
    print(f"NEG wait (controller)    {r['neg_ready_s']:6.2f}s from exposing the Services to every NEG with endpoints")
    print(f"apply (concurrency 64)   {r['apply_s']:6.2f}s  {r['apply_s'] / critical:5.2f}x critical path "
          f"(target <= 1.5x); {r['writes']} write calls")
    print(f"  of which discovery     {r['discover_s']:6.2f}s (NEG check {r['neg_wait_s']:.2f}s, "
          f"{r['neg_rounds']} round); changes {r['execute_s']:.2f}s = {r['execute_s'] / critical:.2f}x critical path")
    print("Compute calls: " + ", ".join(f"{k} {v}" for k, v in r["calls"].items()))


if __name__ == "__main__":
    main()
