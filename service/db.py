"""The store: SQLite through aiosqlite; every query of the service lives here.

Writes go through one writer task that groups whatever arrives together into one transaction
(group commit): a burst of submits or state changes costs one fsync, not one each. Reads use a
second connection, which WAL lets run beside the writer. Every change of a job appends a row to
``events``, whose id is the SSE id that clients resume from.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import sqlite3
import stat
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar, cast

import aiosqlite
import orjson

from .cron import Schedule
from .errors import (
    IdempotencyKeyReused,
    JobNotFound,
    KeyTaken,
    ScheduleConflict,
    ScheduleNotFound,
    ServiceError,
    StoreFailed,
    StoreUnavailable,
)
from .jobs import ACTIVE, Attempt, Event, Job, JobError, JobState, Progress, state_event_data
from .logs import LogEntry
from .options import JobOptions
from .settings import DEFAULT_MAX_LOG_LINES
from .stats import BUCKET_S, JobStats, window_start
from .storefiles import StartJournal, lock_database

T = TypeVar("T")

log = logging.getLogger("conveyor.db")

MIGRATIONS: tuple[str, ...] = (
    """
    CREATE TABLE jobs (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,  -- submission order: list order and cursor
        id TEXT NOT NULL UNIQUE,
        task TEXT NOT NULL,
        args TEXT NOT NULL,                     -- JSON
        kwargs TEXT NOT NULL,                   -- JSON
        state TEXT NOT NULL,
        attempt INTEGER NOT NULL DEFAULT 0,
        interruptions INTEGER NOT NULL DEFAULT 0,
        progress TEXT,                          -- JSON or NULL
        result TEXT,                            -- JSON or NULL (no result)
        error TEXT,                             -- JSON or NULL
        created_at REAL NOT NULL,               -- epoch seconds
        started_at REAL,
        finished_at REAL
    );
    CREATE INDEX jobs_state_seq ON jobs (state, seq);
    CREATE INDEX jobs_task_seq ON jobs (task, seq);
    CREATE TABLE events (
        id INTEGER PRIMARY KEY AUTOINCREMENT,   -- never reused: the SSE id
        job_id TEXT NOT NULL,
        kind TEXT NOT NULL,
        at REAL NOT NULL,
        data TEXT NOT NULL                      -- JSON
    );
    CREATE INDEX events_job_id ON events (job_id, id);
    """,
    """
    ALTER TABLE jobs ADD COLUMN options TEXT NOT NULL DEFAULT '{}';  -- JSON: JobOptions
    """,
    """
    ALTER TABLE jobs ADD COLUMN scheduled_at REAL;  -- epoch seconds: when it becomes due
    """,
    """
    ALTER TABLE jobs ADD COLUMN retries INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE jobs ADD COLUMN attempts TEXT NOT NULL DEFAULT '[]';  -- JSON: ended runs
    """,
    """
    ALTER TABLE jobs ADD COLUMN key TEXT;
    -- no two unfinished jobs share a key (the writer checks first; this makes sure)
    CREATE UNIQUE INDEX jobs_active_key ON jobs (key)
        WHERE key IS NOT NULL AND state IN ('scheduled', 'queued', 'running');
    CREATE TABLE idempotency (
        key TEXT PRIMARY KEY,                   -- the Idempotency-Key header
        request TEXT NOT NULL,                  -- a digest of the request it came with
        job_ids TEXT NOT NULL,                  -- JSON: the jobs that request created
        created_at REAL NOT NULL
    );
    CREATE INDEX idempotency_created_at ON idempotency (created_at);
    CREATE INDEX jobs_finished_at ON jobs (finished_at) WHERE finished_at IS NOT NULL;
    """,
    """
    CREATE TABLE schedules (
        id TEXT PRIMARY KEY,
        task TEXT NOT NULL,
        cron TEXT NOT NULL,
        args TEXT NOT NULL,                     -- JSON
        kwargs TEXT NOT NULL,                   -- JSON
        options TEXT NOT NULL,                  -- JSON: JobOptions, over the task's own
        source TEXT NOT NULL,                   -- 'api' (POST /schedules) or 'task' (@task(cron=))
        created_at REAL NOT NULL,               -- epoch seconds; the first tick comes after it
        last_tick_at REAL                       -- epoch seconds: the latest tick that made a job
    );
    """,
    """
    CREATE TABLE job_logs (                     -- the newest CONVEYOR_MAX_LOG_LINES of each job
        id INTEGER PRIMARY KEY,                 -- arrival order
        job_id TEXT NOT NULL,
        event_id INTEGER NOT NULL,              -- the "log" event that carried it
        attempt INTEGER NOT NULL,
        at REAL NOT NULL,                       -- epoch seconds
        stream TEXT NOT NULL,                   -- stdout, stderr or log
        level TEXT,                             -- log records only
        logger TEXT,
        text TEXT NOT NULL
    );
    CREATE INDEX job_logs_job_id ON job_logs (job_id, id);
    CREATE TABLE job_log_counts (
        job_id TEXT PRIMARY KEY,
        kept INTEGER NOT NULL,                  -- its rows in job_logs
        dropped INTEGER NOT NULL                -- its lines no longer (or never) kept
    ) WITHOUT ROWID;
    """,
    """
    ALTER TABLE schedules ADD COLUMN paused INTEGER NOT NULL DEFAULT 0;  -- 1: makes no jobs
    -- epoch seconds: the latest resume; the ticks before it make no job
    ALTER TABLE schedules ADD COLUMN resumed_at REAL;
    """,
    """
    ALTER TABLE jobs ADD COLUMN schedule_id TEXT;  -- the schedule whose tick made it, if any
    CREATE INDEX jobs_schedule_seq ON jobs (schedule_id, seq) WHERE schedule_id IS NOT NULL;
    """,
    """
    CREATE TABLE readiness (                    -- one row, written by each readiness check
        id INTEGER PRIMARY KEY CHECK (id = 1),
        checked_at REAL NOT NULL                -- epoch seconds
    );
    """,
)

PRAGMAS = (
    "PRAGMA journal_mode = WAL",
    "PRAGMA synchronous = NORMAL",  # durable across process crashes; one fsync per checkpoint
    "PRAGMA busy_timeout = 5000",
    "PRAGMA foreign_keys = ON",
)

_JOB_COLUMNS = (
    "id, task, args, kwargs, state, attempt, interruptions, progress, result, error, "
    "created_at, started_at, finished_at, seq, options, scheduled_at, retries, attempts, key, "
    "schedule_id"
)
SELECT_JOB = f"SELECT {_JOB_COLUMNS} FROM jobs WHERE id = ?"
MAX_PAGE_BYTES = 8 * 1024 * 1024  # of a list page's stored JSON: the jobs past it wait for "next"
# a job's stored JSON, in bytes (as blobs: counted without decoding the text)
_JOB_BYTES = (
    "length(CAST(args AS BLOB)) + length(CAST(kwargs AS BLOB)) "
    "+ coalesce(length(CAST(result AS BLOB)), 0) + coalesce(length(CAST(error AS BLOB)), 0) "
    "+ length(CAST(attempts AS BLOB))"
)
# what the database itself raises when it cannot be written (locked, full, I/O, read-only)
OPERATIONAL = sqlite3.OperationalError
WRITE_READINESS = "INSERT OR REPLACE INTO readiness (id, checked_at) VALUES (1, ?)"
SELECT_IDS_IN_STATE = "SELECT id FROM jobs WHERE state = ? ORDER BY seq"
INSERT_JOB = (
    "INSERT INTO jobs (id, task, args, kwargs, state, attempt, interruptions, progress, result, "
    "error, created_at, started_at, finished_at, options, scheduled_at, retries, attempts, key, "
    "schedule_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
UPDATE_JOB = (
    "UPDATE jobs SET state = ?, attempt = ?, interruptions = ?, progress = ?, result = ?, "
    "error = ?, started_at = ?, finished_at = ?, scheduled_at = ?, retries = ?, attempts = ? "
    "WHERE id = ?"
)
# jobs stored before queues and priorities existed have neither in their options
QUEUE_OF_JOB = "coalesce(json_extract(options, '$.queue'), 'default')"
# what the ready queue needs of each queued job, oldest first
SELECT_QUEUED = (
    f"SELECT id, task, {QUEUE_OF_JOB}, "
    "coalesce(json_extract(options, '$.priority'), 0) FROM jobs WHERE state = 'queued' ORDER BY seq"
)
SELECT_ACTIVE_WITH_KEY = (
    "SELECT id FROM jobs WHERE key = ? AND state IN ('scheduled', 'queued', 'running')"
)
SELECT_IDEMPOTENCY = "SELECT request, job_ids, created_at FROM idempotency WHERE key = ?"
UPSERT_IDEMPOTENCY = (
    "INSERT OR REPLACE INTO idempotency (key, request, job_ids, created_at) VALUES (?, ?, ?, ?)"
)
SELECT_EXPIRED = (
    f"SELECT id, {QUEUE_OF_JOB}, state FROM jobs "
    "WHERE finished_at < ? AND +state IN ('succeeded', 'failed', 'canceled') "
    "ORDER BY finished_at LIMIT ?"
)
NO_JOB = ""  # the job_id of events about the store itself
DELETE_OLD_NOTES = "DELETE FROM events WHERE job_id = ? AND at < ?"
DELETE_EXPIRED_IDEMPOTENCY = "DELETE FROM idempotency WHERE created_at < ?"
COUNT_JOBS = f"SELECT {QUEUE_OF_JOB}, state, count(*) FROM jobs GROUP BY 1, 2"
# (bucket start, state, jobs) of the jobs finished since ?, in buckets of ? seconds
COUNT_FINISHED = (
    "SELECT CAST(finished_at / ?1 AS INTEGER) * ?1, state, count(*) FROM jobs "
    "WHERE finished_at >= ?2 AND state IN ('succeeded', 'failed', 'canceled') GROUP BY 1, 2"
)
SELECT_SCHEDULED = "SELECT id, scheduled_at FROM jobs WHERE state = 'scheduled'"
INSERT_EVENT = "INSERT INTO events (id, job_id, kind, at, data) VALUES (?, ?, ?, ?, ?)"
SELECT_EVENTS_AFTER = (
    "SELECT id, job_id, kind, at, data FROM events WHERE id > ? ORDER BY id LIMIT ?"
)
SELECT_JOB_EVENTS_AFTER = (
    "SELECT id, job_id, kind, at, data FROM events WHERE job_id = ? AND id > ? ORDER BY id LIMIT ?"
)
LAST_EVENT_ID = (
    "SELECT max(coalesce((SELECT max(id) FROM events), 0), "
    "coalesce((SELECT seq FROM sqlite_sequence WHERE name = 'events'), 0))"
)

_SCHEDULE_COLUMNS = (
    "id, task, cron, args, kwargs, options, source, created_at, last_tick_at, paused, resumed_at"
)
_SCHEDULE_VALUES = ", ".join("?" * len(_SCHEDULE_COLUMNS.split(",")))
SELECT_SCHEDULES = f"SELECT {_SCHEDULE_COLUMNS} FROM schedules ORDER BY created_at, id"
INSERT_SCHEDULE = (
    f"INSERT OR IGNORE INTO schedules ({_SCHEDULE_COLUMNS}) VALUES ({_SCHEDULE_VALUES})"
)
REPLACE_SCHEDULE = (
    f"INSERT OR REPLACE INTO schedules ({_SCHEDULE_COLUMNS}) VALUES ({_SCHEDULE_VALUES})"
)
DELETE_SCHEDULE = "DELETE FROM schedules WHERE id = ?"
# the same schedule (not one made anew under its id), active, and a tick later than any it
# fired and than its latest resume
CLAIM_TICK = (
    "UPDATE schedules SET last_tick_at = ?1 WHERE id = ?2 AND created_at = ?3 AND paused = 0 "
    "AND coalesce(last_tick_at, 0) < ?1 AND coalesce(resumed_at, 0) < ?1"
)
PAUSE_SCHEDULE = "UPDATE schedules SET paused = ?, resumed_at = ? WHERE id = ? AND created_at = ?"
INSERT_LOG = (
    "INSERT INTO job_logs (job_id, event_id, attempt, at, stream, level, logger, text) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
)
COUNT_LOGS = (
    "INSERT INTO job_log_counts (job_id, kept, dropped) VALUES (?, ?, ?) "
    "ON CONFLICT (job_id) DO UPDATE SET "
    "kept = kept + excluded.kept, dropped = dropped + excluded.dropped RETURNING kept"
)
PRUNE_LOGS = (
    "DELETE FROM job_logs WHERE id IN "
    "(SELECT id FROM job_logs WHERE job_id = ? ORDER BY id LIMIT ?)"
)
COUNT_PRUNED = "UPDATE job_log_counts SET kept = kept - ?, dropped = dropped + ? WHERE job_id = ?"
# a log event all of whose lines are gone goes too: replays stay as bounded as the log
PRUNE_LOG_EVENTS = (
    "DELETE FROM events WHERE job_id = ? AND kind = 'log' AND id < "
    "(SELECT min(event_id) FROM job_logs WHERE job_id = ?)"
)
SELECT_LOGS = (
    "SELECT at, stream, text, level, logger, attempt FROM job_logs "
    "WHERE job_id = ? ORDER BY id DESC LIMIT ?"
)
SELECT_LOG_DROPPED = "SELECT dropped FROM job_log_counts WHERE job_id = ?"
DELETE_LOGS = (
    "DELETE FROM job_logs WHERE job_id = ?",
    "DELETE FROM job_log_counts WHERE job_id = ?",
    "DELETE FROM events WHERE job_id = ? AND kind = 'log'",
)

MAX_OPERATIONS_PER_COMMIT = 1000
CHECKPOINT_EVERY_S = 0.5  # at most this long between two copies of the WAL into the database
CACHE_SIZE = 10_000  # unfinished jobs the writer keeps: a larger backlog is read back


def _dumps(value: Any) -> str:
    return orjson.dumps(value).decode()


def job_to_row(job: Job) -> tuple[Any, ...]:
    return (
        job.id, job.task, _dumps(job.args), _dumps(job.kwargs), job.state.value, job.attempt,
        job.interruptions,
        None if job.progress is None else _dumps(job.progress.as_dict()),
        None if job.state is not JobState.SUCCEEDED else _dumps(job.result),
        None if job.error is None else _dumps(job.error.as_dict()),
        job.created_at, job.started_at, job.finished_at, _dumps(job.options.as_dict()),
        job.scheduled_at, job.retries, _dumps([a.as_dict() for a in job.attempts]), job.key,
        job.schedule_id,
    )  # fmt: skip


def _update_params(job: Job) -> tuple[Any, ...]:
    row = job_to_row(job)
    return (*row[4:10], *row[11:13], *row[14:17], job.id)  # the key and schedule never change


def row_to_job(row: Sequence[Any]) -> Job:
    progress = None if row[7] is None else Progress(**orjson.loads(row[7]))
    error = None if row[9] is None else JobError(**orjson.loads(row[9]))
    return Job(
        id=row[0], task=row[1], args=orjson.loads(row[2]), kwargs=orjson.loads(row[3]),
        state=JobState(row[4]), attempt=row[5], interruptions=row[6], progress=progress,
        result=None if row[8] is None else orjson.loads(row[8]), error=error,
        created_at=row[10], started_at=row[11], finished_at=row[12],
        options=JobOptions.from_dict(orjson.loads(row[14])), scheduled_at=row[15],
        retries=row[16], attempts=tuple(Attempt.from_dict(a) for a in orjson.loads(row[17])),
        key=row[18], schedule_id=row[19],
    )  # fmt: skip


def schedule_to_row(schedule: Schedule) -> tuple[Any, ...]:
    return (
        schedule.id, schedule.task, schedule.cron, _dumps(schedule.args), _dumps(schedule.kwargs),
        _dumps(schedule.options.as_dict()), schedule.source, schedule.created_at,
        schedule.last_tick_at, int(schedule.paused), schedule.resumed_at,
    )  # fmt: skip


def row_to_schedule(row: Sequence[Any]) -> Schedule:
    return Schedule(
        id=row[0], task=row[1], cron=row[2], args=orjson.loads(row[3]),
        kwargs=orjson.loads(row[4]), options=JobOptions.from_dict(orjson.loads(row[5])),
        source=row[6], created_at=row[7], last_tick_at=row[8], paused=bool(row[9]),
        resumed_at=row[10],
    )  # fmt: skip


def row_to_event(row: Sequence[Any]) -> Event:
    return Event(id=row[0], job_id=row[1], kind=row[2], at=row[3], data=orjson.loads(row[4]))


class Batch:
    """What one transaction will write; operations read through it, so they see each other."""

    def __init__(
        self,
        conn: aiosqlite.Connection,
        cache: dict[str, Job],
        next_id: int,
        clock: Callable[[], float],
    ) -> None:
        self._conn = conn
        self._clock = clock
        # unfinished jobs as last committed (the writer sees every change, so an entry is
        # exact or absent): starting, updating or finishing one needs no read
        self._cache = cache
        self.rows: dict[str, Job] = {}
        self.loaded: dict[str, Job] = {}  # each job as it was before this transaction
        self.inserted: set[str] = set()
        self.events: list[Event] = []
        self.next_event_id = next_id
        self.begun = False  # BEGIN IMMEDIATE sent: at the first statement, or with the commit

    async def _open(self) -> aiosqlite.Connection:
        """The connection, inside this transaction. It begins at the first statement an
        operation runs, so a transaction that only writes what it staged (a plain submit, a
        start, a finish) makes a single trip to SQLite's thread: at the commit."""
        if not self.begun:
            await self._conn.execute("BEGIN IMMEDIATE")
            self.begun = True
        return self._conn

    async def get(self, job_id: str) -> Job | None:
        job = self.rows.get(job_id) or self._cache.get(job_id)
        if job is None:
            rows = await (await self._open()).execute_fetchall(SELECT_JOB, (job_id,))
            job = row_to_job(next(iter(rows))) if rows else None
        if job is not None:
            self.loaded.setdefault(job_id, job)
        return job

    async def ids_in_state(self, state: JobState) -> list[str]:
        """Ids of jobs stored in ``state`` or staged into it, in submission order."""
        rows = await (await self._open()).execute_fetchall(SELECT_IDS_IN_STATE, (state.value,))
        stored = [row[0] for row in rows]
        staged = [i for i, job in self.rows.items() if job.state is state and i not in stored]
        return stored + staged

    async def holder_of(self, key: str) -> Job | None:
        """The unfinished job that holds ``key``, as this transaction sees it."""
        for staged in self.rows.values():
            if staged.key == key and staged.state in ACTIVE:
                return staged
        for row in await (await self._open()).execute_fetchall(SELECT_ACTIVE_WITH_KEY, (key,)):
            stored = await self.get(row[0])  # a staged change may have finished it
            if stored is not None and stored.state in ACTIVE:
                return stored
        return None

    def put(self, job: Job, *, new: bool = False, kind: str | None = "state") -> None:
        """Stage ``job`` (read through ``get`` first, unless ``new``) with a ``kind`` event."""
        before = None if new else self.rows.get(job.id) or self.loaded[job.id]
        self.rows[job.id] = job
        if new:
            self.inserted.add(job.id)
        if kind == "state":
            self._event(job, kind, state_event_data(job, None if before is None else before.state))
        elif kind == "progress":
            progress = None if job.progress is None else job.progress.as_dict()
            self._event(job, kind, {"job_id": job.id, "task": job.task, "progress": progress})

    async def execute(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        """Run a statement inside this transaction (on tables the batch does not stage)."""
        return list(await (await self._open()).execute_fetchall(sql, params))

    async def claim_tick(self, schedule: Schedule, tick_at: float) -> bool:
        """Record ``tick_at`` as the schedule's latest fired tick; False, changing nothing, if
        that tick or a later one already fired, the schedule is paused (or was resumed after
        the tick) or is gone: a tick fires once, and never while paused."""
        params = (tick_at, schedule.id, schedule.created_at)
        return await self.change(CLAIM_TICK, params) == 1

    async def change(self, sql: str, params: Sequence[Any]) -> int:
        """Run a statement in this transaction now; how many rows it changed."""
        async with (await self._open()).execute(sql, params) as cursor:
            return cursor.rowcount

    def _event(self, job: Job, kind: str, data: dict[str, Any]) -> None:
        self._add_event(job.id, kind, data)

    def note(self, kind: str, data: dict[str, Any]) -> None:
        """An event about the store rather than one job (its ``job_id`` is empty)."""
        self._add_event(NO_JOB, kind, data)

    def _add_event(self, job_id: str, kind: str, data: dict[str, Any]) -> None:
        self.events.append(Event(self.next_event_id, job_id, kind, self._clock(), data))
        self.next_event_id += 1

    async def add_logs(
        self, job: Job, entries: Sequence[LogEntry], dropped: int, keep: int
    ) -> None:
        """Append a batch of the job's output, as rows and as one ``log`` event; then let go of
        its oldest lines beyond the newest ``keep``."""
        event_id = self.next_event_id
        entries = [dataclasses.replace(e, attempt=job.attempt) for e in entries]
        data = {
            "job_id": job.id, "task": job.task,
            "entries": [e.as_json() for e in entries], "dropped": dropped,
        }  # fmt: skip
        self._event(job, "log", data)
        rows = [
            (job.id, event_id, e.attempt, e.at, e.stream, e.level, e.logger, e.text)
            for e in entries
        ]
        conn = await self._open()
        await conn.executemany(INSERT_LOG, rows)
        counted = await conn.execute_fetchall(COUNT_LOGS, (job.id, len(rows), dropped))
        excess = int(next(iter(counted))[0]) - keep
        if excess > 0:
            await conn.execute(PRUNE_LOGS, (job.id, excess))
            await conn.execute(COUNT_PRUNED, (excess, excess, job.id))
            await conn.execute(PRUNE_LOG_EVENTS, (job.id, job.id))

    async def delete_logs(self, job_ids: Sequence[str]) -> None:
        """Forget these jobs' logs, also their ``log`` events (for a retention sweep)."""
        for sql in DELETE_LOGS:
            await (await self._open()).executemany(sql, [(job_id,) for job_id in job_ids])

    async def commit(self) -> None:
        """Write what is staged and commit: one trip to SQLite's thread for all of it (each
        of aiosqlite's own calls is a trip: a queue, a thread's wake-up, and the loop's)."""
        inserts = [job_to_row(j) for i, j in self.rows.items() if i in self.inserted]
        updates = [_update_params(j) for i, j in self.rows.items() if i not in self.inserted]
        events = [(e.id, e.job_id, e.kind, e.at, _dumps(e.data)) for e in self.events]
        await in_connection_thread(
            self._conn, _write_and_commit, begun=self.begun,
            updates=updates, inserts=inserts, events=events,
        )  # fmt: skip


async def in_connection_thread(
    conn: aiosqlite.Connection, fn: Callable[..., T], **kwargs: Any
) -> T:
    """``fn(connection, **kwargs)`` run with the sqlite3 connection in aiosqlite's own thread
    for it, where every statement of that connection runs: several statements, one trip."""
    # aiosqlite's own way to run a function in that thread (its methods use it), unannotated
    return cast(T, await conn._execute(fn, conn._conn, **kwargs))  # type: ignore[no-untyped-call]


def _write_and_commit(
    conn: sqlite3.Connection, *, begun: bool,
    updates: list[Sequence[Any]], inserts: list[Sequence[Any]], events: list[Sequence[Any]],
) -> None:  # fmt: skip
    """In the connection's thread: a transaction's staged writes, and its commit."""
    try:
        if not begun:
            conn.execute("BEGIN IMMEDIATE")
        # updates first: a job that finishes frees its key for a job inserted in the same batch
        if updates:
            conn.executemany(UPDATE_JOB, updates)
        if inserts:
            conn.executemany(INSERT_JOB, inserts)
        if events:
            conn.executemany(INSERT_EVENT, events)
        conn.commit()
    except BaseException:
        if conn.in_transaction:
            conn.rollback()
        raise


@dataclass(frozen=True, slots=True)
class IdempotencyClaim:
    """An ``Idempotency-Key`` header and a digest of the request it came with."""

    key: str
    request: str
    at: float  # epoch seconds: when the request came
    ttl_s: float  # how long the key answers with the same jobs


async def _idempotent_replay(batch: Batch, claim: IdempotencyClaim) -> list[Job] | None:
    """The jobs an earlier request under ``claim.key`` created, if it is still remembered."""
    rows = await batch.execute(SELECT_IDEMPOTENCY, (claim.key,))
    if not rows or rows[0][2] <= claim.at - claim.ttl_s:
        return None
    if rows[0][0] != claim.request:
        raise IdempotencyKeyReused(claim.key)
    jobs = [await batch.get(job_id) for job_id in orjson.loads(rows[0][1])]
    found = [job for job in jobs if job is not None]
    return found or None  # pruned meanwhile: the request is new again


# Runs first in the transaction that stores new jobs: it may write along with them, or refuse by
# raising a ServiceError, and then no job is stored.
Guard = Callable[[Batch], Awaitable[None]]


@dataclass
class _Pending:
    operation: Callable[[Batch], Awaitable[Any]]
    future: asyncio.Future[Any] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )


