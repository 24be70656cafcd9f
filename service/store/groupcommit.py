"""What both backends share: a transaction that stages jobs and events, and a writer that runs
whatever operations arrive together in one transaction (group commit).

An operation reads jobs through its transaction and stages the changed ones with their events,
so the operations of one transaction see each other. A backend says how to read a job, where
its other tables are, and how to commit; the operations themselves (submit, update, append
logs, prune, the schedules) are written once, here.
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import dataclasses
import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, Self, TypeVar

from ..cron import Schedule
from ..errors import (
    IdempotencyKeyReused,
    JobNotFound,
    KeyTaken,
    ScheduleConflict,
    ScheduleNotFound,
    ServiceError,
    StoreFailed,
    UnknownDependencies,
)
from ..jobs import (
    ACTIVE,
    TERMINAL,
    Event,
    Job,
    JobState,
    is_failure,
    released,
    reopened,
    state_event_data,
    transition,
)
from ..logs import LogEntry
from ..settings import DEFAULT_MAX_LOG_LINES
from ..stats import JobStats
from ..workflows import named, resolve
from .base import Change, Guard, IdempotencyClaim, SharedStore, Transaction

T = TypeVar("T")

log = logging.getLogger("conveyor.db")

NO_JOB = ""  # the job_id of events about the store itself
MAX_OPERATIONS_PER_COMMIT = 1000


class StagedTransaction(abc.ABC):
    """What one transaction will write; operations read through it, so they see each other.

    Events are numbered from ``next_id`` as they are staged; a backend that learns its ids only
    at the commit numbers them again then, in the same order.
    """

    def __init__(self, next_id: int, clock: Callable[[], float]) -> None:
        self._clock = clock
        self.rows: dict[str, Job] = {}
        self.loaded: dict[str, Job] = {}  # each job as it was before this transaction
        self.inserted: set[str] = set()
        self.events: list[Event] = []
        self.next_event_id = next_id
        self._finished: list[str] = []  # jobs finished here whose dependents are to be seen to
        self._rerun: list[str] = []  # workflow steps run again here: their followers wait again
        self.dependencies: list[tuple[str, str]] = []  # (job, an unfinished job it waits for)

    # -- what a backend reads and writes ----------------------------------------------------

    @abc.abstractmethod
    async def _read_job(self, job_id: str) -> Job | None:
        """The job as stored (locked for this transaction where others could change it)."""

    async def _peek_job(self, job_id: str) -> Job | None:
        """The job as stored, not locked (a backend whose ``_read_job`` locks overrides it:
        the results a step takes are read, never held)."""
        return await self._read_job(job_id)

    @abc.abstractmethod
    def _may_have_dependents(self, job_id: str) -> bool:
        """False only if no stored job waits for ``job_id`` (then none is looked for)."""

    @abc.abstractmethod
    async def _stored_dependents(self, job_id: str) -> list[str]:
        """Ids of the stored jobs that wait for ``job_id``."""

    @abc.abstractmethod
    async def _forget_dependents(self, job_id: str) -> None:
        """Delete the stored rows of the jobs that waited for ``job_id`` (it has finished)."""

    @abc.abstractmethod
    async def _stored_ids_in_state(self, state: JobState) -> list[str]: ...

    @abc.abstractmethod
    async def _stored_holders(self, key: str) -> list[str]:
        """Ids of the jobs stored unfinished with ``key`` (at most one, by the unique index)."""

    @abc.abstractmethod
    async def claim_tick(self, schedule: Schedule, tick_at: float) -> bool: ...

    @abc.abstractmethod
    async def earlier_request(self, claim: IdempotencyClaim) -> tuple[str, list[str], float] | None:
        """(request digest, job ids, when) stored under the claim's key, if any."""

    @abc.abstractmethod
    async def remember_request(self, claim: IdempotencyClaim, job_ids: list[str]) -> None: ...

    @abc.abstractmethod
    async def add_logs(
        self, job: Job, entries: Sequence[LogEntry], dropped: int, keep: int
    ) -> None:
        """Append a batch of the job's output, as rows and as one ``log`` event; then let go of
        its oldest lines beyond the newest ``keep``."""

    @abc.abstractmethod
    async def delete_logs(self, job_ids: Sequence[str]) -> None:
        """Forget these jobs' logs, also their ``log`` events."""

    @abc.abstractmethod
    async def store_rates(self, next_at: Mapping[str, float]) -> None:
        """Store when the next job under each of these rate limits may start."""

    @abc.abstractmethod
    async def insert_workflow(
        self, workflow_id: str, created_at: float, output: dict[str, Any]
    ) -> None: ...

    @abc.abstractmethod
    async def insert_schedule(self, schedule: Schedule) -> bool:
        """Store a new schedule; False if its id is taken."""

    @abc.abstractmethod
    async def replace_schedule(self, schedule: Schedule) -> None: ...

    @abc.abstractmethod
    async def delete_schedule(self, schedule_id: str) -> bool: ...

    @abc.abstractmethod
    async def pause_schedule(
        self, schedule: Schedule, *, paused: bool, resumed_at: float | None
    ) -> bool: ...

    @abc.abstractmethod
    async def expired(self, finished_before: float, limit: int) -> list[tuple[str, str, str]]:
        """(id, queue, state) of up to ``limit`` jobs finished before ``finished_before``,
        oldest first."""

    @abc.abstractmethod
    async def delete_jobs(self, job_ids: Sequence[str]) -> None:
        """Delete these jobs and their events (their logs: ``delete_logs``)."""

    @abc.abstractmethod
    async def delete_notes(self, before: float) -> None:
        """Delete the store's own events (``note``) made before ``before``."""

    @abc.abstractmethod
    async def delete_requests(self, created_before: float) -> None:
        """Forget the Idempotency-Keys of requests made before ``created_before``."""

    @abc.abstractmethod
    async def write_readiness(self, at: float) -> None: ...

    # -- what operations use ----------------------------------------------------------------

    async def get(self, job_id: str) -> Job | None:
        # read once a transaction: a job read here stays as read (locked, where others could
        # change it) unless this transaction changes it
        job = self.rows.get(job_id) or self.loaded.get(job_id)
        if job is None:
            job = await self._read_job(job_id)
        if job is not None:
            self.loaded.setdefault(job_id, job)
        return job

    async def ids_in_state(self, state: JobState) -> list[str]:
        """Ids of jobs stored in ``state`` or staged into it, in submission order."""
        stored = await self._stored_ids_in_state(state)
        staged = [i for i, job in self.rows.items() if job.state is state and i not in stored]
        return stored + staged

    async def holder_of(self, key: str) -> Job | None:
        """The unfinished job that holds ``key``, as this transaction sees it."""
        for staged in self.rows.values():
            if staged.key == key and staged.state in ACTIVE:
                return staged
        for job_id in await self._stored_holders(key):
            stored = await self.get(job_id)  # a staged change may have finished it
            if stored is not None and stored.state in ACTIVE:
                return stored
        return None

    def put(self, job: Job, *, new: bool = False, kind: str | None = "state") -> None:
        """Stage ``job`` (read through ``get`` first, unless ``new``) with a ``kind`` event."""
        before = None if new else self.rows.get(job.id) or self.loaded[job.id]
        self.rows[job.id] = job
        if new:
            self.inserted.add(job.id)
        if job.state in TERMINAL and (before is None or before.state not in TERMINAL):
            self._finished.append(job.id)
        elif before is not None and before.state in TERMINAL and job.workflow_id is not None:
            self._rerun.append(job.id)
        if kind == "state":
            self._event(job, kind, state_event_data(job, None if before is None else before.state))
        elif kind == "progress":
            progress = None if job.progress is None else job.progress.as_dict()
            self._event(job, kind, {"job_id": job.id, "task": job.task, "progress": progress})

    async def wait_for(self, job: Job, others: Sequence[str], at: float | None = None) -> Job:
        """A job (new, or run again before it ever ran) that depends on ``others`` (each
        stored, or staged in this transaction), as it starts out: waiting for those
        unfinished, or, if none is, what they let it be (at ``at``: its creation by default).

        Those are read locked, in one order: on a shared store, a job finishing meanwhile is
        either seen finished here, or finds this job's rows once it may go on."""
        found = {other: await self.get(other) for other in sorted(others)}
        unfinished = [o for o, j in found.items() if j is not None and j.state not in TERMINAL]
        failed = next((j for j in found.values() if j is not None and is_failure(j)), None)
        waiting = dataclasses.replace(job, waiting_on=len(unfinished))
        at = job.created_at if at is None else at
        changed = released(waiting, failed, len(unfinished), at)
        if changed.state is JobState.WAITING:
            self.dependencies += [(job.id, other) for other in unfinished]
            return changed
        return await self._with_input(changed)

    async def release_dependents(self) -> None:
        """Let the waiting jobs go whose dependencies the jobs finished in this transaction
        were (and so on, for jobs canceled by it): in the same commit that records them. And
        the steps canceled for a step that runs again wait again."""
        while self._rerun:
            await self._reopen_followers(self.rows[self._rerun.pop(0)])
        while self._finished:
            finished = self.rows[self._finished.pop(0)]
            if finished.state not in TERMINAL:  # run again in this same transaction
                continue
            staged = [job_id for job_id, other in self.dependencies if other == finished.id]
            if not staged and not self._may_have_dependents(finished.id):
                continue
            for job_id in [*await self._stored_dependents(finished.id), *staged]:
                job = await self.get(job_id)
                if job is None or job.state is not JobState.WAITING:
                    continue
                failed = finished if is_failure(finished) else None
                changed = released(job, failed, job.waiting_on - 1, self._clock())
                if changed.state is JobState.WAITING:
                    self.put(changed, kind=None)  # one fewer to wait for
                else:
                    self.put(await self._with_input(changed))
            await self._forget_dependents(finished.id)
            self.dependencies = [d for d in self.dependencies if d[1] != finished.id]

    async def _reopen_followers(self, rerun: Job) -> None:
        """The steps of ``rerun``'s workflow canceled because it failed wait again (and theirs
        in turn, through ``_rerun``): the workflow goes on once it succeeds."""
        assert rerun.workflow_id is not None
        for stored in await self._workflow_jobs(rerun.workflow_id):
            if rerun.id not in stored.depends_on:
                continue
            job = await self.get(stored.id)  # locked, and as this transaction has it
            if job is None:
                continue
            found = {other: await self.get(other) for other in sorted(job.depends_on)}
            if any(j is not None and is_failure(j) for j in found.values()):
                continue  # another of its dependencies failed too: it stays canceled for that
            unfinished = [o for o, j in found.items() if j is not None and j.state not in TERMINAL]
            again = reopened(job, rerun.id, len(unfinished), self._clock())
            if again is None:
                continue
            self.put(again)  # noted in turn: the steps canceled for it wait again too
            self.dependencies += [(job.id, other) for other in unfinished]

    @abc.abstractmethod
    async def _workflow_jobs(self, workflow_id: str) -> list[Job]:
        """The stored jobs of a workflow."""

    async def _with_input(self, job: Job) -> Job:
        """A workflow's step let go: its input, from the results of the jobs before it, put
        first in its arguments."""
        if job.input is None or job.state is JobState.CANCELED:
            return job
        results = {}
        for job_id in named(job.input):
            done = self.rows.get(job_id) or await self._peek_job(job_id)
            results[job_id] = None if done is None else done.result
        return dataclasses.replace(job, args=[resolve(job.input, results), *job.args])

    def note(self, kind: str, data: dict[str, Any]) -> None:
        """An event about the store rather than one job (its ``job_id`` is empty)."""
        self._add_event(NO_JOB, kind, data)

    def _event(self, job: Job, kind: str, data: dict[str, Any]) -> None:
        self._add_event(job.id, kind, data)

    def _add_event(self, job_id: str, kind: str, data: dict[str, Any]) -> Event:
        event = Event(self.next_event_id, job_id, kind, self._clock(), data)
        self.events.append(event)
        self.next_event_id += 1
        return event

    def log_event(self, job: Job, entries: Sequence[LogEntry], dropped: int) -> Event:
        """Stage the ``log`` event that carries a batch of the job's output."""
        data = {
            "job_id": job.id, "task": job.task,
            "entries": [e.as_json() for e in entries], "dropped": dropped,
        }  # fmt: skip
        return self._add_event(job.id, "log", data)


