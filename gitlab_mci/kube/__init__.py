"""Kubernetes API clients for kubeconfig contexts: the one place that turns a context name into a client.

Errors come out as one-line :class:`~gitlab_mci.errors.UserError` s that name the context (and the server address
when it cannot be reached), instead of the kubernetes client's multi-line tracebacks.
"""

from __future__ import annotations

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


def list_contexts() -> list[str]:
    """Names of all contexts in the kubeconfig files."""
    from kubernetes import config
    from kubernetes.config.config_exception import ConfigException

    paths = kubeconfig_paths()
    existing = [p for p in paths if os.path.exists(p)]
    if not existing:
        raise UserError(f"no kubeconfig found at {os.pathsep.join(paths)} (set KUBECONFIG or pass --kubeconfig)")
    try:
        contexts, _ = config.list_kube_config_contexts(config_file=os.pathsep.join(existing))  # type: ignore[no-untyped-call]
    except ConfigException as exc:
        raise UserError(f"kubeconfig {os.pathsep.join(existing)}: {exc}") from None
    return [c["name"] for c in contexts or []]


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
    from kubernetes import config
    from kubernetes.config.config_exception import ConfigException

    known = list_contexts()
    if context is not None and context not in known:
        raise UserError(f"unknown kubeconfig context {context!r} (known: {', '.join(known) or 'none'})")
    existing = [p for p in kubeconfig_paths() if os.path.exists(p)]
    try:
        api = config.new_client_from_config(config_file=os.pathsep.join(existing), context=context)  # type: ignore[no-untyped-call]
    except ConfigException as exc:
        raise UserError(f"kubeconfig context {context!r}: {exc}") from None
    # One retry at most: the caller reports an unreachable cluster quickly and clearly.
    api.configuration.retries = 1
    name = context or config.list_kube_config_contexts(config_file=os.pathsep.join(existing))[1]["name"]  # type: ignore[no-untyped-call]
    return Cluster(name, api)


def api_error_message(exc: Any) -> str:
    """The ``message`` of a Kubernetes ``Status`` in an ``ApiException``, else its reason."""
    import json

    try:
        return str(json.loads(exc.body).get("message") or exc.reason)
    except (TypeError, ValueError, AttributeError):
        return str(getattr(exc, "reason", exc))