class Database:
    """The job store. ``on_commit`` receives the events of each transaction, in id order."""

    def __init__(
        self,
        path: str,
        *,
        on_commit: Callable[[list[Event]], None],
        clock: Callable[[], float] = time.time,
        max_log_lines: int = DEFAULT_MAX_LOG_LINES,
    ) -> None:
        self.path = path
        self._on_commit = on_commit
        self._clock = clock  # stamps the events: epoch seconds
        self._max_log_lines = max_log_lines  # kept per job: the newest
        self._writer: aiosqlite.Connection | None = None
        self._reader: aiosqlite.Connection | None = None
        self._checkpointer: aiosqlite.Connection | None = None
        self._pending: asyncio.Queue[_Pending] = asyncio.Queue()
        self._loop_task: asyncio.Task[None] | None = None
        self._checkpoint_task: asyncio.Task[None] | None = None
        self._written_since_checkpoint = False
        self._cache: dict[str, Job] = {}
        # the jobs of a commit under way: SQLite may show them to readers before the writer
        # has updated the cache, so reads of them go to the database meanwhile
        self._committing: frozenset[str] = frozenset()
        self._next_event_id = 1
        self._lock_fd: int | None = None
        self._file_stat: os.stat_result | None = None
        self._journal = StartJournal(path + ".started")
        self.stats = JobStats()  # as of the last commit, like last_event_id

    async def __aenter__(self) -> Database:
        await self.open()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def open(self) -> None:
        """Take the database for this service alone, migrate it, start the writer.

        Raises StoreUnavailable when another service holds it.
        """
        self._lock_fd = lock_database(self.path)
        try:
            self._writer = await _connect(self.path)
            self._file_stat = os.stat(self.path)  # the file it opened, to see it replaced
            await _migrate(self._writer)
            rows = await self._writer.execute_fetchall(LAST_EVENT_ID)
            self._next_event_id = int(next(iter(rows))[0]) + 1
            await self._seed_stats(self._writer)
            # the WAL is copied into the database by a connection of its own (see _checkpoints)
            await self._writer.execute("PRAGMA wal_autocheckpoint = 0")
            self._reader = await _connect(self.path)
            self._checkpointer = await _connect(self.path)
        except BaseException:
            await self.close()
            raise
        loop = asyncio.get_running_loop()
        self._loop_task = loop.create_task(self._write_loop())
        self._checkpoint_task = loop.create_task(self._checkpoints(self._checkpointer))

    async def _seed_stats(self, conn: aiosqlite.Connection) -> None:
        counts = await conn.execute_fetchall(COUNT_JOBS)
        since = window_start(self._clock())
        finished = await conn.execute_fetchall(COUNT_FINISHED, (BUCKET_S, since))
        self.stats.seed(
            [(row[0], row[1], row[2]) for row in counts],
            [(row[0], row[1], row[2]) for row in finished],
        )

    async def close(self) -> None:
        """Finish the writes already asked for, then close both connections; idempotent."""
        if self._loop_task is not None:
            await self._pending.join()
            self._loop_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._loop_task
            self._loop_task = None
        if self._checkpoint_task is not None:
            self._checkpoint_task.cancel()
            await asyncio.gather(self._checkpoint_task, return_exceptions=True)
            self._checkpoint_task = None
        # the writer last: the last connection to close copies the WAL in
        for conn in (self._reader, self._checkpointer, self._writer):
            if conn is not None:
                await conn.close()
        self._reader = self._checkpointer = self._writer = None
        self._cache.clear()
        self._journal.close()
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # releases the lock
            self._lock_fd = None

    @property
    def last_event_id(self) -> int:
        """The id of the newest committed event (0 when there is none)."""
        return self._next_event_id - 1

    # -- writes -----------------------------------------------------------------------------

    def transact_soon(self, operation: Callable[[Batch], Awaitable[T]]) -> asyncio.Future[T]:
        """Queue ``operation`` for the next group-committed transaction, in call order.

        The future resolves once it is committed (or with the operation's own error).
        """
        if self._loop_task is None:
            raise RuntimeError("the database is not open")
        pending = _Pending(operation)
        self._pending.put_nowait(pending)
        return pending.future

    async def transact(self, operation: Callable[[Batch], Awaitable[T]]) -> T:
        """Run ``operation`` inside the next group-committed transaction; return once committed."""
        # shielded: a caller that goes away (a client hanging up) does not undo a queued write
        return await asyncio.shield(self.transact_soon(operation))

    async def insert(self, *jobs: Job, guard: Guard | None = None) -> None:
        """Store new jobs, all in one transaction; ``guard`` runs first in it (see Guard)."""
        await self.submit(jobs, guard=guard)

    async def submit(
        self,
        jobs: Sequence[Job],
        idempotency: IdempotencyClaim | None = None,
        *,
        guard: Guard | None = None,
    ) -> list[tuple[Job, bool]]:
        """``submit_soon``'s jobs, once committed (shielded, as ``transact``)."""
        return await asyncio.shield(self.submit_soon(jobs, idempotency, guard=guard))

    def submit_soon(
        self,
        jobs: Sequence[Job],
        idempotency: IdempotencyClaim | None = None,
        *,
        guard: Guard | None = None,
    ) -> asyncio.Future[list[tuple[Job, bool]]]:
        """Store new jobs in one transaction; the future gives each with whether it was created.

        A job whose ``key`` an unfinished job holds is not stored: that job stands in for it.
        With ``idempotency``, a request seen under the same key within its time to live gets
        the jobs it created back instead (IdempotencyKeyReused if the request differs).
        Operations run one at a time in the writer, so racing submits cannot both create.
        ``guard`` runs first in the transaction (see Guard).
        """

        async def operation(batch: Batch) -> list[tuple[Job, bool]]:
            if guard is not None:
                await guard(batch)
            if idempotency is not None:
                earlier = await _idempotent_replay(batch, idempotency)
                if earlier is not None:
                    return [(job, False) for job in earlier]
            outcome: list[tuple[Job, bool]] = []
            for job in jobs:
                holder = None if job.key is None else await batch.holder_of(job.key)
                if holder is None:
                    batch.put(job, new=True)
                outcome.append((job, True) if holder is None else (holder, False))
            if idempotency is not None:
                await batch.execute(
                    UPSERT_IDEMPOTENCY,
                    (idempotency.key, idempotency.request,
                     _dumps([job.id for job, _ in outcome]), idempotency.at),
                )  # fmt: skip
            return outcome

        return self.transact_soon(operation)

    async def add_schedule(self, schedule: Schedule) -> None:
        """Store a new schedule; ScheduleConflict if its id is taken."""

        async def operation(batch: Batch) -> None:
            if not await batch.change(INSERT_SCHEDULE, schedule_to_row(schedule)):
                raise ScheduleConflict(schedule.id, "a schedule with this id exists")

        await self.transact(operation)

    async def remove_schedule(self, schedule_id: str) -> None:
        """Delete a schedule (the jobs it made stay); ScheduleNotFound if there is none."""

        async def operation(batch: Batch) -> None:
            if not await batch.change(DELETE_SCHEDULE, (schedule_id,)):
                raise ScheduleNotFound(schedule_id)

        await self.transact(operation)

    async def set_paused(
        self, schedule: Schedule, *, paused: bool, resumed_at: float | None
    ) -> None:
        """Store whether ``schedule`` is paused, and its latest resume; ScheduleNotFound if it
        is gone (or made anew under its id)."""
        params = (int(paused), resumed_at, schedule.id, schedule.created_at)

        async def operation(batch: Batch) -> None:
            if not await batch.change(PAUSE_SCHEDULE, params):
                raise ScheduleNotFound(schedule.id)

        await self.transact(operation)

    async def replace_schedules(self, put: Sequence[Schedule], remove: Sequence[str]) -> None:
        """Store ``put`` over any schedules of the same ids and delete ``remove``, together."""

        async def operation(batch: Batch) -> None:
            for schedule in put:
                await batch.change(REPLACE_SCHEDULE, schedule_to_row(schedule))
            for schedule_id in remove:
                await batch.change(DELETE_SCHEDULE, (schedule_id,))

        await self.transact(operation)

    def start_soon(
        self, job_id: str, attempt: int, change: Callable[[Job], Job | None]
    ) -> asyncio.Future[Job | None]:
        """``update_soon`` for a job about to run its ``attempt``: safe to run before it commits.

        The start is journaled first: should the service die before the row is committed,
        ``started_unrecorded()`` tells the next start that the job did run.
        """
        self._journal.append(job_id, attempt)
        future = self.update_soon(job_id, change)
        future.add_done_callback(lambda _: self._journal.recorded())
        return future

    def started_unrecorded(self) -> list[tuple[str, int]]:
        """(job id, attempt) of the starts journaled since the last clean stop; one whose row
        never got committed shows as a queued job one attempt behind."""
        return self._journal.read()

    def forget_started(self) -> None:
        """Empty the journal once its starts are dealt with (at start, before any job runs)."""
        self._journal.clear()

    def update_soon(
        self, job_id: str, change: Callable[[Job], Job | None], *, kind: str = "state"
    ) -> asyncio.Future[Job | None]:
        """Queue ``change`` of a job now, in call order; see ``update``."""

        async def operation(batch: Batch) -> Job | None:
            job = await batch.get(job_id)
            if job is None:
                raise JobNotFound(job_id)
            changed = change(job)
            if changed is not None and changed.key is not None and job.state not in ACTIVE:
                holder = await batch.holder_of(changed.key)  # a finished job run again
                if holder is not None and changed.state in ACTIVE:
                    raise KeyTaken(job.id, changed.key, holder.id)
            if changed is not None:
                batch.put(changed, kind=kind)
            return changed

        return self.transact_soon(operation)

    async def update(
        self, job_id: str, change: Callable[[Job], Job | None], *, kind: str = "state"
    ) -> Job | None:
        """Apply ``change`` to the job as stored and write the result, with a ``kind`` event.

        ``change`` is pure: it returns the new job, or None to leave the job as it is (then
        None is returned). Raises JobNotFound for an unknown id.
        """
        return await asyncio.shield(self.update_soon(job_id, change, kind=kind))

    def append_logs_soon(
        self, job_id: str, entries: Sequence[LogEntry], dropped: int = 0
    ) -> asyncio.Future[None]:
        """Queue a batch of a job's output (``dropped``: lines lost before it), in call order
        with the job's other writes; the job keeps its newest ``max_log_lines`` lines."""

        async def operation(batch: Batch) -> None:
            job = await batch.get(job_id)
            if job is None:
                raise JobNotFound(job_id)
            await batch.add_logs(job, entries, dropped, self._max_log_lines)

        return self.transact_soon(operation)

    async def delete_logs(self, job_ids: Sequence[str]) -> None:
        """Forget the logs of these jobs, in one transaction (inside another one, use
        ``Batch.delete_logs``)."""

        async def operation(batch: Batch) -> None:
            await batch.delete_logs(job_ids)

        await self.transact(operation)

    async def update_all(self, state: JobState, change: Callable[[Job], Job]) -> list[Job]:
        """Apply ``change`` to every job in ``state``, in submission order (used at start)."""

        async def operation(batch: Batch) -> list[Job]:
            jobs = [await batch.get(job_id) for job_id in await batch.ids_in_state(state)]
            changed = [change(job) for job in jobs if job is not None and job.state is state]
            for job in changed:  # staged only once every change succeeded
                batch.put(job)
            return changed

        return await self.transact(operation)

    async def prune(self, finished_before: float, limit: int) -> int:
        """Delete up to ``limit`` jobs that finished before ``finished_before``, with their
        events and logs; return how many. One short transaction: call again while it returns
        ``limit``."""

        async def operation(batch: Batch) -> int:
            rows = await batch.execute(SELECT_EXPIRED, (finished_before, limit))
            # a job changed in this same transaction (run again on request) stays
            gone = [row for row in rows if row[0] not in batch.rows]
            if gone:
                ids = [row[0] for row in gone]
                marks = ", ".join("?" * len(ids))
                await batch.delete_logs(ids)
                await batch.execute(f"DELETE FROM events WHERE job_id IN ({marks})", ids)
                await batch.execute(f"DELETE FROM jobs WHERE id IN ({marks})", ids)
                removed = Counter((row[1], row[2]) for row in gone)
                # one event says what went, so a client keeping counts from events follows
                batch.note("pruned", {"removed": [
                    {"queue": queue, "state": state, "jobs": n}
                    for (queue, state), n in sorted(removed.items())
                ]})  # fmt: skip
            # and the notes of earlier sweeps go like the jobs they told of
            await batch.execute(DELETE_OLD_NOTES, (NO_JOB, finished_before))
            return len(rows)

        return await self.transact(operation)

    async def prune_idempotency(self, created_before: float) -> None:
        """Forget the Idempotency-Keys of requests made before ``created_before``."""

        async def operation(batch: Batch) -> None:
            await batch.execute(DELETE_EXPIRED_IDEMPOTENCY, (created_before,))

        await self.transact(operation)

    async def _checkpoints(self, conn: aiosqlite.Connection) -> None:
        """Copy the WAL into the database now and then, beside the writer, never in its way.

        SQLite's own checkpoints run in the commit that fills the WAL past 1,000 pages: that
        commit (a submit, say) then waits for the copy and its fsync, tens of milliseconds
        behind a large prune. A PASSIVE checkpoint on another connection copies what it can
        while the writer goes on appending; it takes no lock a writer or a reader waits on.
        """
        failing = False
        while True:
            await asyncio.sleep(CHECKPOINT_EVERY_S)
            if not self._written_since_checkpoint:
                continue
            self._written_since_checkpoint = False
            try:
                await conn.execute("PRAGMA wal_checkpoint(PASSIVE)")
                failing = False
            except Exception as exc:  # the writer reports what is wrong with the store
                if not failing:
                    log.warning("a checkpoint of the database failed: %s", exc)
                failing = True

    async def _write_loop(self) -> None:
        while True:
            pendings = [await self._pending.get()]
            while len(pendings) < MAX_OPERATIONS_PER_COMMIT and not self._pending.empty():
                pendings.append(self._pending.get_nowait())
            try:
                await self._commit_isolating(pendings)
            finally:
                for _ in pendings:
                    self._pending.task_done()

    async def _commit_isolating(self, pendings: list[_Pending]) -> None:
        try:
            await self._commit(pendings)
        except Exception as exc:
            if len(pendings) == 1:
                log.error("a database write failed: %s", exc)
                if not pendings[0].future.done():
                    # the database's own failure (disk full, locked, read-only): the caller
                    # is told the store is unavailable; a broken constraint is a bug, as it was
                    failed = StoreFailed(str(exc)) if isinstance(exc, OPERATIONAL) else exc
                    pendings[0].future.set_exception(failed)
                return
            # one bad write must not sink the others: retry each in its own transaction
            for pending in pendings:
                await self._commit_isolating([pending])

    async def _commit(self, pendings: list[_Pending]) -> None:
        conn = self._connection(self._writer)
        batch = Batch(conn, self._cache, self._next_event_id, self._clock)
        outcomes: list[tuple[bool, Any]] = []
        self._check_file()  # a stat: microseconds, against acknowledging what would be lost
        try:
            for pending in pendings:
                try:
                    outcomes.append((True, await pending.operation(batch)))
                except ServiceError as exc:  # the operation's own refusal; it staged nothing
                    outcomes.append((False, exc))
            self._committing = frozenset(batch.rows)
            await batch.commit()
        except BaseException:
            self._committing = frozenset()
            with contextlib.suppress(Exception):
                await conn.rollback()
            raise
        self._next_event_id = batch.next_event_id
        self._written_since_checkpoint = True
        self.stats.apply(batch.events)
        for job_id, job in batch.rows.items():
            if job.state is JobState.RUNNING or (
                job.state in ACTIVE and len(self._cache) < CACHE_SIZE
            ):
                self._cache[job_id] = job
            else:
                self._cache.pop(job_id, None)
        self._committing = frozenset()
        for pending, (ok, value) in zip(pendings, outcomes, strict=True):
            if not pending.future.done():
                if ok:
                    pending.future.set_result(value)
                else:
                    pending.future.set_exception(value)
        if batch.events:
            try:
                self._on_commit(batch.events)
            except Exception:  # committed is committed: a failing listener must not redo it
                log.exception("the commit listener failed")

    # -- reads ------------------------------------------------------------------------------

    async def get_job(self, job_id: str) -> Job:
        # as committed: the same as a read, minus the read (but for a commit under way)
        cached = None if job_id in self._committing else self._cache.get(job_id)
        if cached is not None:
            return cached
        rows = await self._connection(self._reader).execute_fetchall(SELECT_JOB, (job_id,))
        if not rows:
            raise JobNotFound(job_id)
        return row_to_job(next(iter(rows)))

    async def list_jobs(
        self,
        *,
        states: Sequence[JobState] = (),
        task: str | None = None,
        queue: str | None = None,
        text: str | None = None,
        schedule_id: str | None = None,
        limit: int = 50,
        before: int | None = None,
        max_bytes: int = MAX_PAGE_BYTES,
    ) -> tuple[list[Job], int | None]:
        """Jobs newest first; returns them and the cursor of the next page (None at the end).

        At most ``limit`` jobs, fewer when their stored JSON would pass ``max_bytes`` (one job
        at least).

        ``text`` matches jobs whose arguments (as JSON) hold it, ignoring ASCII case;
        ``schedule_id`` the jobs that schedule's ticks made.
        """
        where: list[str] = []
        params: list[Any] = []
        if states:
            where.append(f"state IN ({', '.join('?' * len(states))})")
            params.extend(s.value for s in states)
        if task is not None:
            where.append("task = ?")
            params.append(task)
        if schedule_id is not None:
            where.append("schedule_id = ?")
            params.append(schedule_id)
        if queue is not None:
            where.append(f"{QUEUE_OF_JOB} = ?")
            params.append(queue)
        if text:
            where.append("instr(lower(args || ' ' || kwargs), lower(?)) > 0")
            params.append(text)
        if before is not None:
            where.append("seq < ?")
            params.append(before)
        conn = self._connection(self._reader)
        matching = " WHERE " + " AND ".join(where) if where else ""
        # first each job's place and size, then only the jobs that fit in ``max_bytes``: a page
        # of jobs with megabytes of arguments or errors each is cut short, not held in memory
        sizes = list(
            await conn.execute_fetchall(
                f"SELECT seq, {_JOB_BYTES} FROM jobs{matching} ORDER BY seq DESC LIMIT ?",
                (*params, limit + 1),
            )
        )
        taken: list[int] = []
        total = 0
        for seq, size in sizes[:limit]:
            if taken and total + size > max_bytes:
                break
            taken.append(seq)
            total += size
        more = len(taken) < len(sizes)
        if not taken:
            return [], None
        marks = ", ".join("?" * len(taken))
        rows = await conn.execute_fetchall(
            f"SELECT {_JOB_COLUMNS} FROM jobs WHERE seq IN ({marks}) ORDER BY seq DESC", taken
        )
        return [row_to_job(r) for r in rows], taken[-1] if more else None

    async def events_after(
        self, after_id: int, *, job_id: str | None = None, limit: int = 500
    ) -> list[Event]:
        conn = self._connection(self._reader)
        if job_id is None:
            rows = await conn.execute_fetchall(SELECT_EVENTS_AFTER, (after_id, limit))
        else:
            rows = await conn.execute_fetchall(SELECT_JOB_EVENTS_AFTER, (job_id, after_id, limit))
        return [row_to_event(r) for r in rows]

    async def job_logs(self, job_id: str, *, tail: int | None = None) -> tuple[list[LogEntry], int]:
        """The job's kept log entries, oldest first (only the last ``tail`` of them if given),
        and how many lines it wrote that are not kept. Raises JobNotFound."""
        await self.get_job(job_id)
        conn = self._connection(self._reader)
        counts = await conn.execute_fetchall(SELECT_LOG_DROPPED, (job_id,))
        dropped = int(next(iter(counts))[0]) if counts else 0
        limit = self._max_log_lines if tail is None else min(tail, self._max_log_lines)
        rows = await conn.execute_fetchall(SELECT_LOGS, (job_id, limit))
        return [LogEntry(*row) for row in reversed(list(rows))], dropped

    async def ids_in_state(self, state: JobState) -> list[str]:
        rows = await self._connection(self._reader).execute_fetchall(
            SELECT_IDS_IN_STATE, (state.value,)
        )
        return [row[0] for row in rows]

    async def queued(self) -> list[tuple[str, str, str, int]]:
        """(id, task, queue, priority) of every queued job, in submission order."""
        rows = await self._connection(self._reader).execute_fetchall(SELECT_QUEUED)
        return [(row[0], row[1], row[2], row[3]) for row in rows]

    async def scheduled(self) -> list[tuple[float, str]]:
        """(scheduled_at, id) of every scheduled job."""
        rows = await self._connection(self._reader).execute_fetchall(SELECT_SCHEDULED)
        return [(row[1], row[0]) for row in rows]

    async def schedules(self) -> list[Schedule]:
        """Every schedule, oldest first."""
        rows = await self._connection(self._reader).execute_fetchall(SELECT_SCHEDULES)
        return [row_to_schedule(row) for row in rows]

    async def ping(self) -> None:
        """Raise unless the database answers a query."""
        await self._connection(self._reader).execute_fetchall("SELECT 1")

    async def check_writable(self) -> None:
        """StoreFailed unless a write reaches the database file the service opened: one row,
        written through the writer as any job's change is (a full disk, a lock held by another
        process, a file made read-only all fail it), to a file that is still there."""

        async def operation(batch: Batch) -> None:
            await batch.execute(WRITE_READINESS, (self._clock(),))

        await self.transact(operation)

    def _check_file(self) -> None:
        """StoreFailed if the database file is no longer the one opened, or no longer
        writable: SQLite would go on writing through the descriptors it opened, to a deleted
        file (all of it gone at the next start) or to one the next start could not write."""
        try:
            now = os.stat(self.path)
        except OSError:
            now = None
        if now is None or self._file_stat is None or not os.path.samestat(now, self._file_stat):
            raise StoreFailed(f"the database file {self.path!r} was deleted or replaced")
        # no write bit for anyone (chmod a-w): the mode, since access() says yes to root
        if not now.st_mode & 0o222:
            raise StoreFailed(
                f"the database file {self.path!r} was made read-only "
                f"(mode {stat.S_IMODE(now.st_mode):04o})"
            )

    @staticmethod
    def _connection(conn: aiosqlite.Connection | None) -> aiosqlite.Connection:
        if conn is None:
            raise RuntimeError("the database is not open")
        return conn