Tx = TypeVar("Tx", bound=StagedTransaction)


@dataclass
class Pending(Generic[Tx]):
    operation: Callable[[Tx], Awaitable[Any]]
    future: asyncio.Future[Any] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )


Outcome = tuple[bool, Any]  # (True, what the operation returned) or (False, its ServiceError)


async def run_operations(batch: Tx, pendings: list[Pending[Tx]]) -> list[Outcome]:
    """Run each operation in ``batch``; one that refuses (a ServiceError) staged nothing."""
    outcomes: list[Outcome] = []
    for pending in pendings:
        try:
            outcomes.append((True, await pending.operation(batch)))
        except ServiceError as exc:
            outcomes.append((False, exc))
    await batch.release_dependents()  # whatever the operations finished
    return outcomes


def settle(pendings: list[Pending[Tx]], outcomes: list[Outcome]) -> None:
    """Once committed: each operation's future gets its outcome."""
    for pending, (ok, value) in zip(pendings, outcomes, strict=True):
        if not pending.future.done():
            if ok:
                pending.future.set_result(value)
            else:
                pending.future.set_exception(value)


class GroupCommitStore(abc.ABC, Generic[Tx]):
    """A store whose writes go through one writer task, in call order, grouped into
    transactions; each transaction's events go to ``on_commit`` once it is committed."""

    def __init__(
        self,
        *,
        on_commit: Callable[[list[Event]], None],
        clock: Callable[[], float] = time.time,
        max_log_lines: int = DEFAULT_MAX_LOG_LINES,
    ) -> None:
        self._on_commit = on_commit
        self._clock = clock  # stamps the events: epoch seconds
        self._max_log_lines = max_log_lines  # kept per job: the newest
        self._pending: asyncio.Queue[Pending[Tx]] = asyncio.Queue()
        self._loop_task: asyncio.Task[None] | None = None
        self.stats = JobStats()  # as of the last commit, like last_event_id

    @abc.abstractmethod
    async def open(self) -> None: ...

    @abc.abstractmethod
    async def close(self) -> None: ...

    async def __aenter__(self) -> Self:
        await self.open()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    def sharing(self) -> SharedStore | None:
        return None

    # -- the writer -------------------------------------------------------------------------

    @abc.abstractmethod
    async def _commit(self, pendings: list[Pending[Tx]]) -> None:
        """Run the operations in one transaction, commit, settle their futures (an
        operation's own ServiceError fails its future alone), and tell ``on_commit``."""

    @abc.abstractmethod
    def _store_failure(self, exc: Exception) -> bool:
        """Whether ``exc`` is the database's own failure (full, locked, gone, read-only)."""

    def _start_writer(self) -> None:
        self._loop_task = asyncio.get_running_loop().create_task(self._write_loop())

    async def _stop_writer(self) -> None:
        """Finish the writes already asked for, then stop the writer."""
        if self._loop_task is not None:
            await self._pending.join()
            self._loop_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._loop_task
            self._loop_task = None

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

    async def _commit_isolating(self, pendings: list[Pending[Tx]]) -> None:
        try:
            await self._commit(pendings)
        except Exception as exc:
            if len(pendings) == 1:
                log.error("a database write failed: %s", exc)
                if not pendings[0].future.done():
                    # the database's own failure (disk full, locked, read-only): the caller
                    # is told the store is unavailable; a broken constraint is a bug, as it was
                    failed = StoreFailed(str(exc)) if self._store_failure(exc) else exc
                    pendings[0].future.set_exception(failed)
                return
            # one bad write must not sink the others: retry each in its own transaction
            for pending in pendings:
                await self._commit_isolating([pending])

    def _published(self, events: list[Event]) -> None:
        """After a commit: the counts follow, and the listener hears of it."""
        self.stats.apply(events)
        if events:
            try:
                self._on_commit(events)
            except Exception:  # committed is committed: a failing listener must not redo it
                log.exception("the commit listener failed")

    # -- writes -----------------------------------------------------------------------------

    def transact_soon(self, operation: Callable[[Transaction], Awaitable[T]]) -> asyncio.Future[T]:
        """Queue ``operation`` for the next group-committed transaction, in call order.

        The future resolves once it is committed (or with the operation's own error).
        """
        return self._transact_soon(operation)

    async def transact(self, operation: Callable[[Transaction], Awaitable[T]]) -> T:
        """Run ``operation`` inside the next group-committed transaction; return once committed."""
        return await self._transact(operation)

    def _transact_soon(self, operation: Callable[[Tx], Awaitable[T]]) -> asyncio.Future[T]:
        if self._loop_task is None:
            raise RuntimeError("the database is not open")
        pending: Pending[Tx] = Pending(operation)
        self._pending.put_nowait(pending)
        return pending.future

    async def _transact(self, operation: Callable[[Tx], Awaitable[T]]) -> T:
        # shielded: a caller that goes away (a client hanging up) does not undo a queued write
        return await asyncio.shield(self._transact_soon(operation))

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
        ``guard`` runs first in the transaction (see Guard).
        """

        async def operation(batch: Tx) -> list[tuple[Job, bool]]:
            # refused before anything is written: all of the jobs, or none
            await _check_dependencies(batch, jobs)
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
                    if job.state is JobState.WAITING:  # its dependencies come first
                        job = await batch.wait_for(job, job.depends_on)
                    batch.put(job, new=True)
                outcome.append((job, True) if holder is None else (holder, False))
            if idempotency is not None:
                await batch.remember_request(idempotency, [job.id for job, _ in outcome])
            return outcome

        return self._transact_soon(operation)

    async def add_schedule(self, schedule: Schedule) -> None:
        """Store a new schedule; ScheduleConflict if its id is taken."""

        async def operation(batch: Tx) -> None:
            if not await batch.insert_schedule(schedule):
                raise ScheduleConflict(schedule.id, "a schedule with this id exists")

        await self._transact(operation)

    async def remove_schedule(self, schedule_id: str) -> None:
        """Delete a schedule (the jobs it made stay); ScheduleNotFound if there is none."""

        async def operation(batch: Tx) -> None:
            if not await batch.delete_schedule(schedule_id):
                raise ScheduleNotFound(schedule_id)

        await self._transact(operation)

    async def set_paused(
        self, schedule: Schedule, *, paused: bool, resumed_at: float | None
    ) -> None:
        """Store whether ``schedule`` is paused, and its latest resume; ScheduleNotFound if it
        is gone (or made anew under its id)."""

        async def operation(batch: Tx) -> None:
            if not await batch.pause_schedule(schedule, paused=paused, resumed_at=resumed_at):
                raise ScheduleNotFound(schedule.id)

        await self._transact(operation)

    async def replace_schedules(self, put: Sequence[Schedule], remove: Sequence[str]) -> None:
        """Store ``put`` over any schedules of the same ids and delete ``remove``, together."""

        async def operation(batch: Tx) -> None:
            for schedule in put:
                await batch.replace_schedule(schedule)
            for schedule_id in remove:
                await batch.delete_schedule(schedule_id)

        await self._transact(operation)

    def update_soon(
        self, job_id: str, change: Change, *, kind: str = "state"
    ) -> asyncio.Future[Job | None]:
        """Queue ``change`` of a job now, in call order; see ``update``."""

        async def operation(batch: Tx) -> Job | None:
            job = await batch.get(job_id)
            if job is None:
                raise JobNotFound(job_id)
            changed = change(job)
            if (
                changed is not None and changed.state is JobState.QUEUED
                and job.state is JobState.CANCELED and job.depends_on and not job.attempt
            ):  # fmt: skip
                # run again before it ever ran: it waits for its dependencies as it did
                again = transition(job, JobState.WAITING, self._clock())
                changed = await batch.wait_for(again, job.depends_on, self._clock())
            if changed is not None and changed.key is not None and job.state not in ACTIVE:
                holder = await batch.holder_of(changed.key)  # a finished job run again
                if holder is not None and changed.state in ACTIVE:
                    raise KeyTaken(job.id, changed.key, holder.id)
            if changed is not None:
                batch.put(changed, kind=kind)
            return changed

        return self._transact_soon(operation)

    async def update(self, job_id: str, change: Change, *, kind: str = "state") -> Job | None:
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

        async def operation(batch: Tx) -> None:
            job = await batch.get(job_id)
            if job is None:
                raise JobNotFound(job_id)
            await batch.add_logs(job, entries, dropped, self._max_log_lines)

        return self._transact_soon(operation)

    async def delete_logs(self, job_ids: Sequence[str]) -> None:
        """Forget the logs of these jobs, in one transaction."""

        async def operation(batch: Tx) -> None:
            await batch.delete_logs(job_ids)

        await self._transact(operation)

    async def update_all(self, state: JobState, change: Callable[[Job], Job]) -> list[Job]:
        """Apply ``change`` to every job in ``state``, in submission order (used at start)."""

        async def operation(batch: Tx) -> list[Job]:
            jobs = [await batch.get(job_id) for job_id in await batch.ids_in_state(state)]
            changed = [change(job) for job in jobs if job is not None and job.state is state]
            for job in changed:  # staged only once every change succeeded
                batch.put(job)
            return changed

        return await self._transact(operation)

    async def prune(self, finished_before: float, limit: int) -> int:
        """Delete up to ``limit`` jobs that finished before ``finished_before``, with their
        events and logs; return how many. One short transaction: call again while it returns
        ``limit``."""

        async def operation(batch: Tx) -> int:
            rows = await batch.expired(finished_before, limit)
            # a job changed in this same transaction (run again on request) stays
            gone = [row for row in rows if row[0] not in batch.rows]
            if gone:
                ids = [row[0] for row in gone]
                await batch.delete_logs(ids)
                await batch.delete_jobs(ids)
                for job_id in ids:  # gone: a later read in this transaction finds none
                    batch.loaded.pop(job_id, None)
                removed = Counter((row[1], row[2]) for row in gone)
                # one event says what went, so a client keeping counts from events follows
                batch.note("pruned", {"removed": [
                    {"queue": queue, "state": state, "jobs": n}
                    for (queue, state), n in sorted(removed.items())
                ]})  # fmt: skip
            # and the notes of earlier sweeps go like the jobs they told of
            await batch.delete_notes(finished_before)
            return len(rows)

        return await self._transact(operation)

    async def prune_idempotency(self, created_before: float) -> None:
        """Forget the Idempotency-Keys of requests made before ``created_before``."""

        async def operation(batch: Tx) -> None:
            await batch.delete_requests(created_before)

        await self._transact(operation)

    def note_rates_soon(self, next_at: Mapping[str, float]) -> asyncio.Future[None]:
        """Queue a store of when the next jobs under these rate limits may start: a restart
        keeps the spacing (the start that moved them is written in call order before it)."""

        async def operation(batch: Tx) -> None:
            await batch.store_rates(next_at)

        return self._transact_soon(operation)

    async def check_writable(self) -> None:
        """StoreFailed unless a write reaches the database: one row, written through the
        writer as any job's change is."""

        async def operation(batch: Tx) -> None:
            await batch.write_readiness(self._clock())

        await self._transact(operation)


