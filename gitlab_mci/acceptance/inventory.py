"""What acceptance runs left in a project and its clusters, found by run id AND ownership marker.

Read with plain REST (Compute v1 JSON) and kubectl, independently of the code under test: the check that nothing
is left must not share a bug with what created it.
"""

from __future__ import annotations

import json
import re
import subprocess
from dataclasses import dataclass, field
from typing import Any

from gitlab_mci.acceptance.target import PREFIX, RUN_LABEL, RunNames, Target, lb_run_id
from gitlab_mci.errors import UserError

MARKER = "gitlab-mci:lb="  # gitlab_mci/lb/names.py: the first word of every owned resource's description
GLOBAL_COLLECTIONS = ("forwardingRules", "targetHttpProxies", "targetHttpsProxies", "urlMaps", "backendServices",
                      "healthChecks", "addresses", "sslCertificates", "firewalls")


@dataclass
class Leftovers:
    """Per run id: what of that run still exists (``collection/name`` or ``context: namespace/name``)."""

    by_run: dict[str, list[str]] = field(default_factory=dict)

    def add(self, run_id: str, what: str) -> None:
        self.by_run.setdefault(run_id, []).append(what)

    def of(self, run_id: str) -> list[str]:
        return sorted(self.by_run.get(run_id, []))


class ComputeReader:
    """GET on Compute v1 REST: anonymous on the simulator, Application Default Credentials on Google."""

    def __init__(self, target: Target) -> None:
        self.base = f"{target.compute_endpoint.rstrip('/')}/compute/v1/projects/{target.project}"
        if target.live:
            import google.auth
            from google.auth.transport.requests import AuthorizedSession

            credentials, _ = google.auth.default(scopes=["https://www.googleapis.com/auth/cloud-platform"])
            self.session: Any = AuthorizedSession(credentials)  # type: ignore[no-untyped-call]
        else:
            import requests

            self.session = requests.Session()

    def items(self, path: str) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        token = ""
        while True:
            answer = self.session.get(f"{self.base}/{path}", params={"pageToken": token} if token else {},
                                      timeout=30)
            if answer.status_code != 200:
                raise UserError(f"cannot list {path} in Compute: HTTP {answer.status_code} "
                                f"{answer.text.strip().splitlines()[:1]}")
            body = answer.json()
            if "items" in body and isinstance(body["items"], dict):  # aggregatedList: scope -> {collection: [...]}
                for scope in body["items"].values():
                    for value in scope.values():
                        if isinstance(value, list):
                            out.extend(value)
            else:
                out.extend(body.get("items") or [])
            token = body.get("nextPageToken") or ""
            if not token:
                return out


def run_kubectl(target: Target, context: str, *args: str) -> subprocess.CompletedProcess[str]:
    base = ["kubectl", "--context", context, *(["--kubeconfig", target.kubeconfig] if target.kubeconfig else [])]
    return subprocess.run([*base, *args], capture_output=True, text=True, timeout=120, check=False)


def kubectl(target: Target, context: str, *args: str) -> str:
    """Run kubectl against one cluster of the target; its stdout, or a one-line error."""
    done = run_kubectl(target, context, *args)
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["(no output)"])[-1]
        raise UserError(f"kubectl --context {context} {' '.join(args)}: {last}")
    return done.stdout


def scan(target: Target, run_id: str | None = None) -> Leftovers:
    """Everything of acceptance runs (of ``run_id``, or of any run) in Compute and in the clusters."""
    found = Leftovers()
    compute = ComputeReader(target)
    for collection in GLOBAL_COLLECTIONS:
        for item in compute.items(f"global/{collection}"):
            owner = _owner(item)
            if owner and (run_id is None or owner == run_id):
                found.add(owner, f"{collection}/{item['name']}")
    for group in compute.items("aggregated/instanceGroups"):
        for port in group.get("namedPorts") or []:
            # gitlab-mci's named port: gmci-<node port>-<lb>
            head, _, rest = str(port.get("name", "")).partition("-")
            number, _, lb = rest.partition("-")
            owner = lb_run_id(lb) if head == "gmci" and number.isdigit() else None
            if owner and (run_id is None or owner == run_id):
                found.add(owner, f"instanceGroups/{group['name']} named port {port['name']}")
    for owner, key, scope in gitlab_variables(target, run_id):
        found.add(owner, f"GitLab variable {key} ({scope})")
    selector = f"{RUN_LABEL}={run_id}" if run_id else RUN_LABEL
    for context in target.contexts:
        answer = json.loads(kubectl(target, context, "get", "namespaces", "-l", selector, "-o", "json"))
        for ns in answer.get("items") or []:
            name = ns["metadata"]["name"]
            owner = (ns["metadata"].get("labels") or {}).get(RUN_LABEL, "")
            if name == RunNames(owner).namespace:  # the run's name AND its label
                found.add(owner, f"{context}: namespace {name}")
    return found


# The CI/CD variables a run sets, in its own environments' scopes (acc-<id>-<context>): both together are the mark.
GITLAB_KEYS = ("MCI_ACCEPTANCE_RUN", "MCI_LB_NAME")
_SCOPE = re.compile(rf"^{PREFIX}([a-z][a-z0-9]{{3,11}})-(.+)$")


def gitlab_project(target: Target) -> Any:
    """The GitLab project of the GitLab steps, through python-gitlab (token from the target's GITLAB_TOKEN)."""
    import gitlab

    client = gitlab.Gitlab(target.gitlab_url, private_token=target.env["GITLAB_TOKEN"], timeout=30)
    return client.projects.get(target.gitlab_project, lazy=True)


def gitlab_variables(target: Target, run_id: str | None = None) -> list[tuple[str, str, str]]:
    """(run id, key, environment scope) of every CI/CD variable acceptance runs set (of ``run_id``, if given)."""
    if not target.gitlab_url:
        return []
    out = []
    for variable in gitlab_project(target).variables.list(iterator=True):
        scope, key = str(variable.environment_scope), str(variable.key)
        found = _SCOPE.match(scope)
        owner = found.group(1) if found and found.group(2) in target.contexts else None
        if owner and key in GITLAB_KEYS and (run_id is None or owner == run_id):
            out.append((owner, key, scope))
    return out


def _owner(item: dict[str, Any]) -> str | None:
    """The run id of a Compute resource an acceptance run created, judged by its name and its marker together."""
    description = str(item.get("description") or "")
    name = str(item.get("name") or "")
    if description.startswith(MARKER):  # self-managed: gitlab-mci:lb=acc-<id> …
        run = lb_run_id(description.split(" ", 1)[0][len(MARKER):])
        return run if run and f"-{RunNames(run).lb}" in name else None
    if name.startswith("mci-") and f'"mci":"{PREFIX}' in description:  # hosted: GKE's, for namespace acc-<id>
        namespace = description.split(f'"mci":"{PREFIX}', 1)[1].split("/", 1)[0]
        return namespace if lb_run_id(f"{PREFIX}{namespace}") == namespace else None
    return None
