"""gitlab-mci's own Compute REST transport (gitlab_mci.compute_rest) against the simulator, checked with
google-cloud-compute as the independent client; and that the Compute commands no longer import that library."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from typing import Any

import pytest
from google.cloud import compute_v1

from gitlab_mci.compute_rest import ComputeApiError
from gitlab_mci.errors import UserError
from gitlab_mci.gcp import Compute, OperationError
from gitlab_mci.lb.engine import ComputeApi
from gitlab_mci.sim.httpd import FaultRule
from gitlab_mci.sim.spec import parse_spec
from tests.conftest import RunningSim
from tests.lb.test_discovery import deploy_app

P = "demo-project"


@pytest.fixture
def api(sim: RunningSim) -> ComputeApi:
    return ComputeApi(Compute(P, sim.sim.compute_url), backoff=0.0)


def _name(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def _addresses(sim: RunningSim, names: list[str]) -> None:
    """Reserve addresses with the library a Python user would use (not with the transport under test)."""
    gc = Compute(P, sim.sim.compute_url)
    client = gc.client(compute_v1.GlobalAddressesClient)
    for name in names:
        gc.wait(client.insert(project=P, address_resource=compute_v1.Address(name=name)))


def _delete_addresses(sim: RunningSim, names: list[str]) -> None:
    gc = Compute(P, sim.sim.compute_url)
    client = gc.client(compute_v1.GlobalAddressesClient)
    for name in names:
        gc.wait(client.delete(project=P, address=name))


def test_a_missing_resource_is_a_404_with_the_apis_message_and_reason(api: ComputeApi) -> None:
    with pytest.raises(ComputeApiError) as info:
        api.rest.get("global/addresses/not-there")
    err = info.value
    assert err.code == 404 and err.reason == "notFound"
    assert err.message.startswith(f"GET {api.compute.endpoint}/compute/v1/projects/{P}/global/addresses/not-there: ")
    assert "not-there" in err.message.split(": ", 1)[1]
    assert api.rest.get_or_none("global/addresses/not-there") is None
    assert api.get("globalAddresses", "not-there") is None


def test_an_invalid_body_is_refused_in_one_line_without_retrying(sim: RunningSim, api: ComputeApi) -> None:
    with pytest.raises(UserError, match=r"^create globalAddresses/bad-1: POST .*: ") as info:
        api.insert("globalAddresses", {"name": "bad-1", "adress": "1.2.3.4"})  # misspelt field
    assert "\n" not in str(info.value)
    assert len([e for e in sim.sim.journal.entries("compute") if e.method == "POST"]) == 1


@pytest.mark.parametrize(("status", "reason"), [(503, None), (500, None), (429, None), (403, "rateLimitExceeded")])
def test_transient_errors_are_retried_until_the_api_answers(sim: RunningSim, api: ComputeApi, status: int,
                                                           reason: str | None) -> None:
    name = _name("retry")
    _addresses(sim, [name])
    try:
        sim.sim.faults.add(FaultRule(status=status, reason=reason, service="compute", path="/global/addresses$",
                                     times=2))
        sim.sim.journal.reset()
        assert [a["name"] for a in api.list("globalAddresses", name)] == [name]
        assert [e.status for e in sim.sim.journal.entries("compute")] == [status, status, 200]
    finally:
        _delete_addresses(sim, [name])


def test_a_permission_error_is_not_retried(sim: RunningSim, api: ComputeApi) -> None:
    sim.sim.faults.add(FaultRule(status=403, reason="forbidden", service="compute", path="/global/addresses$"))
    with pytest.raises(UserError, match=r"^list globalAddresses: GET "):
        api.list("globalAddresses", "anything")
    assert [e.status for e in sim.sim.journal.entries("compute")] == [403]


def test_transient_errors_give_up_after_the_retries(sim: RunningSim) -> None:
    api = ComputeApi(Compute(P, sim.sim.compute_url), retries=2, backoff=0.0)
    sim.sim.faults.add(FaultRule(status=503, service="compute", path="/global/firewalls$"))
    with pytest.raises(UserError, match=r"^list firewalls: GET .*"):
        api.list("firewalls", "x")
    assert [e.status for e in sim.sim.journal.entries("compute")] == [503, 503, 503]


def test_a_retried_insert_carries_the_same_request_id(sim: RunningSim, api: ComputeApi) -> None:
    name = _name("rid")
    sim.sim.faults.add(FaultRule(status=503, service="compute", method="POST", path="/global/addresses$", times=1))
    try:
        api.insert("globalAddresses", {"name": name, "description": "d"})
        posts = [e for e in sim.sim.journal.entries("compute") if e.method == "POST" and "/wait" not in e.path]
        ids = {e.path.split("requestId=", 1)[1] for e in posts}
        assert len(posts) == 2 and len(ids) == 1
        got = Compute(P, sim.sim.compute_url).client(compute_v1.GlobalAddressesClient).get(project=P, address=name)
        assert got.description == "d"
    finally:
        _delete_addresses(sim, [name])


def test_an_operation_that_finishes_with_an_error_is_a_failure(sim: RunningSim, api: ComputeApi) -> None:
    name = _name("opfail")
    sim.sim.faults.add(FaultRule(action="operation_error", service="compute", method="POST",
                                 path="/global/addresses$", times=1))
    op = api.rest.post("global/addresses", {"name": name}, params={"requestId": str(uuid.uuid4())})
    with pytest.raises(OperationError) as info:
        api.compute.wait(op, timeout=30, what=f"create {name}")
    assert str(info.value).startswith(f"create {name} failed: ") and info.value.reasons
    # Through the engine: one line, as a UserError.
    sim.sim.faults.add(FaultRule(action="operation_error", service="compute", method="POST",
                                 path="/global/addresses$", times=1))
    with pytest.raises(UserError, match=f"^create globalAddresses/{name}-2 failed: "):
        api.insert("globalAddresses", {"name": f"{name}-2"})


def test_operations_are_awaited_on_the_same_endpoint(make_sim: Any) -> None:
    slow: RunningSim = make_sim(parse_spec({"operationLatency": 0.3,
                                            "clusters": [{"name": "prod1", "location": "us-central1-a"}]}))
    api = ComputeApi(Compute(P, slow.sim.compute_url), backoff=0.0)
    api.insert("firewalls", {"name": "fw-wait", "network": "global/networks/default",
                             "allowed": [{"IPProtocol": "tcp", "ports": ["30999"]}]})
    # Done only when the simulator says so, asked with operations.wait on the simulator, not on Google's endpoint.
    waits = [e.path for e in slow.sim.journal.entries("compute") if e.path.endswith("/wait")]
    assert waits and all(w.startswith(f"/compute/v1/projects/{P}/global/operations/") for w in waits)
    assert slow.sim.compute.get("firewalls", "fw-wait", project=P)["name"] == "fw-wait"


def test_lists_follow_every_page_and_keep_the_filter(sim: RunningSim, api: ComputeApi) -> None:
    prefix = _name("page")
    names = [f"{prefix}-{i}" for i in range(5)]
    _addresses(sim, [*names, _name("other")])
    try:
        sim.sim.journal.reset()
        listed = api.rest.list("global/addresses", filter=f'name eq "{prefix}-.*"', max_results=2)
        assert sorted(a["name"] for a in listed) == names
        gets = [e for e in sim.sim.journal.entries("compute") if e.method == "GET"]
        assert len(gets) == 3 and all("filter=" in e.path for e in gets)
        library = Compute(P, sim.sim.compute_url).client(compute_v1.GlobalAddressesClient)
        assert sorted(a["name"] for a in listed) == sorted(
            a.name for a in library.list(project=P) if a.name.startswith(prefix))
    finally:
        _delete_addresses(sim, sim_names(sim, "page-") + sim_names(sim, "other-"))


def sim_names(sim: RunningSim, prefix: str) -> list[str]:
    return [r["name"] for r in sim.sim.compute.resources("globalAddresses") if r["name"].startswith(prefix)]


def test_aggregated_lists_follow_every_page(sim: RunningSim, api: ComputeApi) -> None:
    every = api.rest.aggregated("instances")
    paged = api.rest.aggregated("instances", max_results=1)
    library = Compute(P, sim.sim.compute_url).client(compute_v1.InstancesClient)
    expected = sorted((scope, i.name) for scope, listed in library.aggregated_list(project=P)
                      for i in listed.instances)
    assert len(expected) > 1
    assert sorted((s, i["name"]) for s, i in every) == sorted((s, i["name"]) for s, i in paged) == expected


def test_a_dead_endpoint_is_a_retried_503_then_one_line(sim: RunningSim) -> None:
    api = ComputeApi(Compute(P, "http://127.0.0.1:9"), retries=1, backoff=0.0)
    with pytest.raises(UserError, match=r"^list firewalls: GET http://127\.0\.0\.1:9/.*connection failed"):
        api.list("firewalls", "x")


def test_a_real_endpoint_without_credentials_is_refused_before_any_call(monkeypatch: pytest.MonkeyPatch,
                                                                        tmp_path: Any) -> None:
    for var in ("GOOGLE_APPLICATION_CREDENTIALS", "CLOUDSDK_CONFIG"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("CLOUDSDK_CONFIG", str(tmp_path))  # no gcloud login either
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("NO_GCE_CHECK", "True")
    monkeypatch.setenv("GCE_METADATA_HOST", "127.0.0.1:9")
    with pytest.raises(UserError, match="no Google credentials"):
        Compute(P, "https://compute.googleapis.com").rest  # noqa: B018 - the property builds the transport


@pytest.fixture
def world(make_sim: Any) -> RunningSim:
    running: RunningSim = make_sim(parse_spec({"clusters": [{"name": "prod1", "location": "us-central1-a"},
                                                            {"name": "prod2", "location": "europe-west1-b"}]}))
    for name in ("prod1", "prod2"):
        deploy_app(running, name, 30999)
    return running


_MODULES = """
import contextlib, io, json, sys
from gitlab_mci.cli import main
for args in json.loads(sys.argv[1]):
    with contextlib.redirect_stdout(io.StringIO()):
        try:
            main(args)
        except SystemExit as exc:
            assert exc.code in (0, None, 3), (args, exc.code)  # 3: not healthy yet
print(json.dumps(sorted(m for m in sys.modules if m.startswith(("google.cloud", "google.api_core", "grpc",
                                                                 "proto", "kubernetes.client.api.")))))
"""


def test_lb_plan_apply_status_and_destroy_import_no_google_cloud_library(world: RunningSim) -> None:
    base = ["--lb", "shop", "--context", "prod1,prod2"]
    routing = ["--service", "shop-auto-deploy", "--port", "web"]
    import json

    commands = [["lb", "plan", *base, *routing], ["lb", "apply", *base, *routing], ["lb", "plan", *base, *routing],
                ["lb", "status", *base], ["lb", "destroy", *base, "--release-ip"]]
    done = subprocess.run([sys.executable, "-c", _MODULES, json.dumps(commands)], capture_output=True, text=True,
                          timeout=120, env={**os.environ, **world.env})
    assert done.returncode == 0, done.stderr
    # No google-cloud-compute, api_core, grpc or proto-plus; no generated Kubernetes API class with its models.
    assert json.loads(done.stdout.splitlines()[-1]) == []
    assert not [r for r in world.sim.compute.resources() if str(r.get("description", "")).startswith("gitlab-mci:")]
