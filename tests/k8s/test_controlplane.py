"""The control plane: real etcd + kube-apiserver + scheduler + controller-manager."""

from __future__ import annotations

import contextlib
import fcntl
import ipaddress
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from lightkube.resources.core_v1 import ConfigMap, Namespace, ServiceAccount

from rayscale import procs
from rayscale.devcluster import DevCluster
from rayscale.devcluster.cluster import ORDER
from tests.devtools import wait_for


def _sockets(pids: set[int]) -> list[tuple[str, str, str]]:
    """(state, local, peer) of every TCP socket of these processes (from `ss`)."""
    out = subprocess.run(["ss", "-tanp"], capture_output=True, text=True, check=True).stdout
    rows = []
    for line in out.splitlines()[1:]:
        if any(f"pid={pid}," in line for pid in pids):
            parts = line.split()
            rows.append((parts[0], parts[3], parts[4]))
    return rows


def _host(addr: str) -> str:
    return addr.rsplit(":", 1)[0].strip("[]")


def test_control_plane_serves_and_stops(k8s_bin_dir: Path, tmp_path: Path) -> None:
    cluster = DevCluster(tmp_path / "dc", name="cp-test", bin_dir=k8s_bin_dir)
    try:
        took = cluster.start(timeout_s=180)
        print(f"control plane start: {took:.1f}s")
        assert cluster.ready()
        version = cluster.version()
        assert version["gitVersion"].startswith("v1.34."), version
        assert version["major"] == "1" and version["minor"] == "34"

        with cluster.client() as kube:
            names = {ns.metadata.name for ns in kube.list(Namespace) if ns.metadata}
            assert {"default", "kube-system", "kube-node-lease"} <= names
            kube.create(ConfigMap.from_dict({  # type: ignore[arg-type]
                "metadata": {"name": "hello", "namespace": "default"},
                "data": {"k": "v"},
            }))
            assert (kube.get(ConfigMap, "hello", namespace="default").data or {}) == {"k": "v"}
            # the controller-manager works: it creates the default ServiceAccount
            wait_for(lambda: kube.get(ServiceAccount, "default", namespace="default"), 60,
                     "default ServiceAccount from the controller-manager")

        # everything listens on, and talks to, loopback only
        state = cluster.load_state()
        assert state is not None
        pids = {p.pid for p in state.procs.values()}
        sockets = _sockets(pids)
        assert sockets
        for _, local, peer in sockets:
            assert ipaddress.ip_address(_host(local)).is_loopback, local
            if peer not in ("*:*", "0.0.0.0:*"):
                assert ipaddress.ip_address(_host(peer)).is_loopback, peer
    finally:
        cluster.stop()

    assert not any(cluster.running().values())
    assert state is not None
    for comp in ORDER:
        assert not procs.is_alive(state.procs[comp].pid), comp


def test_warm_restart_keeps_data(k8s_bin_dir: Path, tmp_path: Path) -> None:
    cluster = DevCluster(tmp_path / "dc", name="cp-restart", bin_dir=k8s_bin_dir)
    try:
        cluster.start(timeout_s=180)
        with cluster.client() as kube:
            kube.create(Namespace.from_dict({"metadata": {"name": "kept"}}))  # type: ignore[arg-type]
        cluster.stop()
        t0 = time.monotonic()
        cluster.start(timeout_s=120)
        warm = time.monotonic() - t0
        print(f"warm restart: {warm:.1f}s")
        assert warm < 60
        with cluster.client() as kube:
            assert kube.get(Namespace, "kept").metadata is not None
    finally:
        cluster.stop()
    assert not any(cluster.running().values())


