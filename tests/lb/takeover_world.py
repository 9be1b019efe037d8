"""A user's running kubemci chain (the recipe's: static IP `web-ip`, optional certificate) in a private simulator,
and `lb takeover` run against it in-process."""

from __future__ import annotations

import json
import re
import threading
import time
import urllib.error
import urllib.request
from typing import Any

import pytest

from gitlab_mci.sim.dataplane import PATH_HEADER
from gitlab_mci.sim.kubemci import Built, KubemciSpec, build
from tests.cli_helpers import run_cli
from tests.conftest import RunningSim

P = "demo-project"
ROUTING = ["--service", "shop-auto-deploy", "--port", "web"]
FAST = ["--check-interval-sec", "1", "--timeout", "60"]


def kubemci(running: RunningSim, clusters: tuple[str, ...] = ("prod1", "prod2"), **kwargs: Any) -> Built:
    """`kubemci create shop` over ``clusters`` on the static IP web-ip (the app on node port 30999)."""
    spec = KubemciSpec("shop", clusters, static_ip="web-ip", **kwargs)
    built = build(running.sim.compute_url, P, {c: running.sim.kube_url(c) for c in spec.clusters}, spec)
    assert running.sim.dataplane.wait_health("HEALTHY", timeout=20)
    return built


def takeover(capsys: pytest.CaptureFixture[str], contexts: str = "prod1,prod2", *extra: str,
             address: str = "web-ip") -> tuple[int, str, str]:
    return run_cli(["lb", "takeover", "--lb", "shop", "--context", contexts, "--address", address, *ROUTING,
                    *FAST, *extra], capsys)


def writes(running: RunningSim) -> int:
    return len(running.sim.journal.writes("compute"))


class Traffic:
    """Requests through the data plane at a steady pace (default 50/s) to every listener of the address, from a
    background thread; each answer's status and front end (classic or managed path) is kept."""

    def __init__(self, running: RunningSim, vip: str, ports: tuple[int, ...], rate: float = 50.0) -> None:
        import ssl

        self.urls = [running.sim.dataplane.url_for(vip, p) + "/" for p in ports]
        self.context = ssl.create_default_context()
        self.context.check_hostname, self.context.verify_mode = False, ssl.CERT_NONE
        self.interval = 1.0 / rate
        self.results: list[tuple[float, int, str, str]] = []  # (when, status, path, detail)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _one(self, url: str) -> tuple[int, str, str]:
        try:
            with urllib.request.urlopen(url, timeout=10, context=self.context if url.startswith("https") else None) \
                    as resp:
                return resp.status, resp.headers.get(PATH_HEADER, ""), json.loads(resp.read())["cluster"]
        except urllib.error.HTTPError as exc:
            return exc.code, exc.headers.get(PATH_HEADER, ""), f"{url}: HTTP {exc.code}"
        except OSError as exc:
            return 0, "", f"{url}: {exc}"

    def _run(self) -> None:
        i = 0
        next_at = time.monotonic()
        while not self._stop.is_set():
            url = self.urls[i % len(self.urls)]
            i += 1
            status, path, detail = self._one(url)
            self.results.append((time.monotonic(), status, path, detail))
            next_at += self.interval
            self._stop.wait(max(0.0, next_at - time.monotonic()))  # pacing, not waiting for a state

    def __enter__(self) -> Traffic:
        self.started = time.monotonic()
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(timeout=30)
        self.seconds = time.monotonic() - self.started

    def served(self, n: int, timeout: float = 30.0) -> None:
        """Wait (bounded) until ``n`` more requests have been answered."""
        target = len(self.results) + n
        deadline = time.monotonic() + timeout
        while len(self.results) < target:
            assert time.monotonic() < deadline, f"traffic stalled at {len(self.results)} requests"
            time.sleep(0.02)

    @property
    def failed(self) -> list[tuple[float, int, str, str]]:
        return [r for r in self.results if r[1] != 200]

    def report(self, label: str, phases: dict[str, float]) -> str:
        rate = len(self.results) / self.seconds
        text = (f"{label}: {len(self.results)} requests in {self.seconds:.1f}s ({rate:.0f}/s), FAILED REQUESTS "
                f"{len(self.failed)}" + ("; phases: " if phases else "")
                + ", ".join(f"{k} {v:.2f}s" for k, v in phases.items()))
        print(text)
        return text


def phases(stderr: str) -> dict[str, float]:
    """Seconds per kind of step, from `lb takeover`'s progress lines (``gitlab-mci: [build] … (1.2s, …)``)."""
    out: dict[str, float] = {}
    for m in re.finditer(r"^gitlab-mci: \[(\w+)\] .*\(([\d.]+)s, [\d.]+s elapsed\)$", stderr, re.M):
        out[m.group(1)] = out.get(m.group(1), 0.0) + float(m.group(2))
    return out


def leftovers(running: RunningSim) -> list[str]:
    """Load-balancing resources neither chain uses: anything kubemci made but the user's address, certificate and
    the adopted rules; and the old chain's named port."""
    keep = {"web-ip", "mci1-ssl--shop"}
    out = []
    for coll in ("globalForwardingRules", "targetHttpProxies", "targetHttpsProxies", "urlMaps", "backendServices",
                 "healthChecks", "firewalls", "sslCertificates", "globalAddresses"):
        for r in running.sim.compute.resources(coll):
            ours = str(r.get("description", "")).startswith("gitlab-mci:lb=shop ") or (
                r.get("labels") or {}).get("gitlab-mci-lb") == "shop"
            if not ours and r["name"] not in keep:
                out.append(f"{coll}/{r['name']}")
    for g in running.sim.compute.resources("instanceGroups"):
        out += [f"namedPort {p['name']} on {g['name']}" for p in g.get("namedPorts", []) if p["name"] == "port30999"]
    return out
