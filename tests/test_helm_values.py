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
        (["helm", "extra-args", "--existing", "--set"], "HELM_UPGRADE_EXTRA_ARGS: --set at the end has no value"),
    ],
)
def test_cli_errors_are_one_line(args: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(args)
    assert info.value.code == 1
    assert capsys.readouterr().err.splitlines() == [f"gitlab-mci: error: {message}"]


def test_values_to_a_file(tmp_path: Path) -> None:
    out = tmp_path / "sub" / "v.yaml"
    main(["helm", "values", "-o", str(out), "--node-port", "30100"])
    assert yaml.safe_load(out.read_text())["service"]["nodePort"] == 30100


def test_helm_commands_import_no_google_module() -> None:
    code = ("import sys; from gitlab_mci.cli import main\n"
            "main(['helm', 'extra-args', '--existing', '--atomic'])\n"
            "main(['helm', 'values'])\n"
            "print('GOOGLE', sorted(m for m in sys.modules if m.startswith('google')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "GOOGLE []" in out