class _Spawned:
    """Every process ``procs.spawn`` starts during a test, killed at the end if it is left."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.procs: list[subprocess.Popen[bytes]] = []
        real = procs.spawn

        def spawn(*args: Any, **kwargs: Any) -> subprocess.Popen[bytes]:
            proc = real(*args, **kwargs)
            self.procs.append(proc)
            return proc

        monkeypatch.setattr(procs, "spawn", spawn)

    def left(self) -> list[int]:
        return [p.pid for p in self.procs if p.poll() is None]

    def kill_left(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()


def _holds(pid: int, path: Path) -> bool:
    want = os.stat(path)
    with contextlib.suppress(OSError):
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            with contextlib.suppress(OSError):
                st = os.stat(fd)
                if (st.st_dev, st.st_ino) == (want.st_dev, want.st_ino):
                    return True
    return False


def test_start_with_slow_execs_judges_its_processes_alive(
        k8s_bin_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A process's command line is set a moment after Popen returns (milliseconds under
    load). Here that moment lasts 300 ms: the start used to call etcd dead ("etcd exited
    during start"), then not ours to stop, and left it running with nothing recorded."""
    spawned = _Spawned(monkeypatch)
    real_cmdline, first_read = procs.cmdline, {}

    def slow_exec_cmdline(pid: int) -> list[str]:
        first = first_read.setdefault(pid, time.monotonic())
        return [] if time.monotonic() - first < 0.3 else real_cmdline(pid)

    monkeypatch.setattr(procs, "cmdline", slow_exec_cmdline)
    cluster = DevCluster(tmp_path / "dc", name="cp-slow-exec", bin_dir=k8s_bin_dir)
    try:
        cluster.start(timeout_s=180)
        assert all(cluster.running().values())
        cluster.stop()
        assert spawned.left() == []
    finally:
        cluster.stop()
        spawned.kill_left()


def _bins_with_a_stuck_apiserver(k8s_bin_dir: Path, tmp_path: Path) -> Path:
    bins = tmp_path / "bin"
    bins.mkdir()
    for comp in ORDER:
        (bins / comp).symlink_to(k8s_bin_dir / comp)
    (bins / "kube-apiserver").unlink()
    # never ready; keeps its arguments (the identity a stop checks)
    (bins / "kube-apiserver").write_text(
        f"#!/bin/sh\nexec {sys.executable} -c 'import time; time.sleep(600)' \"$@\"\n")
    (bins / "kube-apiserver").chmod(0o755)
    return bins


def test_a_failed_start_stops_what_it_started_and_frees_the_data(
        k8s_bin_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    spawned = _Spawned(monkeypatch)
    bins = _bins_with_a_stuck_apiserver(k8s_bin_dir, tmp_path)
    cluster = DevCluster(tmp_path / "dc", name="cp-failed", bin_dir=bins)
    try:
        with pytest.raises(TimeoutError, match="kube-apiserver not healthy in time"):
            cluster.start(timeout_s=20)
        assert len(spawned.procs) == 2  # etcd, then the stuck API server
        assert spawned.left() == []
        state = cluster.load_state()
        assert state is not None and state.procs == {}
        assert cluster.etcd_lock_holders() == []
        # nothing holds etcd's data: the next start gets it
        fd = os.open(cluster.etcd_lock, os.O_RDWR)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        finally:
            os.close(fd)
    finally:
        cluster.stop()
        spawned.kill_left()


def test_a_second_etcd_never_starts_on_data_another_holds(
        k8s_bin_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """state.json lost track of a running etcd: the next start must not run a second etcd
    on the same data (which would wait for etcd's own lock until the timeout), and
    ``stop`` still finds the first one by the lock it holds."""
    spawned = _Spawned(monkeypatch)
    cluster = DevCluster(tmp_path / "dc", name="cp-held", bin_dir=k8s_bin_dir)
    try:
        cluster.start(timeout_s=180)
        state = cluster.load_state()
        assert state is not None
        etcd = state.procs.pop("etcd").pid
        assert _holds(etcd, cluster.etcd_lock)
        cluster._save(state)  # lose track of etcd
        assert cluster.etcd_lock_holders() == [etcd]
        before = len(spawned.procs)
        with pytest.raises(RuntimeError, match=rf"held by process\(es\) \[{etcd}\]"):
            cluster.start(timeout_s=30)
        assert len(spawned.procs) == before  # no second etcd
        # the failed start's stop found the lost etcd by its lock, and stopped it all
        assert spawned.left() == []
        assert not procs.is_alive(etcd)
    finally:
        cluster.stop()
        spawned.kill_left()
