"""The asyncio heart of the service: the ready queue, dispatch, cancel and recovery.

The database is the source of truth; the ready queue holds only ids of due jobs and is rebuilt
from the database at start. A job leaves the queue only when a worker is free to run it now
(no prefetch). Every state change goes through ``jobs.transition`` inside a database update.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import logging
import random
import time
import uuid
from collections.abc import Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple, TypeVar

from .db import Guard, IdempotencyClaim, SharedStore, Store, Transaction
from .delays import DueQueue
from .errors import (
    BatchRejected,
    InvalidArguments,
    InvalidOptions,
    InvalidTransition,
    JobNotFound,
    PoolClosed,
    ShuttingDown,
    StepRejected,
    UnknownTask,
)
from .jobs import (
    TERMINAL,
    TERMINAL_VALUES,
    Event,
    Job,
    JobError,
    JobSpec,
    JobState,
    Progress,
    interrupt,
    retries_left,
    retry_delay_s,
    transition,
)
from .logs import entries_from_worker
from .options import DEFAULT_OPTIONS, DEFAULT_QUEUE, JobOptions
from .pool import Outcome, ProcessPool, Worker
from .rates import Limits, gap_s, interval_s
from .ready import Entry, ReadyQueue
from .tasks import Task, lookup
from .workflows import Node, Planned, Workflow, plan

log = logging.getLogger("conveyor.scheduler")

T = TypeVar("T")

Clock = Callable[[], float]

RETRY_DUE_S = 1.0  # after a failed write, how soon to try to start or queue a job again
# Runs ended but not yet settled in the store, beyond the ones running. Short jobs can end
# faster than the writer commits their outcomes; past this many the dispatcher waits for the
# writer instead of holding a task, its futures and job copies for each (several KiB a run:
# megabytes in a burst). The writer still commits dozens of outcomes at a time.
MAX_UNSETTLED_RUNS = 64


class Submitted(NamedTuple):
    job: Job
    created: bool  # False: an earlier job stands in (the same key, or the same request)


# on a shared store: how long a claimer with nothing to claim waits before it looks again
# unwoken (the others' word wakes it at once; this is for word lost), and how long a cancel
# waits for the service running the job before it asks again
CLAIM_RECHECK_S = 5.0
CANCEL_ASK_AGAIN_S = 1.0
# a service stops its own runs once this much of its lease has gone by unrenewed: with a
# check each third of the lease, it stops them between 0.6 and 0.93 of it, kills included
LEASE_STOP_FRACTION = 0.6
# how far behind the others may see this service's workers (a job started or ended)
WORKERS_SHOWN_S = 0.5


@dataclass(eq=False)
class _Run:
    """A job between leaving the ready queue and reaching its next state."""

    job_id: str
    entry: Entry | None  # its place in the ready queue's limits, held until the run ends
    claimed: Job | None = None  # on a shared store: the job as claimed, running already
    worker: Worker | None = None
    cancel_requested: bool = False
    timeout_s: float | None = None
    timed_out: bool = False  # killed for running past timeout_s
    interrupted: bool = False  # stopped by the service's shutdown: requeue it
    done: asyncio.Event = field(default_factory=asyncio.Event)


class Scheduler:
    """Owns the ready queue and the jobs in flight; the app talks only to this."""

    def __init__(
        self,
        db: Store,
        pool: ProcessPool,
        tasks: dict[str, Task],
        *,
        max_interruptions: int,
        queue_limits: Mapping[str, int] | None = None,
        queue_rates: Mapping[str, str] | None = None,
        clock: Clock = time.time,
        rand: Callable[[], float] = random.random,
        lease_s: float = 15.0,
    ) -> None:
        self._db = db
        self._shared: SharedStore | None = db.sharing()
        self._lease_s = lease_s
        self._queue_limits = dict(queue_limits or {})
        self._task_limits = {n: t.concurrency for n, t in tasks.items() if t.concurrency}
        self._leases: asyncio.Task[None] | None = None
        self._shown: asyncio.Task[None] | None = None
        self._ended: dict[str, asyncio.Event] = {}  # shared: jobs a cancel waits to see end
        self._pool = pool
        self._tasks = tasks
        self._max_interruptions = max_interruptions
        self._clock = clock
        self._rand = rand  # the jitter of retry back-offs
        # a queue's rate limit, as the time between two starts of its jobs
        self._queue_gaps_s = {q: interval_s(r) for q, r in (queue_rates or {}).items()}
        self._ready = ReadyQueue(
            self._queue_limits, self._task_limits, queue_gaps_s=self._queue_gaps_s, clock=clock
        )
        self._scheduled = DueQueue(clock)
        self._canceling: set[str] = set()  # queued jobs being canceled: never start them
        self._runs: dict[str, _Run] = {}
        self._run_ended = asyncio.Event()
        self._owned: set[asyncio.Task[Any]] = set()
        self._dispatcher: asyncio.Task[None] | None = None
        self._waker: asyncio.Task[None] | None = None
        self._closing = False
        self._draining = False

    async def __aenter__(self) -> Scheduler:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def start(self) -> None:
        """Requeue what a dead service left running, queue what is due, start dispatching."""
        if self._shared is not None:
            await self._start_shared(self._shared)
            return
        now = self._clock()
        for job_id, attempt in self._db.started_unrecorded():  # the service died first
            change = functools.partial(_started_then_interrupted, attempt=attempt, at=now)
            with contextlib.suppress(JobNotFound):
                await self._db.update(job_id, change)
        self._db.forget_started()
        recovered = await self._db.update_all(
            JobState.RUNNING, lambda job: interrupt(job, now, self._max_interruptions)
        )
        if recovered:
            log.warning("recovered %d job(s) left running by a previous run", len(recovered))
        self._ready.rates = Limits(await self._db.rate_limits())  # the spacing goes on
        for job_id, task, queue, priority, rate in await self._db.queued():
            self._ready.put(job_id, task, queue, priority, gap_s(rate))
        for due_at, job_id in await self._db.scheduled():
            self._scheduled.add(due_at, job_id)
        loop = asyncio.get_running_loop()
        self._dispatcher = loop.create_task(self._dispatch())
        self._waker = loop.create_task(self._wake_scheduled())

    async def _start_shared(self, shared: SharedStore) -> None:
        """On a shared store, what others run is theirs: only the jobs of services gone
        silent are requeued (``_lease``), and jobs are claimed from the store, not queued here."""
        shared.on_cancel_requested = self._cancel_requested
        for due_at, job_id in await self._db.scheduled():
            self._scheduled.add(due_at, job_id)
        await self._beat(shared)
        loop = asyncio.get_running_loop()
        self._dispatcher = loop.create_task(self._dispatch_claims(shared))
        self._waker = loop.create_task(self._wake_scheduled())
        self._leases = loop.create_task(self._lease(shared))
        self._shown = loop.create_task(self._show_workers(shared))

    async def drain(self, grace_s: float, hurry: asyncio.Event | None = None) -> int:
        """Start no more jobs and refuse new ones (ShuttingDown); give the running jobs up to
        ``grace_s`` (or until ``hurry`` is set) to finish. Return how many still run; ``close``
        stops and requeues those. Cancels still work meanwhile."""
        self._draining = True
        if self._dispatcher is not None:
            self._dispatcher.cancel()
            await asyncio.gather(self._dispatcher, return_exceptions=True)
        endings = [asyncio.ensure_future(run.done.wait()) for run in self._runs.values()]
        if hurry is not None:
            endings.append(asyncio.ensure_future(hurry.wait()))
        try:
            async with asyncio.timeout(grace_s):
                while self._runs and not (hurry is not None and hurry.is_set()):
                    await asyncio.wait(endings, return_when=asyncio.FIRST_COMPLETED)
                    endings = [e for e in endings if not e.done()]
        except TimeoutError:
            pass
        finally:
            for ending in endings:
                ending.cancel()
        return len(self._runs)

    @property
    def draining(self) -> bool:
        return self._draining

    async def close(self) -> None:
        """Stop dispatching; stop the running jobs and requeue them for the next start."""
        if self._closing:
            return
        self._closing = True
        for loop_task in (self._dispatcher, self._waker, self._leases, self._shown):
            if loop_task is not None:
                loop_task.cancel()
                await asyncio.gather(loop_task, return_exceptions=True)
        for run in list(self._runs.values()):
            run.interrupted = True
            if run.worker is not None:
                self._own(self._pool.kill(run.worker, run.job_id))
        await asyncio.gather(*list(self._owned), return_exceptions=True)

    # -- what the app asks for ----------------------------------------------------------------

    async def submit(
        self,
        spec: JobSpec,
        idempotency: IdempotencyClaim | None = None,
        *,
        guard: Guard | None = None,
    ) -> Submitted:
        """Create a job, queued or (with a future ``run_at``) scheduled; committed on return.

        If an unfinished job holds the spec's ``key``, or ``idempotency`` names an earlier
        request, that job is returned instead (``created`` False). ``guard`` runs first in the
        transaction that stores the job: it may write along with it, or refuse (its
        ServiceError is raised, no job made). Raises ShuttingDown while the service drains,
        UnknownTask, InvalidArguments when the arguments do not bind to the task's signature,
        InvalidOptions, or IdempotencyKeyReused.
        """
        self._refuse_while_draining()
        (submitted,) = await self._enqueue([self._new_job(spec)], idempotency, guard)
        return submitted

    async def submit_many(
        self, specs: Sequence[JobSpec], idempotency: IdempotencyClaim | None = None
    ) -> list[Submitted]:
        """Create several jobs in one transaction: all of them, or (BatchRejected) none."""
        self._refuse_while_draining()
        jobs = []
        for index, spec in enumerate(specs):
            try:
                jobs.append(self._new_job(spec))
            except (UnknownTask, InvalidArguments, InvalidOptions) as exc:
                raise BatchRejected(index, exc) from None
        return await self._enqueue(jobs, idempotency)

    def _refuse_while_draining(self) -> None:
        if self._draining or self._closing:
            raise ShuttingDown

    def check(self, spec: JobSpec, *, takes_input: bool = False) -> JobOptions:
        """The options a job of ``spec`` would run with. Raises UnknownTask, InvalidArguments
        when the arguments do not bind to the task's signature (with a first one still to
        come, given ``takes_input``), or InvalidOptions."""
        task = lookup(self._tasks, spec.task)
        task.check_arguments(spec.args, spec.kwargs, takes_input=takes_input)
        options = DEFAULT_OPTIONS.merged(task.options).merged(spec.options)
        problem = options.problem()
        if problem is not None:
            raise InvalidOptions(spec.task, problem)
        return options

    def _new_job(self, spec: JobSpec, planned: Planned | None = None) -> Job:
        options = self.check(spec, takes_input=planned is not None and planned.input is not None)
        now = self._clock()
        later = spec.run_at is not None and spec.run_at > now
        depends_on = spec.depends_on if planned is None else planned.depends_on
        # waiting: the store lets it go once what it depends on has finished
        state = JobState.SCHEDULED if later else JobState.QUEUED
        if depends_on:
            state = JobState.WAITING
        return Job(
            id=str(uuid.uuid4()) if planned is None else planned.job_id, task=spec.task,
            args=spec.args, kwargs=spec.kwargs, state=state, created_at=now, options=options,
            scheduled_at=spec.run_at if later else None, key=spec.key,
            schedule_id=spec.schedule_id, depends_on=tuple(dict.fromkeys(depends_on)),
            on_dependency_failure=spec.on_dependency_failure,
            input=None if planned is None else planned.input,
            workflow_id=None if planned is None else planned.workflow_id,
        )  # fmt: skip

    async def submit_workflow(self, flow: Node) -> Workflow:
        """Create a workflow's jobs (see ``workflows``) in one transaction: all of them or,
        StepRejected naming the step, none; return it, its jobs upstream first."""
        self._refuse_while_draining()
        workflow_id = str(uuid.uuid4())
        laid_out = plan(flow, workflow_id, lambda: str(uuid.uuid4()))
        jobs = []
        for planned in laid_out.jobs:
            try:
                jobs.append(self._new_job(planned.spec, planned))
            except (UnknownTask, InvalidArguments, InvalidOptions) as exc:
                raise StepRejected(planned.step, exc) from None
        created_at = jobs[0].created_at

        async def record(batch: Transaction) -> None:
            await batch.insert_workflow(workflow_id, created_at, laid_out.output)

        submitted = await self._enqueue(jobs, None, record)
        return Workflow(workflow_id, created_at, laid_out.output, [s.job for s in submitted])

    async def cancel_workflow(self, workflow_id: str) -> Workflow:
        """Cancel every unfinished job of the workflow (running ones killed as usual, those
        waiting first, so none is let go meanwhile); the workflow as it is then."""
        workflow = await self._db.workflow(workflow_id)
        unfinished = [job for job in workflow.jobs if not job.is_terminal]
        order = sorted(unfinished, key=lambda job: job.state is JobState.RUNNING)
        for job in order:
            with contextlib.suppress(InvalidTransition, JobNotFound):
                await self.cancel(job.id)
        return await self._db.workflow(workflow_id)

    async def _enqueue(
        self,
        jobs: list[Job],
        idempotency: IdempotencyClaim | None,
        guard: Guard | None = None,
    ) -> list[Submitted]:
        stored = self._db.submit_soon(jobs, idempotency, guard=guard)
        # queued by the commit, not by this caller: a client that hangs up cancels its request,
        # and a job committed as queued must still reach the ready queue (or wait for a
        # restart). Called before the caller resumes: callbacks run in the order they were added.
        stored.add_done_callback(self._queue_created)
        return [Submitted(job, created) for job, created in await asyncio.shield(stored)]

    def _queue_created(self, stored: asyncio.Future[list[tuple[Job, bool]]]) -> None:
        if stored.cancelled() or stored.exception() is not None:
            return  # nothing stored; the caller is told why
        for job, created in stored.result():  # queued only once committed
            if not created:
                continue
            if job.state is JobState.SCHEDULED and job.scheduled_at is not None:
                self._scheduled.add(job.scheduled_at, job.id)
            elif job.state is JobState.QUEUED:
                self._make_ready(job)
            # waiting: the commit that finishes what it waits for lets it go (observe)

    async def _wake_scheduled(self) -> None:
        """Queue scheduled jobs as they come due: never before their time."""
        while True:
            job_ids = await self._scheduled.due()
            change = functools.partial(_make_due, at=self._clock())
            # all in one go: a burst that comes due together shares one commit
            writes = [self._db.update_soon(job_id, change) for job_id in job_ids]
            for job_id, outcome in zip(
                job_ids, await asyncio.gather(*writes, return_exceptions=True), strict=True
            ):
                if isinstance(outcome, Job):
                    self._make_ready(outcome)
                elif isinstance(outcome, Exception) and not isinstance(outcome, JobNotFound):
                    log.error(
                        "job %s: cannot make it due (%s); trying again", job_id, outcome,
                        extra={"job_id": job_id},
                    )  # fmt: skip
                    self._scheduled.add(self._clock() + RETRY_DUE_S, job_id)

    async def cancel(self, job_id: str) -> Job:
        """Cancel a queued or running job; return it once it is canceled and its process gone.

        Raises JobNotFound, or InvalidTransition when the job has already finished.
        """
        run = self._runs.get(job_id)
        if run is None:  # not started: from now on the dispatcher skips it
            self._canceling.add(job_id)
            now = self._clock()
            try:
                canceled = await self._db.update(job_id, lambda job: _cancel_waiting(job, now))
            finally:
                self._canceling.discard(job_id)
            if canceled is not None:
                return canceled
            job = await self._db.get_job(job_id)
            if self._shared is not None and job.state is JobState.RUNNING:
                return await self._cancel_elsewhere(self._shared, job_id)
            raise InvalidTransition(job_id, job.state, JobState.CANCELED, job)
        run.cancel_requested = True
        if run.worker is not None:  # a no-op if the job ended and its worker moved on
            await self._pool.kill(run.worker, job_id)
        await run.done.wait()
        job = await self._db.get_job(job_id)
        if not job.is_terminal:
            # the run here ended without its outcome: requeued (the service stopping), or,
            # its lease lost, already run again elsewhere; cancel it where it is now
            return await self.cancel(job_id)
        if job.state is not JobState.CANCELED:  # it finished before the cancel could land
            raise InvalidTransition(job_id, job.state, JobState.CANCELED, job)
        return job

    async def _cancel_elsewhere(self, shared: SharedStore, job_id: str) -> Job:
        """Cancel a job another service runs: ask it (again each second: word can be lost,
        and a service gone silent has its jobs requeued, then canceled here), until it ends."""
        ended = self._ended.setdefault(job_id, asyncio.Event())
        try:
            while True:
                change = functools.partial(_cancel_waiting, at=self._clock())
                canceled = await self._db.update(job_id, change)
                if canceled is not None:
                    return canceled
                job = await self._db.get_job(job_id)
                if job.is_terminal:
                    if job.state is not JobState.CANCELED:
                        raise InvalidTransition(job_id, job.state, JobState.CANCELED, job)
                    return job
                ended.clear()
                await shared.request_cancel(job_id)
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(CANCEL_ASK_AGAIN_S):
                        await ended.wait()
        finally:
            self._ended.pop(job_id, None)

    def _cancel_requested(self, job_id: str) -> None:
        """Another service was asked to cancel ``job_id``: if it runs here, cancel it."""
        if job_id in self._runs:
            self._own(self._cancel_quietly(job_id))

    async def _cancel_quietly(self, job_id: str) -> None:
        with contextlib.suppress(JobNotFound, InvalidTransition):
            await self.cancel(job_id)

    def observe(self, events: Sequence[Event]) -> None:
        """Every committed event, of every service: a waiting job the commit let go is due
        or scheduled now; on a shared store, a job another service scheduled is due here
        too, and a cancel waiting on another's job sees it end."""
        shared = self._shared is not None
        for event in events:
            if event.kind != "state":
                continue
            state = event.data.get("state")
            released = event.data.get("from") == JobState.WAITING.value
            if state == JobState.SCHEDULED.value and (shared or released):
                self._own(self._learn_due(event.job_id))
            elif state == JobState.QUEUED.value and released and not shared:
                self._own(self._learn_queued(event.job_id))
            elif shared and state in TERMINAL_VALUES and event.job_id in self._ended:
                self._ended[event.job_id].set()

    async def _learn_queued(self, job_id: str) -> None:
        with contextlib.suppress(JobNotFound):
            job = await self._db.get_job(job_id)
            if job.state is JobState.QUEUED:
                self._make_ready(job)

    async def _learn_due(self, job_id: str) -> None:
        with contextlib.suppress(JobNotFound):
            job = await self._db.get_job(job_id)
            if job.state is JobState.SCHEDULED and job.scheduled_at is not None:
                self._scheduled.add(job.scheduled_at, job.id)

    async def held_by_rate(self) -> dict[str, int]:
        """Due jobs per task that a rate limit holds back now (on a shared store, any
        service's)."""
        if self._shared is not None:
            return await self._shared.held_by_rate(self._clock())
        return self._ready.held_by_rate()

    def status(self) -> dict[str, Any]:
        """The jobs waiting for a worker (on a shared store: for any service's), and the jobs
        this service runs."""
        if self._shared is not None:
            waiting = self._db.stats.queued_by_queue()
            return {"queued": sum(waiting.values()), "running": len(self._runs),
                    "queued_by_queue": waiting}  # fmt: skip
        return {
            "queued": self._ready.qsize(),
            "running": len(self._runs),
            "queued_by_queue": self._ready.sizes(),
        }

    @property
    def tasks(self) -> dict[str, Task]:
        return self._tasks

    # -- dispatch ---------------------------------------------------------------------------

    async def _free_worker(self) -> Worker:
        """The next free worker, once the runs not yet settled are few enough; raises
        PoolClosed."""
        while len(self._runs) >= self._pool.size + MAX_UNSETTLED_RUNS:
            self._run_ended.clear()
            await self._run_ended.wait()
        return await self._pool.acquire()

    async def _dispatch(self) -> None:
        while True:
            try:
                worker = await self._free_worker()
            except PoolClosed:
                return
            try:
                entry = await self._ready.get()
                if entry.rates:  # a restart keeps the spacing
                    self._db.note_rates_soon(entry.rates).add_done_callback(_log_failure)
                while not worker.alive:  # it died while idle, waiting for this job
                    worker = await self._pool.acquire()
            except PoolClosed:
                return  # shutting down: the job stays queued in the store
            except asyncio.CancelledError:
                self._pool.release(worker)
                raise
            run = _Run(entry.job_id, entry)
            self._runs[entry.job_id] = run  # before any await: a cancel from now on finds it
            self._own(self._run(run, worker))

    async def _dispatch_claims(self, shared: SharedStore) -> None:
        """On a shared store: for each free worker, claim the best job any service may start
        (no prefetch); with none, wait for word of one."""
        while True:
            try:
                worker = await self._free_worker()
            except PoolClosed:
                return
            try:
                job = await self._claim(shared)
            except asyncio.CancelledError:
                self._pool.release(worker)
                raise
            stale = self._runs.get(job.id)
            if stale is not None:  # requeued under a lease this service lost, claimed again
                self._stop_run(stale)
                self._give_back(job)
                self._pool.release(worker)
                continue
            # before any await: a cancel from now on finds it; a worker that died meanwhile
            # gives the job back (_start_claimed)
            run = _Run(job.id, None, claimed=job)
            self._runs[job.id] = run
            self._own(self._run(run, worker))

    async def _claim(self, shared: SharedStore) -> Job:
        while True:
            shared.work.clear()
            claiming = asyncio.ensure_future(
                shared.claim(
                    self._clock(), self._queue_limits, self._task_limits, self._queue_gaps_s
                )
            )
            try:
                job = await asyncio.shield(claiming)
            except asyncio.CancelledError:
                # stopped while a claim may yet commit: a job claimed then is given back
                claiming.add_done_callback(self._give_back_claimed)
                raise
            except Exception as exc:
                log.error("cannot claim a job (%s); trying again", exc)
                await asyncio.sleep(RETRY_DUE_S)
                continue
            if job is not None:
                return job
            wait_s = CLAIM_RECHECK_S
            if shared.rates_open_at is not None:  # a rate limit lets one go then
                wait_s = min(wait_s, max(0.0, shared.rates_open_at - self._clock()))
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(wait_s):
                    await shared.work.wait()

    def _give_back_claimed(self, claiming: asyncio.Future[Job | None]) -> None:
        if claiming.cancelled() or claiming.exception() is not None:
            return
        job = claiming.result()
        if job is not None:
            self._give_back(job)

    def _give_back(self, job: Job) -> None:
        """A job claimed and not run: queued again, the attempt not counted against it."""
        change = _fenced(_ending(JobState.QUEUED, self._clock(), outcome="interrupted"), job)
        with contextlib.suppress(RuntimeError):  # the store closed: the lease hands it back
            self._db.update_soon(job.id, change).add_done_callback(_log_failure)

    async def _lease(self, shared: SharedStore) -> None:
        """Renew this service's lease each third of it; requeue the jobs of services whose
        lease ran out, and this service's own running jobs it no longer runs (a settle that
        could not be written). A job must never run in two places at once: once most of the
        lease is gone since the last renewal was sent, with none since, this service stops its
        own runs, before the others may take them."""
        renewed = time.monotonic()  # when the last renewal that held was sent
        while True:
            await asyncio.sleep(self._lease_s / 3)
            sent = time.monotonic()
            try:
                async with asyncio.timeout(self._lease_s / 3):
                    await self._beat(shared)
                renewed = sent
                now = self._clock()
                expired = functools.partial(
                    interrupt, at=now, max_interruptions=self._max_interruptions
                )
                requeued = await shared.expire_leases(self._lease_s, expired)
                stray = _ending(JobState.QUEUED, now, outcome="interrupted")
                strays = await shared.requeue_strays(
                    list(self._runs), now - self._lease_s / 3, stray
                )
                if requeued or strays:
                    shared.work.set()
            except Exception as exc:
                log.warning("cannot renew this service's lease: %s", exc)
            if time.monotonic() - renewed > self._lease_s * LEASE_STOP_FRACTION:
                self._stop_runs("its lease is running out")

    async def _show_workers(self, shared: SharedStore) -> None:
        """Keep this service's workers, as the others' /workers list them, at most
        WORKERS_SHOWN_S behind: a write only when they changed (the pool's state is in memory,
        so looking costs nothing), rather than waiting for the next heartbeat."""
        shown = self._pool.status()
        while True:
            await asyncio.sleep(WORKERS_SHOWN_S)
            workers = self._pool.status()
            if workers != shown:
                try:
                    await shared.show_workers(workers)
                    shown = workers
                except Exception as exc:  # the next heartbeat carries them anyway
                    log.debug("cannot show this service's workers: %s", exc)

    async def _beat(self, shared: SharedStore) -> None:
        if not await shared.heartbeat(self._pool.status(), self._lease_s):
            self._stop_runs("its lease ran out: the others run its jobs")

    def _stop_runs(self, why: str) -> None:
        if self._runs:
            log.error("stopping the %d running job(s) here: %s", len(self._runs), why)
        for run in list(self._runs.values()):
            self._stop_run(run)

    def _stop_run(self, run: _Run) -> None:
        run.interrupted = True
        if run.worker is not None:
            self._own(self._pool.kill(run.worker, run.job_id))

    async def _run(self, run: _Run, worker: Worker) -> None:
        try:
            started = await self._start(run, worker)
            if started is not None:
                job, worker = started
                deadline = self._arm_timeout(run, job.options.timeout_s)
                try:
                    outcome = await self._pool.run(
                        worker,
                        job.id,
                        job.task,
                        job.args,
                        job.kwargs,
                        soft_timeout_s=job.options.soft_timeout_s,
                        memory_limit_mb=job.options.memory_limit_mb,
                    )
                finally:
                    if deadline is not None:
                        deadline.cancel()
                run.worker = None  # it is free again: a late cancel must not touch its next job
                await self._settle(run, outcome)
        except Exception:
            log.exception(
                "job %s: unexpected error in the scheduler",
                run.job_id,
                extra={"job_id": run.job_id},
            )
            await self._salvage(run)
        finally:
            if self._runs.get(run.job_id) is run:  # a retry on request may have begun anew
                del self._runs[run.job_id]
            if run.entry is not None:
                self._ready.release(run.entry)
            elif self._shared is not None:
                self._shared.work.set()  # a place under a limit is free
            run.done.set()
            self._run_ended.set()

    async def _start(self, run: _Run, worker: Worker) -> tuple[Job, Worker] | None:
        """Move the job to running on a live worker; None if it should not run."""
        if run.claimed is not None:
            return await self._start_claimed(run, run.claimed, worker)
        job = None
        if not (self._closing or self._draining) and run.job_id not in self._canceling:
            job = await self._stored(run.job_id)
        if run.cancel_requested:  # canceled while we looked it up (also while draining)
            self._pool.release(worker)
            await self._db.update(run.job_id, _ending(JobState.CANCELED, self._clock()))
            return None
        stopping = self._closing or self._draining  # it stays queued for the next start
        if job is None or job.state is not JobState.QUEUED or run.interrupted or stopping:
            self._pool.release(worker)
            return None
        if not worker.alive:  # it died while we looked the job up: go round again
            self._make_ready(job)
            return None
        now = self._clock()
        # Written behind, not awaited: once a job has a run nothing else may change its state,
        # and the writer applies this before the job's progress and outcome. The store journals
        # the start first, so a crash before the commit still counts the attempt (see start()).
        try:
            claim = self._db.start_soon(run.job_id, job.attempt + 1, lambda j: _claim(j, now))
        except OSError as exc:  # the journal cannot be written (a full disk): not now
            log.error(
                "job %s: cannot journal its start (%s); trying again", run.job_id, exc,
                extra={"job_id": run.job_id},
            )  # fmt: skip
            self._pool.release(worker)
            asyncio.get_running_loop().call_later(RETRY_DUE_S, self._make_ready, job)
            return None
        claim.add_done_callback(_log_failure)
        run.worker = worker
        return transition(job, JobState.RUNNING, now), worker

    async def _start_claimed(
        self, run: _Run, job: Job, worker: Worker
    ) -> tuple[Job, Worker] | None:
        """A job claimed from a shared store is running already: run it, or give it back."""
        now = self._clock()
        if run.cancel_requested:  # canceled between its claim and now
            self._pool.release(worker)
            await self._db.update(job.id, _fenced(_ending(JobState.CANCELED, now), job))
            return None
        if self._closing or self._draining or run.interrupted or not worker.alive:
            self._pool.release(worker)
            change = _fenced(_ending(JobState.QUEUED, now, outcome="interrupted"), job)
            await self._db.update(job.id, change)
            return None
        run.worker = worker
        return job, worker

    def _arm_timeout(self, run: _Run, timeout_s: float | None) -> asyncio.TimerHandle | None:
        """Kill the run's process tree once it has run ``timeout_s``; None without a limit."""
        if timeout_s is None:
            return None
        run.timeout_s = timeout_s

        def expire() -> None:
            if run.worker is not None and not run.cancel_requested:
                run.timed_out = True
                self._own(self._pool.kill(run.worker, run.job_id))

        return asyncio.get_running_loop().call_later(timeout_s, expire)

    async def _salvage(self, run: _Run) -> None:
        """After an unexpected error, leave the job where it can go on: failed, or queued."""
        job_id = run.job_id
        now = self._clock()
        error = JobError("InternalError", "the service failed while running this job; see its log")

        def failed(job: Job) -> Job | None:
            if job.state is JobState.RUNNING:
                return transition(job, JobState.FAILED, now, error=error)
            return None

        change = failed if run.claimed is None else _fenced(failed, run.claimed)

        try:
            if await self._db.update(job_id, change) is None:
                log.error(
                    "job %s: left as stored; a restart runs it if it is queued", job_id,
                    extra={"job_id": job_id},
                )  # fmt: skip
        except Exception:
            log.exception("job %s: cannot record the error", job_id, extra={"job_id": job_id})

    async def _stored(self, job_id: str) -> Job | None:
        try:
            return await self._db.get_job(job_id)
        except JobNotFound:
            return None

    async def _settle(self, run: _Run, outcome: Outcome) -> None:
        """Record how a running job ended; if the service killed it, the reason decides."""
        now = self._clock()
        if outcome.killed and run.cancel_requested:
            change = _ending(JobState.CANCELED, now)
        elif outcome.killed and run.timed_out:
            error = JobError("Timeout", f"the job ran longer than its timeout_s ({run.timeout_s})")
            change = functools.partial(_failing, error=error, at=now, rand=self._rand)
        elif outcome.killed:  # a clean stop, not the job's fault: queued again, not counted
            change = _ending(JobState.QUEUED, now, outcome="interrupted")
        elif outcome.ok:
            change = _ending(JobState.SUCCEEDED, now, result=outcome.result)
        else:
            assert outcome.error is not None
            change = functools.partial(_failing, error=outcome.error, at=now, rand=self._rand)
        if run.claimed is not None:  # only if it is still this run's (see _fenced)
            change = _fenced(change, run.claimed)
        settled = await self._db.update(run.job_id, change)
        if settled is not None and settled.state is JobState.SCHEDULED:  # to retry, later
            self._scheduled.add(settled.scheduled_at or now, settled.id)

    async def retry(self, job_id: str) -> Job:
        """Queue a failed or canceled job again: the same job, a new attempt, its history kept.

        Raises JobNotFound, InvalidTransition for a job in another state, or KeyTaken when
        another unfinished job holds its key.
        """
        return await _outliving_caller(self._rerun(job_id))

    async def _rerun(self, job_id: str) -> Job:
        retried = await self._db.update(job_id, functools.partial(_rerun, at=self._clock()))
        assert retried is not None
        if retried.state is JobState.QUEUED:  # not waiting again for its dependencies
            self._make_ready(retried)
        return retried

    def _make_ready(self, job: Job) -> None:
        """Queue a due job for a worker (committed as queued before this is called)."""
        if self._shared is not None:  # it is in the store for any service to claim
            self._shared.work.set()
            return
        options = job.options
        queue = options.queue or DEFAULT_QUEUE
        self._ready.put(job.id, job.task, queue, options.priority or 0, gap_s(options.rate_limit))

    def on_progress(self, job_id: str, progress: Progress) -> None:
        """Called by the pool, in order with the job's other messages."""

        run = self._runs.get(job_id)
        attempt = None if run is None or run.claimed is None else run.claimed.attempt

        def change(job: Job) -> Job | None:
            if job.state is not JobState.RUNNING or attempt not in (None, job.attempt):
                return None  # ended meanwhile; or, on a shared store, no longer this run's
            return dataclasses.replace(job, progress=progress)

        future = self._db.update_soon(job_id, change, kind="progress")
        future.add_done_callback(_log_failure)

    def on_log(self, job_id: str, entries: list[dict[str, Any]], dropped: int) -> None:
        """Called by the pool with a batch of a job's output, in order with its other messages
        (so a job's last lines are stored before its end)."""
        future = self._db.append_logs_soon(job_id, entries_from_worker(entries), dropped)
        future.add_done_callback(_log_failure)

    def _own(self, coro: Coroutine[Any, Any, object]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._owned.add(task)
        task.add_done_callback(self._owned.discard)


async def _outliving_caller(coro: Coroutine[Any, Any, T]) -> T:
    """Run ``coro`` to its end even if the caller is cancelled (a client hanging up): a job
    committed as queued must also reach the ready queue, or it would wait for a restart."""
    return await asyncio.shield(asyncio.ensure_future(coro))


def _started_then_interrupted(job: Job, *, attempt: int, at: float) -> Job | None:
    """A job whose start of ``attempt`` never reached the store: record it as running (the
    attempt counts), so that recovery treats it like any job the service died under."""
    if job.state is JobState.QUEUED and job.attempt == attempt - 1:
        return transition(job, JobState.RUNNING, at)
    return None


def _claim(job: Job, at: float) -> Job | None:
    if job.state is JobState.QUEUED:
        return transition(job, JobState.RUNNING, at)
    return None


def _failing(job: Job, *, error: JobError, at: float, rand: Callable[[], float]) -> Job | None:
    """The running job after ``error``: scheduled for a retry if its policy has one left."""
    if job.state in TERMINAL:
        return None
    if retries_left(job, error):
        wait_s = retry_delay_s(job.options, job.retries + 1, rand)
        return transition(
            job, JobState.SCHEDULED, at, error=error, retries=job.retries + 1,
            scheduled_at=at + wait_s, outcome="retried",
        )  # fmt: skip
    return transition(job, JobState.FAILED, at, error=error)


def _rerun(job: Job, at: float) -> Job:
    if job.state not in (JobState.FAILED, JobState.CANCELED):
        raise InvalidTransition(job.id, job.state, JobState.QUEUED, job)
    return transition(job, JobState.QUEUED, at)


def _make_due(job: Job, at: float) -> Job | None:
    # not canceled meanwhile, and this is its time, not an earlier one it had before
    if job.state is JobState.SCHEDULED and (job.scheduled_at or 0.0) <= at:
        return transition(job, JobState.QUEUED, at)
    return None


def _cancel_waiting(job: Job, at: float) -> Job | None:
    if job.state in (JobState.WAITING, JobState.SCHEDULED, JobState.QUEUED):
        return transition(job, JobState.CANCELED, at)
    return None


def _ending(state: JobState, at: float, **changes: Any) -> Callable[[Job], Job | None]:
    """A change to ``state`` that leaves a job already finished alone."""

    def change(job: Job) -> Job | None:
        if job.state in TERMINAL:
            return None
        return transition(job, state, at, **changes)

    return change


def _fenced(change: Callable[[Job], Job | None], run: Job) -> Callable[[Job], Job | None]:
    """``change``, applied only while the job is still the running attempt ``run`` claimed:
    a service the others took for dead (its jobs requeued, maybe running elsewhere now) must
    not record over what came after."""

    def fenced(job: Job) -> Job | None:
        if job.state is not JobState.RUNNING or job.attempt != run.attempt:
            return None
        return change(job)

    return fenced


def _log_failure(future: asyncio.Future[Any]) -> None:
    if not future.cancelled() and future.exception() is not None:
        log.error("a write-behind update failed: %s", future.exception())
