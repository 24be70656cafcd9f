"""The PostgreSQL backend: psycopg 3, for one or several services sharing one database.

Writes go through one writer connection that groups whatever arrives together into one
transaction, as SQLite's does. What SQLite gets from being one process alone, PostgreSQL gets
from locks, since other services write beside this one:

- a job is read ``FOR UPDATE``: a change is made to the job as it is, never over another's;
- a ``key`` or an ``Idempotency-Key`` is looked up under an advisory lock of its own, so two
  services cannot both find it free;
- a transaction's events take their ids from ``event_ids`` at its commit and hold that row
  until it is committed: ids are committed in their order, so a stream that has read id N never
  later finds a smaller one.

Reads go through a small pool of connections beside the writer.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import select
import socket
import time
import uuid
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import orjson
import psycopg
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from ..cron import Schedule
from ..errors import JobNotFound, StoreFailed, StoreUnavailable, WorkflowNotFound
from ..jobs import Event, Job, JobState, transition
from ..logs import LogEntry
from ..rates import Limits, gap_s, spacing
from ..settings import DEFAULT_MAX_LOG_LINES
from ..stats import BUCKET_S, window_start
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
from .postgres_schema import CREATE_VERSION_TABLE, MIGRATION_LOCK, MIGRATIONS
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
from .urls import shown

CONNECT_TIMEOUT_S = 10
# TCP keepalives: a connection whose server or network went away is known dead within ~25 s
CONNECTION_OPTIONS: dict[str, Any] = {
    "connect_timeout": CONNECT_TIMEOUT_S,
    "keepalives": 1, "keepalives_idle": 10, "keepalives_interval": 5, "keepalives_count": 3,
}  # fmt: skip
log = logging.getLogger("conveyor.db")

READERS = 4  # connections of the read pool, beside the writer's

SELECT_JOB = f"SELECT {JOB_COLUMNS} FROM jobs WHERE id = %s"
LOCK_JOB = SELECT_JOB + " FOR UPDATE"
INSERT_JOB = (
    "INSERT INTO jobs (id, task, args, kwargs, state, attempt, interruptions, progress, result, "
    "error, created_at, started_at, finished_at, options, scheduled_at, retries, attempts, key, "
    "schedule_id, depends_on, on_dependency_failure, waiting_on, input, workflow_id) "
    "VALUES (" + ", ".join(["%s"] * 24) + ")"
)
INSERT_WORKFLOW = "INSERT INTO workflows (id, created_at, output) VALUES (%s, %s, %s)"
SELECT_WORKFLOW = "SELECT created_at, output FROM workflows WHERE id = %s"
SELECT_WORKFLOW_JOBS = f"SELECT {JOB_COLUMNS} FROM jobs WHERE workflow_id = %s ORDER BY seq"
SELECT_WORKFLOW_EVENTS_AFTER = (
    "SELECT e.id, e.job_id, e.kind, e.at, e.data FROM events e JOIN jobs j ON j.id = e.job_id "
    "WHERE j.workflow_id = %s AND e.id > %s ORDER BY e.id LIMIT %s"
)
DELETE_EMPTY_WORKFLOWS = (
    "DELETE FROM workflows WHERE NOT EXISTS (SELECT 1 FROM jobs WHERE workflow_id = workflows.id)"
)
DELETE_DEPENDENTS = "DELETE FROM dependencies WHERE depends_on = %s"
# a step waiting again may still have rows for the dependencies that had not finished
INSERT_DEPENDENCY = (
    "INSERT INTO dependencies (job_id, depends_on) VALUES (%s, %s) ON CONFLICT DO NOTHING"
)
SELECT_DEPENDENTS = "SELECT job_id FROM dependencies WHERE depends_on = %s"
# a job that starts running is this service's (instance_id); a running job keeps its service
# whoever writes it (its progress, say); a job in any other state belongs to none
UPDATE_JOB = (
    "UPDATE jobs SET args = %s, state = %s, attempt = %s, interruptions = %s, progress = %s, "
    "result = %s, error = %s, started_at = %s, finished_at = %s, scheduled_at = %s, "
    "retries = %s, attempts = %s, waiting_on = %s, "
    "instance_id = CASE WHEN %s <> 'running' THEN NULL "
    "WHEN state = 'running' THEN instance_id ELSE %s END WHERE id = %s"
)
# the best queued job no other service is claiming, past the queues and tasks at their limits
# (one this transaction has changed already, a cancel say, is not: it is not queued any more)
SELECT_CLAIMABLE = (
    f"SELECT {JOB_COLUMNS} FROM jobs WHERE state = 'queued' "
    "AND queue <> ALL(%(full_queues)s) AND task <> ALL(%(full_tasks)s) "
    "AND id <> ALL(%(staged)s) AND NOT EXISTS (SELECT 1 FROM rate_limits AS r "
    "WHERE r.next_at > %(at)s AND r.key IN ('task:' || jobs.task, 'queue:' || jobs.queue)) "
    "ORDER BY priority DESC, seq LIMIT 1 FOR UPDATE SKIP LOCKED"
)
# a rate limit's row, made if new, then locked: two services that claim under it take turns
MAKE_RATE_LIMIT = "INSERT INTO rate_limits (key, next_at) VALUES (%s, 0) ON CONFLICT DO NOTHING"
LOCK_RATE_LIMITS = (
    "SELECT key, next_at FROM rate_limits WHERE key = ANY(%s) ORDER BY key FOR UPDATE"
)
STORE_RATE_LIMIT = (
    "INSERT INTO rate_limits (key, next_at) VALUES (%s, %s) "
    "ON CONFLICT (key) DO UPDATE SET next_at = excluded.next_at"
)
SELECT_RATE_LIMITS = "SELECT key, next_at FROM rate_limits"
SELECT_HELD_BY_RATE = (
    "SELECT task, count(*) FROM jobs WHERE state = 'queued' AND EXISTS (SELECT 1 FROM "
    "rate_limits AS r WHERE r.next_at > %(at)s AND r.key IN ('task:' || jobs.task, "
    "'queue:' || jobs.queue)) GROUP BY task"
)
NEXT_RATE_OPEN = "SELECT min(next_at) FROM rate_limits WHERE next_at > %s"
MAX_RATE_HELD_TRIES = 4  # jobs a claim passes over for their rate limits before it gives up
# claims take turns while limits are set, so that two services never both take the last place
LOCK_CLAIMS = "SELECT pg_advisory_xact_lock(hashtext('conveyor claims'))"
COUNT_RUNNING = "SELECT queue, task, count(*) FROM jobs WHERE state = 'running' GROUP BY 1, 2"
NOW = "extract(epoch from clock_timestamp())"  # the database's clock: the hosts' need not agree
# a lease is renewed only while it holds: one run out is lost, even before another service
# has come to take its jobs (no row comes back then); true: the row was made now (the first
# beat, or after the others took this service for dead and removed it)
HEARTBEAT = (
    "INSERT INTO instances (id, host, pid, started_at, heartbeat_at, workers) "
    f"VALUES (%(id)s, %(host)s, %(pid)s, %(started)s, {NOW}, %(workers)s) "
    f"ON CONFLICT (id) DO UPDATE SET heartbeat_at = {NOW}, workers = excluded.workers "
    f"WHERE instances.heartbeat_at >= {NOW} - %(lease)s "
    "RETURNING (xmax = 0)"
)
SHOW_WORKERS = "UPDATE instances SET workers = %s WHERE id = %s"
SELECT_INSTANCES = (
    f"SELECT id, host, pid, started_at, heartbeat_at, workers, {NOW} - heartbeat_at "
    "FROM instances ORDER BY started_at, id"
)
# waits for a heartbeat under way, then reads its row again: a lease renewed meanwhile holds
DELETE_STALE_INSTANCES = (
    f"DELETE FROM instances WHERE heartbeat_at < {NOW} - %(lease)s RETURNING id"
)
# running jobs whose service is gone (its row deleted above, or never there)
SELECT_ORPHANS = (
    f"SELECT {JOB_COLUMNS} FROM jobs WHERE state = 'running' AND (instance_id IS NULL OR "
    "instance_id NOT IN (SELECT id FROM instances)) FOR UPDATE SKIP LOCKED"
)
# this service's running jobs that it no longer runs (a settle that could not be written)
SELECT_OWN_RUNNING = (
    f"SELECT {JOB_COLUMNS} FROM jobs WHERE state = 'running' AND instance_id = %(me)s "
    "AND id <> ALL(%(running)s) AND started_at < %(before)s FOR UPDATE SKIP LOCKED"
)
LEAVE = "DELETE FROM instances WHERE id = %s"
EVENTS_CHANNEL = "conveyor_events"  # NOTIFY: events up to the id in the payload are committed
CANCEL_CHANNEL = "conveyor_cancel"  # NOTIFY: cancel the job whose id is the payload
SELECT_IDS_IN_STATE = "SELECT id FROM jobs WHERE state = %s ORDER BY seq"
# an advisory lock per key: two services looking for the key's holder at once take turns
LOCK_NAME = "SELECT pg_advisory_xact_lock(hashtext(%s))"
SELECT_ACTIVE_WITH_KEY = (
    "SELECT id FROM jobs WHERE key = %s AND state IN ('waiting', 'scheduled', 'queued', 'running')"
)
SELECT_IDEMPOTENCY = "SELECT request, job_ids, created_at FROM idempotency WHERE key = %s"
UPSERT_IDEMPOTENCY = (
    "INSERT INTO idempotency (key, request, job_ids, created_at) VALUES (%s, %s, %s, %s) "
    "ON CONFLICT (key) DO UPDATE SET request = excluded.request, job_ids = excluded.job_ids, "
    "created_at = excluded.created_at"
)
# the ids, and word to the other services once committed, in one trip: the last id and the
# service that committed it (which publishes its own events without the word)
TAKE_EVENT_IDS = (
    "UPDATE event_ids SET last = last + %s "
    f"RETURNING last, pg_notify('{EVENTS_CHANNEL}', last::text || ' ' || %s)"
)
LAST_EVENT_ID = "SELECT last FROM event_ids"
INSERT_EVENT = "INSERT INTO events (id, job_id, kind, at, data) VALUES (%s, %s, %s, %s, %s)"
SELECT_EVENTS_AFTER = (
    "SELECT id, job_id, kind, at, data FROM events WHERE id > %s ORDER BY id LIMIT %s"
)
SELECT_JOB_EVENTS_AFTER = (
    "SELECT id, job_id, kind, at, data FROM events WHERE job_id = %s AND id > %s "
    "ORDER BY id LIMIT %s"
)
SELECT_QUEUED = (
    "SELECT id, task, queue, priority, options::jsonb ->> 'rate_limit' FROM jobs "
    "WHERE state = 'queued' ORDER BY seq"
)
SELECT_SCHEDULED = "SELECT id, scheduled_at FROM jobs WHERE state = 'scheduled'"
# the expired jobs no other service is pruning at the same time
# a workflow's jobs go together, once the last of them has finished before the cutoff
SELECT_EXPIRED = (
    "SELECT id, queue, state FROM jobs "
    "WHERE finished_at < %(before)s AND state IN ('succeeded', 'failed', 'canceled') "
    "AND (workflow_id IS NULL OR NOT EXISTS (SELECT 1 FROM jobs AS w "
    "WHERE w.workflow_id = jobs.workflow_id "
    "AND (w.finished_at IS NULL OR w.finished_at >= %(before)s))) "
    "ORDER BY finished_at LIMIT %(limit)s FOR UPDATE SKIP LOCKED"
)
DELETE_JOB_EVENTS = "DELETE FROM events WHERE job_id = ANY(%s)"
DELETE_JOBS = "DELETE FROM jobs WHERE id = ANY(%s)"
DELETE_DEPENDENCIES = "DELETE FROM dependencies WHERE job_id = ANY(%s)"
DELETE_OLD_NOTES = "DELETE FROM events WHERE job_id = %s AND at < %s"
DELETE_EXPIRED_IDEMPOTENCY = "DELETE FROM idempotency WHERE created_at < %s"
WRITE_READINESS = (
    "INSERT INTO readiness (id, checked_at) VALUES (1, %s) "
    "ON CONFLICT (id) DO UPDATE SET checked_at = excluded.checked_at"
)
COUNT_JOBS = "SELECT queue, state, count(*) FROM jobs GROUP BY 1, 2"
COUNT_FINISHED = (
    "SELECT (floor(finished_at / %(bucket)s) * %(bucket)s)::bigint, state, count(*) FROM jobs "
    "WHERE finished_at >= %(since)s AND state IN ('succeeded', 'failed', 'canceled') "
    "GROUP BY 1, 2"
)
_SCHEDULE_VALUES = ", ".join(["%s"] * len(SCHEDULE_COLUMNS.split(",")))
SELECT_SCHEDULES = f"SELECT {SCHEDULE_COLUMNS} FROM schedules ORDER BY created_at, id"
INSERT_SCHEDULE = (
    f"INSERT INTO schedules ({SCHEDULE_COLUMNS}) VALUES ({_SCHEDULE_VALUES}) "
    "ON CONFLICT (id) DO NOTHING"
)
REPLACE_SCHEDULE = (
    f"INSERT INTO schedules ({SCHEDULE_COLUMNS}) VALUES ({_SCHEDULE_VALUES}) "
    "ON CONFLICT (id) DO UPDATE SET "
    + ", ".join(f"{c} = excluded.{c}" for c in (c.strip() for c in SCHEDULE_COLUMNS.split(",")))
)
DELETE_SCHEDULE = "DELETE FROM schedules WHERE id = %s"
# the same schedule (not one made anew under its id), active, and a tick later than any it
# fired and than its latest resume; a second service claiming the same tick waits for the
# first's row lock, then finds the tick taken
CLAIM_TICK = (
    "UPDATE schedules SET last_tick_at = %(tick)s WHERE id = %(id)s "
    "AND created_at = %(created)s AND paused = 0 AND coalesce(last_tick_at, 0) < %(tick)s "
    "AND coalesce(resumed_at, 0) < %(tick)s"
)
PAUSE_SCHEDULE = (
    "UPDATE schedules SET paused = %s, resumed_at = %s WHERE id = %s AND created_at = %s"
)
INSERT_LOG = (
    "INSERT INTO job_logs (job_id, event_id, attempt, at, stream, level, logger, text) "
    "VALUES (%s, %s, %s, %s, %s, %s, %s, %s)"
)
COUNT_LOGS = (
    "INSERT INTO job_log_counts AS c (job_id, kept, dropped) VALUES (%s, %s, %s) "
    "ON CONFLICT (job_id) DO UPDATE SET "
    "kept = c.kept + excluded.kept, dropped = c.dropped + excluded.dropped RETURNING kept"
)
PRUNE_LOGS = (
    "DELETE FROM job_logs WHERE id IN "
    "(SELECT id FROM job_logs WHERE job_id = %s ORDER BY id LIMIT %s)"
)
COUNT_PRUNED = (
    "UPDATE job_log_counts SET kept = kept - %s, dropped = dropped + %s WHERE job_id = %s"
)
# a log event all of whose lines are gone goes too: replays stay as bounded as the log
PRUNE_LOG_EVENTS = (
    "DELETE FROM events WHERE job_id = %s AND kind = 'log' AND id < "
    "(SELECT min(event_id) FROM job_logs WHERE job_id = %s)"
)
SELECT_LOGS = (
    "SELECT at, stream, text, level, logger, attempt FROM job_logs "
    "WHERE job_id = %s ORDER BY id DESC LIMIT %s"
)
SELECT_LOG_DROPPED = "SELECT dropped FROM job_log_counts WHERE job_id = %s"
DELETE_LOGS = (
    "DELETE FROM job_logs WHERE job_id = ANY(%s)",
    "DELETE FROM job_log_counts WHERE job_id = ANY(%s)",
    "DELETE FROM events WHERE job_id = ANY(%s) AND kind = 'log'",
)
_JOB_BYTES = (
    "octet_length(args) + octet_length(kwargs) + coalesce(octet_length(result), 0) "
    "+ coalesce(octet_length(error), 0) + octet_length(attempts)"
)


@dataclasses.dataclass(frozen=True, slots=True)
class _Logged:
    """A batch of a job's output, written at the commit, when its event has its id."""

    job_id: str
    event_id: int  # the event's id in its transaction, before the commit numbers it
    rows: list[tuple[Any, ...]]  # INSERT_LOG's, without the event id
    dropped: int
    keep: int


