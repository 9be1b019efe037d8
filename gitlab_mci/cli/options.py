"""Options several commands share, defined once so their names, types, variables and help read the same everywhere.

docs/cli.md writes the grammar down; tests/test_cli_grammar.py walks every command and holds them to it. What is
particular to one command (what it waits for, which clusters it defaults to) belongs in its docstring, not in a
variant of a shared option's help.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import click

Decorator = Callable[[Any], Any]

# Every file option: a path the command reads or writes, never a directory; commands get a pathlib.Path.
FILE = click.Path(dir_okay=False, path_type=Path)

FORMATS = ("text", "json", "markdown")


def stack(decorators: Sequence[Decorator]) -> Decorator:
    """Apply ``decorators`` so that they appear in ``--help`` in the order given."""

    def apply(f: Any) -> Any:
        for d in reversed(decorators):
            f = d(f)
        return f

    return apply


def output_option(formats: Sequence[str], dest: str = "output") -> Decorator:
    """``-o/--output``: only ever the output format, ``text`` (for people) first and the default."""
    if not formats or formats[0] != "text" or not set(formats) <= set(FORMATS):
        raise ValueError(f"output formats must start with text and be among {FORMATS}: {formats}")
    return click.option("--output", "-o", dest, type=click.Choice(list(formats)), default="text", show_default=True,
                        help="Output format.")


# Where: which load balancer, clusters, namespace, project.
lb_option = click.option(
    "--lb", "lb_name", envvar="MCI_LB_NAME", required=True,
    help="Load balancer name; what gitlab-mci creates for it is named after it [env: MCI_LB_NAME].")
contexts_option = click.option(
    "--context", "contexts", multiple=True, envvar="MCI_CONTEXTS",
    help="Kubeconfig context of a cluster; repeat or comma-separate for several [env: MCI_CONTEXTS].")
# The fleet's commands also take the GKE cluster behind a context, for contexts whose name does not say it.
fleet_contexts_option = click.option(
    "--context", "contexts", multiple=True, envvar="MCI_CONTEXTS",
    help="Kubeconfig context of a cluster, as CONTEXT or CONTEXT=LOCATION/NAME (its GKE cluster); repeat or "
         "comma-separate for several [env: MCI_CONTEXTS].")
# A deploy job's one cluster: GitLab sets KUBE_CONTEXT per environment.
context_option = click.option(
    "--context", envvar="KUBE_CONTEXT", default=None,
    help="Kubeconfig context of this environment's cluster [env: KUBE_CONTEXT].")
config_context_option = click.option(
    "--config-context", envvar="MCI_CONFIG_CONTEXT",
    help="Context of the fleet's config cluster, which holds the Multi Cluster Ingress objects (default: the first "
         "--context) [env: MCI_CONFIG_CONTEXT].")
namespace_option = click.option(
    "--namespace", "-n", envvar="KUBE_NAMESPACE", default="default", show_default=True,
    help="Namespace of the app [env: KUBE_NAMESPACE].")
project_option = click.option(
    "--project", envvar="GOOGLE_CLOUD_PROJECT", help="Google Cloud project [env: GOOGLE_CLOUD_PROJECT].")
kubeconfig_option = click.option(
    "--kubeconfig", type=FILE, default=None, help="Kubeconfig file (default: KUBECONFIG, else ~/.kube/config).")
release_option = click.option(
    "--release", envvar=["HELM_RELEASE_NAME", "CI_ENVIRONMENT_SLUG"], default=None,
    help="Helm release; the Service is <release>-auto-deploy [env: HELM_RELEASE_NAME, else CI_ENVIRONMENT_SLUG].")
extra_args_option = click.option(
    "--extra-args", envvar="HELM_UPGRADE_EXTRA_ARGS", default="", show_default=False, metavar="ARGS",
    help="Helm arguments as the deploy job has them: what their --values/-f and --set flags set is read "
         "[env: HELM_UPGRADE_EXTRA_ARGS].")
# The simulator's files; `sim env` exports the variable so later commands find the same simulator.
DEFAULT_STATE_DIR = ".gitlab-mci/sim"
STATE_DIR_ENV = "GITLAB_MCI_SIM_DIR"
state_dir_option = click.option(
    "--state-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=DEFAULT_STATE_DIR,
    show_default=True,
    envvar=STATE_DIR_ENV,
    help="The simulator's state directory: its kubeconfig, env files, gcloud configuration, log and state.json; "
         "`sim env` exports it [env: GITLAB_MCI_SIM_DIR].",
)


# What to build.
static_ip_option = click.option(
    "--static-ip", envvar="MCI_STATIC_IP",
    help="Name of the global address for the VIP; an existing one is used as it is and never deleted "
         "[env: MCI_STATIC_IP].")
ssl_certificate_option = click.option(
    "--ssl-certificate", "ssl_certificates", multiple=True, envvar="MCI_SSL_CERTIFICATES",
    help="Name of an existing (pre-shared) SSL certificate in the project; repeat or comma-separate, up to 15; "
         "never changed or deleted [env: MCI_SSL_CERTIFICATES].")
https_redirect_option = click.option(
    "--https-redirect", is_flag=True, envvar="MCI_HTTPS_REDIRECT",
    help="Answer HTTP with a 301 redirect to HTTPS; needs a certificate [env: MCI_HTTPS_REDIRECT].")
weight_option = click.option(
    "--weight", "weights", multiple=True, envvar="MCI_WEIGHTS", metavar="CLUSTER=WEIGHT",
    help="Relative share of new requests for a --context cluster, a number > 0 (default: what Compute records, "
         "else 1); repeat or comma-separate [env: MCI_WEIGHTS].")
backends_option = click.option(
    "--backends", type=click.Choice(["instance-groups", "neg"]), envvar="MCI_BACKENDS", default="instance-groups",
    show_default=True,
    help="What the load balancer sends requests to: the nodes' instance groups (through a node port), or zonal "
         "network endpoint groups of the pods (neg: container-native, needs VPC-native clusters) "
         "[env: MCI_BACKENDS].")
adopt_option = click.option(
    "--adopt", is_flag=True, help="Take over same-named resources gitlab-mci did not create.")

# The routing of both modes: an Ingress file, or one Service and port.
routing = stack([
    click.option("--ingress", type=FILE, envvar="MCI_INGRESS_FILE",
                 help="Ingress or MultiClusterIngress manifest with the routing [env: MCI_INGRESS_FILE]."),
    click.option("--service", envvar="MCI_SERVICE",
                 help="Instead of --ingress: the one backend Service [env: MCI_SERVICE]."),
    click.option("--port", envvar="MCI_SERVICE_PORT", default="5000", show_default=True,
                 help="With --service: its port, number or name [env: MCI_SERVICE_PORT]."),
])

# How the command ends.
detailed_exitcode_option = click.option(
    "--detailed-exitcode", is_flag=True, help="Exit 2 when there are changes, 0 when there are none.")
dry_run_option = click.option("--dry-run", is_flag=True, help="Show what would change; change nothing.")
dotenv_option = click.option(
    "--dotenv", type=FILE,
    help="Write MCI_VIP and MCI_URL to this dotenv file (for GitLab's artifacts:reports:dotenv).")
wait_option = click.option(
    "--wait", type=click.FloatRange(min=0), default=0.0, show_default=True, metavar="SECONDS",
    help="Wait up to this long for the state the command describes as healthy; exit 3 if it is not by then.")
release_ip_option = click.option(
    "--release-ip", is_flag=True,
    help="Delete the global address gitlab-mci reserved for this load balancer once nothing uses it (kept by "
         "default: DNS points at it; a --static-ip you reserved is never deleted).")
no_wait_option = click.option("--no-wait", is_flag=True, help="Return without waiting for the outcome.")


def timeout_option(default: float) -> Decorator:
    """``--timeout SECONDS``: the limit of a wait the command does by default (what it waits for: its docstring).

    No environment variable: variables carry what a pipeline sets once for many commands (where, what), not the
    tuning of one call, which would otherwise leak into every wait of the job.
    """
    return click.option("--timeout", type=click.FloatRange(min=0), default=default, show_default=True,
                        metavar="SECONDS", help="Seconds to wait at most.")
