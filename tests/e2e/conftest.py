"""Real local Ray clusters for end-to-end tests, always torn down, also on failure.

Each test gets its own RAYSCALE_HOME, starts a cluster with the real CLI
(`rayscale up`), talks to it with real Ray drivers in subprocesses, and
`rayscale down`s it afterwards; a final sweep stops anything that still
carries the cluster's marker, and the test fails if there was something.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from rayscale import procs, rayauth
from rayscale.local.store import ClusterDir
from rayscale.observe.ray_state import RayObserver

RAYSCALE = [sys.executable, "-m", "rayscale.cli.main"]
GiB = 1 << 30


def worker_group(
    name: str, cpu: int = 1, max_replicas: int = 4, min_replicas: int = 0, **extra: Any
) -> dict[str, Any]:
    params = extra.pop("rayStartParams", {})
    return {
        "groupName": name,
        "replicas": min_replicas,
        "minReplicas": min_replicas,
        "maxReplicas": max_replicas,
        "rayStartParams": params,
        "template": {"spec": {"containers": [{
            "name": "ray-worker", "image": "rayproject/ray:2.60.0",
            "resources": {"limits": {"cpu": str(cpu), "memory": "1Gi"}},
        }]}},
        **extra,
    }


def cluster_spec(name: str, groups: list[dict[str, Any]], idle_s: float = 5) -> dict[str, Any]:
    return {
        "apiVersion": "ray.io/v1",
        "kind": "RayCluster",
        "metadata": {"name": name},
        "spec": {
            "enableInTreeAutoscaling": True,
            "autoscalerOptions": {"upscalingMode": "Default", "idleTimeoutSeconds": idle_s},
            "headGroupSpec": {
                "rayStartParams": {"num-cpus": "0"},
                "template": {"spec": {"containers": [{
                    "name": "ray-head", "image": "rayproject/ray:2.60.0",
                    "resources": {"limits": {"cpu": "1", "memory": "2Gi"}},
                }]}},
            },
            "workerGroupSpecs": groups,
        },
    }


@dataclass
class Cluster:
    name: str
    env: dict[str, str]
    home: Path
    driver_env: dict[str, str] = field(default_factory=dict)
    up_stderr: str = ""

    @property
    def dir(self) -> ClusterDir:
        return ClusterDir(self.name, self.home)

    def cli(self, *args: str, timeout: float = 120, check: bool = True
            ) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*RAYSCALE, *args], env=self.env, capture_output=True, text=True,
                              timeout=timeout, check=check)

    def status(self) -> dict[str, Any]:
        out: dict[str, Any] = json.loads(self.cli("status", self.name, "--json").stdout)
        return out

    def group(self, name: str) -> dict[str, Any]:
        groups: dict[str, Any] = self.status()["groups"]
        return dict(groups[name])

    def events(self, kind: str | None = None) -> list[dict[str, Any]]:
        lines = self.dir.events_file.read_text().splitlines() if self.dir.events_file.exists() \
            else []
        events = [json.loads(x) for x in lines]
        return [e for e in events if kind is None or e["kind"] == kind]

    def driver(self, code: str) -> subprocess.Popen[str]:
        """A Ray driver in its own process, connected the way users connect."""
        script = "from rayscale.driver import connect\nconnect()\n" + textwrap.dedent(code)
        return subprocess.Popen([sys.executable, "-c", script], env=self.driver_env,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def run_driver(self, code: str, timeout: float = 180) -> str:
        proc = self.driver(code)
        try:
            out, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, err = proc.communicate()
            raise AssertionError(f"driver timed out\n{out}\n{err[-3000:]}") from None
        assert proc.returncode == 0, f"driver failed\n{out}\n{err[-3000:]}"
        return out

    @property
    def marker(self) -> str:
        return self.dir.load().id

    @property
    def token_file(self) -> str | None:
        return self.dir.load().token_file

    def observer(self) -> RayObserver:
        """A GCS client in this (test) process, with the cluster's token."""
        rayauth.activate(self.token_file)
        return RayObserver(self.dir.load().address)


def wait_for(predicate: Callable[[], Any], timeout: float, what: str, every: float = 0.5) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {last!r})")


def _restore_auth(saved: dict[str, str | None]) -> None:
    for name, value in saved.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value
    from ray._raylet import AuthenticationTokenLoader, Config

    Config.initialize("")
    AuthenticationTokenLoader.instance().reset_cache()


@pytest.fixture
def start_cluster(tmp_path: Path) -> Iterator[Callable[..., Cluster]]:
    started: list[Cluster] = []
    home = tmp_path / "home"
    env = {**os.environ, "RAYSCALE_HOME": str(home), "RAY_USAGE_STATS_ENABLED": "0"}
    for name in rayauth.AUTH_ENV_VARS:  # clusters bring their own auth settings
        env.pop(name, None)

    def start(spec: dict[str, Any], *up_args: str, **extra_env: str) -> Cluster:
        path = tmp_path / f"{spec['metadata']['name']}.yaml"
        path.write_text(yaml.safe_dump(spec))
        cluster = Cluster(spec["metadata"]["name"], {**env, **extra_env}, home)
        started.append(cluster)
        up = cluster.cli("up", str(path), *up_args, timeout=240, check=False)
        assert up.returncode == 0, f"up failed:\n{up.stderr}"
        cluster.up_stderr = up.stderr
        pairs = dict(line.split("=", 1) for line in up.stdout.splitlines() if "=" in line)
        cluster.driver_env = {**cluster.env, **pairs}
        return cluster

    saved_auth = {name: os.environ.get(name) for name in rayauth.AUTH_ENV_VARS}
    yield start

    _restore_auth(saved_auth)  # Cluster.observer() switched this process to a token
    leftovers = []
    for cluster in started:
        if not cluster.dir.exists():
            continue
        marker = cluster.marker
        cluster.cli("down", cluster.name, check=False, timeout=180)
        left = procs.pids_with_marker(marker)
        if left:
            leftovers.append((cluster.name, [procs.cmdline(p)[:3] for p in left]))
            procs.stop_pids(left)
    assert not leftovers, f"processes left after down: {leftovers}"
