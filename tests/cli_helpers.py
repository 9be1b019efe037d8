"""Run the CLI in-process the way the console script does, and collect exit code, stdout and stderr."""

from __future__ import annotations

import pytest

from gitlab_mci.cli import main


def run_cli(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    try:
        main(args)
        code = 0
    except SystemExit as exc:
        code = int(exc.code or 0)
    out, err = capsys.readouterr()
    return code, out, err
