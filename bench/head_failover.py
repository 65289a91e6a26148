"""Head failover of a busy local cluster with GCS fault tolerance (Ray's embedded store,
or an external Redis).

Starts ``rayscale up`` with ``gcsFaultToleranceOptions`` (``--store rocksdb``:
Ray's embedded store; ``--store redis``: a real redis-server with a password on
127.0.0.9, tests/redisfix.py; ``--store both``: a round of each, alternating;
head with 0 CPUs, ``--workers`` workers of 1 CPU,
all on loopback, in a RAYSCALE_HOME of its own), keeps it busy with a job
whose driver runs on a worker and runs short tasks back to back, then kills
every process of the head's session with SIGKILL (the head "pod" dies) and
measures, from the kill:

- ``new head``: rayscale's autoscaler has started a new head (its record);
- ``GCS answers``: the new head's GCS accepts a client call;
- ``workers in ray status``: the new head and every worker are ALIVE in the
  GCS's node table, with the workers' old node ids (what `ray status` lists);
- ``new driver's task``: a driver started right after the kill (it waits for
  the GCS) has a task's result; its start-up is measured before the kill too;
- ``busy job``: the longest gap between two of the job's task completions
  around the kill, and whether the job finished.

``KEEP_LOGS=DIR`` copies every node's Ray logs there (before ``down``).
Run inside the loopback-only namespace, e.g.::

    RAY_USAGE_STATS_ENABLED=0 bash scripts/loopback-only.sh \
        env PYTHONPATH=src .venv/bin/python bench/head_failover.py --rounds 2 --store both
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import os
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

from rayscale import procs, rayauth
from rayscale.labels import NODE_LABEL
from rayscale.local.store import ClusterDir

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # the test helpers (tests/redisfix.py), run as a script too
from tests.redisfix import Redis, redis_server  # noqa: E402

RAYSCALE = [sys.executable, "-m", "rayscale.cli.main"]

BUSY_JOB = """
import sys, time, ray
from rayscale.driver import connect
connect()  # to its own worker's raylet; a plain ray.init() attaches to the head's
out, stop = sys.argv[1], sys.argv[2]

@ray.remote(num_cpus=0.25)
def tick():
    time.sleep(0.05)
    return time.time()

import os
while not os.path.exists(stop):
    t = ray.get(tick.remote(), timeout=300)
    with open(out, "a") as f:
        f.write(f"{t}\\n")
"""

NEW_DRIVER = """
import time, sys
from rayscale.driver import connect
connect()
import ray
@ray.remote(num_cpus=0.25)
def one():
    return 1
