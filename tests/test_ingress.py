"""Every Ingress shape users have becomes the same routing model; bad input names the file and field."""

from __future__ import annotations

from pathlib import Path

import pytest

from gitlab_mci.errors import UserError
from gitlab_mci.ingress import Backend, from_service, load_ingress, parse_ingress

V1 = """
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata:
  name: shop
  annotations: {kubernetes.io/ingress.global-static-ip-name: shop-ip}
spec:
  defaultBackend: {service: {name: web, port: {number: 5000}}}
  tls: [{secretName: shop-tls, hosts: [shop.example.com]}]
  rules:
    - host: shop.example.com
      http:
        paths:
          - {path: /api, pathType: Prefix, backend: {service: {name: api, port: {name: http}}}}
          - {path: /, pathType: Prefix, backend: {service: {name: web, port: {number: 5000}}}}
"""

V1BETA1 = """
apiVersion: extensions/v1beta1
kind: Ingress
metadata: {name: shop}
spec:
  backend: {serviceName: web, servicePort: 5000}
  rules:
    - http:
        paths: [{path: /api, backend: {serviceName: api, servicePort: http}}]
"""

MCI = """
apiVersion: networking.gke.io/v1
kind: MultiClusterIngress
metadata: {name: shop}
spec:
  template:
    spec:
      backend: {serviceName: web, servicePort: 5000}
      rules:
        - host: shop.example.com
          http:
            paths: [{path: /api, backend: {serviceName: api, servicePort: http}}]
"""


@pytest.mark.parametrize("text", [V1, V1BETA1, MCI])
def test_all_shapes_give_the_same_backends(text: str) -> None:
    model = parse_ingress(text)
    assert model.name == "shop"
    assert model.default_backend == Backend("web", 5000)
    assert model.backends() == [Backend("web", 5000), Backend("api", "http")]


def test_v1_details() -> None:
    model = parse_ingress(V1)
    assert model.rules[0].host == "shop.example.com" and model.rules[0].paths[0].path_type == "Prefix"
    assert model.tls_secrets == ("shop-tls",)
    assert model.annotations["kubernetes.io/ingress.global-static-ip-name"] == "shop-ip"


def test_default_backend_is_optional_and_flags_make_a_model(tmp_path: Path) -> None:
    no_default = V1.replace("  defaultBackend: {service: {name: web, port: {number: 5000}}}\n", "")
    assert parse_ingress(no_default).default_backend is None
    assert from_service("web", 5000).backends() == [Backend("web", 5000)]
    f = tmp_path / "i.yaml"
    f.write_text("---\napiVersion: v1\nkind: Service\nmetadata: {name: x}\n---\n" + V1)
    assert load_ingress(f).name == "shop"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("a: [", "i.yaml: malformed YAML at line 1"),
        ("kind: Service\n", "i.yaml: no Ingress or MultiClusterIngress found (found Service)"),
        (V1.replace("networking.k8s.io/v1", "apps/v1"), "i.yaml: apiVersion: 'apps/v1' is not an Ingress API version"),
        (V1.replace("name: api, port: {name: http}", "name: api, port: {}"),
         "spec.rules[0].http.paths[0].backend.service.port: needs exactly one of number and name"),
        (V1.replace("path: /api,", "path: api,"), "spec.rules[0].http.paths[0].path: 'api' must start with /"),
        (V1BETA1.replace("serviceName: web, ", ""), "i.yaml: spec.backend.serviceName: is required"),
        (V1.replace("number: 5000}}}\n  tls", "number: 99999}}}\n  tls"), "spec.defaultBackend.service.port: 99999 is not a port"),
        ("apiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata: {name: x}\nspec: {}\n",
         "i.yaml: spec: routes nowhere"),
        (V1.replace("pathType: Prefix, backend: {service: {name: api", "pathType: Regex, backend: {service: {name: api"),
         "pathType: 'Regex' is not Prefix, Exact or ImplementationSpecific"),
    ],
)
def test_bad_ingress_is_one_line_naming_file_and_field(text: str, message: str, tmp_path: Path) -> None:
    f = tmp_path / "i.yaml"
    f.write_text(text)
    with pytest.raises(UserError) as info:
        load_ingress(f)
    assert message in str(info.value) and "\n" not in str(info.value)
    assert str(info.value).startswith(str(f))
