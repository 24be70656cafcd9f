"""Periodic jobs: cron ticks in a time zone, one job per tick across restarts, the HTTP API."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from quart.typing import TestClientProtocol as Client

from service import task
from service import tasks as tasks_module
from service.cron import Schedule, check_cron, latest_tick, next_tick
from service.errors import ScheduleConflict, ScheduleNotFound, UnknownTask
from service.events import Broker
from service.jobs import Job
from service.pool import ProcessPool
from service.scheduler import Scheduler
from service.schedules import Schedules
from service.schemas import parse_time
from service.settings import Settings
from service.store.sqlite import SqliteStore
from service.tasks import Task, load_tasks

from .conftest import TASKS, running_app, wait_until

T = TASKS + "."
CRON_TASKS = "tests.cron_tasks"
LEAP_DAY = f"task:{CRON_TASKS}.leap_day"
BERLIN = ZoneInfo("Europe/Berlin")


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return dataclasses.replace(settings, tasks=(TASKS, CRON_TASKS))


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


# -- @task(cron=...) ----------------------------------------------------------------------------


@pytest.fixture
def restore_registry() -> Iterator[None]:
    saved = dict(tasks_module._registry)
    yield
    tasks_module._registry.clear()
    tasks_module._registry.update(saved)


@pytest.mark.usefixtures("restore_registry")
def test_task_cron_is_checked_when_decorated() -> None:
    with pytest.raises(ValueError, match=r"@task\(cron=\.\.\.\): .*out of range"):
        task(cron="0 25 * * *")
    with pytest.raises(ValueError, match=r"with no arguments, but it needs some"):

        @task(name="needs.args", cron="* * * * *")
        def needs_args(x: int) -> int:
            return x

    assert "needs.args" not in load_tasks([])


# -- the schedules with a clock the test moves ------------------------------------------------


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@dataclasses.dataclass
class Service:
    db: SqliteStore
    schedules: Schedules

    async def jobs(self, task_name: str = T + "tick") -> list[Job]:
        jobs, _ = await self.db.list_jobs(task=task_name, limit=1000)
        return jobs


@asynccontextmanager
async def schedules_at(
    path: Path, clock: Clock, tasks: dict[str, Task] | None = None
) -> AsyncIterator[Service]:
    """The store, one worker, the scheduler and the schedules, on ``clock``'s time."""
    async with (
        SqliteStore(str(path / "db"), on_commit=Broker().publish) as db,
        ProcessPool(1, [TASKS], grace_s=1.0, on_progress=lambda *_: None) as pool,
        Scheduler(
            db, pool, tasks or load_tasks([TASKS, CRON_TASKS]), max_interruptions=3
        ) as scheduler,
        Schedules(db, scheduler, zone=UTC, clock=clock) as schedules,
    ):
        yield Service(db, schedules)


async def job_count(service: Service, count: int) -> list[Job]:
    """The schedule's jobs, once there are ``count`` (and not more)."""

    async def reached() -> list[Job] | None:
        jobs = await service.jobs()
        assert len(jobs) <= count, f"{len(jobs)} jobs, expected {count}"
        return jobs if len(jobs) == count else None

    jobs: list[Job] = await wait_until(reached, what=f"{count} job(s)")
    return jobs


async def test_one_job_per_tick_and_one_for_all_the_ticks_missed_while_down(
    tmp_path: Path,
) -> None:
    clock = Clock(at("2026-01-01T00:00:30Z"))
    async with schedules_at(tmp_path, clock) as service:
        schedule = await service.schedules.create(T + "tick", "* * * * *", args=["a"])
        assert await service.schedules.fire_due() == 0
        clock.now = at("2026-01-01T00:01Z")
        await service.schedules.fire_due()
        await job_count(service, 1)
        assert await service.schedules.fire_due() == 0
    clock.now = at("2026-01-01T00:05:30Z")  # four ticks pass while the service is down
    async with schedules_at(tmp_path, clock) as service:
        await service.schedules.fire_due()
        await job_count(service, 2)
        assert await service.schedules.fire_due() == 0
        stored = service.schedules.get(schedule.id)
        assert stored.last_tick_at == at("2026-01-01T00:05Z")
        assert service.schedules.next_run_at(stored) == at("2026-01-01T00:06Z")
        clock.now = at("2026-01-01T00:06Z")
        await service.schedules.fire_due()
        jobs = await job_count(service, 3)
    assert all(j.args == ["a"] for j in jobs)
    clock.now = at("2026-01-01T00:06:10Z")  # a restart with no tick missed makes no job
    async with schedules_at(tmp_path, clock) as service:
        assert await service.schedules.fire_due() == 0
        assert len(await service.jobs()) == 3


