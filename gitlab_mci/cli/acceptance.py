"""``gitlab-mci acceptance``: the user's journey as a check, on the simulator or a real project, and its cleanup."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

import click

from gitlab_mci.cli.options import dry_run_option, state_dir_option
from gitlab_mci.errors import UserError

if TYPE_CHECKING:
    from gitlab_mci.acceptance.target import RunNames, Target

RUN_ID_HELP = ("Id of an acceptance run: every name the run gives carries it (acc-<id>…); `acceptance run` makes a "
               "new one when not given.")


@click.group()
def command() -> None:
    """The user's journey on the simulator or a real project, and cleanup.

    The target is the simulator running with --state-dir, or the real Google Cloud project that
    GITLAB_MCI_LIVE_PROJECT names (with GITLAB_MCI_LIVE_CONTEXTS and GITLAB_MCI_LIVE_CONFIRM=yes; see
    docs/acceptance.md).
    """


@command.command("run")
@state_dir_option
@click.option("--run-id", help=RUN_ID_HELP)
@dry_run_option
@click.option("--verbose", "-v", is_flag=True, help="Also show every command and its output.")
@click.option("--requests", "requests_", type=click.IntRange(10, 10000), default=40, show_default=True,
              help="Requests sent through the load balancer per check.")
def run_cmd(state_dir: Path, run_id: str | None, dry_run: bool, verbose: bool, requests_: int) -> None:
    """Deploy, pin, load-balance, send traffic, drain a cluster, tear down: every step checked.

    Prints what the run creates and roughly what it costs per hour first; refuses to start while an earlier run
    left resources (and names the cleanup command). Whatever the run created is deleted at its end, also when a
    step fails; if the process is killed, `gitlab-mci acceptance cleanup --run-id ID` removes it. Exit 1 when
    an expectation does not hold.
    """
    from gitlab_mci.acceptance import journey, target
    from gitlab_mci.acceptance.target import RunNames

    names = RunNames(target.check_run_id(run_id) if run_id else target.new_run_id())
    where = target.from_environment(state_dir)
    click.echo(target.plan_text(names, where))
    saved = journey.scrubbed_environment(where)
    try:
        if dry_run:
            journey.preflight(where)
            click.echo("dry run: nothing created")
            return
        target.require_confirmation(where, saved)
        _run(where, names, verbose=verbose, requests=requests_)
    finally:
        os.environ.clear()
        os.environ.update(saved)


def _run(where: Target, names: RunNames, *, verbose: bool, requests: int) -> None:
    from gitlab_mci.acceptance import journey

    story = journey.Journey(where, names, echo=click.echo, verbose=verbose, requests=requests)
    passed = False
    try:
        story.run()
        passed = True
    finally:
        if not passed:
            click.echo(f"==> cleanup of run {names.run_id} (the run did not finish)")
            left = journey.cleanup(where, names, echo=click.echo)
            if left:
                click.echo(f"gitlab-mci: warning: still there: {', '.join(left)}; run `gitlab-mci acceptance "
                           f"cleanup --run-id {names.run_id}`", err=True)
    click.echo(f"acceptance run {names.run_id} passed against the {where.where}")


@command.command("cleanup")
@state_dir_option
@click.option("--run-id", required=True, help=RUN_ID_HELP)
def cleanup_cmd(state_dir: Path, run_id: str) -> None:
    """Delete everything of one acceptance run, e.g. after it was killed: only what carries its id and marker.

    The load balancer through `lb destroy --release-ip`, the hosted MultiClusterIngress through `hosted delete`,
    then the run's namespaces (with the release in them). Needs no confirmation on a real project: it deletes
    nothing a run did not create. Exit 1 when something of the run is still there afterwards.
    """
    from gitlab_mci.acceptance import journey, target
    from gitlab_mci.acceptance.target import RunNames

    names = RunNames(target.check_run_id(run_id))
    where = target.from_environment(state_dir)
    saved = journey.scrubbed_environment(where)
    try:
        left = journey.cleanup(where, names, echo=click.echo)
    finally:
        os.environ.clear()
        os.environ.update(saved)
    if left:
        raise UserError(f"run {run_id} still has: {', '.join(left)}")
    click.echo(f"nothing of run {run_id} is left in the {where.where}")
