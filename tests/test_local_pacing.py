"""Paced launches in local mode: the window (rayscale.local.pacing) and the provider's queue.

The provider test starts real processes in place of `ray start` (a shell that
prints Ray's "Ray runtime started." when told to), so that when each node
comes up is the test's choice; the e2e tests run the same provider with Ray.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from rayscale import procs
from rayscale.local.pacing import PacingError, parallel_starts, usable_cpus
from rayscale.local.provider import STARTED_LINE, LocalProvider
from rayscale.local.store import ClusterDir, ClusterRecord, NodeRecord
from tests.devtools import wait_for
from tests.test_node_labels import sample


def test_usable_cpus_follow_affinity_and_a_cgroup_quota(tmp_path: Path) -> None:
    affinity = len(os.sched_getaffinity(0))
    cpu_max = tmp_path / "cpu.max"
    assert usable_cpus(tmp_path / "missing") == affinity
    cpu_max.write_text("max 100000\n")
    assert usable_cpus(cpu_max) == affinity
    cpu_max.write_text("50000 100000\n")  # half a CPU: still one start at a time
    assert usable_cpus(cpu_max) == 1
    cpu_max.write_text(f"{(affinity + 4) * 100000} 100000\n")  # a quota above the affinity
    assert usable_cpus(cpu_max) == affinity


def test_the_window_comes_from_the_machine_unless_set() -> None:
    assert parallel_starts({}) == usable_cpus()
    assert parallel_starts({"RAYSCALE_PARALLEL_STARTS": "3"}) == 3
    assert parallel_starts({"RAYSCALE_PARALLEL_STARTS": "0"}) is None  # no limit
    for bad in ("two", "-1", "1.5"):
        with pytest.raises(PacingError, match="RAYSCALE_PARALLEL_STARTS"):
            parallel_starts({"RAYSCALE_PARALLEL_STARTS": bad})


class ShellNodes(LocalProvider):
    """The local provider with a shell in place of `ray start`: a node "comes up" (prints
    Ray's line) once the file ``go/<node id>`` exists, then waits to be stopped."""

    def __init__(self, cluster: ClusterDir, window: int | None, go: Path) -> None:
        super().__init__(sample(), cluster, window)
        self.go = go

    def _argv(self, record: ClusterRecord, node: NodeRecord) -> list[str]:
        script = (f'while [ ! -e "$1" ]; do sleep 0.05; done; '
                  f'echo "{STARTED_LINE.decode()}"; sleep 600')
        return ["sh", "-c", script, "sh", str(self.go / node.id), self._labels_arg(node)]


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[ClusterDir]:
    cdir = ClusterDir("pace", home=tmp_path)
    cdir.root.mkdir(parents=True)
    cdir.logs.mkdir()
    cdir.save(ClusterRecord(name="pace", id="pace-marker", spec_file=str(tmp_path / "c.yaml"),
                            slot=31, head_ip="127.31.0.2", gcs_port=6390,
                            dashboard_port=8266, client_port=10002,
                            temp_dir=str(tmp_path / "t"), created=0.0))
    try:
        yield cdir
    finally:
        for node in cdir.nodes():
            if node.pid is not None:
                with contextlib.suppress(ProcessLookupError):
                    procs.stop_group(node.pid, grace_s=2)


def _states(provider: LocalProvider) -> dict[str, str]:
    return {n.id: f"{n.state}{'' if n.pid else '-nopid'}" for n in provider.nodes()}


def test_at_most_the_window_starts_at_once_and_the_queue_follows(
        cluster: ClusterDir, tmp_path: Path) -> None:
    go = tmp_path / "go"
    go.mkdir()
    provider = ShellNodes(cluster, window=2, go=go)
    ids = provider.launch("spot-group", 5)
    assert len(ids) == 5
    states = _states(provider)
    started = [i for i in ids if states[i] == "started"]
    assert started == ids[:2], states  # the oldest two; the others wait, pending, no pid
    assert all(states[i] == "launching-nopid" for i in ids[2:]), states
    queued_at = {n.id: n.launched_at for n in provider.nodes()}
    time.sleep(0.2)
    # a queued node is not launched yet: its launch time moves, so it never times out
    assert all(n.launched_at > queued_at[n.id] for n in provider.nodes() if n.id in ids[2:])

    (go / ids[0]).touch()  # the first says it runs: one more starts
    wait_for(lambda: sum(1 for i in ids if _states(provider)[i] == "started") == 3, 20,
             "a third node started")
    assert _states(provider)[ids[2]] == "started" and _states(provider)[ids[3]] != "started"

    # a starting node that exits frees its slot too
    record = next(n for n in cluster.nodes() if n.id == ids[1])
    assert record.pid is not None
    procs.stop_group(record.pid, grace_s=2)
    wait_for(lambda: _states(provider)[ids[3]] == "started", 20, "the fourth node started")
    assert _states(provider)[ids[1]] == "dead"

    provider.terminate(ids[4])  # a queued node stops without ever running
    assert ids[4] not in _states(provider)
    assert not (cluster.logs / f"{ids[4]}.log").exists()


def test_without_a_window_every_launch_starts_at_once(cluster: ClusterDir,
                                                       tmp_path: Path) -> None:
    provider = ShellNodes(cluster, window=None, go=tmp_path)
    ids = provider.launch("spot-group", 3)
    assert [_states(provider)[i] for i in ids] == ["started"] * 3


def test_a_node_ray_registered_frees_its_slot_before_ray_start_says_so(
        cluster: ClusterDir, tmp_path: Path) -> None:
    go = tmp_path / "go"
    go.mkdir()
    provider = ShellNodes(cluster, window=1, go=go)
    ids = provider.launch("spot-group", 2)
    assert [_states(provider)[i] for i in ids] == ["started", "launching-nopid"]
    # the loop saw the first one registered; its `ray start` has not printed its line
    provider.registered(ids[0])
    assert [_states(provider)[i] for i in ids] == ["started", "started"]
