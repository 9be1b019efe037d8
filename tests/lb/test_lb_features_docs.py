"""Issue 14's acceptance: a table in docs/features.md with each option, our flag, variable and YAML key, and a
comparison of self-managed / hosted / Terraform lb-http / GKE BackendConfig. The flags and variables it names are the
ones `lb apply` and `hosted apply` take, and the YAML keys the ones --features-file accepts."""

from __future__ import annotations

import json
import re
from pathlib import Path

import click

from gitlab_mci.cli.hosted import command as hosted_group
from gitlab_mci.cli.lb import command as lb_group

ROOT = Path(__file__).resolve().parents[2]
DOC = (ROOT / "docs" / "features.md").read_text()
SCHEMA = json.loads((ROOT / "gitlab_mci" / "features" / "schema.json").read_text())
# The options issue 14 lists, as the docs name their rows.
ISSUE_OPTIONS = ("Cloud Armor", "Cloud CDN", "IAP", "Logging", "Session affinity", "Connection draining",
                 "Custom headers", "SSL policy", "IPv6", "QUIC", "Certificate map", "Backend protocol",
                 "Outlier detection")


def table(header_start: str) -> list[list[str]]:
    """The rows of the Markdown table whose header starts with ``header_start``."""
    lines = DOC.splitlines()
    at = next(i for i, line in enumerate(lines) if line.startswith(header_start))
    rows = []
    for line in lines[at + 2:]:
        if not line.startswith("|"):
            break
        rows.append([cell.strip() for cell in re.split(r"(?<!\\)\|", line.strip())[1:-1]])
    return rows


def options_of(group: click.Group, name: str) -> dict[str, str | None]:
    """Each long option of ``group name`` and its environment variable."""
    cmd = group.commands[name]
    out: dict[str, str | None] = {}
    for param in cmd.params:
        if isinstance(param, click.Option):
            for flag in [*param.opts, *param.secondary_opts]:
                out[flag] = param.envvar if isinstance(param.envvar, str) else None
    return out


def test_every_flag_variable_and_yaml_key_in_the_options_table_is_one_lb_apply_takes() -> None:
    rows = table("| option | flag | variable |")
    assert len(rows) >= 17
    lb_apply = options_of(lb_group, "apply")
    hosted_apply = options_of(hosted_group, "apply")
    for option, flags, variables, keys, *_ in rows:
        named = re.findall(r"--[a-z0-9-]+", flags)
        assert named, option
        for flag in named:
            assert flag in lb_apply and flag in hosted_apply, (option, flag)
        envs = {lb_apply[flag] for flag in named}
        for variable in re.findall(r"MCI_[A-Z0-9_]+", variables):
            assert variable in envs, (option, variable, envs)
        for key in re.findall(r"`([a-zA-Z0-9]+)[.`]", keys):
            assert key in SCHEMA["properties"], (option, key)


def test_the_comparison_table_covers_every_option_of_the_issue_in_the_four_columns() -> None:
    rows = {row[0]: row for row in table("| option | self-managed (`lb`) | hosted (`hosted`) |")}
    for option in ISSUE_OPTIONS:
        row = next((r for name, r in rows.items() if name.startswith(option)), None)
        assert row is not None, option
        assert len(row) == 5 and all(row[1:]), row