class PostgresTransaction(StagedTransaction):
    """A transaction on the writer's connection (psycopg begins it at the first statement)."""

    def __init__(
        self, conn: psycopg.AsyncConnection[Any], clock: Callable[[], float], instance_id: str
    ) -> None:
        super().__init__(1, clock)  # the commit numbers them from event_ids
        self._conn = conn
        self._instance_id = instance_id
        self._held_tasks: set[str] = set()  # tasks a rate limit held in this claim
        self._logged: list[_Logged] = []
        self.committing = False  # COMMIT sent: a connection lost now leaves it unknown

    async def _rows(self, sql: str, params: Sequence[Any] | dict[str, Any] = ()) -> list[Any]:
        cursor = await self._conn.execute(sql, params)
        return await cursor.fetchall()

    async def _change(self, sql: str, params: Sequence[Any] | dict[str, Any]) -> int:
        return (await self._conn.execute(sql, params)).rowcount

    async def _read_job(self, job_id: str) -> Job | None:
        rows = await self._rows(LOCK_JOB, (job_id,))
        return row_to_job(rows[0]) if rows else None

    async def _workflow_jobs(self, workflow_id: str) -> list[Job]:
        return [row_to_job(row) for row in await self._rows(SELECT_WORKFLOW_JOBS, (workflow_id,))]

    def _may_have_dependents(self, job_id: str) -> bool:
        # always looked for, in a statement of its own once the job is locked: a submit that
        # waited on that lock has committed its rows by then (a column read with the locking
        # statement would come from the snapshot before it)
        return True

    async def _forget_dependents(self, job_id: str) -> None:
        await self._conn.execute(DELETE_DEPENDENTS, (job_id,))

    async def _peek_job(self, job_id: str) -> Job | None:
        # not locked: two services finishing two jobs of one dependent would deadlock, each
        # holding its own and asking for the other's; the dependent's lock orders them
        rows = await self._rows(SELECT_JOB, (job_id,))
        return row_to_job(rows[0]) if rows else None

    async def _stored_dependents(self, job_id: str) -> list[str]:
        return [row[0] for row in await self._rows(SELECT_DEPENDENTS, (job_id,))]

    async def _stored_ids_in_state(self, state: JobState) -> list[str]:
        return [row[0] for row in await self._rows(SELECT_IDS_IN_STATE, (state.value,))]

    async def _stored_holders(self, key: str) -> list[str]:
        await self._conn.execute(LOCK_NAME, ("conveyor key " + key,))
        return [row[0] for row in await self._rows(SELECT_ACTIVE_WITH_KEY, (key,))]

    async def claim_tick(self, schedule: Schedule, tick_at: float) -> bool:
        params = {"tick": tick_at, "id": schedule.id, "created": schedule.created_at}
        return await self._change(CLAIM_TICK, params) == 1

    async def earlier_request(self, claim: IdempotencyClaim) -> tuple[str, list[str], float] | None:
        await self._conn.execute(LOCK_NAME, ("conveyor request " + claim.key,))
        rows = await self._rows(SELECT_IDEMPOTENCY, (claim.key,))
        if not rows:
            return None
        return rows[0][0], orjson.loads(rows[0][1]), rows[0][2]

    async def remember_request(self, claim: IdempotencyClaim, job_ids: list[str]) -> None:
        params = (claim.key, claim.request, dumps(job_ids), claim.at)
        await self._conn.execute(UPSERT_IDEMPOTENCY, params)

    async def add_logs(
        self, job: Job, entries: Sequence[LogEntry], dropped: int, keep: int
    ) -> None:
        entries = [dataclasses.replace(e, attempt=job.attempt) for e in entries]
        event = self.log_event(job, entries, dropped)
        rows = [
            (job.id, e.attempt, e.at, e.stream, _text(e.level), _text(e.logger), _text(e.text))
            for e in entries
        ]
        self._logged.append(_Logged(job.id, event.id, rows, dropped, keep))

    async def delete_logs(self, job_ids: Sequence[str]) -> None:
        gone = set(job_ids)  # and what this transaction was to write of them
        self._logged = [logged for logged in self._logged if logged.job_id not in gone]
        for sql in DELETE_LOGS:
            await self._conn.execute(sql, (list(job_ids),))

    async def insert_workflow(
        self, workflow_id: str, created_at: float, output: dict[str, Any]
    ) -> None:
        await self._conn.execute(INSERT_WORKFLOW, (workflow_id, created_at, dumps(output)))

    async def insert_schedule(self, schedule: Schedule) -> bool:
        return await self._change(INSERT_SCHEDULE, schedule_to_row(schedule)) == 1

    async def replace_schedule(self, schedule: Schedule) -> None:
        await self._conn.execute(REPLACE_SCHEDULE, schedule_to_row(schedule))

    async def delete_schedule(self, schedule_id: str) -> bool:
        return await self._change(DELETE_SCHEDULE, (schedule_id,)) == 1

    async def pause_schedule(
        self, schedule: Schedule, *, paused: bool, resumed_at: float | None
    ) -> bool:
        params = (int(paused), resumed_at, schedule.id, schedule.created_at)
        return await self._change(PAUSE_SCHEDULE, params) == 1

    async def expired(self, finished_before: float, limit: int) -> list[tuple[str, str, str]]:
        rows = await self._rows(SELECT_EXPIRED, {"before": finished_before, "limit": limit})
        return [(row[0], row[1], row[2]) for row in rows]

    async def delete_jobs(self, job_ids: Sequence[str]) -> None:
        await self._conn.execute(DELETE_JOB_EVENTS, (list(job_ids),))
        await self._conn.execute(DELETE_DEPENDENCIES, (list(job_ids),))
        await self._conn.execute(DELETE_JOBS, (list(job_ids),))
        await self._conn.execute(DELETE_EMPTY_WORKFLOWS)

    async def delete_notes(self, before: float) -> None:
        await self._conn.execute(DELETE_OLD_NOTES, (NO_JOB, before))

    async def delete_requests(self, created_before: float) -> None:
        await self._conn.execute(DELETE_EXPIRED_IDEMPOTENCY, (created_before,))

    async def write_readiness(self, at: float) -> None:
        await self._conn.execute(WRITE_READINESS, (at,))

    async def claimable(
        self,
        queue_limits: Mapping[str, int],
        task_limits: Mapping[str, int],
        at: float = 0.0,
        queue_gaps_s: Mapping[str, float] | None = None,
    ) -> Job | None:
        """The queued job to start next here, locked: the highest priority, then the oldest,
        of the queues and tasks under their limits across every service, and not held by a
        rate limit (whose next start it moves on)."""
        for _ in range(MAX_RATE_HELD_TRIES):
            job = await self._best_claimable(queue_limits, task_limits, at)
            if job is None:
                return None
            if await self._within_rates(job, at, queue_gaps_s or {}):
                return job
        return None  # held each time: the next claim looks again

    async def _within_rates(self, job: Job, at: float, queue_gaps_s: Mapping[str, float]) -> bool:
        """Whether ``job`` may start ``at`` under its rate limits (a service claiming under
        one meanwhile went first: this waited for its commit); if so, move them on."""
        under = spacing(job.task, gap_s(job.options.rate_limit), job.queue, queue_gaps_s)
        if not under:
            return True
        keys = sorted(under)
        for key in keys:
            await self._conn.execute(MAKE_RATE_LIMIT, (key,))
        limits = Limits({row[0]: row[1] for row in await self._rows(LOCK_RATE_LIMITS, (keys,))})
        if limits.open_at(keys) > at:
            self._held_tasks.add(job.task)  # the next try passes over it
            return False
        for key, next_at in limits.started(under, at).items():
            await self._conn.execute(STORE_RATE_LIMIT, (key, next_at))
        return True

    async def next_rate_open(self, at: float) -> float | None:
        """The earliest time a rate limit lets a job go (None: none holds any)."""
        rows = await self._rows(NEXT_RATE_OPEN, (at,))
        return rows[0][0] if rows else None

    async def store_rates(self, next_at: Mapping[str, float]) -> None:
        for key, at in next_at.items():
            await self._conn.execute(STORE_RATE_LIMIT, (key, at))

    async def _best_claimable(
        self, queue_limits: Mapping[str, int], task_limits: Mapping[str, int], at: float
    ) -> Job | None:
        full_queues: list[str] = []
        full_tasks: list[str] = list(self._held_tasks)
        if queue_limits or task_limits:
            await self._conn.execute(LOCK_CLAIMS)
            by_queue: Counter[str] = Counter()
            by_task: Counter[str] = Counter()
            for queue, task, running in await self._rows(COUNT_RUNNING):
                by_queue[queue] += running
                by_task[task] += running
            full_queues = [q for q, limit in queue_limits.items() if by_queue[q] >= limit]
            full_tasks += [t for t, limit in task_limits.items() if by_task[t] >= limit]
        params = {
            "full_queues": full_queues, "full_tasks": full_tasks, "staged": list(self.rows),
            "at": at,
        }  # fmt: skip
        rows = await self._rows(SELECT_CLAIMABLE, params)
        if not rows:
            return None
        job = row_to_job(rows[0])
        self.loaded.setdefault(job.id, job)
        return job

    async def orphans(self, lease_s: float) -> tuple[list[str], list[Job]]:
        """The services whose heartbeat is older than ``lease_s``, and the running jobs that
        no live service holds, locked; the stale services' rows go with this transaction."""
        stale = [row[0] for row in await self._rows(DELETE_STALE_INSTANCES, {"lease": lease_s})]
        return stale, await self._locked(SELECT_ORPHANS, {})

    async def own_strays(
        self, instance_id: str, running: list[str], started_before: float
    ) -> list[Job]:
        """This service's running jobs, started before ``started_before``, that it does not
        run (``running``: those it does), locked."""
        params = {"me": instance_id, "running": running, "before": started_before}
        return await self._locked(SELECT_OWN_RUNNING, params)

    async def _locked(self, sql: str, params: dict[str, Any]) -> list[Job]:
        jobs = [row_to_job(row) for row in await self._rows(sql, params)]
        for job in jobs:
            self.loaded.setdefault(job.id, job)
        return jobs

    async def commit(self) -> None:
        """Number the events, write what is staged, and commit."""
        if self.events:
            taken = await self._rows(TAKE_EVENT_IDS, (len(self.events), self._instance_id))
            last = taken[0][0]
            base = last - len(self.events)  # the staged ids run from 1
            self.events = [dataclasses.replace(e, id=base + e.id) for e in self.events]
            self.next_event_id = last + 1
        else:
            base = 0
        inserts = [job_to_row(j) for i, j in self.rows.items() if i in self.inserted]
        dependencies = self.dependencies
        updates = [
            (*update_params(j)[:-1], j.state.value, self._instance_id, j.id)
            for i, j in self.rows.items()
            if i not in self.inserted
        ]
        # the writes in one pipeline, a single trip to the server rather than one each, with
        # the commit too unless log lines come between (they read counts as they go)
        self.committing = not self._logged
        async with self._conn.pipeline(), self._conn.cursor() as cursor:
            # updates first: a job that finishes frees its key for a job inserted in the same
            # batch
            if updates:
                await cursor.executemany(UPDATE_JOB, updates)
            if inserts:
                await cursor.executemany(INSERT_JOB, inserts)
            if dependencies:
                await cursor.executemany(INSERT_DEPENDENCY, dependencies)
            if self.events:
                rows = [(e.id, e.job_id, e.kind, e.at, dumps(e.data)) for e in self.events]
                await cursor.executemany(INSERT_EVENT, rows)
            if self.committing:
                await self._conn.commit()
        if not self.committing:
            for logged in self._logged:
                await self._write_logs(logged, base + logged.event_id)
            self.committing = True
            await self._conn.commit()

    async def _write_logs(self, logged: _Logged, event_id: int) -> None:
        job_id = logged.job_id
        async with self._conn.cursor() as cursor:
            rows = [(job_id, event_id, *row[1:]) for row in logged.rows]
            await cursor.executemany(INSERT_LOG, rows)
        counted = await self._rows(COUNT_LOGS, (job_id, len(rows), logged.dropped))
        excess = int(counted[0][0]) - logged.keep
        if excess > 0:
            await self._conn.execute(PRUNE_LOGS, (job_id, excess))
            await self._conn.execute(COUNT_PRUNED, (excess, excess, job_id))
            await self._conn.execute(PRUNE_LOG_EVENTS, (job_id, job_id))


