"""`gitlab-mci hosted plan|apply|status|delete` end to end on the simulator: the real kubernetes, google-cloud-compute
and google-cloud-gke-hub clients, the simulated hosted Multi Cluster Ingress controller, and kubectl."""

from __future__ import annotations

import http.client
import json
import os
import socket
import ssl
import subprocess
from pathlib import Path
from typing import Any

import pytest
import requests

from gitlab_mci.sim.mci import MCI_FINALIZER, derived_service_name
from tests.cli_helpers import run_cli as cli
from tests.conftest import RunningSim
from tests.hosted.conftest import deploy_service

BASE = ["--lb", "shop", "--context", "prod1,prod2", "--service", "shop-auto-deploy", "--port", "web"]
WHERE = ["--lb", "shop", "--context", "prod1"]
MCS_NAME = "shop-auto-deploy"


def get(running: RunningSim, kind: str, name: str, cluster: str = "prod1", ns: str = "default") -> Any:
    version = "cloud.google.com/v1" if kind == "BackendConfig" else \
        "networking.gke.io/v1beta1" if kind == "FrontendConfig" else "networking.gke.io/v1"
    return running.sim.clusters[cluster].get(version, kind, name, ns)


def cloud(running: RunningSim) -> list[str]:
    """Compute resources of GKE's controller (mci-…) and its NEGs (k8s1-…)."""
    return sorted(f"{r['kind'].split('#')[1]}/{r['name']}" for r in running.sim.compute.resources()
                  if r["name"].startswith(("mci-", "k8s1-")))


def derived(running: RunningSim, cluster: str) -> list[str]:
    return [s["metadata"]["name"] for s in running.sim.clusters[cluster].list("v1", "Service")
            if s["metadata"]["name"].startswith("mci-")]