async def test_a_new_schedule_first_fires_at_its_next_tick(tmp_path: Path) -> None:
    clock = Clock(at("2026-01-01T00:01Z"))  # created on a tick: that one is not its own
    async with schedules_at(tmp_path, clock) as service:
        schedule = await service.schedules.create(T + "tick", "* * * * *")
        assert service.schedules.next_run_at(schedule) == at("2026-01-01T00:02Z")
        assert await service.schedules.fire_due() == 0
        assert await service.jobs() == []


async def test_a_tick_fired_from_several_places_at_once_makes_one_job(tmp_path: Path) -> None:
    clock = Clock(at("2026-01-01T00:00:30Z"))
    async with schedules_at(tmp_path, clock) as service:
        await service.schedules.create(T + "tick", "* * * * *")
        clock.now = at("2026-01-01T00:01Z")
        fire = service.schedules.fire_due
        assert sum(await asyncio.gather(fire(), fire(), fire())) <= 1  # the loop may be first
        await job_count(service, 1)
        assert await fire() == 0


async def test_a_deleted_schedule_makes_no_more_jobs(tmp_path: Path) -> None:
    clock = Clock(at("2026-01-01T00:00:30Z"))
    async with schedules_at(tmp_path, clock) as service:
        schedule = await service.schedules.create(T + "tick", "* * * * *")
        await service.schedules.delete(schedule.id)
        clock.now = at("2026-01-01T00:01Z")
        assert await service.schedules.fire_due() == 0
        with pytest.raises(ScheduleNotFound):
            await service.schedules.delete(schedule.id)
    async with schedules_at(tmp_path, clock) as service:
        assert service.schedules.list_schedules() == [
            s for s in service.schedules.list_schedules() if s.source == "task"
        ]
        assert await service.jobs() == []


async def test_declared_schedules_follow_the_code_across_restarts(tmp_path: Path) -> None:
    tasks = load_tasks([TASKS, CRON_TASKS])
    declared = {**tasks, T + "tick": dataclasses.replace(tasks[T + "tick"], cron="0 * * * *")}
    clock = Clock(at("2026-01-01T00:00:30Z"))
    async with schedules_at(tmp_path, clock, declared) as service:
        first = service.schedules.get("task:" + T + "tick")
        assert (first.source, first.cron, first.args) == ("task", "0 * * * *", [])
        with pytest.raises(ScheduleConflict, match="declared by @task"):
            await service.schedules.delete(first.id)
    clock.now = at("2026-01-01T02:30Z")  # two ticks missed; still declared as it was
    async with schedules_at(tmp_path, clock, declared) as service:
        assert service.schedules.get(first.id).created_at == first.created_at
        await service.schedules.fire_due()
        await job_count(service, 1)
    changed = {**tasks, T + "tick": dataclasses.replace(tasks[T + "tick"], cron="*/5 * * * *")}
    clock.now = at("2026-01-01T02:31Z")
    async with schedules_at(tmp_path, clock, changed) as service:
        anew = service.schedules.get(first.id)
        assert (anew.cron, anew.created_at, anew.last_tick_at) == ("*/5 * * * *", clock.now, None)
    async with schedules_at(tmp_path, clock, tasks) as service:  # no longer declared
        with pytest.raises(ScheduleNotFound):
            service.schedules.get(first.id)
        assert service.schedules.get(LEAP_DAY).source == "task"


