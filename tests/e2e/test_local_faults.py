"""Faults on a local cluster: status tells the truth at once, and `down` leaves nothing.

Ray rewrites its processes' titles (and with them the environment that holds
rayscale's marker); `down` must find them anyway, by the sessions recorded at
spawn, however the cluster died.
"""

from __future__ import annotations

import json
import os
import signal
import sys
from typing import Any

import pytest

from rayscale import procs
from tests.e2e.conftest import Cluster, cluster_spec, wait_for, worker_group

pytestmark = pytest.mark.e2e


def _status(cluster: Cluster) -> tuple[int, dict[str, Any]]:
    result = cluster.cli("status", cluster.name, "--json", check=False)
    return result.returncode, json.loads(result.stdout)


def _gcs_pid(head_pid: int) -> int:
    for pid in procs.session_members(head_pid):
        argv = procs.cmdline(pid)
        if argv and argv[0].endswith("/gcs_server"):
            return pid
    raise AssertionError("no gcs_server in the head's session")


def test_killed_gcs_status_says_so_at_once_and_down_leaves_nothing(start_cluster: Any) -> None:
    cluster = start_cluster(cluster_spec("gcsdies", [worker_group("w", min_replicas=1)]))
    code, before = _status(cluster)
    assert code == 0 and before["state"] == "running" and before["groups"]["w"]["running"] == 1
    record = cluster.dir.load()
    assert record.head_pid is not None
    sessions = [record.head_pid, *(n.pid for n in cluster.dir.nodes() if n.pid)]
    os.kill(_gcs_pid(record.head_pid), signal.SIGKILL)

    # the very next status: not running, and nothing shown as running
    code, after = _status(cluster)
    assert code == 3 and after["state"] in ("down", "degraded"), after
    assert not after["gcs_reachable"] and after["groups"] == {} and after["nodes"] == []
    assert any("GCS" in p or "head" in p for p in after["problems"])
    assert after["last_known"]["groups"]["w"]["running"] == 1
    text = cluster.cli("status", cluster.name, check=False)
    assert text.returncode == 3 and "[red]" not in text.stdout + text.stderr
    assert "does not answer" in text.stdout or "not running" in text.stdout

    # submit: a clear error, no traceback
    submit = cluster.cli("submit", cluster.name, "--", sys.executable, "-c", "print(1)",
                         check=False, timeout=120)
    assert submit.returncode == 1 and "Traceback" not in submit.stderr, submit.stderr
    # Ray's head notices its GCS is gone and exits; its helpers may linger as orphans
    wait_for(lambda: not procs.is_alive(record.head_pid or 0), 90, "the head to exit")

    down = cluster.cli("down", cluster.name, check=False, timeout=180)
    assert down.returncode == 0, down.stderr
    left = [pid for sid in sessions for pid in procs.session_members(sid)]
    assert left == [], [procs.cmdline(p)[:2] for p in left]
    assert procs.pids_with_marker(cluster.marker) == []
    code, gone = _status(cluster)
    assert code == 3 and gone["state"] == "down" and gone["nodes"] == []


def test_killed_autoscaler_makes_status_degraded_at_once(start_cluster: Any) -> None:
    cluster = start_cluster(cluster_spec("asdies", [worker_group("w")]))
    autoscaler = cluster.dir.load().autoscaler_pid
    assert autoscaler is not None
    os.kill(autoscaler, signal.SIGKILL)
    wait_for(lambda: not procs.is_alive(autoscaler), 5, "the autoscaler to die")
    code, status = _status(cluster)
    assert code == 3 and status["state"] == "degraded"
    assert any("autoscaler is not running" in p for p in status["problems"])
    assert status["gcs_reachable"]  # the head itself is fine: its report is still shown
    cluster.cli("resume", cluster.name)
    code, status = _status(cluster)
    assert code == 0 and status["state"] == "running" and status["problems"] == []


def test_killed_raylet_node_leaves_status_within_seconds(start_cluster: Any) -> None:
    cluster = start_cluster(cluster_spec("rayletdies", [worker_group("w", min_replicas=1)],
                                         idle_s=60))
    node = cluster.dir.nodes()[0]
    assert node.pid is not None
    raylet = next(p for p in procs.session_members(node.pid)
                  if procs.cmdline(p) and procs.cmdline(p)[0].endswith("/raylet"))
    os.kill(raylet, signal.SIGKILL)
    # Ray's GCS calls the node ALIVE for 15 s or more; status follows the process
    # (tests/test_snapshot.py checks that rule without timing)
    wait_for(lambda: node.id not in {n["id"] for n in _status(cluster)[1]["nodes"]
                                     if n["status"] == "running"}, 60, "the dead node to go")
    assert any(node.id in e["message"] for e in cluster.events("lost"))
    # min replicas: a replacement comes up
    wait_for(lambda: cluster.group("w")["running"] == 1
             and node.id not in {n.id for n in cluster.dir.nodes()}, 120, "a replacement")
