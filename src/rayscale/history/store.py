"""HistoryStore: write what a cluster did (rounds, events, jobs) and read it back.

Writers: the local autoscaler (through autoscaler/recorder.py), ``rayscale
down`` (:meth:`HistoryStore.mark_gone`) and ``rayscale job submit``
(:meth:`HistoryStore.record_job`). Reader: ``rayscale ui``. Each process has
its own connection; WAL mode lets reads run while a round is written.
"""

from __future__ import annotations

import os
import re
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rayscale.history.schema import HistoryError, connect, default_path

__all__ = [
    "DEFAULT_RETENTION_S",
    "ClusterRow",
    "EventRow",
    "HistoryError",
    "HistoryStore",
    "JobRow",
    "Timeline",
    "parse_retention",
    "retention_from_env",
]

DEFAULT_RETENTION_S = 7 * 86400.0
#: beside the history file: the driver logs the operator keeps for finished RayJobs
LOGS_DIR = "history-logs"
RETENTION_ENV = "RAYSCALE_HISTORY_RETENTION"
NODE_STATES = ("running", "pending", "terminating", "idle")
DEMAND_KINDS = ("tasks", "gangs", "floor", "infeasible")
_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 7 * 86400.0}


def parse_retention(text: str, what: str = "retention") -> float:
    """``"7d"``, ``"36h"``, ``"90m"``, ``"600s"`` or plain seconds -> seconds (> 0)."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhdw]?)\s*", text)
    if match is None or float(match.group(1)) <= 0:
        raise ValueError(f"{what}: {text!r} is not a duration like 7d, 36h, 90m or 600s")
    return float(match.group(1)) * _UNITS[match.group(2) or "s"]


def retention_from_env() -> float:
    value = os.environ.get(RETENTION_ENV)
    return DEFAULT_RETENTION_S if not value else parse_retention(value, RETENTION_ENV)


@dataclass(frozen=True)
class ClusterRow:
    id: int
    uid: str
    name: str
    mode: str
    created: float
    gone: float | None
    dashboard_url: str | None
    events: int = 0
    jobs: int = 0
    last_ts: float | None = None  # the last round or event

    @property
    def finished(self) -> bool:
        return self.gone is not None


@dataclass(frozen=True)
class EventRow:
    ts: float
    kind: str
    message: str
    group: str | None
    node: str | None
    reason: str | None
    detail: str | None


@dataclass(frozen=True)
class JobRow:
    id: int
    name: str
    started: float
    cluster_name: str
    submission_id: str | None
    status: str
    message: str | None
    log_path: str | None
    ended: float | None


@dataclass
class Timeline:
    """A cluster's step series: ``counts[(group, state)]`` and ``demand[kind]`` are
    lists of (ts, value) at each change, oldest first."""

    counts: dict[tuple[str, str], list[tuple[float, int]]] = field(default_factory=dict)
    demand: dict[str, list[tuple[float, int]]] = field(default_factory=dict)
    events: list[EventRow] = field(default_factory=list)

    @property
    def groups(self) -> list[str]:
        return sorted({g for g, _ in self.counts})


def counts_of(status: Mapping[str, Any]) -> dict[tuple[str, str], int]:
    """Per group and state, from a round's status document (autoscaler/status.py)."""
    out: dict[tuple[str, str], int] = {}
    for group, row in (status.get("groups") or {}).items():
        for state in NODE_STATES:
            out[(str(group), state)] = int(row.get(state, 0))
    return out


def demand_of(status: Mapping[str, Any]) -> dict[str, int]:
    """Pending demand by kind (tasks, gang bundles, floor) and what no group can hold."""

    def total(entries: Any) -> int:
        return sum(int(e.get("count", 1)) for e in entries or [])

    demand = status.get("demand") or {}
    out = {kind: total(demand.get(kind)) for kind in ("tasks", "gangs", "floor")}
    infeasible = (status.get("plan") or {}).get("infeasible") or {}
    out["infeasible"] = sum(total(infeasible.get(k)) for k in ("tasks", "gangs", "floor"))
    return out


