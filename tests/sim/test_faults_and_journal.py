"""Fault injection and the request journal, as seen by the real google-cloud-compute client."""

from __future__ import annotations

import time

import pytest
from google.api_core import exceptions as gexc
from google.cloud import compute_v1

from gitlab_mci.gcp import Compute
from gitlab_mci.sim.httpd import FaultRule
from gitlab_mci.sim.runtime import add_fault
from tests.conftest import RunningSim

P = "demo-project"


@pytest.mark.parametrize(
    ("status", "reason", "exception"),
    [(429, None, gexc.TooManyRequests), (500, None, gexc.InternalServerError),
     (503, None, None), (403, "rateLimitExceeded", gexc.Forbidden)],
)
def test_status_faults_reach_the_client(
    sim: RunningSim, status: int, reason: str | None, exception: type | None
) -> None:
    sim.sim.faults.add(FaultRule(status=status, reason=reason, service="compute", path="/global/addresses$", times=1))
    client = Compute(P, sim.sim.compute_url).client(compute_v1.GlobalAddressesClient)
    if exception is None:
        list(client.list(project=P))  # the library itself retries a 503 on a read, and the fault fired once
    else:
        with pytest.raises(exception) as info:
            list(client.list(project=P))
        assert isinstance(info.value, gexc.GoogleAPICallError)
        assert info.value.errors[0]["reason"] == (reason or info.value.errors[0]["reason"])
        list(client.list(project=P))  # fired once only
    entries = sim.sim.journal.entries("compute")
    assert [e.status for e in entries] == [status, 200]
    assert entries[0].fault == f"status {status}" and entries[0].duration >= 0


def test_nth_call_and_seeded_probability_are_reproducible(sim: RunningSim) -> None:
    rule = sim.sim.faults.add(FaultRule(status=500, service="compute", method="GET", nth=3))
    client = Compute(P, sim.sim.compute_url).client(compute_v1.ZonesClient)
    outcomes = []
    for _ in range(4):
        try:
            client.get(project=P, zone="us-central1-a")
            outcomes.append("ok")
        except gexc.InternalServerError:
            outcomes.append("500")
    assert outcomes == ["ok", "ok", "500", "ok"] and rule.fired == 1

    def schedule(seed: int) -> list[bool]:
        r = FaultRule(status=500, probability=0.3, seed=seed)
        return [r.should_fire() for _ in range(50)]

    assert schedule(7) == schedule(7) != schedule(8)
    assert 5 <= sum(schedule(7)) <= 25


def test_latency_fault_and_journal_reset(sim: RunningSim) -> None:
    add_fault(sim.sim.faults, {"action": "latency", "latency": 0.2, "service": "kube:prod1", "path": "/api/v1/nodes"})
    import urllib.request

    t0 = time.monotonic()
    urllib.request.urlopen(sim.sim.kube_url("prod1") + "/api/v1/nodes").read()
    assert time.monotonic() - t0 >= 0.2
    (entry,) = sim.sim.journal.entries("kube")
    assert entry.service == "kube:prod1" and entry.method == "GET" and entry.duration >= 0.2
    assert entry.fault == "latency 0.2s"
    sim.sim.journal.reset()
    assert sim.sim.journal.entries() == []
    with pytest.raises(ValueError, match="unknown field"):
        add_fault(sim.sim.faults, {"status": 503, "pth": "/x"})


def test_a_batch_from_google_api_python_client_answers_each_part_and_journals_it(sim: RunningSim) -> None:
    from google.auth.credentials import AnonymousCredentials
    from googleapiclient.discovery import build
    from googleapiclient.http import BatchHttpRequest

    service = build("compute", "v1", credentials=AnonymousCredentials(), static_discovery=True,
                    client_options={"api_endpoint": sim.sim.compute_url + "/compute/v1/"})
    answers: dict[str, tuple[object, object]] = {}
    sim.sim.faults.add(FaultRule(status=503, service="compute", path="/zones/europe-west1-b$"))
    batch = BatchHttpRequest(callback=lambda rid, resp, exc: answers.__setitem__(rid, (resp, exc)),
                             batch_uri=sim.sim.compute_url + "/batch/compute/v1")
    batch.add(service.zones().get(project=P, zone="us-central1-a"), request_id="ok")
    batch.add(service.zones().get(project=P, zone="europe-west1-b"), request_id="faulted")
    batch.add(service.zones().get(project=P, zone="nowhere-1a"), request_id="missing")
    batch.execute()
    assert answers["ok"][0]["name"] == "us-central1-a"  # type: ignore[index]
    assert [getattr(answers[k][1], "status_code", None) for k in ("ok", "faulted", "missing")] == [None, 503, 404]
    entries = sim.sim.journal.entries("compute")
    assert [(e.method, e.path.split("?")[0].rsplit("/", 1)[1], e.status, e.fault) for e in entries] == [
        ("POST", "v1", 200, None), ("GET", "us-central1-a", 200, None), ("GET", "europe-west1-b", 503, "status 503"),
        ("GET", "nowhere-1a", 404, None)]
    assert sim.sim.journal.writes() == []
