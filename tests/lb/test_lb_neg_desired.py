"""The desired NEG load balancer from what discovery found (pure: no simulator): what each Service port gets."""

from __future__ import annotations

import pytest

from gitlab_mci.errors import UserError
from gitlab_mci.ingress import Backend, HostRule, IngressModel, PathRule
from gitlab_mci.lb import desired as desired_mod
from gitlab_mci.lb.discovery import ClusterInfo, ServiceInfo, ServicePort

API = "https://www.googleapis.com/compute/v1/projects/p"


def _cluster(name: str, zone: str, services: dict[str, int]) -> ClusterInfo:
    return ClusterInfo(
        context=name, project="p", groups=(), zones=(zone,), network=f"{API}/global/networks/default",
        tags=(f"gke-{name}",),
        services={s: ServiceInfo(s, "default", "ClusterIP", (ServicePort("web", 5000, None, pod),), "/healthz")
                  for s, pod in services.items()},
        negs={(s, 5000): (f"{API}/zones/{zone}/networkEndpointGroups/gmci-neg-shop-5000-{s}",) for s in services})


def test_two_services_on_the_same_port_keep_their_own_backend_services_and_negs() -> None:
    cart, shop = Backend("cart", 5000), Backend("shop", 5000)
    model = IngressModel("shop", default_backend=shop, rules=(HostRule(None, (PathRule("/cart", "Prefix", cart),)),))
    clusters = [_cluster("prod1", "us-central1-a", {"shop": 8080, "cart": 9090}),
                _cluster("prod2", "europe-west1-b", {"shop": 8080, "cart": 9090})]
    want = desired_mod.build(model, desired_mod.Options("shop", "p", balancing_mode="RATE", backends="neg"), clusters)
    services = {r.name: r.body for r in want.resources.values() if r.collection == "backendServices"}
    assert len(services) == 2 and all(name.startswith("gmci-bsn-shop-5000-") for name in services)
    negs = {name: {b["group"].rsplit("-", 1)[1] for b in body["backends"]} for name, body in services.items()}
    assert sorted(map(sorted, negs.values())) == [["cart"], ["shop"]]
    firewall = next(r.body for r in want.resources.values() if r.collection == "firewalls")
    assert firewall["allowed"] == [{"IPProtocol": "tcp", "ports": ["8080", "9090"]}]  # the pods' ports
    assert want.named_ports == []


def test_connection_mode_caps_connections_per_endpoint() -> None:
    clusters = [_cluster("prod1", "us-central1-a", {"shop": 5000})]
    model = IngressModel("shop", default_backend=Backend("shop", "web"))
    want = desired_mod.build(model, desired_mod.Options("shop", "p", balancing_mode="CONNECTION", backends="neg"),
                             clusters)
    bs = want.resources["backendServices/gmci-bsn-shop-5000"].body
    assert bs["backends"][0]["balancingMode"] == "CONNECTION" and bs["backends"][0]["maxConnectionsPerEndpoint"] > 0
    assert "portName" not in bs


def test_utilization_is_refused_with_negs() -> None:
    with pytest.raises(UserError, match="UTILIZATION"):
        desired_mod.Options("shop", "p", balancing_mode="UTILIZATION", backends="neg")
