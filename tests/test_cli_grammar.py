"""Every command follows the one command-line grammar that docs/cli.md writes down.

A user who learned one command should be able to guess the next: `-o` is always the output format, a file option
always takes a FILE, `--context` or `--wait` means the same wherever it appears, and the help says so in the same
words. The tests walk the whole command tree (lazy groups included), so a new command is held to the grammar the
day it is added.
"""

from __future__ import annotations

import re
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from gitlab_mci.cli import _COMMANDS, cli, first_sentence
from tests.cli_helpers import run_cli

DOC = Path(__file__).resolve().parents[1] / "docs" / "cli.md"

# Occurrences of a shared option that mean something else, by (option, command or group); the reason is the
# variant's name: occurrences with the same reason must agree with each other. Keep it short: a new entry needs
# a meaning no shared definition in gitlab_mci/cli/options.py can say truthfully, and a line in docs/cli.md.
VARIANTS: dict[tuple[str, str], str] = {
    ("--context", "nodeport pin"): "one cluster: a deploy job's KUBE_CONTEXT",
    ("--context", "sim deploy"): "one cluster: a deploy job's KUBE_CONTEXT",
    ("--context", "neg expose"): "one cluster: a deploy job's KUBE_CONTEXT",
    ("--context", "hosted"): "fleet clusters: CONTEXT=LOCATION/NAME",
    ("--context", "fleet"): "fleet clusters: CONTEXT=LOCATION/NAME",
    ("--context", "gateway"): "fleet clusters: CONTEXT=LOCATION/NAME",
    ("--project", "gitlab"): "the GitLab project (gitlab commands take no Google Cloud project)",
    ("--key-file", "auth"): "a credentials JSON, not a TLS private key",
    ("--dotenv", "auth"): "appends credential variables to a report other commands also write",
    ("--health-check-path", "hosted"): "GKE's default path, not the readiness probe's",
    ("--health-check-path", "gateway"): "GKE's default path, through a HealthCheckPolicy",
    ("--port", "nodeport"): "the Service port to pin; default: the port named web",
    ("--service", "nodeport"): "the Service to pin, instead of the release's",
    ("--port", "neg"): "the Service port to pin; default: the port named web",
    ("--service", "neg"): "the Service to pin, instead of the release's",
    ("--dotenv", "neg expose"): "appends the NEG name and zones to the job's dotenv report",
    ("--lb", "helm"): "optional: only --backends neg needs it, to name the NEG",
    ("--service", "sim fault add"): "the simulated API a fault matches",
    ("--node-port", "nodeport pin"): "also `auto`: one port free in every cluster of --auto-contexts",
    ("--node-port", "nodeport verify"): "also `auto`: any port, as long as it is the same in every cluster",
    ("--ingress", "nodeport verify"): "the Ingress whose every backend Service is checked (must exist)",
    ("--context", "ci-local"): "ENV=CONTEXT: the simulated cluster written for each production environment",
    ("--namespace", "ci-local"): "the KUBE_NAMESPACE written for the production environments",
    ("--mode", "gitlab teardown"): "how to tear down: inputs, job or stop",
    ("--mode", "sim heal"): "which failure to undo",
}
# `auth gitlab-oidc --format dotenv|export` is the shell syntax of what `eval` reads, not a report's rendering.
FORMAT_OPTION_ALLOWED = {"auth gitlab-oidc"}
# A short option means one long option everywhere; `sim deploy -f` is Helm's own spelling of --values.
SHORT_VARIANTS = {("-f", "sim deploy")}
# Options that name a file or directory although their name does not end in -file/-dir.
PATH_OPTIONS = {"--ingress", "--kubeconfig", "--dotenv", "--file", "--spec", "--values"}


def _tree() -> list[tuple[str, click.Command]]:
    """(path, command) for the root, every group and every command, resolving lazy groups as a user's call does."""
    found: list[tuple[str, click.Command]] = []

    def visit(command: click.Command, path: list[str], ctx: click.Context) -> None:
        found.append((" ".join(path), command))
        if isinstance(command, click.Group):
            for name in command.list_commands(ctx):
                sub = command.get_command(ctx, name)
                assert sub is not None, f"{' '.join([*path, name])} is listed but cannot be loaded"
                visit(sub, [*path, name], click.Context(sub, info_name=name, parent=ctx))

    visit(cli, [], click.Context(cli, info_name="gitlab-mci"))
    return found


TREE = _tree()
LEAVES = [(path, cmd) for path, cmd in TREE if not isinstance(cmd, click.Group)]
GROUPS = [(path, cmd) for path, cmd in TREE if isinstance(cmd, click.Group)]


def _options(command: click.Command) -> list[click.Option]:
    return [p for p in command.params if isinstance(p, click.Option) and p.name != "help"]


def _long(option: click.Option) -> str:
    return next(o for o in option.opts if o.startswith("--"))


def _variant(option: str, path: str) -> str:
    for (name, prefix), reason in VARIANTS.items():
        if name == option and (path == prefix or path.startswith(prefix + " ")):
            return reason
    return ""


