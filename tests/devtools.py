"""Helpers for tests (and the operator's tests) on a real dev cluster.

``dev_cluster(dir)`` starts a control plane and always stops it;
``start_vnode(...)`` runs ``python -m rayscale.vnode`` as a child process in
its own process group and waits for its Nodes to be Ready;
``VNodeProcess.stop()`` stops it (the vnode stops its pods' processes and
deletes its Nodes), then SIGKILLs its group and sweeps any pod process that
is still alive, by the vnode's environment marker. Nothing by name.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import yaml
from lightkube import ApiError, Client
from lightkube.resources.core_v1 import Node

from rayscale import procs
from rayscale.devcluster.cluster import DevCluster, admin_client
from rayscale.vnode.config import VNodeConfig
from rayscale.vnode.runtime import pod_pids

T = TypeVar("T")


def wait_for(
    check: Callable[[], T | None], timeout_s: float, what: str, interval_s: float = 0.2
) -> T:
    """Poll ``check`` until it returns something truthy; TimeoutError naming ``what``."""
    deadline = time.monotonic() + timeout_s
    last_error: Exception | None = None
    while True:
        try:
            value = check()
            if value:
                return value
        except (ApiError, OSError) as e:
            last_error = e
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout_s:.0f}s waiting for {what}"
                               + (f" (last error: {last_error})" if last_error else ""))
        time.sleep(interval_s)


@contextlib.contextmanager
def dev_cluster(state_dir: Path, timeout_s: float = 180.0) -> Iterator[DevCluster]:
    cluster = DevCluster(state_dir, name="rayscale-test")
    try:
        cluster.start(timeout_s=timeout_s)
        yield cluster
    finally:
        cluster.stop()


@dataclass
class VNodeProcess:
    proc: subprocess.Popen[bytes]
    state_dir: Path
    config: VNodeConfig
    log: Path

    def node_names(self) -> list[str]:
        return [name for name, _ in self.config.node_names()]

    def pod_uids(self) -> set[str]:
        pods = self.state_dir / "pods"
        if not pods.exists():
            return set()
        return {p.name.rsplit("_", 1)[-1] for p in pods.iterdir()}

    def leftover_processes(self) -> list[int]:
        """Live processes of any pod this vnode ever ran."""
        uids = self.pod_uids()
        if not uids:
            return []
        return pod_pids(uids)

    def stop(self, timeout_s: float = 30.0) -> list[int]:
        """Stop the vnode and everything it ran; returns PIDs that had to be swept."""
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                procs.stop_group(self.proc.pid, 1.0)
                self.proc.wait(5)
        left = self.leftover_processes()
        if left:
            procs.stop_pids(left, 2.0)
        return left


def start_vnode(
    kubeconfig: Path, state_dir: Path, config: VNodeConfig, timeout_s: float = 60.0
) -> VNodeProcess:
    """Run a vnode process and wait until its Nodes are Ready."""
    state_dir.mkdir(parents=True, exist_ok=True)
    cfg = state_dir / "vnode.yaml"
    cfg.write_text(yaml.safe_dump(config.model_dump(mode="json")))
    log = state_dir / "vnode.log"
    argv = [sys.executable, "-m", "rayscale.vnode", "--kubeconfig", str(kubeconfig),
            "--config", str(cfg), "--state-dir", str(state_dir), "--verbose"]
    proc = procs.spawn(argv, dict(os.environ), log)
    handle = VNodeProcess(proc, state_dir, config, log)
    client = admin_client(kubeconfig)
    try:
        def ready() -> bool:
            if proc.poll() is not None:
                raise RuntimeError(f"vnode exited ({proc.returncode}); see {log}:\n"
                                   + log.read_text(errors="replace")[-3000:])
            for name in handle.node_names():
                try:
                    node = client.get(Node, name)
                except ApiError:
                    return False
                conds = (node.status.conditions or []) if node.status else []
                if not any(c.type == "Ready" and c.status == "True" for c in conds):
                    return False
                taints = (node.spec.taints or []) if node.spec else []
                if any(t.key.startswith("node.kubernetes.io/") for t in taints):
                    return False  # not-ready/unreachable: the lifecycle controller lags
            return True

        wait_for(ready, timeout_s, "vnode Nodes Ready")
    except BaseException:
        handle.stop()
        raise
    finally:
        client.close()
    return handle


def admin(cluster: DevCluster) -> Client:
    return admin_client(cluster.kubeconfig)
