"""What the side-by-side benchmarks share: one cluster per autoscaler, followed through the GCS.

``ray_data_scaling.py`` and ``seeds_vs_ray.py`` run one workload on two clusters
that differ only in their autoscaler:

- :func:`rayscale_cluster`: ``rayscale up`` on a RayCluster spec
  (:func:`rayscale_spec`), ``rayscale down`` at the end;
- :func:`ray_cluster`: ``ray start --head --autoscaling-config=...`` with
  ``RAY_enable_autoscaler_v2=1`` (Ray's autoscaler v2 in the head's monitor),
  its nodes started by a provider from ``bench/ray_own_provider.py``:
  ``loopback`` (``LoopbackNodeProvider``: a ``ray start --block`` process per
  node, all of a launch at once) or ``fake`` (``LoopbackFakeMultiNodeProvider``,
  Ray's own fake multi-node provider on loopback addresses: nodes started one
  at a time inside the monitor).

Both yield a :class:`Cluster`: the address, the environment a driver needs and
the PID of the autoscaler process (for its CPU time, :func:`cpu_seconds`).
Every process either side starts carries a marker in its environment and is
stopped by process group / PID when the context ends, also on failure; nothing
is ever stopped by name.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml

from rayscale import procs, rayauth
from rayscale.local.store import ClusterDir
from rayscale.observe.ray_state import RayObserver
from rayscale.ports import free_port

BENCH = Path(__file__).resolve().parent
RAYSCALE = [sys.executable, "-m", "rayscale.cli.main"]
GiB = 1 << 30
OBJECT_STORE = 256 * 1024 * 1024
RayProvider = Literal["loopback", "fake"]
# Ray's fake provider names its nodes (and Ray node ids) ffff...NNNNN, the head 00000.
FAKE_HEAD_NODE_ID = "f" * 51 + "00000"
FAKE_HEAD_TYPE = "ray.head.default"
#: What KubeRay gives Ray's autoscaler for ``upscalingMode: Default`` (rayscale's spec
#: here): no rate limit. Unset, Ray's v2 launches one node per 5 s round.
KUBERAY_DEFAULT_UPSCALING_SPEED = 1000.0


@dataclass
class Cluster:
    address: str
    head_ip: str
    token_file: str | None
    driver_env: dict[str, str]
    autoscaler_pid: int
    logs: Path


class Follower(threading.Thread):
    """Counts alive Ray worker nodes (not the head) through the GCS every ``every_s``."""

    def __init__(self, cluster: Cluster, every_s: float = 0.5) -> None:
        super().__init__(daemon=True)
        rayauth.activate(cluster.token_file)
        self.observer = RayObserver(cluster.address)
        self.head_ip = cluster.head_ip
        self.every_s = every_s
        self.samples: list[tuple[float, int]] = []
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            try:
                nodes = self.observer.observe().alive()
                self.samples.append((time.time(), sum(1 for n in nodes if n.ip != self.head_ip)))
            except Exception:
                pass
            self.stop.wait(self.every_s)

    def workers(self) -> int:
        return self.samples[-1][1] if self.samples else -1

    def wait_zero(self, timeout_s: float) -> float | None:
        """Wait until no worker is alive; when that was seen (epoch), or None on timeout."""
        deadline = time.time() + timeout_s
        while self.workers() != 0 and time.time() < deadline:
            time.sleep(0.2)
        return self.samples[-1][0] if self.workers() == 0 else None

    def since(self, started: float) -> list[tuple[float, int]]:
        """The samples from ``started`` on, as (seconds after it, workers)."""
        return [(t - started, n) for t, n in self.samples if t >= started]


def stop_on_sigterm() -> None:
    """Turn SIGTERM (a ``timeout``, a CI runner) into SystemExit, so the clusters'
    ``finally`` blocks stop what they started instead of leaving it running."""
    def handler(signum: int, frame: Any) -> None:
        sys.exit(128 + signum)

    signal.signal(signal.SIGTERM, handler)


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds a process has used so far (its own, not its children's)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[-1].split()  # fields[0] is the state, field 3 of stat(5)
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rayscale_spec(name: str, max_workers: int, idle_s: float) -> dict[str, Any]:
    """The RayCluster: head ``num-cpus: 0``, one group of 1-CPU / 1 GiB workers, 0..max."""
    def containers(container: str, cpu: str, memory: str) -> dict[str, Any]:
        return {"spec": {"containers": [{"name": container, "image": "rayproject/ray:2.60.0",
                                         "resources": {"limits": {"cpu": cpu,
                                                                  "memory": memory}}}]}}

    return {
        "apiVersion": "ray.io/v1", "kind": "RayCluster", "metadata": {"name": name},
        "spec": {
            "enableInTreeAutoscaling": True,
            "autoscalerOptions": {"upscalingMode": "Default", "idleTimeoutSeconds": idle_s},
            "headGroupSpec": {"rayStartParams": {"num-cpus": "0"},
                              "template": containers("ray-head", "1", "2Gi")},
            "workerGroupSpecs": [{"groupName": "w", "replicas": 0, "minReplicas": 0,
                                  "maxReplicas": max_workers, "rayStartParams": {},
                                  "template": containers("ray-worker", "1", "1Gi")}],
        },
    }


@contextlib.contextmanager
def rayscale_cluster(spec: dict[str, Any], tmp: Path,
                     extra_env: dict[str, str] | None = None) -> Iterator[Cluster]:
    """``rayscale up`` (its own ``RAYSCALE_HOME`` under ``tmp``, ``extra_env`` added to
    its environment, so to the cluster's processes); ``rayscale down`` after."""
    home = tmp / "home"
    env = {**os.environ, **(extra_env or {}), "RAYSCALE_HOME": str(home),
           "RAY_USAGE_STATS_ENABLED": "0"}
    for name in rayauth.AUTH_ENV_VARS:
        env.pop(name, None)
    name = spec["metadata"]["name"]
    path = tmp / f"{name}.yaml"
    path.write_text(yaml.safe_dump(spec))
    try:
        up = subprocess.run([*RAYSCALE, "up", str(path)], env=env, capture_output=True,
                            text=True, timeout=240)
        if up.returncode != 0:
            raise RuntimeError(f"rayscale up failed:\n{up.stderr}")
        pairs = dict(line.split("=", 1) for line in up.stdout.splitlines() if "=" in line)
        record = ClusterDir(name, home=home).load()
        yield Cluster(
            address=pairs["RAY_ADDRESS"], head_ip=pairs["RAYSCALE_NODE_IP"],
            token_file=pairs.get("RAY_AUTH_TOKEN_PATH"), driver_env={**env, **pairs},
            autoscaler_pid=_rayscale_autoscaler(record.id, record.autoscaler_pid),
            logs=home / "clusters" / name / "logs",
        )
    finally:
        subprocess.run([*RAYSCALE, "down", name], env=env, capture_output=True, timeout=180)


def _rayscale_autoscaler(marker: str, recorded: int | None) -> int:
    """The ``rayscale autoscaler`` process of the cluster whose marker is ``marker``.

    ``rayscale up`` starts it in a session of its own and records its PID; it must
    carry the cluster's marker and lead its own process group (else the PID is not it).
    """
    if recorded is None or procs.environ_marker(recorded) != marker:
        raise RuntimeError(f"no autoscaler process with marker {marker} (recorded {recorded})")
    if os.getpgid(recorded) != recorded:
        raise RuntimeError(f"process {recorded} does not lead its process group")
    return recorded


def ray_autoscaler_config(
    *, name: str, max_workers: int, idle_s: float, provider: RayProvider, gcs_address: str,
    head_ip: str, ip_prefix: str, temp_root: Path, marker: str,
    upscaling_speed: float | None = None,
) -> dict[str, Any]:
    """Ray's cluster config for the head's ``--autoscaling-config``: one worker type ``w``
    (1 CPU, 1 GiB), 0..``max_workers``, the idle timeout in minutes as Ray wants it."""
    common = {"gcs_address": gcs_address, "ip_prefix": ip_prefix, "marker": marker,
              "disable_node_updaters": True, "type": "external"}
    if provider == "loopback":
        head_type, head_id = "head", "head-0"
        provider_config = {
            **common, "module": "ray_own_provider.LoopbackNodeProvider",
            "temp_root": str(temp_root), "head_instance_id": head_id, "head_ip": head_ip,
            "node_memory": GiB,
        }
    else:
        head_type, head_id = FAKE_HEAD_TYPE, FAKE_HEAD_NODE_ID
        provider_config = {
            **common, "module": "ray_own_provider.LoopbackFakeMultiNodeProvider",
            "head_node_id": head_id, "disable_launch_config_check": True,
            # each launch request's nodes, one after the other (as Ray's own
            # AutoscalingCluster sets it for v2; without it a request for n nodes
            # starts one and leaves n - 1 REQUESTED for 10 minutes)
            "launch_multiple": True,
        }
    config: dict[str, Any] = {
        "cluster_name": name,
        "max_workers": max_workers,
        "idle_timeout_minutes": idle_s / 60.0,
        "provider": provider_config,
        "auth": {"ssh_user": "bench"},
        "available_node_types": {
            head_type: {"resources": {}, "node_config": {}, "max_workers": 0},
            "w": {"resources": {"CPU": 1, "memory": GiB}, "node_config": {},
                  "min_workers": 0, "max_workers": max_workers},
        },
        "head_node_type": head_type,
        "file_mounts": {}, "cluster_synced_files": [], "initialization_commands": [],
        "setup_commands": [], "head_setup_commands": [], "worker_setup_commands": [],
        "head_start_ray_commands": [], "worker_start_ray_commands": [],
    }
    if upscaling_speed is not None:
        config["upscaling_speed"] = upscaling_speed
    return config


@contextlib.contextmanager
def ray_cluster(
    tmp: Path, *, max_workers: int, idle_s: float, provider: RayProvider = "loopback",
    upscaling_speed: float | None = None, slot: int = 251,
) -> Iterator[Cluster]:
    """A Ray head on ``127.<slot>.0.2`` whose monitor runs autoscaler v2 with ``provider``.

    Workers get ``127.<slot>.1.x``. The head is a ``ray start --block`` in a session
    of its own; at the end that process group is stopped, then whatever still
    carries the marker (worker nodes, in their own sessions) or names this
    cluster's temp dir on its command line (a fake node's raylet: Ray's process
    titles may overwrite the environment the marker is read from).
    """
    head_ip = f"127.{slot}.0.2"
    marker = f"raybench-{os.getpid()}-{time.time_ns()}"
    gcs_port = free_port()
    address = f"{head_ip}:{gcs_port}"
    # short: Ray's Unix socket paths live under it (108 bytes at most)
    temp_root = Path(tempfile.mkdtemp(prefix="rb-", dir="/tmp"))
    token = rayauth.create_token_file(tmp / "ray_token")
    config = ray_autoscaler_config(
        name="raybench", max_workers=max_workers, idle_s=idle_s, provider=provider,
        gcs_address=address, head_ip=head_ip, ip_prefix=f"127.{slot}.1.",
        temp_root=temp_root, marker=marker, upscaling_speed=upscaling_speed)
    config_path = tmp / "ray_autoscaler.yaml"
    config_path.write_text(yaml.safe_dump(config))
    head_type = config["head_node_type"]
    head_id = config["provider"].get("head_node_id", "head-0")
    env = {
        **os.environ, **rayauth.auth_env(token), "RAY_USAGE_STATS_ENABLED": "0",
        "RAY_enable_autoscaler_v2": "1", "RAY_CLOUD_INSTANCE_ID": head_id,
        "RAY_NODE_TYPE_NAME": head_type, "RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S": "0",
        "AUTOSCALER_METRIC_PORT": str(free_port()), "DASHBOARD_METRIC_PORT": str(free_port()),
        procs.MARKER: marker,
        "PYTHONPATH": os.pathsep.join([str(BENCH), os.environ.get("PYTHONPATH", "")]),
    }
    if provider == "fake":
        # the provider refuses to start without it; `ray start --head` then gives the
        # head the fake head's node id, which the provider reports as the head
        env["RAY_FAKE_CLUSTER"] = "1"
    argv = [
        str(Path(sys.executable).with_name("ray")), "start", "--head", "--block",
        f"--node-ip-address={head_ip}", f"--port={gcs_port}", "--num-cpus=0",
        f"--memory={2 * GiB}", f"--object-store-memory={OBJECT_STORE}",
        f"--temp-dir={temp_root / 'head'}", f"--dashboard-host={head_ip}",
        f"--dashboard-port={free_port()}", f"--dashboard-agent-listen-port={free_port()}",
        f"--ray-client-server-port={free_port()}", f"--metrics-export-port={free_port()}",
        f"--autoscaling-config={config_path}", "--disable-usage-stats",
    ]
    head = procs.spawn(argv, env, tmp / "ray_head.log")
    try:
        deadline = time.time() + 120
        monitor = None
        while monitor is None:
            monitor = _ray_monitor(head.pid)
            if monitor is None:
                if time.time() > deadline or head.poll() is not None:
                    raise RuntimeError(f"Ray's head (monitor) did not start: see "
                                       f"{tmp / 'ray_head.log'}")
                time.sleep(0.5)
        while True:  # the GCS answers
            try:
                rayauth.activate(str(token))
                RayObserver(address).observe()
                break
            except Exception:
                if time.time() > deadline or head.poll() is not None:
                    raise RuntimeError(f"Ray's head did not start: see {tmp / 'ray_head.log'}"
                                       ) from None
                time.sleep(1)
        yield Cluster(
            address=address, head_ip=head_ip, token_file=str(token),
            driver_env={**os.environ, **rayauth.auth_env(token), "RAY_ADDRESS": address,
                        "RAYSCALE_NODE_IP": head_ip, "RAY_USAGE_STATS_ENABLED": "0"},
            autoscaler_pid=monitor, logs=temp_root,
        )
    finally:
        procs.stop_group(head.pid)
        procs.stop_pids(procs.pids_with_marker(marker))
        procs.stop_pids(_naming(str(temp_root)))
        shutil.rmtree(temp_root, ignore_errors=True)


def _ray_monitor(head_pid: int) -> int | None:
    """The head's autoscaler: the ``.../monitor.py`` member of its ``ray start`` session."""
    for pid in procs.session_members(head_pid):
        if any(arg.endswith("/monitor.py") for arg in procs.cmdline(pid)):
            return pid
    return None


def _naming(text: str) -> list[int]:
    """Live processes (not this one) with ``text`` in an argument of their command line."""
    me = os.getpid()
    return [int(entry.name) for entry in Path("/proc").iterdir()
            if entry.name.isdigit() and int(entry.name) != me
            and any(text in arg for arg in procs.cmdline(int(entry.name)))]
