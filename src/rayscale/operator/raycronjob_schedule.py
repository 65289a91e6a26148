"""A RayCronJob's schedule: which slot is due, the RayJob it makes, what history to drop.

Pure: no I/O and no clock of its own (every function takes ``now``), so the
RayCronJob controller (:mod:`rayscale.operator.raycronjob`) and the unit tests
share it, the tests with fixed clocks.

The schedule language is KubeRay v1.7's: robfig/cron's ``ParseStandard``:

- five fields (minute, hour, day of month, month, day of week) with ``*``,
  ``?``, lists, ranges, steps and English month and weekday names; days of
  week are 0-6 (Sunday 0); when both day fields are restricted, either matches;
- or a descriptor: ``@yearly`` (``@annually``), ``@monthly``, ``@weekly``,
  ``@daily`` (``@midnight``), ``@hourly``, or ``@every <duration>`` (a Go
  duration: ``90s``, ``1h30m``; under a second counts as one second, fractions
  of a second are dropped), whose slots are that far after the previous one
  (the first after the RayCronJob's creation);
- no ``TZ=`` / ``CRON_TZ=`` prefix (KubeRay refuses ``TZ`` anywhere in the
  schedule): the time zone is ``timeZone``, an IANA name, by default the
  operator's local zone.

Which slot fires (:func:`due`): KubeRay takes the first slot after
``status.lastScheduleTime`` (or the creation time) and, once it is past,
creates its RayJob and records it; its status write triggers the next
reconcile, so after an outage KubeRay creates a RayJob for *every* missed slot,
one after the other. rayscale instead does what Kubernetes' CronJob does: of
the slots missed, only the most recent fires, once; the others are counted
(and reported as an event), never run.

The RayJob's name is KubeRay's: ``<cronjob>-<minutes since the epoch of the
slot>``, so a second reconcile (or a restarted operator) that sees the same
slot creates a RayJob that already exists, which is a no-op. Two slots in one
minute (``@every 20s``) share a name: as in KubeRay, only the first makes a
RayJob. KubeRay limits the RayCronJob's name to 36 characters so that this
name stays a valid RayJob name (47).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, tzinfo
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import croniter

#: KubeRay: MaxRayJobNameLength (53 - 6) - 11 for the ``-<minutes>`` suffix.
MAX_NAME_LENGTH = 36
#: Label on every RayJob made, with the RayCronJob's name (KubeRay's).
CRONJOB_NAME_LABEL = "ray.io/cronjob-name"
#: Annotation with the slot's time, RFC 3339 in UTC (KubeRay's).
SCHEDULED_TIMESTAMP_ANNOTATION = "ray.io/cronjob-scheduled-timestamp"
#: Missed slots are counted up to this many (Kubernetes' CronJob stops at 100 too).
MAX_MISSED_COUNTED = 100

SUCCEEDED_STATUSES = frozenset({"Complete"})
FAILED_STATUSES = frozenset({"Failed", "ValidationFailed"})

_DESCRIPTORS = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}
_MONTHS = {m: i for i, m in enumerate(
    ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"], start=1)}
_WEEKDAYS = {d: i for i, d in enumerate(["sun", "mon", "tue", "wed", "thu", "fri", "sat"])}
# (name, minimum, maximum, names)
_FIELDS: list[tuple[str, int, int, dict[str, int]]] = [
    ("minute", 0, 59, {}),
    ("hour", 0, 23, {}),
    ("day of month", 1, 31, {}),
    ("month", 1, 12, _MONTHS),
    ("day of week", 0, 6, _WEEKDAYS),
]
_GO_DURATION = re.compile(r"([0-9]*(?:\.[0-9]*)?)(ns|us|µs|μs|ms|s|m|h)")
_GO_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "μs": 1e-6, "ms": 1e-3, "s": 1.0,
             "m": 60.0, "h": 3600.0}


class ScheduleError(ValueError):
    """A schedule or time zone that cannot be used; the message names the field."""


# ------------------------------------------------------------------ parsing


@dataclass(frozen=True)
class Schedule:
    """A parsed schedule in its time zone: ``next_after(t)`` is the first slot after t."""

    expression: str  # five fields, as croniter reads them ("" for @every)
    every_s: int  # @every's delay in whole seconds; 0 for a cron expression
    zone: tzinfo

    def next_after(self, when: datetime) -> datetime:
        """The first slot strictly after ``when`` (an aware datetime), in UTC."""
        if self.every_s:  # robfig's ConstantDelaySchedule: whole seconds after `when`
            return (when.replace(microsecond=0) + timedelta(seconds=self.every_s)).astimezone(UTC)
        start = when.astimezone(self.zone)
        nxt: datetime = croniter(self.expression, start).get_next(datetime)
        return nxt.astimezone(UTC)


def parse_schedule(schedule: str, time_zone: str | None = None,
                   local_zone: tzinfo = UTC) -> Schedule:
    """``spec.schedule`` and ``spec.timeZone`` as KubeRay v1.7 accepts them, or a
    :class:`ScheduleError` naming the field. Without a time zone, ``local_zone``
    (the operator's, as KubeRay's operator uses its own)."""
    zone = parse_time_zone(time_zone, local_zone)
    if "TZ" in schedule:
        raise ScheduleError(f"spec.schedule: {schedule!r}: cannot use TZ or CRON_TZ in the "
                            "schedule, use spec.timeZone instead")
    if not schedule:
        raise ScheduleError("spec.schedule: must not be empty")
    # as robfig: a descriptor is the whole string, exactly (no spaces around, case-sensitive)
    if schedule.startswith("@"):
        if schedule.startswith("@every "):
            return Schedule("", _every_seconds(schedule, schedule[len("@every "):]), zone)
        expression = _DESCRIPTORS.get(schedule)
        if expression is None:
            raise ScheduleError(f"spec.schedule: {schedule!r}: unrecognized descriptor "
                                f"(known: {', '.join(_DESCRIPTORS)}, @every <duration>)")
        return Schedule(expression, 0, zone)
    fields = schedule.split()  # Go's strings.Fields: any whitespace
    if len(fields) != 5:
        raise ScheduleError(
            f"spec.schedule: {schedule!r}: expected exactly 5 fields (minute hour "
            f"day-of-month month day-of-week), found {len(fields)}")
    normalized = [_field(schedule, text_, *spec) for text_, spec in zip(fields, _FIELDS,
                                                                         strict=True)]
    return Schedule(" ".join(normalized), 0, zone)


def parse_time_zone(time_zone: str | None, local_zone: tzinfo = UTC) -> tzinfo:
    if time_zone is None:
        return local_zone
    if time_zone == "":
        raise ScheduleError("spec.timeZone: must not be empty; omit it to use the "
                            "operator's local time zone")
    try:
        return ZoneInfo(time_zone)
    except (ZoneInfoNotFoundError, ValueError):
        raise ScheduleError(f"spec.timeZone: unknown time zone {time_zone!r}") from None


def _every_seconds(schedule: str, text: str) -> int:
    """Go's time.ParseDuration, as robfig reads ``@every``."""
    if text == "0":
        seconds = 0.0
    else:
        sign = -1.0 if text.startswith("-") else 1.0
        body = text.lstrip("+-")
        pos, seconds = 0, 0.0
        for match in _GO_DURATION.finditer(body):
            if match.start() != pos or match.group(1) in ("", "."):
                break
            seconds += float(match.group(1)) * _GO_UNITS[match.group(2)]
            pos = match.end()
        if not body or pos != len(body):
            raise ScheduleError(f"spec.schedule: {schedule!r}: failed to parse duration "
                                f"{text!r} (a Go duration such as 30s, 5m, 1h30m)")
        seconds *= sign
    return max(1, int(seconds))  # robfig: at least a second, fractions dropped


