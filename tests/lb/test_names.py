"""Resource names: readable, valid, unique, never `mci-`; ownership by marker."""

from __future__ import annotations

import itertools
import re

import pytest

from gitlab_mci.errors import UserError
from gitlab_mci.lb.names import KINDS, Namer

VALID = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")


def test_names_are_readable() -> None:
    n = Namer("shop")
    assert n.name("backendService", 30999) == "gmci-bs-shop-30999"
    assert n.name("urlMap") == "gmci-um-shop"
    assert n.name("forwardingRule", "https") == "gmci-fr-shop-https"


def test_long_names_are_valid_and_distinct() -> None:
    lbs = ["a", "shop", "x" * 40, "y" * 39, "a-" * 19 + "z", "checkout-service-europe-west-production"]
    suffixes = [None, 30000, 32767, "http", "https", "c" * 40, "c" * 41, "0123456789abcdef" * 3]
    names = set()
    for lb, kind, suffix in itertools.product(lbs, KINDS, suffixes):
        name = Namer(lb).name(kind, suffix)
        assert VALID.match(name) and len(name) <= 63, name
        assert not name.startswith("mci-")
        names.add(name)
    assert len(names) == len(lbs) * len(KINDS) * len(suffixes)


@pytest.mark.parametrize("lb", ["Shop", "1shop", "shop-", "s" * 41, "sh_op", ""])
def test_bad_lb_names_are_refused(lb: str) -> None:
    with pytest.raises(UserError, match="load balancer name"):
        Namer(lb)


@pytest.mark.parametrize("prefix", ["mci", "mci-x"])
def test_the_mci_prefix_is_refused(prefix: str) -> None:
    with pytest.raises(UserError, match="reserved by GKE Multi Cluster Ingress"):
        Namer("shop", prefix=prefix)


def test_ownership_is_by_marker_of_this_lb() -> None:
    shop, cart = Namer("shop"), Namer("cart")
    assert shop.owns({"description": shop.description})
    assert not shop.owns({"description": cart.description})
    assert not shop.owns({"description": "gitlab-mci:lb=shopping"})
    assert not shop.owns({})
    assert shop.labels == {"gitlab-mci-lb": "shop"}
