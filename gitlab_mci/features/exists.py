"""What the options name must exist before anything is written: Cloud Armor and SSL policies in Compute, the IAP
OAuth client's Secret in the cluster (its values are returned, never printed)."""

from __future__ import annotations

import base64
import functools
from pathlib import Path
from typing import TYPE_CHECKING

from gitlab_mci.errors import UserError
from gitlab_mci.features.model import Features

if TYPE_CHECKING:
    from gitlab_mci.kube import Cluster
    from gitlab_mci.lb.engine import ComputeApi

# GKE's BackendConfig reads the OAuth client from a Secret with these keys.
IAP_KEYS = ("client_id", "client_secret")


def compute_references(api: ComputeApi, features: Features) -> None:
    """The Cloud Armor and SSL policies named exist in the project (one read each)."""
    wanted: list[tuple[str, str, str]] = []
    if features.get("securityPolicy"):
        wanted.append(("securityPolicies", features.get("securityPolicy")["name"], "security policy"))
    if features.get("edgeSecurityPolicy"):
        wanted.append(("securityPolicies", features.get("edgeSecurityPolicy"), "edge security policy"))
    if features.get("sslPolicy"):
        wanted.append(("sslPolicies", features.get("sslPolicy"), "SSL policy"))
    for collection, name, what in wanted:
        found = api.retrying(f"read {what} {name}", functools.partial(
            api.rest.get_or_none, f"global/{collection}/{name}"))
        if found is None:
            key = {"security policy": "securityPolicy", "edge security policy": "edgeSecurityPolicy",
                   "SSL policy": "sslPolicy"}[what]
            raise UserError(f"{what} {name!r} (from {features.origin[key]}) not found in project {api.project}; "
                            f"create it first (gitlab-mci uses an existing one and never changes it)")


def iap_client_file(path: Path) -> tuple[str, str]:
    """The OAuth client from a file (a GitLab File variable): ``client_id``/``client_secret`` as JSON or YAML, or
    the JSON Google's console downloads (``{"web": {...}}``). Errors never quote the file's content."""
    import yaml

    try:
        loaded = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise UserError(f"--iap-client-file {path}: {exc.strerror}") from None
    except yaml.YAMLError:
        raise UserError(f"--iap-client-file {path}: not JSON or YAML") from None
    if isinstance(loaded, dict) and isinstance(loaded.get("web"), dict):
        loaded = loaded["web"]
    if not isinstance(loaded, dict) or not all(isinstance(loaded.get(k), str) and loaded[k] for k in IAP_KEYS):
        raise UserError(f"--iap-client-file {path}: needs client_id and client_secret")
    return loaded["client_id"], loaded["client_secret"]


def iap_client(cluster: Cluster, namespace: str, features: Features,
               client_file: Path | None = None) -> tuple[str, str] | None:
    """The OAuth client (id, secret) of the IAP Secret the options name, read from ``cluster`` (or from
    ``client_file``)."""
    from gitlab_mci.features.sources import raw_get

    iap = features.get("iap")
    if not iap or not iap.get("enabled"):
        return None
    name = (iap.get("oauthclientCredentials") or {}).get("secretName")
    if not name and client_file is not None:
        return iap_client_file(client_file)
    if not name:
        raise UserError(f"iap (from {features.origin['iap']}) needs oauthclientCredentials.secretName "
                        "(--iap-secret NAME): a Secret with client_id and client_secret")
    where = f"IAP Secret {namespace}/{name} in context {cluster.context!r}"
    secret = raw_get(cluster, where, f"/api/v1/namespaces/{namespace}/secrets/{name}")
    if secret is None:
        raise UserError(f"{where} not found (from {features.origin['iap']})")
    data = secret.get("data") or {}
    missing = [k for k in IAP_KEYS if not data.get(k)]
    if missing:
        raise UserError(f"{where} has no {' or '.join(missing)}: it needs the OAuth client's client_id and "
                        "client_secret keys")
    try:
        client_id, client_secret = (base64.b64decode(data[k]).decode() for k in IAP_KEYS)
    except ValueError:
        raise UserError(f"{where}: client_id/client_secret are not base64 text") from None
    return client_id, client_secret


CERTIFICATE_MANAGER = "https://certificatemanager.googleapis.com"


def certificate_map(api: ComputeApi, features: Features) -> None:
    """The Certificate Manager map named exists (its own API: ``GITLAB_MCI_CERTIFICATEMANAGER_ENDPOINT`` points at
    a stand-in, as ``GITLAB_MCI_COMPUTE_ENDPOINT`` does for Compute)."""
    import json
    import os

    import urllib3

    name = features.get("certificateMap")
    if not name:
        return
    endpoint = (os.environ.get("GITLAB_MCI_CERTIFICATEMANAGER_ENDPOINT") or CERTIFICATE_MANAGER).rstrip("/")
    url = f"{endpoint}/v1/projects/{api.project}/locations/global/certificateMaps/{name}"
    headers = {"Accept": "application/json"}
    if not api.compute.local:
        api.rest._authorize("GET", url, headers)  # the same credentials as Compute's (ADC)
    try:
        resp = urllib3.PoolManager(retries=False).request("GET", url, headers=headers, timeout=30.0)
    except urllib3.exceptions.HTTPError as exc:
        raise UserError(f"read certificate map {name}: {url}: {exc}") from None
    if resp.status == 404:
        raise UserError(f"certificate map {name!r} (from {features.origin['certificateMap']}) not found in "
                        f"project {api.project}; create it first with gcloud certificate-manager maps create")
    if resp.status >= 400:
        try:
            message = json.loads(resp.data)["error"]["message"]
        except (ValueError, KeyError, TypeError):
            message = f"HTTP {resp.status}"
        raise UserError(f"read certificate map {name}: {message}")
