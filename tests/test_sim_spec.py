"""The simulator spec: defaults, generated worlds, and one-line errors that name the field."""

from __future__ import annotations

from pathlib import Path

import pytest

from gitlab_mci.errors import UserError
from gitlab_mci.sim.spec import REGION_ZONES, generated_spec, load_spec, parse_spec
from gitlab_mci.sim.world import plan_world


def test_default_world_is_prod1_and_prod2_with_three_nodes_each() -> None:
    spec = load_spec(None)
    assert [(c.name, c.location, c.zones) for c in spec.clusters] == [
        ("prod1", "us-central1-a", ("us-central1-a",)),
        ("prod2", "europe-west1-b", ("europe-west1-b",)),
    ]
    records = plan_world(spec)
    assert [len(r.nodes) for r in records] == [3, 3]


def test_regional_cluster_spreads_over_three_zones_that_exist_in_its_region() -> None:
    # europe-west1 has zones b, c and d: a regional cluster there can never be in europe-west1-a.
    spec = parse_spec({"clusters": [{"name": "eu", "location": "europe-west1", "nodes": 2}]})
    (rec,) = plan_world(spec)
    assert rec.spec.zones == ("europe-west1-b", "europe-west1-c", "europe-west1-d")
    assert len(rec.nodes) == 6 and len(rec.groups) == 3


@pytest.mark.parametrize(("region", "zones"), [
    ("us-central1", ("us-central1-a", "us-central1-b", "us-central1-c")),
    ("us-east1", ("us-east1-b", "us-east1-c", "us-east1-d")),
    ("asia-east1", ("asia-east1-a", "asia-east1-b", "asia-east1-c")),
])
def test_regional_cluster_in_a_common_region_defaults_to_real_zones(region: str, zones: tuple[str, ...]) -> None:
    spec = parse_spec({"clusters": [{"name": "c", "location": region}]})
    assert spec.clusters[0].zones == zones


def test_regional_cluster_may_list_its_zones_including_a_fourth_one() -> None:
    spec = parse_spec({"clusters": [{"name": "us", "location": "us-central1", "zones": ["us-central1-f", "us-central1-a"]}]})
    assert spec.clusters[0].zones == ("us-central1-f", "us-central1-a")


def test_region_the_simulator_does_not_know_needs_its_zones_listed() -> None:
    with pytest.raises(UserError) as info:
        parse_spec({"clusters": [{"name": "mx", "location": "northamerica-west9"}]}, "spec.yaml")
    assert "clusters[0].zones" in str(info.value) and "northamerica-west9" in str(info.value)
    listed = parse_spec({"clusters": [{"name": "mx", "location": "northamerica-west9",
                                       "zones": ["northamerica-west9-a"]}]})
    assert listed.clusters[0].zones == ("northamerica-west9-a",)


def test_generated_worlds_use_only_real_zones() -> None:
    spec = generated_spec(10, zones_per_cluster=3)
    for c in spec.clusters:
        assert set(c.zones) <= set(REGION_ZONES[c.region]), c


def test_world_plan_is_deterministic_and_names_are_unique() -> None:
    spec = generated_spec(15, zones_per_cluster=3, nodes_per_zone=3)
    a, b = plan_world(spec), plan_world(spec)
    names = [n.name for r in a for n in r.nodes]
    assert names == [n.name for r in b for n in r.nodes]
    assert len(names) == len(set(names)) == 15 * 3 * 3
    ips = [n.internal_ip for r in a for n in r.nodes]
    assert len(set(ips)) == len(ips)
    assert all(len(n) <= 63 and not n.startswith("mci-") for n in names)


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ([], "must be a YAML mapping"),
        ({"clusters": []}, "clusters: must be a non-empty list"),
        ({"clusters": [{"name": "Prod1"}]}, "clusters[0].name"),
        ({"clusters": [{"name": "a", "location": "mars-1"}]}, "clusters[0].location"),
        ({"clusters": [{"name": "a"}, {"name": "a"}]}, "duplicate cluster name(s) a"),
        ({"clusters": [{"name": "a", "zones": ["europe-west1-b"]}]}, "every zone must be in us-central1"),
        ({"clusters": [{"name": "eu", "location": "europe-west1", "zones": ["europe-west1-a"]}]},
         "clusters[0].zones: europe-west1-a is not a zone of europe-west1 (its zones: europe-west1-b, europe-west1-c, "
         "europe-west1-d)"),
        ({"clusters": [{"name": "eu", "location": "europe-west1-a"}]},
         "clusters[0].location: europe-west1-a is not a zone of europe-west1 (its zones: europe-west1-b, "
         "europe-west1-c, europe-west1-d)"),
        ({"clusters": [{"name": "a", "zones": ["us-central1-a", "us-central1-a"]}]}, "zones: us-central1-a is listed twice"),
        ({"clusters": [{"name": "a", "nodes": 0}]}, "clusters[0].nodes"),
        ({"clusters": [{"name": "a", "colour": 1}]}, "unknown field(s) colour"),
        ({"clusters": [{"name": "a"}], "projet": "x"}, "unknown field(s) projet"),
        ({"clusters": [{"name": "a"}], "project": "X"}, "is not a valid project ID"),
        ({"clusters": [{"name": "a"}], "nodePortRange": "3-2"}, "nodePortRange"),
        ({"clusters": [{"name": "a"}], "operationLatency": -1}, "operationLatency"),
    ],
)
def test_bad_spec_is_one_line_naming_the_field(raw: object, message: str) -> None:
    with pytest.raises(UserError) as info:
        parse_spec(raw, "spec.yaml")
    text = str(info.value)
    assert text.startswith("spec.yaml") and message in text and "\n" not in text


def test_spec_file_errors_name_the_file_and_line(tmp_path: Path) -> None:
    bad = tmp_path / "world.yaml"
    bad.write_text("clusters:\n  - name: a\n   location: [\n")
    with pytest.raises(UserError, match=r"world\.yaml: malformed YAML at line \d+"):
        load_spec(bad)
    with pytest.raises(UserError, match="cannot read simulator spec"):
        load_spec(tmp_path / "missing.yaml")
