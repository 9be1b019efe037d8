"""The three ways options arrive: flags (each with its ``MCI_*`` variable), ``--features-file``, and the GKE
annotations a GKE Ingress user already has on their Service and Ingress, read from the cluster."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gitlab_mci.errors import UserError
from gitlab_mci.features.model import FRONTEND_KEYS, Features

if TYPE_CHECKING:
    from gitlab_mci.kube import Cluster

# GKE's annotations: a Service's BackendConfig ({"default": NAME} or {"ports": {PORT: NAME}}), and an Ingress's
# FrontendConfig (its name).
BACKEND_CONFIG_ANNOTATIONS = ("cloud.google.com/backend-config", "beta.cloud.google.com/backend-config")
FRONTEND_CONFIG_ANNOTATION = "networking.gke.io/v1beta1.FrontendConfig"
# What BackendConfig and FrontendConfig hold that is not an option here (handled by other flags, or not carried).
_NOT_OPTIONS = ("healthCheck", "timeoutSec", "redirectToHttps")


@dataclass(frozen=True)
class Flags:
    """The option flags as given (None: not given)."""

    security_policy: str | None = None
    edge_security_policy: str | None = None
    logging: bool | None = None
    log_sample_rate: float | None = None
    session_affinity: str | None = None
    affinity_cookie_ttl_sec: int | None = None
    affinity_header: str | None = None
    affinity_cookie: str | None = None
    draining_timeout_sec: int | None = None
    request_headers: Sequence[str] = ()
    response_headers: Sequence[str] = ()
    ssl_policy: str | None = None
    backend_protocol: str | None = None
    locality_lb_policy: str | None = None
    outlier_consecutive_errors: int | None = None
    quic_override: str | None = None
    cdn: bool | None = None
    cdn_cache_mode: str | None = None
    iap_secret: str | None = None
    iap_client_file: Path | None = None
    certificate_map: str | None = None
    ipv6: bool | None = None

    @classmethod
    def from_kw(cls, kw: dict[str, Any]) -> Flags:
        """From a command's keyword arguments (the options :func:`gitlab_mci.cli.options.features_options` adds)."""
        given: dict[str, Any] = {k: kw.get(k) for k in cls.__dataclass_fields__ if kw.get(k) not in (None, ())}
        for k in ("request_headers", "response_headers"):
            given[k] = tuple(kw.get(k) or ())
        return cls(**given)


def from_flags(flags: Flags) -> dict[str, Any]:
    """The flags as ``--features-file`` keys."""
    out: dict[str, Any] = {}
    if flags.security_policy:
        out["securityPolicy"] = {"name": flags.security_policy}
    if flags.edge_security_policy:
        out["edgeSecurityPolicy"] = flags.edge_security_policy
    if flags.logging is not None or flags.log_sample_rate is not None:
        out["logging"] = {"enable": flags.logging if flags.logging is not None else True}
        if flags.log_sample_rate is not None:
            out["logging"]["sampleRate"] = flags.log_sample_rate
    affinity = {k: v for k, v in (("affinityType", flags.session_affinity),
                                  ("affinityCookieTtlSec", flags.affinity_cookie_ttl_sec),
                                  ("headerName", flags.affinity_header), ("cookieName", flags.affinity_cookie))
                if v is not None}
    if affinity:
        if "affinityType" not in affinity:
            raise UserError("--affinity-cookie-ttl-sec, --affinity-header and --affinity-cookie need "
                            "--session-affinity")
        out["sessionAffinity"] = affinity
    if flags.draining_timeout_sec is not None:
        out["connectionDraining"] = {"drainingTimeoutSec": flags.draining_timeout_sec}
    if flags.request_headers:
        out["customRequestHeaders"] = {"headers": [_header(h, "--request-header") for h in flags.request_headers]}
    if flags.response_headers:
        out["customResponseHeaders"] = {"headers": [_header(h, "--response-header") for h in flags.response_headers]}
    for key, value in (("sslPolicy", flags.ssl_policy), ("backendProtocol", flags.backend_protocol),
                       ("localityLbPolicy", flags.locality_lb_policy), ("quicOverride", flags.quic_override),
                       ("certificateMap", flags.certificate_map)):
        if value is not None:
            out[key] = value
    if flags.outlier_consecutive_errors is not None:
        out["outlierDetection"] = {"consecutiveErrors": flags.outlier_consecutive_errors}
    if flags.cdn is not None or flags.cdn_cache_mode is not None:
        out["cdn"] = {"enabled": flags.cdn if flags.cdn is not None else True}
        if flags.cdn_cache_mode is not None:
            out["cdn"]["cacheMode"] = flags.cdn_cache_mode
    if flags.ipv6:
        out["ipv6"] = True
    if flags.iap_secret and flags.iap_client_file:
        raise UserError("--iap-secret and --iap-client-file both name the OAuth client: give one")
    if flags.iap_secret:
        out["iap"] = {"enabled": True, "oauthclientCredentials": {"secretName": flags.iap_secret}}
    elif flags.iap_client_file:
        out["iap"] = {"enabled": True}  # the client is read from the file (exists.iap_client)
    return out


