"""The SQLite backend: aiosqlite, one file, one service.

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
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar, cast

import aiosqlite
import orjson

from ..cron import Schedule
from ..errors import (
    JobNotFound,
    StoreFailed,
    StoreUnavailable,
    WorkflowNotFound,
)
from ..jobs import ACTIVE, Event, Job, JobState
from ..logs import LogEntry
from ..settings import DEFAULT_MAX_LOG_LINES
from ..stats import BUCKET_S, window_start
from ..storefiles import StartJournal, lock_database
from ..workflows import Workflow
from .base import MAX_PAGE_BYTES, IdempotencyClaim, fit_page
from .groupcommit import (
    NO_JOB,
    GroupCommitStore,
    Pending,
    StagedTransaction,
    run_operations,
    settle,
)
from .rows import (
    JOB_COLUMNS,
    SCHEDULE_COLUMNS,
    dumps,
    job_to_row,
    row_to_event,
    row_to_job,
    row_to_schedule,
    schedule_to_row,
    update_params,
)
from .sqlite_schema import MIGRATIONS, PRAGMAS

T = TypeVar("T")

log = logging.getLogger("conveyor.db")

SELECT_JOB = f"SELECT {JOB_COLUMNS} FROM jobs WHERE id = ?"
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
    "schedule_id, depends_on, on_dependency_failure, waiting_on, input, workflow_id) "
    "VALUES (" + ", ".join(["?"] * 24) + ")"
)
INSERT_WORKFLOW = "INSERT INTO workflows (id, created_at, output) VALUES (?, ?, ?)"
SELECT_WORKFLOW = "SELECT created_at, output FROM workflows WHERE id = ?"
SELECT_WORKFLOW_JOBS = f"SELECT {JOB_COLUMNS} FROM jobs WHERE workflow_id = ? ORDER BY seq"
SELECT_WORKFLOW_EVENTS_AFTER = (
    "SELECT e.id, e.job_id, e.kind, e.at, e.data FROM events e JOIN jobs j ON j.id = e.job_id "
    "WHERE j.workflow_id = ? AND e.id > ? ORDER BY e.id LIMIT ?"
)
DELETE_EMPTY_WORKFLOWS = (
    "DELETE FROM workflows WHERE NOT EXISTS (SELECT 1 FROM jobs WHERE workflow_id = workflows.id)"
)
STORE_RATE_LIMIT = "INSERT OR REPLACE INTO rate_limits (key, next_at) VALUES (?, ?)"
SELECT_RATE_LIMITS = "SELECT key, next_at FROM rate_limits"
DELETE_DEPENDENTS = "DELETE FROM dependencies WHERE depends_on = ?"
SELECT_AWAITED = "SELECT DISTINCT depends_on FROM dependencies"
# a step waiting again may still have rows for the dependencies that had not finished
INSERT_DEPENDENCY = "INSERT OR IGNORE INTO dependencies (job_id, depends_on) VALUES (?, ?)"
SELECT_DEPENDENTS = "SELECT job_id FROM dependencies WHERE depends_on = ?"
UPDATE_JOB = (
    "UPDATE jobs SET args = ?, state = ?, attempt = ?, interruptions = ?, progress = ?, "
    "result = ?, error = ?, started_at = ?, finished_at = ?, scheduled_at = ?, retries = ?, "
    "attempts = ?, waiting_on = ? WHERE id = ?"
)
# jobs stored before queues and priorities existed have neither in their options
QUEUE_OF_JOB = "coalesce(json_extract(options, '$.queue'), 'default')"
# what the ready queue needs of each queued job, oldest first
SELECT_QUEUED = (
    f"SELECT id, task, {QUEUE_OF_JOB}, coalesce(json_extract(options, '$.priority'), 0), "
    "json_extract(options, '$.rate_limit') FROM jobs WHERE state = 'queued' ORDER BY seq"
)
SELECT_ACTIVE_WITH_KEY = (
    "SELECT id FROM jobs WHERE key = ? AND state IN ('waiting', 'scheduled', 'queued', 'running')"
)
SELECT_IDEMPOTENCY = "SELECT request, job_ids, created_at FROM idempotency WHERE key = ?"
UPSERT_IDEMPOTENCY = (
    "INSERT OR REPLACE INTO idempotency (key, request, job_ids, created_at) VALUES (?, ?, ?, ?)"
)
# a workflow's jobs go together, once the last of them has finished before the cutoff
SELECT_EXPIRED = (
    f"SELECT id, {QUEUE_OF_JOB}, state FROM jobs "
    "WHERE finished_at < ?1 AND +state IN ('succeeded', 'failed', 'canceled') "
    "AND (workflow_id IS NULL OR NOT EXISTS (SELECT 1 FROM jobs AS w "
    "WHERE w.workflow_id = jobs.workflow_id AND (w.finished_at IS NULL OR w.finished_at >= ?1))) "
    "ORDER BY finished_at LIMIT ?2"
)
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

_SCHEDULE_VALUES = ", ".join("?" * len(SCHEDULE_COLUMNS.split(",")))
SELECT_SCHEDULES = f"SELECT {SCHEDULE_COLUMNS} FROM schedules ORDER BY created_at, id"
INSERT_SCHEDULE = (
    f"INSERT OR IGNORE INTO schedules ({SCHEDULE_COLUMNS}) VALUES ({_SCHEDULE_VALUES})"
)
REPLACE_SCHEDULE = (
    f"INSERT OR REPLACE INTO schedules ({SCHEDULE_COLUMNS}) VALUES ({_SCHEDULE_VALUES})"
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

CHECKPOINT_EVERY_S = 0.5  # at most this long between two copies of the WAL into the database
CACHE_SIZE = 10_000  # unfinished jobs the writer keeps: a larger backlog is read back


class SqliteTransaction(StagedTransaction):
    """A transaction on the writer's connection; it begins at its first statement."""

    def __init__(
        self,
        conn: aiosqlite.Connection,
        cache: dict[str, Job],
        awaited: set[str],
        next_id: int,
        clock: Callable[[], float],
    ) -> None:
        super().__init__(next_id, clock)
        self._conn = conn
        self._awaited = awaited  # the jobs some stored job waits for, as last committed
        self.forgotten: list[str] = []  # of those, the ones that finished here
        # unfinished jobs as last committed (the writer sees every change, so an entry is
        # exact or absent): starting, updating or finishing one needs no read
        self._cache = cache
        self.begun = False  # BEGIN IMMEDIATE sent: at the first statement, or with the commit

    async def _open(self) -> aiosqlite.Connection:
        """The connection, inside this transaction. It begins at the first statement an
        operation runs, so a transaction that only writes what it staged (a plain submit, a
        start, a finish) makes a single trip to SQLite's thread: at the commit."""
        if not self.begun:
            await self._conn.execute("BEGIN IMMEDIATE")
            self.begun = True
        return self._conn

    async def execute(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        """Run a statement inside this transaction (on tables the batch does not stage)."""
        return list(await (await self._open()).execute_fetchall(sql, params))

    async def change(self, sql: str, params: Sequence[Any]) -> int:
        """Run a statement in this transaction now; how many rows it changed."""
        async with (await self._open()).execute(sql, params) as cursor:
            return cursor.rowcount

    async def _read_job(self, job_id: str) -> Job | None:
        cached = self._cache.get(job_id)
        if cached is not None:
            return cached
        rows = await self.execute(SELECT_JOB, (job_id,))
        return row_to_job(rows[0]) if rows else None

    async def _stored_ids_in_state(self, state: JobState) -> list[str]:
        return [row[0] for row in await self.execute(SELECT_IDS_IN_STATE, (state.value,))]

    async def _workflow_jobs(self, workflow_id: str) -> list[Job]:
        return [row_to_job(row) for row in await self.execute(SELECT_WORKFLOW_JOBS, (workflow_id,))]

    def _may_have_dependents(self, job_id: str) -> bool:
        return job_id in self._awaited

    async def _stored_dependents(self, job_id: str) -> list[str]:
        return [row[0] for row in await self.execute(SELECT_DEPENDENTS, (job_id,))]

    async def _forget_dependents(self, job_id: str) -> None:
        await self.execute(DELETE_DEPENDENTS, (job_id,))
        self.forgotten.append(job_id)

    async def _stored_holders(self, key: str) -> list[str]:
        return [row[0] for row in await self.execute(SELECT_ACTIVE_WITH_KEY, (key,))]

    async def claim_tick(self, schedule: Schedule, tick_at: float) -> bool:
        """Record ``tick_at`` as the schedule's latest fired tick; False, changing nothing, if
        that tick or a later one already fired, the schedule is paused (or was resumed after
        the tick) or is gone: a tick fires once, and never while paused."""
        params = (tick_at, schedule.id, schedule.created_at)
        return await self.change(CLAIM_TICK, params) == 1

    async def earlier_request(self, claim: IdempotencyClaim) -> tuple[str, list[str], float] | None:
        rows = await self.execute(SELECT_IDEMPOTENCY, (claim.key,))
        if not rows:
            return None
        return rows[0][0], orjson.loads(rows[0][1]), rows[0][2]

    async def remember_request(self, claim: IdempotencyClaim, job_ids: list[str]) -> None:
        params = (claim.key, claim.request, dumps(job_ids), claim.at)
        await self.execute(UPSERT_IDEMPOTENCY, params)

    async def add_logs(
        self, job: Job, entries: Sequence[LogEntry], dropped: int, keep: int
    ) -> None:
        entries = [dataclasses.replace(e, attempt=job.attempt) for e in entries]
        event = self.log_event(job, entries, dropped)
        rows = [
            (job.id, event.id, e.attempt, e.at, e.stream, e.level, e.logger, e.text)
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
        for sql in DELETE_LOGS:
            await (await self._open()).executemany(sql, [(job_id,) for job_id in job_ids])

    async def store_rates(self, next_at: Mapping[str, float]) -> None:
        await (await self._open()).executemany(STORE_RATE_LIMIT, list(next_at.items()))

    async def insert_workflow(
        self, workflow_id: str, created_at: float, output: dict[str, Any]
    ) -> None:
        await self.execute(INSERT_WORKFLOW, (workflow_id, created_at, dumps(output)))

    async def insert_schedule(self, schedule: Schedule) -> bool:
        return await self.change(INSERT_SCHEDULE, schedule_to_row(schedule)) == 1

    async def replace_schedule(self, schedule: Schedule) -> None:
        await self.change(REPLACE_SCHEDULE, schedule_to_row(schedule))

    async def delete_schedule(self, schedule_id: str) -> bool:
        return await self.change(DELETE_SCHEDULE, (schedule_id,)) == 1

    async def pause_schedule(
        self, schedule: Schedule, *, paused: bool, resumed_at: float | None
    ) -> bool:
        params = (int(paused), resumed_at, schedule.id, schedule.created_at)
        return await self.change(PAUSE_SCHEDULE, params) == 1

    async def expired(self, finished_before: float, limit: int) -> list[tuple[str, str, str]]:
        rows = await self.execute(SELECT_EXPIRED, (finished_before, limit))
        return [(row[0], row[1], row[2]) for row in rows]

    async def delete_jobs(self, job_ids: Sequence[str]) -> None:
        marks = ", ".join("?" * len(job_ids))
        await self.execute(f"DELETE FROM events WHERE job_id IN ({marks})", job_ids)
        await self.execute(f"DELETE FROM dependencies WHERE job_id IN ({marks})", job_ids)
        await self.execute(f"DELETE FROM jobs WHERE id IN ({marks})", job_ids)
        await self.execute(DELETE_EMPTY_WORKFLOWS)

    async def delete_notes(self, before: float) -> None:
        await self.execute(DELETE_OLD_NOTES, (NO_JOB, before))

    async def delete_requests(self, created_before: float) -> None:
        await self.execute(DELETE_EXPIRED_IDEMPOTENCY, (created_before,))

    async def write_readiness(self, at: float) -> None:
        await self.execute(WRITE_READINESS, (at,))

    async def commit(self) -> None:
        """Write what is staged and commit: one trip to SQLite's thread for all of it (each
        of aiosqlite's own calls is a trip: a queue, a thread's wake-up, and the loop's)."""
        inserted = [j for i, j in self.rows.items() if i in self.inserted]
        inserts = [job_to_row(j) for j in inserted]
        updates = [update_params(j) for i, j in self.rows.items() if i not in self.inserted]
        events = [(e.id, e.job_id, e.kind, e.at, dumps(e.data)) for e in self.events]
        await in_connection_thread(
            self._conn, _write_and_commit, begun=self.begun,
            updates=updates, inserts=inserts, events=events,
            dependencies=self.dependencies,
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
    dependencies: list[tuple[str, str]],
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
        if dependencies:
            conn.executemany(INSERT_DEPENDENCY, dependencies)
        if events:
            conn.executemany(INSERT_EVENT, events)
        conn.commit()
    except BaseException:
        if conn.in_transaction:
            conn.rollback()
        raise


class SqliteStore(GroupCommitStore[SqliteTransaction]):
    """The job store on one SQLite file, for this service alone. ``on_commit`` receives the
    events of each transaction, in id order."""

    def __init__(
        self,
        path: str,
        *,
        on_commit: Callable[[list[Event]], None],
        clock: Callable[[], float] = time.time,
        max_log_lines: int = DEFAULT_MAX_LOG_LINES,
    ) -> None:
        super().__init__(on_commit=on_commit, clock=clock, max_log_lines=max_log_lines)
        self.path = path
        self._writer: aiosqlite.Connection | None = None
        self._reader: aiosqlite.Connection | None = None
        self._checkpointer: aiosqlite.Connection | None = None
        self._checkpoint_task: asyncio.Task[None] | None = None
        self._written_since_checkpoint = False
        self._cache: dict[str, Job] = {}
        # the jobs some stored job waits for: this service alone writes, so the set is exact,
        # and a job that finishes looks for its dependents only if it is in it
        self._awaited: set[str] = set()
        # the jobs of a commit under way: SQLite may show them to readers before the writer
        # has updated the cache, so reads of them go to the database meanwhile
        self._committing: frozenset[str] = frozenset()
        self._next_event_id = 1
        self._lock_fd: int | None = None
        self._file_stat: os.stat_result | None = None
        self._journal = StartJournal(path + ".started")

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
            awaited = await self._writer.execute_fetchall(SELECT_AWAITED)
            self._awaited = {row[0] for row in awaited}
            # the WAL is copied into the database by a connection of its own (see _checkpoints)
            await self._writer.execute("PRAGMA wal_autocheckpoint = 0")
            self._reader = await _connect(self.path)
            self._checkpointer = await _connect(self.path)
        except BaseException:
            await self.close()
            raise
        self._start_writer()
        self._checkpoint_task = asyncio.get_running_loop().create_task(
            self._checkpoints(self._checkpointer)
        )

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
        await self._stop_writer()
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

    def _store_failure(self, exc: Exception) -> bool:
        return isinstance(exc, OPERATIONAL)

    async def _commit(self, pendings: list[Pending[SqliteTransaction]]) -> None:
        conn = self._connection(self._writer)
        batch = SqliteTransaction(
            conn, self._cache, self._awaited, self._next_event_id, self._clock
        )
        self._check_file()  # a stat: microseconds, against acknowledging what would be lost
        try:
            outcomes = await run_operations(batch, pendings)
            self._committing = frozenset(batch.rows)
            await batch.commit()
        except BaseException:
            self._committing = frozenset()
            with contextlib.suppress(Exception):
                await conn.rollback()
            raise
        self._next_event_id = batch.next_event_id
        self._written_since_checkpoint = True
        self._awaited.difference_update(batch.forgotten)
        self._awaited.update(other for _, other in batch.dependencies)
        for job_id, job in batch.rows.items():
            if job.state is JobState.RUNNING or (
                job.state in ACTIVE and len(self._cache) < CACHE_SIZE
            ):
                self._cache[job_id] = job
            else:
                self._cache.pop(job_id, None)
        self._committing = frozenset()
        settle(pendings, outcomes)
        self._published(batch.events)

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
        taken, more = fit_page(sizes, limit, max_bytes)
        if not taken:
            return [], None
        marks = ", ".join("?" * len(taken))
        rows = await conn.execute_fetchall(
            f"SELECT {JOB_COLUMNS} FROM jobs WHERE seq IN ({marks}) ORDER BY seq DESC", taken
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

    async def rate_limits(self) -> dict[str, float]:
        rows = await self._connection(self._reader).execute_fetchall(SELECT_RATE_LIMITS)
        return {row[0]: row[1] for row in rows}

    async def workflow(self, workflow_id: str) -> Workflow:
        conn = self._connection(self._reader)
        found = list(await conn.execute_fetchall(SELECT_WORKFLOW, (workflow_id,)))
        if not found:
            raise WorkflowNotFound(workflow_id)
        rows = await conn.execute_fetchall(SELECT_WORKFLOW_JOBS, (workflow_id,))
        jobs = [row_to_job(row) for row in rows]
        return Workflow(workflow_id, found[0][0], orjson.loads(found[0][1]), jobs)

    async def workflow_events_after(
        self, workflow_id: str, after_id: int, *, limit: int = 500
    ) -> list[Event]:
        conn = self._connection(self._reader)
        params = (workflow_id, after_id, limit)
        return [
            row_to_event(r)
            for r in await conn.execute_fetchall(SELECT_WORKFLOW_EVENTS_AFTER, params)
        ]

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

    async def queued(self) -> list[tuple[str, str, str, int, str | None]]:
        """(id, task, queue, priority, rate limit) of every queued job, in submission order."""
        rows = await self._connection(self._reader).execute_fetchall(SELECT_QUEUED)
        return [(row[0], row[1], row[2], row[3], row[4]) for row in rows]

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
