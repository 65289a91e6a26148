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

Needs ``ray[data]`` (``rayscale[data]``). Every process it starts carries a
marker and is stopped by PID when the run ends, also on failure.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from pathlib import Path
from typing import Any

import yaml

from rayscale import procs, rayauth
from rayscale.observe.ray_state import RayObserver
from rayscale.ports import free_port

BENCH = Path(__file__).resolve().parent
RAYSCALE = [sys.executable, "-m", "rayscale.cli.main"]
GiB = 1 << 30

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


class Follower(threading.Thread):
    """Counts alive Ray worker nodes (not the head) through the GCS every 0.5 s."""

    def __init__(self, address: str, head_ip: str, token_file: str | None) -> None:
        super().__init__(daemon=True)
        rayauth.activate(token_file)
        self.observer = RayObserver(address)
        self.head_ip = head_ip
        self.samples: list[tuple[float, int]] = []
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            try:
                nodes = self.observer.observe().alive()
                self.samples.append((time.time(), sum(1 for n in nodes if n.ip != self.head_ip)))
            except Exception:
                pass
            self.stop.wait(0.5)

    def workers(self) -> int:
        return self.samples[-1][1] if self.samples else -1


def run_pipeline(env: dict[str, str], args: argparse.Namespace, follower: Follower
                 ) -> dict[str, Any]:
    code = "import json\n" + textwrap.dedent(DRIVER.format(
        rows=args.blocks * 10, blocks=args.blocks, sleep=args.sleep))
    started = time.time()
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         timeout=args.timeout)
    finished = time.time()
    if out.returncode != 0:
        raise RuntimeError(f"driver failed:\n{out.stderr[-3000:]}")
    # workers gone after the pipeline: the idle timeout plus the autoscaler's reaction
    deadline = time.time() + args.idle_s + 120
    while follower.workers() != 0 and time.time() < deadline:
        time.sleep(0.5)
    gone = time.time() if follower.workers() == 0 else None
    samples = [(t - started, n) for t, n in follower.samples if t >= started]
    peak = max(n for _, n in samples)
    return {
        "seconds": round(finished - started, 1),
        "first_worker_s": next((round(t, 1) for t, n in samples if n > 0), None),
        "peak_workers": peak,
        "peak_at_s": next(round(t, 1) for t, n in samples if n == peak),
        "back_to_zero_s": None if gone is None else round(gone - finished, 1),
    }


def spec(args: argparse.Namespace) -> dict[str, Any]:
    def containers(name: str, cpu: str, memory: str) -> dict[str, Any]:
        return {"spec": {"containers": [{"name": name, "image": "rayproject/ray:2.60.0",
                                         "resources": {"limits": {"cpu": cpu,
                                                                  "memory": memory}}}]}}

    return {
        "apiVersion": "ray.io/v1", "kind": "RayCluster", "metadata": {"name": "databench"},
        "spec": {
            "enableInTreeAutoscaling": True,
            "autoscalerOptions": {"upscalingMode": "Default", "idleTimeoutSeconds": args.idle_s},
            "headGroupSpec": {"rayStartParams": {"num-cpus": "0"},
                              "template": containers("ray-head", "1", "2Gi")},
            "workerGroupSpecs": [{"groupName": "w", "replicas": 0, "minReplicas": 0,
                                  "maxReplicas": args.max, "rayStartParams": {},
                                  "template": containers("ray-worker", "1", "1Gi")}],
        },
    }


