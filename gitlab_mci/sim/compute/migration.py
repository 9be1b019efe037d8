"""Compute's rules for migrating a classic Application Load Balancer (``EXTERNAL``) in place to the global external
Application Load Balancer (``EXTERNAL_MANAGED``), and for which forwarding rule may point at which chain.

The facts, with their sources, are in docs/simulator-migration.md. In short:

* a backend service's ``externalManagedMigrationState`` starts at PREPARE, may go to TEST_BY_PERCENTAGE
  (``externalManagedMigrationTestingPercentage``, 0–100) and TEST_ALL_TRAFFIC, and back the same way; only an
  ``EXTERNAL`` backend service takes part;
* its ``loadBalancingScheme`` may become ``EXTERNAL_MANAGED`` only from TEST_ALL_TRAFFIC; rolling back to
  ``EXTERNAL`` sets TEST_ALL_TRAFFIC in the same request, after the forwarding rules in front of it are ``EXTERNAL``
  again, and only for a backend service that was migrated (Google: within 90 days; the simulator has no clock for
  that);
* a forwarding rule becomes ``EXTERNAL_MANAGED`` after every backend service behind it has (Google migrates
  forwarding rules last and rolls them back first); its ``externalManagedBackendBucketMigrationState`` follows the
  same states for the backend buckets behind it (the simulator has no backend buckets: the field is only checked).

Every refusal is HTTP 400. Google's reason and message for these refusals are not published; the reason ``invalid``
and the "Invalid value for field 'resource.X': 'V'. …" shape are those Compute uses for a field it refuses (known);
the explanations after them are our best guess, written to say which rule was broken.
"""

from __future__ import annotations

from typing import Any

Obj = dict[str, Any]

STATE = "externalManagedMigrationState"
PERCENT = "externalManagedMigrationTestingPercentage"
BUCKET_STATE = "externalManagedBackendBucketMigrationState"
BUCKET_PERCENT = "externalManagedBackendBucketMigrationTestingPercentage"
SCHEME = "loadBalancingScheme"
MIGRATED = "_migratedFromExternal"  # private: set when a resource's scheme moved EXTERNAL → EXTERNAL_MANAGED
STATES = ("PREPARE", "TEST_BY_PERCENTAGE", "TEST_ALL_TRAFFIC")

# Which state may follow which (None: no migration under way). Forward: PREPARE first, TEST_BY_PERCENTAGE optional;
# back: the same states in reverse order (TEST_BY_PERCENTAGE moves some traffic back, PREPARE all of it).
_NEXT: dict[str | None, set[str | None]] = {
    None: {None, "PREPARE"},
    "PREPARE": {None, "PREPARE", "TEST_BY_PERCENTAGE", "TEST_ALL_TRAFFIC"},
    "TEST_BY_PERCENTAGE": {"PREPARE", "TEST_BY_PERCENTAGE", "TEST_ALL_TRAFFIC"},
    "TEST_ALL_TRAFFIC": {"PREPARE", "TEST_BY_PERCENTAGE", "TEST_ALL_TRAFFIC"},
}


class MigrationError(Exception):
    """A change Compute refuses: HTTP 400 with ``reason``."""

    def __init__(self, message: str, reason: str = "invalid") -> None:
        super().__init__(message)
        self.reason = reason


def _invalid(field: str, value: Any, why: str) -> MigrationError:
    return MigrationError(f"Invalid value for field 'resource.{field}': '{value}'. {why}")


def _check_states(kind: str, old_state: str | None, new_state: str | None, percent_field: str, new: Obj) -> None:
    if new_state is not None and new_state not in STATES:
        raise _invalid(STATE if kind == "backend service" else BUCKET_STATE, new_state,
                       f"Must be one of {', '.join(STATES)}.")
    field = STATE if kind == "backend service" else BUCKET_STATE
    if new_state not in _NEXT[old_state]:
        if old_state is None:
            why = f"A migration to EXTERNAL_MANAGED must begin with PREPARE; the {kind} has no migration state."
        elif new_state is None:
            why = (f"The migration state of the {kind} is {old_state}: move all traffic back to EXTERNAL with "
                   "PREPARE before clearing it.")
        else:
            why = f"The {kind}'s migration state is {old_state} and cannot change to {new_state}."
        raise _invalid(field, new_state, why)
    percent = new.get(percent_field)
    if percent is not None:
        try:
            value = float(percent)
        except (TypeError, ValueError):
            raise _invalid(percent_field, percent, "Must be a number.") from None
        if not 0.0 <= value <= 100.0:
            raise _invalid(percent_field, percent, "Must be in the range [0, 100].")