async def _check_dependencies(batch: StagedTransaction, jobs: Sequence[Job]) -> None:
    """UnknownDependencies if jobs one of ``jobs`` depends on exist neither in the store nor
    among ``jobs``. Each is read (locked, on a shared store) in one order, whichever job
    names it: two submits never wait for each other's locks in a circle."""
    made_here = {job.id for job in jobs}
    named = sorted({other for job in jobs for other in job.depends_on} - made_here)
    found = {other: await batch.get(other) for other in named}
    for index, job in enumerate(jobs):
        unknown = [o for o in job.depends_on if o not in made_here and found[o] is None]
        if unknown:
            raise UnknownDependencies(unknown, None if len(jobs) == 1 else index)


async def _idempotent_replay(batch: StagedTransaction, claim: IdempotencyClaim) -> list[Job] | None:
    """The jobs an earlier request under ``claim.key`` created, if it is still remembered."""
    earlier = await batch.earlier_request(claim)
    if earlier is None or earlier[2] <= claim.at - claim.ttl_s:
        return None
    request, job_ids, _ = earlier
    if request != claim.request:
        raise IdempotencyKeyReused(claim.key)
    jobs = [await batch.get(job_id) for job_id in job_ids]
    found = [job for job in jobs if job is not None]
    return found or None  # pruned meanwhile: the request is new again
