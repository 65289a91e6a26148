"""The RayCronJob's pure scheduling: parsing as KubeRay (robfig/cron), due slots with fixed
clocks, KubeRay's deterministic RayJob names, history limits. No sleeps, no cluster."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from rayscale.operator.raycronjob_schedule import (
    MAX_MISSED_COUNTED,
    Run,
    ScheduleError,
    due,
    format_time,
    job_name,
    parse_schedule,
    parse_time,
    to_delete,
    validate_name,
)


def t(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


# ------------------------------------------------------------------ parsing


@pytest.mark.parametrize("schedule", [
    "* * * * *", "*/5 * * * *", "0 9 * * 1-5", "0 0 1 JAN *", "0 0 ? * SUN",
    "5/15 * * * *", "0,30 8-18/2 * * mon,wed,fri", "@hourly", "@daily", "@midnight",
    "@weekly", "@monthly", "@yearly", "@annually", "@every 30s", "@every 1h30m",
    "@every 1.5m", "@every 500ms", " */5  *\t* * * ",
])
def test_kuberay_accepts(schedule: str) -> None:
    parse_schedule(schedule)


@pytest.mark.parametrize(("schedule", "words"), [
    ("invalid cron string", "expected exactly 5 fields"),
    ("* * * * * *", "expected exactly 5 fields"),  # robfig's standard parser: no seconds
    ("60 * * * *", "out of range 0-59"),
    ("* 24 * * *", "out of range 0-23"),
    ("* * 0 * *", "out of range 1-31"),
    ("* * * 13 *", "out of range 1-12"),
    ("* * * * 7", "out of range 0-6"),  # robfig: Sunday is 0 only
    ("5-1 * * * *", "beginning of range after end"),
    ("*/0 * * * *", "positive"),
    ("x * * * *", "not a number"),
    ("0 0 L * *", "not a number"),  # croniter's extensions are not KubeRay's
    ("TZ=UTC * * * * *", "spec.timeZone"),
    ("CRON_TZ=UTC * * * * *", "TZ"),
    ("@often", "unrecognized descriptor"),
    ("@HOURLY", "unrecognized descriptor"),
    ("@every", "unrecognized descriptor"),
    ("@every soon", "failed to parse duration"),
    ("@every 1 m", "failed to parse duration"),
    ("@daily ", "unrecognized descriptor"),  # robfig compares the whole string
    (" @daily", "expected exactly 5 fields"),
    ("", "must not be empty"),
])
def test_bad_schedules_are_refused_naming_spec_schedule(schedule: str, words: str) -> None:
    with pytest.raises(ScheduleError) as err:
        parse_schedule(schedule)
    assert str(err.value).startswith("spec.schedule: ")
    assert words in str(err.value)


def test_time_zone_is_checked_and_named() -> None:
    with pytest.raises(ScheduleError, match=r"^spec.timeZone: unknown time zone 'Mars/Olympus'"):
        parse_schedule("* * * * *", "Mars/Olympus")
    with pytest.raises(ScheduleError, match=r"^spec.timeZone: must not be empty"):
        parse_schedule("* * * * *", "")


def test_name_length_is_kuberays() -> None:
    validate_name("a" * 36)
    with pytest.raises(ScheduleError, match=r"^metadata.name: .* no more than 36"):
        validate_name("a" * 37)


# ------------------------------------------------------------------- slots


def test_next_after_honours_the_time_zone() -> None:
    taipei = parse_schedule("0 9 * * *", "Asia/Taipei")  # 09:00 in Taipei is 01:00 UTC
    assert taipei.next_after(t("2024-01-01T00:00:00")) == t("2024-01-01T01:00:00")
    utc = parse_schedule("0 9 * * *", "UTC")
    assert utc.next_after(t("2024-01-01T00:00:00")) == t("2024-01-01T09:00:00")
    local = parse_schedule("0 9 * * *", None, local_zone=ZoneInfo("America/New_York"))
    assert local.next_after(t("2024-01-01T00:00:00")) == t("2024-01-01T14:00:00")


def test_next_after_across_daylight_saving() -> None:
    ny = parse_schedule("0 9 * * *", "America/New_York")
    # 2024-03-10: clocks go forward; 09:00 local is 13:00 UTC from that day on
    assert ny.next_after(t("2024-03-09T15:00:00")) == t("2024-03-10T13:00:00")


def test_step_from_a_start_and_day_or_semantics() -> None:
    s = parse_schedule("5/15 * * * *")
    assert s.next_after(t("2024-01-01T00:06:00")) == t("2024-01-01T00:20:00")
    # both day fields restricted: either matches (the 1st, or any Monday)
    s = parse_schedule("0 0 1 * mon")
    assert s.next_after(t("2024-01-01T00:00:00")) == t("2024-01-08T00:00:00")


def test_every_counts_whole_seconds_from_the_previous_slot() -> None:
    s = parse_schedule("@every 1m30s")
    assert s.next_after(t("2024-01-01T00:00:00.700000")) == t("2024-01-01T00:01:30")
    assert parse_schedule("@every 200ms").every_s == 1  # at least a second, as robfig


def test_nothing_due_before_the_first_slot() -> None:
    s = parse_schedule("*/5 * * * *")
    d = due(s, t("2024-01-01T00:00:00"), t("2024-01-01T00:04:59"))
    assert d.slot is None and d.next_slot == t("2024-01-01T00:05:00")


def test_first_slot_after_creation_fires_and_the_next_is_the_wake_up() -> None:
    # KubeRay's unit test: created 00:00, now 00:05:30 -> 00:05 fires, next at 00:10
    s = parse_schedule("*/5 * * * *")
    d = due(s, t("2024-01-01T00:00:00"), t("2024-01-01T00:05:30"))
    assert (d.slot, d.missed, d.next_slot) == (t("2024-01-01T00:05:00"), 0,
                                               t("2024-01-01T00:10:00"))


def test_same_slot_never_due_twice() -> None:
    s = parse_schedule("* * * * *")
    fired = due(s, t("2024-01-01T00:00:00"), t("2024-01-01T00:01:02")).slot
    assert fired is not None
    # a restarted operator reads lastScheduleTime = fired: nothing until the next minute
    again = due(s, fired, t("2024-01-01T00:01:59"))
    assert again.slot is None and again.next_slot == t("2024-01-01T00:02:00")


def test_after_an_outage_only_the_latest_missed_slot_fires() -> None:
    s = parse_schedule("* * * * *")
    d = due(s, t("2024-01-01T00:00:00"), t("2024-01-01T00:10:30"))
    assert d.slot == t("2024-01-01T00:10:00")
    assert d.missed == 9
    assert d.next_slot == t("2024-01-01T00:11:00")


def test_a_very_long_outage_is_cheap_and_capped() -> None:
    s = parse_schedule("* * * * *")
    d = due(s, t("2024-01-01T00:00:00"), t("2024-03-01T12:34:56"))
    assert d.slot == t("2024-03-01T12:34:00") and d.missed == MAX_MISSED_COUNTED
    e = parse_schedule("@every 1s")
    d = due(e, t("2024-01-01T00:00:00"), t("2025-01-01T00:00:00.5"))
    assert d.slot == t("2025-01-01T00:00:00") and d.missed == MAX_MISSED_COUNTED
    assert d.next_slot == t("2025-01-01T00:00:01")


# --------------------------------------------------------------- names, times


def test_job_name_is_kuberays_minutes_since_the_epoch() -> None:
    tick = t("2024-01-01T00:05:00")
    assert job_name("test-cronjob", tick) == f"test-cronjob-{int(tick.timestamp()) // 60}"
    assert job_name("c", tick) == "c-28401125"
    assert job_name("c", tick) != job_name("c", t("2024-01-01T00:10:00"))
    assert job_name("c", tick) == job_name("c", tick + timedelta(seconds=59))  # KubeRay too


def test_times_round_trip_as_metav1_time() -> None:
    when = t("2024-01-01T00:05:00")
    assert format_time(when) == "2024-01-01T00:05:00Z"
    assert parse_time("2024-01-01T00:05:00Z") == when
    assert parse_time(None) is None and parse_time("yesterday") is None


# ------------------------------------------------------------------ history


def _run(minute: int, status: str | None) -> Run:
    return Run(f"c-{minute}", t(f"2024-01-01T00:{minute:02d}:00"), status)


def test_history_keeps_the_newest_finished_and_every_running_one() -> None:
    runs = [_run(1, "Complete"), _run(2, "Failed"), _run(3, "Complete"), _run(4, "Complete"),
            _run(5, "Complete"), _run(6, "ValidationFailed"), _run(7, "Running"),
            _run(8, None)]
    assert to_delete(runs, successful_limit=3, failed_limit=1) == ["c-1", "c-2"]
    assert to_delete(runs, successful_limit=0, failed_limit=0) == [
        "c-1", "c-2", "c-3", "c-4", "c-5", "c-6"]
    assert to_delete(runs, successful_limit=10, failed_limit=10) == []


def test_run_from_a_rayjob() -> None:
    run = Run.from_rayjob({
        "metadata": {"name": "c-1", "creationTimestamp": "2024-01-01T00:00:03Z",
                     "annotations": {"ray.io/cronjob-scheduled-timestamp":
                                     "2024-01-01T00:00:00Z"}},
        "status": {"jobDeploymentStatus": "Running", "jobStatus": "RUNNING"},
    })
    assert run == Run("c-1", t("2024-01-01T00:00:00"), "Running", "RUNNING")
    bare = Run.from_rayjob({"metadata": {"name": "c-2",
                                         "creationTimestamp": "2024-01-01T00:00:03Z"}})
    assert bare == Run("c-2", t("2024-01-01T00:00:03"), None, None)
