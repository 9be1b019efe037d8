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


def fleet_where(f: Any) -> Any:
    """Options every hosted and gateway command takes: which load balancer, in which clusters, config cluster and
    namespace."""
    return stack([lb_option, fleet_contexts_option, config_context_option, namespace_option, project_option,
                  kubeconfig_option])(f)


# The backend timeout: lb's backend services; gateway's GCPBackendPolicy (rendered only when not GKE's 30 s).
timeout_sec_option = click.option("--timeout-sec", type=int, default=30, show_default=True,
                                  help="Backend timeout in seconds.")


# Production load balancer options (docs/features.md): the same flags on lb and hosted plan/apply.
class _Headers(click.ParamType):  # type: ignore[type-arg]
    """NAME:VALUE; from the variable, one per line (values have spaces and commas)."""

    name = "NAME:VALUE"
    envvar_list_splitter = "\n"

    def convert(self, value: Any, param: Any, ctx: Any) -> str:
        return str(value)


features_file_option = click.option(
    "--features-file", type=FILE, envvar="MCI_FEATURES_FILE",
    help="YAML file of production options (docs/features.md) [env: MCI_FEATURES_FILE].")
FEATURE_OPTIONS: list[Decorator] = [
    features_file_option,
    click.option("--security-policy", metavar="NAME", envvar="MCI_SECURITY_POLICY",
                 help="Existing Cloud Armor security policy for the backend services [env: MCI_SECURITY_POLICY]."),
    click.option("--edge-security-policy", metavar="NAME", envvar="MCI_EDGE_SECURITY_POLICY",
                 help="Existing Cloud Armor edge security policy [env: MCI_EDGE_SECURITY_POLICY]."),
    click.option("--logging/--no-logging", "logging", default=None, envvar="MCI_LOGGING",
                 help="Request logging on the backend services [env: MCI_LOGGING]."),
    click.option("--log-sample-rate", type=float, metavar="RATE", envvar="MCI_LOG_SAMPLE_RATE",
                 help="Share of requests logged, 0.0 to 1.0; turns logging on [env: MCI_LOG_SAMPLE_RATE]."),
    click.option("--session-affinity", envvar="MCI_SESSION_AFFINITY",
                 type=click.Choice(["NONE", "CLIENT_IP", "GENERATED_COOKIE", "HEADER_FIELD", "HTTP_COOKIE"]),
                 help="Session affinity; HEADER_FIELD and HTTP_COOKIE need EXTERNAL_MANAGED "
                      "[env: MCI_SESSION_AFFINITY]."),
    click.option("--affinity-cookie-ttl-sec", type=int, metavar="SECONDS", envvar="MCI_AFFINITY_COOKIE_TTL_SEC",
                 help="Lifetime of the affinity cookie [env: MCI_AFFINITY_COOKIE_TTL_SEC]."),
    click.option("--affinity-header", metavar="NAME", envvar="MCI_AFFINITY_HEADER",
                 help="With --session-affinity HEADER_FIELD: the header hashed [env: MCI_AFFINITY_HEADER]."),
    click.option("--affinity-cookie", metavar="NAME", envvar="MCI_AFFINITY_COOKIE",
                 help="With --session-affinity HTTP_COOKIE: the cookie hashed [env: MCI_AFFINITY_COOKIE]."),
    click.option("--draining-timeout-sec", type=int, metavar="SECONDS", envvar="MCI_DRAINING_TIMEOUT_SEC",
                 help="Connection draining timeout of the backend services [env: MCI_DRAINING_TIMEOUT_SEC]."),
    click.option("--request-header", "request_headers", multiple=True, type=_Headers(),
                 envvar="MCI_REQUEST_HEADERS",
                 help="Header the load balancer adds to requests, NAME:VALUE (Google's variables like "
                      "{client_region} allowed); repeat; one per line in the variable [env: MCI_REQUEST_HEADERS]."),
    click.option("--response-header", "response_headers", multiple=True, type=_Headers(),
                 envvar="MCI_RESPONSE_HEADERS",
                 help="Header the load balancer adds to responses, NAME:VALUE; repeat; one per line in the "
                      "variable [env: MCI_RESPONSE_HEADERS]."),
    click.option("--ssl-policy", metavar="NAME", envvar="MCI_SSL_POLICY",
                 help="Existing SSL policy for the HTTPS proxy [env: MCI_SSL_POLICY]."),
    click.option("--backend-protocol", type=click.Choice(["HTTP", "HTTPS", "HTTP2"]), envvar="MCI_BACKEND_PROTOCOL",
                 help="Protocol to the pods, and of the health check (default HTTP) [env: MCI_BACKEND_PROTOCOL]."),
    click.option("--locality-lb-policy", envvar="MCI_LOCALITY_LB_POLICY",
                 type=click.Choice(["ROUND_ROBIN", "LEAST_REQUEST", "RING_HASH", "RANDOM", "MAGLEV",
                                    "WEIGHTED_MAGLEV"]),
                 help="Balancing within a zone; EXTERNAL_MANAGED only [env: MCI_LOCALITY_LB_POLICY]."),
    click.option("--outlier-consecutive-errors", type=int, metavar="N", envvar="MCI_OUTLIER_CONSECUTIVE_ERRORS",
                 help="Outlier detection: eject a backend after N consecutive 5xx; EXTERNAL_MANAGED only "
                      "[env: MCI_OUTLIER_CONSECUTIVE_ERRORS]."),
    click.option("--quic-override", type=click.Choice(["NONE", "ENABLE", "DISABLE"]), envvar="MCI_QUIC_OVERRIDE",
                 help="QUIC (HTTP/3) on the HTTPS proxy [env: MCI_QUIC_OVERRIDE]."),
    click.option("--cdn/--no-cdn", "cdn", default=None, envvar="MCI_CDN",
                 help="Cloud CDN on the backend services [env: MCI_CDN]."),
    click.option("--cdn-cache-mode", envvar="MCI_CDN_CACHE_MODE",
                 type=click.Choice(["USE_ORIGIN_HEADERS", "FORCE_CACHE_ALL", "CACHE_ALL_STATIC"]),
                 help="Cloud CDN cache mode; turns the CDN on [env: MCI_CDN_CACHE_MODE]."),
    click.option("--iap-secret", metavar="NAME", envvar="MCI_IAP_SECRET",
                 help="Secret (keys client_id, client_secret) of the OAuth client for Identity-Aware Proxy; never "
                      "printed [env: MCI_IAP_SECRET]."),
    click.option("--iap-client-file", type=FILE, envvar="MCI_IAP_CLIENT_FILE",
                 help="Instead of --iap-secret: a file (a GitLab File variable) with client_id and client_secret, "
                      "JSON or YAML; never printed [env: MCI_IAP_CLIENT_FILE]."),
    click.option("--certificate-map", metavar="NAME", envvar="MCI_CERTIFICATE_MAP",
                 help="Existing Certificate Manager map for the HTTPS proxy [env: MCI_CERTIFICATE_MAP]."),
    click.option("--ipv6", is_flag=True, default=None, envvar="MCI_IPV6",
                 help="Also serve on a global IPv6 address of its own, reserved and kept like the IPv4 one "
                      "[env: MCI_IPV6]."),
]


def features_options(f: Any) -> Any:
    """Every production option, in the order docs/features.md lists them."""
    return stack(FEATURE_OPTIONS)(f)
