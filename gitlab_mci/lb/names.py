"""Deterministic, owned names for the load balancer's Compute resources, and the ownership marker.

State lives in the cloud, found by name: ``<prefix>-<kind>-<lb>[-<suffix>]`` (e.g. ``gmci-bs-shop-30999``), never
starting with ``mci-`` (GKE's hosted Multi Cluster Ingress owns that prefix and deletes what it does not manage).
Names longer than 63 characters keep a readable head and end in a hash of the full name, so distinct inputs stay
distinct.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from typing import Any

from gitlab_mci.errors import UserError

MAX_LEN = 63
LB_NAME_MAX = 40
_RFC1035 = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
LABEL_KEY = "gitlab-mci-lb"
MARKER = "gitlab-mci:lb="
# A forwarding rule taken over by `lb takeover` keeps its name (and the user's IP and port): it is adopted by the
# label LABEL_KEY=<lb> (a forwarding rule's description cannot be changed). Until the old chain is deleted it also
# records, in labels, the proxy it served before (WAS_LABEL[collection]) and the old chain's resources
# (OLD_LABEL + code + index), so that `lb takeover` can resume, and `--rollback` go back, from Compute alone.
WAS_LABEL = {"targetHttpProxies": "gitlab-mci-was-hp", "targetHttpsProxies": "gitlab-mci-was-sp"}
OLD_LABEL = "gitlab-mci-old-"

# Short kind codes keep names readable within 63 characters.
KINDS = {
    "address": "ip", "firewall": "fw", "healthCheck": "hc", "backendService": "bs", "urlMap": "um",
    "redirectUrlMap": "rd", "httpProxy": "hp", "httpsProxy": "sp", "certificate": "crt", "forwardingRule": "fr",
    "namedPort": "np",
}


def check_lb_name(lb: str) -> str:
    if not _RFC1035.match(lb) or len(lb) > LB_NAME_MAX:
        raise UserError(f"load balancer name {lb!r} must be lowercase letters, digits and hyphens, start with a "
                        f"letter, and be at most {LB_NAME_MAX} characters")
    return lb


@dataclass(frozen=True)
class Namer:
    """Names every resource of one load balancer."""

    lb: str
    prefix: str = "gmci"

    def __post_init__(self) -> None:
        check_lb_name(self.lb)
        if not _RFC1035.match(self.prefix) or len(self.prefix) > 10:
            raise UserError(f"name prefix {self.prefix!r} must be a short lowercase RFC 1035 name")
        if self.prefix == "mci" or self.prefix.startswith("mci-"):
            raise UserError(f"name prefix {self.prefix!r} is reserved by GKE Multi Cluster Ingress, which deletes "
                            "unmanaged mci- resources; choose another --name-prefix")

    def name(self, kind: str, suffix: str | int | None = None) -> str:
        parts = [self.prefix, KINDS[kind], self.lb] + ([str(suffix)] if suffix not in (None, "") else [])
        full = "-".join(parts)
        full = re.sub(r"[^-a-z0-9]", "-", full.lower())
        if len(full) <= MAX_LEN:
            return full
        digest = hashlib.sha256(full.encode()).hexdigest()[:8]
        return f"{full[:MAX_LEN - 9].rstrip('-')}-{digest}"

    def port_name(self, node_port: int) -> str:
        """The named port on the clusters' instance groups: per load balancer, so two load balancers on the same
        clusters and node port never remove each other's (``gmci-30999-shop``; at most 5+6+40 characters)."""
        return f"{self.prefix}-{node_port}-{self.lb}"

    def owns_port(self, name: str) -> bool:
        head, _, rest = name.partition("-")
        number, _, lb = rest.partition("-")
        return head == self.prefix and number.isdigit() and lb == self.lb

    @property
    def description(self) -> str:
        """The marker every owned resource carries in ``description``."""
        return f"{MARKER}{self.lb} " + json.dumps({"managedBy": "gitlab-mci", "lb": self.lb}, separators=(",", ":"))

    @property
    def labels(self) -> dict[str, str]:
        """Labels for the kinds that have them (global addresses and forwarding rules)."""
        return {LABEL_KEY: self.lb}

    def owns(self, resource: dict[str, Any]) -> bool:
        """True when ``resource`` (REST JSON) carries this load balancer's marker, or is a forwarding rule
        adopted by `lb takeover` (labelled ``gitlab-mci-lb=<lb>``)."""
        return owner(resource) == self.lb


def is_forwarding_rule(resource: dict[str, Any]) -> bool:
    return resource.get("kind") == "compute#forwardingRule" or "/forwardingRules/" in str(
        resource.get("selfLink") or "")


def owner(resource: dict[str, Any]) -> str | None:
    """The gitlab-mci load balancer that owns ``resource`` (REST JSON): the one its description's marker names,
    or, for a forwarding rule adopted by `lb takeover`, its ``gitlab-mci-lb`` label; None if none does."""
    head = str(resource.get("description") or "").split(" ", 1)[0]
    if head.startswith(MARKER) and head != MARKER:
        return head[len(MARKER):]
    if is_forwarding_rule(resource):
        return (resource.get("labels") or {}).get(LABEL_KEY) or None
    return None
