"""`lb takeover` of the recipe's kubemci chain: what it shows before writing, how it resumes after a stop at any
write, how it goes back (--rollback), and the inputs it refuses before any write."""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from typing import Any

import pytest

from gitlab_mci.gcp import Compute
from gitlab_mci.lb.engine import ComputeApi
from gitlab_mci.sim.httpd import FaultRule
from tests.cli_helpers import run_cli
from tests.conftest import RunningSim
from tests.lb.takeover_world import ROUTING, P, Traffic, kubemci, leftovers, phases, takeover, writes
from tests.pki import self_signed
from tests.reliability.conftest import WRITE_METHODS, WRITE_PATHS

APPLY = ["lb", "apply", "--lb", "shop", "--context", "prod1,prod2", "--static-ip", "web-ip", *ROUTING,
         "--check-interval-sec", "1", "--ssl-certificate", "mci1-ssl--shop"]
DESTROY = ["lb", "destroy", "--lb", "shop", "--context", "prod1,prod2"]
_VOLATILE = {"id", "creationTimestamp", "fingerprint", "labelFingerprint", "selfLink", "users", "usedBy", "kind",
             "status"}


@functools.cache
def _pair() -> tuple[str, str]:
    return self_signed("shop.example.com")


def _https_chain(running: RunningSim) -> str:
    """The recipe's HTTPS chain (the same certificate each time); its VIP."""
    cert, key = _pair()
    kubemci(running, certificate=cert, private_key=key)
    vip = running.sim.compute.get("globalAddresses", "web-ip", project=P)
    assert vip is not None
    return str(vip["address"])


def _api(running: RunningSim) -> ComputeApi:
    return ComputeApi(Compute(P, running.sim.compute_url))


def _world(running: RunningSim) -> dict[str, Any]:
    """Every load-balancing resource and named port, comparable between runs."""
    out: dict[str, Any] = {}
    for coll in ("globalForwardingRules", "targetHttpProxies", "targetHttpsProxies", "urlMaps", "backendServices",
                 "healthChecks", "firewalls", "sslCertificates", "globalAddresses"):
        for r in running.sim.compute.resources(coll):
            out[f"{coll}/{r['name']}"] = {k: v for k, v in r.items() if k not in _VOLATILE}
    for g in running.sim.compute.resources("instanceGroups"):
        out[f"namedPorts/{g['name']}"] = sorted((p["name"], p["port"]) for p in g.get("namedPorts", []))
    return out


def _reset(running: RunningSim, capsys: pytest.CaptureFixture[str]) -> None:
    """No load balancer but the user's address: gitlab-mci's destroyed, what is left of kubemci's deleted."""
    assert run_cli(DESTROY, capsys)[0] == 0
    api = _api(running)
    for coll, name in (("globalForwardingRules", "mci1-fw--shop"), ("globalForwardingRules", "mci1-fws--shop"),
                       ("targetHttpProxies", "mci1-tp--shop"), ("targetHttpsProxies", "mci1-tps--shop"),
                       ("urlMaps", "mci1-um--shop"), ("backendServices", "mci1-be-30999--shop"),
                       ("healthChecks", "mci1-hc-30999--shop"), ("sslCertificates", "mci1-ssl--shop"),
                       ("firewalls", "mci1-fr--shop")):
        api.delete(coll, name)


def _stop_at(running: RunningSim, k: int) -> None:
    """From the k-th Compute write on (1-based), every write is refused: the job was killed there."""
    running.sim.faults.clear()
    running.sim.faults.add(FaultRule(status=400, service="compute", method=WRITE_METHODS, path=WRITE_PATHS, nth=k,
                                     onward=True))


