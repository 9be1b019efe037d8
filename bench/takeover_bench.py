"""`lb takeover` of the recipe's kubemci load balancer with traffic flowing (issue 13).

The recipe's world in a simulator of its own process (0.2 s Compute operations, as the other benchmarks): the app on
node port 30999 in N clusters, kubemci's classic chain (`gitlab-mci sim kubemci`) on the reserved address web-ip
with an uploaded certificate, and 40 requests/s through that address over HTTP and HTTPS from before the takeover
until after it. The takeover is a fresh `gitlab-mci lb takeover` process, as a CI job runs it, with health checks
every second.

Figures:

- the takeover's wall time, against **the waits it cannot avoid**: for each step it ran (its progress lines), the
  dependency depth of that step's Compute operations × the operation latency (its build and its deletion of the old
  chain: one level per kind that waits for another — health check / firewall / named ports, backend service, URL
  map, proxies; every other step one operation), plus the health waits it reports (the new backends' health checks
  have to pass before any traffic moves) — and their ratio;
- requests served and failed while it ran, and the Compute writes it made; a re-run's writes (a finished takeover
  writes nothing).

Run alone: ``.venv/bin/python -m bench.takeover_bench [--clusters N] [--scheme EXTERNAL]``.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

import yaml

from bench.lb_bench import LATENCY
from gitlab_mci.demo_takeover import Traffic, tally
from gitlab_mci.selfsigned import self_signed

ZONES = ("us-central1-a", "europe-west1-b", "asia-east1-a", "us-east1-b", "europe-west4-a", "asia-south1-a")
RATE = 40.0
CHECK_INTERVAL = 1
# Dependency levels of what a takeover creates or deletes: a kind waits for the kinds of lower levels (creation) or
# of higher levels (deletion). Kinds it does not know count as one level of their own.
LEVELS = {"healthChecks": 0, "firewalls": 0, "instanceGroups": 0, "namedPorts": 0, "sslCertificates": 0,
          "backendServices": 1, "urlMaps": 2, "targetHttpProxies": 3, "targetHttpsProxies": 3,
          "globalForwardingRules": 4}
_HEALTH = re.compile(r"healthy in every cluster and zone \((\d+(?:\.\d+)?)s")
_STEP = re.compile(r"gitlab-mci: \[(\w+)\] ")
_KINDS = re.compile(r"\b([a-zA-Z]+)/[a-z0-9][-a-z0-9]*")


def _gitlab_mci(*args: str, env: dict[str, str] | None = None) -> str:
    done = subprocess.run([sys.executable, "-m", "gitlab_mci", *args], capture_output=True, text=True, env=env)
    if done.returncode != 0:
        raise RuntimeError(f"gitlab-mci {' '.join(args)} exited {done.returncode}: {done.stderr.strip()[-400:]}")
    return done.stdout


def depth(text: str) -> int:
    """Sequential Compute operations a step needs: the distinct dependency levels of the kinds it names (≥ 1)."""
    kinds = set(_KINDS.findall(text))
    return max(1, len({LEVELS.get(k, 10 + i) for i, k in enumerate(sorted(kinds))}))


def _timed_process(args: list[str], env: dict[str, str]) -> tuple[int, str, list[tuple[float, str]], float, float]:
    """A gitlab-mci process: (exit code, stdout, its stderr lines with the time each arrived, start, end)."""
    lines: list[tuple[float, str]] = []
    started = time.monotonic()
    proc = subprocess.Popen([sys.executable, "-m", "gitlab_mci", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)
    assert proc.stdout is not None and proc.stderr is not None
    stdout: list[str] = []
    reader = threading.Thread(target=lambda: stdout.append(proc.stdout.read() if proc.stdout else ""), daemon=True)
    reader.start()
    for line in proc.stderr:
        lines.append((time.monotonic(), line.rstrip("\n")))
    code = proc.wait()
    ended = time.monotonic()
    reader.join(timeout=10)
    return code, "".join(stdout), lines, started, ended


def _journal_writes(compute_url: str) -> int:
    with urllib.request.urlopen(compute_url + "/_sim/journal", timeout=10) as resp:
        entries = json.loads(resp.read())["entries"]
    return sum(1 for e in entries if e["service"] == "compute" and e.get("write"))


def measure(clusters: int, scheme: str = "EXTERNAL_MANAGED", rate: float = RATE) -> dict[str, Any]:
    """One takeover of kubemci's HTTPS chain over ``clusters`` clusters (2 nodes each), with traffic flowing."""
    names = [f"prod{i + 1}" for i in range(clusters)]
    contexts = ",".join(names)
    with tempfile.TemporaryDirectory(prefix="gitlab-mci-takeover-bench-") as tmp:
        d = Path(tmp)
        spec = {"project": "demo-project", "operationLatency": LATENCY,
                "clusters": [{"name": n, "location": ZONES[i % len(ZONES)], "nodes": 2} for i, n in enumerate(names)]}
        (d / "world.yaml").write_text(yaml.safe_dump(spec))
        state = d / "sim"
        _gitlab_mci("sim", "up", "--detach", "--spec", str(d / "world.yaml"), "--state-dir", str(state))
        try:
            sim_env = dict(re.findall(r"^export (\w+)=(.*)$", _gitlab_mci("sim", "env", "--state-dir", str(state)),
                                      re.M))
            env = {**os.environ, **{k: v.strip("'") for k, v in sim_env.items()}}
            compute = env["GITLAB_MCI_COMPUTE_ENDPOINT"]
            for name in names:
                _gitlab_mci("sim", "deploy", "--context", name, "--release", "shop", "--namespace", "default",
                            "--extra-args", "--set service.type=NodePort --set service.nodePort=30999", env=env)
            cert, key = self_signed("shop.example.com")
            (d / "shop.crt").write_text(cert)
            (d / "shop.key").write_text(key)
            made = json.loads(_gitlab_mci("sim", "kubemci", "--lb", "shop", "--static-ip", "web-ip", "--context",
                                          contexts, "--certificate-file", str(d / "shop.crt"), "--key-file",
                                          str(d / "shop.key"), "--state-dir", str(state), "-o", "json", env=env))
            with urllib.request.urlopen(compute + "/_sim/state", timeout=10) as resp:
                listeners = {int(item["port"]): str(item["url"]) for item in json.loads(resp.read())["listeners"]
                             if item["vip"] == made["vip"]}
            takeover = ["lb", "takeover", "--lb", "shop", "--context", contexts, "--address", "web-ip",
                        "--service", "shop-auto-deploy", "--port", "web", "--namespace", "default",
                        "--scheme", scheme, "--check-interval-sec", str(CHECK_INTERVAL)]
            planned = json.loads(_gitlab_mci(*takeover, "--dry-run", "-o", "json", env=env))["steps"]
            build_depth = max([depth("\n".join(s.get("details") or []) + "\n" + s["text"])
                               for s in planned if s.get("action") == "build"] or [1])
            with Traffic(listeners, rate) as traffic:
                first = tally(traffic.more(20))
                if first["failed"]:
                    raise RuntimeError(f"kubemci's chain does not serve: {first}")
                writes_before = _journal_writes(compute)
                code, _, lines, started, ended = _timed_process(takeover, env)
                if code != 0:
                    raise RuntimeError(f"lb takeover exited {code}: {lines[-1][1] if lines else ''}")
                writes = _journal_writes(compute) - writes_before
                code, _, again, rerun_started, rerun_ended = _timed_process(takeover, env)
                if code != 0:
                    raise RuntimeError(f"lb takeover (again) exited {code}: {again[-1][1] if again else ''}")
                rerun_writes = _journal_writes(compute) - writes_before - writes
                traffic.more(20)
            health_s = sum(float(m.group(1)) for _, line in lines if (m := _HEALTH.search(line)))
            # Progress: `gitlab-mci: [ACTION] what was done (...)`, `[wait]` for the health waits.
            steps = [(m.group(1), line) for _, line in lines
                     if (m := _STEP.match(line)) and m.group(1) != "wait"]
            # Its build and its deletions wait level by level; every other step (a label, a setTarget, a migration
            # state, a scheme) is one operation on resources that exist.
            levels = sum(build_depth if action == "build" else depth(line) if action == "delete" else 1
                         for action, line in steps)
            floor = levels * LATENCY + health_s
            took = ended - started
            during = tally([a for a in traffic.answers if started <= a.t < ended])
            total = tally(traffic.answers)
            return {"clusters": clusters, "scheme": scheme, "takeover_s": took, "steps": len(steps),
                    "migrate_steps": sum(1 for action, _ in steps if action == "migrate"),
                    "levels": levels, "latency_s": LATENCY, "health_wait_s": health_s, "floor_s": floor,
                    "vs_floor": took / floor if floor else 0.0, "writes": writes,
                    "rerun_s": rerun_ended - rerun_started, "rerun_writes": rerun_writes,
                    "during": during, "during_rate": during["requests"] / took if took else 0.0, "total": total,
                    "progress": [f"{t - started:6.2f}s {line}" for t, line in lines]}
        finally:
            subprocess.run([sys.executable, "-m", "gitlab_mci", "sim", "down", "--state-dir", str(state)],
                           capture_output=True)


