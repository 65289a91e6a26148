"""The operator's side of the history: each RayCluster, its sidecar's rounds and events.

On Kubernetes the operator keeps the history (``rayscale ui`` reads it, as it
reads local clusters'): a row per RayCluster (``namespace/name``, mode
``kubernetes``) from the RayCluster informer, marked gone when it is
deleted; and, for an autoscaling cluster, every changing round and every
scaling event from the sidecar's status ConfigMap
(autoscaler/kube_status.py), which the operator watches. The ConfigMap holds
the last events of a round; those newer than the last one stored are
recorded, each with its round's detail ("demand: 5 pending 1-CPU tasks").

Like the autoscaler's, this history never stops the work: a write that fails
is logged (once until writes work again) and dropped.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from datetime import datetime
from typing import Any

from rayscale.autoscaler.events import ScalingEvent
from rayscale.autoscaler.kube_status import parse_document
from rayscale.autoscaler.recorder import HistoryRecorder
from rayscale.history.store import LOGS_DIR, HistoryError, HistoryStore
from rayscale.paths import write_private

log = logging.getLogger(__name__)
MODE = "kubernetes"
PRUNE_EVERY_S = 3600.0
LAST_CHAR = chr(0x10FFFF)  # sorts after every kind
Obj = dict[str, Any]


def created_ts(meta: Obj) -> float:
    return _stamp(meta.get("creationTimestamp")) or time.time()


def _stamp(value: Any) -> float | None:
    if not value:
        return None
    try:
        return datetime.fromisoformat(str(value).replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def owner_uid(meta: Obj) -> str | None:
    for ref in meta.get("ownerReferences") or []:
        if ref.get("kind") == "RayCluster" and ref.get("uid"):
            return str(ref["uid"])
    return None


def event_key(event: Obj) -> tuple[float, str, str, str]:
    return (float(event.get("ts") or 0.0), str(event.get("kind")), str(event.get("node")),
            str(event.get("message")))


class OperatorHistory:
    """Thread-safe: the informers' threads call it."""

    def __init__(self, store: HistoryStore) -> None:
        self.store = store
        self._lock = threading.Lock()
        self._recorders: dict[str, HistoryRecorder] = {}  # RayCluster uid -> its recorder
        self._seen: dict[str, tuple[float, str, str, str]] = {}  # uid -> last event stored
        self._jobs: dict[str, tuple[Any, ...]] = {}  # RayJob uid -> what was last stored
        self._logs: dict[str, str] = {}  # RayJob uid -> its saved driver log
        self._failing = False

    def start_pruning(self, retention_s: float, every_s: float = PRUNE_EVERY_S) -> None:
        """Forget clusters gone (and rounds, events older) than ``retention_s``, hourly."""

        def prune() -> None:
            while True:
                self._guard(lambda: self.store.prune(retention_s))
                time.sleep(every_s)

        threading.Thread(target=prune, name="history-prune", daemon=True).start()

    def cluster_changed(self, old: Obj | None, new: Obj | None) -> None:
        """From the RayCluster informer: a new cluster gets its row, a deleted one is gone."""
        if new is not None and old is None:
            def record() -> None:
                with self._lock:
                    self._recorder(new["metadata"])

            self._guard(record)
        elif new is None and old is not None:
            uid = (old.get("metadata") or {}).get("uid")
            if uid:
                self._guard(lambda: self.store.mark_gone(str(uid)))
                with self._lock:
                    self._recorders.pop(str(uid), None)
                    self._seen.pop(str(uid), None)

    def sweep_gone(self, live: set[str], namespaces: list[str]) -> int:
        """After the first full list of RayClusters: those the history holds as live in
        the watched namespaces (empty: all) that are no longer there were deleted while
        no operator ran; they are marked gone now. Returns how many."""
        gone = 0

        def sweep() -> None:
            nonlocal gone
            for row in self.store.clusters():
                ns = row.name.split("/", 1)[0]
                watched = not namespaces or ns in namespaces
                if row.mode == MODE and not row.finished and watched and row.uid not in live:
                    self.store.mark_gone(row.uid)
                    gone += 1

        self._guard(sweep)
        return gone

    def job_changed(self, new: Obj | None) -> None:
        """From the RayJob informer: the job's row (``namespace/name``, its RayCluster, Ray's
        job status or else the deployment status, start, end, message, saved log)."""
        if new is None:
            return
        meta = new.get("metadata") or {}
        status = new.get("status") or {}
        deployment = status.get("jobDeploymentStatus")
        uid = meta.get("uid")
        if not deployment or not uid:
            return
        ns = meta.get("namespace")
        row = (deployment, status.get("jobStatus"), status.get("message"),
               status.get("endTime"), self._logs.get(uid))
        with self._lock:
            if self._jobs.get(uid) == row:
                return
            self._jobs[uid] = row
        cluster = status.get("rayClusterName")
        # one row per RayJob: keyed by its creation (its startTime comes and changes with
        # admission, suspension and retries)
        started = created_ts(meta)
        self._guard(lambda: self.store.record_job(
            f"{ns}/{meta.get('name')}", started, f"{ns}/{cluster}" if cluster else "",
            str(status.get("jobStatus") or deployment), submission_id=status.get("jobId"),
            message=status.get("message"), log_path=self._logs.get(uid),
            ended=_stamp(status.get("endTime"))))

    def wants_logs(self, uid: str) -> bool:
        return uid not in self._logs

    def save_job_logs(self, body: Obj, text: str) -> None:
        """A finished job's driver log, kept beside the history (the cluster goes with it)."""
        uid = str(body["metadata"]["uid"])
        path = self.store.path.parent / LOGS_DIR / f"rayjob-{uid}.log"

        def write() -> None:
            write_private(path, text)
            self._logs[uid] = str(path)

        self._guard(write)
        self.job_changed(body)

    def status_changed(self, new: Obj | None) -> None:
        """From the status ConfigMap informer: the sidecar wrote a round."""
        if new is None:
            return
        meta = new.get("metadata") or {}
        uid = owner_uid(meta)
        doc = parse_document(new.get("data") or {})
        if uid is None or doc is None:
            return
        self._guard(lambda: self._record(uid, meta, doc))

    def _record(self, uid: str, meta: Obj, doc: Obj) -> None:
        cluster = (meta.get("labels") or {}).get("ray.io/cluster") or "?"
        with self._lock:
            recorder = self._recorders.get(uid)
            if recorder is None:
                recorder = self._recorder({"uid": uid, "name": cluster,
                                           "namespace": meta.get("namespace"),
                                           "creationTimestamp": meta.get("creationTimestamp")})
            last = self._seen.get(uid)
            if last is None:
                stored = self.store.last_event_ts(uid)
                # what the file holds up to its last event's time is not recorded again
                last = (stored if stored is not None else 0.0, LAST_CHAR, "", "")
            events = sorted((e for e in doc.get("events") or [] if isinstance(e, dict)),
                            key=event_key)
            for entry in events:
                if event_key(entry) <= last:
                    continue
                fields = {k: entry[k] for k in ("kind", "message", "group", "node", "reason",
                                                "ts") if k in entry}
                recorder.on_event(ScalingEvent(**fields))
                last = event_key(entry)
            self._seen[uid] = last
            recorder.on_status(doc)

    def _recorder(self, meta: Obj) -> HistoryRecorder:
        uid = str(meta["uid"])
        recorder = self._recorders.get(uid)
        if recorder is None:
            name = f"{meta.get('namespace')}/{meta.get('name')}"
            recorder = HistoryRecorder(self.store, uid, name, MODE, created_ts(meta))
            self._recorders[uid] = recorder
        return recorder

    def _guard(self, write: Any) -> None:
        try:
            write()
        except (HistoryError, sqlite3.Error, OSError, ValueError, TypeError) as exc:
            if not self._failing:
                log.warning("writing the history failed (the operator goes on): %s", exc)
            self._failing = True
        else:
            self._failing = False

