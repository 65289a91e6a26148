"""Benchmark: the seeds' job on rayscale (local mode) and on Ray's autoscaler v2, side by side.

The job (issue 14): ``--tasks`` (15) tasks of ``@ray.remote(num_cpus=1)``, each
sleeping ``--sleep`` (20) s, on a cluster whose head has ``num-cpus: 0`` and
whose workers are 1 CPU / 1 GiB, 0 to ``--max`` (10) of them, idle timeout
``--idle-s`` (30) s. Both clusters come from ``bench/sidebyside.py`` and differ
only in their autoscaler:

- **rayscale**: ``rayscale up`` (its ``rayscale autoscaler`` process, local provider);
- **Ray**: ``ray start --head --autoscaling-config`` with autoscaler v2 in the
  head's ``monitor.py``, nodes from ``--ray-provider``: ``fake`` (Ray's fake
  multi-node provider on loopback addresses, nodes started one at a time in
  the monitor) or ``loopback`` (a ``ray start --block`` process per node, a
  launch's nodes all at once).

Per run, times in seconds after the job's submit (the driver process's start,
its ``ray.init`` included): first worker registered, all workers registered
(``min(tasks, max)`` alive at once), job done (the driver has every result),
all workers gone; then peak workers, tasks completed, and the CPU time (user +
sys, from ``/proc``) the autoscaler process used from submit to all workers
gone. Workers are counted through the GCS every 0.5 s (``--json`` has each
run's timeline: the count at each change). The sides alternate
(rayscale, Ray, rayscale, ...), each run on a fresh cluster; medians are
printed (``--json``: every run too).

    .venv/bin/python bench/seeds_vs_ray.py                  # the seeds' job, 3 runs each
    .venv/bin/python bench/seeds_vs_ray.py --tasks 3 --sleep 3 --max 2 --idle-s 5 --repeat 1
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path
from typing import Any

from sidebyside import (
    KUBERAY_DEFAULT_UPSCALING_SPEED,
    Cluster,
    Follower,
    cpu_seconds,
    ray_cluster,
    rayscale_cluster,
    rayscale_spec,
    stop_on_sigterm,
)

DRIVER = """
import json, time
from rayscale.driver import connect
connect()
import ray

@ray.remote(num_cpus=1)
def seed(i):
    time.sleep({sleep})
    return i

done = ray.get([seed.remote(i) for i in range({tasks})])
print("RESULT", json.dumps({{"done_at": time.time(), "completed": len(done),
                            "distinct": len(set(done))}}), flush=True)
