"""What the service asks of a store, whichever database it keeps the jobs in.

``Store`` is all the scheduler, the schedules, the retention sweep and the read side use;
``Transaction`` is what an operation sees of the transaction it runs in (a guard that claims a
schedule's tick, say). The SQLite backend (``sqlite.py``) implements both.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, Self, TypeVar

from ..cron import Schedule
from ..jobs import Event, Job, JobState
from ..logs import LogEntry
from ..stats import JobStats
from ..workflows import Workflow

T = TypeVar("T")

MAX_PAGE_BYTES = 8 * 1024 * 1024  # of a list page's stored JSON: the jobs past it wait for "next"


def fit_page(sizes: Sequence[Sequence[int]], limit: int, max_bytes: int) -> tuple[list[int], bool]:
    """The ``seq`` of the jobs a list page takes, from (seq, stored bytes) of up to ``limit``
    + 1 jobs in page order: at most ``limit``, fewer when their JSON would pass ``max_bytes``
    (one at least); and whether more jobs follow. A page of jobs with megabytes of arguments
    or errors each is cut short, not held in memory."""
    taken: list[int] = []
    total = 0
    for seq, size in sizes[:limit]:
        if taken and total + size > max_bytes:
            break
        taken.append(seq)
        total += size
    return taken, len(taken) < len(sizes)


@dataclass(frozen=True, slots=True)
class IdempotencyClaim:
    """An ``Idempotency-Key`` header and a digest of the request it came with."""

    key: str
    request: str
    at: float  # epoch seconds: when the request came
    ttl_s: float  # how long the key answers with the same jobs


class Transaction(Protocol):
    """One transaction of the store's writer, as the operations inside it see it: they read
    through it, so each sees what the ones before it staged."""

    async def get(self, job_id: str) -> Job | None:
        """The job as this transaction sees it; None if there is none."""
        ...

    def put(self, job: Job, *, new: bool = False, kind: str | None = "state") -> None:
        """Stage ``job`` (read through ``get`` first, unless ``new``) with a ``kind`` event."""
        ...

    async def holder_of(self, key: str) -> Job | None:
        """The unfinished job that holds ``key``, as this transaction sees it."""
        ...

    async def claim_tick(self, schedule: Schedule, tick_at: float) -> bool:
        """Record ``tick_at`` as the schedule's latest fired tick; False, changing nothing, if
        that tick or a later one already fired, the schedule is paused (or was resumed after
        the tick) or is gone."""
        ...

    async def insert_workflow(
        self, workflow_id: str, created_at: float, output: dict[str, Any]
    ) -> None:
        """Store a new workflow (its jobs are stored with it, in the same transaction)."""
        ...


# Runs first in the transaction that stores new jobs: it may write along with them, or refuse by
# raising a ServiceError, and then no job is stored.
Guard = Callable[[Transaction], Awaitable[None]]
Change = Callable[[Job], Job | None]  # a job as stored -> the job to store, or None: as it is


class Store(Protocol):
    """The job store. Writes are committed before their futures resolve, and the store calls
    its ``on_commit`` listener with each transaction's events, in id order."""

    stats: JobStats  # the jobs' counts as of the last commit

    def sharing(self) -> SharedStore | None:
        """The store as other services share it (PostgreSQL), or None: this service's alone."""
        ...

    async def open(self) -> None: ...

    async def close(self) -> None: ...

    async def __aenter__(self) -> Self: ...

    async def __aexit__(self, *exc_info: object) -> None: ...

    @property
    def last_event_id(self) -> int:
        """The id of the newest committed event (0 when there is none)."""
        ...

    # -- writes -----------------------------------------------------------------------------

    def transact_soon(self, operation: Callable[[Transaction], Awaitable[T]]) -> asyncio.Future[T]:
        """Queue ``operation`` for the next transaction, in call order; the future resolves
        once it is committed (or with the operation's own error)."""
        ...

    async def transact(self, operation: Callable[[Transaction], Awaitable[T]]) -> T: ...

    def submit_soon(
        self,
        jobs: Sequence[Job],
        idempotency: IdempotencyClaim | None = None,
        *,
        guard: Guard | None = None,
    ) -> asyncio.Future[list[tuple[Job, bool]]]:
        """Store new jobs in one transaction; each with whether it was created (False: an
        unfinished job holding its key, or an earlier request's job, stands in for it)."""
        ...

    async def submit(
        self,
        jobs: Sequence[Job],
        idempotency: IdempotencyClaim | None = None,
        *,
        guard: Guard | None = None,
    ) -> list[tuple[Job, bool]]: ...

    def update_soon(
        self, job_id: str, change: Change, *, kind: str = "state"
    ) -> asyncio.Future[Job | None]: ...

    async def update(self, job_id: str, change: Change, *, kind: str = "state") -> Job | None:
        """Apply ``change`` to the job as stored and write the result with a ``kind`` event;
        JobNotFound for an unknown id."""
        ...

    def start_soon(self, job_id: str, attempt: int, change: Change) -> asyncio.Future[Job | None]:
        """``update_soon`` for a job about to run its ``attempt``, safe to run before it
        commits: a start that never reached the store is known at the next start."""
        ...

    def started_unrecorded(self) -> list[tuple[str, int]]: ...

    def forget_started(self) -> None: ...

    async def update_all(self, state: JobState, change: Callable[[Job], Job]) -> list[Job]: ...

    def append_logs_soon(
        self, job_id: str, entries: Sequence[LogEntry], dropped: int = 0
    ) -> asyncio.Future[None]: ...

    async def delete_logs(self, job_ids: Sequence[str]) -> None: ...

    async def prune(self, finished_before: float, limit: int) -> int: ...

    async def prune_idempotency(self, created_before: float) -> None: ...

    async def add_schedule(self, schedule: Schedule) -> None: ...

    async def remove_schedule(self, schedule_id: str) -> None: ...

    async def set_paused(
        self, schedule: Schedule, *, paused: bool, resumed_at: float | None
    ) -> None: ...

    async def replace_schedules(self, put: Sequence[Schedule], remove: Sequence[str]) -> None: ...

    async def check_writable(self) -> None: ...

    # -- reads ------------------------------------------------------------------------------

    async def get_job(self, job_id: str) -> Job: ...

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
    ) -> tuple[list[Job], int | None]: ...

    async def events_after(
        self, after_id: int, *, job_id: str | None = None, limit: int = 500
    ) -> list[Event]: ...

    async def job_logs(
        self, job_id: str, *, tail: int | None = None
    ) -> tuple[list[LogEntry], int]: ...

    async def rate_limits(self) -> dict[str, float]:
        """When the next job under each rate limit may start, as stored."""
        ...

    def note_rates_soon(self, next_at: Mapping[str, float]) -> asyncio.Future[None]:
        """Store when the next jobs under these rate limits may start, in call order."""
        ...

    async def workflow(self, workflow_id: str) -> Workflow:
        """The workflow with its jobs in the order made; WorkflowNotFound if none."""
        ...

    async def workflow_events_after(
        self, workflow_id: str, after_id: int, *, limit: int = 500
    ) -> list[Event]:
        """The events of the workflow's jobs after ``after_id``, in id order."""
        ...

    async def ids_in_state(self, state: JobState) -> list[str]: ...

    async def queued(self) -> list[tuple[str, str, str, int, str | None]]:
        """(id, task, queue, priority, rate limit) of every queued job, oldest first."""
        ...

    async def scheduled(self) -> list[tuple[float, str]]: ...

    async def schedules(self) -> list[Schedule]: ...

    async def ping(self) -> None: ...


