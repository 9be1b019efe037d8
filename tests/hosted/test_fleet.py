"""`gitlab-mci fleet enable` with google-cloud-gke-hub against the simulated GKE Hub: idempotent, --dry-run."""

from __future__ import annotations

import json
from typing import Any

import pytest

from gitlab_mci.sim.spec import parse_spec
from tests.cli_helpers import run_cli as cli
from tests.conftest import RunningSim


@pytest.fixture
def world(make_sim: Any, monkeypatch: pytest.MonkeyPatch) -> RunningSim:
    running: RunningSim = make_sim(parse_spec({
        "clusters": [{"name": "prod1", "location": "us-central1-a"}, {"name": "prod2", "location": "europe-west1"}],
        "mciProvisioningDelay": 0.05}))
    for key, value in running.env.items():
        monkeypatch.setenv(key, value)
    running.sim.journal.reset()
    return running


def hub_writes(running: RunningSim) -> list[tuple[str, str]]:
    return [(e.method, e.path.split("?")[0].removeprefix("/v1/projects/demo-project/locations/"))
            for e in running.sim.journal.writes("gkehub")]


def test_enable_registers_members_and_the_feature_once(world: RunningSim, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = cli(["fleet", "enable", "--context", "prod1,prod2", "--dry-run"], capsys)
    assert code == 0, err
    assert out.splitlines() == [
        "+ membership prod1 (us-central1-a/prod1)", "+ membership prod2 (europe-west1/prod2)",
        "+ feature multiclusteringress (config membership projects/demo-project/locations/global/memberships/prod1)"]
    assert world.sim.journal.writes() == [] and world.sim.gkehub.memberships() == []

    code, out, err = cli(["fleet", "enable", "--context", "prod1", "--context", "prod2"], capsys)
    assert code == 0, err
    assert sorted(hub_writes(world)) == [("POST", "global/features"), ("POST", "global/memberships"),
                                         ("POST", "global/memberships")]
    assert world.sim.gkehub.member_links() == {"us-central1-a/prod1", "europe-west1/prod2"}
    assert world.sim.gkehub.config_link() == "us-central1-a/prod1"
    links = [m["endpoint"]["gkeCluster"]["resourceLink"] for m in world.sim.gkehub.memberships()]
    assert "//container.googleapis.com/projects/demo-project/locations/europe-west1/clusters/prod2" in links

    world.sim.journal.reset()
    code, out, err = cli(["fleet", "enable", "--context", "prod1,prod2", "-o", "json"], capsys)
    assert code == 0, err
    assert json.loads(out)["changes"] == [] and world.sim.journal.writes() == []

    # Another config cluster: only the feature changes.
    code, out, err = cli(["fleet", "enable", "--context", "prod1,prod2", "--config-context", "prod2"], capsys)
    assert code == 0, err
    assert hub_writes(world) == [("PATCH", "global/features/multiclusteringress")]
    assert world.sim.gkehub.config_link() == "europe-west1/prod2"
    # The simulated controller follows the config membership.
    assert world.sim.mci.config_cluster() == "prod2"


def test_links_given_with_the_context_and_gcloud_context_names(world: RunningSim,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = cli(["fleet", "enable", "--context", "gke_demo-project_us-central1-a_prod1,"
                                                          "other=europe-west1/prod2", "--dry-run"], capsys)
    assert code == 0, err
    assert "+ membership prod1 (us-central1-a/prod1)" in out and "+ membership prod2 (europe-west1/prod2)" in out
    assert world.sim.journal.entries("kube") == []  # the links were known: no cluster was read


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--context", "prod1=us-central1-a/prod9"],
         "GKE Hub: cannot create membership prod9 in project demo-project: GKE cluster "
         "//container.googleapis.com/projects/demo-project/locations/us-central1-a/clusters/prod9 not found"),
        (["--context", "prod1=nowhere"], "cluster link 'nowhere' is not <zone-or-region>/<cluster-name>"),
        (["--context", "prod7"], "unknown kubeconfig context 'prod7'"),
        ([], "no clusters"),
    ],
)
def test_enable_errors_are_one_line(world: RunningSim, capsys: pytest.CaptureFixture[str], args: list[str],
                                    message: str) -> None:
    code, _, err = cli(["fleet", "enable", *args], capsys)
    assert code == 1 and message in err and len(err.splitlines()) == 1, err
    assert world.sim.gkehub.features() == []


def test_a_membership_name_taken_by_another_cluster_is_refused(make_sim: Any, monkeypatch: pytest.MonkeyPatch,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    running = make_sim(parse_spec({"clusters": [{"name": "prod1"}, {"name": "other", "location": "europe-west1-b"}]}))
    running.sim.gkehub.register("other", membership_id="prod1")
    for key, value in running.env.items():
        monkeypatch.setenv(key, value)
    running.sim.journal.reset()
    code, _, err = cli(["fleet", "enable", "--context", "prod1"], capsys)
    assert code == 1 and "fleet membership 'prod1' already exists for europe-west1-b/other" in err
    assert running.sim.journal.writes() == []


def test_gcloud_reads_the_fleet_gitlab_mci_made(world: RunningSim, capsys: pytest.CaptureFixture[str]) -> None:
    import os
    import subprocess

    assert cli(["fleet", "enable", "--context", "prod1,prod2"], capsys)[0] == 0
    done = subprocess.run(["gcloud", "container", "fleet", "ingress", "describe", "--format=json", "--quiet"],
                          capture_output=True, text=True, timeout=120,
                          env={**os.environ, "CLOUDSDK_CONFIG": str(world.files.gcloud_config)})
    assert done.returncode == 0, done.stderr
    feature = json.loads(done.stdout)
    assert feature["spec"]["multiclusteringress"]["configMembership"] == \
        "projects/demo-project/locations/global/memberships/prod1"
    assert feature["resourceState"]["state"] == "ACTIVE"


def test_status_lists_members_and_the_config_cluster(world: RunningSim, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = cli(["fleet", "status"], capsys)
    assert code == 3 and "0 member(s)" in out and "multiclusteringress: not enabled" in out
    assert cli(["fleet", "enable", "--context", "prod1,prod2", "--config-context", "prod2"], capsys)[0] == 0
    code, out, _ = cli(["fleet", "status"], capsys)
    assert code == 0
    assert "  prod2: europe-west1/prod2  (Multi Cluster Ingress config cluster)" in out.splitlines()
    code, out, _ = cli(["fleet", "status", "-o", "json"], capsys)
    assert [m["link"] for m in json.loads(out)["members"]] == ["us-central1-a/prod1", "europe-west1/prod2"]
