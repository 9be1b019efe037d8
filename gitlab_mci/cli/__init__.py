"""The ``gitlab-mci`` command line.

Sub-command groups live in their own modules and are imported only when invoked, so that ``gitlab-mci helm …`` and
``gitlab-mci nodeport …`` (run in every deploy job) never import the Google client libraries.
"""

from __future__ import annotations

import importlib
import inspect
import sys
from typing import Any

import click

from gitlab_mci import __version__
from gitlab_mci.errors import UserError

# command name -> (module whose `command` it is, imported on first use; the first sentence of its docstring, which
# the listing shows without importing it — tests/test_cli_grammar.py keeps the two equal).
_COMMANDS: dict[str, tuple[str, str]] = {
    "acceptance": ("gitlab_mci.cli.acceptance", "The user's journey on the simulator or a real project, and cleanup."),
    "sim": ("gitlab_mci.cli.sim", "Start, stop and inspect the local Google Cloud + GKE simulator."),
    "demo": ("gitlab_mci.cli.demo", "Everything end to end on the simulator: deploy, load balancer, failover."),
    "helm": ("gitlab_mci.cli.helm", "Helm values and HELM_UPGRADE_EXTRA_ARGS for Auto DevOps' auto-deploy-app chart."),
    "nodeport": ("gitlab_mci.cli.nodeport",
                 "Pin, verify or choose the node port of the app's Service across clusters."),
    "neg": ("gitlab_mci.cli.neg",
            "Expose the app's Service as network endpoint groups (container-native backends), or verify it."),
    "lb": ("gitlab_mci.cli.lb",
           "The self-managed global external HTTP(S) load balancer: plan, apply, status, destroy."),
    "gitlab": ("gitlab_mci.cli.gitlab",
               "CI/CD variables per environment, the teardown trigger and the deployment gate (python-gitlab)."),
    "auth": ("gitlab_mci.cli.auth",
             "Google credentials for jobs: GitLab OIDC to Workload Identity Federation, or a JSON key file."),
    "hosted": ("gitlab_mci.cli.hosted", "GKE-hosted Multi Cluster Ingress: plan, apply, status, delete."),
    "gateway": ("gitlab_mci.cli.gateway",
                "GKE multi-cluster Gateway: plan, apply, status, delete, and weights between clusters."),
    "fleet": ("gitlab_mci.cli.fleet", "The GKE fleet that hosted Multi Cluster Ingress needs: memberships and the "
                                      "multiclusteringress feature."),
    "ci-local": ("gitlab_mci.cli.cilocal", (
        "Prepare a project's checkout to run its pipeline with gitlab-ci-local against the running simulator.")),
}


def first_sentence(help_text: str | None) -> str:
    """The first sentence of a docstring's first paragraph: what a command listing shows, whole."""
    paragraph = inspect.cleandoc(help_text or "").split("\n\n", 1)[0].replace("\b", "")
    words = " ".join(paragraph.split())
    end = words.find(". ")
    return words if end < 0 else words[:end + 1]


def _whole_short_help(command: click.Command) -> click.Command:
    """Give ``command`` and every command below it its whole first sentence as the listing's short help.

    click cuts the listing's descriptions to fit 80 columns (`Create or update the load balancer so it…`); a
    listing is where people choose a command, so it shows the sentence whole and wraps it instead.
    """
    if command.short_help is None and command.help:
        command.short_help = first_sentence(command.help)
    if isinstance(command, click.Group):
        for sub in command.commands.values():
            _whole_short_help(sub)
    return command


class _LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted([*super().list_commands(ctx), *_COMMANDS])

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in _COMMANDS:
            module = importlib.import_module(_COMMANDS[cmd_name][0])
            return _whole_short_help(module.command)
        return super().get_command(ctx, cmd_name)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        # Help text for lazy commands comes from the table above, so `--help` imports nothing.
        rows = [(name, help_text) for name, (_, help_text) in sorted(_COMMANDS.items())]
        rows += [(name, cmd.get_short_help_str(limit=1000)) for name, cmd in sorted(self.commands.items())]
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(sorted(rows))


@click.group(cls=_LazyGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.version_option(__version__, prog_name="gitlab-mci")
def cli() -> None:
    """One global Google Cloud load balancer in front of the same Auto DevOps app on several GKE clusters.

    Every command runs against Google Cloud by default, or against the local simulator when
    GITLAB_MCI_COMPUTE_ENDPOINT and KUBECONFIG point at it (see `gitlab-mci sim up`).
    """


def main(argv: list[str] | None = None) -> Any:
    """Entry point of the console script: user errors become one line on stderr and a non-zero exit."""
    try:
        return cli.main(args=argv, prog_name="gitlab-mci", standalone_mode=False)
    except UserError as exc:
        click.echo(f"gitlab-mci: error: {exc}", err=True)
        sys.exit(exc.exit_code)
    except click.exceptions.Abort:
        click.echo("gitlab-mci: aborted", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)


if __name__ == "__main__":
    main()