class PostgresStore(GroupCommitStore[PostgresTransaction]):
    """The job store on a PostgreSQL database, which other services share.

    ``on_commit`` receives every committed event, this service's and the others', once each
    and in id order: this service's as it commits them (when nothing of another's came
    between), the others' as their word comes (LISTEN), read from the database.
    """

    def sharing(self) -> PostgresStore:
        return self

    def __init__(
        self,
        url: str,
        *,
        on_commit: Callable[[list[Event]], None],
        clock: Callable[[], float] = time.time,
        max_log_lines: int = DEFAULT_MAX_LOG_LINES,
    ) -> None:
        super().__init__(on_commit=on_commit, clock=clock, max_log_lines=max_log_lines)
        self.url = url
        self._writer: psycopg.AsyncConnection[Any] | None = None
        self._readers: AsyncConnectionPool | None = None
        self._last_event_id = 0  # the newest event published to on_commit
        self.instance_id = uuid.uuid4().hex[:16]
        self._started_at = clock()
        self._listener: asyncio.Task[None] | None = None
        self._listening_conn: psycopg.AsyncConnection[Any] | None = None
        self._catching_up: asyncio.Task[None] | None = None
        self._behind = False  # word of events came while catching up: read again after
        self._beaten = False  # its row written once at least
        self.work = asyncio.Event()  # set when a job may have become claimable
        self.rates_open_at: float | None = None  # after an empty claim: when a rate lets one go
        # called with a job id another service asked to cancel
        self.on_cancel_requested: Callable[[str], None] | None = None

    async def open(self) -> None:
        """Connect, migrate the schema (one service at a time), start the writer.

        Raises StoreUnavailable when the database cannot be reached.
        """
        try:
            self._writer = await _connect(self.url)
            await _migrate(self._writer)
            self._readers = AsyncConnectionPool(
                self.url, min_size=1, max_size=READERS, open=False,
                kwargs={"autocommit": True, **CONNECTION_OPTIONS},
                # an idle connection the server closed is checked as it is taken: after a
                # server restart, a read gets a new one instead of failing on the old
                check=_check_if_told,
            )  # fmt: skip
            await self._readers.open(wait=True, timeout=CONNECT_TIMEOUT_S)
            listening = self._listening_conn = await _connect(self.url, autocommit=True)
            await listening.execute(f"LISTEN {EVENTS_CHANNEL}")
            await listening.execute(f"LISTEN {CANCEL_CHANNEL}")
            # listening before reading where the events stand: nothing after it slips by
            # where the events stand and the counts they lead to, from one snapshot: an event
            # committed between two reads would be counted twice, in the seed and as it comes
            writer = self._writer
            await writer.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
            self._last_event_id = int((await _rows(writer, LAST_EVENT_ID))[0][0])
            await self._seed_stats(writer)
            await writer.commit()
        except (psycopg.Error, PoolTimeout) as exc:
            await self.close()
            raise StoreUnavailable(shown(self.url), str(exc).strip().splitlines()[0]) from None
        except BaseException:
            await self.close()
            raise
        self._start_writer()
        self._listener = asyncio.get_running_loop().create_task(self._listen(listening))

    async def _seed_stats(self, conn: psycopg.AsyncConnection[Any]) -> None:
        counts = await _rows(conn, COUNT_JOBS)
        since = window_start(self._clock())
        finished = await _rows(conn, COUNT_FINISHED, {"bucket": BUCKET_S, "since": since})
        self.stats.seed(counts, finished)  # rows of (queue, state, jobs), (bucket, state, jobs)

    async def close(self) -> None:
        """Finish the writes already asked for, then close the connections; idempotent."""
        for task in (self._listener, self._catching_up):
            if task is not None:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
        self._listener = self._catching_up = None
        if self._listening_conn is not None:
            with contextlib.suppress(Exception):
                await self._listening_conn.close()
            self._listening_conn = None
        if self._writer is not None and self._loop_task is not None:
            with contextlib.suppress(Exception):  # its lease ends now, not after lease_s
                await self._run_now(LEAVE, (self.instance_id,))
        await self._stop_writer()
        if self._readers is not None:
            await self._readers.close()
            self._readers = None
        if self._writer is not None:
            await self._writer.close()
            self._writer = None

    @property
    def last_event_id(self) -> int:
        """The id of the newest event published to ``on_commit`` (0: none)."""
        return self._last_event_id

    # -- events, in id order from every service ---------------------------------------------

    def _published(self, events: list[Event]) -> None:
        """After this service's commit: its events, unless another's came between (then
        everything since the last published is read, in order, from the database)."""
        if not events:
            return
        # no gap: nothing of another service's came between (a read of the others' events
        # under way meanwhile skips what is published by then)
        if events[0].id == self._last_event_id + 1:
            self._publish(events)
        else:
            self._catch_up()

    def _publish(self, events: list[Event]) -> None:
        events = [e for e in events if e.id > self._last_event_id]
        if not events:
            return
        self._last_event_id = events[-1].id
        super()._published(events)
        if any(_frees_or_fills(event) for event in events):
            self.work.set()

    def _catch_up(self) -> None:
        if self._catching_up is not None:
            self._behind = True
            return
        self._catching_up = asyncio.get_running_loop().create_task(self._read_up())

    async def _read_up(self) -> None:
        pause_s = 0.1
        try:
            while True:
                try:
                    self._behind = False
                    while rows := await self._read(SELECT_EVENTS_AFTER, (self._last_event_id, 500)):
                        self._publish([row_to_event(row) for row in rows])
                    if not self._behind:
                        return
                except psycopg.Error as exc:
                    # read again, later: no further word need come to prompt it, and streams
                    # must not stay behind until some other commit happens
                    log.warning("cannot read the events of the other services: %s", exc)
                    await asyncio.sleep(pause_s)
                    pause_s = min(pause_s * 2, 5.0)
        finally:
            self._catching_up = None

    async def _listen(self, conn: psycopg.AsyncConnection[Any]) -> None:
        """Word from the other services (and this one): new events, cancels asked for. A lost
        connection is made again, and what came meanwhile read."""
        pause_s = 0.1
        while True:
            try:
                async for note in conn.notifies():
                    if note.channel == EVENTS_CHANNEL:
                        last, _, by = note.payload.partition(" ")
                        if by != self.instance_id and int(last) > self._last_event_id:
                            self._catch_up()
                    elif note.channel == CANCEL_CHANNEL and self.on_cancel_requested:
                        self.on_cancel_requested(note.payload)
            except psycopg.Error as exc:
                log.warning("lost the database's notifications (%s); listening again", exc)
            with contextlib.suppress(Exception):
                await conn.close()
            while True:
                await asyncio.sleep(pause_s)
                try:
                    conn = self._listening_conn = await _connect(self.url, autocommit=True)
                    await conn.execute(f"LISTEN {EVENTS_CHANNEL}")
                    await conn.execute(f"LISTEN {CANCEL_CHANNEL}")
                    break
                except psycopg.Error:
                    pause_s = min(pause_s * 2, 5.0)
            pause_s = 0.1
            self._catch_up()
            self.work.set()

    # -- what services share: claims, leases, cancels ---------------------------------------

    async def claim(
        self,
        at: float,
        queue_limits: Mapping[str, int],
        task_limits: Mapping[str, int],
        queue_gaps_s: Mapping[str, float] | None = None,
    ) -> Job | None:
        """Move the best claimable job to running, held by this service; None if there is
        none (``rates_open_at`` then says when a rate limit lets one go, if one holds any).
        Committed on return: no other service can have it."""

        async def operation(batch: PostgresTransaction) -> Job | None:
            job = await batch.claimable(queue_limits, task_limits, at, queue_gaps_s)
            if job is None:
                self.rates_open_at = await batch.next_rate_open(at)
                return None
            running = transition(job, JobState.RUNNING, at)
            batch.put(running)
            return running

        return await self._transact(operation)

    async def heartbeat(self, workers: dict[str, Any], lease_s: float) -> bool:
        """Renew this service's lease, with its workers; False if it had run out (its running
        jobs are no longer its own: the others requeue them, or have already)."""
        params = {
            "id": self.instance_id, "host": socket.gethostname(), "pid": os.getpid(),
            "started": self._started_at, "workers": dumps(workers), "lease": lease_s,
        }  # fmt: skip
        rows = await self._read(HEARTBEAT, params)
        lost = not rows or (bool(rows[0][0]) and self._beaten)
        self._beaten = bool(rows)
        return not lost

    async def expire_leases(self, lease_s: float, change: Callable[[Job], Job]) -> list[Job]:
        """Apply ``change`` to each running job whose service has not beaten for ``lease_s``
        (or is gone); forget those services. Several services may do it at once: each job is
        changed once."""

        async def operation(batch: PostgresTransaction) -> list[Job]:
            stale, orphans = await batch.orphans(lease_s)
            changed = [change(job) for job in orphans]
            for job in changed:
                batch.put(job)
            if stale:
                log.warning("services %s stopped beating; their jobs are requeued", stale)
            return changed

        return await self._transact(operation)

    async def requeue_strays(
        self, running: list[str], started_before: float, change: Callable[[Job], Job | None]
    ) -> list[Job]:
        """Apply ``change`` to this service's running jobs started before ``started_before``
        that are not in ``running`` (those it runs now)."""

        async def operation(batch: PostgresTransaction) -> list[Job]:
            strays = await batch.own_strays(self.instance_id, running, started_before)
            changed = [job for job in map(change, strays) if job is not None]
            for job in changed:
                batch.put(job)
            return changed

        return await self._transact(operation)

    async def show_workers(self, workers: dict[str, Any]) -> None:
        """Let the others see this service's workers as they are now (between heartbeats)."""
        await self._run_now(SHOW_WORKERS, (dumps(workers), self.instance_id))

    async def held_by_rate(self, at: float) -> dict[str, int]:
        return {row[0]: row[1] for row in await self._read(SELECT_HELD_BY_RATE, {"at": at})}

    async def rate_limits(self) -> dict[str, float]:
        return {row[0]: row[1] for row in await self._read(SELECT_RATE_LIMITS)}

    async def instances(self) -> list[dict[str, Any]]:
        """Every service on the database, with its workers and how long since it beat."""
        keys = ("id", "host", "pid", "started_at", "heartbeat_at", "workers", "silent_s")
        rows = await self._read(SELECT_INSTANCES)
        return [
            dict(zip(keys, (*row[:5], orjson.loads(row[5]), row[6]), strict=True)) for row in rows
        ]

    async def request_cancel(self, job_id: str) -> None:
        """Ask the service running ``job_id`` to cancel it."""
        await self._run_now("SELECT pg_notify(%s, %s)", (CANCEL_CHANNEL, job_id))

    # -- the writer -------------------------------------------------------------------------

    def _store_failure(self, exc: Exception) -> bool:
        return isinstance(exc, psycopg.OperationalError)

    async def _commit(self, pendings: list[Pending[PostgresTransaction]]) -> None:
        for tries_left in (1, 0):
            try:
                conn = await self._writer_connection()
            except psycopg.OperationalError as exc:
                # no connection to be had: every write of the batch fails alike, at once,
                # rather than one by one, each waiting for a connection of its own
                failed = StoreFailed(str(exc).strip().splitlines()[0])
                for pending in pendings:
                    if not pending.future.done():
                        pending.future.set_exception(failed)
                return
            batch = PostgresTransaction(conn, self._clock, self.instance_id)
            try:
                outcomes = await run_operations(batch, pendings)
                await batch.commit()
            except (psycopg.errors.DeadlockDetected, psycopg.errors.SerializationFailure) as exc:
                with contextlib.suppress(Exception):
                    await conn.rollback()
                if tries_left:  # rolled back whole: nothing of it is stored, so it runs again
                    log.warning("a write met another service's (%s); running it again", exc)
                    continue
                raise
            except psycopg.OperationalError as exc:
                with contextlib.suppress(Exception):
                    await conn.rollback()
                # lost before its commit was sent: nothing of it is stored, so it runs again
                # on a new connection (lost during the commit, it may be stored: not again)
                if tries_left and conn.broken and not batch.committing:
                    log.warning("the database connection was lost (%s); reconnecting", exc)
                    continue
                if batch.committing:  # its events may be stored: read whatever is there
                    self._catch_up()
                raise
            except BaseException:
                with contextlib.suppress(Exception):
                    await conn.rollback()
                raise
            settle(pendings, outcomes)
            self._published(batch.events)
            return

    async def _writer_connection(self) -> psycopg.AsyncConnection[Any]:
        """The writer's connection; a new one if the last was lost (a restarted server)."""
        if self._writer is None or self._writer.closed or self._writer.broken:
            if self._writer is not None:
                with contextlib.suppress(Exception):
                    await self._writer.close()
            self._writer = None
            self._writer = await _connect(self.url)
        return self._writer

    def start_soon(
        self, job_id: str, attempt: int, change: Callable[[Job], Job | None]
    ) -> asyncio.Future[Job | None]:
        """``update_soon``: a start is in the database once committed, and a service that
        dies before that leaves the job queued, its attempt not counted."""
        return self.update_soon(job_id, change)

    def started_unrecorded(self) -> list[tuple[str, int]]:
        return []

    def forget_started(self) -> None:
        pass

    # -- reads ------------------------------------------------------------------------------

    async def _read(self, sql: str, params: Sequence[Any] | dict[str, Any] = ()) -> list[Any]:
        if self._readers is None:
            raise RuntimeError("the database is not open")
        async with self._readers.connection() as conn:
            return await _rows(conn, sql, params)

    async def _run_now(self, sql: str, params: Sequence[Any]) -> None:
        """A statement of its own, beside the writer's transactions (autocommit)."""
        if self._readers is None:
            raise RuntimeError("the database is not open")
        async with self._readers.connection() as conn:
            await conn.execute(sql, params)

    async def get_job(self, job_id: str) -> Job:
        rows = await self._read(SELECT_JOB, (job_id,))
        if not rows:
            raise JobNotFound(job_id)
        return row_to_job(rows[0])

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
        """Jobs newest first, and the cursor of the next page (None at the end); see the
        SQLite store's ``list_jobs``."""
        where: list[str] = []
        params: list[Any] = []
        if states:
            where.append("state = ANY(%s)")
            params.append([s.value for s in states])
        if task is not None:
            where.append("task = %s")
            params.append(task)
        if schedule_id is not None:
            where.append("schedule_id = %s")
            params.append(schedule_id)
        if queue is not None:
            where.append("queue = %s")
            params.append(queue)
        if text:
            # ASCII case only, as SQLite's lower() does
            where.append(
                "strpos(translate(args || ' ' || kwargs, %s, %s), translate(%s, %s, %s)) > 0"
            )
            params.extend([_UPPER, _LOWER, text, _UPPER, _LOWER])
        if before is not None:
            where.append("seq < %s")
            params.append(before)
        matching = " WHERE " + " AND ".join(where) if where else ""
        sizes = await self._read(
            f"SELECT seq, {_JOB_BYTES} FROM jobs{matching} ORDER BY seq DESC LIMIT %s",
            (*params, limit + 1),
        )
        taken, more = fit_page(sizes, limit, max_bytes)
        if not taken:
            return [], None
        rows = await self._read(
            f"SELECT {JOB_COLUMNS} FROM jobs WHERE seq = ANY(%s) ORDER BY seq DESC", (taken,)
        )
        return [row_to_job(r) for r in rows], taken[-1] if more else None

    async def events_after(
        self, after_id: int, *, job_id: str | None = None, limit: int = 500
    ) -> list[Event]:
        if job_id is None:
            rows = await self._read(SELECT_EVENTS_AFTER, (after_id, limit))
        else:
            rows = await self._read(SELECT_JOB_EVENTS_AFTER, (job_id, after_id, limit))
        return [row_to_event(r) for r in rows]

    async def workflow(self, workflow_id: str) -> Workflow:
        found = await self._read(SELECT_WORKFLOW, (workflow_id,))
        if not found:
            raise WorkflowNotFound(workflow_id)
        rows = await self._read(SELECT_WORKFLOW_JOBS, (workflow_id,))
        jobs = [row_to_job(row) for row in rows]
        return Workflow(workflow_id, found[0][0], orjson.loads(found[0][1]), jobs)

    async def workflow_events_after(
        self, workflow_id: str, after_id: int, *, limit: int = 500
    ) -> list[Event]:
        rows = await self._read(SELECT_WORKFLOW_EVENTS_AFTER, (workflow_id, after_id, limit))
        return [row_to_event(r) for r in rows]

    async def job_logs(self, job_id: str, *, tail: int | None = None) -> tuple[list[LogEntry], int]:
        """The job's kept log entries, oldest first (only the last ``tail`` of them if given),
        and how many lines it wrote that are not kept. Raises JobNotFound."""
        await self.get_job(job_id)
        counts = await self._read(SELECT_LOG_DROPPED, (job_id,))
        dropped = int(counts[0][0]) if counts else 0
        limit = self._max_log_lines if tail is None else min(tail, self._max_log_lines)
        rows = await self._read(SELECT_LOGS, (job_id, limit))
        return [LogEntry(*row) for row in reversed(rows)], dropped

    async def ids_in_state(self, state: JobState) -> list[str]:
        return [row[0] for row in await self._read(SELECT_IDS_IN_STATE, (state.value,))]

    async def queued(self) -> list[tuple[str, str, str, int, str | None]]:
        """(id, task, queue, priority) of every queued job, in submission order."""
        rows = await self._read(SELECT_QUEUED)
        return [(row[0], row[1], row[2], row[3], row[4]) for row in rows]

    async def scheduled(self) -> list[tuple[float, str]]:
        """(scheduled_at, id) of every scheduled job."""
        return [(row[1], row[0]) for row in await self._read(SELECT_SCHEDULED)]

    async def schedules(self) -> list[Schedule]:
        """Every schedule, oldest first."""
        return [row_to_schedule(row) for row in await self._read(SELECT_SCHEDULES)]

    async def ping(self) -> None:
        """Raise unless the database answers a query."""
        await self._read("SELECT 1")


