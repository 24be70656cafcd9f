"""The store, each test against both backends (a real SQLite file; a real PostgreSQL database)
where both promise it: round trips, group commit, events, listing, reopening."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import psycopg
import pytest

from service.db import Transaction
from service.errors import (
    InvalidTransition,
    JobNotFound,
    StoreUnavailable,
    UnknownDependencies,
    WorkflowNotFound,
)
from service.jobs import (
    Event,
    Job,
    JobError,
    JobState,
    Progress,
    interrupt,
    state_event_data,
    transition,
)
from service.logs import LogEntry
from service.store.postgres import PostgresStore
from service.store.sqlite import SqliteStore, check_database

from .conftest import wait_until
from .postgres import needs_postgres

Q, R, S, F, C = (
    JobState.QUEUED,
    JobState.RUNNING,
    JobState.SUCCEEDED,
    JobState.FAILED,
    JobState.CANCELED,
)


def new_job(n: int, task: str = "t.add", **changes: Any) -> Job:
    job = Job(
        id=f"job-{n}",
        task=task,
        args=[n, "two", [3.5, None], {"k": True}],
        kwargs={"name": "é ✓", "nested": {"list": [1, 2]}},
        state=Q,
        created_at=1_700_000_000.0 + n,
    )
    return dataclasses.replace(job, **changes)


def start(job: Job) -> Job:
    return transition(job, R, 1_700_000_100.0)


def succeed(job: Job) -> Job:
    return transition(job, S, 1_700_000_200.0, result={"ok": job.id})


AnyStore = SqliteStore | PostgresStore


class Store:
    """A store of either backend (a SQLite file in tmp_path, or a database of its own on the
    tests' PostgreSQL server), with every event it published, batch by batch."""

    def __init__(self, backend: str, location: str) -> None:
        self.backend = backend
        self.location = location  # the file's path, or the database's URL
        self.batches: list[list[Event]] = []

    @property
    def published(self) -> list[Event]:
        return [event for batch in self.batches for event in batch]

    def open(self, on_commit: Callable[[list[Event]], None] | None = None) -> AnyStore:
        listener = self.batches.append if on_commit is None else on_commit
        if self.backend == "sqlite":
            return SqliteStore(self.location, on_commit=listener)
        return PostgresStore(self.location, on_commit=listener)

    def execute(self, sql: str, params: tuple[Any, ...] = ()) -> list[Any]:
        """A statement run on a connection of its own, as an operator's tool would."""
        if self.backend == "sqlite":
            with contextlib.closing(sqlite3.connect(self.location)) as conn:
                rows = conn.execute(sql, params).fetchall()
                conn.commit()
                return rows
        with psycopg.connect(self.location, autocommit=True) as pg:
            cursor = pg.execute(sql.replace("?", "%s"), params)
            return cursor.fetchall() if cursor.description else []


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=needs_postgres)])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Store:
    if request.param == "sqlite":
        return Store("sqlite", str(tmp_path / "conveyor.db"))
    return Store("postgres", request.getfixturevalue("postgres_database"))


@pytest.fixture
def sqlite_store(tmp_path: Path) -> Store:
    """For what only SQLite does (one file, one service)."""
    return Store("sqlite", str(tmp_path / "conveyor.db"))


@pytest.fixture
async def db(store: Store) -> AsyncIterator[AnyStore]:
    async with store.open() as db:
        yield db


def ids(jobs: list[Job]) -> list[str]:
    return [job.id for job in jobs]


# -- jobs in and out -------------------------------------------------------------------------


async def test_insert_and_get_round_trip(db: AnyStore, store: Store) -> None:
    job = new_job(1)
    await db.insert(job)
    assert await db.get_job("job-1") == job
    [event] = store.published
    assert (event.id, event.job_id, event.kind) == (1, "job-1", "state")
    assert event.data == state_event_data(job, None)
    assert event.data["from"] is None
    assert event.data["state"] == "queued"


async def test_round_trip_of_progress_result_and_error(db: AnyStore) -> None:
    succeeded = succeed(start(new_job(1, progress=Progress(3, 4, "three of four"))))
    failed = transition(
        start(new_job(2, progress=Progress(0.5))),
        F,
        1_700_000_300.0,
        error=JobError("ValueError", "boom", "Traceback (most recent call last): ..."),
    )
    falsy = transition(start(new_job(3)), S, 1_700_000_400.0, result=0)
    empty = transition(start(new_job(4)), S, 1_700_000_400.0, result=[])
    none = transition(start(new_job(5)), S, 1_700_000_400.0, result=None)
    for job in (succeeded, failed, falsy, empty, none):
        await db.insert(job)
        assert await db.get_job(job.id) == job
    stored = await db.get_job("job-1")
    assert stored.progress == Progress(3, 4, "three of four")
    assert stored.result == {"ok": "job-1"}
    assert (stored.attempt, stored.started_at, stored.finished_at) == (
        1,
        1_700_000_100.0,
        1_700_000_200.0,
    )
    stored_error = (await db.get_job("job-2")).error
    assert stored_error == JobError("ValueError", "boom", "Traceback (most recent call last): ...")
    assert (await db.get_job("job-3")).result == 0


