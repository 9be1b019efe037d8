"""``gitlab-mci fleet``: register the clusters in the project's fleet and enable Multi Cluster Ingress."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import click

from gitlab_mci.cli.options import (
    config_context_option,
    dry_run_option,
    fleet_contexts_option,
    kubeconfig_option,
    output_option,
    project_option,
)
from gitlab_mci.errors import UserError


@click.group()
def command() -> None:
    """The GKE fleet that hosted Multi Cluster Ingress needs: memberships and the multiclusteringress feature.

    The fleet is GKE Hub's: every cluster a membership, one of them the config cluster.
    """


def resolve(specs: list[Any], project: str | None) -> tuple[str, dict[str, str], Any]:
    """``(project, {context: link}, compute)`` for the ``--context`` values; reads only what it must."""
    from gitlab_mci import kube
    from gitlab_mci.fleet import resolve_link
    from gitlab_mci.gcp import Compute, project_from_env
    from gitlab_mci.nodeport import parallel

    project = project_from_env(project)
    need_nodes = [s for s in specs if not s.link and not s.context.startswith("gke_")]
    compute = Compute.from_env(project) if need_nodes else None
    clusters = dict(zip([s.context for s in need_nodes], parallel(need_nodes, lambda s: kube.connect(s.context)),
                        strict=True))
    links = parallel(specs, lambda s: resolve_link(s, clusters.get(s.context), compute))
    return project, dict(zip([s.context for s in specs], links, strict=True)), compute


@command.command("enable")
@fleet_contexts_option
@config_context_option
@project_option
@kubeconfig_option
@click.option("--features", "features", default="ingress", show_default=True, envvar="MCI_FLEET_FEATURES",
              help="For which mode(s), comma-separated: ingress (multiclusteringress) or gateway (also "
                   "multiclusterservicediscovery) [env: MCI_FLEET_FEATURES].")
@dry_run_option
@output_option(["text", "json"])
def enable_cmd(contexts: tuple[str, ...], config_context: str | None, project: str | None,
               kubeconfig: Path | None, features: str, dry_run: bool, output: str) -> None:
    """Register every cluster as a fleet member and enable the multiclusteringress feature; idempotent.

    --features gateway also enables multiclusterservicediscovery (multi-cluster Services), which multi-cluster
    Gateway needs beside the config membership.

    --context lists every cluster of the fleet; --config-context names the one that will hold the Multi Cluster
    Ingress objects. A cluster already registered (under any membership name) is left as it is; the feature's
    config membership is changed only when it names another cluster.
    """
    from gitlab_mci.fleet import Hub, apply_enable, parse_context, parse_contexts, plan_enable

    started = time.monotonic()
    specs = parse_contexts(contexts)
    if config_context:
        config = parse_context(config_context)
        if config.context not in [s.context for s in specs]:
            specs.insert(0, config)
        config_name = config.context
    elif specs:
        config_name = specs[0].context
    else:
        raise UserError("no clusters: pass --context for every cluster of the fleet (or set MCI_CONTEXTS)")
    if kubeconfig:
        os.environ["KUBECONFIG"] = str(kubeconfig)
    project_id, links, _ = resolve(specs, project)
    hub = Hub(project_id)
    modes = [m.strip() for m in features.split(",") if m.strip()]
    plan = plan_enable(hub, links, config_name, modes)
    text = output == "text"
    if text:
        for line in plan.lines() or ["No changes: every cluster is a member and the feature is enabled."]:
            click.echo(line)
    if not dry_run and plan.changes:
        apply_enable(hub, plan, progress=(lambda m: click.echo(f"  ✓ {m}")) if text else None)
    if output == "json":
        click.echo(json.dumps({"project": project_id, "dry_run": dry_run, "changes": plan.lines(),
                               "links": links, "config_membership": plan.config_membership}, indent=2))
    elif not dry_run:
        click.echo(f"fleet of {project_id} ready: {len(set(links.values()))} cluster(s), config membership "
                   f"{plan.config_membership} ({time.monotonic() - started:.1f}s)")


@command.command("status")
@project_option
@output_option(["text", "json"])
def status_cmd(project: str | None, output: str) -> None:
    """The fleet's members (membership, GKE cluster link), the multiclusteringress feature's config membership and
    whether multi-cluster Services (multiclusterservicediscovery, for gateway mode) are enabled.

    Exits 3 when Multi Cluster Ingress is not enabled.
    """
    from gitlab_mci.fleet import Hub, same_membership
    from gitlab_mci.gcp import project_from_env

    hub = Hub(project_from_env(project))
    members = hub.members()
    config = hub.config_membership()
    services = hub.feature_named("multiclusterservicediscovery") is not None
    rows: list[dict[str, Any]] = [
        {"membership": m.name, "link": m.link, "config": bool(config and same_membership(m.name, config))}
        for m in members]
    if output == "json":
        click.echo(json.dumps({"project": hub.project, "members": rows, "config_membership": config,
                               "multiclusterservicediscovery": services}, indent=2))
    else:
        click.echo(f"fleet of project {hub.project}: {len(rows)} member(s)")
        for row in rows:
            mark = "  (Multi Cluster Ingress config cluster)" if row["config"] else ""
            click.echo(f"  {row['membership'].rsplit('/', 1)[-1]}: {row['link'] or 'not a GKE cluster'}{mark}")
        click.echo(f"multiclusteringress: {'config membership ' + config if config else 'not enabled'}")
        click.echo(f"multiclusterservicediscovery: {'enabled' if services else 'not enabled'} (gateway mode needs it)")
    if config is None:
        raise SystemExit(3)