def _text(value: str | None) -> str | None:
    """PostgreSQL's text cannot hold NUL, which a job may well print: shown as U+FFFD."""
    return value if value is None or "\x00" not in value else value.replace("\x00", "\ufffd")


_UPPER = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
_LOWER = _UPPER.lower()


async def _rows(
    conn: psycopg.AsyncConnection[Any], sql: str, params: Sequence[Any] | dict[str, Any] = ()
) -> list[Any]:
    cursor = await conn.execute(sql, params)
    return await cursor.fetchall()


async def _check_if_told(conn: psycopg.AsyncConnection[Any]) -> None:
    """The pool's check of an idle connection as it is handed out, without a trip to the
    server each time: a connection the server ended (a restart, a terminated backend) has
    its word, or its end, waiting on the socket; a sound idle one has nothing to read."""
    if conn.closed:
        await AsyncConnectionPool.check_connection(conn)
        return
    readable = select.poll()  # not select(): it cannot take a descriptor above 1023
    readable.register(conn.fileno(), select.POLLIN)
    if readable.poll(0):
        await AsyncConnectionPool.check_connection(conn)


async def _connect(url: str, *, autocommit: bool = False) -> psycopg.AsyncConnection[Any]:
    return await psycopg.AsyncConnection.connect(url, autocommit=autocommit, **CONNECTION_OPTIONS)