def test_dry_run_shows_the_kubemci_chain_and_every_step_and_writes_nothing(
        app_world: RunningSim, capsys: pytest.CaptureFixture[str]) -> None:
    _https_chain(app_world)
    app_world.sim.journal.reset()
    code, out, err = takeover(capsys, "prod1,prod2", "--dry-run", "--detailed-exitcode")
    assert code == 2, err
    for text in ("globalForwardingRules/mci1-fw--shop :80 EXTERNAL → targetHttpProxies/mci1-tp--shop",
                 "globalForwardingRules/mci1-fws--shop :443 EXTERNAL → targetHttpsProxies/mci1-tps--shop",
                 "urlMaps/mci1-um--shop", "backendServices/mci1-be-30999--shop", "healthChecks/mci1-hc-30999--shop",
                 "firewalls/mci1-fr--shop", "named port(s) port30999", "certificates mci1-ssl--shop (kept)",
                 "+ backendServices/gmci-bs-shop-30999", "switch globalForwardingRules/mci1-fws--shop (:443) to "
                 "targetHttpsProxies/gmci-sp-shop", "TEST_BY_PERCENTAGE 10%", "TEST_ALL_TRAFFIC",
                 "delete the old chain: targetHttpProxies/mci1-tp--shop"):
        assert text in out, text
    assert "EXTERNAL → EXTERNAL_MANAGED by Compute's migration" in out
    code, out, _ = takeover(capsys, "prod1,prod2", "--dry-run", "-o", "json")
    body = json.loads(out)
    assert code == 0 and not body["complete"]
    assert [r["name"] for r in body["chain"]["forwardingRules"]] == ["mci1-fw--shop", "mci1-fws--shop"]
    assert [s["action"] for s in body["steps"]][:4] == ["build", "adopt", "switch", "adopt"]
    code, out, _ = takeover(capsys, "prod1,prod2", "--dry-run", "-o", "markdown")
    assert code == 0 and "```mermaid" in out and "mci1-um--shop" in out and "#### Takeover plan" in out
    assert writes(app_world) == 0


def test_a_takeover_stopped_after_any_write_is_finished_by_the_next_run_with_no_failed_request(
        make_app_world: Callable[..., RunningSim], capsys: pytest.CaptureFixture[str]) -> None:
    app_world = make_app_world(1, 1)  # one node per cluster: the same writes, less to probe
    # A clean takeover: how many writes it makes, and what it leaves.
    _https_chain(app_world)
    app_world.sim.journal.reset()
    assert takeover(capsys)[0] == 0
    total = writes(app_world)
    want = _world(app_world)
    assert total >= 25, total
    served = failed = 0
    for k in range(1, total + 1):
        _reset(app_world, capsys)
        vip = _https_chain(app_world)
        with Traffic(app_world, vip, (80, 443), rate=30) as traffic:
            _stop_at(app_world, k)
            code, _, err = takeover(capsys)
            errors = [line for line in err.splitlines() if not line.startswith("gitlab-mci: [")]  # not progress
            assert code == 1 and len(errors) == 1 and errors[0].startswith("gitlab-mci: error:"), (k, err)
            app_world.sim.faults.clear()
            code, _, err = takeover(capsys)
            assert code == 0, (k, err)
            traffic.served(10)
        served += len(traffic.results)
        failed += len(traffic.failed)
        assert not traffic.failed, (k, traffic.failed[:3])
        assert leftovers(app_world) == [], k
        assert _world(app_world) == want, f"stopped after write {k - 1}"
        app_world.sim.journal.reset()
        assert takeover(capsys)[0] == 0 and writes(app_world) == 0, "a finished takeover writes nothing"
        assert run_cli(APPLY, capsys)[0] == 0 and writes(app_world) == 0, "lb apply with the same inputs neither"
    with capsys.disabled():
        print(f"\ncrash-point sweep: {total} stop points, {served} requests, FAILED REQUESTS {failed}")
    assert run_cli(DESTROY, capsys)[0] == 0
    assert [r["name"] for r in app_world.sim.compute.resources("globalForwardingRules")] == [], \
        "lb destroy deletes the adopted rules too"
    assert app_world.sim.compute.get("globalAddresses", "web-ip", project=P) is not None, "the user's address stays"