def backend_service(old: Obj | None, new: Obj, front_schemes: list[str]) -> None:
    """Check a backend service insert (``old`` None) or update; ``new`` is the resource as it would be stored.

    ``front_schemes``: the schemes of the forwarding rules whose chain reaches this backend service. On success the
    migration fields of ``new`` are normalised as Compute keeps them (cleared once the scheme has changed).
    """
    old_scheme = (old or {}).get(SCHEME, new.get(SCHEME, "EXTERNAL"))
    new_scheme = new.get(SCHEME, "EXTERNAL")
    old_state = (old or {}).get(STATE)
    new_state = new.get(STATE)
    if old is None and new_state not in (None, "PREPARE"):
        raise _invalid(STATE, new_state, "A migration to EXTERNAL_MANAGED must begin with PREPARE.")
    if old_scheme == "EXTERNAL" and new_scheme == "EXTERNAL_MANAGED":
        if old_state != "TEST_ALL_TRAFFIC":
            raise _invalid(SCHEME, new_scheme, "The backend service's externalManagedMigrationState must be "
                           f"TEST_ALL_TRAFFIC before its load balancing scheme can change to EXTERNAL_MANAGED (it is "
                           f"{old_state or 'not set'}).")
        if new_state not in (None, "TEST_ALL_TRAFFIC"):
            raise _invalid(STATE, new_state, "The load balancing scheme changes to EXTERNAL_MANAGED from "
                           "TEST_ALL_TRAFFIC.")
        new.pop(STATE, None)
        new.pop(PERCENT, None)
        new[MIGRATED] = True
        return
    if old_scheme == "EXTERNAL_MANAGED" and new_scheme == "EXTERNAL":
        if not (old or {}).get(MIGRATED):
            raise _invalid(SCHEME, new_scheme, "Only a backend service migrated from EXTERNAL can be rolled back to "
                           "EXTERNAL.")
        if new_state != "TEST_ALL_TRAFFIC":
            raise _invalid(SCHEME, new_scheme, "Rolling back to EXTERNAL requires externalManagedMigrationState "
                           "TEST_ALL_TRAFFIC in the same request.")
        if "EXTERNAL_MANAGED" in front_schemes:
            raise _invalid(SCHEME, new_scheme, "A forwarding rule with load balancing scheme EXTERNAL_MANAGED uses "
                           "this backend service: roll the forwarding rule back to EXTERNAL first.")
        new.pop(MIGRATED, None)
        _check_states("backend service", "TEST_ALL_TRAFFIC", new_state, PERCENT, new)
        return
    if old_scheme != new_scheme and old is not None and "EXTERNAL" in (old_scheme, new_scheme):
        raise _invalid(SCHEME, new_scheme, f"The load balancing scheme cannot change from {old_scheme} to "
                       f"{new_scheme}.")
    if new_scheme != "EXTERNAL":
        if new_state is not None:
            raise _invalid(STATE, new_state, "Only a backend service with load balancing scheme EXTERNAL can be "
                           "migrated.")
        return
    _check_states("backend service", old_state, new_state, PERCENT, new)


