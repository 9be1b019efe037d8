"""Generated manifests are valid: custom kinds against the schemas kept in gitlab_mci/hosted/schemas, core kinds (and
every object's metadata) with kubernetes-validate."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest

import gitlab_mci.hosted
from gitlab_mci.errors import UserError
from gitlab_mci.hosted.manifests import desired
from gitlab_mci.hosted.model import HostedModel, McsModel, ServicePort, check_object_name, ingress_paths
from gitlab_mci.ingress import parse_ingress
from gitlab_mci.sim.mci import derived_service_name
from tests.conftest import RunningSim

SCHEMAS = Path(gitlab_mci.hosted.__file__).parent / "schemas"
K8S_VERSION = "1.30"
INGRESS = """
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: shop}
spec:
  defaultBackend: {service: {name: shop-auto-deploy, port: {name: web}}}
  rules:
  - host: shop.example.com
    http:
      paths:
      - {path: /api, pathType: Prefix, backend: {service: {name: api-auto-deploy, port: {number: 8080}}}}
      - {path: /, pathType: Prefix, backend: {service: {name: shop-auto-deploy, port: {name: web}}}}
      - {path: /exact, pathType: Exact, backend: {service: {name: shop-auto-deploy, port: {number: 5000}}}}
"""


def schema(kind: str) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((SCHEMAS / f"{kind.lower()}.json").read_text())
    return loaded


def validate(obj: dict[str, Any]) -> None:
    jsonschema.validate(obj, schema(obj["kind"]), cls=jsonschema.Draft202012Validator)
    # Object metadata against Kubernetes' own ObjectMeta (carried by a core kind).
    kubernetes_validate.validate({"apiVersion": "v1", "kind": "ConfigMap", "metadata": obj["metadata"]},
                                 K8S_VERSION, strict=True)


def model(**overrides: Any) -> HostedModel:
    selector = (("app", "shop"), ("tier", "web"), ("track", "stable"))
    values: dict[str, Any] = {
        "lb": "shop", "namespace": "production", "routing": parse_ingress(INGRESS),
        "mcs": (McsModel("shop-auto-deploy", selector, (ServicePort("web", 5000, 5000),)),
                McsModel("api-auto-deploy", (("app", "api"), ("tier", "web"), ("track", "stable")),
                         (ServicePort("http", 8080, "http"), ServicePort("metrics", 9100, 9100)))),
        "links": ("us-central1-a/prod1", "europe-west1/prod2"), "static_ip_address": "203.0.113.10",
        "pre_shared_certs": ("shop-cert", "shop-cert-2"), "tls_secrets": ("shop-tls",), "https_redirect": True,
        "health_check_path": "/healthz",
    }
    values.update(overrides)
    return HostedModel(**values)


def test_every_generated_manifest_validates() -> None:
    objects = desired(model())
    assert [o["kind"] for o in objects] == ["BackendConfig", "FrontendConfig", "MultiClusterService",
                                            "MultiClusterService", "MultiClusterIngress"]
    for obj in objects:
        validate(obj)
    mci = objects[-1]
    paths = mci["spec"]["template"]["spec"]["rules"][0]["http"]["paths"]
    assert [(p["path"], p["backend"]["serviceName"], p["backend"]["servicePort"]) for p in paths] == [
        ("/api", "api-auto-deploy", 8080), ("/api/*", "api-auto-deploy", 8080), ("/*", "shop-auto-deploy", 5000),
        ("/exact", "shop-auto-deploy", 5000)]
    assert mci["metadata"]["annotations"] == {"networking.gke.io/static-ip": "203.0.113.10",
                                              "networking.gke.io/pre-shared-certs": "shop-cert,shop-cert-2",
                                              "networking.gke.io/frontend-config": "shop"}
    assert mci["spec"]["template"]["spec"]["tls"] == [{"secretName": "shop-tls"}]  # the Ingress's TLS Secret
    assert objects[2]["spec"]["clusters"] == [{"link": "us-central1-a/prod1"}, {"link": "europe-west1/prod2"}]
    # The smallest shape validates too: one Service, every fleet member, no configs.
    for obj in desired(model(links=None, static_ip_address=None, pre_shared_certs=(), tls_secrets=(),
                             https_redirect=False,
                             health_check_path=None, mcs=model().mcs[:1],
                             routing=parse_ingress(INGRESS.split("  rules:")[0]))):
        validate(obj)


@pytest.mark.parametrize(
    ("kind", "breakage"),
    [
        ("MultiClusterService", lambda o: o["spec"].update(clusters=[{"link": "prod1"}])),
        ("MultiClusterService", lambda o: o["spec"]["template"]["spec"].update(selector={})),
        ("MultiClusterService", lambda o: o["spec"]["template"]["spec"]["ports"][0].update(port=70000)),
        ("MultiClusterIngress", lambda o: o["spec"]["template"]["spec"].update(backend={"serviceName": "x"})),
        ("MultiClusterIngress", lambda o: o["spec"]["template"].update(spec={})),
        ("BackendConfig", lambda o: o["spec"]["healthCheck"].update(requestPath="healthz")),
        ("FrontendConfig", lambda o: o["spec"]["redirectToHttps"].update(responseCodeName="MOVED")),
    ],
)
def test_the_schemas_reject_broken_objects(kind: str, breakage: Any) -> None:
    obj = copy.deepcopy(next(o for o in desired(model()) if o["kind"] == kind))
    breakage(obj)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(obj, schema(kind), cls=jsonschema.Draft202012Validator)


def test_names_gke_reserves_are_refused_and_paths_become_globs() -> None:
    with pytest.raises(UserError, match="starts with 'mci-'"):
        check_object_name("mci-app-auto-deploy", "backend Service")
    with pytest.raises(UserError, match="at most 63 characters"):
        check_object_name("a" * 64, "--lb")
    assert ingress_paths("/", "Prefix") == ["/*"]
    assert ingress_paths("/api/", "Prefix") == ["/api", "/api/*"]
    assert ingress_paths("/x", "ImplementationSpecific") == ["/x"]


def test_the_simulators_derived_services_are_valid_core_services(make_sim: Any) -> None:
    from gitlab_mci.sim.spec import parse_spec

    running: RunningSim = make_sim(parse_spec({"clusters": [{"name": "prod1"}], "mciProvisioningDelay": 0}))
    running.sim.gkehub.enable_mci("prod1")
    for obj in desired(model(links=None, namespace="default")):
        running.sim.clusters["prod1"].seed(obj)
    assert running.sim.mci.settle()
    for name in ("shop-auto-deploy", "api-auto-deploy"):
        svc = running.sim.clusters["prod1"].get("v1", "Service", derived_service_name("default", name), "default")
        assert svc is not None and svc["spec"]["clusterIP"] == "None"
        kubernetes_validate.validate(svc, K8S_VERSION, strict=True)
    mci = running.sim.clusters["prod1"].get("networking.gke.io/v1", "MultiClusterIngress", "shop", "default")
    validate(mci)  # with the status the controller wrote
    assert mci["status"]["VIP"] == "203.0.113.10" and mci["status"]["CloudResources"]["UrlMap"].startswith("mci-")