def test_rollback_mid_way_restores_the_old_chain_with_no_failed_request(
        app_world: RunningSim, capsys: pytest.CaptureFixture[str]) -> None:
    vip = _https_chain(app_world)
    before = _world(app_world)
    app_world.sim.journal.reset()
    assert takeover(capsys)[0] == 0
    # Where to stop: before any rule is adopted, between the two rules, after both moved to gitlab-mci's proxies,
    # and after their scheme was migrated.
    paths = [e.path for e in app_world.sim.journal.writes("compute")]
    labels = [i for i, p in enumerate(paths) if p.endswith("/setLabels")]
    points = {"after the build": labels[0] + 1, "with one rule switched, one not": labels[1] + 1,
              "after the switch": max(i for i, p in enumerate(paths) if p.endswith("/setTarget")) + 2,
              "after the rules' migration": max(i for i, p in enumerate(paths) if "/forwardingRules/" in p
                                                and not p.endswith(("/setTarget", "/setLabels"))) + 2}
    for where, k in points.items():
        _reset(app_world, capsys)
        vip = _https_chain(app_world)
        before = _world(app_world)
        with Traffic(app_world, vip, (80, 443)) as traffic:
            _stop_at(app_world, k)
            assert takeover(capsys)[0] == 1
            app_world.sim.faults.clear()
            traffic.served(20)
            code, out, err = takeover(capsys, "prod1,prod2", "--rollback", "--dry-run", "--detailed-exitcode")
            assert code == 2 and "delete gitlab-mci's chain" in out, out + err
            if where != "after the build":
                assert "switch globalForwardingRules/mci1-fw--shop back to targetHttpProxies/mci1-tp--shop" in out
            code, out, err = takeover(capsys, "prod1,prod2", "--rollback")
            assert code == 0, err
            traffic.served(20)
        with capsys.disabled():
            traffic.report(f"\nrollback {where}", phases(err))
        assert not traffic.failed, (where, traffic.failed[:3])
        assert {r[2] for r in traffic.results[-10:]} == {"classic"}, "the old chain serves again"
        assert _world(app_world) == before, f"rollback {where}: the world as it was before the takeover"
        app_world.sim.journal.reset()
        assert takeover(capsys, "prod1,prod2", "--rollback")[0] == 0 and writes(app_world) == 0


def test_rollback_after_the_old_chain_is_gone_is_refused(
        app_world: RunningSim, capsys: pytest.CaptureFixture[str]) -> None:
    kubemci(app_world)
    assert takeover(capsys)[0] == 0
    app_world.sim.journal.reset()
    code, out, err = takeover(capsys, "prod1,prod2", "--rollback")
    assert code == 1 and "cannot roll back" in err and "already partly deleted" not in out, err
    assert writes(app_world) == 0


def _refused(running: RunningSim, capsys: pytest.CaptureFixture[str], contexts: str, address: str,
             expected: str, lb: str = "shop") -> None:
    """One line on stderr saying ``expected``, exit 1, and not one Compute write."""
    running.sim.journal.reset()
    code, out, err = run_cli(["lb", "takeover", "--lb", lb, "--context", contexts, "--address", address, *ROUTING],
                             capsys)
    assert code == 1 and out == "" and len(err.strip().splitlines()) == 1, (code, out, err)
    assert err.startswith("gitlab-mci: error: ") and expected in err, err
    assert writes(running) == 0


def test_an_address_no_forwarding_rule_uses_is_refused_before_any_write(
        app_world: RunningSim, capsys: pytest.CaptureFixture[str]) -> None:
    kubemci(app_world)
    api = _api(app_world)
    api.insert("globalAddresses", {"name": "spare-ip"})
    _refused(app_world, capsys, "prod1,prod2", "spare-ip", "no forwarding rule uses")
    _refused(app_world, capsys, "prod1,prod2", "203.0.113.9", "no forwarding rule uses 203.0.113.9")
    _refused(app_world, capsys, "prod1,prod2", "no-such-ip", "no global address of that name")


def test_a_chain_on_clusters_not_given_is_refused_before_any_write(
        app_world: RunningSim, capsys: pytest.CaptureFixture[str]) -> None:
    kubemci(app_world)
    _refused(app_world, capsys, "prod1", "web-ip", "which is in none of the clusters given (prod1)")


def test_a_chain_whose_backends_are_not_the_clusters_is_refused_before_any_write(
        app_world: RunningSim, capsys: pytest.CaptureFixture[str]) -> None:
    """A hand-made chain in front of a hybrid NEG (servers outside Google): neither a cluster's instance group nor
    a NEG of pods."""
    api = _api(app_world)
    zone = "us-central1-a"
    base = f"https://www.googleapis.com/compute/v1/projects/{P}"
    op = api.rest.post(f"zones/{zone}/networkEndpointGroups", {
        "name": "on-prem", "networkEndpointType": "NON_GCP_PRIVATE_IP_PORT", "defaultPort": 80,
        "network": f"{base}/global/networks/default"})
    api.wait("create on-prem", op)
    api.insert("globalAddresses", {"name": "legacy-ip"})
    api.insert("healthChecks", {"name": "legacy-hc", "type": "HTTP", "httpHealthCheck": {"port": 80}})
    api.insert("backendServices", {"name": "legacy-bs", "protocol": "HTTP", "loadBalancingScheme": "EXTERNAL",
                                   "healthChecks": [f"{base}/global/healthChecks/legacy-hc"],
                                   "backends": [{"group": f"{base}/zones/{zone}/networkEndpointGroups/on-prem",
                                                 "balancingMode": "RATE", "maxRatePerEndpoint": 100}]})
    api.insert("urlMaps", {"name": "legacy-um", "defaultService": f"{base}/global/backendServices/legacy-bs"})
    api.insert("targetHttpProxies", {"name": "legacy-tp", "urlMap": f"{base}/global/urlMaps/legacy-um"})
    ip = api.get("globalAddresses", "legacy-ip")
    assert ip is not None
    api.insert("globalForwardingRules", {"name": "legacy-fr", "IPAddress": ip["address"], "portRange": "80",
                                         "IPProtocol": "TCP", "loadBalancingScheme": "EXTERNAL",
                                         "target": f"{base}/global/targetHttpProxies/legacy-tp"})
    _refused(app_world, capsys, "prod1,prod2", "legacy-ip", "on-prem of type NON_GCP_PRIVATE_IP_PORT")


