"""Benchmark: how fast new demand reaches a launch decision, and what the loop costs idle.

Local mode, real Ray (``bench/sidebyside.py``'s ``rayscale_cluster``): a head with
``num-cpus: 0`` and one group of 1-CPU workers, 0 to ``--launches``. A driver
submits one long 1-CPU task at a time; each needs a node of its own (the tasks
before it hold theirs), so each submit leads to one launch decision. The
reaction is the time from the driver's ``.remote()`` call to the ``launch``
event the autoscaler writes in its event log (both ``time.time()`` on this
machine). The next task is submitted once that event is read, after
``--gap`` seconds plus a random 0-1 s (seeded), so that submits do not fall
in step with a period of the loop or of Ray.

CPU, as a percentage of one core (user + system time from ``/proc``) over
``--idle-window`` seconds, measured twice: at 0 workers before any demand
("idle") and after the launches with every node busy and nothing to decide
("steady"); for the autoscaler process, and for Ray's GCS server and raylets
of the cluster together.

Each configuration runs on a fresh cluster, in this order:

- ``before``: the loop as it was (a round every 0.25 s, no looks between
  rounds) and Ray's GCS pulling demand from the raylets once a second (Ray's
  default);
- ``now``: rayscale's defaults (a round at least every 1 s, a look at Ray's
  demand and nodes every 0.1 s, the GCS pulling demand every 0.1 s).

    .venv/bin/python bench/reaction.py                      # 6 launches each
    .venv/bin/python bench/reaction.py --launches 4 --idle-window 20 --json
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path
from typing import Any

from sidebyside import Follower, cpu_seconds, rayscale_cluster, rayscale_spec, stop_on_sigterm

from rayscale import procs
from rayscale.autoscaler.events import read_events
from rayscale.local.store import ClusterDir

CONFIGURATIONS: dict[str, dict[str, str]] = {
    "before": {"RAYSCALE_TICK_S": "0.25", "RAYSCALE_PROBE_S": "0",
               "RAY_gcs_pull_resource_loads_period_milliseconds": "1000"},
    "now": {},
}

DRIVER = """
import sys, time
from rayscale.driver import connect
connect()
import ray

@ray.remote(num_cpus=1)
def hold():
    time.sleep(3600)

held = []
for line in sys.stdin:
    if line.strip() != "go":
        break
    submitted = time.time()
    held.append(hold.remote())
    print("SUBMIT", submitted, flush=True)
"""


def launch_times(events_file: Path) -> list[float]:
    return [e["ts"] for e in read_events(events_file, 10_000) if e.get("kind") == "launch"]


def ray_pids(marker: str) -> list[int]:
    """The cluster's GCS server and raylets (by the cluster's marker, never by name alone)."""
    found = []
    for pid, value in procs.marked(procs.MARKER):
        try:
            comm = Path(f"/proc/{pid}/comm").read_text().strip()
        except OSError:
            continue
        if value == marker and comm in ("gcs_server", "raylet"):
            found.append(pid)
    return found


def cpu_percent(pids: list[int], window_s: float) -> float | None:
    before = [cpu_seconds(p) for p in pids]
    time.sleep(window_s)
    after = [cpu_seconds(p) for p in pids]
    if any(v is None for v in before + after):
        return None
    spent = sum(a for a in after if a is not None) - sum(b for b in before if b is not None)
    return round(100.0 * spent / window_s, 2)


def run(args: argparse.Namespace, tmp: Path, extra_env: dict[str, str],
        rng: random.Random) -> dict[str, Any]:
    spec = rayscale_spec("reaction", args.launches, idle_s=600)
    with rayscale_cluster(spec, tmp, extra_env) as cluster:
        events = tmp / "home" / "clusters" / "reaction" / "events.jsonl"
        marker = ClusterDir("reaction", home=tmp / "home").load().id
        follower = Follower(cluster)
        follower.start()
        try:
            if follower.wait_zero(60) is None:
                raise RuntimeError("the cluster did not settle at 0 workers")
        finally:
            follower.stop.set()
        time.sleep(2.0)  # up's own work (the first rounds, config reports) is over
        idle = cpu_percent([cluster.autoscaler_pid], args.idle_window)
        ray_idle = cpu_percent(ray_pids(marker), args.idle_window)
        driver = subprocess.Popen(
            [sys.executable, "-c", textwrap.dedent(DRIVER)], env=cluster.driver_env,
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        )
        assert driver.stdin is not None and driver.stdout is not None
        reactions: list[float] = []
        try:
            for _ in range(args.launches):
                seen = len(launch_times(events))
                time.sleep(args.gap + rng.random())
                driver.stdin.write("go\n")
                driver.stdin.flush()
                line = driver.stdout.readline()
                while line and not line.startswith("SUBMIT "):  # Ray's own notices
                    line = driver.stdout.readline()
                if not line:
                    raise RuntimeError("the driver exited")
                submitted = float(line.split()[1])
                deadline = time.time() + 30
                while len(launch_times(events)) <= seen:
                    if time.time() > deadline:
                        raise RuntimeError("no launch within 30 s of a submit")
                    time.sleep(0.01)
                reactions.append(round(launch_times(events)[seen] - submitted, 3))
            time.sleep(args.settle)  # the nodes start and take their tasks
            steady = cpu_percent([cluster.autoscaler_pid], args.idle_window)
            ray_steady = cpu_percent(ray_pids(marker), args.idle_window)
        finally:
            driver.stdin.close()
            driver.terminate()
            driver.wait(30)
    return {
        "reaction_s": reactions,
        "reaction_median_s": round(statistics.median(reactions), 3),
        "reaction_max_s": max(reactions),
        "autoscaler_cpu_percent_idle": idle,
        "autoscaler_cpu_percent_steady": steady,
        "ray_cpu_percent_idle": ray_idle,
        "ray_cpu_percent_steady": ray_steady,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--launches", type=int, default=6)
    parser.add_argument("--gap", type=float, default=1.0,
                        help="seconds before each submit (plus a random 0-1 s)")
    parser.add_argument("--idle-window", type=float, default=30.0)
    parser.add_argument("--settle", type=float, default=30.0,
                        help="seconds after the last launch before the steady CPU windows")
    parser.add_argument("--only", choices=sorted(CONFIGURATIONS), action="append",
                        help="run only this configuration (repeatable)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    stop_on_sigterm()
    rng = random.Random(14)
    results = {}
    for name, extra_env in CONFIGURATIONS.items():
        if args.only and name not in args.only:
            continue
        with tempfile.TemporaryDirectory(prefix="rayscale-reaction-") as tmp:
            results[name] = run(args, Path(tmp), extra_env, rng)
    if args.json:
        print(json.dumps(results, indent=2))
        return
    steady = f"steady ({args.launches} busy workers)"
    print(f"{'':8} {'demand -> launch: median':>25} {'max':>6}  "
          f"{'autoscaler CPU idle / ' + steady:>44}  {'Ray GCS+raylets CPU idle / steady':>34}")
    for name, r in results.items():
        print(f"{name:8} {r['reaction_median_s']:>23} s {r['reaction_max_s']:>5} s  "
              f"{r['autoscaler_cpu_percent_idle']:>34} % / {r['autoscaler_cpu_percent_steady']} %"
              f"  {r['ray_cpu_percent_idle']:>25} % / {r['ray_cpu_percent_steady']} %")
    for name, r in results.items():
        print(f"{name}: each reaction {r['reaction_s']}")


if __name__ == "__main__":
    main()
