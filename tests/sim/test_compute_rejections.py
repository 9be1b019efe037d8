"""What the real API refuses, the emulator refuses: raw requests that a client library would not even send."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any

import pytest

from tests.conftest import RunningSim

BASE = "/compute/v1/projects/demo-project"


def call(sim: RunningSim, method: str, path: str, body: Any = None) -> tuple[int, dict[str, Any]]:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(sim.sim.compute_url + path, data=data, method=method,
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req) as resp:
            return resp.status, json.loads(resp.read() or b"{}")
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}")


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        ({"name": "x", "colour": "red"}, 'Unknown name "colour" at \'health_check\''),
        ({"name": "x", "type": "PIGEON"}, "Invalid value at 'health_check.type'"),
        ({"name": "x", "checkIntervalSec": "often"}, "Invalid value at 'health_check.check_interval_sec'"),
        ({"name": "x", "httpHealthCheck": {"port": 80, "bogus": 1}}, 'Unknown name "bogus"'),
        ({"name": "Bad_Name"}, "Invalid value for field 'resource.name'"),
        ({}, "Invalid value for field 'resource.name'"),
    ],
)
def test_bad_bodies_get_400_in_googles_shape(sim: RunningSim, body: dict[str, Any], fragment: str) -> None:
    status, answer = call(sim, "POST", f"{BASE}/global/healthChecks", body)
    assert status == 400
    error = answer["error"]
    assert error["code"] == 400 and error["status"] == "INVALID_ARGUMENT"
    assert fragment in error["message"] and error["errors"][0]["reason"] == "invalid"
    assert "x" not in [h["name"] for h in sim.sim.compute.resources("healthChecks")]


def test_unknown_query_parameter_and_wrong_type(sim: RunningSim) -> None:
    status, answer = call(sim, "GET", f"{BASE}/global/addresses?colour=red")
    assert status == 400 and 'Unknown name "colour"' in answer["error"]["message"]
    status, answer = call(sim, "GET", f"{BASE}/global/addresses?maxResults=lots")
    assert status == 400 and "max_results" in answer["error"]["message"]


def test_unknown_path_unknown_project_and_unimplemented_method(sim: RunningSim) -> None:
    assert call(sim, "GET", f"{BASE}/global/pigeons")[0] == 404
    status, answer = call(sim, "GET", "/compute/v1/projects/nobody/global/addresses")
    assert status == 404 and answer["error"]["message"] == "The resource 'projects/nobody' was not found"
    status, answer = call(sim, "POST", f"{BASE}/global/urlMaps/x/validate", {})
    assert status == 501 and "does not implement compute.urlMaps.validate" in answer["error"]["message"]


def test_reference_to_a_missing_resource_is_refused(sim: RunningSim) -> None:
    status, answer = call(sim, "POST", f"{BASE}/global/targetHttpProxies",
                          {"name": "p", "urlMap": "global/urlMaps/missing"})
    assert status == 404 and "projects/demo-project/global/urlMaps/missing" in answer["error"]["message"]
    status, answer = call(sim, "POST", f"{BASE}/global/backendServices",
                          {"name": "b", "backends": [{"group": "zones/us-central1-a/instanceGroups/x"}]})
    assert status == 400 and "backends[0].group" in answer["error"]["message"]


def test_update_without_fingerprint_is_400_and_stale_is_412(sim: RunningSim) -> None:
    assert call(sim, "POST", f"{BASE}/global/healthChecks",
                {"name": "fp", "type": "TCP", "tcpHealthCheck": {"port": 80}})[0] == 200
    assert call(sim, "POST", f"{BASE}/global/backendServices", {"name": "fp"})[0] == 200
    status, answer = call(sim, "PUT", f"{BASE}/global/backendServices/fp", {"name": "fp"})
    assert status == 400 and answer["error"]["errors"][0]["reason"] == "required"
    status, answer = call(sim, "PATCH", f"{BASE}/global/backendServices/fp", {"fingerprint": "c3RhbGU="})
    assert status == 412 and answer["error"]["errors"][0]["reason"] == "conditionNotMet"
    call(sim, "DELETE", f"{BASE}/global/backendServices/fp")
    call(sim, "DELETE", f"{BASE}/global/healthChecks/fp")