async def test_get_job_of_an_unknown_id(db: AnyStore) -> None:
    with pytest.raises(JobNotFound) as caught:
        await db.get_job("nope")
    assert caught.value.job_id == "nope"


async def test_a_fresh_database_has_no_events(db: AnyStore, store: Store) -> None:
    assert db.last_event_id == 0
    assert await db.events_after(0) == []
    assert await db.list_jobs() == ([], None)
    await db.ping()
    assert store.batches == []


# -- updates ---------------------------------------------------------------------------------


async def test_update_writes_the_changed_job_with_a_state_event(db: AnyStore, store: Store) -> None:
    await db.insert(new_job(1))
    running = await db.update("job-1", start)
    assert running is not None and running.state is R and running.attempt == 1
    assert await db.get_job("job-1") == running
    done = await db.update("job-1", succeed)
    assert done == await db.get_job("job-1")
    assert [(e.id, e.data["state"]) for e in store.published] == [
        (1, "queued"),
        (2, "running"),
        (3, "succeeded"),
    ]
    assert store.published[1].data == state_event_data(running, Q)
    assert store.published[2].data["from"] == "running"


async def test_update_that_returns_none_leaves_the_job(db: AnyStore, store: Store) -> None:
    job = new_job(1)
    await db.insert(job)
    seen: list[Job] = []

    def look(current: Job) -> Job | None:
        seen.append(current)
        return None

    assert await db.update("job-1", look) is None
    assert seen == [job]  # the change saw the job as stored
    assert await db.get_job("job-1") == job
    assert len(store.published) == 1
    assert db.last_event_id == 1


async def test_progress_update_has_a_progress_event(db: AnyStore, store: Store) -> None:
    await db.insert(new_job(1))
    await db.update("job-1", start)

    def report(job: Job) -> Job:
        return dataclasses.replace(job, progress=Progress(5, 10, "half"))

    updated = await db.update("job-1", report, kind="progress")
    assert updated is not None
    event = store.published[-1]
    assert (event.kind, event.job_id) == ("progress", "job-1")
    assert event.data == {
        "job_id": "job-1",
        "task": "t.add",
        "progress": {"done": 5, "total": 10, "message": "half"},
    }
    # a running job's later changes start from its latest state, progress included
    done = await db.update("job-1", succeed)
    assert done is not None and done.progress == Progress(5, 10, "half")
    assert await db.get_job("job-1") == done


async def test_update_of_an_unknown_job(db: AnyStore, store: Store) -> None:
    with pytest.raises(JobNotFound):
        await db.update("nope", start)
    assert store.published == []


async def test_a_refused_change_propagates_and_spares_concurrent_writes(
    db: AnyStore, store: Store
) -> None:
    await asyncio.gather(db.insert(new_job(1)), db.insert(new_job(2)))
    before = len(store.batches)
    results = await asyncio.gather(
        db.update("job-1", succeed),  # queued → succeeded: refused
        db.update("job-2", start),
        db.insert(new_job(3)),
        db.update("job-1", lambda job: transition(job, C, 1_700_000_500.0)),
        return_exceptions=True,
    )
    assert isinstance(results[0], InvalidTransition)
    assert (results[0].current, results[0].target) == (Q, S)
    assert isinstance(results[1], Job) and results[1].state is R
    assert results[2] is None
    assert isinstance(results[3], Job) and results[3].state is C
    assert len(store.batches) == before + 1  # still one transaction for all of them
    assert [(e.job_id, e.data["state"]) for e in store.published[2:]] == [
        ("job-2", "running"),
        ("job-3", "queued"),
        ("job-1", "canceled"),
    ]
    assert (await db.get_job("job-1")).state is C
    assert (await db.get_job("job-2")).state is R
    assert (await db.get_job("job-3")).state is Q


async def test_an_unexpected_error_in_a_change_fails_only_that_write(
    db: AnyStore, store: Store
) -> None:
    await db.insert(new_job(1))

    def broken(job: Job) -> Job:
        raise ZeroDivisionError("bug in a change")

    results = await asyncio.gather(
        db.insert(new_job(2)),
        db.update("job-1", broken),
        db.update("job-1", start),
        return_exceptions=True,
    )
    assert results[0] is None
    assert isinstance(results[1], ZeroDivisionError)
    assert isinstance(results[2], Job)
    assert (await db.get_job("job-1")).state is R
    assert await db.get_job("job-2") == new_job(2)
    event_ids = [e.id for e in store.published]
    assert event_ids == [1, 2, 3]  # no id lost or repeated by the retry
    assert [e.id for e in await db.events_after(0)] == event_ids


