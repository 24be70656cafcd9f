"""Periodic jobs: the schedules, kept in the store, and the loop that fires their ticks.

A tick makes an ordinary job through the scheduler's submit, in the same transaction that records
the tick as the schedule's latest: the job and the record are committed together or not at all,
and a tick already recorded is refused. So a tick makes one job, also across crashes and
restarts; the ticks missed while the service was down make one job, for the latest of them.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import math
import time
import uuid
from collections.abc import Callable
from datetime import tzinfo
from typing import Any

from .cron import Schedule, check_cron
from .db import Store, Transaction
from .errors import (
    InvalidArguments,
    InvalidOptions,
    ScheduleConflict,
    ScheduleNotFound,
    ServiceError,
    ShuttingDown,
    UnknownTask,
)
from .jobs import JobSpec, isoformat
from .options import JobOptions
from .scheduler import Scheduler
from .tasks import Task

log = logging.getLogger("conveyor.schedules")

# How long the loop waits at most before it looks at the wall clock again: the clock can jump
# (NTP, a suspended machine) where the event loop's monotonic clock does not.
MAX_WAIT_S = 1.0
RETRY_S = 1.0  # after a failed write, how soon to try a tick again


class _TickTaken(ServiceError):
    """The tick was recorded already, or the schedule is gone: no job for it."""


def declared_id(task_name: str) -> str:
    """The id of the schedule that ``@task(cron=...)`` declares."""
    return f"task:{task_name}"


def declared_changes(
    stored: dict[str, Schedule], tasks: dict[str, Task], now: float
) -> tuple[list[Schedule], list[str]]:
    """What to store and what to delete so the stored schedules match those declared in code.

    A declaration whose cron expression changed starts anew: its first tick is the next one. A
    pause outlives a change of the code: only a resume ends it.
    """
    declared = {declared_id(t.name): (t.name, t.cron) for t in tasks.values() if t.cron}
    put = [
        Schedule(schedule_id, name, cron, now, source="task", paused=_paused(known))
        for schedule_id, (name, cron) in declared.items()
        if (known := stored.get(schedule_id)) is None
        or (known.source, known.task, known.cron) != ("task", name, cron)
    ]
    remove = [i for i, s in stored.items() if s.source == "task" and i not in declared]
    return put, remove


def _paused(schedule: Schedule | None) -> bool:
    return schedule is not None and schedule.paused


class Schedules:
    """Owns the schedules: creates and deletes them, and fires their ticks as jobs."""

    def __init__(
        self,
        db: Store,
        scheduler: Scheduler,
        *,
        zone: tzinfo,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._db = db
        self._scheduler = scheduler
        self.zone = zone
        self._clock = clock
        self._schedules: dict[str, Schedule] = {}  # as stored
        self._look_at: dict[str, float] = {}  # when each is due next (or worth a retry)
        self._changed = asyncio.Event()
        self._loop_task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Schedules:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def start(self) -> None:
        """Store the schedules declared in code, load them all, start firing their ticks."""
        stored = {s.id: s for s in await self._db.schedules()}
        put, remove = declared_changes(stored, self._scheduler.tasks, self._clock())
        if put or remove:
            await self._db.replace_schedules(put, remove)
        for schedule_id in remove:
            del stored[schedule_id]
        stored.update((s.id, s) for s in put)
        for schedule in stored.values():
            if schedule.task not in self._scheduler.tasks:
                log.warning("schedule %s: unknown task %r; no jobs", schedule.id, schedule.task)
            self._keep(schedule)
        self._loop_task = asyncio.get_running_loop().create_task(self._run())

    async def close(self) -> None:
        """Stop firing ticks; idempotent. Ticks that come meanwhile fire at the next start."""
        if self._loop_task is not None:
            self._loop_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._loop_task
            self._loop_task = None

    # -- what the app asks for ----------------------------------------------------------------

    async def create(
        self,
        task: str,
        cron: str,
        *,
        args: list[Any] | None = None,
        kwargs: dict[str, Any] | None = None,
        options: JobOptions | None = None,
        schedule_id: str | None = None,
    ) -> Schedule:
        """Store a schedule; its first job comes at the first tick after now.

        Raises ValueError for a bad cron expression, UnknownTask, InvalidArguments,
        InvalidOptions, or ScheduleConflict when ``schedule_id`` is taken.
        """
        schedule = Schedule(
            id=schedule_id or str(uuid.uuid4()), task=task, cron=check_cron(cron),
            created_at=self._clock(), args=args or [], kwargs=kwargs or {},
            options=options or JobOptions(),
        )  # fmt: skip
        self._scheduler.check(JobSpec(task, schedule.args, schedule.kwargs, schedule.options))
        await self._db.add_schedule(schedule)
        self._keep(schedule)
        return schedule

    async def delete(self, schedule_id: str) -> None:
        """Delete a schedule made through the API; the jobs it made stay.

        Raises ScheduleNotFound, or ScheduleConflict for a schedule declared in code.
        """
        schedule = self.get(schedule_id)
        if schedule.source == "task":
            reason = f"declared by @task(cron=...) on task {schedule.task!r}; remove it there"
            raise ScheduleConflict(schedule_id, reason)
        await self._db.remove_schedule(schedule_id)
        self._schedules.pop(schedule_id, None)
        self._look_at.pop(schedule_id, None)

    async def pause(self, schedule_id: str) -> Schedule:
        """Stop making jobs until resumed; pausing a paused schedule changes nothing.

        Raises ScheduleNotFound.
        """
        schedule = self.get(schedule_id)
        if schedule.paused:
            return schedule
        return await self._store_pause(schedule, paused=True, resumed_at=schedule.resumed_at)

    async def resume(self, schedule_id: str) -> Schedule:
        """Make jobs again from the first tick after now: the ticks that passed while paused
        make none. Resuming an active schedule changes nothing. Raises ScheduleNotFound."""
        schedule = self.get(schedule_id)
        if not schedule.paused:
            return schedule
        return await self._store_pause(schedule, paused=False, resumed_at=self._clock())

    async def _store_pause(
        self, schedule: Schedule, *, paused: bool, resumed_at: float | None
    ) -> Schedule:
        await self._db.set_paused(schedule, paused=paused, resumed_at=resumed_at)
        # as held now: a tick may have fired during the write
        current = self._schedules.get(schedule.id)
        if current is None or current.created_at != schedule.created_at:
            raise ScheduleNotFound(schedule.id)  # deleted during the write
        changed = dataclasses.replace(current, paused=paused, resumed_at=resumed_at)
        self._keep(changed)
        return changed

    def get(self, schedule_id: str) -> Schedule:
        """Raises ScheduleNotFound."""
        try:
            return self._schedules[schedule_id]
        except KeyError:
            raise ScheduleNotFound(schedule_id) from None

    def list_schedules(self) -> list[Schedule]:
        """Every schedule, oldest first."""
        return sorted(self._schedules.values(), key=lambda s: (s.created_at, s.id))

    def next_run_at(self, schedule: Schedule) -> float | None:
        return schedule.next_run_at(self.zone)

    async def refresh(self) -> None:
        """On a shared store, take up what other services did to the schedules (made,
        deleted, paused, fired): the store is the truth. A no-op on a store of this service's
        alone, where every change went through here."""
        if self._db.sharing() is None:
            return
        stored = {s.id: s for s in await self._db.schedules()}
        for schedule_id in set(self._schedules) - set(stored):
            self._schedules.pop(schedule_id, None)
            self._look_at.pop(schedule_id, None)
        for schedule in stored.values():
            if self._schedules.get(schedule.id) != schedule:
                self._keep(schedule)

    # -- firing -------------------------------------------------------------------------------

    async def fire_due(self) -> int:
        """Make the jobs of the ticks due now; how many were made. The loop calls this."""
        now = self._clock()
        due = [self._schedules[i] for i, at in self._look_at.items() if at <= now]
        made = await asyncio.gather(*(self._fire(schedule, now) for schedule in due))
        return sum(made)

    async def _run(self) -> None:
        while True:
            self._changed.clear()
            try:
                await self.refresh()
                await self.fire_due()
                next_at = min(self._look_at.values(), default=None)
            except Exception:  # a bug, not the store (_fire handles that): keep going
                log.exception("the schedules loop failed; trying again")
                next_at = self._clock() + MAX_WAIT_S
            shared = self._db.sharing() is not None
            if next_at is None and not shared:
                await self._changed.wait()  # no schedule: until one is made
                continue
            # on a shared store, another service may make, pause or resume one meanwhile: the
            # loop reads them again at least each MAX_WAIT_S
            wait_s = min((next_at or math.inf) - self._clock(), MAX_WAIT_S)
            if wait_s > 0:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(wait_s):
                        await self._changed.wait()

    async def _fire(self, schedule: Schedule, now: float) -> bool:
        """Make the job of the schedule's due tick, if one is due; whether a job was made."""
        tick = schedule.due_tick(now, self.zone)
        made = False
        if tick is not None:
            try:
                made = await self._submit(schedule, tick)
            except ShuttingDown:  # the tick stays due: the next start makes its job
                if schedule.id in self._look_at:
                    self._look_at[schedule.id] = self._clock() + RETRY_S
                return False
            except Exception as exc:  # the store failed: the tick stays due
                log.error(
                    "schedule %s: cannot fire (%s); trying again", schedule.id, exc,
                    extra={"schedule_id": schedule.id, "task": schedule.task},
                )  # fmt: skip
                if schedule.id in self._look_at:
                    self._look_at[schedule.id] = self._clock() + RETRY_S
                return False
        current = self._schedules.get(schedule.id)
        if current is None or current.created_at != schedule.created_at:  # deleted, or made anew
            return made
        # a pause that came during the write refused the tick: then there is no firing to record
        if tick is not None and (made or not current.paused):
            current = current.fired(tick)
        self._keep(current)
        return made

    async def _submit(self, schedule: Schedule, tick: float) -> bool:
        """The tick's job, committed with the tick's record; False if there is none to make."""

        async def claim(batch: Transaction) -> None:
            if not await batch.claim_tick(schedule, tick):
                raise _TickTaken

        spec = JobSpec(
            schedule.task, schedule.args, schedule.kwargs, schedule.options,
            schedule_id=schedule.id,
        )  # fmt: skip
        try:
            job = (await self._scheduler.submit(spec, guard=claim)).job
        except _TickTaken:
            return False
        except (UnknownTask, InvalidArguments, InvalidOptions) as exc:  # the task changed
            log.error(
                "schedule %s: no job for the tick at %s: %s", schedule.id, isoformat(tick), exc
            )
            return False
        if tick > (schedule.next_run_at(self.zone) or tick):
            log.info("schedule %s: ticks were missed; one job for the latest", schedule.id)
        log.debug("schedule %s: job %s for the tick at %s", schedule.id, job.id, isoformat(tick))
        return True

    def _keep(self, schedule: Schedule) -> None:
        """Hold ``schedule`` as stored; the loop looks at it again at its next tick."""
        self._schedules[schedule.id] = schedule
        next_at = schedule.next_run_at(self.zone)
        if next_at is None:
            self._look_at.pop(schedule.id, None)
        else:
            self._look_at[schedule.id] = next_at
        self._changed.set()