async def test_a_schedule_whose_task_is_gone_makes_no_job_and_harms_no_other(
    tmp_path: Path,
) -> None:
    clock = Clock(at("2026-01-01T00:00:30Z"))
    async with schedules_at(tmp_path, clock) as service:
        await service.schedules.create(T + "echo", "* * * * *")
        await service.schedules.create(T + "tick", "* * * * *")
    tasks = {name: t for name, t in load_tasks([TASKS, CRON_TASKS]).items() if name != T + "echo"}
    clock.now = at("2026-01-01T00:01Z")
    async with schedules_at(tmp_path, clock, tasks) as service:
        await service.schedules.fire_due()
        await job_count(service, 1)
        assert await service.jobs(T + "echo") == []
        with pytest.raises(UnknownTask):
            await service.schedules.create(T + "echo", "* * * * *")


# -- pause and resume ---------------------------------------------------------------------------


def test_a_paused_schedule_has_no_tick_and_a_resumed_one_skips_those_passed() -> None:
    created = Schedule("s", T + "tick", "* * * * *", created_at=at("2026-01-01T00:00:30Z"))
    paused = dataclasses.replace(created, paused=True)
    assert paused.next_run_at(UTC) is None
    assert paused.due_tick(at("2026-01-01T00:05Z"), UTC) is None
    resumed = dataclasses.replace(paused, paused=False, resumed_at=at("2026-01-01T00:05:10Z"))
    assert resumed.due_tick(at("2026-01-01T00:05:30Z"), UTC) is None
    assert resumed.next_run_at(UTC) == at("2026-01-01T00:06Z")
    fired = resumed.fired(at("2026-01-01T00:06Z"))
    assert fired.fired(at("2026-01-01T00:04Z")).last_tick_at == at("2026-01-01T00:06Z")


async def test_pause_stops_the_jobs_and_resume_makes_them_from_the_next_tick(
    tmp_path: Path,
) -> None:
    clock = Clock(at("2026-01-01T00:00:30Z"))
    async with schedules_at(tmp_path, clock) as service:
        schedule = await service.schedules.create(T + "tick", "* * * * *")
        paused = await service.schedules.pause(schedule.id)
        assert paused.paused and service.schedules.next_run_at(paused) is None
        assert await service.schedules.pause(schedule.id) == paused  # already paused
        clock.now = at("2026-01-01T00:03:30Z")  # three ticks pass while paused
        assert await service.schedules.fire_due() == 0
        resumed = await service.schedules.resume(schedule.id)
        assert (resumed.paused, resumed.resumed_at) == (False, clock.now)
        assert await service.schedules.resume(schedule.id) == resumed  # already active
        assert service.schedules.next_run_at(resumed) == at("2026-01-01T00:04Z")
        assert await service.schedules.fire_due() == 0  # the ticks passed make no job
        assert await service.jobs() == []
        clock.now = at("2026-01-01T00:04Z")
        await service.schedules.fire_due()
        (job,) = await job_count(service, 1)
        assert job.schedule_id == schedule.id
        for change in (service.schedules.pause, service.schedules.resume):
            with pytest.raises(ScheduleNotFound):
                await change("no-such-schedule")


async def test_a_pause_and_a_resume_are_stored_and_outlive_restarts(tmp_path: Path) -> None:
    clock = Clock(at("2026-01-01T00:00:30Z"))
    async with schedules_at(tmp_path, clock) as service:
        schedule = await service.schedules.create(T + "tick", "* * * * *")
        await service.schedules.pause(schedule.id)
    clock.now = at("2026-01-01T00:05:30Z")  # five ticks pass while down, and paused
    async with schedules_at(tmp_path, clock) as service:
        assert service.schedules.get(schedule.id).paused
        assert await service.schedules.fire_due() == 0
        await service.schedules.resume(schedule.id)
    clock.now = at("2026-01-01T00:05:45Z")
    async with schedules_at(tmp_path, clock) as service:
        stored = service.schedules.get(schedule.id)
        assert (stored.paused, stored.resumed_at) == (False, at("2026-01-01T00:05:30Z"))
        assert await service.schedules.fire_due() == 0  # no tick missed since the resume
        clock.now = at("2026-01-01T00:06Z")
        await service.schedules.fire_due()
        await job_count(service, 1)


