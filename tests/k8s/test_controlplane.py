"""The control plane: real etcd + kube-apiserver + scheduler + controller-manager."""

from __future__ import annotations

import ipaddress
import subprocess
import time
from pathlib import Path

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
