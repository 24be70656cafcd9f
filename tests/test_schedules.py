"""Periodic jobs: cron ticks in a time zone."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from service.cron import Schedule, check_cron, latest_tick, next_tick

from .conftest import TASKS

T = TASKS + "."
BERLIN = ZoneInfo("Europe/Berlin")


def at(text: str) -> float:
    """Epoch seconds of an ISO-8601 time."""
    return datetime.fromisoformat(text).timestamp()


def local(epoch_s: float | None, zone: Any = BERLIN) -> str:
    assert epoch_s is not None
    return datetime.fromtimestamp(epoch_s, zone).isoformat()


# -- ticks ------------------------------------------------------------------------------------


def test_ticks_in_utc_come_strictly_after_and_at_or_before() -> None:
    assert next_tick("*/5 * * * *", at("2026-01-01T00:02:30Z"), UTC) == at("2026-01-01T00:05Z")
    assert next_tick("*/5 * * * *", at("2026-01-01T00:05Z"), UTC) == at("2026-01-01T00:10Z")
    assert latest_tick("*/5 * * * *", at("2026-01-01T00:05Z"), UTC) == at("2026-01-01T00:05Z")
    assert latest_tick("*/5 * * * *", at("2026-01-01T00:04:59.9Z"), UTC) == at("2026-01-01T00:00Z")
    # six fields: seconds first
    assert next_tick("*/10 * * * * *", at("2026-01-01T00:00:01Z"), UTC) == at(
        "2026-01-01T00:00:10Z"
    )
    assert next_tick("@hourly", at("2026-01-01T00:00Z"), UTC) == at("2026-01-01T01:00Z")
    assert next_tick("0 9 * * 1-5", at("2026-01-02T10:00Z"), UTC) == at("2026-01-05T09:00Z")


def test_a_daily_time_stays_the_local_time_across_daylight_saving() -> None:
    ticks, after = [], at("2026-03-27T12:00+01:00")
    for _ in range(3):
        after = next_tick("0 9 * * *", after, BERLIN) or 0.0
        ticks.append(local(after))
    assert ticks == [
        "2026-03-28T09:00:00+01:00",
        "2026-03-29T09:00:00+02:00",  # 23 hours later: the clocks went forward
        "2026-03-30T09:00:00+02:00",
    ]


def test_a_time_the_clocks_skip_fires_at_the_change() -> None:
    tick = next_tick("30 2 * * *", at("2026-03-28T12:00+01:00"), BERLIN)
    assert local(tick) == "2026-03-29T03:00:00+02:00"
    assert local(next_tick("30 2 * * *", tick or 0.0, BERLIN)) == "2026-03-30T02:30:00+02:00"


def test_a_time_that_happens_twice_fires_once_but_intervals_keep_their_pace() -> None:
    daily, after = [], at("2026-10-24T12:00+02:00")
    for _ in range(2):
        after = next_tick("30 2 * * *", after, BERLIN) or 0.0
        daily.append(local(after))
    assert daily == ["2026-10-25T02:30:00+02:00", "2026-10-26T02:30:00+01:00"]
    assert latest_tick("30 2 * * *", at("2026-10-25T02:45+01:00"), BERLIN) == at(
        "2026-10-25T02:30+02:00"
    )
    every_half_hour, after = [], at("2026-10-25T01:50+02:00")
    for _ in range(5):
        after = next_tick("*/30 * * * *", after, BERLIN) or 0.0
        every_half_hour.append(local(after))
    assert every_half_hour == [
        "2026-10-25T02:00:00+02:00",
        "2026-10-25T02:30:00+02:00",
        "2026-10-25T02:00:00+01:00",  # the repeated hour, half an hour later in real time
        "2026-10-25T02:30:00+01:00",
        "2026-10-25T03:00:00+01:00",
    ]


@pytest.mark.parametrize(
    ("expression", "says"),
    [
        ("* * * *", "has 4 field(s)"),
        ("* * * * * * *", "has 7 field(s)"),
        ("61 * * * *", "out of range"),
        ("*/0 * * * *", "invalid cron expression"),
        ("0 0 31 2 *", "never matches"),
        ("@reboot", "unknown cron alias"),
        ("R * * * *", "random (R)"),
        ("H * * * *", "hashed (H)"),
        ("", "has 0 field(s)"),
    ],
)
def test_bad_cron_expressions_are_refused_saying_why(expression: str, says: str) -> None:
    with pytest.raises(ValueError, match=r".") as caught:
        check_cron(expression)
    assert says in str(caught.value)


def test_missed_ticks_are_one_due_tick_the_latest() -> None:
    schedule = Schedule("s", T + "tick", "* * * * *", created_at=at("2026-01-01T00:00:30Z"))
    assert schedule.due_tick(at("2026-01-01T00:00:59Z"), UTC) is None
    assert schedule.due_tick(at("2026-01-01T00:01Z"), UTC) == at("2026-01-01T00:01Z")
    assert schedule.due_tick(at("2026-01-01T00:05:30Z"), UTC) == at("2026-01-01T00:05Z")
    fired = dataclasses.replace(schedule, last_tick_at=at("2026-01-01T00:05Z"))
    assert fired.due_tick(at("2026-01-01T00:05:59Z"), UTC) is None
    assert fired.next_run_at(UTC) == at("2026-01-01T00:06Z")