async def test_a_job_that_cannot_be_stored_fails_alone(db: AnyStore) -> None:
    too_big = new_job(1, args=[2**70])  # orjson refuses integers beyond 64 bits
    results = await asyncio.gather(
        db.insert(new_job(0)), db.insert(too_big), db.insert(new_job(2)), return_exceptions=True
    )
    assert results[0] is None and results[2] is None
    assert isinstance(results[1], TypeError)
    with pytest.raises(JobNotFound):
        await db.get_job("job-1")
    assert [e.job_id for e in await db.events_after(0)] == ["job-0", "job-2"]


async def test_a_duplicate_id_fails_alone(db: AnyStore) -> None:
    await db.insert(new_job(1))
    results = await asyncio.gather(
        db.insert(new_job(1, task="other")), db.insert(new_job(2)), return_exceptions=True
    )
    assert isinstance(results[0], sqlite3.IntegrityError | psycopg.IntegrityError)
    assert results[1] is None
    assert (await db.get_job("job-1")).task == "t.add"
    assert db.last_event_id == 2


async def test_writes_in_one_transaction_see_each_other(db: AnyStore, store: Store) -> None:
    inserted, running, done = await asyncio.gather(
        db.insert(new_job(1)), db.update("job-1", start), db.update("job-1", succeed)
    )
    assert inserted is None
    assert running is not None and running.state is R
    assert done is not None and done.state is S
    assert await db.get_job("job-1") == done
    assert len(store.batches) == 1
    assert [e.data["state"] for e in store.published] == ["queued", "running", "succeeded"]


# -- concurrency and event ids ---------------------------------------------------------------


async def test_concurrent_inserts_are_group_committed_in_call_order(
    db: AnyStore, store: Store
) -> None:
    jobs = [new_job(n) for n in range(200)]
    await asyncio.gather(*(db.insert(job) for job in jobs))
    assert len(store.batches) < len(jobs)  # grouped into few transactions
    published = store.published
    assert [e.id for e in published] == list(range(1, 201))  # strictly increasing, no gaps
    assert [e.job_id for e in published] == ids(jobs)  # in the order the writes were asked for
    for batch in store.batches:
        assert [e.id for e in batch] == sorted(e.id for e in batch)
    assert await db.events_after(0, limit=1000) == published
    for job in jobs:
        assert await db.get_job(job.id) == job
    assert db.last_event_id == 200


async def test_events_are_published_only_after_commit(store: Store) -> None:
    visible: list[bool] = []

    def on_commit(events: list[Event]) -> None:
        # a separate connection already sees the job the events are about
        rows = store.execute("SELECT state FROM jobs WHERE id = ?", (events[0].job_id,))
        visible.append(rows == [(events[0].data["state"],)])

    async with store.open(on_commit) as db:
        await db.insert(new_job(1))
        await db.update("job-1", start)
    assert visible == [True, True]


async def test_event_ids_keep_increasing_across_reopen(store: Store) -> None:
    async with store.open() as db:
        await asyncio.gather(*(db.insert(new_job(n)) for n in range(3)))
        await db.update("job-0", start)
        assert db.last_event_id == 4
    async with store.open() as db:
        assert db.last_event_id == 4
        assert await db.get_job("job-0") == start(new_job(0))
        await db.insert(new_job(3))
        assert db.last_event_id == 5
        assert [e.id for e in await db.events_after(0)] == [1, 2, 3, 4, 5]
    assert [e.id for e in store.published] == [1, 2, 3, 4, 5]


async def test_event_ids_are_never_reused_even_after_events_are_deleted(store: Store) -> None:
    async with store.open() as db:
        await asyncio.gather(*(db.insert(new_job(n)) for n in range(5)))
    store.execute("DELETE FROM events WHERE id > 2")  # e.g. pruned by an operator
    async with store.open() as db:
        assert db.last_event_id == 5
        await db.insert(new_job(5))
        assert [e.id for e in await db.events_after(0)] == [1, 2, 6]


async def test_a_database_from_a_newer_service_is_refused(store: Store) -> None:
    async with store.open():
        pass
    if store.backend == "sqlite":
        store.execute("PRAGMA user_version = 99")
    else:
        store.execute("UPDATE conveyor_schema SET version = 99")
    with pytest.raises(RuntimeError, match="schema version 99"):
        async with store.open():
            pass


async def test_closed_database_refuses_work(store: Store) -> None:
    db = store.open()
    with pytest.raises(RuntimeError, match="not open"):
        await db.insert(new_job(1))
    async with db:
        await db.insert(new_job(1))
    await db.close()  # idempotent
    with pytest.raises(RuntimeError, match="not open"):
        await db.get_job("job-1")
    with pytest.raises(RuntimeError, match="not open"):
        db.update_soon("job-1", start)


