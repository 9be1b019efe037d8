"""Kubernetes API clients for kubeconfig contexts: the one place that turns a context name into a client.

Errors come out as one-line :class:`~gitlab_mci.errors.UserError` s that name the context (and the server address
when it cannot be reached), instead of the kubernetes client's multi-line tracebacks.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from typing import Any, TypeVar

from gitlab_mci.errors import UserError

T = TypeVar("T")

# (connect, read) seconds for every call: a dead cluster must fail in seconds, not hang a deploy job.
REQUEST_TIMEOUT = (5.0, 30.0)


def kubeconfig_paths() -> list[str]:
    """The kubeconfig files in effect: ``KUBECONFIG`` (``:``-separated, like kubectl) or ``~/.kube/config``."""
    raw = os.environ.get("KUBECONFIG") or os.path.expanduser("~/.kube/config")
    return [p for p in raw.split(os.pathsep) if p]


def _merged() -> Any:
    """The kubeconfig files, parsed and merged once per set of files and modification times: connecting to 15
    contexts must not parse the same YAML 30 times."""
    paths = kubeconfig_paths()
    existing = tuple(p for p in paths if os.path.exists(p))
    if not existing:
        raise UserError(f"no kubeconfig found at {os.pathsep.join(paths)} (set KUBECONFIG or pass --kubeconfig)")
    return _load(existing, tuple(os.stat(p).st_mtime_ns for p in existing))


@functools.lru_cache(maxsize=4)
def _load(paths: tuple[str, ...], _stamps: tuple[int, ...]) -> Any:
    from kubernetes.config.config_exception import ConfigException
    from kubernetes.config.kube_config import KubeConfigMerger

    try:
        merged = KubeConfigMerger(os.pathsep.join(paths))  # type: ignore[no-untyped-call]
    except (ConfigException, OSError, ValueError) as exc:
        raise UserError(f"kubeconfig {os.pathsep.join(paths)}: {exc}") from None
    if merged.config is None:
        raise UserError(f"kubeconfig {os.pathsep.join(paths)}: no configuration found")
    return merged


def list_contexts() -> list[str]:
    """Names of all contexts in the kubeconfig files."""
    contexts = _merged().config.safe_get("contexts") or []
    return [c["name"] for c in contexts]


@dataclass
class Cluster:
    """One cluster reached through a kubeconfig context."""

    context: str
    api: Any  # kubernetes.client.ApiClient

    @property
    def server(self) -> str:
        return str(self.api.configuration.host)

    @cached_property
    def core(self) -> Any:
        from kubernetes import client

        return client.CoreV1Api(self.api)

    @cached_property
    def apps(self) -> Any:
        from kubernetes import client

        return client.AppsV1Api(self.api)

    @cached_property
    def custom(self) -> Any:
        from kubernetes import client

        return client.CustomObjectsApi(self.api)

    def call(self, what: str, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Call the API; connection failures become one line naming context and server.

        ``ApiException`` s (HTTP answers) are left to the caller, who knows what a 404 or 422 means there.
        """
        import urllib3

        kwargs.setdefault("_request_timeout", REQUEST_TIMEOUT)
        try:
            return fn(*args, **kwargs)
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            reason = getattr(exc, "reason", None) or exc
            raise UserError(
                f"cannot reach the cluster of context {self.context!r} at {self.server} while trying to {what}: "
                f"{type(reason).__name__}"
            ) from None


def connect(context: str | None) -> Cluster:
    """A client for ``context`` (``None``: the kubeconfig's current context)."""
    from kubernetes import client
    from kubernetes.config.config_exception import ConfigException
    from kubernetes.config.kube_config import KubeConfigLoader

    merged = _merged()
    known = [c["name"] for c in merged.config.safe_get("contexts") or []]
    if context is not None and context not in known:
        raise UserError(f"unknown kubeconfig context {context!r} (known: {', '.join(known) or 'none'})")
    configuration = type.__call__(client.Configuration)
    try:
        loader = KubeConfigLoader(config_dict=merged.config, config_base_path=None, active_context=context,  # type: ignore[no-untyped-call]
                                  config_persister=merged.save_changes)
        loader.load_and_set(configuration)  # type: ignore[no-untyped-call]
    except ConfigException as exc:
        raise UserError(f"kubeconfig context {context!r}: {exc}") from None
    # One retry at most: the caller reports an unreachable cluster quickly and clearly.
    configuration.retries = 1
    return Cluster(context or loader.current_context["name"], client.ApiClient(configuration=configuration))


def api_error_message(exc: Any) -> str:
    """The ``message`` of a Kubernetes ``Status`` in an ``ApiException``, else its reason."""
    import json

    try:
        return str(json.loads(exc.body).get("message") or exc.reason)
    except (TypeError, ValueError, AttributeError):
        return str(getattr(exc, "reason", exc))