async def test_a_declared_schedule_stays_paused_when_declared_again(tmp_path: Path) -> None:
    tasks = load_tasks([TASKS, CRON_TASKS])
    declared = {**tasks, T + "tick": dataclasses.replace(tasks[T + "tick"], cron="* * * * *")}
    clock = Clock(at("2026-01-01T00:00:30Z"))
    async with schedules_at(tmp_path, clock, declared) as service:
        paused = await service.schedules.pause("task:" + T + "tick")
        assert (paused.source, paused.paused) == ("task", True)
    clock.now = at("2026-01-01T00:02:30Z")
    async with schedules_at(tmp_path, clock, declared) as service:  # unchanged in the code
        assert service.schedules.get(paused.id) == paused
        assert await service.schedules.fire_due() == 0
        assert await service.jobs() == []
    changed = {**tasks, T + "tick": dataclasses.replace(tasks[T + "tick"], cron="*/5 * * * *")}
    async with schedules_at(tmp_path, clock, changed) as service:  # anew, and still paused
        anew = service.schedules.get(paused.id)
        assert (anew.cron, anew.created_at, anew.paused) == ("*/5 * * * *", clock.now, True)
        resumed = await service.schedules.resume(anew.id)
        assert service.schedules.next_run_at(resumed) == at("2026-01-01T00:05Z")


async def test_the_store_refuses_a_tick_while_paused_or_passed_while_paused(
    tmp_path: Path,
) -> None:
    schedule = Schedule("s", T + "tick", "* * * * *", created_at=at("2026-01-01T00:00:30Z"))
    async with SqliteStore(str(tmp_path / "db"), on_commit=lambda events: None) as db:
        await db.add_schedule(schedule)

        async def claim(tick: str) -> bool:
            claimed: bool = await db.transact(lambda batch: batch.claim_tick(schedule, at(tick)))
            return claimed

        await db.set_paused(schedule, paused=True, resumed_at=None)
        assert not await claim("2026-01-01T00:01Z")  # a tick under way when the pause came
        await db.set_paused(schedule, paused=False, resumed_at=at("2026-01-01T00:01:30Z"))
        assert not await claim("2026-01-01T00:01Z")
        assert await claim("2026-01-01T00:02Z")
        with pytest.raises(ScheduleNotFound):
            await db.set_paused(
                dataclasses.replace(schedule, id="gone"), paused=True, resumed_at=None
            )


# -- over HTTP --------------------------------------------------------------------------------


async def post_schedule(client: Client, **body: Any) -> Any:
    response = await client.post("/schedules", json={"task": T + "tick", **body})
    assert response.status_code == 201, await response.get_data(as_text=True)
    return await response.get_json()


async def test_create_list_get_and_delete(app_client: Client) -> None:
    created = await post_schedule(
        app_client, id="weekday-report", cron="0 9 * * 1-5", args=["x"], max_retries=2
    )
    assert created["id"] == "weekday-report" and created["source"] == "api"
    assert (created["cron"], created["args"], created["kwargs"]) == ("0 9 * * 1-5", ["x"], {})
    assert created["options"]["max_retries"] == 2 and created["timezone"] == "UTC"
    assert created["last_run_at"] is None and created["created_at"].endswith("Z")
    next_run = datetime.fromtimestamp(parse_time(created["next_run_at"]), UTC)
    assert (next_run.hour, next_run.minute, next_run.weekday() < 5) == (9, 0, True)
    listed = (await (await app_client.get("/schedules")).get_json())["schedules"]
    assert {s["id"] for s in listed} == {"weekday-report", LEAP_DAY}
    one = await app_client.get("/schedules/weekday-report")
    assert one.status_code == 200 and await one.get_json() == created
    assert (await app_client.delete("/schedules/weekday-report")).status_code == 204
    for response in (
        await app_client.get("/schedules/weekday-report"),
        await app_client.delete("/schedules/weekday-report"),
    ):
        assert response.status_code == 404
        assert (await response.get_json())["error"] == "not_found"
    generated = await post_schedule(app_client, cron="@daily")
    assert generated["id"] and generated["next_run_at"].endswith("T00:00:00.000Z")