def _field(schedule: str, text: str, name: str, low: int, high: int,
           names: dict[str, int]) -> str:
    """One field checked as robfig does, written out for croniter (``?`` is ``*``,
    ``a/n`` is ``a-max/n``, names are numbers)."""
    out = []
    for part in text.split(","):
        range_, _, step_text = part.partition("/")
        if "/" in step_text:
            raise _bad(schedule, name, part, "too many slashes")
        step = None
        if step_text or part.endswith("/"):
            step = _number(schedule, name, step_text, {})
            if step <= 0:
                raise _bad(schedule, name, part, "step of range should be a positive number")
        if range_ in ("*", "?"):
            start, end = low, high
        else:
            first, dash, last = range_.partition("-")
            start = _number(schedule, name, first, names)
            end = _number(schedule, name, last, names) if dash else (
                high if step is not None else start)
            if start < low or end > high:
                raise _bad(schedule, name, part, f"out of range {low}-{high}")
            if start > end:
                raise _bad(schedule, name, part, "beginning of range after end")
        suffix = f"/{step}" if step is not None else ""
        if range_ in ("*", "?"):
            out.append("*" + suffix)
        else:
            out.append((f"{start}" if start == end else f"{start}-{end}") + suffix)
    return ",".join(out)


def _number(schedule: str, name: str, text: str, names: dict[str, int]) -> int:
    if text.lower() in names:
        return names[text.lower()]
    if not text.isdigit():
        raise _bad(schedule, name, text, "not a number" + (
            f" or a name ({', '.join(names)})" if names else ""))
    return int(text)


