"""The main job: the seeds' cluster scaling up for a real workload and back down.

Runs what a user would run, through the CLI:

    rayscale up examples/seeds-autoscaler.yaml
    rayscale submit raycluster-autoscaler -- python examples/seeds_workload.py
    rayscale status raycluster-autoscaler
    rayscale down raycluster-autoscaler

and prints a timeline of the worker count while it happens, with the figures
that matter: time from submitting the workload to all workers registered, and
from the end of the work to the last worker stopped. Exits 0 only if the
cluster scaled up to the workload, back down to min, and shut down cleanly.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
SPEC = ROOT / "examples" / "seeds-autoscaler.yaml"
NAME = "raycluster-autoscaler"
CLI = [sys.executable, "-m", "rayscale.cli.main"]
TASKS = 8  # 1 CPU each: more than one 1-CPU worker holds; the group's max is 4


def cli(*args: str, **kw: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *args], text=True, capture_output=True, **kw)


def status() -> dict[str, Any]:
    out = cli("status", NAME, "--json", check=True).stdout
    data: dict[str, Any] = json.loads(out)
    return data


def workers(s: dict[str, Any]) -> tuple[int, int, int]:
    g = s["groups"]["small-group"]
    return g["running"], g["pending"], g["terminating"]


def log(t0: float, message: str) -> None:
    print(f"[{time.time() - t0:6.1f}s] {message}", flush=True)


def main() -> int:
    env = {**os.environ, "SEEDS_TASKS": str(TASKS),
           "SEEDS_TASK_SECONDS": "15"}
    os.environ.update(env)
    t0 = time.time()
    up = cli("up", str(SPEC), timeout=300)
    if up.returncode != 0:
        print(up.stderr, file=sys.stderr)
        return 1
    log(t0, "cluster up; a driver would use:\n    " + "\n    ".join(up.stdout.split()))
    try:
        return run(t0)
    finally:
        down = cli("down", NAME, timeout=180)
        log(t0, down.stderr.strip() or down.stdout.strip())


def run(t0: float) -> int:
    print(cli("status", NAME).stdout)
    submitted = time.time()
    job = subprocess.Popen(
        [*CLI, "submit", NAME, "--", sys.executable, "examples/seeds_workload.py"],
        cwd=ROOT, text=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )
    peak, all_registered, last = 0, None, None
    while job.poll() is None:
        running, pending, terminating = workers(status())
        peak = max(peak, running)
        if (running, pending, terminating) != last:
            log(t0, f"workers: {running} running, {pending} pending, {terminating} stopping")
            last = (running, pending, terminating)
        if all_registered is None and running == 4:
            all_registered = time.time() - submitted
        time.sleep(0.5)
    output = job.stdout.read() if job.stdout else ""
    print("\n".join("    " + line for line in output.splitlines()[-7:]))
    if job.returncode != 0:
        log(t0, "the workload failed")
        return 1
    done = time.time()
    log(t0, "work done; waiting for the idle timeout (15 s) to scale back to min")
    while True:
        running, pending, terminating = workers(status())
        if (running, pending, terminating) != last:
            log(t0, f"workers: {running} running, {pending} pending, {terminating} stopping")
            last = (running, pending, terminating)
        if running == pending == terminating == 0:
            break
        if time.time() - done > 120:
            log(t0, "did not scale down in time")
            return 1
        time.sleep(0.5)
    scaled_down = time.time() - done
    print(cli("status", NAME).stdout)
    print(f"peak workers: {peak} (max 4)")
    if all_registered is not None:
        print(f"submit -> all 4 workers registered: {all_registered:.1f}s")
    print(f"work done -> back to min (0 workers): {scaled_down:.1f}s (idle timeout 15 s)")
    return 0 if peak == 4 else 1


if __name__ == "__main__":
    sys.exit(main())