async def test_an_id_in_use_is_409(app_client: Client) -> None:
    await post_schedule(app_client, id="nightly", cron="0 3 * * *")
    response = await app_client.post(
        "/schedules", json={"task": T + "tick", "id": "nightly", "cron": "0 4 * * *"}
    )
    assert response.status_code == 409
    body = await response.get_json()
    assert body["error"] == "conflict" and "nightly" in body["detail"]
    kept = await (await app_client.get("/schedules/nightly")).get_json()
    assert kept["cron"] == "0 3 * * *"


@pytest.mark.parametrize(
    ("body", "status", "error"),
    [
        ({"cron": "61 * * * *"}, 400, "invalid_request"),
        ({"cron": "* * * *"}, 400, "invalid_request"),
        ({"cron": 5}, 400, "invalid_request"),
        ({}, 400, "invalid_request"),
        ({"cron": "* * * * *", "id": "task:mine"}, 400, "invalid_request"),
        ({"cron": "* * * * *", "id": "a/b"}, 400, "invalid_request"),
        ({"cron": "* * * * *", "delay_s": 5}, 400, "invalid_request"),
        ({"cron": "* * * * *", "timeout_s": -1}, 400, "invalid_request"),
        ({"cron": "* * * * *", "task": "no.such.task"}, 422, "unknown_task"),
        ({"cron": "* * * * *", "args": [1, 2]}, 422, "invalid_arguments"),
        ({"cron": "* * * * *", "kwargs": {"colour": "red"}}, 422, "invalid_arguments"),
        ({"cron": "* * * * *", "timeout_s": 1, "soft_timeout_s": 2}, 422, "invalid_options"),
    ],
)
async def test_bad_schedules_get_a_clear_error_and_store_nothing(
    app_client: Client, body: dict[str, Any], status: int, error: str
) -> None:
    response = await app_client.post("/schedules", json={"task": T + "tick", **body})
    assert response.status_code == status
    answer = await response.get_json()
    assert answer["error"] == error and answer["detail"]
    listed = (await (await app_client.get("/schedules")).get_json())["schedules"]
    assert [s["id"] for s in listed] == [LEAP_DAY]


async def test_a_bad_cron_error_says_what_is_wrong(app_client: Client) -> None:
    response = await app_client.post("/schedules", json={"task": T + "tick", "cron": "0 0 31 2 *"})
    body = await response.get_json()
    assert response.status_code == 400 and "never matches" in body["detail"]
    assert body["fields"][0]["field"] == "cron"


async def test_a_body_that_is_not_json_is_415(app_client: Client) -> None:
    response = await app_client.post("/schedules", data="task=x")
    assert response.status_code == 415


async def test_schedules_survive_a_restart(settings: Settings) -> None:
    async with running_app(settings) as (_, client):
        created = await post_schedule(client, id="kept", cron="0 12 1 1 *", kwargs={"label": "k"})
    async with running_app(settings) as (_, client):
        again = await (await client.get("/schedules/kept")).get_json()
    assert again == created


async def labelled(client: Client, label: str) -> list[Any]:
    """The jobs of the task ``tick`` with this label, newest first."""
    response = await client.get(f"/jobs?task={T}tick&limit=1000")
    return [j for j in (await response.get_json())["jobs"] if j["args"] == [label]]