def bench_rayscale(args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    env = {**os.environ, "RAYSCALE_HOME": str(tmp / "home"), "RAY_USAGE_STATS_ENABLED": "0"}
    for name in rayauth.AUTH_ENV_VARS:
        env.pop(name, None)
    path = tmp / "databench.yaml"
    path.write_text(yaml.safe_dump(spec(args)))
    up = subprocess.run([*RAYSCALE, "up", str(path)], env=env, capture_output=True, text=True,
                        timeout=240)
    try:
        if up.returncode != 0:
            raise RuntimeError(f"rayscale up failed:\n{up.stderr}")
        pairs = dict(line.split("=", 1) for line in up.stdout.splitlines() if "=" in line)
        driver_env = {**env, **pairs}
        follower = Follower(pairs["RAY_ADDRESS"], pairs["RAYSCALE_NODE_IP"],
                            pairs.get("RAY_AUTH_TOKEN_PATH"))
        follower.start()
        try:
            return run_pipeline(driver_env, args, follower)
        finally:
            follower.stop.set()
    finally:
        subprocess.run([*RAYSCALE, "down", "databench"], env=env, capture_output=True,
                       timeout=180)


def bench_ray(args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    slot = 251
    head_ip = f"127.{slot}.0.2"
    marker = f"raybench-{os.getpid()}"
    gcs_port = free_port()
    address = f"{head_ip}:{gcs_port}"
    temp_root = Path(tempfile.mkdtemp(prefix="rb-", dir="/tmp"))
    token = rayauth.create_token_file(tmp / "ray_token")
    config = {
        "cluster_name": "raybench",
        "max_workers": args.max,
        "idle_timeout_minutes": args.idle_s / 60.0,
        "provider": {
            "type": "external", "module": "ray_own_provider.LoopbackNodeProvider",
            "disable_node_updaters": True, "gcs_address": address,
            "ip_prefix": f"127.{slot}.1.", "temp_root": str(temp_root),
            "head_instance_id": "head-0", "head_ip": head_ip, "marker": marker,
            "node_memory": GiB,
        },
        "auth": {"ssh_user": "bench"},
        "available_node_types": {
            "head": {"resources": {}, "node_config": {}, "max_workers": 0},
            "w": {"resources": {"CPU": 1, "memory": GiB}, "node_config": {},
                  "min_workers": 0, "max_workers": args.max},
        },
        "head_node_type": "head",
        "file_mounts": {}, "cluster_synced_files": [], "initialization_commands": [],
        "setup_commands": [], "head_setup_commands": [], "worker_setup_commands": [],
        "head_start_ray_commands": [], "worker_start_ray_commands": [],
    }
    config_path = tmp / "ray_autoscaler.yaml"
    config_path.write_text(yaml.safe_dump(config))
    env = {
        **os.environ, **rayauth.auth_env(token), "RAY_USAGE_STATS_ENABLED": "0",
        "RAY_enable_autoscaler_v2": "1", "RAY_CLOUD_INSTANCE_ID": "head-0",
        "RAY_NODE_TYPE_NAME": "head", "RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S": "0",
        "AUTOSCALER_METRIC_PORT": str(free_port()), "DASHBOARD_METRIC_PORT": str(free_port()),
        procs.MARKER: marker,
        "PYTHONPATH": os.pathsep.join([str(BENCH), os.environ.get("PYTHONPATH", "")]),
    }
    ray_bin = str(Path(sys.executable).with_name("ray"))
    argv = [
        ray_bin, "start", "--head", "--block", f"--node-ip-address={head_ip}",
        f"--port={gcs_port}", "--num-cpus=0", f"--memory={2 * GiB}",
        f"--object-store-memory={256 * 1024 * 1024}", f"--temp-dir={temp_root / 'head'}",
        f"--dashboard-host={head_ip}", f"--dashboard-port={free_port()}",
        f"--dashboard-agent-listen-port={free_port()}",
        f"--ray-client-server-port={free_port()}", f"--metrics-export-port={free_port()}",
        f"--autoscaling-config={config_path}", "--disable-usage-stats",
    ]
    head = procs.spawn(argv, env, tmp / "ray_head.log")
    try:
        follower = None
        deadline = time.time() + 120
        while follower is None:
            try:
                follower = Follower(address, head_ip, str(token))
            except Exception:
                if time.time() > deadline or head.poll() is not None:
                    raise RuntimeError(f"Ray's head did not start: see {tmp / 'ray_head.log'}"
                                       ) from None
                time.sleep(1)
        follower.start()
        driver_env = {**os.environ, **rayauth.auth_env(token), "RAY_ADDRESS": address,
                      "RAYSCALE_NODE_IP": head_ip, "RAY_USAGE_STATS_ENABLED": "0"}
        try:
            return run_pipeline(driver_env, args, follower)
        finally:
            follower.stop.set()
    finally:
        procs.stop_group(head.pid)
        procs.stop_pids(procs.pids_with_marker(marker))
        shutil.rmtree(temp_root, ignore_errors=True)


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
