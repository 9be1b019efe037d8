"""`gitlab-mci helm values|extra-args`: canonical values, deploy-script word splitting, idempotence, refusals."""

from __future__ import annotations

import random
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from gitlab_mci.cli import main
from gitlab_mci.errors import UserError
from gitlab_mci.helm import HelmSettings, extra_args, render_values, split_words
from gitlab_mci.sim.autodeploy import values_for

ROOT = Path(__file__).resolve().parents[1]


def test_checked_in_values_equal_the_default_rendering() -> None:
    assert (ROOT / "helm-values" / "values.yaml").read_text() == render_values(HelmSettings())


def test_values_render_a_nodeport_service_with_the_pinned_port() -> None:
    doc = yaml.safe_load(render_values(HelmSettings(node_port=31000, external_port=8080, disable_ingress=True)))
    assert doc == {
        "service": {"type": "NodePort", "externalPort": 8080, "internalPort": 5000, "nodePort": 31000},
        "ingress": {"enabled": False},
    }


def test_words_split_like_an_unquoted_shell_variable() -> None:
    # The deploy script does no quote processing: quotes stay in the words.
    assert split_words(' --set a="b c"\t--atomic\n') == ["--set", 'a="b', 'c"', "--atomic"]
    out = subprocess.run(["bash", "-c", 'X=\' --set a="b c"\t--atomic\n\'; printf "%s\\n" $X'],
                         capture_output=True, text=True, check=True).stdout.splitlines()
    assert out == split_words(' --set a="b c"\t--atomic\n')


def test_extra_args_keep_user_arguments_and_append_ours_last() -> None:
    out = extra_args("--atomic  --set replicaCount=2", HelmSettings(node_port=31000, values_file="v.yaml"))
    assert out == ("--atomic --set replicaCount=2 --values v.yaml "
                   "--set service.type=NodePort --set service.nodePort=31000")


def test_non_default_ports_are_set_too() -> None:
    out = extra_args("", HelmSettings(external_port=8080))
    assert "--set service.externalPort=8080" in out and "--set service.internalPort=8080" not in out


WORDS = ["--atomic", "--timeout", "5m", "--set", "replicaCount=3", "--set=a=b", "--values", "x.yaml",
         "--set-string", "image.tag=v1", "--set", "service.type=NodePort", "--set", "a=1,service.nodePort=30999",
         "--wait", "-f", "y.yaml"]


@pytest.mark.parametrize("seed", range(200))
def test_extra_args_are_idempotent(seed: int) -> None:
    rng = random.Random(seed)
    words: list[str] = []
    while len(words) < rng.randint(0, 12):
        i = rng.randrange(len(WORDS))
        # keep flags with their values
        words += WORDS[i:i + 2] if WORDS[i] in ("--set", "--values", "--set-string", "--timeout", "-f") else [WORDS[i]]
    existing = rng.choice([" ", "\t", "\n", "  "]).join(words)
    settings = HelmSettings(values_file=rng.choice([None, "mci.yaml"]), disable_ingress=rng.random() < 0.5)
    once = extra_args(existing, settings)
    assert extra_args(once, settings) == once
    assert once.endswith(f"--set service.nodePort={settings.node_port}" if not settings.disable_ingress
                         else "--set ingress.enabled=false")


@pytest.mark.parametrize(
    ("existing", "culprit"),
    [
        ("--set service.type=ClusterIP", "--set service.type=ClusterIP"),
        ("--set=service.type=LoadBalancer", "--set=service.type=LoadBalancer"),
        ("--set service.nodePort=31000", "--set service.nodePort=31000"),
        ("--set-string service.nodePort=31000", "--set-string service.nodePort=31000"),
        ("--set a=b,service.type=ClusterIP", "--set a=b,service.type=ClusterIP"),
    ],
)
def test_contradictory_arguments_are_refused_naming_them(existing: str, culprit: str) -> None:
    with pytest.raises(UserError) as info:
        extra_args(existing, HelmSettings())
    assert f"`{culprit}`" in str(info.value)