def kubectl(running: RunningSim, *args: str) -> str:
    done = subprocess.run(["kubectl", "--context", "prod1", *args], capture_output=True, text=True, timeout=60,
                          env={**os.environ, "KUBECONFIG": str(running.files.kubeconfig)})
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_apply_status_change_selection_and_delete(fleet: RunningSim, capsys: pytest.CaptureFixture[str],
                                                  tmp_path: Path) -> None:
    address = fleet.sim.compute.seed("globalAddresses", {"name": "web-ip"}, project="demo-project")["address"]
    args = [*BASE, "--static-ip", "web-ip", "--health-check-path", "/healthz"]
    code, out, err = cli(["hosted", "plan", *args, "--detailed-exitcode"], capsys)
    assert code == 2, err
    assert out.splitlines() == ["config cluster prod1; serving from every fleet member (europe-west1-b/prod2, "
                                "us-central1-a/prod1)", "+ BackendConfig default/shop", f"+ MultiClusterService default/{MCS_NAME}",
                                "+ MultiClusterIngress default/shop", "Plan: 3 to add, 0 to change, 0 to destroy."]
    assert fleet.sim.journal.writes() == []

    dotenv = tmp_path / "mci.env"
    code, out, err = cli(["hosted", "apply", *args, "--dotenv", str(dotenv)], capsys)
    assert code == 0, err
    assert f"ready at http://{address}/" in out
    assert dotenv.read_text() == f"MCI_VIP={address}\nMCI_URL=http://{address}/\n"
    writes = [(e.service, e.method, e.path.split("?")[0].rsplit("/", 1)[-1]) for e in fleet.sim.journal.writes()]
    assert writes == [("kube:prod1", "POST", "backendconfigs"), ("kube:prod1", "POST", "multiclusterservices"),
                      ("kube:prod1", "POST", "multiclusteringresses")]
    mcs = get(fleet, "MultiClusterService", MCS_NAME)
    assert mcs["spec"] == {"template": {"spec": {
        "selector": {"app": "shop", "tier": "web", "track": "stable"},
        "ports": [{"name": "web", "protocol": "TCP", "port": 5000, "targetPort": 5000}]}}}  # every member: no links
    assert mcs["metadata"]["annotations"] == {"beta.cloud.google.com/backend-config": '{"default": "shop"}'}
    mci = get(fleet, "MultiClusterIngress", "shop")
    assert mci["spec"]["template"]["spec"] == {"backend": {"serviceName": MCS_NAME, "servicePort": 5000}}
    assert mci["metadata"]["annotations"] == {"networking.gke.io/static-ip": address}
    assert mci["metadata"]["finalizers"] == [MCI_FINALIZER]
    assert get(fleet, "BackendConfig", "shop")["spec"] == {"healthCheck": {"type": "HTTP", "requestPath": "/healthz"}}
    # GKE's side: a derived headless Service in each cluster, NEGs per zone, the mci- load balancer on our IP.
    svc = derived_service_name("default", MCS_NAME)
    assert derived(fleet, "prod1") == derived(fleet, "prod2") == [svc]
    assert fleet.sim.clusters["prod2"].get("v1", "Service", svc, "default")["spec"]["clusterIP"] == "None"
    status = mci["status"]
    assert status["VIP"] == address
    assert len(status["CloudResources"]["NetworkEndpointGroups"]) == 2
    rule = status["CloudResources"]["ForwardingRules"][0]
    assert fleet.sim.compute.get("globalForwardingRules", rule, project="demo-project")["IPAddress"] == address
    hc = fleet.sim.compute.get("healthChecks", status["CloudResources"]["HealthChecks"][0], project="demo-project")
    assert hc["httpHealthCheck"]["requestPath"] == "/healthz"
    assert kubectl(fleet, "get", "multiclusteringress", "shop", "-o", "jsonpath={.status.VIP}") == address

    # Again: nothing to change, nothing written.
    fleet.sim.journal.reset()
    code, out, err = cli(["hosted", "apply", *args, "-o", "json"], capsys)
    assert code == 0, err
    assert json.loads(out) == {"changes": [], "vip": address, "url": f"http://{address}/"}
    assert fleet.sim.journal.writes() == []

    code, out, err = cli(["hosted", "status", *WHERE], capsys)
    assert code == 0, err
    assert f"VIP: {address}" in out and f"MultiClusterService {MCS_NAME}: all fleet members" in out
    assert f"UrlMap: {status['CloudResources']['UrlMap']}" in out
    code, out, _ = cli(["hosted", "status", *WHERE, "-o", "json"], capsys)
    assert json.loads(out)["cloudResources"] == status["CloudResources"]
    code, out, _ = cli(["hosted", "status", *WHERE, "-o", "markdown"], capsys)
    assert code == 0 and f"| VIP | {address} |" in out and "```mermaid" in out
    assert f'um --> bs0["{status["CloudResources"]["BackendServices"][0]}"]' in out

    # Serve from prod1 only: spec.clusters names it; GKE removes prod2's derived Service and NEG.
    code, out, err = cli(["hosted", "apply", *args[:2], "--context", "prod1", *args[4:]], capsys)
    assert code == 0, err
    assert f"~ MultiClusterService default/{MCS_NAME}: spec.clusters" in out
    assert get(fleet, "MultiClusterService", MCS_NAME)["spec"]["clusters"] == [{"link": "us-central1-a/prod1"}]
    assert fleet.sim.mci.settle()
    assert derived(fleet, "prod1") == [svc] and derived(fleet, "prod2") == []
    negs = get(fleet, "MultiClusterIngress", "shop")["status"]["CloudResources"]["NetworkEndpointGroups"]
    assert [n.split("/")[1] for n in negs] == ["us-central1-a"]
    # Back to every cluster: the links go again (merge patch with null).
    assert cli(["hosted", "apply", *args], capsys)[0] == 0
    assert "clusters" not in get(fleet, "MultiClusterService", MCS_NAME)["spec"]

    code, out, err = cli(["hosted", "delete", *WHERE], capsys)
    assert code == 0, err
    assert "load balancer shop deleted (3 object(s)" in out
    for kind, name in (("MultiClusterIngress", "shop"), ("MultiClusterService", MCS_NAME), ("BackendConfig", "shop")):
        assert get(fleet, kind, name) is None
    assert cloud(fleet) == [] and derived(fleet, "prod1") == derived(fleet, "prod2") == []
    assert fleet.sim.compute.get("globalAddresses", "web-ip", project="demo-project") is not None  # never ours
    fleet.sim.journal.reset()
    code, out, _ = cli(["hosted", "delete", *WHERE], capsys)
    assert code == 0 and "nothing to delete" in out and fleet.sim.journal.writes() == []


