"""Compute's classic → global external ALB migration rules, as a user with a kubemci chain meets them.

Each refusal is checked with the real google-cloud-compute client: HTTP 400, reason ``invalid``, and the resource
unchanged afterwards. See docs/simulator-migration.md for the rules and their sources.
"""

from __future__ import annotations

import json
import os
import subprocess

import pytest
from google.api_core import exceptions as gexc
from google.cloud import compute_v1

from tests.conftest import RunningSim
from tests.sim.classic_chain import (
    BS,
    HTTP_RULE,
    P,
    backend_service,
    client,
    kubemci_chain,
    patch_backend_service,
    patch_rule,
    wait,
)


def _refused(call: object, *args: object, **kwargs: object) -> str:
    with pytest.raises(gexc.BadRequest) as info:
        call(*args, **kwargs)  # type: ignore[operator]
    assert info.value.errors[0]["reason"] == "invalid", info.value.errors
    return str(info.value.message)


def _rule(running: RunningSim, name: str = HTTP_RULE) -> compute_v1.ForwardingRule:
    return client(running, compute_v1.GlobalForwardingRulesClient).get(project=P, forwarding_rule=name)


def test_a_kubemci_chain_migrates_in_googles_order_and_rolls_back(app_world: RunningSim) -> None:
    kubemci_chain(app_world)
    patch_backend_service(app_world, external_managed_migration_state="PREPARE")
    patch_backend_service(app_world, external_managed_migration_state="TEST_BY_PERCENTAGE",
                          external_managed_migration_testing_percentage=10.0)
    patch_backend_service(app_world, external_managed_migration_testing_percentage=50.0)
    patch_backend_service(app_world, external_managed_migration_state="TEST_ALL_TRAFFIC")
    patch_backend_service(app_world, load_balancing_scheme="EXTERNAL_MANAGED")
    bs = backend_service(app_world)
    assert bs.load_balancing_scheme == "EXTERNAL_MANAGED"
    assert not bs.external_managed_migration_state, "the migration state is done with once the scheme changed"
    patch_rule(app_world, load_balancing_scheme="EXTERNAL_MANAGED")
    assert _rule(app_world).load_balancing_scheme == "EXTERNAL_MANAGED"
    assert _rule(app_world).I_p_address == app_world.sim.compute.get(
        "globalForwardingRules", HTTP_RULE, project=P)["IPAddress"]

    # Rollback, in Google's order: the forwarding rule, then the backend service (TEST_ALL_TRAFFIC in the same
    # request), then traffic back by percentage and PREPARE, then no migration at all.
    patch_rule(app_world, load_balancing_scheme="EXTERNAL")
    patch_backend_service(app_world, load_balancing_scheme="EXTERNAL", external_managed_migration_state="TEST_ALL_TRAFFIC")
    patch_backend_service(app_world, external_managed_migration_state="TEST_BY_PERCENTAGE",
                          external_managed_migration_testing_percentage=90.0)
    patch_backend_service(app_world, external_managed_migration_state="PREPARE")
    bss = client(app_world, compute_v1.BackendServicesClient)
    current = bss.get(project=P, backend_service=BS)
    current.external_managed_migration_state = None  # what gcloud's --clear-external-managed-migration-state does
    wait(app_world, bss.update_unary(project=P, backend_service=BS, backend_service_resource=current))
    bs = backend_service(app_world)
    assert bs.load_balancing_scheme == "EXTERNAL" and not bs.external_managed_migration_state