async def test_close_finishes_the_writes_already_asked_for(store: Store) -> None:
    db = store.open()
    await db.open()
    futures = [db.transact_soon(_insert_operation(new_job(n))) for n in range(20)]
    await db.close()
    assert all(f.done() and f.exception() is None for f in futures)
    async with store.open() as reopened:
        jobs, _ = await reopened.list_jobs(limit=100)
        assert len(jobs) == 20


def _insert_operation(job: Job) -> Callable[[Transaction], Awaitable[None]]:
    async def operation(batch: Transaction) -> None:
        batch.put(job, new=True)

    return operation


# -- listing ---------------------------------------------------------------------------------


async def _fill(db: AnyStore) -> None:
    """job-1 … job-7, alternating tasks; job-2 and job-5 running, job-3 succeeded."""
    for n in range(1, 8):
        await db.insert(new_job(n, task="t.a" if n % 2 else "t.b"))
    for job_id in ("job-2", "job-3", "job-5"):
        await db.update(job_id, start)
    await db.update("job-3", succeed)


async def test_list_jobs_newest_first_with_filters(db: AnyStore) -> None:
    await _fill(db)
    jobs, cursor = await db.list_jobs()
    assert ids(jobs) == [f"job-{n}" for n in range(7, 0, -1)]
    assert cursor is None
    assert jobs[0] == await db.get_job("job-7")
    running, _ = await db.list_jobs(states=[R])
    assert ids(running) == ["job-5", "job-2"]
    active_or_done, _ = await db.list_jobs(states=[R, S])
    assert ids(active_or_done) == ["job-5", "job-3", "job-2"]
    by_task, _ = await db.list_jobs(task="t.b")
    assert ids(by_task) == ["job-6", "job-4", "job-2"]
    both, _ = await db.list_jobs(states=[Q], task="t.a")
    assert ids(both) == ["job-7", "job-1"]
    assert await db.list_jobs(states=[F]) == ([], None)
    assert await db.list_jobs(task="t.none") == ([], None)


async def test_list_jobs_pages_are_stable_while_jobs_are_added(db: AnyStore) -> None:
    await _fill(db)
    page1, cursor1 = await db.list_jobs(limit=3)
    assert ids(page1) == ["job-7", "job-6", "job-5"]
    assert cursor1 is not None
    for n in (8, 9):  # newer jobs arrive between pages
        await db.insert(new_job(n))
    page2, cursor2 = await db.list_jobs(limit=3, before=cursor1)
    assert ids(page2) == ["job-4", "job-3", "job-2"]
    assert cursor2 is not None
    page3, cursor3 = await db.list_jobs(limit=3, before=cursor2)
    assert ids(page3) == ["job-1"]
    assert cursor3 is None
    again, _ = await db.list_jobs(limit=3, before=cursor1)
    assert again == page2  # the same cursor gives the same page
    newest, _ = await db.list_jobs(limit=3)
    assert ids(newest) == ["job-9", "job-8", "job-7"]


async def test_list_jobs_has_no_empty_last_page(db: AnyStore) -> None:
    for n in range(1, 7):
        await db.insert(new_job(n))
    page1, cursor = await db.list_jobs(limit=3)
    page2, end = await db.list_jobs(limit=3, before=cursor)
    assert ids(page1 + page2) == [f"job-{n}" for n in range(6, 0, -1)]
    assert end is None


async def test_list_jobs_pages_with_a_filter(db: AnyStore) -> None:
    await _fill(db)
    seen: list[str] = []
    cursor: int | None = None
    pages = 0
    while True:
        page, cursor = await db.list_jobs(task="t.a", limit=1, before=cursor)
        seen += ids(page)
        pages += 1
        if cursor is None:
            break
    assert seen == ["job-7", "job-5", "job-3", "job-1"]
    assert pages == 4


# -- events ----------------------------------------------------------------------------------


async def test_events_after_with_and_without_job_id(db: AnyStore, store: Store) -> None:
    await db.insert(new_job(1))
    await db.insert(new_job(2))
    await db.update("job-1", start)
    await db.update("job-2", start)
    await db.update("job-1", succeed)
    everything = await db.events_after(0)
    assert everything == store.published
    assert [(e.id, e.job_id) for e in everything] == [
        (1, "job-1"),
        (2, "job-2"),
        (3, "job-1"),
        (4, "job-2"),
        (5, "job-1"),
    ]
    assert [e.id for e in await db.events_after(3)] == [4, 5]
    assert [e.id for e in await db.events_after(2, limit=2)] == [3, 4]
    assert await db.events_after(5) == []
    job1 = await db.events_after(0, job_id="job-1")
    assert [(e.id, e.data["state"]) for e in job1] == [
        (1, "queued"),
        (3, "running"),
        (5, "succeeded"),
    ]
    assert [e.id for e in await db.events_after(1, job_id="job-1")] == [3, 5]
    assert [e.id for e in await db.events_after(0, job_id="job-2", limit=1)] == [2]
    assert await db.events_after(0, job_id="nope") == []
    assert all(isinstance(e.at, float) and e.at > 1_600_000_000 for e in everything)