def test_https_redirect_rules_and_pre_shared_certificates(fleet: RunningSim, capsys: pytest.CaptureFixture[str],
                                                          tmp_path: Path) -> None:
    from tests.pki import self_signed

    cert, key = self_signed("shop.example.com")
    fleet.sim.compute.seed("sslCertificates", {"name": "shop-cert", "certificate": cert, "privateKey": key},
                           project="demo-project")
    fleet.sim.compute.seed("globalAddresses", {"name": "web-ip"}, project="demo-project")
    ingress = tmp_path / "ingress.yaml"
    ingress.write_text(
        "apiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata:\n  name: shop\n  annotations:\n"
        "    kubernetes.io/ingress.global-static-ip-name: web-ip\n"
        "    networking.gke.io/pre-shared-certs: shop-cert\nspec:\n"
        "  defaultBackend: {service: {name: shop-auto-deploy, port: {number: 5000}}}\n"
        "  rules:\n  - host: shop.example.com\n    http:\n      paths:\n"
        "      - {path: /api, pathType: Prefix, backend: {service: {name: shop-auto-deploy, port: {name: web}}}}\n")
    dotenv = tmp_path / "mci.env"
    code, out, err = cli(["hosted", "apply", "--lb", "shop", "--context", "prod1,prod2", "--ingress", str(ingress),
                          "--https-redirect", "--dotenv", str(dotenv)], capsys)
    assert code == 0, err
    mci = get(fleet, "MultiClusterIngress", "shop")
    assert mci["spec"]["template"]["spec"]["rules"] == [{"host": "shop.example.com", "http": {"paths": [
        {"path": "/api", "backend": {"serviceName": MCS_NAME, "servicePort": 5000}},
        {"path": "/api/*", "backend": {"serviceName": MCS_NAME, "servicePort": 5000}}]}}]
    notes = mci["metadata"]["annotations"]
    assert notes["networking.gke.io/pre-shared-certs"] == "shop-cert"
    assert notes["networking.gke.io/frontend-config"] == "shop"
    assert get(fleet, "FrontendConfig", "shop")["spec"]["redirectToHttps"]["enabled"] is True
    vip = mci["status"]["VIP"]
    assert dotenv.read_text() == f"MCI_VIP={vip}\nMCI_URL=https://{vip}/\n"
    # The controller built an HTTPS proxy with our certificate and an HTTP→HTTPS redirect map.
    https = [r for r in fleet.sim.compute.resources("targetHttpsProxies") if r["name"].startswith("mci-")]
    assert len(https) == 1 and https[0]["sslCertificates"][0].endswith("/sslCertificates/shop-cert")
    assert any(m.get("defaultUrlRedirect", {}).get("httpsRedirect") for m in fleet.sim.compute.resources("urlMaps"))
    # Dropping the redirect removes the FrontendConfig and the annotation that named it.
    code, out, err = cli(["hosted", "apply", "--lb", "shop", "--context", "prod1,prod2", "--ingress", str(ingress)],
                         capsys)
    assert code == 0, err
    assert "- FrontendConfig default/shop" in out
    assert "networking.gke.io/frontend-config" not in get(fleet, "MultiClusterIngress", "shop")["metadata"]["annotations"]
    assert cli(["hosted", "delete", *WHERE], capsys)[0] == 0


HTTPS_ONLY_INGRESS = """\
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata:
  name: shop
  annotations:
    kubernetes.io/ingress.allow-http: "false"
    kubernetes.io/ingress.global-static-ip-name: web-ip
    ingress.gcp.kubernetes.io/pre-shared-cert: shop-cert
spec:
  defaultBackend: {service: {name: shop-auto-deploy, port: {name: web}}}
"""


