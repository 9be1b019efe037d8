"""README.md is true to the code: its walkthrough runs as written, its synopses name real commands and options.

Conventions of README.md's fenced code blocks (the info string after the opening fence says what a block is):

- ```sh    a command a reader types, in order, after the setup commands, with the venv activated
           (`. .venv/bin/activate`), all in one shell. These tests run every ```sh block of the README, in document
           order, as ONE bash script (`set -euo pipefail`) in a fresh temporary directory (the "scratch directory"
           the README tells the reader to use), with HOME in it, CI unset and nothing of this process's
           environment but PATH: a command that fails fails the test.
- ```bash  the fresh-machine setup (creating the venv, running the whole suite): not run here, since the venv is the
           one running these tests. Exactly one such block.
- ```text  a synopsis (`[--optional]`, `a|b`): not run, but every `gitlab-mci …` line must name a real command and
           only options that command has.
- ```yaml  examples of files; the simulator's world spec among them must be a valid spec.

The simulator the walkthrough starts is always stopped, also when a command fails.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import click
import yaml

from gitlab_mci.cli import cli as cli_main
from gitlab_mci.sim.spec import parse_spec

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
VENV = ROOT / ".venv"
_FENCE = re.compile(r"^```([^\n`]*)\n(.*?)^```[ \t]*$", re.MULTILINE | re.DOTALL)
STATE_DIR = Path(".gitlab-mci") / "sim"  # `gitlab-mci sim up`'s default state directory, relative to the cwd


def blocks(info: str | None = None) -> list[tuple[int, str, str]]:
    """Fenced code blocks of README.md as (line, info string, text), in document order."""
    text = README.read_text()
    found = [(text.count("\n", 0, m.start()) + 1, m.group(1).strip(), m.group(2)) for m in _FENCE.finditer(text)]
    return [b for b in found if info is None or b[1] == info]


def walkthrough() -> str:
    """The ```sh blocks as one script, each introduced by a comment naming its README line."""
    parts = [f"# README.md line {line}\n{text}" for line, _, text in blocks("sh")]
    return "\n".join(parts)


def test_every_code_block_says_what_it_is() -> None:
    infos = [(line, info) for line, info, _ in blocks()]
    unknown = [(line, info) for line, info in infos if info not in {"sh", "bash", "text", "yaml"}]
    assert not unknown, f"README code blocks must be ```sh (runs), ```bash (setup), ```text or ```yaml: {unknown}"
    assert [info for _, info in infos].count("bash") == 1, "exactly one ```bash block: the fresh-machine setup"
    (setup,) = [text for _, _, text in blocks("bash")]
    assert "python3 -m venv .venv" in setup and "bash .ci/run" in setup


def _command(words: list[str]) -> tuple[click.Command, list[str]]:
    """The click command a `gitlab-mci w1 w2 …` line names, and the words that name it."""
    cmd: click.Command = cli_main
    path: list[str] = []
    for word in words:
        if not isinstance(cmd, click.Group) or not re.fullmatch(r"[a-z][-a-z]*", word):
            break
        sub = cmd.get_command(click.Context(cmd), word)
        assert sub is not None, f"`gitlab-mci {' '.join([*path, word])}`: no such command"
        cmd, path = sub, [*path, word]
    return cmd, path


def _command_lines() -> list[tuple[int, str]]:
    """Every `gitlab-mci …` command in ```text, ```sh and ```yaml blocks (continuation lines joined, comments
    dropped)."""
    lines = []
    for start, _, text in blocks("text") + blocks("sh") + blocks("yaml"):
        joined = re.sub(r"\\\n", " ", text)
        for offset, line in enumerate(joined.splitlines()):
            line = re.sub(r"(^|\s)#.*$", "", line)
            for m in re.finditer(r"(?:^|[\s;(&|\"$])gitlab-mci\s+([^;&|)\"]*)", line):
                lines.append((start + 1 + offset, m.group(1)))
    return lines


def test_every_command_in_the_readme_exists_with_the_options_it_shows() -> None:
    lines = _command_lines()
    assert len(lines) > 40  # the walkthrough and the synopses
    for line, rest in lines:
        words = rest.split()
        cmd, path = _command(words)
        assert path, f"README.md:{line}: `gitlab-mci {rest}` names no command"
        assert not isinstance(cmd, click.Group), f"README.md:{line}: `gitlab-mci {' '.join(path)}` needs a subcommand"
        options = {o for p in cmd.params for o in [*p.opts, *p.secondary_opts]}
        shown = set(re.findall(r"(?<![\w-])(--?[a-zA-Z][-a-zA-Z]*)", rest))
        unknown = sorted(shown - options)
        assert not unknown, f"README.md:{line}: `gitlab-mci {' '.join(path)}` has no option(s) {unknown}"