def test_cli_reads_ci_variables(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HELM_UPGRADE_EXTRA_ARGS", "--atomic")
    monkeypatch.setenv("MCI_NODE_PORT", "31234")
    main(["helm", "extra-args"])
    assert capsys.readouterr().out.strip() == "--atomic --set service.type=NodePort --set service.nodePort=31234"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["helm", "extra-args", "--node-port", "abc"], "--node-port / MCI_NODE_PORT: 'abc' is not a number"),
        (["helm", "values", "--node-port", "80"], "--node-port / MCI_NODE_PORT: 80 is out of range (30000-32767)"),
        (["helm", "extra-args", "--extra-args", "--set"], "HELM_UPGRADE_EXTRA_ARGS: --set at the end has no value"),
    ],
)
def test_cli_errors_are_one_line(args: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(args)
    assert info.value.code == 1
    assert capsys.readouterr().err.splitlines() == [f"gitlab-mci: error: {message}"]


def test_values_to_a_file(tmp_path: Path) -> None:
    out = tmp_path / "sub" / "v.yaml"
    main(["helm", "values", "--values-file", str(out), "--node-port", "30100"])
    assert yaml.safe_load(out.read_text())["service"]["nodePort"] == 30100


def test_helm_commands_import_no_google_module() -> None:
    code = ("import sys; from gitlab_mci.cli import main\n"
            "main(['helm', 'extra-args', '--extra-args', '--atomic'])\n"
            "main(['helm', 'values'])\n"
            "print('GOOGLE', sorted(m for m in sys.modules if m.startswith('google')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "GOOGLE []" in out


# ---------------------------------------------------------------------------------------------------------------------
# The user's own values are read, carried over, and never silently overridden (issue 12, item 4)


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A project checkout as the current directory, with none of the CI variables set."""
    monkeypatch.chdir(tmp_path)
    for var in ("HELM_UPGRADE_EXTRA_ARGS", "HELM_UPGRADE_VALUES_FILE", "MCI_NODE_PORT", "MCI_SERVICE_PORT",
                "MCI_INTERNAL_PORT", "MCI_VALUES_FILE", "MCI_DISABLE_INGRESS", "MCI_BACKENDS", "MCI_LB_NAME"):
        monkeypatch.delenv(var, raising=False)
    return tmp_path


RECIPE_VALUES = "service:\n  type: NodePort\n  externalPort: 8080\n  internalPort: 8080\n"


def _run(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    from tests.cli_helpers import run_cli

    return run_cli(args, capsys)


@pytest.mark.parametrize("where", ["--values", "-f", "--values=", "deploy-values-file", "HELM_UPGRADE_VALUES_FILE"])
def test_recipe_values_yaml_on_8080_keeps_its_ports_after_extra_args(
    where: str, project: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The recipe's values.yaml sets 8080; our values file (5000 by default) used to come last and win."""
    existing = "--atomic"
    if where in ("--values", "-f"):
        (project / "values.yaml").write_text(RECIPE_VALUES)
        existing = f"--atomic {where} values.yaml"
    elif where == "--values=":
        (project / "values.yaml").write_text(RECIPE_VALUES)
        existing = "--atomic --values=values.yaml"
    elif where == "deploy-values-file":
        (project / ".gitlab").mkdir()
        (project / ".gitlab" / "auto-deploy-values.yaml").write_text(RECIPE_VALUES)
    else:
        (project / "mine.yaml").write_text(RECIPE_VALUES)
        monkeypatch.setenv("HELM_UPGRADE_VALUES_FILE", "mine.yaml")
    monkeypatch.setenv("HELM_UPGRADE_EXTRA_ARGS", existing)
    code, _, err = _run(["helm", "values", "--values-file", ".gitlab/mci-values.yaml"], capsys)
    assert code == 0, err
    assert yaml.safe_load((project / ".gitlab" / "mci-values.yaml").read_text())["service"] == {
        "type": "NodePort", "externalPort": 8080, "internalPort": 8080, "nodePort": 30999}
    code, out, err = _run(["helm", "extra-args", "--values-file", ".gitlab/mci-values.yaml"], capsys)
    assert code == 0, err
    assert "keeping service.externalPort=8080 from" in err and "keeping service.internalPort=8080 from" in err
    files = ["mine.yaml"] if where == "HELM_UPGRADE_VALUES_FILE" else []
    resolved = values_for(out.strip(), files)
    assert resolved["service"] == {**resolved["service"], "type": "NodePort", "nodePort": 30999,
                                   "externalPort": 8080, "internalPort": 8080}


def test_set_flags_on_8080_are_carried_into_the_values_file(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    existing = "--set service.externalPort=8080,service.internalPort=8081"
    code, out, err = _run(["helm", "values", "--extra-args", existing], capsys)
    assert code == 0, err
    assert yaml.safe_load(out)["service"]["externalPort"] == 8080
    assert yaml.safe_load(out)["service"]["internalPort"] == 8081
    assert f"keeping service.externalPort=8080 from `{existing}` in HELM_UPGRADE_EXTRA_ARGS" in err


def test_user_node_port_31000_against_an_asked_30999_is_refused_naming_the_file(
    project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (project / "values.yaml").write_text("service:\n  type: NodePort\n  nodePort: 31000\n")
    for command in ("values", "extra-args"):
        code, out, err = _run(["helm", command, "--node-port", "30999", "--extra-args", "-f values.yaml"], capsys)
        assert code == 1 and out == ""
        assert err.splitlines() == [
            "gitlab-mci: error: values.yaml (`-f values.yaml` in HELM_UPGRADE_EXTRA_ARGS) sets service.nodePort=31000, "
            "but gitlab-mci was asked for service.nodePort=30999 (--node-port / MCI_NODE_PORT); make them agree"]
    # Not asked: the default 30999 would silently differ from what `nodeport pin` pins; say how to choose.
    code, _, err = _run(["helm", "extra-args", "--extra-args", "-f values.yaml"], capsys)
    assert code == 1
    assert "sets service.nodePort=31000, but gitlab-mci pins node port 30999 unless told otherwise; pass " \
           "--node-port 31000 (MCI_NODE_PORT=31000)" in err
    code, out, err = _run(["helm", "extra-args", "--node-port", "31000", "--extra-args", "-f values.yaml"], capsys)
    assert code == 0, err
    assert out.strip() == "-f values.yaml --set service.type=NodePort --set service.nodePort=31000"


def test_user_port_against_an_asked_service_port_is_refused(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (project / ".gitlab").mkdir()
    (project / ".gitlab" / "auto-deploy-values.yaml").write_text(RECIPE_VALUES)
    code, _, err = _run(["helm", "extra-args", "--service-port", "5000"], capsys)
    assert code == 1
    assert err.splitlines() == [
        "gitlab-mci: error: .gitlab/auto-deploy-values.yaml (the values file auto-deploy passes) sets "
        "service.externalPort=8080, but gitlab-mci was asked for service.externalPort=5000 "
        "(--service-port / MCI_SERVICE_PORT); make them agree"]


def test_a_shared_deploy_values_file_with_clusterip_is_overridden_out_loud(
    project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """auto-deploy passes .gitlab/auto-deploy-values.yaml to every environment: ClusterIP there is for staging."""
    (project / ".gitlab").mkdir()
    (project / ".gitlab" / "auto-deploy-values.yaml").write_text("service:\n  type: ClusterIP\n")
    code, out, err = _run(["helm", "extra-args"], capsys)
    assert code == 0, err
    assert "overriding service.type=ClusterIP from .gitlab/auto-deploy-values.yaml" in err
    assert out.strip() == "--set service.type=NodePort --set service.nodePort=30999"
    # The same in a values file of this environment's HELM_UPGRADE_EXTRA_ARGS is a contradiction.
    (project / "prod.yaml").write_text("service:\n  type: ClusterIP\n")
    code, _, err = _run(["helm", "extra-args", "--extra-args", "--values prod.yaml"], capsys)
    assert code == 1 and "prod.yaml (`--values prod.yaml` in HELM_UPGRADE_EXTRA_ARGS) sets service.type=ClusterIP" in err


def test_a_stale_values_file_from_helm_values_is_refused(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert _run(["helm", "values", "--values-file", "mci.yaml"], capsys)[0] == 0  # 5000, before values.yaml existed
    (project / "values.yaml").write_text(RECIPE_VALUES)
    code, _, err = _run(["helm", "extra-args", "--values-file", "mci.yaml", "--extra-args", "--values values.yaml"],
                        capsys)
    assert code == 1
    assert "mci.yaml has service.externalPort=5000, but with these inputs it should have service.externalPort=8080" in err


def test_a_missing_user_values_file_is_one_line(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = _run(["helm", "extra-args", "--extra-args", "--values nowhere.yaml"], capsys)
    assert code == 1
    assert err.splitlines() == ["gitlab-mci: error: HELM_UPGRADE_EXTRA_ARGS: `--values nowhere.yaml`: no file "
                                "nowhere.yaml here (Helm would fail too); run gitlab-mci from the repository's root"]


def test_extra_args_with_user_values_are_idempotent(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (project / "values.yaml").write_text(RECIPE_VALUES)
    args = ["helm", "extra-args", "--values-file", "mci.yaml", "--disable-ingress"]
    assert _run(["helm", "values", "--values-file", "mci.yaml", "--disable-ingress", "--extra-args", "-f values.yaml"],
                capsys)[0] == 0
    code, once, err = _run([*args, "--extra-args", "-f values.yaml"], capsys)
    assert code == 0, err
    code, twice, err = _run([*args, "--extra-args", once.strip()], capsys)
    assert code == 0, err
    assert twice == once == "-f values.yaml --values mci.yaml --set service.type=NodePort " \
                            "--set service.nodePort=30999 --set ingress.enabled=false\n"


def test_output_option_is_a_format_not_a_file(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`-o FILE` used to write a file; -o is only ever an output format in gitlab-mci."""
    code, _, _ = _run(["helm", "values", "-o", "v.yaml"], capsys)
    assert code == 2 and not (project / "v.yaml").exists()
    for command in ("values", "extra-args"):
        code, out, _ = _run(["helm", command, "--help"], capsys)
        assert code == 0 and "--values-file FILE" in out and "--deploy-values-file FILE" in out


def test_values_written_into_auto_deploys_own_file_are_regenerated_but_never_silently_overridden(
    project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Some projects write `helm values` straight into .gitlab/auto-deploy-values.yaml, which the deploy passes."""
    deploy = project / ".gitlab" / "auto-deploy-values.yaml"
    code, _, err = _run(["helm", "values", "--values-file", str(deploy), "--node-port", "31000"], capsys)
    assert code == 0, err
    # Writing it again with another port: that file is ours here, so it is not read as the user's.
    code, _, err = _run(["helm", "values", "--values-file", ".gitlab/auto-deploy-values.yaml", "--node-port",
                         "31001"], capsys)
    assert code == 0, err
    assert yaml.safe_load(deploy.read_text())["service"]["nodePort"] == 31001
    # extra-args without that file as --values-file: the deploy will pass it, so its 31001 is the user's value.
    code, _, err = _run(["helm", "extra-args"], capsys)
    assert code == 1
    assert "gitlab-mci: error: .gitlab/auto-deploy-values.yaml (the values file auto-deploy passes) sets " \
           "service.nodePort=31001, but gitlab-mci pins node port 30999 unless told otherwise" in err


def test_a_hand_written_values_file_passed_as_ours_is_checked_only_for_what_it_says(
    project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (project / "nodeport.yaml").write_text("service:\n  type: NodePort\n  nodePort: 30999\n")
    code, out, err = _run(["helm", "extra-args", "--values-file", "nodeport.yaml"], capsys)
    assert code == 0, err
    assert out.strip() == "--values nodeport.yaml --set service.type=NodePort --set service.nodePort=30999"
    # A file from an earlier --disable-ingress run would still turn the Ingress off: refused.
    assert _run(["helm", "values", "--values-file", "mci.yaml", "--disable-ingress"], capsys)[0] == 0
    code, _, err = _run(["helm", "extra-args", "--values-file", "mci.yaml"], capsys)
    assert code == 1
    assert "mci.yaml has ingress.enabled=false, but with these inputs it should have no ingress.enabled" in err


def test_a_service_port_given_alone_moves_the_container_port_too_and_refuses_another_one_of_yours(
    project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The CI template's deploy hook cannot read your values files: with only the service_port input it sets the
    container port to the same (the chart's two 5000s move together). Your values putting the container elsewhere
    is a contradiction to name, not something to keep on one side and override on the other."""
    (project / "values.yaml").write_text("service:\n  internalPort: 8081\n")
    code, out, err = _run(["helm", "extra-args", "--service-port", "8080", "--extra-args", "--values values.yaml"],
                          capsys)
    assert code == 1 and out == ""
    assert err.splitlines() == [
        "gitlab-mci: error: values.yaml (`--values values.yaml` in HELM_UPGRADE_EXTRA_ARGS) sets service.internalPort=8081, "
        "but gitlab-mci was asked for service.internalPort=8080 (--service-port / MCI_SERVICE_PORT, no --internal-port "
        "/ MCI_INTERNAL_PORT given); pass --internal-port 8081 (MCI_INTERNAL_PORT=8081) to keep yours"]
    code, out, err = _run(["helm", "extra-args", "--service-port", "8080", "--internal-port", "8081",
                           "--extra-args", "--values values.yaml"], capsys)
    assert code == 0, err
    assert out.strip() == ("--values values.yaml --set service.type=NodePort --set service.nodePort=30999 "
                           "--set service.externalPort=8080 --set service.internalPort=8081")
    # Nothing asked: yours is kept, whatever the Service port.
    code, out, err = _run(["helm", "extra-args", "--extra-args", "--values values.yaml"], capsys)
    assert code == 0 and "keeping service.internalPort=8081 from values.yaml" in err
    assert out.strip() == "--values values.yaml --set service.type=NodePort --set service.nodePort=30999"


# ---------------------------------------------------------------------------------------------------------------------
# --backends neg: a ClusterIP Service annotated for container-native backends (issue 15)

NEG_JSON = '{"exposed_ports":{"5000":{"name":"gmci-neg-shop-5000"}}}'
# What the deploy hook appends: Helm reads `\.` in a --set key as a literal dot, and --set-json a JSON string.
NEG_WORDS = ("--set-json service.annotations.cloud\\.google\\.com/neg="
             '"{\\"exposed_ports\\":{\\"5000\\":{\\"name\\":\\"gmci-neg-shop-5000\\"}}}"')


def test_neg_values_render_a_clusterip_service_with_the_neg_annotation(
    project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = _run(["helm", "values", "--backends", "neg", "--lb", "shop"], capsys)
    assert code == 0, err
    assert yaml.safe_load(out) == {"service": {
        "type": "ClusterIP", "externalPort": 5000, "internalPort": 5000,
        "annotations": {"cloud.google.com/neg": NEG_JSON}}}


def test_neg_extra_args_annotate_the_service_and_leave_its_type_to_the_chart(
    project: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MCI_BACKENDS", "neg")
    monkeypatch.setenv("MCI_LB_NAME", "shop")
    code, out, err = _run(["helm", "extra-args", "--extra-args", "--atomic"], capsys)
    assert code == 0, err
    assert out.strip() == f"--atomic {NEG_WORDS}"
    code, again, err = _run(["helm", "extra-args", "--extra-args", out.strip()], capsys)
    assert (code, again) == (0, out), err
    service = values_for(out.strip())["service"]
    assert service["type"] == "ClusterIP" and "nodePort" not in service
    assert service["annotations"] == {"cloud.google.com/neg": NEG_JSON}


def test_neg_words_split_by_the_deploy_script_reach_helm_whole() -> None:
    """The hook's words survive the deploy script's unquoted expansion: no space, no comma Helm would split on."""
    out = subprocess.run(["sh", "-c", 'set -f; printf "%s\\n" $X'], env={"X": NEG_WORDS, "PATH": "/usr/bin:/bin"},
                         capture_output=True, text=True, check=True).stdout.splitlines()
    assert out == NEG_WORDS.split(" ") and "," not in NEG_WORDS


def test_a_users_own_service_annotations_in_values_yaml_are_kept(
    project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (project / "values.yaml").write_text('service:\n  annotations:\n    prometheus.io/scrape: "true"\n')
    code, out, err = _run(["helm", "extra-args", "--backends", "neg", "--lb", "shop", "--extra-args",
                           "-f values.yaml"], capsys)
    assert code == 0, err
    assert values_for(out.strip())["service"]["annotations"] == {
        "prometheus.io/scrape": "true", "cloud.google.com/neg": NEG_JSON}
    code, out, err = _run(["helm", "values", "--backends", "neg", "--lb", "shop", "--values-file", "mci.yaml",
                           "--extra-args", "-f values.yaml"], capsys)
    assert code == 0, err
    code, out, err = _run(["helm", "extra-args", "--backends", "neg", "--lb", "shop", "--values-file", "mci.yaml",
                           "--extra-args", "-f values.yaml"], capsys)
    assert code == 0, err
    assert values_for(out.strip())["service"]["annotations"] == {
        "prometheus.io/scrape": "true", "cloud.google.com/neg": NEG_JSON}


def test_a_users_neg_annotation_already_naming_ours_is_kept(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (project / ".gitlab").mkdir()
    (project / ".gitlab" / "auto-deploy-values.yaml").write_text(
        f"service:\n  annotations:\n    cloud.google.com/neg: '{NEG_JSON}'\n")
    code, out, err = _run(["helm", "extra-args", "--backends", "neg", "--lb", "shop"], capsys)
    assert code == 0, err
    assert out.strip() == ""
    assert "keeping service.annotations.cloud\\.google\\.com/neg from .gitlab/auto-deploy-values.yaml" in err


@pytest.mark.parametrize(
    ("annotation", "why"),
    [
        ('{"exposed_ports":{"5000":{"name":"theirs"}}}', "exposes port 5000 as NEG 'theirs'"),
        ('{"exposed_ports":{"9090":{}}}', "does not expose port 5000"),
        ('{"ingress": true}', "does not expose port 5000"),
        ("exposed_ports: 5000", "is not JSON"),
    ],
)
def test_a_users_neg_annotation_that_contradicts_ours_is_refused_naming_the_file(
    annotation: str, why: str, project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (project / "prod.yaml").write_text(yaml.safe_dump({"service": {"annotations": {"cloud.google.com/neg": annotation}}}))
    for command in ("values", "extra-args"):
        code, out, err = _run(["helm", command, "--backends", "neg", "--lb", "shop", "--extra-args",
                               "--values prod.yaml"], capsys)
        assert (code, out) == (1, "")
        assert len(err.splitlines()) == 1
        assert err.startswith("gitlab-mci: error: prod.yaml (`--values prod.yaml` in HELM_UPGRADE_EXTRA_ARGS) sets "
                              "service.annotations.cloud\\.google\\.com/neg, which " + why)
        assert "load balancer shop needs port 5000 exposed as gmci-neg-shop-5000" in err


def test_neg_takes_the_service_port_from_the_users_values(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (project / "values.yaml").write_text(RECIPE_VALUES.replace("  type: NodePort\n", ""))
    code, out, err = _run(["helm", "extra-args", "--backends", "neg", "--lb", "shop", "--extra-args",
                           "-f values.yaml"], capsys)
    assert code == 0, err
    assert out.strip().endswith(NEG_WORDS.replace("5000", "8080"))


def test_neg_without_a_load_balancer_name_is_one_line(project: Path, capsys: pytest.CaptureFixture[str],
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MCI_LB_NAME", raising=False)
    code, out, err = _run(["helm", "extra-args", "--backends", "neg"], capsys)
    assert (code, out) == (1, "")
    assert err.splitlines() == ["gitlab-mci: error: --backends neg needs the load balancer's name (--lb / "
                                "MCI_LB_NAME): the NEG is named after it"]


def test_switching_to_neg_keeps_a_node_port_the_user_still_asks_for(project: Path,
                                                                      capsys: pytest.CaptureFixture[str]) -> None:
    """The switch from instance groups (docs/ci-template.md): one pipeline keeps the NodePort while NEGs come up."""
    existing = "--set service.type=NodePort --set service.nodePort=30999"
    code, out, err = _run(["helm", "extra-args", "--backends", "neg", "--lb", "shop", "--extra-args", existing],
                          capsys)
    assert code == 0, err
    assert out.strip() == f"{existing} {NEG_WORDS}"
    assert "keeping service.type=NodePort from" in err
    service = values_for(out.strip())["service"]
    assert (service["type"], service["nodePort"]) == ("NodePort", 30999)
    assert service["annotations"] == {"cloud.google.com/neg": NEG_JSON}
