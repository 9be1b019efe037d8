"""Simulator start-up time and peak memory (issue targets: serve in under 2 s, under 200 MB at 15 × 3 × 3).

Run: ``.venv/bin/python -m bench.sim_bench``. Each figure comes from a fresh child process so that imports and
the discovery document are loaded cold, as they are for ``gitlab-mci sim up``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

_CHILD = r"""
import json, sys, time, urllib.request
t0 = time.perf_counter()
from gitlab_mci.sim.runtime import Simulator
from gitlab_mci.sim.spec import generated_spec
clusters, zones, nodes = map(int, sys.argv[1:4])
sim = Simulator(generated_spec(clusters, zones_per_cluster=zones, nodes_per_zone=nodes)).start()
# "Serving" means a real client call answers: one Compute list and one Kubernetes list per cluster.
urllib.request.urlopen(sim.compute_url + "/compute/v1/projects/demo-project/global/addresses").read()
for name in sim.clusters:
    urllib.request.urlopen(sim.kube_url(name) + "/api/v1/nodes").read()
ready = time.perf_counter() - t0
# VmHWM, not ru_maxrss: Linux carries ru_maxrss over from the parent across exec (a big benchmark process would
# be counted); VmHWM belongs to this process's own memory map.
peak_mb = next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmHWM:")) / 1024
sim.stop()
print(json.dumps({"ready_s": ready, "peak_mb": peak_mb}))
"""


def measure(clusters: int, zones: int, nodes: int) -> dict[str, float]:
    out = subprocess.run([sys.executable, "-c", _CHILD, str(clusters), str(zones), str(nodes)],
                         check=True, capture_output=True, text=True).stdout
    result: dict[str, float] = json.loads(out.strip().splitlines()[-1])
    return result


def measure_cli_up() -> float:
    """Wall time of `gitlab-mci sim up --detach` (default world) until it reports it is serving."""
    with tempfile.TemporaryDirectory() as d:
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-m", "gitlab_mci", "sim", "up", "--detach", "--state-dir", d],
                       check=True, capture_output=True)
        elapsed = time.perf_counter() - t0
        subprocess.run([sys.executable, "-m", "gitlab_mci", "sim", "down", "--state-dir", d],
                       check=True, capture_output=True)
        return elapsed


def main() -> None:
    env_note = f"python {sys.version.split()[0]}, {os.cpu_count()} cores"
    rows = []
    for shape in [(2, 1, 3), (15, 3, 3)]:
        runs = [measure(*shape) for _ in range(3)]
        best = min(runs, key=lambda r: r["ready_s"])
        rows.append((shape, best["ready_s"], max(r["peak_mb"] for r in runs)))
    cli = min(measure_cli_up() for _ in range(3))
    print(f"Simulator start-up ({env_note}); best of 3 for time, worst of 3 for memory")
    print(f"{'clusters x zones x nodes':<26}{'ready (s)':>10}{'target':>8}{'ratio':>7}{'peak MB':>9}{'target':>8}"
          f"{'ratio':>7}")
    for (c, z, n), ready, peak in rows:
        print(f"{f'{c} x {z} x {n}':<26}{ready:>10.2f}{2.0:>8.1f}{ready / 2.0:>7.2f}{peak:>9.0f}{200:>8}"
              f"{peak / 200:>7.2f}")
    print(f"`gitlab-mci sim up --detach` (default world) until serving: {cli:.2f} s")
    Path("bench/results-sim.json").write_text(json.dumps(
        {"startup": [{"shape": list(s), "ready_s": r, "peak_mb": p} for s, r, p in rows], "cli_up_s": cli},
        indent=2))


if __name__ == "__main__":
    main()
