"""The history database's tables, its schema version, and how a connection is opened.

One SQLite file (``$RAYSCALE_HOME/history.sqlite3`` by default) in WAL mode:
the autoscaler writes while ``rayscale ui`` reads, and neither waits for the
other (a reader sees the last committed round). ``PRAGMA user_version`` is
the schema version; a file written by a newer rayscale is refused rather than
misread, an older one is migrated in place by :data:`MIGRATIONS`.

Counts and demand are stored as *step changes*: a round adds a row only for
the values that changed since the cluster's previous stored round, so a day
of a steady cluster costs a few rows, and the value at any time is the last
row at or before it.
"""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

from rayscale.paths import PRIVATE_FILE_MODE, private_dir

SCHEMA_VERSION = 1

_V1 = """
CREATE TABLE clusters (
    id INTEGER PRIMARY KEY,
    uid TEXT NOT NULL UNIQUE,          -- the cluster's marker: one row per `up`
    name TEXT NOT NULL,
    mode TEXT NOT NULL,                -- local | kubernetes
    created REAL NOT NULL,
    gone REAL,                         -- when it was shut down (NULL: not known to be gone)
    dashboard_url TEXT
);
CREATE INDEX clusters_name ON clusters(name, created);
CREATE TABLE rounds (                  -- a scaling round that changed a count or the demand
    id INTEGER PRIMARY KEY,
    cluster INTEGER NOT NULL REFERENCES clusters(id) ON DELETE CASCADE,
    ts REAL NOT NULL
);
CREATE INDEX rounds_cluster_ts ON rounds(cluster, ts);
CREATE TABLE counts (                  -- nodes of a group in a state, from that round on
    round INTEGER NOT NULL REFERENCES rounds(id) ON DELETE CASCADE,
    grp TEXT NOT NULL,
    state TEXT NOT NULL,               -- running | pending | terminating | idle
    n INTEGER NOT NULL
);
CREATE INDEX counts_round ON counts(round);
CREATE TABLE demand (                  -- pending demand of a kind, from that round on
    round INTEGER NOT NULL REFERENCES rounds(id) ON DELETE CASCADE,
    kind TEXT NOT NULL,                -- tasks | gangs | floor | infeasible
    n INTEGER NOT NULL
);
CREATE INDEX demand_round ON demand(round);
CREATE TABLE events (                  -- the autoscaler's EventLog, with its reasons
    id INTEGER PRIMARY KEY,
    cluster INTEGER NOT NULL REFERENCES clusters(id) ON DELETE CASCADE,
    ts REAL NOT NULL,
    kind TEXT NOT NULL,
    message TEXT NOT NULL,
    grp TEXT,
    node TEXT,
    reason TEXT,
    detail TEXT                        -- what the round knew: "idle 62 s", "5 pending 1-CPU tasks"
);
CREATE INDEX events_cluster_ts ON events(cluster, ts);
CREATE TABLE jobs (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL,
    started REAL NOT NULL,
    cluster_name TEXT NOT NULL,
    cluster INTEGER REFERENCES clusters(id) ON DELETE CASCADE,
    submission_id TEXT,
    status TEXT NOT NULL,              -- Ray's job status, else KubeRay's deployment status
    message TEXT,
    log_path TEXT,
    ended REAL,
    updated REAL NOT NULL,
    UNIQUE (name, started)
);
CREATE INDEX jobs_cluster ON jobs(cluster);
"""

#: scripts that take a file from version i to i + 1 (index i)
MIGRATIONS: list[str] = [_V1]


class HistoryError(RuntimeError):
    """The history file cannot be used (newer schema, not a database, unwritable)."""


def default_path() -> Path:
    from rayscale.paths import rayscale_home

    return rayscale_home() / "history.sqlite3"


def connect(path: Path, readonly: bool = False,
            busy_timeout_s: float = 10.0) -> sqlite3.Connection:
    """A connection in WAL mode with the schema at :data:`SCHEMA_VERSION`.

    The file is created 0600 in a private directory (messages name nodes and
    groups; nothing secret is stored, but the state dir is the user's alone).
    ``readonly`` (the UI) never writes; it still migrates nothing and refuses
    a newer schema. A write waits at most ``busy_timeout_s`` for another
    writer (a prune, ``down``) before it fails.
    """
    if not readonly:
        if not path.exists():  # an existing file's directory is left as it is
            private_dir(path.parent)
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW, PRIVATE_FILE_MODE))
    elif not path.exists():
        raise HistoryError(f"no history at {path} yet (a cluster's autoscaler writes it)")
    try:
        conn = sqlite3.connect(path, timeout=busy_timeout_s, isolation_level=None,
                               check_same_thread=False)
        conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout_s * 1000)}")
        conn.execute("PRAGMA foreign_keys = ON")
        if readonly:
            conn.execute("PRAGMA query_only = ON")
        else:
            conn.execute("PRAGMA journal_mode = WAL")
            # WAL: a crash may lose the last rounds, never corrupts the file
            conn.execute("PRAGMA synchronous = NORMAL")
        _migrate(conn, path, readonly)
    except sqlite3.DatabaseError as exc:
        raise HistoryError(f"{path}: {exc}") from None
    return conn


def _migrate(conn: sqlite3.Connection, path: Path, readonly: bool) -> None:
    version = int(conn.execute("PRAGMA user_version").fetchone()[0])
    if version > SCHEMA_VERSION:
        raise HistoryError(
            f"{path} has history schema version {version}, newer than this rayscale's "
            f"({SCHEMA_VERSION}): upgrade rayscale or point RAYSCALE_HOME elsewhere"
        )
    if version == SCHEMA_VERSION:
        return
    if readonly:
        raise HistoryError(f"{path} has history schema version {version}: run a cluster "
                           f"with this rayscale once to upgrade it")
    conn.execute("BEGIN IMMEDIATE")
    try:
        # another process may have migrated it meanwhile
        version = int(conn.execute("PRAGMA user_version").fetchone()[0])
        for script in MIGRATIONS[version:]:
            for statement in script.split(";"):
                if statement.strip():
                    conn.execute(statement)
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