async def at_least(client: Client, label: str, count: int) -> list[Any]:
    """The jobs with this label, once there are ``count`` or more."""

    async def enough() -> list[Any] | None:
        jobs = await labelled(client, label)
        return jobs if len(jobs) >= count else None

    jobs: list[Any] = await wait_until(enough, what=f"{count} {label} job(s)")
    return jobs


async def two_more_ticks(client: Client, label: str) -> None:
    """Until the per-second schedule of ``label`` has made two more jobs: time for others too."""
    await at_least(client, label, len(await labelled(client, label)) + 2)


async def test_a_schedule_makes_jobs_each_second_until_deleted(app_client: Client) -> None:
    stopped = await post_schedule(app_client, cron="* * * * * *", args=["stopped"])
    going = await post_schedule(app_client, cron="* * * * * *", args=["going"])
    await at_least(app_client, "stopped", 2)
    assert (await app_client.delete(f"/schedules/{stopped['id']}")).status_code == 204
    # all of them: a tick's job commits before a delete
    made = len(await labelled(app_client, "stopped"))
    await two_more_ticks(app_client, "going")
    assert len(await labelled(app_client, "stopped")) == made
    fetched = await (await app_client.get(f"/schedules/{going['id']}")).get_json()
    assert fetched["last_run_at"] is not None
    assert parse_time(fetched["next_run_at"]) > parse_time(fetched["last_run_at"])

    async def one_succeeded() -> Any:
        return [j for j in await labelled(app_client, "going") if j["state"] == "succeeded"]

    done = (await wait_until(one_succeeded, what="a scheduled job to succeed"))[0]
    assert done["result"] == "going"


async def test_a_declared_schedule_is_listed_and_cannot_be_deleted(app_client: Client) -> None:
    declared = await (await app_client.get(f"/schedules/{LEAP_DAY}")).get_json()
    assert (declared["source"], declared["cron"], declared["task"]) == (
        "task", "0 0 29 2 *", f"{CRON_TASKS}.leap_day",
    )  # fmt: skip
    assert declared["next_run_at"][5:10] == "02-29"
    response = await app_client.delete(f"/schedules/{LEAP_DAY}")
    assert response.status_code == 409 and "@task" in (await response.get_json())["detail"]
    tasks = (await (await app_client.get("/tasks")).get_json())["tasks"]
    crons = {t["name"]: t["cron"] for t in tasks}
    assert crons[f"{CRON_TASKS}.leap_day"] == "0 0 29 2 *" and crons[T + "tick"] is None


async def test_times_are_read_in_the_configured_zone(settings: Settings) -> None:
    berlin = dataclasses.replace(settings, timezone="Europe/Berlin")
    async with running_app(berlin) as (_, client):
        created = await post_schedule(client, cron="0 9 * * *")
    assert created["timezone"] == "Europe/Berlin"
    next_run = datetime.fromtimestamp(parse_time(created["next_run_at"]), BERLIN)
    assert (next_run.hour, next_run.minute) == (9, 0)


async def test_schedules_need_the_token(settings: Settings) -> None:
    async with running_app(dataclasses.replace(settings, token="s3cret")) as (_, client):
        assert (await client.get("/schedules")).status_code == 401
        response = await client.post("/schedules", json={"task": T + "tick", "cron": "@daily"})
        assert response.status_code == 401
        authorized = await client.get("/schedules", headers={"Authorization": "Bearer s3cret"})
        assert authorized.status_code == 200


async def test_pause_stops_the_ticks_and_resume_starts_them_again(app_client: Client) -> None:
    paused = await post_schedule(app_client, cron="* * * * * *", args=["paused"])
    await post_schedule(app_client, cron="* * * * * *", args=["going"])
    await at_least(app_client, "paused", 1)
    path = f"/schedules/{paused['id']}"
    response = await app_client.post(path + "/pause")
    assert response.status_code == 200
    body = await response.get_json()
    assert (body["id"], body["paused"], body["next_run_at"]) == (paused["id"], True, None)
    again = await app_client.post(path + "/pause")  # already paused: the same answer
    assert again.status_code == 200 and await again.get_json() == body
    assert (await (await app_client.get(path)).get_json())["paused"] is True
    made = len(await labelled(app_client, "paused"))  # a pause commits after any tick before it
    await two_more_ticks(app_client, "going")
    assert len(await labelled(app_client, "paused")) == made
    response = await app_client.post(path + "/resume")
    assert response.status_code == 200
    resumed = await response.get_json()
    assert resumed["paused"] is False and resumed["next_run_at"] is not None
    again = await app_client.post(path + "/resume")  # already active
    assert again.status_code == 200 and (await again.get_json())["paused"] is False
    await at_least(app_client, "paused", made + 1)