# -- update_all and ids_in_state ------------------------------------------------------------


async def test_update_all_changes_every_job_in_a_state(db: AnyStore, store: Store) -> None:
    for n in range(1, 5):
        await db.insert(new_job(n))
    for job_id in ("job-3", "job-1", "job-4"):
        await db.update(job_id, start)
    assert await db.ids_in_state(R) == ["job-1", "job-3", "job-4"]  # submission order
    before = len(store.published)
    changed = await db.update_all(R, lambda job: interrupt(job, 1_700_000_900.0, 3))
    assert ids(changed) == ["job-1", "job-3", "job-4"]
    assert all(job.state is Q and job.interruptions == 1 for job in changed)
    for job in changed:
        assert await db.get_job(job.id) == job
    assert await db.ids_in_state(R) == []
    assert await db.ids_in_state(Q) == ["job-1", "job-2", "job-3", "job-4"]
    events = store.published[before:]
    assert [(e.job_id, e.data["state"]) for e in events] == [
        ("job-1", "queued"),
        ("job-3", "queued"),
        ("job-4", "queued"),
    ]
    assert await db.get_job("job-2") == new_job(2)


async def test_update_all_with_no_match(db: AnyStore, store: Store) -> None:
    await db.insert(new_job(1))
    assert await db.update_all(R, start) == []
    assert len(store.published) == 1
    assert db.last_event_id == 1


async def test_last_event_id_follows_the_commits(db: AnyStore, store: Store) -> None:
    assert db.last_event_id == 0
    await db.insert(new_job(1))
    assert db.last_event_id == 1
    await db.update("job-1", lambda job: None)
    assert db.last_event_id == 1
    await asyncio.gather(db.update("job-1", start), db.insert(new_job(2)))
    assert db.last_event_id == 3 == store.published[-1].id


# -- regressions: writes inside one group commit ------------------------------------------


async def test_update_all_that_raises_commits_nothing(tmp_path: Path) -> None:
    events: list[Event] = []
    async with SqliteStore(str(tmp_path / "db"), on_commit=events.extend) as db:
        for n in (1, 2):
            await db.insert(new_job(n))
            await db.update(f"job-{n}", start)

        def change(job: Job) -> Job:
            if job.id == "job-1":
                return transition(job, JobState.SUCCEEDED, 3.0)
            return transition(job, JobState.RUNNING, 3.0)  # refused for job-2

        with pytest.raises(InvalidTransition):
            await db.update_all(JobState.RUNNING, change)
        # BUG: job-1's change was staged before job-2's refusal and is committed anyway
        assert (await db.get_job("job-1")).state is JobState.RUNNING
        assert db.last_event_id == 4


async def test_an_error_in_on_commit_does_not_replay_committed_writes(tmp_path: Path) -> None:
    path = str(tmp_path / "db")
    calls: list[list[int]] = []
    fail_next = [False]

    def on_commit(events: list[Event]) -> None:
        calls.append([e.id for e in events])
        if fail_next[0]:
            fail_next[0] = False
            raise RuntimeError("a subscriber's bug")

    def bump(job: Job) -> Job:
        return dataclasses.replace(job, attempt=job.attempt + 1)

    async with SqliteStore(path, on_commit=on_commit) as db:
        await db.insert(new_job(1))
        await db.insert(new_job(2))
        fail_next[0] = True
        results = await asyncio.gather(db.update("job-1", bump), db.update("job-2", bump))
        assert [r.attempt for r in results if r is not None] == [1, 1]
    async with SqliteStore(path, on_commit=lambda events: None) as db:
        # the committed batch is not run again write by write (attempt 2, events 5 and 6)
        assert (await db.get_job("job-1")).attempt == 1
        assert [e.id for e in await db.events_after(0)] == [1, 2, 3, 4]


async def test_update_all_sees_writes_staged_earlier_in_the_same_transaction(
    tmp_path: Path,
) -> None:
    async with SqliteStore(str(tmp_path / "db"), on_commit=lambda events: None) as db:
        await db.insert(new_job(1))
        await db.update("job-1", start)
        gate = asyncio.Event()

        holding = asyncio.Event()

        async def hold(batch: Transaction) -> None:  # keeps the writer busy so the next two group
            holding.set()
            await gate.wait()

        held = db.transact_soon(hold)
        await holding.wait()
        finished = db.update_soon("job-1", lambda job: transition(job, JobState.SUCCEEDED, 3.0))
        seen: list[JobState] = []

        def change(job: Job) -> Job:
            seen.append(job.state)
            return job

        recovering = asyncio.create_task(db.update_all(JobState.RUNNING, change))
        await asyncio.sleep(0)  # let update_all queue its operation behind `finished`
        gate.set()
        await held
        await finished
        await recovering
        # job-1 is SUCCEEDED in this transaction already: it is not handed to the change
        assert seen == []