def _header(text: str, flag: str) -> str:
    name, sep, value = text.partition(":")
    if not sep or not name.strip():
        raise UserError(f"{flag} {text!r}: write it as NAME:VALUE")
    return f"{name.strip()}:{value.strip()}"


def from_file(path: Path) -> dict[str, Any]:
    """``--features-file``: a YAML mapping of option keys."""
    import yaml

    try:
        loaded = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise UserError(f"--features-file {path}: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f" line {mark.line + 1}" if mark is not None else ""
        raise UserError(f"--features-file {path}:{line} is not valid YAML") from None
    if loaded is None:
        return {}
    if not isinstance(loaded, dict):
        raise UserError(f"--features-file {path}: must be a mapping of options (docs/features.md)")
    return loaded


def gather(flags: Flags, path: Path | None) -> Features:
    """Flags and file, checked and merged: a key both give must agree."""
    features = Features().add(from_flags(flags), "flags")
    if path is not None:
        features = features.add(from_file(path), f"--features-file {path}")
    return features


def raw_get(cluster: Cluster, what: str, path: str) -> dict[str, Any] | None:
    """GET ``path`` as JSON, None when it does not exist. Through the ApiClient, not CoreV1Api, whose import the
    lb commands avoid (docs/performance.md)."""
    from kubernetes.client.exceptions import ApiException

    from gitlab_mci.kube import api_error_message

    api = cluster.api
    method, url, headers, _, _ = api.param_serialize(
        "GET", path, header_params={"Accept": "application/json"}, auth_settings=["BearerToken"])
    resp = cluster.call(f"read {what}", api.call_api, method, url, header_params=headers)
    data = resp.read()
    if resp.status == 404:
        return None
    if not 200 <= resp.status <= 299:
        exc = ApiException.from_response(http_resp=resp, body=data.decode("utf-8", "replace"), data=None)
        raise UserError(f"{what} in context {cluster.context!r}: {api_error_message(exc)}")
    loaded: dict[str, Any] = json.loads(data)
    return loaded


def _read(cluster: Cluster, group: str, version: str, plural: str, namespace: str, name: str,
          what: str) -> dict[str, Any]:
    obj = raw_get(cluster, what, f"/apis/{group}/{version}/namespaces/{namespace}/{plural}/{name}")
    if obj is None:
        raise UserError(f"{what} not found in context {cluster.context!r}")
    return obj


def backend_config_name(annotations: dict[str, str], port: int | None, where: str) -> str | None:
    """The BackendConfig a Service names for ``port`` (or for every port)."""
    for key in BACKEND_CONFIG_ANNOTATIONS:
        text = annotations.get(key)
        if not text:
            continue
        try:
            parsed = json.loads(text)
        except ValueError:
            raise UserError(f"{where}: annotation {key} is not JSON") from None
        if not isinstance(parsed, dict):
            raise UserError(f"{where}: annotation {key} must be {{\"default\": NAME}} or {{\"ports\": {{...}}}}")
        ports = parsed.get("ports") or {}
        name = ports.get(str(port)) if port is not None else None
        return str(name or parsed.get("default") or "") or None
    return None


def from_backend_config(cluster: Cluster, namespace: str, service: str, annotations: dict[str, str],
                        port: int | None) -> Features:
    """The options of the BackendConfig a Service's annotation names, as read from ``cluster``."""
    where = f"Service {namespace}/{service}"
    name = backend_config_name(annotations, port, where)
    if name is None:
        return Features()
    what = f"BackendConfig {namespace}/{name}"
    obj = _read(cluster, "cloud.google.com", "v1", "backendconfigs", namespace, name, what)
    spec = {k: v for k, v in (obj.get("spec") or {}).items() if k not in _NOT_OPTIONS}
    return Features().add(spec, f"{what} ({where}'s cloud.google.com/backend-config)")


def from_frontend_config(cluster: Cluster, namespace: str, annotations: dict[str, str]) -> Features:
    """The options of the FrontendConfig the Ingress's annotation names, as read from ``cluster``."""
    name = annotations.get(FRONTEND_CONFIG_ANNOTATION)
    if not name:
        return Features()
    what = f"FrontendConfig {namespace}/{name}"
    obj = _read(cluster, "networking.gke.io", "v1beta1", "frontendconfigs", namespace, name, what)
    spec = {k: v for k, v in (obj.get("spec") or {}).items() if k not in _NOT_OPTIONS}
    return Features().add(spec, f"{what} (the Ingress's {FRONTEND_CONFIG_ANNOTATION})")


def split(features: Features) -> tuple[Features, Features]:
    """(backend options, frontend options)."""
    front = Features({k: v for k, v in features.values.items() if k in FRONTEND_KEYS},
                     {k: v for k, v in features.origin.items() if k in FRONTEND_KEYS})
    return features.backend(), front