"""

KEYS = ["first_worker_s", "all_workers_s", "job_done_s", "all_gone_s", "peak_workers",
        "tasks_completed", "autoscaler_cpu_s"]
HEADERS = ["first worker", "all workers", "job done", "all gone", "peak", "tasks",
           "autoscaler CPU"]


def run_job(cluster: Cluster, args: argparse.Namespace) -> dict[str, Any]:
    """Submit the job to a cluster at 0 workers; follow it until the workers are gone."""
    follower = Follower(cluster)
    follower.start()
    try:
        if follower.wait_zero(60) is None:
            raise RuntimeError("the cluster did not settle at 0 workers before the job")
        code = textwrap.dedent(DRIVER.format(tasks=args.tasks, sleep=args.sleep))
        cpu_before = cpu_seconds(cluster.autoscaler_pid)
        submitted = time.time()
        out = subprocess.run([sys.executable, "-c", code], env=cluster.driver_env,
                             capture_output=True, text=True, timeout=args.timeout)
        if out.returncode != 0:
            raise RuntimeError(f"driver failed:\n{out.stderr[-3000:]}")
        result = json.loads(next(line for line in out.stdout.splitlines()
                                 if line.startswith("RESULT "))[len("RESULT "):])
        gone = follower.wait_zero(args.idle_s + 180)
        cpu_after = cpu_seconds(cluster.autoscaler_pid)
    finally:
        follower.stop.set()
    samples = follower.since(submitted)
    target = min(args.tasks, args.max)

    def first(pred: Any) -> float | None:
        return next((round(t, 1) for t, n in samples if pred(n)), None)

    return {
        "first_worker_s": first(lambda n: n > 0),
        "all_workers_s": first(lambda n: n >= target),
        "job_done_s": round(result["done_at"] - submitted, 1),
        "all_gone_s": None if gone is None else round(gone - submitted, 1),
        "peak_workers": max(n for _, n in samples),
        "tasks_completed": result["completed"],
        "autoscaler_cpu_s": (None if cpu_before is None or cpu_after is None
                             else round(cpu_after - cpu_before, 2)),
        "autoscaler_pid": cluster.autoscaler_pid,
        # (seconds after submit, workers) at each change of the count
        "timeline": [(round(t, 1), n) for i, (t, n) in enumerate(samples)
                     if i == 0 or n != samples[i - 1][1]],
    }


def bench_rayscale(args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    with rayscale_cluster(rayscale_spec("seeds", args.max, args.idle_s), tmp) as cluster:
        return run_job(cluster, args)


def bench_ray(args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    with ray_cluster(tmp, max_workers=args.max, idle_s=args.idle_s,
                     provider=args.ray_provider,
                     upscaling_speed=args.ray_upscaling_speed) as cluster:
        return run_job(cluster, args)


def median(runs: list[dict[str, Any]], key: str) -> float | None:
    values = [r[key] for r in runs if r.get(key) is not None]
    return round(statistics.median(values), 2) if values else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tasks", type=int, default=15)
    parser.add_argument("--sleep", type=float, default=20.0, help="seconds per task")
    parser.add_argument("--max", type=int, default=10, help="max workers")
    parser.add_argument("--idle-s", type=float, default=30.0, help="idle timeout (s)")
    parser.add_argument("--repeat", type=int, default=3, help="runs per side (medians)")
    parser.add_argument("--ray-provider", choices=["fake", "loopback"], default="fake")
    parser.add_argument("--ray-upscaling-speed", type=float,
                        default=KUBERAY_DEFAULT_UPSCALING_SPEED,
                        help="Ray's upscaling_speed (default: KubeRay's for upscalingMode "
                             "Default, the mode rayscale's spec has)")
    parser.add_argument("--only", choices=["rayscale", "ray"])
    parser.add_argument("--timeout", type=float, default=900.0, help="per job (s)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    stop_on_sigterm()
    sides = [(name, run) for name, run in (("rayscale", bench_rayscale), ("ray", bench_ray))
             if args.only in (None, name)]
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name, _ in sides}
    load: list[float] = []
    with tempfile.TemporaryDirectory(prefix="seedsbench-") as tmpdir:
        for i in range(args.repeat):
            for name, run in sides:
                tmp = Path(tmpdir) / f"{name}-{i}"
                tmp.mkdir()
                print(f"run {i + 1}/{args.repeat}: {name} ...", file=sys.stderr, flush=True)
                runs[name].append(run(args, tmp))
                load.append(os.getloadavg()[0])
                print(f"  {json.dumps(runs[name][-1])}", file=sys.stderr, flush=True)
    medians = {name: {k: median(r, k) for k in KEYS} for name, r in runs.items()}
    job = (f"{args.tasks} tasks x {args.sleep:g} s (num_cpus=1); workers 0..{args.max} "
           f"x 1 CPU / 1 GiB; head num-cpus 0; idle timeout {args.idle_s:g} s; "
           f"Ray provider {args.ray_provider}, upscaling_speed {args.ray_upscaling_speed:g}")
    if args.json:
        print(json.dumps({"job": job, "repeat": args.repeat, "medians": medians, "runs": runs,
                          "loadavg_1m_after_runs": load}, indent=2))
        return
    print(job)
    print(f"medians of {args.repeat} run(s) each; seconds after submit; autoscaler CPU in "
          f"user+sys seconds (submit to all gone); 1-min load average after the runs: "
          + ", ".join(f"{x:.2f}" for x in load))
    print(f"{'':10}" + "".join(f"{h:>15}" for h in HEADERS))
    for name, m in medians.items():
        print(f"{name:10}" + "".join(f"{m[k]!s:>15}" for k in KEYS))


if __name__ == "__main__":
    main()