async def test_one_service_per_database_file(sqlite_store: Store) -> None:
    async with sqlite_store.open():
        with pytest.raises(StoreUnavailable, match="another Conveyor service"):
            await sqlite_store.open().open()
    async with sqlite_store.open():  # released on close
        pass


@needs_postgres
async def test_services_share_a_postgres_database_and_see_each_others_events(
    postgres_database: str,
) -> None:
    one, other = Store("postgres", postgres_database), Store("postgres", postgres_database)
    async with one.open() as first, other.open() as second:
        await first.insert(new_job(1))
        await second.insert(new_job(2))
        await first.update("job-2", start)  # a job the other service made

        async def everything_seen() -> bool:
            return len(one.published) == len(other.published) == 3

        await wait_until(everything_seen, what="each service to publish all three events")
        # both in the same order, the one the ids say, however each learnt of them
        assert [e.id for e in one.published] == [e.id for e in other.published] == [1, 2, 3]
        assert second.last_event_id == first.last_event_id == 3


async def test_a_database_file_in_use_is_refused_before_the_service_starts(
    sqlite_store: Store,
) -> None:
    async with sqlite_store.open():
        with pytest.raises(StoreUnavailable, match="another Conveyor service"):
            check_database(sqlite_store.location)


def test_check_database_names_what_is_wrong(tmp_path: Path) -> None:
    not_a_db = tmp_path / "notes.txt"
    not_a_db.write_text("hello, this is not SQLite " * 100)
    with pytest.raises(StoreUnavailable, match="not a database"):
        check_database(str(not_a_db))
    with pytest.raises(StoreUnavailable, match="CONVEYOR_DATABASE"):
        check_database(str(tmp_path / "missing" / "jobs.db"))


async def test_a_database_of_the_first_schema_is_migrated_with_its_jobs(tmp_path: Path) -> None:
    import sqlite3

    from service.store.sqlite_schema import MIGRATIONS

    path = tmp_path / "old.db"
    conn = sqlite3.connect(path)
    conn.executescript(f"{MIGRATIONS[0]}; PRAGMA user_version = 1;")
    conn.execute(
        "INSERT INTO jobs (id, task, args, kwargs, state, created_at) "
        "VALUES ('old', 't.add', '[1, 2]', '{}', 'queued', 1.0)"
    )
    conn.commit()
    conn.close()
    async with SqliteStore(str(path), on_commit=lambda events: None) as db:
        job = await db.get_job("old")
        assert (job.args, job.state, job.options.timeout_s) == ([1, 2], JobState.QUEUED, None)


async def test_a_page_stops_before_its_jobs_pass_the_byte_bound(db: AnyStore) -> None:
    big = "x" * 100_000
    await db.insert(*(new_job(n, args=[big]) for n in range(1, 11)))
    first, cursor = await db.list_jobs(limit=50, max_bytes=350_000)
    assert ids(first) == ["job-10", "job-9", "job-8"]  # a fourth would pass the bound
    assert cursor is not None
    rest, end = await db.list_jobs(limit=50, max_bytes=350_000, before=cursor)
    assert ids(rest) == ["job-7", "job-6", "job-5"] and end is not None
    one, _ = await db.list_jobs(limit=50, max_bytes=10)  # one job always, however large
    assert ids(one) == ["job-10"]
    everything, none_left = await db.list_jobs(limit=50)
    assert len(everything) == 10 and none_left is None


async def test_a_log_line_with_a_nul_is_kept(db: AnyStore, store: Store) -> None:
    await db.insert(new_job(1))
    await db.update("job-1", start)
    await db.append_logs_soon("job-1", [LogEntry(1.0, "stdout", "before\x00after")])
    [entry], dropped = await db.job_logs("job-1")
    # PostgreSQL's text holds no NUL: there it is shown as U+FFFD
    expected = "before\x00after" if store.backend == "sqlite" else "before\ufffdafter"
    assert (entry.text, dropped) == (expected, 0)


@needs_postgres
async def test_a_lost_connection_is_made_again_and_the_write_lands(
    postgres_database: str, caplog: pytest.LogCaptureFixture
) -> None:
    store = Store("postgres", postgres_database)
    async with store.open() as db:
        await db.insert(new_job(1))
        # the server ends every other session of the database: the store's writer and readers
        store.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )
        await db.insert(new_job(2))
        assert [job.id for job in (await db.list_jobs())[0]] == ["job-2", "job-1"]
        assert [e.job_id for e in store.published] == ["job-1", "job-2"]
    assert "connection was lost" in caplog.text  # the write met the dead one first