assert ray.get(one.remote(), timeout=300) == 1
print(time.time())
"""


def spec(workers: int, redis: Redis | None = None) -> dict[str, Any]:
    def container(name: str, cpu: str, mem: str) -> dict[str, Any]:
        return {"name": name, "image": "rayproject/ray:2.60.0",
                "resources": {"limits": {"cpu": cpu, "memory": mem}}}

    return {
        "apiVersion": "ray.io/v1", "kind": "RayCluster", "metadata": {"name": "failover"},
        "spec": {
            "enableInTreeAutoscaling": True,
            "autoscalerOptions": {"idleTimeoutSeconds": 600},
            "gcsFaultToleranceOptions": {"backend": "rocksdb"} if redis is None else {
                "redisAddress": redis.address, "redisPassword": {"value": redis.password}},
            "headGroupSpec": {"rayStartParams": {"num-cpus": "0"},
                              "template": {"spec": {"containers": [
                                  container("ray-head", "1", "2Gi")]}}},
            "workerGroupSpecs": [{
                "groupName": "w", "replicas": workers, "minReplicas": workers,
                "maxReplicas": workers, "rayStartParams": {},
                "template": {"spec": {"containers": [container("ray-worker", "1", "1Gi")]}},
            }],
        },
    }


def wait(predicate: Any, timeout: float, what: str, every: float = 0.05) -> float:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return time.time()
        time.sleep(every)
    raise SystemExit(f"timed out waiting for {what}")


def alive(address: str, token_file: str | None) -> dict[str, str] | None:
    """Ray node id by our node id (head: "head") of the ALIVE nodes; None: no GCS."""
    from rayscale.observe.ray_state import RayObserver

    rayauth.activate(token_file)
    try:
        nodes = RayObserver(address).observe().alive()
    except Exception:
        return None
    return {n.labels.get(NODE_LABEL, "head"): n.node_id for n in nodes}


def run_round(workers: int, work: Path, redis: Redis | None = None) -> dict[str, Any]:
    home = work / "home"
    env = {**os.environ, "RAYSCALE_HOME": str(home), "RAY_USAGE_STATS_ENABLED": "0"}
    for name in rayauth.AUTH_ENV_VARS:
        env.pop(name, None)
    path = work / "failover.yaml"
    path.write_text(yaml.safe_dump(spec(workers, redis)))
    up = subprocess.run([*RAYSCALE, "up", str(path)], env=env, capture_output=True, text=True,
                        timeout=300)
    if up.returncode != 0:
        raise SystemExit(f"up failed:\n{up.stderr}")
    driver_env = {**env, **dict(line.split("=", 1) for line in up.stdout.splitlines()
                                if "=" in line)}
    cdir = ClusterDir("failover", home)
    record = cdir.load()
    try:
        return _measure(workers, work, cdir, record.address, record.token_file, driver_env)
    finally:
        subprocess.run([*RAYSCALE, "down", "failover"], env=env, capture_output=True,
                       timeout=300)
        left = procs.pids_with_marker(record.id)
        if left:
            procs.stop_pids(left)


def _new_driver(env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-c", NEW_DRIVER], env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)


def _measure(workers: int, work: Path, cdir: ClusterDir, address: str, token: str | None,
             driver_env: dict[str, str]) -> dict[str, Any]:
    from ray.job_submission import JobSubmissionClient

    wait(lambda: len(alive(address, token) or {}) == workers + 1, 120, "all nodes")
    ids = alive(address, token) or {}
    # a fresh driver's task, with the head up: its start-up cost
    started = time.time()
    baseline_proc = _new_driver(driver_env)
    out, _ = baseline_proc.communicate(timeout=300)
    baseline = float(out.strip().splitlines()[-1]) - started

    ticks, stop = work / "ticks", work / "stop"
    script = work / "busy.py"
    script.write_text(BUSY_JOB)
    record = cdir.load()
    client = JobSubmissionClient(record.dashboard_url,
                                 headers=rayauth.bearer_headers(record.token_file))
    job = client.submit_job(entrypoint=shlex.join([sys.executable, str(script), str(ticks),
                                                   str(stop)]), entrypoint_num_cpus=0.25)
    wait(lambda: ticks.exists() and len(ticks.read_text().split()) > 20, 120, "the busy job")

    head = record.head_pid
    assert head is not None and procs.environ_marker(head) == record.id
    members = procs.session_members(head)
    killed = time.time()
    for pid in members:
        os.kill(pid, signal.SIGKILL)
    driver = _new_driver(driver_env)
    new_head = wait(lambda: cdir.load().head_restarts >= 1, 120, "a new head", every=0.02)
    gcs = wait(lambda: alive(address, token) is not None, 120, "the GCS", every=0.1)

    def all_back() -> bool:
        now = alive(address, token) or {}
        workers_back = all(now.get(k) == v for k, v in ids.items() if k != "head")
        return workers_back and now.get("head") not in (None, ids.get("head"))

    back = wait(all_back, 180, "every node in the GCS", every=0.1)
    out, _ = driver.communicate(timeout=300)
    task = float(out.strip().splitlines()[-1])
    try:
        wait(lambda: len([t for t in ticks.read_text().split() if float(t) > task]) > 5, 60,
             "the busy job to go on")
        went_on = True
    except SystemExit:
        went_on = False
    stop.touch()
    with contextlib.suppress(SystemExit):
        wait(lambda: str(client.get_job_status(job).value) in ("SUCCEEDED", "FAILED", "STOPPED"),
             60, "the busy job to end")
    info = client.get_job_info(job)
    status = f"{info.status.value}: {info.message}"
    if not went_on:  # what the job's driver said last (its log is on its worker)
        for log in Path(record.temp_dir).glob(f"w*/session_*/logs/job-driver-{job}.log"):
            print(f"{log}:\n" + "\n".join(log.read_text(errors="replace").splitlines()[-15:]),
                  file=sys.stderr)
    keep = os.environ.get("KEEP_LOGS")
    if keep:  # every node's Ray logs, before `down` removes the temp dirs
        dest = Path(keep) / f"{record.id}-{job}"
        for logs in Path(record.temp_dir).glob("*/session_*/logs"):
            if not logs.is_symlink():
                shutil.copytree(logs, dest / logs.parent.parent.name / logs.parent.name,
                                dirs_exist_ok=True)
        print(f"Ray logs kept in {dest}", file=sys.stderr)
    times = sorted(float(t) for t in ticks.read_text().split())
    gaps = [b - a for a, b in itertools.pairwise(times) if b > killed - 5]
    events = [json.loads(x) for x in cdir.events_file.read_text().splitlines()]
    acted = [e["kind"] for e in events if e["ts"] >= killed
             and e["kind"] in ("launch", "stop", "lost", "launch_failed", "drain")]
    return {
        "new_head_s": new_head - killed,
        "gcs_answers_s": gcs - killed,
        "workers_in_ray_status_s": back - killed,
        "new_driver_task_s": task - killed,
        "driver_startup_baseline_s": baseline,
        "busy_job_longest_gap_s": max(gaps) if gaps else None,
        "busy_job_went_on": went_on,
        "busy_job": status,
        "workers_replaced_or_stopped": acted,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=1, help="rounds per store")
    parser.add_argument("--store", choices=["rocksdb", "redis", "both"], default="rocksdb")
    args = parser.parse_args()
    stores = ["rocksdb", "redis"] if args.store == "both" else [args.store]
    results: dict[str, list[dict[str, Any]]] = {s: [] for s in stores}
    for i in range(args.rounds):
        for store in stores:
            with tempfile.TemporaryDirectory(prefix="rs-failover-") as tmp:
                if store == "redis":
                    with redis_server(Path(tmp) / "redis") as server:
                        result = run_round(args.workers, Path(tmp), server)
                else:
                    result = run_round(args.workers, Path(tmp))
            results[store].append(result)
            print(f"{store} round {i + 1}: " + json.dumps(result), flush=True)
    for store, rounds in results.items():
        keys = [k for k, v in rounds[0].items() if isinstance(v, float)]
        print(f"{store}, median over rounds: " + ", ".join(
            f"{k} {statistics.median(r[k] for r in rounds):.2f}" for k in keys))


if __name__ == "__main__":
    main()
