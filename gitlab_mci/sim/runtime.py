"""The running simulator: emulators, their HTTP servers, and the files that point clients at them.

:class:`Simulator` is what ``gitlab-mci sim up`` runs and what the test fixtures start in-process. The Compute
endpoint also answers a small admin API under ``/_sim/`` (journal, faults, state) so a detached simulator can be
inspected and steered from another process (``gitlab-mci sim journal``, ``gitlab-mci sim fault``).
"""

from __future__ import annotations

import json
import os
import shlex
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from gitlab_mci.sim.httpd import FaultRule, Faults, Journal, Request, Response, SimServer, google_error
from gitlab_mci.sim.spec import WorldSpec
from gitlab_mci.sim.world import ClusterRecord, plan_world, seed_cluster, seed_compute


@dataclass(frozen=True)
class SimFiles:
    """Where the simulator wrote the configuration that points clients at it."""

    state_dir: Path
    kubeconfig: Path
    env: Path
    dotenv: Path
    gcloud_config: Path
    state: Path


class Simulator:
    """The Compute emulator plus one Kubernetes API server per cluster, each on its own loopback port."""

    def __init__(self, spec: WorldSpec, *, host: str = "127.0.0.1", kube_latency: float = 0.0,
                 mci_delay: float | None = None) -> None:
        # Imported here so that importing the runtime (e.g. for `sim down`) stays cheap.
        from gitlab_mci.sim.compute import ComputeEmulator
        from gitlab_mci.sim.kube import KubeApiServer

        self.spec = spec
        self.host = host
        self.journal = Journal()
        self.faults = Faults()
        self.records: list[ClusterRecord] = plan_world(spec)
        self.compute = ComputeEmulator(
            operation_latency=spec.operation_latency,
            faults=self.faults,
            managed_cert_delay=spec.managed_cert_delay,
        )
        seed_compute(self.compute, spec, self.records)
        self.clusters: dict[str, KubeApiServer] = {}
        for i, rec in enumerate(self.records):
            kube = KubeApiServer(rec.spec.name, node_port_range=spec.node_port_range, seed=spec.seed + i)
            seed_cluster(kube, spec, rec)
            self.clusters[rec.spec.name] = kube
        self._compute_server = SimServer(
            self._handle_compute, service="compute", journal=self.journal, faults=self.faults, host=host,
            is_write=self.compute.is_write, admin_prefix="/_sim/",
        )
        self._kube_servers = {
            name: SimServer(
                kube.handle, service=f"kube:{name}", journal=self.journal, faults=self.faults, host=host,
                latency=kube_latency,
            )
            for name, kube in self.clusters.items()
        }
        # The fleet (GKE Hub) and Google's hosted Multi Cluster Ingress controller.
        from gitlab_mci.sim.gkehub import GkeHubEmulator
        from gitlab_mci.sim.mci import MciController

        self.gkehub = GkeHubEmulator(spec)
        self.mci = MciController(spec, self.records, self.clusters, self.compute, self.gkehub,
                                 delay=spec.mci_delay if mci_delay is None else mci_delay)
        # Multi-cluster Services (ServiceExport → ServiceImport) and the multi-cluster Gateway controller; they
        # take the hosted controller's provisioning delay (each settable: sim.mcs.delay, sim.gateway.delay).
        from gitlab_mci.sim.gateway import GatewayController
        from gitlab_mci.sim.mcs import McsController

        self.mcs = McsController(spec, self.clusters, self.gkehub, delay=self.mci.delay)
        self.gateway = GatewayController(spec, self.records, self.clusters, self.compute, self.gkehub,
                                         delay=self.mci.delay)
        self._gkehub_server = SimServer(self.gkehub.handle, service="gkehub", journal=self.journal,
                                        faults=self.faults, host=host)
        # Certificate Manager: its own API (certificate maps a target HTTPS proxy references).
        from gitlab_mci.sim.certmanager import CertificateManagerEmulator

        self.certmanager = CertificateManagerEmulator((spec.project, str(spec.project_number)))
        self.certmanager.map_users = self.compute.certificate_map_users
        self.compute.certificate_map_exists = self.certmanager.map_exists
        self._certmanager_server = SimServer(self.certmanager.handle, service="certificatemanager",
                                             journal=self.journal, faults=self.faults, host=host)
        # The load balancers' data plane: listeners on loopback, routing, health checks, fail/heal.
        from gitlab_mci.sim.dataplane import DataPlane

        self.dataplane = DataPlane(self.compute, self.clusters, self.records, project=spec.project)
        self.dataplane.on_change = self._dataplane_changed
        self._state_dir: Path | None = None
        self.started_at = 0.0
        # GKE's NEG controller in every cluster: standalone NEGs for Services annotated cloud.google.com/neg.
        from gitlab_mci.sim.negs import NegController

        self.negs = NegController(spec, self.records, self.clusters, self.compute, self.dataplane,
                                  delay=spec.neg_delay)
        self.dataplane.certificate_map = self.certmanager.map_certificates
        self.dataplane.certificate_map_revision = self.certmanager.revision

    # --- lifecycle -------------------------------------------------------------------------------------------

    def start(self) -> Simulator:
        self._compute_server.start()
        for server in self._kube_servers.values():
            server.start()
        self._gkehub_server.start()
        self._certmanager_server.start()
        self.mci.start()
        self.mcs.start()
        self.gateway.start()
        self.dataplane.start()
        self.negs.start()
        self.started_at = time.time()
        return self

    def stop(self) -> None:
        self.negs.stop()
        self.dataplane.stop()
        self.gateway.stop()
        self.mcs.stop()
        self.mci.stop()
        self._gkehub_server.stop()
        self._certmanager_server.stop()
        for server in self._kube_servers.values():
            server.stop()
        self._compute_server.stop()

    def __enter__(self) -> Simulator:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- endpoints -------------------------------------------------------------------------------------------

    @property
    def compute_url(self) -> str:
        return self._compute_server.url

    @property
    def gkehub_url(self) -> str:
        return self._gkehub_server.url

    @property
    def certmanager_url(self) -> str:
        return self._certmanager_server.url

    def kube_url(self, cluster: str) -> str:
        return self._kube_servers[cluster].url

    def set_kube_latency(self, seconds: float) -> None:
        """Add ``seconds`` to every Kubernetes API answer (benchmarks of per-cluster fan-out)."""
        for server in self._kube_servers.values():
            server.latency = seconds

    def env(self, files: SimFiles | None = None) -> dict[str, str]:
        """Environment variables that point gitlab-mci (and kubectl, gcloud when files are given) here."""
        env = {
            "GITLAB_MCI_COMPUTE_ENDPOINT": self.compute_url,
            "GITLAB_MCI_GKEHUB_ENDPOINT": self.gkehub_url,
            "GITLAB_MCI_CERTIFICATEMANAGER_ENDPOINT": self.certmanager_url,
            "GOOGLE_CLOUD_PROJECT": self.spec.project,
        }
        if files is not None:
            env.update({
                "KUBECONFIG": str(files.kubeconfig),
                "CLOUDSDK_CONFIG": str(files.gcloud_config),
                # The state directory, which every `gitlab-mci sim` command reads (its --state-dir).
                "GITLAB_MCI_SIM_DIR": str(files.state_dir),
            })
        return env

    def kubeconfig(self) -> dict[str, Any]:
        """A kubeconfig with one context per cluster, named after the cluster."""
        names = list(self.clusters)
        return {
            "apiVersion": "v1",
            "kind": "Config",
            "preferences": {},
            "clusters": [{"name": n, "cluster": {"server": self.kube_url(n)}} for n in names],
            "users": [{"name": "sim-user", "user": {}}],
            "contexts": [
                {"name": n, "context": {"cluster": n, "user": "sim-user", "namespace": "default"}} for n in names
            ],
            "current-context": names[0],
        }

    def state(self) -> dict[str, Any]:
        """What `sim status` shows and what another process needs to find this simulator."""
        return {
            "pid": os.getpid(),
            "ready": True,
            "started_at": self.started_at,
            "project": self.spec.project,
            "compute": self.compute_url,
            "gkehub": self.gkehub_url,
            "certificatemanager": self.certmanager_url,
            "clusters": {
                rec.spec.name: {
                    "server": self.kube_url(rec.spec.name),
                    "location": rec.spec.location,
                    "zones": list(rec.spec.zones),
                    "nodes": len(rec.nodes),
                    "vpcNative": rec.spec.vpc_native,
                }
                for rec in self.records
            },
            "listeners": self.dataplane.listeners(),
        }

    def write_files(self, state_dir: str | Path) -> SimFiles:
        """Write kubeconfig, shell env file, dotenv file, a gcloud configuration directory and state.json."""
        d = Path(state_dir).resolve()
        d.mkdir(parents=True, exist_ok=True)
        files = SimFiles(d, d / "kubeconfig", d / "env.sh", d / "sim.env", d / "gcloud", d / "state.json")
        files.kubeconfig.write_text(yaml.safe_dump(self.kubeconfig(), sort_keys=False))
        files.kubeconfig.chmod(0o600)
        # gcloud reads its properties from CLOUDSDK_CONFIG; writing them directly saves ~1 s per `gcloud config set`.
        configs = files.gcloud_config / "configurations"
        configs.mkdir(parents=True, exist_ok=True)
        (files.gcloud_config / "active_config").write_text("default")
        (configs / "config_default").write_text(
            "[core]\n"
            f"project = {self.spec.project}\n"
            "disable_usage_reporting = True\n"
            "[auth]\n"
            "disable_credentials = True\n"
            "[api_endpoint_overrides]\n"
            f"compute = {self.compute_url}/compute/v1/\n"
            f"gkehub = {self.gkehub_url}/\n"
            f"certificatemanager = {self.certmanager_url}/\n"
            "[component_manager]\n"
            "disable_update_check = True\n"
        )
        env = self.env(files)
        files.env.write_text("".join(f"export {k}={shlex.quote(v)}\n" for k, v in env.items()))
        files.dotenv.write_text("".join(f"{k}={v}\n" for k, v in env.items()))
        files.state.write_text(json.dumps({**self.state(), "files": {k: str(v) for k, v in vars(files).items()}}))
        self._state_dir = d
        self._dataplane_changed(self.dataplane)
        return files

    def _dataplane_changed(self, dataplane: Any) -> None:
        # listeners.json: VIP:port → loopback URL, rewritten whenever a listener opens or closes.
        if self._state_dir is not None:
            tmp = self._state_dir / "listeners.json.tmp"
            tmp.write_text(json.dumps({"listeners": dataplane.listeners()}, indent=2))
            tmp.replace(self._state_dir / "listeners.json")

    # --- admin API -------------------------------------------------------------------------------------------

    def _handle_compute(self, req: Request) -> Response:
        if req.path.startswith("/_sim/"):
            return self._admin(req)
        return self.compute.handle(req)

    def _admin(self, req: Request) -> Response:
        what = req.path.removeprefix("/_sim/").strip("/")
        if what == "state" and req.method == "GET":
            return Response(200, self.state())
        if what == "journal":
            if req.method == "GET":
                return Response(200, {"entries": self.journal.to_json()})
            if req.method == "DELETE":
                self.journal.reset()
                return Response(200, {})
        if what == "dataplane" or what.startswith("dataplane/"):
            return self._admin_dataplane(req, what.removeprefix("dataplane").strip("/"))
        if what == "faults":
            if req.method == "GET":
                return Response(200, {"faults": [r.describe() for r in self.faults.rules()]})
            if req.method == "DELETE":
                self.faults.clear()
                return Response(200, {})
            if req.method == "POST":
                try:
                    rule = add_fault(self.faults, req.json() or {})
                except (ValueError, TypeError) as exc:
                    return google_error(400, f"bad fault rule: {exc}", "invalid")
                return Response(200, rule.describe())
        return google_error(404, f"unknown simulator admin call {req.method} {req.path}", "notFound")


    def _admin_dataplane(self, req: Request, action: str) -> Response:
        from gitlab_mci.sim.dataplane import UnknownTarget

        if action == "" and req.method == "GET":
            return Response(200, self.dataplane.describe())
        if action in ("fail", "heal") and req.method == "POST":
            try:
                body = req.json() or {}
                target, mode = body.get("target"), body.get("mode")
                if action == "fail":
                    if not isinstance(target, str):
                        raise UnknownTarget("a target (cluster or zone) is required")
                    fault = self.dataplane.fail(target, mode)
                    return Response(200, {"fault": fault, "faults": self.dataplane.faults()})
                healed = self.dataplane.heal(target if isinstance(target, str) else None, mode)
                return Response(200, {"healed": healed, "faults": self.dataplane.faults()})
            except (UnknownTarget, ValueError, AttributeError) as exc:
                return google_error(400, str(exc), "invalid")
        return google_error(404, f"unknown simulator admin call {req.method} {req.path}", "notFound")


_FAULT_FIELDS = {"action", "status", "reason", "latency", "service", "method", "path", "probability", "seed", "nth",
                 "onward", "times"}


def add_fault(faults: Faults, raw: dict[str, Any]) -> FaultRule:
    """Add a fault rule from its JSON description (unknown keys are an error, not ignored)."""
    unknown = set(raw) - _FAULT_FIELDS
    if unknown:
        raise ValueError(f"unknown field(s) {', '.join(sorted(unknown))}")
    return faults.add(FaultRule(**raw))