def test_an_address_of_another_gitlab_mci_load_balancer_is_refused_before_any_write(
        app_world: RunningSim, capsys: pytest.CaptureFixture[str]) -> None:
    assert run_cli(["lb", "apply", "--lb", "other", "--context", "prod1,prod2", "--static-ip", "other-ip",
                    *ROUTING], capsys)[0] == 0
    _refused(app_world, capsys, "prod1,prod2", "other-ip", "belongs to gitlab-mci load balancer 'other'")


def test_an_ephemeral_ip_is_refused_until_it_is_reserved(
        app_world: RunningSim, capsys: pytest.CaptureFixture[str]) -> None:
    from gitlab_mci.sim.kubemci import KubemciSpec, build

    built = build(app_world.sim.compute_url, P, {c: app_world.sim.kube_url(c) for c in ("prod1", "prod2")},
                  KubemciSpec("shop", ("prod1", "prod2")))
    _refused(app_world, capsys, "prod1,prod2", built.vip, "is not a reserved global address")


def test_a_second_kubemci_load_balancer_on_the_same_node_port_is_left_as_it_is(
        app_world: RunningSim, capsys: pytest.CaptureFixture[str]) -> None:
    """Its firewall rule, named port and chain look like the old chain's: none of it is touched, and it serves."""
    from gitlab_mci.sim.kubemci import KubemciSpec, build

    kubemci(app_world)
    blog = build(app_world.sim.compute_url, P, {c: app_world.sim.kube_url(c) for c in ("prod1", "prod2")},
                 KubemciSpec("blog", ("prod1", "prod2"), static_ip="blog-ip"))
    theirs = {k: v for k, v in _world(app_world).items() if "blog" in k}
    assert len(theirs) == 7 and "firewalls/mci1-fr--blog" in theirs
    code, out, _ = takeover(capsys, "prod1,prod2", "--dry-run")
    assert "firewalls/mci1-fr--shop: kept" in out and "firewalls/mci1-fr--blog: kept" in out and "blog" not in \
        out.split("plan,")[1], out
    code, out, err = takeover(capsys)
    assert code == 0, err
    assert {k: v for k, v in _world(app_world).items() if "blog" in k} == theirs
    for g in app_world.sim.compute.resources("instanceGroups"):
        assert ("port30999", 30999) in [(p["name"], p["port"]) for p in g["namedPorts"]], "blog's named port stays"
    with Traffic(app_world, blog.vip, (80,)) as traffic:
        traffic.served(20)
    assert not traffic.failed
    # shop's own firewall rule cannot be told from blog's (same ranges, same node port): both are kept.
    assert "firewalls/mci1-fr--shop" in _world(app_world)


def test_asking_for_classic_once_the_migration_began_is_refused_before_any_write(
        app_world: RunningSim, capsys: pytest.CaptureFixture[str]) -> None:
    kubemci(app_world)
    # Stopped after the first migration step (PREPARE) of gitlab-mci's backend service.
    app_world.sim.faults.add(FaultRule(status=400, service="compute", method="PATCH", path="/global/backendServices/",
                                       nth=2, onward=True))
    assert takeover(capsys)[0] == 1
    app_world.sim.faults.clear()
    bs = app_world.sim.compute.get("backendServices", "gmci-bs-shop-30999", project=P)
    assert bs is not None and bs["externalManagedMigrationState"] == "PREPARE"
    app_world.sim.journal.reset()
    code, _, err = takeover(capsys, "prod1,prod2", "--scheme", "EXTERNAL")
    assert code == 1 and "finish it with --scheme EXTERNAL_MANAGED, or go back with --rollback" in err, err
    assert writes(app_world) == 0
    assert takeover(capsys)[0] == 0, "finished with the scheme it began with"