def _frees_or_fills(event: Event) -> bool:
    """Whether a claim may now find a job: one queued, or a running one ended (a place
    under a limit freed)."""
    return event.kind == "state" and (
        event.data.get("state") == "queued" or event.data.get("from") == "running"
    )


async def _migrate(conn: psycopg.AsyncConnection[Any]) -> None:
    """Bring the schema up to date, one service at a time (the others wait, then find it so)."""
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK,))
        await conn.execute(CREATE_VERSION_TABLE)
        version = int((await _rows(conn, "SELECT version FROM conveyor_schema"))[0][0])
        if version > len(MIGRATIONS):
            raise RuntimeError(
                f"the database is at schema version {version}, newer than this service "
                f"({len(MIGRATIONS)}); upgrade the service"
            )
        for number, script in enumerate(MIGRATIONS[version:], start=version + 1):
            await conn.execute(script)
            await conn.execute("UPDATE conveyor_schema SET version = %s", (number,))


def check_database(url: str) -> None:
    """Fail early, with a clear StoreUnavailable, if the database cannot be reached."""
    try:
        with psycopg.connect(url, connect_timeout=CONNECT_TIMEOUT_S) as conn:
            conn.execute("SELECT 1")
    except psycopg.Error as exc:
        raise StoreUnavailable(shown(url), str(exc).strip().splitlines()[0]) from None