class SharedStore(Store, Protocol):
    """A store that several services share: they claim its jobs, and lease the ones they run
    (a service that stops beating loses them to the others)."""

    instance_id: str  # this service, as the others know it
    work: asyncio.Event  # set when a job may have become claimable (by any service)
    # called with the id of a job another service was asked to cancel
    on_cancel_requested: Callable[[str], None] | None

    rates_open_at: float | None  # after an empty claim: when a rate limit lets a job go

    async def claim(
        self,
        at: float,
        queue_limits: Mapping[str, int],
        task_limits: Mapping[str, int],
        queue_gaps_s: Mapping[str, float] | None = None,
    ) -> Job | None:
        """Move the best claimable job to running, held by this service; None if none."""
        ...

    async def heartbeat(self, workers: dict[str, Any], lease_s: float) -> bool:
        """Renew this service's lease; False if it had run out (its jobs are not its own)."""
        ...

    async def requeue_strays(
        self, running: list[str], started_before: float, change: Callable[[Job], Job | None]
    ) -> list[Job]:
        """Apply ``change`` to this service's running jobs it does not run (``running``)."""
        ...

    async def expire_leases(self, lease_s: float, change: Callable[[Job], Job]) -> list[Job]:
        """Apply ``change`` to the running jobs of services silent for ``lease_s``."""
        ...

    async def show_workers(self, workers: dict[str, Any]) -> None:
        """Let the others see this service's workers as they are now (between heartbeats)."""
        ...

    async def held_by_rate(self, at: float) -> dict[str, int]:
        """Queued jobs per task that a rate limit holds back at ``at``."""
        ...

    async def instances(self) -> list[dict[str, Any]]: ...

    async def request_cancel(self, job_id: str) -> None:
        """Ask the service running ``job_id`` to cancel it."""
        ...
