"""A user's classic (kubemci) chain in a simulated world, and the google-cloud-compute calls that migrate it."""

from __future__ import annotations

import time
from typing import Any

from google.api_core.client_options import ClientOptions
from google.auth.credentials import AnonymousCredentials
from google.cloud import compute_v1

from gitlab_mci.sim.kubemci import Built, KubemciSpec, build
from tests.conftest import RunningSim

P = "demo-project"
BS = "mci1-be-30999--shop"
HTTP_RULE = "mci1-fw--shop"


def client(running: RunningSim, cls: type) -> Any:
    return cls(client_options=ClientOptions(api_endpoint=running.sim.compute_url),
               credentials=AnonymousCredentials())  # type: ignore[no-untyped-call]


def wait(running: RunningSim, op: compute_v1.Operation) -> None:
    """Wait for a global operation through the simulator (the client's own poller would ask Google)."""
    ops = client(running, compute_v1.GlobalOperationsClient)
    while op.status != compute_v1.Operation.Status.DONE:
        op = ops.wait(project=P, operation=op.name)
    assert not (op.error and op.error.errors), op.error


def kubemci_chain(running: RunningSim, **kwargs: Any) -> Built:
    """The recipe's chain for load balancer `shop` over prod1 and prod2 (the app must be on node port 30999)."""
    spec = KubemciSpec("shop", ("prod1", "prod2"), **kwargs)
    return build(running.sim.compute_url, P, {c: running.sim.kube_url(c) for c in spec.clusters}, spec)


def backend_service(running: RunningSim, name: str = BS) -> compute_v1.BackendService:
    return client(running, compute_v1.BackendServicesClient).get(project=P, backend_service=name)


def patch_backend_service(running: RunningSim, name: str = BS, **fields: Any) -> None:
    """PATCH a backend service as a user's script would: the current fingerprint and the fields to change."""
    bss = client(running, compute_v1.BackendServicesClient)
    current = bss.get(project=P, backend_service=name)
    wait(running, bss.patch_unary(project=P, backend_service=name, backend_service_resource=compute_v1.BackendService(
        fingerprint=current.fingerprint, **fields)))


def patch_rule(running: RunningSim, name: str = HTTP_RULE, **fields: Any) -> None:
    rules = client(running, compute_v1.GlobalForwardingRulesClient)
    fingerprint = rules.get(project=P, forwarding_rule=name).fingerprint
    wait(running, rules.patch_unary(project=P, forwarding_rule=name, forwarding_rule_resource=compute_v1.ForwardingRule(
        fingerprint=fingerprint, **fields)))


def routed(running: RunningSim, **expected: Any) -> None:
    """Wait until the data plane routes with the backend service's migration fields as ``expected``."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        running.sim.dataplane.refresh()
        view = next((s for s in running.sim.dataplane.services() if s["name"] == BS), {})
        if all(view.get(k) == v for k, v in expected.items()):
            return
        time.sleep(0.02)
    raise AssertionError(f"data plane still routes with {view}, not {expected}")
