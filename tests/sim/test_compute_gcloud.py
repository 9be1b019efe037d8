"""gcloud, an independent client, against the Compute emulator (through the CLOUDSDK_CONFIG `sim up` writes)."""

from __future__ import annotations

import json
import os
import subprocess

import pytest
from google.cloud import compute_v1

from gitlab_mci.gcp import Compute
from tests.conftest import RunningSim

P = "demo-project"


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


def gcloud_fails(sim: RunningSim, *args: str) -> str:
    env = {**os.environ, "CLOUDSDK_CONFIG": str(sim.files.gcloud_config)}
    done = subprocess.run(["gcloud", *args, "--quiet"], capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode != 0, done.stdout
    return done.stderr


def _http_proxy(sim: RunningSim, name: str) -> str:
    """A target HTTP proxy (with its URL map, backend service and health check) made with the Python client."""
    gc = Compute(P, sim.sim.compute_url)
    hc = gc.client(compute_v1.HealthChecksClient)
    gc.wait(hc.insert(project=P, health_check_resource=compute_v1.HealthCheck(
        name=name, type_="HTTP", http_health_check=compute_v1.HTTPHealthCheck(port=30999))))
    bs = gc.client(compute_v1.BackendServicesClient)
    gc.wait(bs.insert(project=P, backend_service_resource=compute_v1.BackendService(
        name=name, health_checks=[hc.get(project=P, health_check=name).self_link],
        load_balancing_scheme="EXTERNAL_MANAGED")))
    um = gc.client(compute_v1.UrlMapsClient)
    gc.wait(um.insert(project=P, url_map_resource=compute_v1.UrlMap(
        name=name, default_service=bs.get(project=P, backend_service=name).self_link)))
    hp = gc.client(compute_v1.TargetHttpProxiesClient)
    gc.wait(hp.insert(project=P, target_http_proxy_resource=compute_v1.TargetHttpProxy(
        name=name, url_map=um.get(project=P, url_map=name).self_link)))
    return name


def _delete_chain(sim: RunningSim, name: str) -> None:
    """Remove what :func:`_http_proxy` made, directly in the emulator (the shared simulator must stay clean)."""
    for collection in ("targetHttpProxies", "urlMaps", "backendServices", "healthChecks"):
        sim.sim.compute.remove(collection, name, project=P)


def test_gcloud_cannot_put_a_second_forwarding_rule_on_an_address_and_port_in_use(sim: RunningSim) -> None:
    proxy = _http_proxy(sim, "gc-dup")
    try:
        gcloud(sim, "compute", "addresses", "create", "gc-dup-ip", "--global")
        ip = gcloud(sim, "compute", "addresses", "describe", "gc-dup-ip", "--global", "--format=value(address)").strip()
        # The first rule names the address resource (gcloud sends its URL), the second its IP: same IP, same port.
        gcloud(sim, "compute", "forwarding-rules", "create", "gc-dup-a", "--global", "--target-http-proxy", proxy,
               "--address", "gc-dup-ip", "--global-address", "--ports", "80",
               "--load-balancing-scheme", "EXTERNAL_MANAGED")
        err = gcloud_fails(sim, "compute", "forwarding-rules", "create", "gc-dup-b", "--global",
                           "--target-http-proxy", proxy, "--address", ip, "--ports", "80",
                           "--load-balancing-scheme", "EXTERNAL_MANAGED")
        assert (f"Invalid value for field 'resource.IPAddress': '{ip}'. Specified IP address is in-use and would "
                "result in a conflict.") in err
        # The same IP on another port is another listener: accepted.
        gcloud(sim, "compute", "forwarding-rules", "create", "gc-dup-c", "--global", "--target-http-proxy", proxy,
               "--address", ip, "--ports", "8080", "--load-balancing-scheme", "EXTERNAL_MANAGED")
        names = gcloud(sim, "compute", "forwarding-rules", "list", "--global", "--format=value(name)").split()
        assert sorted(n for n in names if n.startswith("gc-dup")) == ["gc-dup-a", "gc-dup-c"]
    finally:
        for rule in ("gc-dup-a", "gc-dup-b", "gc-dup-c"):
            sim.sim.compute.remove("globalForwardingRules", rule, project=P)
        sim.sim.compute.remove("globalAddresses", "gc-dup-ip", project=P)
        _delete_chain(sim, proxy)


@pytest.mark.parametrize("listing", [["instance-groups"], ["instance-groups", "unmanaged"],
                                     ["instance-groups", "managed"]], ids="-".join)
def test_gcloud_lists_the_node_pools_instance_groups(sim: RunningSim, listing: list[str]) -> None:
    # gcloud asks for the instance group managers of every zone in one call to Compute's batch endpoint, to tell
    # managed groups (GKE's node pools) from unmanaged ones (such as one a user made by hand).
    gke = sorted(g["name"] for g in sim.sim.compute.resources("instanceGroups"))
    zone = sim.sim.compute.resources("instanceGroups")[0]["zone"].rsplit("/", 1)[1]
    sim.sim.compute.seed("instanceGroups", {"name": "gc-by-hand", "instances": []}, project=P, zone=zone)
    try:
        listed = json.loads(gcloud(sim, "compute", *listing, "list", "--format=json"))
    finally:
        sim.sim.compute.remove("instanceGroups", "gc-by-hand", project=P, zone=zone)
    names = sorted(g["name"] for g in listed)
    # The batch and each request in it are in the journal; listing writes nothing.
    entries = sim.sim.journal.entries("compute")
    assert "/batch/compute/v1" in [e.path for e in entries]
    assert any(e.path.split("?")[0].endswith(f"/zones/{zone}/instanceGroupManagers") for e in entries) or \
        listing[-1] == "managed"
    assert sim.sim.journal.writes() == []
    if listing == ["instance-groups"]:
        assert names == sorted([*gke, "gc-by-hand"])
        assert {g["name"]: g["isManaged"] for g in listed} == {**{n: "Yes" for n in gke}, "gc-by-hand": "No"}
    elif listing[-1] == "unmanaged":
        assert names == ["gc-by-hand"]
    else:
        assert names == gke and all(g["targetSize"] == 3 for g in listed)
