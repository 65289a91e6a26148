"""Benchmark: the planner's time and memory against the count of pending requests.

Issue 9: "1e9 identical tasks with no max tries to allocate 30 GiB and dies;
1e7 takes 22 s and 2.3 GB". Counts should cost nothing. For each scenario and
count (default 1, 1e6, 1e12) this times ``rayscale.planner.plan_json`` (median
of ``--repeat`` runs; parsing included) and its peak traced memory
(tracemalloc), each measurement in a child process with a memory limit and a
timeout, so that an older planner's blow-up is a recorded failure, not a
dead machine:

- ``tasks``: one group (1 CPU, no max), one task shape, count N;
- ``floor``: the same as ``request_resources`` bundles;
- ``tune``: a placement group per Ray Tune trial (PACK of {CPU 1, GPU 1} and
  {CPU 1}) on 8-CPU 1-GPU nodes, no max, count N;
- ``bench``: planner_vs_ray.py's default scenario (1000 nodes, 5 groups, 20
  task shapes, 2 placement groups; max high but bounded), every count set to N.

    .venv/bin/python bench/planner_counts.py
    .venv/bin/python bench/planner_counts.py --counts 1,1e7 --pythonpath /tmp/before/src
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
import tracemalloc
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
SCENARIOS = ("tasks", "floor", "tune", "bench")


def state(scenario: str, count: int) -> dict[str, Any]:
    if scenario in ("tasks", "floor"):
        return {"groups": {"small": {"resources": {"CPU": 1}, "max": None}},
                "demand": {scenario: [{"resources": {"CPU": 1}, "count": count}]}}
    if scenario == "tune":
        return {"groups": {"gpu": {"resources": {"CPU": 8, "GPU": 1}, "max": None}},
                "demand": {"gangs": [{"strategy": "PACK", "count": count,
                                      "bundles": [{"CPU": 1, "GPU": 1}, {"CPU": 1}]}]}}
    sys.path.insert(0, str(HERE))
    import planner_vs_ray as bench

    args = argparse.Namespace(nodes=1000, groups=5, requests=10000, shapes=20, gangs=2,
                              seed=0, repeat=1, skip_ray=True, json=False)
    doc: dict[str, Any] = bench.cluster_state(bench.make_scenario(args))
    for kind in ("tasks", "gangs", "floor"):
        for entry in doc["demand"].get(kind, []):
            entry["count"] = count
    return doc


def child(scenario: str, count: int, repeat: int) -> dict[str, Any]:
    from rayscale.planner import plan_json

    doc = state(scenario, count)
    times = []
    plan: dict[str, Any] = {}
    for _ in range(repeat):
        started = time.perf_counter()
        plan = plan_json(json.loads(json.dumps(doc)))
        times.append(time.perf_counter() - started)
    tracemalloc.start()
    plan_json(json.loads(json.dumps(doc)))
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return {"seconds": statistics.median(times), "peak_bytes": peak,
            "launched": sum(plan["launch"].values())}


def measure(scenario: str, count: int, args: argparse.Namespace) -> dict[str, Any]:
    env = dict(os.environ)
    if args.pythonpath:
        env["PYTHONPATH"] = args.pythonpath
    limit = args.memory_gib * 1024**3

    def limited() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))

    command = [sys.executable, __file__, "--child", scenario, str(count),
               "--repeat", str(args.repeat)]
    try:
        done = subprocess.run(command, env=env, capture_output=True, text=True,
                              timeout=args.timeout, preexec_fn=limited, check=False)
    except subprocess.TimeoutExpired:
        return {"error": f"more than {args.timeout:g} s"}
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["?"])[-1]
        return {"error": last[:60]}
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenarios", default=",".join(SCENARIOS))
    parser.add_argument("--counts", default="1,1e6,1e12")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--timeout", type=float, default=120.0)
    parser.add_argument("--memory-gib", type=int, default=4)
    parser.add_argument("--pythonpath", help="PYTHONPATH of the planner to measure")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--child", nargs=2, metavar=("SCENARIO", "COUNT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child[0], int(float(args.child[1])), args.repeat)))
        return 0
    counts = [int(float(c)) for c in args.counts.split(",")]
    rows = []
    for scenario in args.scenarios.split(","):
        for count in counts:
            result = measure(scenario, count, args)
            rows.append({"scenario": scenario, "count": count, **result})
            print(f"{scenario} {count:g}: {result}", file=sys.stderr)
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    print(f"{'scenario':8} {'count':>8} {'time':>10} {'peak memory':>12} {'launched':>16}")
    for row in rows:
        if "error" in row:
            print(f"{row['scenario']:8} {row['count']:>8.0e} {row['error']}")
            continue
        print(f"{row['scenario']:8} {row['count']:>8.0e} {row['seconds'] * 1000:>8.1f} ms "
              f"{row['peak_bytes'] / 1e6:>9.2f} MB {row['launched']:>16,}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