def _signature(option: click.Option) -> tuple[object, ...]:
    """What must agree between two occurrences of a shared option, besides the help text."""
    t = option.type
    sig: list[object] = [sorted(option.opts + option.secondary_opts), type(t).__name__, option.multiple,
                         option.is_flag, option.envvar]
    if isinstance(t, click.Choice) and _long(option) != "--output":  # each command offers the formats it has
        sig.append(tuple(t.choices))
    if isinstance(t, click.Path):
        sig += [t.file_okay, t.dir_okay, t.type, t.exists]
    if isinstance(t, click.FloatRange | click.IntRange):
        sig += [t.min, t.max]
    return tuple(sig)


def _collapsed(text: str) -> str:
    """Help text with click's line wrapping undone (it also breaks after hyphens)."""
    return " ".join(re.sub(r"-\n\s+", "-", text).split())


@pytest.mark.parametrize("path", [p for p, _ in TREE], ids=lambda p: p or "gitlab-mci")
def test_every_command_and_group_answers_help(path: str) -> None:
    for flag in ("--help", "-h"):
        result = CliRunner().invoke(cli, [*path.split(), flag], prog_name="gitlab-mci")
        assert result.exit_code == 0, result.output
        assert result.output.startswith(f"Usage: gitlab-mci {path}".rstrip()), result.output


@pytest.mark.parametrize("path", [p for p, _ in TREE], ids=lambda p: p or "gitlab-mci")
def test_every_command_and_group_says_what_it_does(path: str) -> None:
    command = dict(TREE)[path]
    assert command.help and first_sentence(command.help).endswith("."), f"{path}: no docstring, or no sentence"


def test_o_only_ever_means_the_output_format_text_by_default() -> None:
    bad = []
    for path, command in LEAVES:
        for option in _options(command):
            if "-o" not in option.opts and "--output" not in option.opts:
                continue
            choices = list(option.type.choices) if isinstance(option.type, click.Choice) else None
            if (sorted(option.opts) != ["--output", "-o"] or choices is None or choices[0] != "text"
                    or not set(choices) <= {"text", "json", "markdown"} or option.default != "text"):
                bad.append(f"{path}: {'/'.join(option.opts)} {option.type!r} default {option.default!r}")
    assert not bad, "-o/--output must be a Choice of text|json|markdown, text first and default:\n" + "\n".join(bad)


def test_no_format_option_but_the_documented_one() -> None:
    found = {path for path, command in LEAVES for option in _options(command) if "--format" in option.opts}
    assert found == FORMAT_OPTION_ALLOWED
    doc = DOC.read_text()
    assert all(f"`gitlab-mci {path} --format" in doc for path in FORMAT_OPTION_ALLOWED)


def test_file_and_directory_options_are_paths() -> None:
    bad = []
    for path, command in LEAVES:
        for option in _options(command):
            name = _long(option)
            if option.is_flag or option.count:
                continue
            file_ish = (name.endswith(("-file", "-dir")) or name in PATH_OPTIONS or name == "--dir"
                        or re.search(r"\bfiles?\b", option.help or "") is not None)
            if not file_ish:
                continue
            t = option.type
            directory = name.endswith("-dir") or name == "--dir"
            if not (isinstance(t, click.Path) and t.type is Path and (t.file_okay != directory)
                    and (t.dir_okay == directory)):
                bad.append(f"{path} {name}: {t!r}")
    assert not bad, "file options are click.Path(dir_okay=False, path_type=Path), directories file_okay=False:\n" \
        + "\n".join(bad)


def test_options_shared_by_commands_read_the_same_everywhere() -> None:
    seen: dict[tuple[str, str], tuple[str, tuple[object, ...], str]] = {}
    bad = []
    for path, command in LEAVES:
        for option in _options(command):
            key = (_long(option), _variant(_long(option), path))
            mine = (path, _signature(option), option.help or "")
            first = seen.setdefault(key, mine)
            if first[1:] != mine[1:]:
                bad.append(f"{key[0]}: `{first[0]}` and `{path}` differ:\n    {first[2]!r} {first[1]}\n"
                           f"    {mine[2]!r} {mine[1]}")
    assert not bad, "\n".join(bad)


def test_the_variants_table_names_only_options_that_exist() -> None:
    """A stale exception would excuse the next real difference."""
    for option, prefix in VARIANTS:
        assert any(_long(o) == option for path, c in LEAVES if path == prefix or path.startswith(prefix + " ")
                   for o in _options(c)), (option, prefix)


def test_a_short_option_means_one_long_option() -> None:
    meaning: dict[str, set[str]] = {}
    for path, command in LEAVES:
        for option in _options(command):
            for short in (o for o in option.opts if not o.startswith("--")):
                if (short, path) not in SHORT_VARIANTS:
                    meaning.setdefault(short, set()).add(_long(option))
    assert {s: longs for s, longs in meaning.items() if len(longs) > 1} == {}