def _bad(schedule: str, name: str, part: str, why: str) -> ScheduleError:
    return ScheduleError(f"spec.schedule: {schedule!r}: {name} field {part!r}: {why}")


def validate_name(name: str) -> None:
    if len(name) > MAX_NAME_LENGTH:
        raise ScheduleError(
            f"metadata.name: RayCronJob name should be no more than {MAX_NAME_LENGTH} "
            f"characters (its RayJobs are named <name>-<minutes since the epoch>); "
            f"{name!r} has {len(name)}")


# ---------------------------------------------------------------- due slots


@dataclass(frozen=True)
class Due:
    """What a reconcile at ``now`` should do."""

    slot: datetime | None  # the slot to fire now (UTC), if any
    missed: int  # slots before it that are past and will never fire (capped)
    next_slot: datetime  # the first slot after ``slot`` (or after ``earliest``): wake then


def due(schedule: Schedule, earliest: datetime, now: datetime) -> Due:
    """The slot to fire at ``now``, given ``earliest`` (the last slot fired, or the
    RayCronJob's creation time): the most recent slot in (earliest, now], if any."""
    slot = schedule.next_after(earliest)
    if slot > now:
        return Due(None, 0, slot)
    missed = 0
    if schedule.every_s:  # arithmetic: an outage of days at @every 1s costs nothing
        behind = int((now - slot).total_seconds()) // schedule.every_s
        slot += timedelta(seconds=behind * schedule.every_s)
        missed = min(behind, MAX_MISSED_COUNTED)
        return Due(slot, missed, schedule.next_after(slot))
    while True:
        nxt = schedule.next_after(slot)
        if nxt > now:
            return Due(slot, missed, nxt)
        missed += 1
        if missed >= MAX_MISSED_COUNTED:  # jump to the end: the latest slot at or before now
            latest = _latest_at_or_before(schedule, now)
            return Due(latest, missed, schedule.next_after(latest))
        slot = nxt


def _latest_at_or_before(schedule: Schedule, now: datetime) -> datetime:
    start = (now + timedelta(seconds=1)).astimezone(schedule.zone)
    prev: datetime = croniter(schedule.expression, start).get_prev(datetime)
    return prev.astimezone(UTC)


# ------------------------------------------------------------- names, times


def job_name(cronjob: str, slot: datetime) -> str:
    """KubeRay's child name: ``<cronjob>-<Unix minutes of the slot>``."""
    return f"{cronjob}-{int(slot.timestamp()) // 60}"


def format_time(when: datetime) -> str:
    """RFC 3339 in UTC, whole seconds (a ``metav1.Time``)."""
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_time(text: str | None) -> datetime | None:
    if not text:
        return None
    try:
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


# ----------------------------------------------------------------- history


@dataclass(frozen=True)
class Run:
    """A RayJob the RayCronJob made, as far as history is concerned."""

    name: str
    schedule_time: datetime | None
    job_deployment_status: str | None = None
    job_status: str | None = None

    @classmethod
    def from_rayjob(cls, obj: dict[str, Any]) -> Run:
        meta = obj.get("metadata") or {}
        status = obj.get("status") or {}
        when = parse_time((meta.get("annotations") or {}).get(SCHEDULED_TIMESTAMP_ANNOTATION)) \
            or parse_time(meta.get("creationTimestamp"))
        return cls(str(meta.get("name")), when, status.get("jobDeploymentStatus") or None,
                   status.get("jobStatus") or None)

    def sort_key(self) -> tuple[datetime, str]:
        return (self.schedule_time or datetime.min.replace(tzinfo=UTC), self.name)


def newest_first(runs: list[Run]) -> list[Run]:
    return sorted(runs, key=Run.sort_key, reverse=True)


def to_delete(runs: list[Run], successful_limit: int, failed_limit: int) -> list[str]:
    """The finished RayJobs beyond the history limits, oldest first; running ones stay."""
    doomed: list[Run] = []
    for statuses, limit in ((SUCCEEDED_STATUSES, successful_limit),
                            (FAILED_STATUSES, failed_limit)):
        finished = [r for r in newest_first(runs) if r.job_deployment_status in statuses]
        doomed.extend(finished[limit:])
    return [r.name for r in sorted(doomed, key=Run.sort_key)]
