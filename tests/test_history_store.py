"""The history store: round trip, step changes only, retention, a writer and readers at once."""

from __future__ import annotations

import os
import sqlite3
import stat
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from rayscale.autoscaler.events import EventLog, ScalingEvent
from rayscale.autoscaler.recorder import HistoryRecorder, demand_words
from rayscale.history.schema import SCHEMA_VERSION, HistoryError
from rayscale.history.store import HistoryStore, counts_of, demand_of, parse_retention

T0 = 1_700_000_000.0


def _status(running: int, pending: int = 0, tasks: int = 0, nodes: list[dict] | None = None
            ) -> dict:
    return {
        "updated_at": time.time(),
        "groups": {"small": {"running": running, "pending": pending, "terminating": 0,
                             "idle": 0}},
        "demand": {"tasks": [{"resources": {"CPU": 1}, "count": tasks}] if tasks else [],
                   "gangs": [], "floor": []},
        "plan": {"infeasible": {"tasks": [], "gangs": [], "floor": []}},
        "nodes": nodes or [],
    }


def _rounds(store: HistoryStore) -> int:
    return int(store.conn.execute("SELECT count(*) FROM rounds").fetchone()[0])


def test_round_trip_of_a_cluster_its_rounds_events_and_jobs(tmp_path: Path) -> None:
    store = HistoryStore(tmp_path / "h.sqlite3")
    cid = store.record_cluster("u1", "demo", "local", T0, "http://127.9.0.2:8265")
    store.record_round("u1", T0 + 1, {("small", "running"): 0, ("small", "pending"): 2},
                       {"tasks": 5, "gangs": 0, "floor": 0, "infeasible": 0})
    store.record_round("u1", T0 + 9, {("small", "running"): 2, ("small", "pending"): 0},
                       {"tasks": 0, "gangs": 0, "floor": 0, "infeasible": 0})
    store.record_event("u1", ScalingEvent("launch", "launched 2 x small (w-1, w-2) for tasks",
                                          "small", reason="tasks", ts=T0 + 1).to_dict(),
                       "demand: 5 pending tasks")
    store.record_job("train", T0 + 0.5, "demo", "RUNNING", "train-1", log_path="/x/job.log")
    store.record_job("train", T0 + 0.5, "demo", "SUCCEEDED", "train-1", log_path="/x/job.log",
                     ended=T0 + 20)
    store.mark_gone("u1", T0 + 30)
    store.close()

    again = HistoryStore(tmp_path / "h.sqlite3", readonly=True)  # another process, later
    [row] = again.clusters()
    assert (row.id, row.name, row.mode, row.gone, row.events, row.jobs) == \
        (cid, "demo", "local", T0 + 30, 1, 1)
    tl = again.timeline(cid)
    assert tl.counts[("small", "running")] == [(T0 + 1, 0), (T0 + 9, 2)]
    assert tl.counts[("small", "pending")] == [(T0 + 1, 2), (T0 + 9, 0)]
    assert tl.demand["tasks"] == [(T0 + 1, 5), (T0 + 9, 0)]
    assert "infeasible" not in tl.demand  # demand starts at 0: a kind never above is not stored
    [event] = tl.events
    assert (event.kind, event.group, event.reason, event.detail) == \
        ("launch", "small", "tasks", "demand: 5 pending tasks")
    [job] = again.jobs(cid)  # one row per run, updated in place
    assert (job.status, job.ended, job.log_path) == ("SUCCEEDED", T0 + 20, "/x/job.log")
    with pytest.raises(sqlite3.OperationalError):  # the UI's connection cannot write
        again.conn.execute("DELETE FROM events")


