"""The Compute emulator through google-cloud-compute: every resource kind we use, errors, operations, requestId."""

from __future__ import annotations

import time
import uuid
from typing import Any

import pytest
from google.api_core import exceptions as gexc
from google.cloud import compute_v1

from gitlab_mci.gcp import Compute, OperationError
from gitlab_mci.sim.httpd import FaultRule
from gitlab_mci.sim.spec import parse_spec
from tests.conftest import RunningSim
from tests.pki import self_signed

P = "demo-project"


@pytest.fixture
def gc(sim: RunningSim) -> Compute:
    return Compute(P, sim.sim.compute_url)


def _name(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def _group(sim: RunningSim) -> str:
    return str(sim.sim.compute.resources("instanceGroups")[0]["selfLink"])


def _hc(gc: Compute, name: str) -> str:
    hc = gc.client(compute_v1.HealthChecksClient)
    gc.wait(hc.insert(project=P, health_check_resource=compute_v1.HealthCheck(
        name=name, type_="HTTP", http_health_check=compute_v1.HTTPHealthCheck(port=30999, request_path="/"))))
    return str(hc.get(project=P, health_check=name).self_link)


def _bs(gc: Compute, sim: RunningSim, name: str) -> str:
    bs = gc.client(compute_v1.BackendServicesClient)
    gc.wait(bs.insert(project=P, backend_service_resource=compute_v1.BackendService(
        name=name, health_checks=[_hc(gc, name + "-hc")], port_name="web", load_balancing_scheme="EXTERNAL_MANAGED",
        backends=[compute_v1.Backend(group=_group(sim))])))
    return str(bs.get(project=P, backend_service=name).self_link)


def test_address_insert_get_list_labels_delete(sim: RunningSim, gc: Compute) -> None:
    client = gc.client(compute_v1.GlobalAddressesClient)
    name = _name("ip")
    gc.wait(client.insert(project=P, address_resource=compute_v1.Address(name=name, description="d")))
    got = client.get(project=P, address=name)
    assert got.self_link == f"https://www.googleapis.com/compute/v1/projects/{P}/global/addresses/{name}"
    assert got.status == "RESERVED" and got.address.startswith("127.1.") and int(got.id) > 0
    assert name in [a.name for a in client.list(project=P)]
    gc.wait(client.set_labels(project=P, resource=name, global_set_labels_request_resource=compute_v1.GlobalSetLabelsRequest(
        labels={"gitlab-mci-lb": "shop"}, label_fingerprint=got.label_fingerprint)))
    after = client.get(project=P, address=name)
    assert after.labels == {"gitlab-mci-lb": "shop"} and after.label_fingerprint != got.label_fingerprint
    with pytest.raises(gexc.PreconditionFailed):
        client.set_labels(project=P, resource=name, global_set_labels_request_resource=compute_v1.GlobalSetLabelsRequest(
            labels={}, label_fingerprint=got.label_fingerprint))
    gc.wait(client.delete(project=P, address=name))
    with pytest.raises(gexc.NotFound) as info:
        client.get(project=P, address=name)
    assert info.value.errors[0]["reason"] == "notFound"


def test_duplicate_name_is_conflict(gc: Compute) -> None:
    client = gc.client(compute_v1.FirewallsClient)
    name = _name("fw")
    fw = compute_v1.Firewall(name=name, network=f"projects/{P}/global/networks/default", source_ranges=["130.211.0.0/22"],
                             allowed=[compute_v1.Allowed(I_p_protocol="tcp", ports=["30999"])], target_tags=["t"])
    gc.wait(client.insert(project=P, firewall_resource=fw))
    with pytest.raises(gexc.Conflict) as info:
        client.insert(project=P, firewall_resource=fw)
    assert info.value.errors[0]["reason"] == "alreadyExists"
    got = client.get(project=P, firewall=name)
    assert got.network.endswith(f"/projects/{P}/global/networks/default") and got.network.startswith("https://")
    gc.wait(client.patch(project=P, firewall=name, firewall_resource=compute_v1.Firewall(target_tags=["a", "b"])))
    assert client.get(project=P, firewall=name).target_tags == ["a", "b"]
    gc.wait(client.delete(project=P, firewall=name))


def test_backend_service_fingerprint_patch_and_in_use(sim: RunningSim, gc: Compute) -> None:
    name = _name("bs")
    _bs(gc, sim, name)
    client = gc.client(compute_v1.BackendServicesClient)
    got = client.get(project=P, backend_service=name)
    gc.wait(client.patch(project=P, backend_service=name, backend_service_resource=compute_v1.BackendService(
        timeout_sec=60, fingerprint=got.fingerprint)))
    patched = client.get(project=P, backend_service=name)
    assert patched.timeout_sec == 60 and patched.fingerprint != got.fingerprint
    assert len(patched.backends) == 1  # merge patch kept the backends
    with pytest.raises(gexc.PreconditionFailed) as info:
        client.patch(project=P, backend_service=name, backend_service_resource=compute_v1.BackendService(
            timeout_sec=10, fingerprint=got.fingerprint))
    assert info.value.errors[0]["reason"] == "conditionNotMet"
    with pytest.raises(gexc.BadRequest) as used:
        gc.client(compute_v1.HealthChecksClient).delete(project=P, health_check=name + "-hc")
    assert used.value.errors[0]["reason"] == "resourceInUseByAnotherResource"
    health = client.get_health(project=P, backend_service=name, resource_group_reference_resource=(
        compute_v1.ResourceGroupReference(group=_group(sim))))
    # The data plane's health checks answer: nothing serves the check's port 30999 on those nodes.
    assert {h.health_state for h in health.health_status} == {"UNHEALTHY"} and len(health.health_status) == 3
    assert all(h.ip_address.startswith("10.") and h.instance.startswith("https://") for h in health.health_status)
    gc.wait(client.delete(project=P, backend_service=name))
    gc.wait(gc.client(compute_v1.HealthChecksClient).delete(project=P, health_check=name + "-hc"))


def test_url_map_proxies_certificates_and_forwarding_rule_chain(sim: RunningSim, gc: Compute) -> None:
    bs = _bs(gc, sim, _name("chain"))
    urlmaps = gc.client(compute_v1.UrlMapsClient)
    um = _name("um")
    gc.wait(urlmaps.insert(project=P, url_map_resource=compute_v1.UrlMap(name=um, default_service=bs)))
    got = urlmaps.get(project=P, url_map=um)
    got.host_rules = [compute_v1.HostRule(hosts=["shop.example.com"], path_matcher="m")]
    got.path_matchers = [compute_v1.PathMatcher(name="m", default_service=bs, path_rules=[
        compute_v1.PathRule(paths=["/api/*"], service=bs)])]
    gc.wait(urlmaps.update(project=P, url_map=um, url_map_resource=got))
    assert urlmaps.get(project=P, url_map=um).path_matchers[0].path_rules[0].paths == ["/api/*"]
    bs_used_by = gc.client(compute_v1.BackendServicesClient).get(project=P, backend_service=bs.rsplit("/", 1)[1])
    assert [u.reference for u in bs_used_by.used_by] == [got.self_link]

    http = gc.client(compute_v1.TargetHttpProxiesClient)
    hp = _name("hp")
    gc.wait(http.insert(project=P, target_http_proxy_resource=compute_v1.TargetHttpProxy(name=hp, url_map=got.self_link)))
    certs = gc.client(compute_v1.SslCertificatesClient)
    managed = _name("cert")
    gc.wait(certs.insert(project=P, ssl_certificate_resource=compute_v1.SslCertificate(
        name=managed, type_="MANAGED", managed=compute_v1.SslCertificateManagedSslCertificate(domains=["shop.example.com"]))))
    assert certs.get(project=P, ssl_certificate=managed).managed.status == "PROVISIONING"
    self_managed = _name("pem")
    with pytest.raises(gexc.BadRequest, match="could not be parsed"):
        certs.insert(project=P, ssl_certificate_resource=compute_v1.SslCertificate(
            name=self_managed, certificate="-----BEGIN CERTIFICATE-----\nx\n-----END CERTIFICATE-----",
            private_key="-----BEGIN PRIVATE KEY-----\nsecret\n-----END PRIVATE KEY-----"))
    pem, key = self_signed("pem.example.com")
    gc.wait(certs.insert(project=P, ssl_certificate_resource=compute_v1.SslCertificate(
        name=self_managed, certificate=pem, private_key=key)))
    stored = certs.get(project=P, ssl_certificate=self_managed)
    assert key.splitlines()[1] not in str(stored) and not stored.private_key  # the key is never answered
    assert list(stored.subject_alternative_names) == ["pem.example.com"] and stored.expire_time
    https = gc.client(compute_v1.TargetHttpsProxiesClient)
    sp = _name("sp")
    gc.wait(https.insert(project=P, target_https_proxy_resource=compute_v1.TargetHttpsProxy(
        name=sp, url_map=got.self_link, ssl_certificates=[certs.get(project=P, ssl_certificate=managed).self_link])))
    gc.wait(https.set_ssl_certificates(project=P, target_https_proxy=sp,
        target_https_proxies_set_ssl_certificates_request_resource=compute_v1.TargetHttpsProxiesSetSslCertificatesRequest(
            ssl_certificates=[certs.get(project=P, ssl_certificate=self_managed).self_link])))
    assert https.get(project=P, target_https_proxy=sp).ssl_certificates[0].endswith(self_managed)
    gc.wait(certs.delete(project=P, ssl_certificate=managed))  # no longer in use after the switch

    addresses = gc.client(compute_v1.GlobalAddressesClient)
    ip = _name("ip")
    gc.wait(addresses.insert(project=P, address_resource=compute_v1.Address(name=ip)))
    address = addresses.get(project=P, address=ip)
    rules = gc.client(compute_v1.GlobalForwardingRulesClient)
    fr = _name("fr")
    gc.wait(rules.insert(project=P, forwarding_rule_resource=compute_v1.ForwardingRule(
        name=fr, I_p_address=address.self_link, port_range="80", target=http.get(project=P, target_http_proxy=hp).self_link,
        load_balancing_scheme="EXTERNAL_MANAGED")))
    rule = rules.get(project=P, forwarding_rule=fr)
    assert rule.I_p_address == address.address and rule.port_range == "80-80"
    assert addresses.get(project=P, address=ip).status == "IN_USE"
    gc.wait(rules.set_target(project=P, forwarding_rule=fr, target_reference_resource=compute_v1.TargetReference(
        target=https.get(project=P, target_https_proxy=sp).self_link)))
    assert rules.get(project=P, forwarding_rule=fr).target.endswith(f"/targetHttpsProxies/{sp}")
    with pytest.raises(gexc.BadRequest):
        addresses.delete(project=P, address=ip)  # still used by the rule
    # Tear down in reverse order; each step succeeds only once nothing references the resource.
    gc.wait(rules.delete(project=P, forwarding_rule=fr))
    gc.wait(addresses.delete(project=P, address=ip))
    gc.wait(https.delete(project=P, target_https_proxy=sp))
    gc.wait(http.delete(project=P, target_http_proxy=hp))
    gc.wait(certs.delete(project=P, ssl_certificate=self_managed))
    gc.wait(urlmaps.delete(project=P, url_map=um))
    _delete_bs(gc, bs)


def _delete_bs(gc: Compute, url: str) -> None:
    name = url.rsplit("/", 1)[1]
    gc.wait(gc.client(compute_v1.BackendServicesClient).delete(project=P, backend_service=name))
    gc.wait(gc.client(compute_v1.HealthChecksClient).delete(project=P, health_check=name + "-hc"))


def test_managed_certificate_becomes_active(make_sim: Any) -> None:
    running = make_sim(parse_spec({"clusters": [{"name": "a", "nodes": 1}], "managedCertDelay": 0.3}))
    gc = Compute(P, running.sim.compute_url)
    certs = gc.client(compute_v1.SslCertificatesClient)
    gc.wait(certs.insert(project=P, ssl_certificate_resource=compute_v1.SslCertificate(
        name="c", type_="MANAGED", managed=compute_v1.SslCertificateManagedSslCertificate(domains=["a.example"]))))
    assert certs.get(project=P, ssl_certificate="c").managed.status == "PROVISIONING"
    time.sleep(0.35)
    cert = certs.get(project=P, ssl_certificate="c")
    assert cert.managed.status == "ACTIVE" and cert.managed.domain_status == {"a.example": "ACTIVE"}


def test_zonal_reads_named_ports_and_negs(sim: RunningSim, gc: Compute) -> None:
    zone = "us-central1-a"
    groups = gc.client(compute_v1.InstanceGroupsClient)
    group = next(iter(groups.list(project=P, zone=zone)))
    assert group.size == 3
    gc.wait(groups.set_named_ports(project=P, zone=zone, instance_group=group.name,
        instance_groups_set_named_ports_request_resource=compute_v1.InstanceGroupsSetNamedPortsRequest(
            named_ports=[compute_v1.NamedPort(name="web", port=30999)], fingerprint=group.fingerprint)))
    with pytest.raises(gexc.PreconditionFailed):
        groups.set_named_ports(project=P, zone=zone, instance_group=group.name,
            instance_groups_set_named_ports_request_resource=compute_v1.InstanceGroupsSetNamedPortsRequest(
                named_ports=[], fingerprint=group.fingerprint))
    assert [(p.name, p.port) for p in groups.get(project=P, zone=zone, instance_group=group.name).named_ports] == [
        ("web", 30999)]
    gc.wait(groups.set_named_ports(project=P, zone=zone, instance_group=group.name,
        instance_groups_set_named_ports_request_resource=compute_v1.InstanceGroupsSetNamedPortsRequest(named_ports=[])))
    agg = gc.client(compute_v1.InstancesClient).aggregated_list(project=P)
    names = [i.name for _, scoped in agg for i in scoped.instances]
    assert len(names) == 6
    mig = gc.client(compute_v1.InstanceGroupManagersClient).get(project=P, zone=zone, instance_group_manager=group.name)
    assert mig.instance_group == group.self_link
    negs = gc.client(compute_v1.NetworkEndpointGroupsClient)
    gc.wait(negs.insert(project=P, zone=zone, network_endpoint_group_resource=compute_v1.NetworkEndpointGroup(
        name="neg1", network_endpoint_type="GCE_VM_IP_PORT", default_port=8080)))
    assert negs.get(project=P, zone=zone, network_endpoint_group="neg1").default_port == 8080
    gc.wait(negs.delete(project=P, zone=zone, network_endpoint_group="neg1"))
    assert {z.name for z in gc.client(compute_v1.ZonesClient).list(project=P)} == {"us-central1-a", "europe-west1-b"}
    assert gc.client(compute_v1.NetworksClient).get(project=P, network="default").name == "default"


def test_list_filter_and_pagination(sim: RunningSim, gc: Compute) -> None:
    client = gc.client(compute_v1.HealthChecksClient)
    names = [f"pg-{i:02d}" for i in range(7)]
    for n in names:
        gc.wait(client.insert(project=P, health_check_resource=compute_v1.HealthCheck(
            name=n, type_="TCP", tcp_health_check=compute_v1.TCPHealthCheck(port=80))))
    pages = client.list(request=compute_v1.ListHealthChecksRequest(project=P, max_results=3, filter='name eq "pg-.*"'))
    assert [h.name for h in pages] == names
    assert sum(1 for e in sim.sim.journal.entries("compute") if e.path.split("?")[0].endswith("/healthChecks")
               and e.method == "GET") == 3
    only = client.list(request=compute_v1.ListHealthChecksRequest(project=P, filter='(name = "pg-01") OR (name = "pg-05")'))
    assert [h.name for h in only] == ["pg-01", "pg-05"]
    for n in names:
        gc.wait(client.delete(project=P, health_check=n))


def test_operations_run_pending_to_done_and_hide_resources_until_done(make_sim: Any) -> None:
    running = make_sim(parse_spec({"clusters": [{"name": "a", "nodes": 1}], "operationLatency": 0.4}))
    gc = Compute(P, running.sim.compute_url)
    hcs = gc.client(compute_v1.HealthChecksClient)
    op = hcs.insert(project=P, health_check_resource=compute_v1.HealthCheck(
        name="slow", type_="TCP", tcp_health_check=compute_v1.TCPHealthCheck(port=80)))
    assert op.status != compute_v1.Operation.Status.DONE
    with pytest.raises(gexc.NotFound):
        hcs.get(project=P, health_check="slow")
    bs = gc.client(compute_v1.BackendServicesClient)
    with pytest.raises(gexc.BadRequest) as info:  # referencing a resource that is still being created
        bs.insert(project=P, backend_service_resource=compute_v1.BackendService(
            name="early", health_checks=[f"projects/{P}/global/healthChecks/slow"]))
    assert info.value.errors[0]["reason"] == "resourceNotReady"
    started = time.monotonic()
    done = gc.wait(op)
    assert done.status == compute_v1.Operation.Status.DONE and 0.2 < time.monotonic() - started < 1.5
    # The poll reached the emulator (the library's own poller would have gone to compute.googleapis.com).
    assert any(e.path.split("?")[0].endswith(f"/global/operations/{op.name}/wait")
               for e in running.sim.journal.entries("compute"))
    assert hcs.get(project=P, health_check="slow").name == "slow"


def test_request_id_makes_a_retried_insert_safe(gc: Compute) -> None:
    client = gc.client(compute_v1.GlobalAddressesClient)
    rid = str(uuid.uuid4())
    req = compute_v1.InsertGlobalAddressRequest(project=P, address_resource=compute_v1.Address(name="rid-ip"), request_id=rid)
    first = client.insert(request=req)
    second = client.insert(request=req)
    assert first.name == second.name
    gc.wait(first)
    assert [a.name for a in client.list(project=P)].count("rid-ip") == 1
    gc.wait(client.delete(project=P, address="rid-ip"))


def test_failed_operation_is_an_error_and_changes_nothing(sim: RunningSim, gc: Compute) -> None:
    sim.sim.faults.add(FaultRule(action="operation_error", service="compute", method="POST", path="/global/urlMaps$"))
    client = gc.client(compute_v1.UrlMapsClient)
    bs = _bs(gc, sim, _name("opfail"))
    op = client.insert(project=P, url_map_resource=compute_v1.UrlMap(name="doomed", default_service=bs))
    with pytest.raises(OperationError) as info:
        gc.wait(op, what="create url map doomed")
    assert info.value.status == 503 and "create url map doomed failed" in str(info.value)
    with pytest.raises(gexc.NotFound):
        client.get(project=P, url_map="doomed")
    sim.sim.faults.clear()
    _delete_bs(gc, bs)


def test_a_second_forwarding_rule_on_an_address_and_port_in_use_is_refused_as_compute_does(make_sim: Any) -> None:
    running = make_sim(parse_spec({"clusters": [{"name": "a", "nodes": 1}]}))
    gc = Compute(P, running.sim.compute_url)
    bs = _bs(gc, running, "web")
    gc.wait(gc.client(compute_v1.UrlMapsClient).insert(project=P, url_map_resource=compute_v1.UrlMap(
        name="web", default_service=bs)))
    proxies = gc.client(compute_v1.TargetHttpProxiesClient)
    gc.wait(proxies.insert(project=P, target_http_proxy_resource=compute_v1.TargetHttpProxy(
        name="web", url_map=gc.client(compute_v1.UrlMapsClient).get(project=P, url_map="web").self_link)))
    proxy = proxies.get(project=P, target_http_proxy="web").self_link
    addresses = gc.client(compute_v1.GlobalAddressesClient)
    gc.wait(addresses.insert(project=P, address_resource=compute_v1.Address(name="vip")))
    address = addresses.get(project=P, address="vip")
    rules = gc.client(compute_v1.GlobalForwardingRulesClient)

    def rule(name: str, ip: str, ports: str) -> compute_v1.ForwardingRule:
        return compute_v1.ForwardingRule(name=name, I_p_address=ip, port_range=ports, target=proxy,
                                         load_balancing_scheme="EXTERNAL_MANAGED")

    gc.wait(rules.insert(project=P, forwarding_rule_resource=rule("first", address.self_link, "80")))
    # Another load balancer on the same address and port: by its IP, by the address's URL, by an overlapping range.
    for name, ip, ports in (("by-ip", address.address, "80"), ("by-url", address.self_link, "80-80"),
                            ("by-range", address.address, "79-81")):
        with pytest.raises(gexc.BadRequest) as info:
            rules.insert(project=P, forwarding_rule_resource=rule(name, ip, ports))
        assert info.value.message.endswith(f": Invalid value for field 'resource.IPAddress': '{address.address}'. "
                                               "Specified IP address is in-use and would result in a conflict.")
        assert info.value.errors[0]["reason"] == "invalid"
    # The same address on another port is another listener of the same IP (HTTP and HTTPS share one).
    gc.wait(rules.insert(project=P, forwarding_rule_resource=rule("other-port", address.address, "8080")))
    assert sorted(r.name for r in rules.list(project=P)) == ["first", "other-port"]


def test_a_forwarding_rule_still_being_created_holds_its_address_and_port(make_sim: Any) -> None:
    running = make_sim(parse_spec({"clusters": [{"name": "a", "nodes": 1}], "operationLatency": 0.5}))
    gc = Compute(P, running.sim.compute_url)
    bs = _bs(gc, running, "web")
    urlmaps = gc.client(compute_v1.UrlMapsClient)
    gc.wait(urlmaps.insert(project=P, url_map_resource=compute_v1.UrlMap(name="web", default_service=bs)))
    proxies = gc.client(compute_v1.TargetHttpProxiesClient)
    gc.wait(proxies.insert(project=P, target_http_proxy_resource=compute_v1.TargetHttpProxy(
        name="web", url_map=urlmaps.get(project=P, url_map="web").self_link)))
    proxy = proxies.get(project=P, target_http_proxy="web").self_link
    rules = gc.client(compute_v1.GlobalForwardingRulesClient)
    # EXTERNAL_MANAGED like the backend service behind them: Compute refuses a classic rule in front of it.
    first = rules.insert(project=P, forwarding_rule_resource=compute_v1.ForwardingRule(
        name="first", I_p_address="127.1.200.1", port_range="443", target=proxy,
        load_balancing_scheme="EXTERNAL_MANAGED"))
    with pytest.raises(gexc.BadRequest, match="Specified IP address is in-use"):
        rules.insert(project=P, forwarding_rule_resource=compute_v1.ForwardingRule(
            name="second", I_p_address="127.1.200.1", port_range="443", target=proxy,
            load_balancing_scheme="EXTERNAL_MANAGED"))
    gc.wait(first)
    assert [r.name for r in rules.list(project=P)] == ["first"]