def test_migration_steps_out_of_order_are_refused_and_change_nothing(app_world: RunningSim) -> None:
    kubemci_chain(app_world)
    bss = client(app_world, compute_v1.BackendServicesClient)

    def patch(**fields: object) -> str:
        fingerprint = bss.get(project=P, backend_service=BS).fingerprint
        return _refused(bss.patch, project=P, backend_service=BS,
                        backend_service_resource=compute_v1.BackendService(fingerprint=fingerprint, **fields))

    # Without PREPARE first.
    assert "must begin with PREPARE" in patch(external_managed_migration_state="TEST_BY_PERCENTAGE",
                                              external_managed_migration_testing_percentage=10.0)
    assert "must begin with PREPARE" in patch(external_managed_migration_state="TEST_ALL_TRAFFIC")
    assert "TEST_ALL_TRAFFIC before" in patch(load_balancing_scheme="EXTERNAL_MANAGED")
    assert not backend_service(app_world).external_managed_migration_state
    patch_backend_service(app_world, external_managed_migration_state="PREPARE")
    assert "TEST_ALL_TRAFFIC before" in patch(load_balancing_scheme="EXTERNAL_MANAGED")
    assert "[0, 100]" in patch(external_managed_migration_state="TEST_BY_PERCENTAGE",
                               external_managed_migration_testing_percentage=150.0)
    patch_backend_service(app_world, external_managed_migration_state="TEST_BY_PERCENTAGE",
                          external_managed_migration_testing_percentage=20.0)
    assert "TEST_ALL_TRAFFIC before" in patch(load_balancing_scheme="EXTERNAL_MANAGED")
    # The forwarding rule goes last: not while its backend service is still EXTERNAL.
    rules = client(app_world, compute_v1.GlobalForwardingRulesClient)
    assert "migrate the backend services to EXTERNAL_MANAGED first" in _refused(
        rules.patch, project=P, forwarding_rule=HTTP_RULE, forwarding_rule_resource=compute_v1.ForwardingRule(
            fingerprint=_rule(app_world).fingerprint, load_balancing_scheme="EXTERNAL_MANAGED"))
    bs = backend_service(app_world)
    assert (bs.load_balancing_scheme, bs.external_managed_migration_state,
            bs.external_managed_migration_testing_percentage) == ("EXTERNAL", "TEST_BY_PERCENTAGE", 20.0)
    assert _rule(app_world).load_balancing_scheme == "EXTERNAL"


def test_rolling_back_a_backend_service_needs_its_forwarding_rule_back_first(app_world: RunningSim) -> None:
    kubemci_chain(app_world)
    for state in ("PREPARE", "TEST_ALL_TRAFFIC"):
        patch_backend_service(app_world, external_managed_migration_state=state)
    patch_backend_service(app_world, load_balancing_scheme="EXTERNAL_MANAGED")
    patch_rule(app_world, load_balancing_scheme="EXTERNAL_MANAGED")
    bss = client(app_world, compute_v1.BackendServicesClient)
    fingerprint = bss.get(project=P, backend_service=BS).fingerprint
    assert "roll the forwarding rule back to EXTERNAL first" in _refused(
        bss.patch, project=P, backend_service=BS, backend_service_resource=compute_v1.BackendService(
            fingerprint=fingerprint, load_balancing_scheme="EXTERNAL", external_managed_migration_state="TEST_ALL_TRAFFIC"))
    patch_rule(app_world, load_balancing_scheme="EXTERNAL")
    assert "TEST_ALL_TRAFFIC in the same request" in _refused(
        bss.patch, project=P, backend_service=BS, backend_service_resource=compute_v1.BackendService(
            fingerprint=fingerprint, load_balancing_scheme="EXTERNAL"))
    assert backend_service(app_world).load_balancing_scheme == "EXTERNAL_MANAGED"


def _managed_chain(running: RunningSim, name: str) -> str:
    """A global external ALB chain built managed from the start (as gitlab-mci builds one): its HTTP proxy's URL."""
    bss = client(running, compute_v1.BackendServicesClient)
    wait(running, bss.insert_unary(project=P, backend_service_resource=compute_v1.BackendService(
        name=name, load_balancing_scheme="EXTERNAL_MANAGED", port_name="port30999",
        backends=[compute_v1.Backend(group=g["selfLink"]) for g in running.sim.compute.resources("instanceGroups")])))
    ums = client(running, compute_v1.UrlMapsClient)
    wait(running, ums.insert_unary(project=P, url_map_resource=compute_v1.UrlMap(
        name=name, default_service=bss.get(project=P, backend_service=name).self_link)))
    tps = client(running, compute_v1.TargetHttpProxiesClient)
    wait(running, tps.insert_unary(project=P, target_http_proxy_resource=compute_v1.TargetHttpProxy(
        name=name, url_map=ums.get(project=P, url_map=name).self_link)))
    return str(tps.get(project=P, target_http_proxy=name).self_link)