HEADER = (f"{'clusters':>8} {'scheme':>16} {'takeover':>9} {'waits':>7} {'ratio':>6} {'steps':>6} {'writes':>7} "
          f"{'served':>7} {'failed':>7} {'req/s':>6} {'re-run':>7} {'re-run writes':>14}")


def row(r: dict[str, Any]) -> str:
    return (f"{r['clusters']:>8} {r['scheme']:>16} {r['takeover_s']:>8.2f}s {r['floor_s']:>6.2f}s "
            f"{r['vs_floor']:>5.2f}x {r['steps']:>6} {r['writes']:>7} {r['during']['served']:>7} "
            f"{r['during']['failed']:>7} {r['during_rate']:>6.1f} {r['rerun_s']:>6.2f}s {r['rerun_writes']:>14}")


def verdicts(rows: list[dict[str, Any]]) -> list[tuple[str, str, bool]]:
    """The issue's targets: no failed request, and a finished takeover writes nothing when run again."""
    out = []
    for r in rows:
        out.append((f"lb takeover, {r['clusters']} clusters ({r['scheme']}): {r['during']['failed']} of "
                    f"{r['during']['requests']} requests failed during it ({r['during_rate']:.0f}/s), "
                    f"{r['total']['failed']} of {r['total']['requests']} in all", "0 failed",
                    r["during"]["failed"] == 0 and r["total"]["failed"] == 0))
        out.append((f"lb takeover run again, {r['clusters']} clusters: {r['rerun_writes']} writes", "0 writes",
                    r["rerun_writes"] == 0))
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.takeover_bench", description=__doc__)
    parser.add_argument("--clusters", type=int, default=2)
    parser.add_argument("--scheme", choices=["EXTERNAL_MANAGED", "EXTERNAL"], default="EXTERNAL_MANAGED")
    args = parser.parse_args(argv)
    result = measure(args.clusters, args.scheme)
    print(f"lb takeover of kubemci's HTTPS chain, {LATENCY}s per operation, health checks every {CHECK_INTERVAL}s, "
          f"{RATE:g} requests/s")
    print(HEADER)
    print(row(result))
    print(f"waits: {result['levels']} operation(s) in sequence x {LATENCY}s + health waits "
          f"{result['health_wait_s']:.2f}s")
    print("progress:")
    for line in result["progress"]:
        print(f"  {line}")


if __name__ == "__main__":
    main()
