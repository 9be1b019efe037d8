"""The NEG name `neg expose` writes on the Service and `lb apply` attaches: one function, per port and load balancer."""

from __future__ import annotations

import pytest

from gitlab_mci.errors import UserError
from gitlab_mci.lb.names import MAX_LEN, Namer


def test_the_neg_of_a_port_is_named_after_the_load_balancer_and_the_port_never_mci() -> None:
    assert Namer("shop").neg_name(5000) == "gmci-neg-shop-5000"
    assert Namer("shop").neg_name("5000") == "gmci-neg-shop-5000"
    assert Namer("shop").neg_name(80) != Namer("shop").neg_name(8080)
    assert Namer("shop").neg_name(80) != Namer("shop2").neg_name(80)


def test_the_longest_names_fit_in_63_characters() -> None:
    name = Namer("a" * 40, "b" * 10).neg_name(65535)
    assert len(name) <= MAX_LEN and not name.startswith("mci-")


def test_a_named_port_is_refused_since_a_neg_is_named_after_the_port_number() -> None:
    with pytest.raises(UserError):
        Namer("shop").neg_name("Web")


def test_clusters_sharing_a_zone_get_distinct_names_when_the_cluster_is_given() -> None:
    namer = Namer("shop")
    assert namer.neg_name(5000, "prod1") != namer.neg_name(5000, "prod2")
    assert namer.neg_name(5000, "prod1").startswith("gmci-neg-shop-5000-")
    assert len(Namer("a" * 40, "b" * 10).neg_name(65535, "c" * 100)) <= MAX_LEN