def check_database(path: str) -> None:
    """Fail early, with a clear StoreUnavailable, if the service could not use ``path``."""
    fd = lock_database(path)
    try:
        conn = sqlite3.connect(path)
        try:
            conn.execute("PRAGMA schema_version")  # fails on a file that is not a database
        finally:
            conn.close()
    except sqlite3.Error as exc:
        raise StoreUnavailable(path, str(exc)) from None
    finally:
        os.close(fd)


async def _connect(path: str) -> aiosqlite.Connection:
    # isolation_level=None: we issue BEGIN IMMEDIATE ourselves (a deferred read-then-write
    # transaction can fail with SQLITE_BUSY_SNAPSHOT despite busy_timeout)
    conn = await aiosqlite.connect(path, isolation_level=None)
    try:
        for pragma in PRAGMAS:
            await conn.execute(pragma)
    except BaseException:
        await conn.close()
        raise
    return conn


async def _migrate(conn: aiosqlite.Connection) -> None:
    rows = await conn.execute_fetchall("PRAGMA user_version")
    version = int(next(iter(rows))[0])
    if version > len(MIGRATIONS):
        raise RuntimeError(
            f"the database is at schema version {version}, newer than this service "
            f"({len(MIGRATIONS)}); upgrade the service"
        )
    for number, script in enumerate(MIGRATIONS[version:], start=version + 1):
        await conn.executescript(
            f"BEGIN IMMEDIATE; {script}; PRAGMA user_version = {number}; COMMIT;"
        )
