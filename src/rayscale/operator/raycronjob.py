"""The RayCronJob controller: at each slot of its schedule, a RayJob made from ``jobTemplate``.

Behind KubeRay's feature gate ``RayCronJob`` (off by default, as in KubeRay
v1.7): ``rayscale operator --feature-gates RayCronJob=true``. Built from the
operator's blocks (:mod:`rayscale.operator.watch`), beside the RayCluster
controller and independent of it:

- two informers: RayCronJobs, and the RayJobs labelled ``ray.io/cronjob-name``
  (a server-side selector; a RayJob counts only if the RayCronJob also owns it
  by uid); a RayCronJob is reconciled when it changes (any new
  resourceVersion), when one of its RayJobs appears, goes, or changes its
  ``jobDeploymentStatus`` / ``jobStatus``, and at its next slot: the work
  queue's timer holds one deadline per RayCronJob, so nothing polls;
- a reconcile (:meth:`RayCronJobController.reconcile`) asks the pure
  :mod:`rayscale.operator.raycronjob_schedule` which slot is due, given
  ``status.lastScheduleTime`` (or the creation time) and the clock; creates
  that slot's RayJob (KubeRay's name ``<cronjob>-<Unix minutes>``, label
  ``ray.io/cronjob-name``, annotation ``ray.io/cronjob-scheduled-timestamp``,
  a controller owner reference, ``spec`` = ``jobTemplate`` as written) and
  only then records the slot in ``status.lastScheduleTime``. A create that
  finds the name taken (a second reconcile, a restarted operator, a status
  write that failed) is that slot done: a slot never makes two RayJobs;
- after an outage only the most recent missed slot fires (Kubernetes' CronJob
  rule; KubeRay v1.7 fires every missed slot), with a ``MissedSchedules``
  event counting the others;
- ``suspend: true`` fires nothing (the RayJobs made keep running);
- finished RayJobs beyond ``successfulJobsHistoryLimit`` (default 3) and
  ``failedJobsHistoryLimit`` (default 1) are deleted, oldest first (KubeRay
  v1.7 has no limits and keeps them all); running ones never are;
- status: ``lastScheduleTime`` (KubeRay's), and rayscale's ``recentJobs``
  (the RayJobs it owns, newest first, with their deployment and job status),
  written only when it changes;
- events: ``CreatedRayJob`` for every fire, ``MissedSchedules``,
  ``SuspendedRayCronJob`` (once per suspension), and for a spec that cannot
  run, a Warning ``InvalidRayCronJobSpec`` naming the field
  (``spec.schedule: ...``), also in ``status.reason``/``status.message``;
  nothing is fired for it until it is fixed.

Deleting a RayCronJob deletes its RayJobs through Kubernetes' garbage
collector (the owner references).
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable
from datetime import UTC, datetime, tzinfo
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import httpx2 as httpx
from pydantic import ValidationError

from rayscale.api.errors import spec_error
from rayscale.api.raycronjob import (
    DEFAULT_FAILED_JOBS_HISTORY_LIMIT,
    DEFAULT_SUCCESSFUL_JOBS_HISTORY_LIMIT,
    RayCronJob,
)
from rayscale.operator.events import event_manifest
from rayscale.operator.raycronjob_schedule import (
    CRONJOB_NAME_LABEL,
    SCHEDULED_TIMESTAMP_ANNOTATION,
    Run,
    Schedule,
    ScheduleError,
    due,
    format_time,
    job_name,
    newest_first,
    parse_schedule,
    parse_time,
    to_delete,
    validate_name,
)
from rayscale.operator.watch import (
    Informer,
    Obj,
    ObjectCache,
    Watched,
    WorkQueue,
    informers_for,
    origin_key,
    own_key,
    owned_by,
    serve_queue,
    start_workers,
    stop_workers,
)

log = logging.getLogger(__name__)

FEATURE_GATE = "RayCronJob"
COMPONENT = "rayscale-raycronjob-controller"
RETRY_FIRST_S = 0.5
RETRY_MAX_S = 30.0
WATCH_SERVER_TIMEOUT_S = 300
RECENT_JOBS = 10  # RayJobs listed in status.recentJobs
API = "apis/ray.io/v1"

Clock = Callable[[], datetime]


def utc_now() -> datetime:
    return datetime.now(UTC)


def local_zone() -> tzinfo:
    """The operator's own time zone (a RayCronJob without ``timeZone`` uses it, as in
    KubeRay): ``$TZ``, else ``/etc/localtime``, else UTC."""
    name = os.environ.get("TZ", "").lstrip(":")
    if name:
        try:
            return ZoneInfo(name)
        except (ZoneInfoNotFoundError, ValueError):
            log.warning("TZ=%r is not a time zone; RayCronJobs without timeZone use UTC", name)
            return UTC
    try:
        with Path("/etc/localtime").open("rb") as f:
            return ZoneInfo.from_file(f, key="localtime")
    except (OSError, ValueError):
        return UTC



def cronjob_key_of(obj: Obj) -> str | None:
    """The ``namespace/name`` of the RayCronJob a RayJob was made by (its label)."""
    return origin_key(obj, "RayCronJob", CRONJOB_NAME_LABEL, None)

def _run_state(obj: Obj | None) -> tuple[str | None, str | None] | None:
    if obj is None:
        return None
    status = obj.get("status") or {}
    return status.get("jobDeploymentStatus"), status.get("jobStatus")


class RayCronJobController:
    """Informers, caches, a work queue with one timer, and the workers reconciling."""

    def __init__(self, http: httpx.Client, namespaces: list[str] | None = None,
                 workers: int = 2, clock: Clock = utc_now,
                 zone: tzinfo | None = None) -> None:
        self.http = http
        self.namespaces = list(namespaces or [])
        self.workers = max(1, workers)
        self.clock = clock
        self.zone = zone if zone is not None else local_zone()
        self.queue = WorkQueue()
        self.cronjobs = ObjectCache(index=own_key, on_change=self._cronjob_changed)
        self.rayjobs = ObjectCache(index=cronjob_key_of, on_change=self._rayjob_changed)
        self.informers: list[Informer] = []
        self.failures: dict[str, int] = {}
        self.refused: dict[str, str] = {}  # key -> why its spec is refused (event posted)
        self.suspended: set[str] = set()  # keys whose suspension was announced
        self._threads: list[threading.Thread] = []
        self._stopping = threading.Event()

    # ------------------------------------------------------------ lifecycle

    def start(self) -> None:
        kinds = [Watched("raycronjobs", self.cronjobs, API, "raycronjobs", None, "ray.io/v1",
                         "RayCronJob"),
                 Watched("rayjobs", self.rayjobs, API, "rayjobs", CRONJOB_NAME_LABEL,
                         "ray.io/v1", "RayJob")]
        self.informers += informers_for(kinds, self.http, self.namespaces,
                                        WATCH_SERVER_TIMEOUT_S)
        self._threads = start_workers(self.informers, self._work, "raycronjob", self.workers)

    def stop(self) -> None:
        self._stopping.set()
        stop_workers(self.queue, self.informers, self._threads)

    def synced(self) -> bool:
        return all(i.synced.is_set() for i in self.informers)

    # ------------------------------------------------------------- triggers

    def _cronjob_changed(self, key: str | None, old: Obj | None, new: Obj | None) -> None:
        if key is not None:
            self.queue.add(key)

    def _rayjob_changed(self, key: str | None, old: Obj | None, new: Obj | None) -> None:
        if key is not None and (old is None or new is None or _run_state(old) != _run_state(new)):
            self.queue.add(key)

    # --------------------------------------------------------------- workers

    def _work(self) -> None:
        serve_queue(self.informers, self.queue, self._stopping, self.process)

    def process(self, key: str) -> None:
        ns, name = key.split("/", 1)
        body = self.cronjobs.get(ns, name)
        if body is None:  # deleted: its RayJobs go with it (garbage collector)
            self.failures.pop(key, None)
            self.refused.pop(key, None)
            self.suspended.discard(key)
            return
        try:
            wake_in = self.reconcile(body)
            self.failures.pop(key, None)
        except Exception as exc:
            failures = self.failures[key] = self.failures.get(key, 0) + 1
            delay = min(RETRY_MAX_S, RETRY_FIRST_S * 2 ** (failures - 1))
            if isinstance(exc, httpx.HTTPError):
                log.warning("reconcile of RayCronJob %s failed (retry in %.1f s): %s",
                            key, delay, exc)
            else:
                log.exception("reconcile of RayCronJob %s failed (retry in %.1f s)", key, delay)
            self.queue.add_after(key, delay)
            return
        if wake_in is not None:
            self.queue.add_after(key, wake_in)

    # ------------------------------------------------------------- reconcile

    def reconcile(self, body: Obj) -> float | None:
        """Act on one RayCronJob; the seconds until its next slot (None: no slot to wait
        for: suspended or refused)."""
        meta = body["metadata"]
        ns, name = meta["namespace"], meta["name"]
        key = f"{ns}/{name}"
        status = body.get("status") or {}
        if meta.get("deletionTimestamp"):  # being deleted (foreground): fire nothing more
            return None
        try:
            cron, schedule = self._validate(body)
        except ScheduleError as exc:
            message = str(exc)
            self._write_status(body, {"reason": "InvalidRayCronJobSpec",
                                      "message": message[:1000]})
            if self.refused.get(key) != message:  # once per problem, not per reconcile
                self.refused[key] = message
                self._event(body, "Warning", "InvalidRayCronJobSpec", message)
            return None
        self.refused.pop(key, None)
        spec = cron.spec
        children = [c for c in self.rayjobs.indexed(key) if owned_by(c, meta.get("uid"))
                    and not (c.get("metadata") or {}).get("deletionTimestamp")]
        last = parse_time(status.get("lastScheduleTime"))
        wake_in: float | None = None
        if spec.suspend:
            if key not in self.suspended:  # once per suspension (KubeRay: every reconcile)
                self.suspended.add(key)
                self._event(body, "Normal", "SuspendedRayCronJob",
                            "RayCronJob suspended, no new RayJobs will be created")
        else:
            self.suspended.discard(key)
            now = self.clock()
            earliest = last or parse_time(meta.get("creationTimestamp")) or now
            slot = due(schedule, earliest, now)
            if slot.slot is not None:
                created = self._fire(body, slot.slot)
                if created is not None:
                    children.append(created)
                if slot.missed:
                    more = "+" if slot.missed >= 100 else ""
                    self._event(body, "Warning", "MissedSchedules",
                                f"{slot.missed}{more} earlier slot(s) were missed (the operator "
                                f"was not running, or the RayCronJob was suspended); only the "
                                f"latest, {format_time(slot.slot)}, runs")
                last = slot.slot
            wake_in = max(0.0, (slot.next_slot - self.clock()).total_seconds()) + 0.01
        runs = [Run.from_rayjob(c) for c in children]
        gone = self._clean_up(ns, runs, spec.successful_jobs_history_limit,
                              spec.failed_jobs_history_limit)
        recent = [r for r in newest_first(runs) if r.name not in gone][:RECENT_JOBS]
        self._write_status(body, {
            "lastScheduleTime": format_time(last) if last is not None else None,
            "recentJobs": [_run_status(r) for r in recent] or None,
            "reason": None, "message": None,
        })
        return wake_in

    def _validate(self, body: Obj) -> tuple[RayCronJob, Schedule]:
        try:
            cron = RayCronJob.model_validate({k: v for k, v in body.items() if k != "status"})
        except ValidationError as exc:
            raise ScheduleError(str(spec_error(exc, under_spec=False))) from None
        validate_name(str(body["metadata"]["name"]))
        schedule = parse_schedule(cron.spec.schedule, cron.spec.time_zone, self.zone)
        return cron, schedule

    def _fire(self, body: Obj, slot: datetime) -> Obj | None:
        """Create the slot's RayJob; None if it exists already (this slot is done)."""
        meta = body["metadata"]
        ns, cron_name = meta["namespace"], meta["name"]
        name = job_name(cron_name, slot)
        manifest = {
            "apiVersion": "ray.io/v1", "kind": "RayJob",
            "metadata": {
                "name": name, "namespace": ns,
                "labels": {CRONJOB_NAME_LABEL: cron_name},
                "annotations": {SCHEDULED_TIMESTAMP_ANNOTATION: format_time(slot)},
                "ownerReferences": [{
                    "apiVersion": "ray.io/v1", "kind": "RayCronJob", "name": cron_name,
                    "uid": meta["uid"], "controller": True, "blockOwnerDeletion": True,
                }],
            },
            "spec": body["spec"]["jobTemplate"],  # as written: fields rayscale does not model too
        }
        resp = self.http.post(f"{API}/namespaces/{ns}/rayjobs", json=manifest)
        if resp.status_code == 409:  # made by an earlier reconcile: this slot is done
            log.info("RayCronJob %s/%s: RayJob %s for %s exists already", ns, cron_name, name,
                     format_time(slot))
            return None
        resp.raise_for_status()
        created: Obj = resp.json()
        self.rayjobs.upsert(created)
        log.info("RayCronJob %s/%s: created RayJob %s for %s", ns, cron_name, name,
                 format_time(slot))
        self._event(body, "Normal", "CreatedRayJob",
                    f"Created RayJob {name} for the slot {format_time(slot)}")
        return created

    def _clean_up(self, ns: str, runs: list[Run], successful: int | None,
                  failed: int | None) -> set[str]:
        doomed = to_delete(
            runs,
            DEFAULT_SUCCESSFUL_JOBS_HISTORY_LIMIT if successful is None else successful,
            DEFAULT_FAILED_JOBS_HISTORY_LIMIT if failed is None else failed)
        for name in doomed:
            resp = self.http.delete(f"{API}/namespaces/{ns}/rayjobs/{name}",
                                    params={"propagationPolicy": "Background"})
            if resp.status_code != 404:
                resp.raise_for_status()
            self.rayjobs.mark_deleting(ns, name)
            log.info("RayJob %s/%s deleted (beyond the RayCronJob's history limit)", ns, name)
        return set(doomed)

    def _write_status(self, body: Obj, wanted: dict[str, Any]) -> None:
        """Merge-patch the fields of ``wanted`` that differ (None removes one)."""
        current = body.get("status") or {}
        if all(current.get(k) == v for k, v in wanted.items()):
            return
        meta = body["metadata"]
        resp = self.http.patch(
            f"{API}/namespaces/{meta['namespace']}/raycronjobs/{meta['name']}/status",
            json={"status": wanted},
            headers={"Content-Type": "application/merge-patch+json"})
        resp.raise_for_status()
        # the next reconcile compares with what was written; its own watch event is no news
        self.cronjobs.upsert(resp.json())

    # --------------------------------------------------------------- events

    def _event(self, body: Obj, kind: str, reason: str, message: str) -> None:
        meta = body["metadata"]
        event = event_manifest(body, "RayCronJob", kind, reason, message, COMPONENT)
        try:
            resp = self.http.post(f"api/v1/namespaces/{meta['namespace']}/events", json=event)
            resp.raise_for_status()
        except httpx.HTTPError as exc:  # events help; they never fail a reconcile
            log.warning("could not post event %s on RayCronJob %s: %s", reason,
                        own_key(body), exc)



def _run_status(run: Run) -> dict[str, Any]:
    out: dict[str, Any] = {"name": run.name}
    if run.schedule_time is not None:
        out["scheduleTime"] = format_time(run.schedule_time)
    if run.job_deployment_status:
        out["jobDeploymentStatus"] = run.job_deployment_status
    if run.job_status:
        out["jobStatus"] = run.job_status
    return out