@needs_postgres
async def test_a_job_canceled_in_the_same_transaction_is_not_claimed(
    postgres_database: str,
) -> None:
    store = Store("postgres", postgres_database)
    async with store.open() as db:
        assert isinstance(db, PostgresStore)
        await db.insert(new_job(1))
        canceled, claimed = await asyncio.gather(
            db.update("job-1", lambda job: transition(job, C, 5.0)), db.claim(5.0, {}, {})
        )
        assert canceled is not None and canceled.state is C
        assert claimed is None
        assert (await db.get_job("job-1")).state is C


@needs_postgres
async def test_a_lease_that_ran_out_is_not_renewed_and_its_jobs_go_to_the_others(
    postgres_database: str,
) -> None:
    store = Store("postgres", postgres_database)
    async with store.open() as late, store.open() as other:
        assert isinstance(late, PostgresStore) and isinstance(other, PostgresStore)
        assert await late.heartbeat({}, 10.0) and await other.heartbeat({}, 10.0)
        await late.insert(new_job(1))
        claimed = await late.claim(5.0, {}, {})
        assert claimed is not None and claimed.state is R
        # the late service was paused for longer than its lease
        store.execute("UPDATE instances SET heartbeat_at = heartbeat_at - 60 WHERE id = ?",
                      (late.instance_id,))  # fmt: skip
        assert not await late.heartbeat({}, 10.0)  # not renewed: its jobs are not its own
        requeued = await other.expire_leases(10.0, lambda job: interrupt(job, 6.0, 3))
        assert [(job.id, job.state) for job in requeued] == [("job-1", Q)]
        assert await other.claim(7.0, {}, {}) is not None  # and another service runs it


# -- dependencies ----------------------------------------------------------------------------


def waiting(n: int, *on: str, **changes: Any) -> Job:
    return new_job(n, state=JobState.WAITING, depends_on=on, **changes)


async def test_a_finished_job_lets_its_dependents_go_in_its_own_commit(
    db: AnyStore, store: Store
) -> None:
    await db.insert(new_job(1), new_job(2))
    await db.insert(waiting(3, "job-1", "job-2"))
    await db.update("job-1", start)
    await db.update("job-1", succeed)
    assert (await db.get_job("job-3")).state is JobState.WAITING  # job-2 has not finished
    await db.update("job-2", start)
    store.batches.clear()
    await db.update("job-2", succeed)
    # one commit: job-2 succeeded and job-3 became due, after it
    [batch] = store.batches
    assert [(e.job_id, e.data["from"], e.data["state"]) for e in batch] == [
        ("job-2", "running", "succeeded"),
        ("job-3", "waiting", "queued"),
    ]
    assert (await db.get_job("job-3")).state is Q


async def test_a_failed_dependency_cancels_the_chain_behind_it(db: AnyStore, store: Store) -> None:
    await db.insert(new_job(1))
    await db.insert(waiting(2, "job-1"))
    await db.insert(waiting(3, "job-2"))
    await db.insert(waiting(4, "job-2", on_dependency_failure="run"))
    await db.update("job-1", start)
    store.batches.clear()
    failed = await db.update("job-1", lambda j: transition(j, F, 1_700_000_200.0))
    assert failed is not None
    [batch] = store.batches
    moved = {(e.job_id, e.data["state"]) for e in batch}
    # job-2 is canceled for job-1; job-3 for job-2; job-4 runs anyway
    assert moved == {("job-1", "failed"), ("job-2", "canceled"), ("job-3", "canceled"),
                     ("job-4", "queued")}  # fmt: skip
    two = await db.get_job("job-2")
    assert two.error is not None and two.error.type == "dependency_failed"
    assert "job-1" in two.error.message


async def test_a_new_job_whose_dependencies_finished_starts_out_as_they_allow(
    db: AnyStore,
) -> None:
    done = succeed(start(new_job(1)))
    failed = transition(start(new_job(2)), F, 1_700_000_200.0)
    await db.insert(done, failed)
    [(due, _)] = await db.submit([waiting(3, "job-1")])
    [(canceled, _)] = await db.submit([waiting(4, "job-1", "job-2")])
    assert due.state is Q and canceled.state is C
    assert (await db.get_job("job-3")).state is Q and (await db.get_job("job-4")).state is C


async def test_unknown_dependencies_refuse_the_whole_submit(db: AnyStore) -> None:
    await db.insert(new_job(1))
    with pytest.raises(UnknownDependencies) as caught:
        await db.submit([waiting(2, "job-1"), waiting(3, "job-1", "nope", "gone")])
    assert caught.value.job_ids == ["nope", "gone"] and caught.value.index == 1
    with pytest.raises(JobNotFound):
        await db.get_job("job-2")  # nothing of the batch was stored