def test_only_rounds_that_change_something_are_stored(tmp_path: Path) -> None:
    path = tmp_path / "h.sqlite3"
    store = HistoryStore(path)
    store.record_cluster("u1", "demo", "local", T0)
    wrote = [store.record_round("u1", T0 + i, counts_of(_status(2)), demand_of(_status(2)))
             for i in range(100)]
    assert wrote == [True] + [False] * 99 and _rounds(store) == 1
    assert store.record_round("u1", T0 + 200, counts_of(_status(3)), demand_of(_status(3)))
    # the changed value only: one count row, no demand row
    rows = store.conn.execute("SELECT grp, state, n FROM counts JOIN rounds ON "
                              "rounds.id = counts.round WHERE ts = ?", (T0 + 200,)).fetchall()
    assert rows == [("small", "running", 3)]
    assert not store.conn.execute("SELECT 1 FROM demand JOIN rounds ON rounds.id = demand.round "
                                  "WHERE ts = ?", (T0 + 200,)).fetchall()
    store.close()
    # a restarted autoscaler (a new store) compares with what the file holds
    restarted = HistoryStore(path)
    assert not restarted.record_round("u1", T0 + 300, counts_of(_status(3)),
                                      demand_of(_status(3)))
    assert restarted.record_round("u1", T0 + 301, counts_of(_status(3, tasks=4)),
                                  demand_of(_status(3, tasks=4)))
    assert _rounds(restarted) == 3


def test_retention_forgets_gone_clusters_and_folds_old_rounds_of_live_ones(
        tmp_path: Path) -> None:
    store = HistoryStore(tmp_path / "h.sqlite3")
    now = T0 + 30 * 86400
    store.record_cluster("old", "old", "local", T0)
    store.record_round("old", T0 + 1, {("a", "running"): 1}, {"tasks": 1})
    store.record_event("old", {"ts": T0 + 1, "kind": "launch", "message": "m"})
    store.record_job("j", T0, "old", "SUCCEEDED", ended=T0 + 5)
    store.mark_gone("old", T0 + 10)
    live = store.record_cluster("live", "live", "local", now - 10 * 86400)
    store.record_round("live", now - 10 * 86400, {("a", "running"): 4, ("b", "running"): 1},
                       {"tasks": 3})
    store.record_round("live", now - 9 * 86400, {("a", "running"): 5, ("b", "running"): 1},
                       {"tasks": 3})
    store.record_round("live", now - 3600, {("a", "running"): 2, ("b", "running"): 1},
                       {"tasks": 0})
    store.record_event("live", {"ts": now - 9 * 86400, "kind": "launch", "message": "old"})
    store.record_event("live", {"ts": now - 60, "kind": "stop", "message": "new"})

    assert store.prune(7 * 86400, now=now) == 1
    assert [c.name for c in store.clusters()] == ["live"]
    assert not store.conn.execute("SELECT * FROM jobs").fetchall()
    tl = store.timeline(live)
    cutoff = now - 7 * 86400
    # the value at the cutoff survives as one round there; later changes are untouched
    assert tl.counts[("a", "running")] == [(cutoff, 5), (now - 3600, 2)]
    assert tl.counts[("b", "running")] == [(cutoff, 1)]
    assert tl.demand["tasks"] == [(cutoff, 3), (now - 3600, 0)]
    assert [e.message for e in tl.events] == ["new"]
    # the store goes on after a prune (its caches were reset)
    assert store.record_round("live", now, {("a", "running"): 3, ("b", "running"): 1},
                              {"tasks": 0})


def test_parse_retention() -> None:
    assert parse_retention("7d") == 7 * 86400
    assert parse_retention("36h") == 36 * 3600
    assert parse_retention("90m") == 5400
    assert parse_retention("600") == 600
    for bad in ("", "7x", "-1d", "0", "d"):
        with pytest.raises(ValueError, match="not a duration"):
            parse_retention(bad, "--retention")


def test_file_is_private_and_a_newer_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "state" / "h.sqlite3"
    HistoryStore(path).close()
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(path.parent).st_mode) == 0o700
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    conn.close()
    with pytest.raises(HistoryError, match="newer than this rayscale"):
        HistoryStore(path)
    with pytest.raises(HistoryError, match="no history"):
        HistoryStore(tmp_path / "none.sqlite3", readonly=True)


def test_an_open_read_does_not_block_the_writer(tmp_path: Path) -> None:
    path = tmp_path / "h.sqlite3"
    writer = HistoryStore(path)
    writer.record_cluster("u1", "demo", "local", T0)
    writer.record_round("u1", T0, {("small", "running"): 1}, {})
    writer.conn.execute("PRAGMA busy_timeout = 0")  # a wait would be an error at once
    reader = HistoryStore(path, readonly=True)
    reader.conn.execute("BEGIN")
    assert reader.conn.execute("SELECT count(*) FROM rounds").fetchone()[0] == 1
    for i in range(1, 20):
        assert writer.record_round("u1", T0 + i, {("small", "running"): i + 1}, {})
    # the reader's snapshot is stable until it ends; then it sees every round
    assert reader.conn.execute("SELECT count(*) FROM rounds").fetchone()[0] == 1
    reader.conn.execute("COMMIT")
    assert reader.conn.execute("SELECT count(*) FROM rounds").fetchone()[0] == 20