def forwarding_rule(old: Obj | None, new: Obj, chain_schemes: list[tuple[str, bool]]) -> None:
    """Check a forwarding rule insert (``old`` None) or update: its scheme against the backend services its target
    reaches (``chain_schemes``: (scheme, migrated from EXTERNAL) of each), and its own migration fields."""
    old_scheme = (old or {}).get(SCHEME, new.get(SCHEME, "EXTERNAL"))
    new_scheme = new.get(SCHEME, "EXTERNAL")
    old_state = (old or {}).get(BUCKET_STATE)
    new_state = new.get(BUCKET_STATE)
    if new_scheme == "EXTERNAL":
        # A rollback from EXTERNAL_MANAGED may set TEST_ALL_TRAFFIC in the same request (backend buckets behind it).
        rolled_back = old_scheme == "EXTERNAL_MANAGED" and new_state is not None
        _check_states("forwarding rule", "TEST_ALL_TRAFFIC" if rolled_back else old_state, new_state,
                      BUCKET_PERCENT, new)
    elif new_state is not None and old_scheme == new_scheme:
        raise _invalid(BUCKET_STATE, new_state, "Only a forwarding rule with load balancing scheme EXTERNAL can be "
                       "migrated.")
    if old is not None and old_scheme != new_scheme:
        if {old_scheme, new_scheme} != {"EXTERNAL", "EXTERNAL_MANAGED"}:
            raise _invalid(SCHEME, new_scheme, f"The load balancing scheme cannot change from {old_scheme} to "
                           f"{new_scheme}.")
        if new_scheme == "EXTERNAL_MANAGED":
            if old_state is not None and old_state != "TEST_ALL_TRAFFIC":
                raise _invalid(SCHEME, new_scheme, "The forwarding rule's externalManagedBackendBucketMigrationState "
                               f"must be TEST_ALL_TRAFFIC before its scheme changes (it is {old_state}).")
            new.pop(BUCKET_STATE, None)
            new.pop(BUCKET_PERCENT, None)
            new[MIGRATED] = True
        elif not old.get(MIGRATED):
            raise _invalid(SCHEME, new_scheme, "Only a forwarding rule migrated from EXTERNAL can be rolled back to "
                           "EXTERNAL.")
        else:
            new.pop(MIGRATED, None)
    # On insert, on setTarget and on a scheme change alike: the rule's scheme must fit the chain it fronts.
    why = incompatible(new_scheme, chain_schemes)
    if why:
        raise _invalid(SCHEME if old is not None and old_scheme != new_scheme else "target", new.get("target")
                       if old is None or old_scheme == new_scheme else new_scheme, why)


def incompatible(rule_scheme: str, chain_schemes: list[tuple[str, bool]]) -> str:
    """Why a forwarding rule of ``rule_scheme`` cannot front backend services of these schemes ('' if it can).

    An ``EXTERNAL`` rule fronts ``EXTERNAL`` backend services (in migration or not) and ``EXTERNAL_MANAGED`` ones that
    were migrated from ``EXTERNAL`` (the step before the rule's own scheme change, and a rolled-back rule's state);
    an ``EXTERNAL_MANAGED`` rule fronts only ``EXTERNAL_MANAGED`` backend services.
    """
    for scheme, migrated in chain_schemes:
        if rule_scheme == "EXTERNAL_MANAGED" and scheme != "EXTERNAL_MANAGED":
            return (f"A forwarding rule with load balancing scheme EXTERNAL_MANAGED cannot use a backend service with "
                    f"load balancing scheme {scheme}: migrate the backend services to EXTERNAL_MANAGED first.")
        if rule_scheme == "EXTERNAL" and scheme != "EXTERNAL" and not (scheme == "EXTERNAL_MANAGED" and migrated):
            return (f"A forwarding rule with load balancing scheme EXTERNAL cannot use a backend service with load "
                    f"balancing scheme {scheme}.")
    return ""


def serves_managed(rule_scheme: str, service: Obj, draw: float) -> bool:
    """Whether one request through a rule of ``rule_scheme`` to ``service`` takes the global external ALB's path.

    ``draw`` is uniform in [0, 1): TEST_BY_PERCENTAGE sends that percentage of requests to the managed path.
    """
    if rule_scheme == "EXTERNAL_MANAGED" or service.get(SCHEME) == "EXTERNAL_MANAGED":
        return True
    state = service.get(STATE)
    if state == "TEST_ALL_TRAFFIC":
        return True
    if state == "TEST_BY_PERCENTAGE":
        return draw * 100.0 < float(service.get(PERCENT) or 0.0)
    return False
