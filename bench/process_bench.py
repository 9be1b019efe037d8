"""Whole-process figures of the Compute commands: what a CI job pays, start-up included (issue 17).

For N clusters × 3 zones (0.2 s Compute operations, simulator in its own process), each as a fresh
``gitlab-mci`` process:

- ``lb apply`` from scratch: wall time and peak memory (VmHWM), median of the repeats (destroyed in between);
- ``lb plan`` with nothing to change (after the apply): wall time and VmHWM, each run next to a floor run, their
  ratio the median of the pairs' ratios;
- the **import floor** of each command, measured in the same run: a process that only imports the third-party
  modules the command ended up with (recorded from the command's own ``sys.modules``), nothing of gitlab-mci.

gitlab-mci's own modules are byte-compiled first, as ``pip install`` does (and the Docker image has): this
checkout runs with ``PYTHONDONTWRITEBYTECODE=1``, so every process would compile them from source (~40 ms, as
much as their import itself) while the libraries of the floor are compiled: not what a user's job pays.

Targets: plan no-op at 2 clusters ≤ 1.3× its import floor; apply at 15 clusters ≤ 1.5× the critical path + its
import floor; apply's peak memory at 15 clusters ≤ 100 MB. Run alone: ``.venv/bin/python -m bench.process_bench``.
"""

from __future__ import annotations

import compileall
import json
import os
import statistics
import subprocess
import sys
import sysconfig
import tempfile
import time
from typing import Any

from bench import lb_bench
from gitlab_mci.nodeport import parallel

PLAN_VS_FLOOR = 1.3
APPLY_CRITICAL_FACTOR = 1.5
APPLY_PEAK_MB = 100.0

# The command, as `gitlab-mci` runs it (gitlab_mci.cli.main), then its VmHWM and its third-party modules into the
# file named by argv[1]. VmHWM, not ru_maxrss: Linux carries ru_maxrss over from the parent across exec.
_COMMAND = r"""
import json, sys
report, args = sys.argv[1], json.loads(sys.argv[2])
from gitlab_mci.cli import main
code = 0
try:
    main(args)
except SystemExit as exc:
    code = exc.code or 0
roots = {sys.argv[3], sys.argv[4]}
mods = [name for name, m in list(sys.modules.items())
        if any(str(getattr(m, "__file__", None) or "").startswith(r) for r in roots)]
hwm = next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmHWM:"))
with open(report, "w") as f:
    json.dump({"code": code, "hwm_kb": hwm, "modules": mods}, f)
sys.exit(code)
"""

# The import floor: the same third-party modules, in the order the command imported them, and nothing else.
_FLOOR = r"""
import importlib, json, sys
for name in json.load(open(sys.argv[1])):
    try:
        importlib.import_module(name)
    except Exception:
        pass  # an alias a package puts into sys.modules itself (six.moves…): imported with its package
hwm = next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmHWM:"))
print(hwm)
"""

_ROOTS = [sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]]


def compile_own_modules() -> None:
    """Byte-compile gitlab_mci (into its ``__pycache__``, git-ignored), as installing the package does."""
    import gitlab_mci

    compileall.compile_dir(os.path.dirname(gitlab_mci.__file__), quiet=1)


def _run(args: list[str], env: dict[str, str], directory: str) -> tuple[float, dict[str, Any]]:
    """Wall seconds of one ``gitlab-mci ARGS`` process, and what it reported (exit code, VmHWM, modules)."""
    report = os.path.join(directory, "report.json")
    t0 = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", _COMMAND, report, json.dumps(args), *_ROOTS], env=env,
                          capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - t0
    with open(report) as f:
        result: dict[str, Any] = json.load(f)
    if result["code"] not in (0, 3):  # 3: `status`-like "not healthy yet" is no failure of the command
        raise RuntimeError(f"gitlab-mci {' '.join(args[:2])} failed ({done.returncode}): {done.stderr.strip()}")
    return seconds, result


def _floor(modules: list[str], directory: str, label: str) -> tuple[float, float]:
    """Wall seconds and VmHWM (MB) of one process importing only ``modules``."""
    listing = os.path.join(directory, f"modules-{label}.json")
    if not os.path.exists(listing):
        with open(listing, "w") as f:
            json.dump(modules, f)
    t0 = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", _FLOOR, listing], capture_output=True, text=True, check=True)
    return time.perf_counter() - t0, int(done.stdout.strip()) / 1024


def _packages(modules: list[str]) -> list[str]:
    """Top-level packages, without the interpreter's and pip's own hooks (``_distutils_hack``, the editable
    install's finder) and C helpers (``_cffi_backend``), which are imported all the same."""
    return sorted({m.split(".")[0] for m in modules if not m.startswith("_")})