async def test_pausing_an_unknown_schedule_is_404(app_client: Client) -> None:
    for action in ("pause", "resume"):
        response = await app_client.post(f"/schedules/no-such-schedule/{action}")
        assert response.status_code == 404
        assert (await response.get_json())["error"] == "not_found"


async def test_a_pause_over_http_survives_a_restart(settings: Settings) -> None:
    async with running_app(settings) as (_, client):
        await post_schedule(client, id="sleeper", cron="* * * * * *", args=["sleeper"])
        assert (await client.post("/schedules/sleeper/pause")).status_code == 200
        made = len(await labelled(client, "sleeper"))
    async with running_app(settings) as (_, client):
        shown = await (await client.get("/schedules/sleeper")).get_json()
        assert (shown["paused"], shown["next_run_at"]) == (True, None)
        await post_schedule(client, cron="* * * * * *", args=["going"])
        await two_more_ticks(client, "going")
        assert len(await labelled(client, "sleeper")) == made


async def test_a_declared_schedule_pauses_over_http_and_stays_paused(settings: Settings) -> None:
    async with running_app(settings) as (_, client):
        response = await client.post(f"/schedules/{LEAP_DAY}/pause")
        assert response.status_code == 200
        assert (await response.get_json())["source"] == "task"
    async with running_app(settings) as (_, client):  # declared again at start, unchanged
        listed = (await (await client.get("/schedules")).get_json())["schedules"]
        assert {s["id"]: s["paused"] for s in listed} == {LEAP_DAY: True}
        resumed = await (await client.post(f"/schedules/{LEAP_DAY}/resume")).get_json()
        assert resumed["paused"] is False and resumed["next_run_at"][5:10] == "02-29"


async def test_the_jobs_a_schedule_made_name_it_and_are_listed_by_it(app_client: Client) -> None:
    mine = await post_schedule(app_client, cron="* * * * * *", args=["mine"])
    await post_schedule(app_client, cron="* * * * * *", args=["other"])
    response = await app_client.post("/jobs", json={"task": T + "tick", "args": ["mine"]})
    submitted = await response.get_json()
    assert submitted["schedule_id"] is None
    await at_least(app_client, "mine", 1 + 3)  # the one submitted, three ticks'
    await at_least(app_client, "other", 1)
    assert (await app_client.delete(f"/schedules/{mine['id']}")).status_code == 204

    async def listed(query: str) -> Any:
        response = await app_client.get(f"/jobs?schedule={mine['id']}&{query}")
        assert response.status_code == 200
        return await response.get_json()

    made = (await listed("limit=1000"))["jobs"]  # also once the schedule is gone
    assert len(made) >= 3 and submitted["id"] not in [j["id"] for j in made]
    assert {(j["schedule_id"], j["args"][0]) for j in made} == {(mine["id"], "mine")}
    one = await (await app_client.get(f"/jobs/{made[0]['id']}")).get_json()
    assert one["schedule_id"] == mine["id"]
    first = await listed("limit=2")
    second = await listed(f"limit=2&cursor={first['next']}")
    assert [j["id"] for j in first["jobs"] + second["jobs"]] == [j["id"] for j in made[:4]]
    assert len((await listed(f"task={T}tick&state=succeeded,queued,running"))["jobs"]) >= 1
    none = await (await app_client.get("/jobs?schedule=no-such-schedule")).get_json()
    assert none == {"jobs": [], "next": None}