# Variables that two option names read, each for a reason no single name could say.
SHARED_VARIABLES = {
    # The Service's port: helm sets it in the chart (--service-port, beside --node-port and --internal-port),
    # lb and hosted route to it (--port, beside --service).
    "MCI_SERVICE_PORT": ["--port", "--service-port"],
    # `nodeport pin` takes its own cluster as --context (KUBE_CONTEXT); the others of `auto` come from MCI_CONTEXTS.
    "MCI_CONTEXTS": ["--auto-contexts", "--context"],
}


def test_a_variable_backs_one_option_name() -> None:
    """`auth gitlab-oidc --gcp-project` and `lb --project` both read GOOGLE_CLOUD_PROJECT: one thing, two names."""
    names: dict[str, set[str]] = {}
    for _path, command in LEAVES:
        for option in _options(command):
            envvars = [option.envvar] if isinstance(option.envvar, str) else list(option.envvar or [])
            for envvar in envvars:
                names.setdefault(envvar, set()).add(_long(option))
    assert {v: sorted(n) for v, n in names.items() if len(n) > 1} == SHARED_VARIABLES


def test_options_backed_by_a_variable_name_it_at_the_end_of_their_help() -> None:
    bad = []
    for path, command in LEAVES:
        for option in _options(command):
            help_text = option.help or ""
            if "[default:" in help_text:  # click prints its own [default: …]; ours reads the same and misleads
                bad.append(f"{path} {_long(option)}: says [default: …] in its help; write (default: …)")
            if not option.envvar:
                continue
            names = [option.envvar] if isinstance(option.envvar, str) else list(option.envvar)
            tail = re.search(r"\[env: ([^\]]+)\]\.?$", help_text)
            if tail is None or re.findall(r"[A-Z][A-Z0-9_]+", tail.group(1)) != names:
                bad.append(f"{path} {_long(option)}: help must end with [env: {', else '.join(names)}]")
    assert not bad, "\n".join(bad)


def test_the_top_listing_shows_each_groups_own_first_sentence() -> None:
    """The root listing comes from a table (so `--help` imports nothing); it must say what the group says."""
    groups = dict(TREE)
    assert {name: text for name, (_, text) in _COMMANDS.items()} == {
        name: first_sentence(groups[name].help) for name in _COMMANDS}


@pytest.mark.parametrize("path", [p for p, _ in GROUPS], ids=lambda p: p or "gitlab-mci")
def test_a_group_listing_shows_every_description_whole(path: str) -> None:
    """`lb --help` used to cut `apply` to "Create or update the load balancer so it matches the inputs;...";
    the listing is where people choose a command."""
    listing = _collapsed(CliRunner().invoke(cli, [*path.split(), "--help"], prog_name="gitlab-mci").output)
    group = dict(TREE)[path]
    assert isinstance(group, click.Group)
    for name in group.list_commands(click.Context(group)):
        sub = dict(TREE)[f"{path} {name}".strip()]
        assert first_sentence(sub.help) in listing, f"`gitlab-mci {path} --help` cuts `{name}`"
    assert re.search(r"\w\.\.\.", listing) is None, "click's cut mark"  # not the `[ARGS]...` of the Usage line


def _documented() -> dict[str, str]:
    """`gitlab-mci …` command -> its -o formats, from the command table of docs/cli.md."""
    rows = re.findall(r"^\| `gitlab-mci ([a-z][a-z -]*)` \| ([^|]*) \|", DOC.read_text(), re.MULTILINE)
    return {path.strip(): formats.strip() for path, formats in rows}


def test_docs_list_every_command_and_only_commands_that_exist() -> None:
    documented = _documented()
    assert sorted(documented) == sorted(path for path, _ in LEAVES)


def test_docs_give_each_command_the_output_formats_it_has() -> None:
    documented = _documented()
    for path, command in LEAVES:
        output = next((o for o in _options(command) if "--output" in o.opts), None)
        has = ", ".join(output.type.choices) if output is not None and isinstance(output.type, click.Choice) else "—"
        assert documented.get(path) == has, f"docs/cli.md: `gitlab-mci {path}` has -o {has}"


def test_the_old_lb_status_format_spelling_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run_cli(["lb", "status", "--lb", "shop", "--format", "json"], capsys)
    assert code == 2 and "No such option '--format'" in err
    code, _, err = run_cli(["hosted", "status", "--lb", "shop", "--format", "json"], capsys)
    assert code == 2 and "No such option '--format'" in err
    code, _, err = run_cli(["lb", "status", "--lb", "shop", "-o", "yaml"], capsys)
    assert code == 2 and "'yaml' is not one of 'text', 'json', 'markdown'" in err


def test_bad_input_is_one_line_on_stderr_and_exit_1(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run_cli(["auth", "check", "--key-file", str(tmp_path / "missing.json")], capsys)
    assert code == 1 and out == ""
    assert err.startswith("gitlab-mci: error: ") and err.count("\n") == 1


def test_ctrl_c_exits_130_with_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    import gitlab_mci.auth

    def interrupted(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(gitlab_mci.auth, "inspect_key_file", interrupted)
    key = tmp_path / "key.json"
    key.write_text("{}")
    code, _, err = run_cli(["auth", "check", "--key-file", str(key)], capsys)
    assert code == 130
    assert err.strip().splitlines()[-1] == "gitlab-mci: aborted"
