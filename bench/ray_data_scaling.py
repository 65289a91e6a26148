"""Benchmark: one Ray Data pipeline on rayscale and on Ray's own autoscaler, side by side.

Both clusters are alike: a head with 0 CPUs on a loopback address, 1-CPU /
1 GiB workers (0 to ``--max`` of them), each a ``ray start --block`` process
on its own 127.x address, token auth, the same idle timeout. Only the
autoscaler differs:

- **rayscale**: `rayscale up` (its autoscaler, local provider).
- **Ray**: `ray start --head --autoscaling-config=...` with
  ``RAY_enable_autoscaler_v2=1``: Ray's autoscaler v2 in the head's monitor,
  launching nodes through ``bench/ray_own_provider.py`` (the same kind of
  node processes; Ray installs nothing).

The driver runs ``ray.data.range(ROWS, override_num_blocks=BLOCKS)
.map_batches(sleep 1 s, num_cpus=1).sum("id")`` and checks the sum. The
bench follows the Ray nodes through the GCS and prints, per autoscaler:
time to finish, when the first worker registered, peak workers, when the
peak was reached, and how long after the pipeline the workers were gone.

    .venv/bin/python bench/ray_data_scaling.py                 # both, 60 blocks, max 3
    .venv/bin/python bench/ray_data_scaling.py --only rayscale --blocks 40

Needs ``ray[data]`` (``rayscale[data]``). The clusters come from
``bench/sidebyside.py`` (shared with ``seeds_vs_ray.py``): every process they
start carries a marker and is stopped by PID when the run ends, also on failure.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path
from typing import Any

from sidebyside import (
    Cluster,
    Follower,
    ray_cluster,
    rayscale_cluster,
    rayscale_spec,
    stop_on_sigterm,
)

DRIVER = """
import time
from rayscale.driver import connect
connect()
import ray
def double(batch):
    time.sleep({sleep})
    batch["id"] = batch["id"] * 2
    return batch
started = time.time()
ds = ray.data.range({rows}, override_num_blocks={blocks})
total = ds.map_batches(double, num_cpus=1, batch_size=None).sum("id")
assert total == 2 * sum(range({rows})), total
print("RESULT", json.dumps({{"seconds": time.time() - started}}))
"""


def run_pipeline(cluster: Cluster, args: argparse.Namespace) -> dict[str, Any]:
    follower = Follower(cluster)
    follower.start()
    try:
        code = "import json\n" + textwrap.dedent(DRIVER.format(
            rows=args.blocks * 10, blocks=args.blocks, sleep=args.sleep))
        started = time.time()
        out = subprocess.run([sys.executable, "-c", code], env=cluster.driver_env,
                             capture_output=True, text=True, timeout=args.timeout)
        finished = time.time()
        if out.returncode != 0:
            raise RuntimeError(f"driver failed:\n{out.stderr[-3000:]}")
        # workers gone after the pipeline: the idle timeout plus the autoscaler's reaction
        gone = follower.wait_zero(args.idle_s + 120)
    finally:
        follower.stop.set()
    samples = follower.since(started)
    peak = max(n for _, n in samples)
    return {
        "seconds": round(finished - started, 1),
        "first_worker_s": next((round(t, 1) for t, n in samples if n > 0), None),
        "peak_workers": peak,
        "peak_at_s": next(round(t, 1) for t, n in samples if n == peak),
        "back_to_zero_s": None if gone is None else round(gone - finished, 1),
    }


def bench_rayscale(args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    with rayscale_cluster(rayscale_spec("databench", args.max, args.idle_s), tmp) as cluster:
        return run_pipeline(cluster, args)


def bench_ray(args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    with ray_cluster(tmp, max_workers=args.max, idle_s=args.idle_s,
                     provider="loopback") as cluster:
        return run_pipeline(cluster, args)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--blocks", type=int, default=60)
    parser.add_argument("--sleep", type=float, default=1.0, help="seconds per block")
    parser.add_argument("--max", type=int, default=3, help="max workers")
    parser.add_argument("--idle-s", type=float, default=5.0)
    parser.add_argument("--timeout", type=float, default=600.0)
    parser.add_argument("--only", choices=["rayscale", "ray"])
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    stop_on_sigterm()
    results = {}
    with tempfile.TemporaryDirectory(prefix="databench-") as tmpdir:
        tmp = Path(tmpdir)
        for name, run in (("rayscale", bench_rayscale), ("ray", bench_ray)):
            if args.only in (None, name):
                (tmp / name).mkdir()
                print(f"running {name} ...", file=sys.stderr, flush=True)
                results[name] = run(args, tmp / name)
    if args.json:
        print(json.dumps(results, indent=2))
        return
    print(f"Ray Data map_batches: {args.blocks} blocks x {args.sleep}s, num_cpus=1; "
          f"workers 0..{args.max} x 1 CPU; idle timeout {args.idle_s}s")
    keys = ["seconds", "first_worker_s", "peak_workers", "peak_at_s", "back_to_zero_s"]
    print(f"{'':10}" + "".join(f"{k:>16}" for k in keys))
    for name, r in results.items():
        print(f"{name:10}" + "".join(f"{r[k]!s:>16}" for k in keys))


if __name__ == "__main__":
    main()
