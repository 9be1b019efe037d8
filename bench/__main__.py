"""All benchmarks in one run: ``python -m bench [--quick] [--no-write]``.

In process (apply at 1-15 clusters, concurrency speed-up, no-op reads), CLI start-up, whole process (`lb apply`
and `lb plan` as fresh processes with their peak memory, next to their import floor: see bench/process_bench.py),
peak memory of the simulator, `lb takeover` of the recipe's kubemci chain with traffic flowing (issue 13: its duration
against the waits it cannot avoid, requests served and failed); then every target, met or not.

Prints a table; unless ``--no-write``, writes ``bench/results.json``, ``bench/apply.png`` (with the ``bench``
extra's matplotlib) and regenerates ``bench/RESULTS.md``. Figures that are compared are measured side by side in
this one run, because these machines are noisy: ratios, not absolute times, are what the targets are about.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from bench import lb_bench, neg_bench, process_bench, sim_bench, takeover_bench

HERE = Path(__file__).parent
HEAVY = ("google.cloud.compute_v1", "google.cloud.gkehub_v1", "google.api_core", "grpc", "kubernetes", "pydantic",
         "gitlab", "jinja2", "yaml", "requests", "cryptography", "google.auth")
STARTUP_VS_PYTHON = 3.0  # --help and the commands that need no Google library (issue 17)
COMMANDS = {"python -c pass": ["-c", "pass"], "gitlab-mci --help": ["-m", "gitlab_mci", "--help"],
            "gitlab-mci nodeport pin --help": ["-m", "gitlab_mci", "nodeport", "pin", "--help"],
            "gitlab-mci helm extra-args --help": ["-m", "gitlab_mci", "helm", "extra-args", "--help"],
            "gitlab-mci lb apply --help": ["-m", "gitlab_mci", "lb", "apply", "--help"],
            # A real run of what every deploy job runs (not just its help):
            "gitlab-mci helm extra-args": ["-m", "gitlab_mci", "helm", "extra-args", "--node-port", "30999",
                                           "--extra-args", "--atomic"]}


def startup(repeat: int) -> dict[str, Any]:
    """Best-of-``repeat`` wall time of each command, and the heavy packages it imports (``-X importtime``)."""
    out: dict[str, Any] = {}
    for label, args in COMMANDS.items():
        times = []
        for _ in range(repeat):
            t0 = time.perf_counter()
            subprocess.run([sys.executable, *args], check=True, capture_output=True)
            times.append(time.perf_counter() - t0)
        trace = subprocess.run([sys.executable, "-X", "importtime", *args], check=True, capture_output=True,
                               text=True).stderr
        imported = {m.group(1) for m in re.finditer(r"\|\s+([\w.]+)\s*$", trace, re.M)}
        out[label] = {"seconds": min(times),
                      "heavy": sorted(h for h in HEAVY if h in imported)}
    base = out["python -c pass"]["seconds"]
    for item in out.values():
        item["vs_python"] = item["seconds"] / base
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="1 and 2 clusters only (what .ci/run affords)")
    parser.add_argument("--no-write", action="store_true", help="print only; leave bench/ files alone")
    args = parser.parse_args(argv)
    sizes = [1, 2] if args.quick else [1, 2, 5, 15]
    started = time.perf_counter()
    load_start = os.getloadavg()
    process_bench.compile_own_modules()  # as an installed package is: start-up figures include no compiling
    print(f"gitlab-mci benchmarks: python {platform.python_version()}, {os.cpu_count()} cores, "
          f"{'quick' if args.quick else 'full'}; op latency {lb_bench.LATENCY}s, critical path "
          f"{lb_bench.DEPTH} x {lb_bench.LATENCY}s = {lb_bench.DEPTH * lb_bench.LATENCY:.1f}s; load average "
          f"{' '.join(f'{x:.2f}' for x in load_start)}", flush=True)

    lb_bench.run(1, 64)  # warm-up: first connections and lazily imported modules are per-process costs (below)

    critical = lb_bench.DEPTH * lb_bench.LATENCY
    apply_rows = []
    print(f"\n{'clusters':>8} {'apply c=64':>11} {'x crit':>7} {'apply c=1':>10} {'speed-up':>9} "
          f"{'changes x crit':>15} {'writes':>7} {'no-op reads':>12} {'no-op writes':>13} {'destroy':>8}")
    for n in sizes:
        fast = lb_bench.run(n, 64)
        slow = lb_bench.run(n, 1)
        row = {"clusters": n, "zones": 3 * n, "fast": fast, "slow": slow,
               "apply_vs_critical": fast["apply_s"] / critical, "changes_vs_critical": fast["execute_s"] / critical,
               "speedup": slow["apply_s"] / fast["apply_s"]}
        apply_rows.append(row)
        print(f"{n:>8} {fast['apply_s']:>10.2f}s {row['apply_vs_critical']:>6.2f}x {slow['apply_s']:>9.2f}s "
              f"{row['speedup']:>8.1f}x {row['changes_vs_critical']:>14.2f}x {fast['writes']:>7} "
              f"{fast['noop_reads']:>12} {fast['noop_writes']:>13} {fast['destroy_s']:>7.2f}s", flush=True)
    largest = apply_rows[-1]["fast"]
    print(f"\nCompute calls of one apply at {apply_rows[-1]['clusters']} clusters: "
          + ", ".join(f"{k} {v}" for k, v in largest["calls"].items()))

    # NEG backends (docs/negs.md): the same chain, with the NEG controller's wait reported apart.
    neg = neg_bench.run(2 if args.quick else 15)
    print(f"\nlb apply --backends neg at {neg['clusters']} clusters x 3 zones: {neg['apply_s']:.2f}s = "
          f"{neg['apply_s'] / critical:.2f}x critical path (target <= 1.5x), {neg['writes']} writes; NEG wait "
          f"(controller, apart) {neg['neg_ready_s']:.2f}s")

    repeat = 3 if args.quick else 5
    starts = startup(repeat)
    print(f"\nCLI start-up (best of {repeat}; target for --help and commands without Google libraries "
          f"<= {STARTUP_VS_PYTHON:g}x python):")
    for label, item in starts.items():
        print(f"  {label:<36} {item['seconds']:6.3f}s  {item['vs_python']:5.1f}x python  heavy imports: "
              f"{', '.join(item['heavy']) or 'none'}")

    # Whole process: what a CI job pays for one command, start-up included, next to its import floor.
    process_sizes = [2] if args.quick else [2, 15]
    print(f"\nWhole process (each a fresh gitlab-mci process; {lb_bench.LATENCY}s operations; medians; plan / floor "
          "is the median ratio of plan and floor runs taken in pairs):")
    process_rows = [process_bench.measure(n, repeat=3 if args.quick else 11,
                                          apply_repeat=1 if args.quick else 3) for n in process_sizes]
    process_bench.print_rows(process_rows)
    verdicts = [(f"`lb apply --backends neg` at {neg['clusters']} clusters: {neg['apply_s'] / critical:.2f}x "
                 "critical path", "<= 1.5x", neg["apply_s"] / critical <= 1.5)]
    verdicts += process_bench.verdicts(process_rows) + [
        (f"`{label}` start-up: {item['vs_python']:.1f}x `python -c pass`", f"<= {STARTUP_VS_PYTHON:g}x",
         item["vs_python"] <= STARTUP_VS_PYTHON) for label, item in starts.items() if label != "python -c pass"]

    # The takeover of a running kubemci load balancer, with requests flowing through its address (issue 13).
    shapes = [(2, "EXTERNAL_MANAGED")] if args.quick else [(2, "EXTERNAL_MANAGED"), (2, "EXTERNAL"),
                                                           (5, "EXTERNAL_MANAGED")]
    print(f"\nlb takeover of kubemci's HTTPS chain ({lb_bench.LATENCY}s operations, health checks every "
          f"{takeover_bench.CHECK_INTERVAL}s, {takeover_bench.RATE:g} requests/s over HTTP and HTTPS; waits = "
          "operations in sequence x latency + health waits; served/failed while it ran):")
    print(takeover_bench.HEADER)
    takeover_rows = []
    for n, scheme in shapes:
        takeover_rows.append(takeover_bench.measure(n, scheme))
        print(takeover_bench.row(takeover_rows[-1]), flush=True)
    verdicts += takeover_bench.verdicts(takeover_rows)

    apply_mb = process_rows[-1]["apply"]["peak_mb"]
    memory_clusters = process_rows[-1]["clusters"]
    shape = (2, 1, 3) if args.quick else (15, 3, 3)
    sim = sim_bench.measure(*shape)
    print(f"\nPeak memory: `lb apply` at {memory_clusters} clusters x 3 zones {apply_mb:.0f} MB (target "
          f"{process_bench.APPLY_PEAK_MB:.0f} MB at 15); simulator {shape[0]} x {shape[1]} x {shape[2]} "
          f"{sim['peak_mb']:.0f} MB (target 200 MB), ready in {sim['ready_s']:.2f}s (target 2 s)")
    load_end = os.getloadavg()
    print(f"load average at the end: {' '.join(f'{x:.2f}' for x in load_end)} (shared machine: figures are noisy)")
    print("\nTargets:")
    for figure, target, met in verdicts:
        print(f"  {'met    ' if met else 'NOT MET'} {figure} (target {target})")
    results = {"mode": "quick" if args.quick else "full", "python": platform.python_version(),
               "cores": os.cpu_count(), "latency_s": lb_bench.LATENCY, "critical_path_s": critical,
               "apply": apply_rows, "neg": neg, "startup": starts, "process": process_rows, "takeover": takeover_rows,
               "targets": [{"figure": f, "target": t, "met": m} for f, t, m in verdicts],
               "load_average": {"start": list(load_start), "end": list(load_end)},
               "memory": {"apply_mb": apply_mb, "apply_clusters": memory_clusters, "sim_mb": sim["peak_mb"],
                          "sim_ready_s": sim["ready_s"], "sim_shape": list(shape)},
               "seconds": time.perf_counter() - started}
    if not args.no_write:
        (HERE / "results.json").write_text(json.dumps(results, indent=2) + "\n")
        plotted = plot(results)
        (HERE / "RESULTS.md").write_text(markdown(results, plotted))
        print(f"\nwrote bench/results.json, bench/RESULTS.md{', bench/apply.png' if plotted else ''}")
    print(f"\n({time.perf_counter() - started:.0f}s)")
    return 0


def plot(results: dict[str, Any]) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("(no plot: pip install -e '.[bench]' for matplotlib)")
        return False
    rows = results["apply"]
    xs = [r["clusters"] for r in rows]
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(xs, [r["fast"]["apply_s"] for r in rows], marker="o", label="apply, concurrency 64")
    ax.plot(xs, [r["slow"]["apply_s"] for r in rows], marker="o", label="apply, concurrency 1")
    ax.axhline(results["critical_path_s"], linestyle="--", color="grey", label="critical path")
    ax.axhline(1.5 * results["critical_path_s"], linestyle=":", color="grey", label="target 1.5x critical path")
    ax.set_xlabel("clusters (x 3 zones)")
    ax.set_ylabel("seconds")
    ax.set_yscale("log")
    ax.set_title(f"lb apply from scratch, {results['latency_s']}s per operation")
    ax.legend()
    fig.tight_layout()
    fig.savefig(HERE / "apply.png", dpi=100)
    return True


def markdown(r: dict[str, Any], plotted: bool) -> str:
    lines = ["# Benchmark results", "",
             f"Produced by `.venv/bin/python -m bench{' --quick' if r['mode'] == 'quick' else ''}` "
             f"(python {r['python']}, {r['cores']} cores; {r['seconds']:.0f} s). Simulated Compute operation "
             f"latency {r['latency_s']} s; the chain's critical path is {r['critical_path_s']:.1f} s (address / "
             "firewall / health check / named ports → backend service → URL map → proxy → forwarding rule). "
             "The simulator runs in its own process.", "",
             "## `lb apply` from scratch, re-apply, destroy", "",
             "| clusters × 3 zones | apply (c=64) | × critical path (target ≤ 1.5) | apply (c=1) "
             "| speed-up (target ≥ 5) | changes only × critical path | writes | no-op reads | no-op writes "
             "| destroy |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for row in r["apply"]:
        f, s = row["fast"], row["slow"]
        lines.append(f"| {row['clusters']} | {f['apply_s']:.2f} s | {row['apply_vs_critical']:.2f} | "
                     f"{s['apply_s']:.2f} s | {row['speedup']:.1f}× | {row['changes_vs_critical']:.2f} | "
                     f"{f['writes']} | {f['noop_reads']} | {f['noop_writes']} | {f['destroy_s']:.2f} s |")
    lines += ["", "In process (one benchmark process, warmed up): apply includes discovery (reading every cluster's "
              "nodes and the instance groups) but not the process's start-up and imports, which are in “Whole process” "
              "below. No-op reads are Compute calls; a real `lb apply` also reuses discovery's instance-group list "
              "(one read fewer).", ""]
    if plotted:
        lines += ["![apply time vs clusters](apply.png)", ""]
    biggest = r["apply"][-1]
    lines += [f"Compute calls of one apply at {biggest['clusters']} clusters:", "",
              "| call | count |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in biggest["fast"]["calls"].items()]
    if r.get("neg"):
        n = r["neg"]
        lines += ["", "## `lb apply --backends neg` from scratch", "",
                  f"{n['clusters']} clusters × 3 zones, the Services exposed (docs/negs.md). The **NEG wait** is GKE's "
                  "NEG controller's (the simulator's) time from the exposure until every zone has its NEG with "
                  "endpoints, reported apart; the apply then checks them all (one aggregated list, one "
                  "listNetworkEndpoints per NEG) and builds the chain.", "",
                  "| NEG wait | apply (c=64) | × critical path (target ≤ 1.5) | of which discovery and NEG check "
                  "| changes × critical path | writes |", "|---|---|---|---|---|---|",
                  f"| {n['neg_ready_s']:.2f} s | {n['apply_s']:.2f} s | {n['apply_s'] / r['critical_path_s']:.2f} | "
                  f"{n['discover_s']:.2f} s ({n['neg_wait_s']:.2f} s) | "
                  f"{n['execute_s'] / r['critical_path_s']:.2f} | {n['writes']} |"]
    lines += ["", "## CLI start-up", "", "| command | seconds | × `python -c pass` | heavy packages imported |",
              "|---|---|---|---|"]
    for label, item in r["startup"].items():
        lines.append(f"| `{label}` | {item['seconds']:.3f} | {item['vs_python']:.1f} | "
                     f"{', '.join(item['heavy']) or '—'} |")
    lines += ["", "## Whole process (what a CI job pays)", "",
              "Each figure is a fresh `gitlab-mci` process against the simulator (its own process), "
              f"{r['latency_s']} s per Compute operation: `lb apply` from scratch (median of its runs, destroyed in "
              "between) and `lb plan` with nothing to change, each with its peak memory (VmHWM); the **import floor** "
              "is a process that imports only the third-party modules the command ended up with (from its own "
              "`sys.modules`), measured interleaved with the command's runs. Medians; “plan ÷ floor” is the median of "
              "the ratios of plan and floor runs taken in pairs (the shared machine's load drifts between pairs), "
              "“best” the fastest plan over the fastest floor.", "",
              "| clusters × 3 zones | apply | apply floor | 1.5 × critical path + floor | apply peak | plan no-op "
              "| plan floor | plan ÷ floor (best) | plan peak | floor peak |",
              "|---|---|---|---|---|---|---|---|---|---|"]
    for row in r.get("process", []):
        a, p = row["apply"], row["plan"]
        lines.append(f"| {row['clusters']} | {a['seconds']:.2f} s | {a['floor_s']:.2f} s | {a['target_s']:.2f} s | "
                     f"{a['peak_mb']:.0f} MB | {p['seconds']:.2f} s | {p['floor_s']:.2f} s | {p['vs_floor']:.2f} "
                     f"({p['best_vs_best_floor']:.2f}) | {p['peak_mb']:.0f} MB | {p['floor_mb']:.0f} MB |")
    if r.get("process"):
        lines += ["", "Libraries `lb apply` imports (its floor): "
                  + ", ".join(f"`{x}`" for x in r["process"][-1]["apply"]["packages"]) + "."]
    if r.get("takeover"):
        lines += ["", "## `lb takeover` of the recipe's kubemci load balancer, traffic flowing", "",
                  "The recipe's world in the simulator (its own process, "
                  f"{r['latency_s']} s per Compute operation): the app on node port 30999, kubemci's classic HTTPS "
                  "chain (`gitlab-mci sim kubemci`) on the reserved address `web-ip` with an uploaded certificate, "
                  f"{takeover_bench.RATE:g} requests/s through that address over HTTP and HTTPS from before the "
                  "takeover until after it. The takeover is a fresh `gitlab-mci lb takeover` process (health checks "
                  f"every {takeover_bench.CHECK_INTERVAL} s). **Waits** are what it cannot avoid: for each step it "
                  "ran, its Compute operations in sequence × the latency (its build and the old chain's deletion "
                  "level by level, every other step one operation), plus the health waits it reports; the ratio is "
                  "its wall time over them (the rest is its own work: process start-up, imports, reads of Compute "
                  "and the clusters between steps).", "",
                  "| clusters | scheme at the end | takeover | waits | ratio | steps | writes | requests served "
                  "during it | failed | requests/s | re-run | re-run writes |",
                  "|---|---|---|---|---|---|---|---|---|---|---|---|"]
        for t in r["takeover"]:
            lines.append(f"| {t['clusters']} | {t['scheme']} | {t['takeover_s']:.2f} s | {t['floor_s']:.2f} s "
                         f"({t['levels']} × {t['latency_s']} s + {t['health_wait_s']:.2f} s) | "
                         f"{t['vs_floor']:.2f} | {t['steps']} | {t['writes']} | {t['during']['served']} | "
                         f"{t['during']['failed']} | {t['during_rate']:.0f} | {t['rerun_s']:.2f} s | "
                         f"{t['rerun_writes']} |")
        held = max(t.get("migrate_steps", 0) for t in r["takeover"])
        lines += ["", f"On the simulator nothing is held between the migration steps (`--step-wait 0`, its default "
                  "there). Against Google Cloud each is held 360 s by default, since a change takes minutes to reach "
                  f"Google's front ends: the {held} migration steps of a classic → EXTERNAL_MANAGED takeover add "
                  f"{held * 6} minutes to it, and its requests then see the canary percentages for minutes each."]
        first = r["takeover"][0]
        lines += ["", f"Progress of the first ({first['clusters']} clusters, {first['scheme']}), as its stderr "
                  "showed it (seconds since it started):", "", "```", *first["progress"], "```"]
    m = r["memory"]
    lines += ["", "## Peak memory", "",
              f"- `gitlab-mci lb apply` at {m['apply_clusters']} clusters × 3 zones (whole process): "
              f"{m['apply_mb']:.0f} MB (target 100 MB at 15 clusters)",
              f"- simulator {' × '.join(map(str, m['sim_shape']))} (clusters × zones × nodes): {m['sim_mb']:.0f} MB "
              f"(target 200 MB), serving after {m['sim_ready_s']:.2f} s (target 2 s)", ""]
    if r.get("targets"):
        load = r["load_average"]
        lines += ["## Targets (issues 13 and 17)", "", f"Load average {load['start'][0]:.2f} at the start, "
                  f"{load['end'][0]:.2f} at the end (2 cores shared with other work).", "",
                  "| figure | target | met |", "|---|---|---|"]
        lines += [f"| {t['figure']} | {t['target']} | {'yes' if t['met'] else '**no**'} |" for t in r["targets"]]
        lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