def test_world_spec_example_is_a_valid_spec() -> None:
    (example,) = [text for _, _, text in blocks("yaml") if "operationLatency" in text]
    spec = parse_spec(yaml.safe_load(example), "README world spec")
    regional = [c for c in spec.clusters if c.location == c.region]
    assert regional and all(z.startswith(c.region + "-") for c in regional for z in c.zones)


def _stop(tmp_path: Path) -> None:
    """Stop a simulator the walkthrough left running (a failed command, a missing `sim down`)."""
    state = tmp_path / STATE_DIR / "state.json"
    if not state.exists():
        return
    subprocess.run([str(VENV / "bin" / "gitlab-mci"), "sim", "down", "--state-dir", str(state.parent)],
                   cwd=tmp_path, capture_output=True, timeout=30)
    if state.exists():  # `sim down` could not stop it: end the process the walkthrough started, by its id
        pid = int(json.loads(state.read_text())["pid"])
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def _readme_variables() -> set[str]:
    """The variables of the table under "Environment it sets" (the simulator's section)."""
    text = README.read_text().split("Environment it sets", 1)[1]
    table = text.split("\n\n", 2)[1]
    return set(re.findall(r"^\| `([A-Z_]+)` \|", table, re.MULTILINE))


def test_readme_walkthrough_runs_as_written_in_a_fresh_directory(tmp_path: Path) -> None:
    activate = VENV / "bin" / "activate"
    assert activate.exists(), f"{activate}: the walkthrough runs with the repository's venv (README command 1)"
    script = walkthrough()
    assert "gitlab-mci sim up --detach" in script and script.rstrip().endswith("gitlab-mci sim down")
    home = tmp_path / "home"
    home.mkdir()
    # A new terminal: PATH and a HOME of its own, none of the variables of the shell that runs the tests (CI,
    # KUBECONFIG, CLOUDSDK_CONFIG, GITLAB_MCI_*, MCI_*, HELM_*) — then the venv activated as the README says.
    env = {"PATH": os.environ["PATH"], "HOME": str(home), "LANG": "C.UTF-8", "TMPDIR": str(tmp_path)}
    preamble = f"set -euo pipefail\n. {activate}\nset -x\n"
    try:
        proc = subprocess.run(["bash", "-c", preamble + script], cwd=tmp_path, env=env, capture_output=True,
                              text=True, timeout=120, stdin=subprocess.DEVNULL)
    finally:
        _stop(tmp_path)
    report = f"exit {proc.returncode}\n--- stdout\n{proc.stdout[-6000:]}\n--- stderr (commands traced)\n" \
             f"{proc.stderr[-6000:]}"
    assert proc.returncode == 0, report
    # Traffic went through the load balancer to both clusters (each pod answers with JSON naming its cluster).
    answers = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith('{"cluster"')]
    assert {a["cluster"] for a in answers} == {"prod1", "prod2"}, report
    assert not (tmp_path / STATE_DIR / "state.json").exists(), "the walkthrough must end with the simulator stopped"
    # The README's table of what `sim env` sets is exactly what it sets.
    exported = set(re.findall(r"^export ([A-Z_]+)=", (tmp_path / STATE_DIR / "env.sh").read_text(), re.MULTILINE))
    assert exported == _readme_variables()


def test_a_failing_command_fails_the_walkthrough_and_the_simulator_is_stopped(tmp_path: Path) -> None:
    """The harness itself: a command that fails stops the script, and the simulator it started is stopped."""
    first = walkthrough().split("gitlab-mci sim up --detach", 1)[0] + "gitlab-mci sim up --detach\n"
    env = {"PATH": os.environ["PATH"], "HOME": str(tmp_path), "LANG": "C.UTF-8"}
    broken = 'eval "$(gitlab-mci sim env)"\nkubectl --context prod3 get nodes'  # there is no prod3
    script = f"set -euo pipefail\n. {VENV / 'bin' / 'activate'}\n{first}{broken}\necho never\n"
    try:
        proc = subprocess.run(["bash", "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True,
                              timeout=60, stdin=subprocess.DEVNULL)
        assert (tmp_path / STATE_DIR / "state.json").exists()
    finally:
        _stop(tmp_path)
    assert proc.returncode != 0 and "never" not in proc.stdout
    assert not (tmp_path / STATE_DIR / "state.json").exists()


if __name__ == "__main__":  # print the walkthrough script, e.g. to run it by hand
    sys.stdout.write(walkthrough())