def test_a_managed_backend_service_cannot_enter_or_leave_a_migration_it_never_had(app_world: RunningSim) -> None:
    _managed_chain(app_world, "gmci-bs-native")
    bss = client(app_world, compute_v1.BackendServicesClient)
    fingerprint = bss.get(project=P, backend_service="gmci-bs-native").fingerprint
    assert "Only a backend service with load balancing scheme EXTERNAL can be migrated" in _refused(
        bss.patch, project=P, backend_service="gmci-bs-native", backend_service_resource=compute_v1.BackendService(
            fingerprint=fingerprint, external_managed_migration_state="PREPARE"))
    assert "Only a backend service migrated from EXTERNAL" in _refused(
        bss.patch, project=P, backend_service="gmci-bs-native", backend_service_resource=compute_v1.BackendService(
            fingerprint=fingerprint, load_balancing_scheme="EXTERNAL",
            external_managed_migration_state="TEST_ALL_TRAFFIC"))


def test_set_target_moves_a_rule_only_between_chains_of_a_compatible_scheme(app_world: RunningSim) -> None:
    kubemci_chain(app_world)
    managed_proxy = _managed_chain(app_world, "gmci-native")
    rules = client(app_world, compute_v1.GlobalForwardingRulesClient)
    classic_rule = _rule(app_world)
    # The user's classic rule onto gitlab-mci's managed chain: refused, the rule still on its own proxy.
    assert "EXTERNAL cannot use a backend service with load balancing scheme EXTERNAL_MANAGED" in _refused(
        rules.set_target, project=P, forwarding_rule=HTTP_RULE,
        target_reference_resource=compute_v1.TargetReference(target=managed_proxy))
    assert _rule(app_world).target == classic_rule.target
    # A managed rule (same IP, another port) onto the classic chain: refused too.
    wait(app_world, rules.insert_unary(project=P, forwarding_rule_resource=compute_v1.ForwardingRule(
        name="gmci-native-8080", I_p_address=classic_rule.I_p_address, port_range="8080", target=managed_proxy,
        load_balancing_scheme="EXTERNAL_MANAGED")))
    assert "EXTERNAL_MANAGED cannot use a backend service with load balancing scheme EXTERNAL" in _refused(
        rules.set_target, project=P, forwarding_rule="gmci-native-8080",
        target_reference_resource=compute_v1.TargetReference(target=classic_rule.target))
    # Onto another classic proxy (the same URL map): allowed, and the rule keeps its IP.
    tps = client(app_world, compute_v1.TargetHttpProxiesClient)
    wait(app_world, tps.insert_unary(project=P, target_http_proxy_resource=compute_v1.TargetHttpProxy(
        name="mci1-tp2--shop", url_map=tps.get(project=P, target_http_proxy="mci1-tp--shop").url_map)))
    second = tps.get(project=P, target_http_proxy="mci1-tp2--shop").self_link
    wait(app_world, rules.set_target_unary(project=P, forwarding_rule=HTTP_RULE,
                                           target_reference_resource=compute_v1.TargetReference(target=second)))
    rule = _rule(app_world)
    assert rule.target == second and rule.I_p_address == classic_rule.I_p_address


def _gcloud(running: RunningSim, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "CLOUDSDK_CONFIG": str(running.files.gcloud_config)}
    return subprocess.run(["gcloud", *args, "--quiet"], capture_output=True, text=True, env=env, timeout=120)


def test_gcloud_users_step_the_migration_state_and_are_refused_out_of_order(app_world: RunningSim) -> None:
    """gcloud 528 has `backend-services update --external-managed-migration-state` (checked in its --help)."""
    kubemci_chain(app_world)
    refused = _gcloud(app_world, "compute", "backend-services", "update", BS, "--global",
                      "--external-managed-migration-state=TEST_ALL_TRAFFIC")
    assert refused.returncode != 0 and "must begin with PREPARE" in refused.stderr, refused.stderr
    for state in ("PREPARE", "TEST_ALL_TRAFFIC"):
        done = _gcloud(app_world, "compute", "backend-services", "update", BS, "--global",
                       f"--external-managed-migration-state={state}")
        assert done.returncode == 0, done.stderr
    described = json.loads(_gcloud(app_world, "compute", "backend-services", "describe", BS, "--global",
                                   "--format=json").stdout)
    assert described["externalManagedMigrationState"] == "TEST_ALL_TRAFFIC"
    done = _gcloud(app_world, "compute", "backend-services", "update", BS, "--global",
                   "--load-balancing-scheme=EXTERNAL_MANAGED")
    assert done.returncode == 0, done.stderr
    described = json.loads(_gcloud(app_world, "compute", "backend-services", "describe", BS, "--global",
                                   "--format=json").stdout)
    assert described["loadBalancingScheme"] == "EXTERNAL_MANAGED" and "externalManagedMigrationState" not in described