def test_an_https_only_ingress_is_refused_in_hosted_mode_unless_port_80_may_only_redirect(
        fleet: RunningSim, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    """The user's Ingress says allow-http "false" (the self-managed mode then opens no port 80). GKE's Multi Cluster
    Ingress always serves port 80, so hosted mode must not drop the annotation silently: it refuses before any
    write, naming the annotation and the alternatives; with --https-redirect, port 80 answers only with a redirect
    to HTTPS, through the load balancer the simulated controller built, and the app is served on 443 alone."""
    from google.cloud import compute_v1
    from kubernetes import client as k8s

    from gitlab_mci.gcp import Compute
    from tests.hosted.conftest import LABELS
    from tests.pki import self_signed

    cert, key = self_signed("shop.example.com")
    fleet.sim.compute.seed("sslCertificates", {"name": "shop-cert", "certificate": cert, "privateKey": key},
                           project="demo-project")
    fleet.sim.compute.seed("globalAddresses", {"name": "web-ip"}, project="demo-project")
    ingress = tmp_path / "ingress.yaml"
    ingress.write_text(HTTPS_ONLY_INGRESS)
    args = ["--lb", "shop", "--context", "prod1,prod2", "--ingress", str(ingress)]
    fleet.sim.journal.reset()
    for command in ("plan", "apply"):
        code, _, err = cli(["hosted", command, *args], capsys)
        assert code == 1 and len(err.splitlines()) == 1, err
        assert 'kubernetes.io/ingress.allow-http: "false"' in err and "--https-redirect" in err
        assert "gitlab-mci lb" in err
    assert fleet.sim.journal.writes() == []
    assert get(fleet, "MultiClusterIngress", "shop") is None

    for name in ("prod1", "prod2"):  # the app's pods, so that HTTPS has somewhere to go
        api = k8s.ApiClient(k8s.Configuration(host=fleet.sim.kube_url(name)))
        k8s.AppsV1Api(api).create_namespaced_deployment("default", {
            "metadata": {"name": "shop"},
            "spec": {"replicas": 1, "selector": {"matchLabels": LABELS}, "template": {
                "metadata": {"labels": LABELS}, "spec": {"containers": [{"name": "app", "image": "x"}]}}}})
    code, _, err = cli(["hosted", "apply", *args, "--https-redirect"], capsys)
    assert code == 0, err
    assert get(fleet, "FrontendConfig", "shop")["spec"]["redirectToHttps"]["enabled"] is True
    # What GKE built: port 80's proxy has a URL map that only redirects; 443 routes to the app.
    rules = {r["portRange"]: r for r in fleet.sim.compute.resources("globalForwardingRules")}
    assert sorted(rules) == ["443-443", "80-80"]
    http_proxy = next(p for p in fleet.sim.compute.resources("targetHttpProxies")
                      if p["selfLink"] == rules["80-80"]["target"])
    http_map = next(m for m in fleet.sim.compute.resources("urlMaps") if m["selfLink"] == http_proxy["urlMap"])
    assert http_map["defaultUrlRedirect"]["httpsRedirect"] is True and "defaultService" not in http_map

    gc = Compute("demo-project", fleet.sim.compute_url)  # GKE's 15 s checks made quick, as a BackendConfig can
    checks = gc.client(compute_v1.HealthChecksClient)
    for hc in checks.list(project="demo-project"):
        gc.wait(checks.patch(project="demo-project", health_check=hc.name,
                             health_check_resource=compute_v1.HealthCheck(check_interval_sec=1, timeout_sec=1)))
    assert fleet.sim.dataplane.wait_health("HEALTHY", timeout=5), fleet.sim.dataplane.health()
    vip = rules["80-80"]["IPAddress"]
    plain = fleet.sim.dataplane.url_for(vip, 80)
    for path in ("/", "/checkout?step=2"):
        answer = requests.get(plain + path, headers={"Host": "shop.example.com"}, timeout=5, allow_redirects=False)
        assert answer.status_code == 301 and answer.headers["Location"] == f"https://shop.example.com{path}"
        assert answer.content == b""  # never the app
    secure = fleet.sim.dataplane.url_for(vip, 443)
    host, port = secure.removeprefix("https://").split(":")
    context = ssl.create_default_context(cadata=cert)
    with socket.create_connection((host, int(port)), timeout=5) as raw, \
            context.wrap_socket(raw, server_hostname="shop.example.com") as tls:
        tls.sendall(b"GET /checkout HTTP/1.0\r\nHost: shop.example.com\r\n\r\n")
        response = http.client.HTTPResponse(tls)  # type: ignore[arg-type]
        response.begin()
        assert response.status == 200 and json.loads(response.read())["path"] == "/checkout"
    assert cli(["hosted", "delete", *WHERE], capsys)[0] == 0


TLS_INGRESS = """\
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: shop}
spec:
  tls: [{hosts: [shop.example.com], secretName: shop-tls}]
  defaultBackend: {service: {name: shop-auto-deploy, port: {name: web}}}
"""


def test_an_ingress_with_a_tls_secret_is_served_over_https_with_that_certificate_in_hosted_mode(
        fleet: RunningSim, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    """The user's Ingress names its certificate as a TLS Secret (spec.tls), which the self-managed mode uploads.
    Hosted mode must not drop it: the Secret must be in the config cluster (refused before any write when it is
    not), and the MultiClusterIngress carries spec.tls, from which GKE serves HTTPS with that certificate."""
    import base64

    from kubernetes import client as k8s

    from tests.pki import self_signed

    ingress = tmp_path / "ingress.yaml"
    ingress.write_text(TLS_INGRESS)
    args = ["--lb", "shop", "--context", "prod1,prod2", "--ingress", str(ingress), "--https-redirect"]
    code, _, err = cli(["hosted", "apply", *args], capsys)
    assert code == 1 and len(err.splitlines()) == 1, err
    assert "Secret default/shop-tls (spec.tls of the Ingress) in the config cluster, context 'prod1', does not " \
           "exist" in err
    assert fleet.sim.journal.writes() == []

    cert, key = self_signed("shop.example.com")
    core = k8s.CoreV1Api(k8s.ApiClient(k8s.Configuration(host=fleet.sim.kube_url("prod1"))))
    core.create_namespaced_secret("default", {
        "metadata": {"name": "shop-tls"}, "type": "kubernetes.io/tls",
        "data": {"tls.crt": base64.b64encode(cert.encode()).decode(),
                 "tls.key": base64.b64encode(key.encode()).decode()}})
    code, out, err = cli(["hosted", "apply", *args], capsys)
    assert code == 0, err
    assert key not in out + err
    mci = get(fleet, "MultiClusterIngress", "shop")
    assert mci["spec"]["template"]["spec"]["tls"] == [{"secretName": "shop-tls"}]
    # GKE's side: a certificate made of the Secret on the HTTPS proxy, served on 443 of the VIP.
    [proxy] = fleet.sim.compute.resources("targetHttpsProxies")
    [made] = [c for c in fleet.sim.compute.resources("sslCertificates") if proxy["sslCertificates"] == [c["selfLink"]]]
    assert made["name"].startswith("mci-")
    secure = fleet.sim.dataplane.url_for(mci["status"]["VIP"], 443)
    host, port = secure.removeprefix("https://").split(":")
    context = ssl.create_default_context(cadata=cert)
    with socket.create_connection((host, int(port)), timeout=5) as raw, \
            context.wrap_socket(raw, server_hostname="shop.example.com") as tls:
        der = tls.getpeercert(binary_form=True)
        assert der is not None and ssl.DER_cert_to_PEM_cert(der).strip() == cert.strip()
    assert cli(["hosted", "delete", *WHERE], capsys)[0] == 0
    assert [c for c in fleet.sim.compute.resources("sslCertificates") if c["name"].startswith("mci-")] == []


def _namespace_only_in_prod1(running: RunningSim) -> None:
    deploy_service(running, "prod1", namespace="shop")


def _namespace_only_in_prod2(running: RunningSim) -> None:
    deploy_service(running, "prod2", namespace="shop")


@pytest.mark.parametrize(
    ("args", "setup", "message"),
    [
        (["--lb", "shop", "--context", "prod1,prod2=us-central1-a/prod9", "--service", MCS_NAME], None,
         "cluster link 'us-central1-a/prod9' is not a member of the fleet of project demo-project"),
        (["--lb", "shop", "--context", "prod1=prod1", "--service", MCS_NAME], None,
         "is not <zone-or-region>/<cluster-name>"),
        ([*BASE, "--namespace", "shop"], _namespace_only_in_prod1,
         "namespace 'shop' does not exist in context 'prod2' (a selected cluster)"),
        (["--lb", "shop", "--context", "prod2", "--config-context", "prod1", "--service", MCS_NAME, "-n", "shop"],
         _namespace_only_in_prod2, "namespace 'shop' does not exist in context 'prod1' (the config cluster)"),
        ([*BASE, "--static-ip", "no-such-ip"], None,
         "--static-ip 'no-such-ip': no global address of that name in project demo-project"),
        (["--lb", "mci-shop", "--context", "prod1,prod2", "--service", MCS_NAME], None,
         "--lb (the MultiClusterIngress name) 'mci-shop' starts with 'mci-'"),
        (["--lb", "shop", "--context", "prod1,prod2", "--service", "mci-app-auto-deploy"], None,
         "backend Service (the MultiClusterService name) 'mci-app-auto-deploy' starts with 'mci-'"),
        ([*BASE, "--ssl-certificate", "missing-cert"], None, "pre-shared certificate 'missing-cert' not found"),
        ([*BASE, "--https-redirect"], None, "--https-redirect needs HTTPS"),
        (["--lb", "shop", "--context", "prod1,prod2", "--service", "nope"], None,
         "Service default/nope (routed to by the Ingress) does not exist in context 'prod1'"),
        ([*BASE[:6], "--port", "8080"], None, "Service default/shop-auto-deploy has no port 8080"),
        ([*BASE, "--config-context", "prod2"], None,
         "--config-context prod2 is cluster europe-west1-b/prod2, but the fleet's Multi Cluster Ingress config "
         "cluster is us-central1-a/prod1"),
    ],
)
def test_bad_input_is_one_line_before_any_write(fleet: RunningSim, capsys: pytest.CaptureFixture[str],
                                                args: list[str], setup: Any, message: str) -> None:
    if setup is not None:
        setup(fleet)
        fleet.sim.journal.reset()
    code, _, err = cli(["hosted", "apply", *args], capsys)
    assert code == 1 and message in err and len(err.splitlines()) == 1, err
    assert fleet.sim.journal.writes() == []


def test_an_object_with_our_name_that_we_did_not_create_is_refused(fleet: RunningSim,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    fleet.sim.clusters["prod1"].seed({
        "apiVersion": "networking.gke.io/v1", "kind": "MultiClusterService",
        "metadata": {"name": MCS_NAME, "namespace": "default"},
        "spec": {"template": {"spec": {"selector": {"app": "other"}, "ports": [{"port": 80}]}}}})
    fleet.sim.journal.reset()
    code, _, err = cli(["hosted", "apply", *BASE], capsys)
    assert code == 1 and len(err.splitlines()) == 1
    assert f"MultiClusterService default/{MCS_NAME} already exists in context 'prod1' and was not created by " \
           "gitlab-mci" in err
    assert fleet.sim.journal.writes() == []
    code, _, err = cli(["hosted", "apply", *BASE, "--adopt", "--no-wait"], capsys)
    assert code == 0, err
    assert get(fleet, "MultiClusterService", MCS_NAME)["metadata"]["labels"]["gitlab-mci/lb"] == "shop"


def test_without_the_feature_apply_says_how_to_enable_it(make_sim: Any, monkeypatch: pytest.MonkeyPatch,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    from gitlab_mci.sim.spec import parse_spec

    running = make_sim(parse_spec({"clusters": [{"name": "prod1"}, {"name": "prod2",
                                                                     "location": "europe-west1-b"}]}))
    for name in ("prod1", "prod2"):
        deploy_service(running, name)
        running.sim.gkehub.register(name)
    for key, value in running.env.items():
        monkeypatch.setenv(key, value)
    running.sim.journal.reset()
    code, _, err = cli(["hosted", "apply", *BASE], capsys)
    assert code == 1 and "Multi Cluster Ingress is not enabled in the fleet of project demo-project" in err
    assert "gitlab-mci fleet enable --context prod1,prod2 --config-context prod1" in err
    assert running.sim.journal.writes() == []


def test_apply_times_out_without_a_vip_and_status_waits(fleet: RunningSim, capsys: pytest.CaptureFixture[str]) -> None:
    fleet.sim.mci.delay = 30.0  # GKE is slow today
    code, _, err = cli(["hosted", "apply", *BASE, "--timeout", "0.3"], capsys)
    assert code == 1 and "has no VIP after 0.3s" in err and len(err.splitlines()) == 1
    code, out, _ = cli(["hosted", "status", *WHERE, "--wait", "0.2"], capsys)
    assert code == 3 and "VIP: (pending" in out
    fleet.sim.mci.delay = 0.05
    fleet.sim.mci.poke()
    code, out, err = cli(["hosted", "status", *WHERE, "--wait", "5"], capsys)
    assert code == 0 and "VIP: 127.2." in out, err
    code, _, err = cli(["hosted", "status", "--lb", "other", "--context", "prod1"], capsys)
    assert code == 1 and "MultiClusterIngress default/other not found in context 'prod1'" in err


def test_status_and_delete_import_no_google_cloud_library(fleet: RunningSim, capsys: pytest.CaptureFixture[str]) -> None:
    import sys

    assert cli(["hosted", "apply", *BASE], capsys)[0] == 0
    script = ("import sys\nfrom gitlab_mci.cli import main\n"
              "for args in (['hosted', 'status', '--lb', 'shop', '--context', 'prod1'],\n"
              "             ['hosted', 'delete', '--lb', 'shop', '--context', 'prod1']):\n"
              "    try:\n        main(args)\n    except SystemExit as exc:\n        assert not exc.code, exc.code\n"
              "print(sorted({m for m in sys.modules if m.startswith(('google.cloud', 'google.api_core'))}))\n")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60,
                          env={**os.environ})
    assert done.returncode == 0, done.stderr
    # No Google Cloud client library (google.auth comes with the kubernetes client itself).
    assert done.stdout.splitlines()[-1] == "[]"
    assert get(fleet, "MultiClusterIngress", "shop") is None


def test_quotas_are_checked_before_any_write(fleet: RunningSim, capsys: pytest.CaptureFixture[str],
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    fleet.sim.clusters["prod1"].seed({
        "apiVersion": "networking.gke.io/v1", "kind": "MultiClusterIngress",
        "metadata": {"name": "other", "namespace": "default"},
        "spec": {"template": {"spec": {"backend": {"serviceName": "other", "servicePort": 80}}}}})
    fleet.sim.journal.reset()
    monkeypatch.setattr("gitlab_mci.hosted.prepare.MAX_MCI", 1)
    code, _, err = cli(["hosted", "apply", *BASE], capsys)
    assert code == 1 and "1 MultiClusterIngress objects exist in the config cluster: GKE allows 1 per project" in err
    monkeypatch.setattr("gitlab_mci.hosted.prepare.MAX_MCI", 100)
    monkeypatch.setattr("gitlab_mci.hosted.prepare.MAX_MCS", 0)
    code, _, err = cli(["hosted", "apply", *BASE], capsys)
    assert code == 1 and "GKE allows 0 per project" in err and len(err.splitlines()) == 1
    assert fleet.sim.journal.writes() == []


def test_what_gke_cannot_build_is_said_by_apply_and_status(fleet: RunningSim,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    # A certificate deleted between the check and GKE's sync: the controller's Warning Event reaches the user.
    from tests.pki import self_signed

    cert, key = self_signed("shop.example.com")
    fleet.sim.compute.seed("sslCertificates", {"name": "gone-cert", "certificate": cert, "privateKey": key},
                           project="demo-project")
    fleet.sim.mci.delay = 0.5
    code, _, err = cli(["hosted", "apply", *BASE, "--ssl-certificate", "gone-cert", "--no-wait"], capsys)
    assert code == 0, err
    fleet.sim.compute.remove("sslCertificates", "gone-cert", project="demo-project")
    assert fleet.sim.mci.settle()
    code, out, _ = cli(["hosted", "status", *WHERE], capsys)
    assert code == 0 and "warning: pre-shared certificate(s) gone-cert not found" in out
    events = kubectl(fleet, "get", "events", "--field-selector", "type=Warning", "-o", "json")
    assert [e["source"]["component"] for e in json.loads(events)["items"]] == ["multi-cluster-ingress-controller"]


def test_a_timeout_names_gkes_last_warning(fleet: RunningSim) -> None:
    from gitlab_mci import kube
    from gitlab_mci.errors import UserError
    from gitlab_mci.hosted.engine import wait_for_vip

    fleet.sim.clusters["prod1"].seed({
        "apiVersion": "networking.gke.io/v1", "kind": "MultiClusterIngress",
        "metadata": {"name": "bad", "namespace": "default"},
        "spec": {"template": {"spec": {"backend": {"serviceName": "nope", "servicePort": 80}}}}})
    assert fleet.sim.mci.settle()
    with pytest.raises(UserError) as info:
        wait_for_vip(kube.connect("prod1"), "default", "bad", timeout=0.2)
    message = str(info.value)
    assert message.startswith("MultiClusterIngress default/bad has no VIP after 0.2s; GKE says: ")
    assert "MultiClusterService default/nope not found" in message or "no backend could be built" in message
    assert message.endswith("; see `gitlab-mci hosted status`")