def measure(clusters: int, *, repeat: int = 3, apply_repeat: int = 1,
            latency: float = lb_bench.LATENCY) -> dict[str, Any]:
    """Whole-process ``lb apply`` (from scratch) and ``lb plan`` (no-op) at ``clusters`` × 3 zones."""
    compile_own_modules()
    with tempfile.TemporaryDirectory() as d:
        sim = lb_bench._Remote(clusters, d, latency=latency)
        try:
            parallel(list(sim.clusters), lambda c: lb_bench._deploy(sim, c))
            env = {**os.environ, "KUBECONFIG": sim.kubeconfig, "GITLAB_MCI_COMPUTE_ENDPOINT": sim.compute_url,
                   "GOOGLE_CLOUD_PROJECT": "demo-project"}
            where = ["--lb", "shop", "--context", ",".join(sim.clusters)]
            routing = ["--service", "shop-auto-deploy", "--port", "web"]
            applies: list[tuple[float, dict[str, Any]]] = []
            for i in range(apply_repeat):
                if i:
                    _run(["lb", "destroy", *where, "--release-ip"], env, d)
                applies.append(_run(["lb", "apply", *where, *routing], env, d))
            apply_modules = applies[-1][1]["modules"]
            plan = ["lb", "plan", *where, *routing, "--detailed-exitcode"]
            plan_modules = _run(plan, env, d)[1]["modules"]  # first run: which modules the floor imports
            # Pairs, each a plan next to its floor: the machine's load (shared, noisy) drifts between pairs, not
            # within one, so the ratio is taken per pair.
            plans, plan_floors, apply_floors = [], [], []
            for _ in range(repeat):
                plans.append(_run(plan, env, d))
                plan_floors.append(_floor(plan_modules, d, "plan"))
                apply_floors.append(_floor(apply_modules, d, "apply"))
        finally:
            sim.stop()
    critical = lb_bench.DEPTH * latency
    apply_s = statistics.median(s for s, _ in applies)
    plan_s = statistics.median(s for s, _ in plans)
    plan_floor_s, plan_floor_mb = (statistics.median(x) for x in zip(*plan_floors, strict=True))
    apply_floor_s, apply_floor_mb = (statistics.median(x) for x in zip(*apply_floors, strict=True))
    return {
        "clusters": clusters, "zones": 3 * clusters, "latency_s": latency, "critical_path_s": critical,
        "apply": {"seconds": apply_s, "runs": [s for s, _ in applies],
                  "peak_mb": max(r["hwm_kb"] for _, r in applies) / 1024,
                  "floor_s": apply_floor_s, "floor_mb": apply_floor_mb, "packages": _packages(apply_modules),
                  "floor_runs": [s for s, _ in apply_floors],
                  "target_s": APPLY_CRITICAL_FACTOR * critical + apply_floor_s,
                  "vs_critical_after_floor": (apply_s - apply_floor_s) / critical},
        "plan": {"seconds": plan_s, "runs": [s for s, _ in plans],
                 "peak_mb": max(r["hwm_kb"] for _, r in plans) / 1024,
                 "floor_s": plan_floor_s, "floor_mb": plan_floor_mb, "packages": _packages(plan_modules),
                 "vs_floor": statistics.median(p / f for (p, _), (f, _) in zip(plans, plan_floors, strict=True)),
                 "floor_runs": [s for s, _ in plan_floors],
                 "best_vs_best_floor": min(s for s, _ in plans) / min(s for s, _ in plan_floors)},
    }


def verdicts(rows: list[dict[str, Any]]) -> list[tuple[str, str, bool]]:
    """``(figure, target, met)`` for the issue's targets, from the rows measured."""
    out = []
    for row in rows:
        n, plan, apply = row["clusters"], row["plan"], row["apply"]
        if n == 2:
            out.append((f"lb plan no-op, 2 clusters: {plan['seconds']:.2f} s, its import floor "
                        f"{plan['floor_s']:.2f} s: {plan['vs_floor']:.2f}x (median of paired runs; best "
                        f"{plan['best_vs_best_floor']:.2f}x)",
                        f"<= {PLAN_VS_FLOOR}x", plan["vs_floor"] <= PLAN_VS_FLOOR))
        if n == 15:
            out.append((f"lb apply from scratch, 15 clusters: {apply['seconds']:.2f} s vs 1.5 x "
                        f"{row['critical_path_s']:.1f} s + floor {apply['floor_s']:.2f} s = {apply['target_s']:.2f} s "
                        f"({apply['vs_critical_after_floor']:.2f}x critical path after the floor)",
                        f"<= {apply['target_s']:.2f} s", apply["seconds"] <= apply["target_s"]))
            out.append((f"lb apply peak memory, 15 clusters: {apply['peak_mb']:.0f} MB", f"<= {APPLY_PEAK_MB:.0f} MB",
                         apply["peak_mb"] <= APPLY_PEAK_MB))
    return out


def print_rows(rows: list[dict[str, Any]]) -> None:
    print(f"{'clusters':>8} {'apply':>7} {'floor':>6} {'1.5xcp+fl':>10} {'peak':>7} {'plan no-op':>11} "
          f"{'floor':>6} {'x floor':>8} {'peak':>7}")
    for r in rows:
        a, p = r["apply"], r["plan"]
        print(f"{r['clusters']:>8} {a['seconds']:>6.2f}s {a['floor_s']:>5.2f}s {a['target_s']:>9.2f}s "
              f"{a['peak_mb']:>5.0f}MB {p['seconds']:>10.2f}s {p['floor_s']:>5.2f}s {p['vs_floor']:>7.2f}x "
              f"{p['peak_mb']:>5.0f}MB", flush=True)
    print(f"  libraries imported by lb apply: {', '.join(rows[-1]['apply']['packages'])}")


def main() -> None:
    rows = [measure(n, repeat=5, apply_repeat=3) for n in (2, 15)]
    print(f"Whole process, {lb_bench.LATENCY}s per operation, critical path {lb_bench.DEPTH} x {lb_bench.LATENCY}s")
    print_rows(rows)
    for figure, target, met in verdicts(rows):
        print(f"  {'met    ' if met else 'NOT MET'} {figure} (target {target})")


if __name__ == "__main__":
    main()