WRITER = """
import sys, time
from pathlib import Path
from rayscale.history.store import HistoryStore
store = HistoryStore(Path(sys.argv[1]))
store.record_cluster("u1", "demo", "local", 0.0)
print("ready", flush=True)
for i in range(int(sys.argv[2])):
    store.record_round("u1", float(i), {("small", "running"): i}, {"tasks": i % 7})
    store.record_event("u1", {"ts": float(i), "kind": "launch", "message": f"launch {i}"})
print("done", flush=True)
"""


def test_a_writer_process_and_a_reader_at_the_same_time(tmp_path: Path) -> None:
    path = tmp_path / "h.sqlite3"
    rounds = 600
    proc = subprocess.Popen([sys.executable, "-c", textwrap.dedent(WRITER), str(path),
                             str(rounds)], stdout=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
    reader = HistoryStore(path, readonly=True)
    seen: list[int] = []
    while proc.poll() is None:
        [row] = reader.clusters()
        tl = reader.timeline(row.id)
        series = tl.counts.get(("small", "running"), [])
        # a consistent snapshot: every round has its count and its event, in order
        assert [n for _, n in series] == list(range(len(series)))
        assert len(tl.events) in (len(series), len(series) - 1, len(series) + 1)
        seen.append(len(series))
    assert proc.wait(timeout=60) == 0
    assert proc.stdout.read().strip() == "done"
    assert len(reader.timeline(1).counts[("small", "running")]) == rounds
    assert len(set(seen)) > 3, f"the reader saw the writer's progress: {sorted(set(seen))[:10]}"


def test_recorder_stores_events_with_their_detail_and_changing_rounds(tmp_path: Path) -> None:
    store = HistoryStore(tmp_path / "h.sqlite3")
    recorder = HistoryRecorder(store, "u1", "demo", "local", T0, None)
    log = EventLog(tmp_path / "events.jsonl", echo=recorder.on_event)
    recorder.on_status(_status(0))
    # the round that first sees the demand launches, then publishes its status
    log.add(ScalingEvent("launch", "launched 3 x small (w-1, w-2, w-3) for tasks", "small",
                         reason="tasks"))
    recorder.on_status(_status(0, tasks=5))
    for _ in range(9):
        recorder.on_status(_status(0, pending=3, tasks=5))
    recorder.on_status(_status(3, nodes=[{"id": "w-2", "idle_s": 61.0}]))
    # the round that found w-2 idle for 62 s stops it, then publishes that picture
    log.add(ScalingEvent("stop", "stopping w-2 (idle)", "small", "w-2", "idle"))
    recorder.on_status(_status(3, nodes=[{"id": "w-2", "idle_s": 62.4}]))
    tl = store.timeline(1)
    assert [(e.kind, e.detail) for e in tl.events] == [
        ("launch", "demand: 5 pending 1-CPU tasks"), ("stop", "idle 62 s")]
    assert _rounds(store) == 4  # 12 rounds, 4 of them changed something
    store.conn.close()  # a broken store: scaling goes on, nothing raises
    recorder.on_status(_status(1))
    log.add(ScalingEvent("stop", "stopping w-1 (idle)", "small", "w-1", "idle"))
    assert len(log.recent) == 3


def test_demand_in_words() -> None:
    demand = {"tasks": [{"resources": {"CPU": 1}, "count": 5},
                        {"resources": {"CPU": 2, "GPU": 1, "memory": 2 * 2**30}, "count": 1}],
              "gangs": [{"strategy": "PACK", "bundles": [{"CPU": 1}], "count": 2}],
              "floor": [{"resources": {"CPU": 1}, "count": 1}]}
    assert demand_words(demand) == [
        "5 pending 1-CPU tasks", "1 pending 2-CPU 1-GPU 2GiB-memory task",
        "2 placement groups pending", "1 requested bundle"]
    many = {"tasks": [{"resources": {"CPU": i}, "count": 1} for i in range(1, 6)]}
    assert demand_words(many)[-1] == "2 more pending tasks"