async def test_a_pruned_dependent_leaves_no_trace(db: AnyStore, store: Store) -> None:
    await db.insert(new_job(1))
    await db.insert(waiting(2, "job-1"))
    await db.update("job-2", lambda j: transition(j, C, 1_700_000_100.0))
    await db.update("job-1", start)
    await db.update("job-1", succeed)
    assert await db.prune(1_800_000_000.0, 100) == 2
    assert store.execute("SELECT count(*) FROM dependencies") == [(0,)]


@needs_postgres
async def test_two_services_finishing_the_two_dependencies_at_once_let_the_job_go(
    postgres_database: str,
) -> None:
    """Each finish reads the other's dependency; the dependent's lock orders them, so the
    second sees the first committed and never leaves the job waiting for good."""
    one, other = Store("postgres", postgres_database), Store("postgres", postgres_database)
    async with one.open() as first, other.open() as second:
        for n in range(0, 60, 3):
            await first.insert(start(new_job(n)), start(new_job(n + 1)))
            await first.insert(waiting(n + 2, f"job-{n}", f"job-{n + 1}"))
            await asyncio.gather(
                first.update(f"job-{n}", succeed), second.update(f"job-{n + 1}", succeed)
            )
            assert (await first.get_job(f"job-{n + 2}")).state is Q


async def test_retention_removes_a_workflow_with_all_its_jobs_once_the_last_is_old(
    db: AnyStore, store: Store
) -> None:
    async def record(batch: Transaction) -> None:
        await batch.insert_workflow("wf", 1_700_000_000.0, {"job": "job-2"})

    first = new_job(1, workflow_id="wf")
    second = waiting(2, "job-1", workflow_id="wf", input={"job": "job-1"}, args=[10])
    await db.submit([first, second], guard=record)
    await db.update("job-1", start)
    await db.update("job-1", succeed)  # long ago; job-2 has not run
    assert (await db.get_job("job-2")).args == [{"ok": "job-1"}, 10]  # its input went first
    assert await db.prune(1_800_000_000.0, 100) == 0  # job-2 is unfinished: all stay
    await db.update("job-2", start)
    await db.update("job-2", lambda j: transition(j, S, 1_900_000_000.0, result=1))
    assert await db.prune(1_800_000_000.0, 100) == 0  # job-2 ended after the cutoff
    stored = await db.workflow("wf")
    assert (stored.created_at, stored.output, ids(stored.jobs)) == (
        1_700_000_000.0,
        {"job": "job-2"},
        ["job-1", "job-2"],
    )
    assert await db.prune(2_000_000_000.0, 100) == 2
    with pytest.raises(WorkflowNotFound):
        await db.workflow("wf")


async def test_a_failed_step_run_again_makes_the_steps_canceled_for_it_wait_again(
    db: AnyStore,
) -> None:
    async def record(batch: Transaction) -> None:
        await batch.insert_workflow("wf", 1_700_000_000.0, {"job": "job-3"})

    jobs = [
        new_job(1, workflow_id="wf"),
        waiting(2, "job-1", workflow_id="wf"),
        waiting(3, "job-2", workflow_id="wf"),
    ]
    await db.submit(jobs, guard=record)
    await db.update("job-1", start)
    await db.update("job-1", lambda j: transition(j, F, 1_700_000_200.0))
    assert [(await db.get_job(f"job-{n}")).state for n in (2, 3)] == [C, C]
    await db.update("job-1", lambda j: transition(j, Q, 1_700_000_300.0))  # retried
    assert [(await db.get_job(f"job-{n}")).state for n in (2, 3)] == [JobState.WAITING] * 2
    await db.update("job-1", start)
    await db.update("job-1", succeed)
    assert (await db.get_job("job-2")).state is Q  # and the workflow goes on from there


async def test_a_callback_waits_again_only_if_no_other_member_failed(db: AnyStore) -> None:
    async def record(batch: Transaction) -> None:
        await batch.insert_workflow("wf", 1_700_000_000.0, {"job": "job-3"})

    a, b = start(new_job(1, workflow_id="wf")), start(new_job(2, workflow_id="wf"))
    await db.submit([a, b, waiting(3, "job-1", "job-2", workflow_id="wf")], guard=record)
    fail = functools.partial(transition, target=F, at=1_700_000_200.0)
    await db.update("job-1", lambda j: fail(j))
    assert (await db.get_job("job-3")).state is C  # job-2 still runs: its row stays
    await db.update("job-1", lambda j: transition(j, Q, 1_700_000_300.0))  # retried
    again = await db.get_job("job-3")
    assert again.state is JobState.WAITING and again.waiting_on == 2
    await db.update("job-2", lambda j: fail(j))  # the other member fails too
    await db.update("job-1", lambda j: transition(j, R, 1_700_000_400.0))
    await db.update("job-1", lambda j: fail(j))
    assert (await db.get_job("job-3")).state is C
    await db.update("job-1", lambda j: transition(j, Q, 1_700_000_500.0))  # retried again
    assert (await db.get_job("job-3")).state is C  # job-2 failed: it stays canceled for it