class HistoryStore:
    """One process's connection to the history file (thread-safe: one lock)."""

    def __init__(self, path: Path | None = None, readonly: bool = False,
                 busy_timeout_s: float = 10.0) -> None:
        self.path = path or default_path()
        self.conn = connect(self.path, readonly=readonly, busy_timeout_s=busy_timeout_s)
        self._lock = threading.Lock()
        # cluster uid -> its row id and last stored values (for step changes)
        self._ids: dict[str, int] = {}
        self._last: dict[int, tuple[dict[tuple[str, str], int], dict[str, int]]] = {}

    def close(self) -> None:
        with self._lock:
            self.conn.close()

    # ------------------------------------------------------------- writes

    def record_cluster(self, uid: str, name: str, mode: str, created: float,
                       dashboard_url: str | None = None) -> int:
        """The cluster's row (made once per ``up``); returns its id."""
        with self._lock:
            self.conn.execute(
                "INSERT INTO clusters(uid, name, mode, created, dashboard_url) "
                "VALUES (?, ?, ?, ?, ?) ON CONFLICT(uid) DO UPDATE SET "
                "dashboard_url = excluded.dashboard_url",
                (uid, name, mode, created, dashboard_url),
            )
            return self._id(uid)

    def _id(self, uid: str) -> int:
        if uid not in self._ids:
            row = self.conn.execute("SELECT id FROM clusters WHERE uid = ?", (uid,)).fetchone()
            if row is None:
                raise HistoryError(f"no cluster {uid!r} in the history")
            self._ids[uid] = int(row[0])
        return self._ids[uid]

    def record_round(self, uid: str, ts: float, counts: Mapping[tuple[str, str], int],
                     demand: Mapping[str, int]) -> bool:
        """Store the values that changed since the cluster's last stored round.

        Returns whether anything changed (a round row was written). The first
        round of a store (a restarted autoscaler) compares with what the file
        already holds, so a restart adds nothing when nothing changed.
        """
        with self._lock:
            cid = self._id(uid)
            last_counts, last_demand = self._last.get(cid) or self._load_last(cid)
            new_counts = {k: v for k, v in counts.items() if last_counts.get(k) != v}
            # a group no longer reported (removed from the spec) drops to 0
            new_counts.update({k: 0 for k, v in last_counts.items() if k not in counts and v})
            new_demand = {k: v for k, v in demand.items() if last_demand.get(k, 0) != v}
            if not new_counts and not new_demand:
                self._last[cid] = (last_counts, last_demand)
                return False
            self.conn.execute("BEGIN IMMEDIATE")
            try:
                rid = self.conn.execute("INSERT INTO rounds(cluster, ts) VALUES (?, ?)",
                                        (cid, ts)).lastrowid
                self.conn.executemany(
                    "INSERT INTO counts(round, grp, state, n) VALUES (?, ?, ?, ?)",
                    [(rid, g, s, n) for (g, s), n in new_counts.items()])
                self.conn.executemany("INSERT INTO demand(round, kind, n) VALUES (?, ?, ?)",
                                      [(rid, k, n) for k, n in new_demand.items()])
                self.conn.execute("COMMIT")
            except BaseException:
                self.conn.execute("ROLLBACK")
                raise
            self._last[cid] = ({**last_counts, **new_counts}, {**last_demand, **new_demand})
            return True

    def _load_last(self, cid: int) -> tuple[dict[tuple[str, str], int], dict[str, int]]:
        counts = {(g, s): int(n) for g, s, n in self.conn.execute(
            "SELECT grp, state, n FROM counts JOIN rounds ON rounds.id = counts.round "
            "WHERE rounds.cluster = ? ORDER BY rounds.ts, rounds.id", (cid,))}
        demand = {k: int(n) for k, n in self.conn.execute(
            "SELECT kind, n FROM demand JOIN rounds ON rounds.id = demand.round "
            "WHERE rounds.cluster = ? ORDER BY rounds.ts, rounds.id", (cid,))}
        return counts, demand

    def record_event(self, uid: str, event: Mapping[str, Any], detail: str | None = None) -> None:
        """One ScalingEvent (as ``ScalingEvent.to_dict()`` gives it)."""
        with self._lock:
            self.conn.execute(
                "INSERT INTO events(cluster, ts, kind, message, grp, node, reason, detail) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (self._id(uid), float(event.get("ts") or time.time()), str(event["kind"]),
                 str(event.get("message", "")), event.get("group"), event.get("node"),
                 event.get("reason"), detail),
            )

    def last_event_ts(self, uid: str) -> float | None:
        """The time of the cluster's newest stored event (None: none, or no such cluster)."""
        with self._lock:
            row = self.conn.execute(
                "SELECT MAX(events.ts) FROM events JOIN clusters ON clusters.id = events.cluster "
                "WHERE clusters.uid = ?", (uid,)).fetchone()
        return float(row[0]) if row and row[0] is not None else None

    def record_events(self, uid: str, events: list[Mapping[str, Any]]) -> None:
        """Many events at once (one transaction): imports and benchmarks."""
        with self._lock:
            cid = self._id(uid)
            self.conn.execute("BEGIN IMMEDIATE")
            try:
                self.conn.executemany(
                    "INSERT INTO events(cluster, ts, kind, message, grp, node, reason, detail) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    [(cid, float(e["ts"]), str(e["kind"]), str(e.get("message", "")),
                      e.get("group"), e.get("node"), e.get("reason"), e.get("detail"))
                     for e in events])
                self.conn.execute("COMMIT")
            except BaseException:
                self.conn.execute("ROLLBACK")
                raise

    def mark_gone(self, uid: str, ts: float | None = None) -> None:
        """The cluster was shut down (``rayscale down``); its history stays."""
        with self._lock:
            self.conn.execute("UPDATE clusters SET gone = ? WHERE uid = ? AND gone IS NULL",
                              (ts or time.time(), uid))

    def record_job(self, name: str, started: float, cluster_name: str, status: str,
                   submission_id: str | None = None, message: str | None = None,
                   log_path: str | None = None, ended: float | None = None) -> None:
        """A job's row, made or updated at each status change. It belongs to the newest
        cluster of that name (a job's own cluster appears once the job brought it up),
        and stays with the first one found (a later `up` of the name is another cluster)."""
        with self._lock:
            row = self.conn.execute(
                "SELECT id FROM clusters WHERE name = ? ORDER BY created DESC LIMIT 1",
                (cluster_name,)).fetchone()
            self.conn.execute(
                "INSERT INTO jobs(name, started, cluster_name, cluster, submission_id, status, "
                "message, log_path, ended, updated) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
                "ON CONFLICT(name, started) DO UPDATE SET "
                "cluster = coalesce(jobs.cluster, excluded.cluster), status = excluded.status, "
                "message = excluded.message, log_path = excluded.log_path, "
                "ended = excluded.ended, updated = excluded.updated",
                (name, started, cluster_name, row[0] if row else None, submission_id, status,
                 message, log_path, ended, time.time()),
            )

    def prune(self, retention_s: float, now: float | None = None) -> int:
        """Forget what is older than ``retention_s``; returns the clusters removed.

        A cluster gone before the cutoff goes with everything it had. A cluster
        that lives on keeps its state at the cutoff (one round holding every
        value then), so its timeline still starts right.
        """
        cutoff = (now or time.time()) - retention_s
        with self._lock:
            self.conn.execute("BEGIN IMMEDIATE")
            try:
                removed = self.conn.execute(
                    "DELETE FROM clusters WHERE gone IS NOT NULL AND gone < ?", (cutoff,)
                ).rowcount
                olds = [int(r[0]) for r in self.conn.execute(
                    "SELECT DISTINCT cluster FROM rounds WHERE ts < ?", (cutoff,))]
                for cid in olds:
                    self._fold(cid, cutoff)
                self.conn.execute("DELETE FROM events WHERE ts < ?", (cutoff,))
                self.conn.execute("DELETE FROM jobs WHERE ended IS NOT NULL AND ended < ?",
                                  (cutoff,))
                self.conn.execute("COMMIT")
            except BaseException:
                self.conn.execute("ROLLBACK")
                raise
            self._last.clear()
            self._ids.clear()
            kept = {str(r[0]) for r in self.conn.execute(
                "SELECT log_path FROM jobs WHERE log_path IS NOT NULL")}
        self._drop_unkept_logs(kept)
        return int(removed)

    def _drop_unkept_logs(self, kept: set[str]) -> None:
        """The saved driver logs (``history-logs/`` beside the file, written by the
        operator) of jobs no longer in the history."""
        folder = self.path.parent / LOGS_DIR
        for log in folder.glob("rayjob-*.log") if folder.is_dir() else []:
            if str(log) not in kept:
                log.unlink(missing_ok=True)

    def _fold(self, cid: int, cutoff: float) -> None:
        def last(sql: str) -> list[tuple[Any, ...]]:
            return list(self.conn.execute(sql, (cid, cutoff)))

        counts = last("SELECT grp, state, n FROM counts JOIN rounds ON rounds.id = counts.round "
                      "WHERE cluster = ? AND ts < ? ORDER BY ts, rounds.id")
        demand = last("SELECT kind, n FROM demand JOIN rounds ON rounds.id = demand.round "
                      "WHERE cluster = ? AND ts < ? ORDER BY ts, rounds.id")
        self.conn.execute("DELETE FROM rounds WHERE cluster = ? AND ts < ?", (cid, cutoff))
        rid = self.conn.execute("INSERT INTO rounds(cluster, ts) VALUES (?, ?)",
                                (cid, cutoff)).lastrowid
        self.conn.executemany("INSERT INTO counts(round, grp, state, n) VALUES (?, ?, ?, ?)",
                              [(rid, g, s, n) for (g, s), n in
                               {(g, s): n for g, s, n in counts}.items()])
        self.conn.executemany("INSERT INTO demand(round, kind, n) VALUES (?, ?, ?)",
                              [(rid, k, n) for k, n in {k: n for k, n in demand}.items()])

    # -------------------------------------------------------------- reads

    def clusters(self) -> list[ClusterRow]:
        """Every cluster, newest first, with its event and job counts."""
        with self._lock:
            rows = self.conn.execute(
                "SELECT c.id, c.uid, c.name, c.mode, c.created, c.gone, c.dashboard_url, "
                "(SELECT count(*) FROM events e WHERE e.cluster = c.id), "
                "(SELECT count(*) FROM jobs j WHERE j.cluster = c.id), "
                "max(coalesce((SELECT max(ts) FROM rounds r WHERE r.cluster = c.id), 0), "
                "    coalesce((SELECT max(ts) FROM events e WHERE e.cluster = c.id), 0)) "
                "FROM clusters c ORDER BY c.created DESC").fetchall()
        return [ClusterRow(id=r[0], uid=r[1], name=r[2], mode=r[3], created=r[4], gone=r[5],
                           dashboard_url=r[6], events=r[7], jobs=r[8], last_ts=r[9] or None)
                for r in rows]

    def cluster(self, cid: int) -> ClusterRow | None:
        return next((c for c in self.clusters() if c.id == cid), None)

    def timeline(self, cid: int) -> Timeline:
        """The cluster's step series and events, read in one transaction."""
        out = Timeline()
        with self._lock:
            self.conn.execute("BEGIN")
            try:
                for ts, g, s, n in self.conn.execute(
                        "SELECT ts, grp, state, n FROM counts JOIN rounds ON "
                        "rounds.id = counts.round WHERE cluster = ? ORDER BY ts, rounds.id",
                        (cid,)):
                    out.counts.setdefault((g, s), []).append((ts, n))
                for ts, k, n in self.conn.execute(
                        "SELECT ts, kind, n FROM demand JOIN rounds ON "
                        "rounds.id = demand.round WHERE cluster = ? ORDER BY ts, rounds.id",
                        (cid,)):
                    out.demand.setdefault(k, []).append((ts, n))
                out.events = [EventRow(*r) for r in self.conn.execute(
                    "SELECT ts, kind, message, grp, node, reason, detail FROM events "
                    "WHERE cluster = ? ORDER BY ts, id", (cid,))]
            finally:
                self.conn.execute("COMMIT")
        return out

    def jobs(self, cid: int) -> list[JobRow]:
        with self._lock:
            return [JobRow(*r) for r in self.conn.execute(
                "SELECT id, name, started, cluster_name, submission_id, status, message, "
                "log_path, ended FROM jobs WHERE cluster = ? ORDER BY started", (cid,))]

    def job(self, jid: int) -> JobRow | None:
        with self._lock:
            row = self.conn.execute(
                "SELECT id, name, started, cluster_name, submission_id, status, message, "
                "log_path, ended FROM jobs WHERE id = ?", (jid,)).fetchone()
        return JobRow(*row) if row else None

    def job_cluster(self, jid: int) -> int | None:
        with self._lock:
            row = self.conn.execute("SELECT cluster FROM jobs WHERE id = ?", (jid,)).fetchone()
        return int(row[0]) if row and row[0] is not None else None
