"""gcloud, an independent client, against the Compute emulator (through the CLOUDSDK_CONFIG `sim up` writes)."""

from __future__ import annotations

import json
import os
import subprocess

from tests.conftest import RunningSim


def gcloud(sim: RunningSim, *args: str) -> str:
    env = {**os.environ, "CLOUDSDK_CONFIG": str(sim.files.gcloud_config)}
    done = subprocess.run(["gcloud", *args, "--quiet"], capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, (done.stderr, [(e.method, e.path, e.status) for e in sim.sim.journal.entries()
                                                 if "gc-" in e.path or "operations" in e.path][-8:])
    return done.stdout


def test_gcloud_creates_describes_and_lists_a_load_balancer_chain(sim: RunningSim) -> None:
    group = sim.sim.compute.resources("instanceGroups")[0]
    zone = group["zone"].rsplit("/", 1)[1]
    try:
        gcloud(sim, "compute", "addresses", "create", "gc-ip", "--global")
        gcloud(sim, "compute", "health-checks", "create", "http", "gc-hc", "--port", "30999", "--request-path", "/ok")
        gcloud(sim, "compute", "backend-services", "create", "gc-bs", "--global", "--health-checks", "gc-hc",
               "--protocol", "HTTP", "--port-name", "web", "--load-balancing-scheme", "EXTERNAL_MANAGED")
        gcloud(sim, "compute", "backend-services", "add-backend", "gc-bs", "--global", "--instance-group",
               group["name"], "--instance-group-zone", zone)
        gcloud(sim, "compute", "url-maps", "create", "gc-um", "--default-service", "gc-bs")

        address = json.loads(gcloud(sim, "compute", "addresses", "describe", "gc-ip", "--global", "--format=json"))
        assert address["status"] == "RESERVED" and address["address"].startswith("127.1.")
        hc = json.loads(gcloud(sim, "compute", "health-checks", "describe", "gc-hc", "--format=json"))
        assert hc["httpHealthCheck"]["port"] == 30999 and hc["httpHealthCheck"]["requestPath"] == "/ok"
        bs = json.loads(gcloud(sim, "compute", "backend-services", "describe", "gc-bs", "--global", "--format=json"))
        assert bs["backends"][0]["group"] == group["selfLink"] and bs["healthChecks"][0].endswith("/gc-hc")
        um = json.loads(gcloud(sim, "compute", "url-maps", "describe", "gc-um", "--format=json"))
        assert um["defaultService"] == bs["selfLink"]

        listed = json.loads(gcloud(sim, "compute", "backend-services", "list", "--filter=name~^gc-",
                                   "--format=json"))
        assert [b["name"] for b in listed] == ["gc-bs"]
        names = gcloud(sim, "compute", "health-checks", "list", "--format=value(name)").split()
        assert "gc-hc" in names
        assert sim.sim.journal.writes("compute"), "gcloud's writes went to the emulator"
    finally:
        for args in (["url-maps", "delete", "gc-um"], ["backend-services", "delete", "gc-bs", "--global"],
                     ["health-checks", "delete", "gc-hc"], ["addresses", "delete", "gc-ip", "--global"]):
            subprocess.run(["gcloud", "compute", *args, "--quiet"], capture_output=True, timeout=120,
                           env={**os.environ, "CLOUDSDK_CONFIG": str(sim.files.gcloud_config)})
