"""A supervisor of long-lived worker processes: start them, run a job on one, kill, replace.

Each worker leads its own session, so killing a job's process group stops every process the job
started. A worker that dies or is killed is replaced at once, so capacity never shrinks; so is
one recycled between jobs (too many jobs run, too much memory held), whose replacement starts
before it has left.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

from . import protocol
from .errors import PoolClosed
from .jobs import JobError, Progress, isoformat
from .memory import resident_mb
from .recycling import DEFAULT_LIMITS, WorkerLimits, recycle

log = logging.getLogger("conveyor.pool")

# Waits between restarts of a worker that dies before it is ready (a broken task module):
# back off instead of spinning.
RESPAWN_BACKOFF_S = (0.0, 0.1, 0.5, 1.0, 2.0, 5.0)
RESPAWN_AFTER_KILL_S = 0.05
GROUP_POLL_S = 0.005
GROUP_POLL_MAX_S = 0.05

ProgressCallback = Callable[[str, Progress], None]
LogCallback = Callable[[str, list[dict[str, Any]], int], None]  # job id, entries, dropped


@dataclass(frozen=True, slots=True)
class Outcome:
    """How a job's run ended, as the worker (or its death) told it."""

    result: Any = None
    error: JobError | None = None
    killed: bool = False  # stopped by kill(): the reason it was killed decides, not this

    @property
    def ok(self) -> bool:
        return self.error is None


@dataclass(eq=False)
class Worker:
    """One worker process as the pool sees it."""

    proc: asyncio.subprocess.Process
    writer: asyncio.WriteTransport
    reader: asyncio.StreamReader
    read_transport: asyncio.ReadTransport
    ready: asyncio.Event = field(default_factory=asyncio.Event)
    exited: asyncio.Event = field(default_factory=asyncio.Event)
    job_id: str | None = None
    outcome: asyncio.Future[Outcome] | None = None
    killing: bool = False
    problem: str | None = None  # why the pool itself killed it (a broken message)
    started_at: float = field(default_factory=time.time)
    jobs_run: int = 0
    retiring: bool = False  # recycled: it runs its stop hooks and exits; already replaced
    start_failed: bool = False  # it reported why it could not start
    memory_limit_mb: int | None = None  # the running job's

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def alive(self) -> bool:
        return not self.exited.is_set() and not self.killing and not self.retiring


def describe_exit(returncode: int | None) -> str:
    """A person's description of how a worker process ended."""
    if returncode is None:
        return "the worker process ended"
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = f"signal {-returncode}"
        return f"the worker process was killed by {name} (exit code {returncode})"
    return f"the worker process exited with code {returncode}"


def group_alive(pgid: int) -> bool:
    """Whether any process of group ``pgid`` is still running (zombies do not count).

    Orphaned children are reaped by PID 1, which in containers often never reaps them, so a
    plain ``killpg(pgid, 0)`` would see the zombies as alive forever.
    """
    try:
        entries = os.listdir("/proc")
    except OSError:  # no procfs: ask the kernel, zombies and all
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return False
        return True
    for entry in entries:
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue
        # "pid (comm) state ppid pgrp ...": comm may contain spaces and parentheses
        fields = stat[stat.rfind(b")") + 2 :].split()
        if len(fields) > 2 and int(fields[2]) == pgid and fields[0] not in (b"Z", b"X"):
            return True
    return False


async def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False  # the common case, answered without scanning /proc
    except PermissionError:
        return True
    return await asyncio.to_thread(group_alive, pgid)  # a scan can take milliseconds


def descendants(pid: int) -> list[int]:
    """Every process under ``pid`` (children, theirs, ...), from /proc; empty where there is
    no /proc, or none."""
    found: list[int] = []
    parents = [pid]
    while parents:
        parent = parents.pop()
        try:
            tasks = os.listdir(f"/proc/{parent}/task")
        except OSError:
            continue
        for task in tasks:
            try:
                with open(f"/proc/{parent}/task/{task}/children") as children:
                    kids = [int(child) for child in children.read().split()]
            except OSError:
                continue
            found.extend(kids)
            parents.extend(kids)
    return found


def _in_group(pid: int, pgid: int) -> bool:
    try:
        return os.getpgid(pid) == pgid
    except ProcessLookupError:
        return True  # gone: nothing left to do for it


def _signal(pid: int, signum: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.kill(pid, signum)


def _signal_group(pgid: int, signum: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signum)


class ProcessPool:
    """``size`` worker processes that import ``modules`` and run one job at a time each."""

    def __init__(
        self,
        size: int,
        modules: Sequence[str],
        *,
        grace_s: float,
        on_progress: ProgressCallback,
        on_log: LogCallback | None = None,
        limits: WorkerLimits = DEFAULT_LIMITS,
    ) -> None:
        self.size = size
        self.grace_s = grace_s
        self.limits = limits
        self._modules = tuple(modules)
        self._on_progress = on_progress
        self._on_log = on_log
        self._workers: set[Worker] = set()
        self._idle: asyncio.Queue[Worker] = asyncio.Queue()
        self._tasks: set[asyncio.Task[None]] = set()
        self._closing = False
        self._closed = asyncio.Event()  # wakes a respawn that is backing off
        self._failed_starts = 0
        self.last_start_error: str | None = None
        self.start_error: dict[str, Any] | None = None  # type, message, traceback
        self._logged_start_error: tuple[str, str] | None = None
        self.recycled: Counter[str] = Counter()
        # every worker replaced, by why: "jobs" or "memory" (recycled), "killed", "died"
        self.replaced: Counter[str] = Counter()

    async def __aenter__(self) -> ProcessPool:
        await asyncio.gather(*(self._spawn() for _ in range(self.size)))
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    # -- public API -----------------------------------------------------------------------

    async def acquire(self) -> Worker:
        """Wait for an idle worker and reserve it."""
        while True:
            if self._closing:
                raise PoolClosed
            worker = await self._idle.get()
            if worker.alive:
                return worker

    def release(self, worker: Worker) -> None:
        """Give back a worker that was acquired but not used."""
        if worker.alive and not self._closing:
            self._idle.put_nowait(worker)

    async def run(
        self,
        worker: Worker,
        job_id: str,
        task: str,
        args: list[Any],
        kwargs: dict[str, Any],
        *,
        soft_timeout_s: float | None = None,
        memory_limit_mb: int | None = None,
    ) -> Outcome:
        """Run one job on an acquired worker and wait for its outcome; the worker is freed after.

        If the process dies under the job, the outcome is a ``WorkerCrashed`` error.
        """
        loop = asyncio.get_running_loop()
        worker.job_id = job_id
        worker.outcome = loop.create_future()
        worker.memory_limit_mb = memory_limit_mb
        try:
            if worker.exited.is_set():  # it died after it was acquired: nobody would answer
                error = JobError("WorkerCrashed", "the worker process ended before the job began")
                return Outcome(error=error)
            message = protocol.Run(
                job_id,
                task,
                args,
                kwargs,
                soft_timeout_s,
                memory_limit_mb,
                self.limits.max_result_bytes,
                self.limits.max_log_lines,
            )
            worker.writer.write(protocol.encode(message))
            outcome = await asyncio.shield(worker.outcome)
            worker.jobs_run += 1
            return outcome
        finally:
            worker.job_id = None
            worker.outcome = None
            worker.memory_limit_mb = None
            self._after_job(worker)

    async def kill(self, worker: Worker, job_id: str | None = None) -> bool:
        """SIGTERM the worker's process group, SIGKILL what is left after the grace period.

        With ``job_id``, only while the worker still runs that job (False if it has moved on).
        Returns once the worker and every process of its group are gone; a replacement starts.
        """
        if job_id is not None and worker.job_id != job_id:
            return False
        worker.killing = True
        deadline = time.monotonic() + self.grace_s
        # processes of the job that left the group (setsid): frozen now, while the worker (a
        # subreaper) still holds them, so that none can start another; killed at the end
        escaped = [pid for pid in descendants(worker.pid) if not _in_group(pid, worker.pid)]
        for pid in escaped:
            _signal(pid, signal.SIGSTOP)
        _signal_group(worker.pid, signal.SIGTERM)
        worker.writer.close()  # a job that survives SIGTERM finds no next job and exits
        try:
            await asyncio.wait_for(worker.exited.wait(), self.grace_s)
        except TimeoutError:
            _signal_group(worker.pid, signal.SIGKILL)
            await worker.exited.wait()
        # the job's children got SIGTERM too; they have what is left of the grace period
        poll_s = GROUP_POLL_S
        while await _group_alive(worker.pid):
            if time.monotonic() >= deadline:
                _signal_group(worker.pid, signal.SIGKILL)
                break
            await asyncio.sleep(poll_s)
            poll_s = min(poll_s * 2, GROUP_POLL_MAX_S)
        for pid in escaped:
            _signal(pid, signal.SIGKILL)
        return True

    def status(self) -> dict[str, Any]:
        workers = [
            {
                "pid": w.pid,
                "job_id": w.job_id,
                "ready": w.ready.is_set(),
                "jobs_run": w.jobs_run,
                "started_at": isoformat(w.started_at),
            }
            for w in sorted(self._workers, key=lambda w: w.started_at)
            if not w.retiring
        ]
        return {
            "size": self.size,
            "alive": sum(1 for w in self._workers if w.ready.is_set() and w.alive),
            "busy": sum(1 for w in self._workers if w.job_id is not None),
            "workers": workers,
            "recycled": {"jobs": self.recycled["jobs"], "memory": self.recycled["memory"]},
            "last_start_error": self.last_start_error,
            "start_error": self.start_error,
        }

    async def close(self) -> None:
        """Stop every worker and wait for them; idempotent.

        An idle worker ends normally, running its stop hooks, within ``limits.stop_timeout_s``;
        a busy or starting one, or one that takes longer, is killed (SIGTERM, grace, SIGKILL).
        """
        self._closing = True
        self._closed.set()
        # a replacement may be starting as we close: go round until none is left
        while self._workers or self._tasks:
            await asyncio.gather(*(self._stop(w) for w in list(self._workers)))
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    async def _stop(self, worker: Worker) -> None:
        worker.writer.close()  # an idle worker exits on end of input
        if worker.ready.is_set() and worker.job_id is None and not worker.killing:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(worker.exited.wait(), self.limits.stop_timeout_s)
        await self.kill(worker)  # also takes any process its jobs left behind

    # -- recycling --------------------------------------------------------------------------

    def _after_job(self, worker: Worker) -> None:
        """Free the worker for the next job, or replace it if it has done enough."""
        verdict = None
        if worker.alive and not self._closing:
            memory_mb = resident_mb(worker.pid) if self.limits.max_memory_mb else None
            verdict = recycle(self.limits, worker.jobs_run, memory_mb)
        if verdict is None:
            self.release(worker)
            return
        worker.retiring = True
        self.recycled[verdict.kind] += 1
        self.replaced[verdict.kind] += 1
        log.info(
            "worker %d recycled: %s", worker.pid, verdict.reason, extra={"worker_pid": worker.pid}
        )
        worker.writer.close()  # end of input: it runs its stop hooks and exits
        self._start(self._respawn(started_ok=True, killed=False))  # capacity stays as it was
        self._start(self._see_out(worker))

    async def _see_out(self, worker: Worker) -> None:
        """Kill a recycled worker whose stop hooks take longer than allowed; once it has
        exited, end what is left of its process group."""
        try:
            await asyncio.wait_for(worker.exited.wait(), self.limits.stop_timeout_s)
        except TimeoutError:
            log.warning(
                "worker %d: stop hooks still running after %s s "
                "(CONVEYOR_WORKER_STOP_TIMEOUT_S); killing it",
                worker.pid, self.limits.stop_timeout_s,
            )  # fmt: skip
            await self.kill(worker)
            return
        # what its jobs left behind in its group (a daemon, a stray child) goes with it
        deadline = time.monotonic() + self.grace_s
        _signal_group(worker.pid, signal.SIGTERM)
        while await _group_alive(worker.pid):
            if time.monotonic() >= deadline:
                _signal_group(worker.pid, signal.SIGKILL)
                break
            await asyncio.sleep(GROUP_POLL_S)

    # -- process management ---------------------------------------------------------------

    async def _spawn(self) -> None:
        loop = asyncio.get_running_loop()
        jobs_r, jobs_w = os.pipe()
        results_r, results_w = os.pipe()
        try:
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "service.worker",
                "--jobs-fd", str(jobs_r), "--results-fd", str(results_w),
                "--parent", str(os.getpid()), "--tasks", ",".join(self._modules),
                stdin=asyncio.subprocess.DEVNULL,
                pass_fds=(jobs_r, results_w),
                start_new_session=True,  # its own process group: killpg takes the job's tree
            )  # fmt: skip
        except BaseException:
            for fd in (jobs_r, jobs_w, results_r, results_w):
                os.close(fd)
            raise
        os.close(jobs_r)  # the worker holds its ends now
        os.close(results_w)
        reader = asyncio.StreamReader(limit=protocol.MAX_MESSAGE_BYTES + 1024)
        read_transport, _ = await loop.connect_read_pipe(
            lambda: asyncio.StreamReaderProtocol(reader), os.fdopen(results_r, "rb", 0)
        )
        writer, _ = await loop.connect_write_pipe(asyncio.Protocol, os.fdopen(jobs_w, "wb", 0))
        worker = Worker(proc, writer, reader, read_transport)
        self._workers.add(worker)
        self._start(self._supervise(worker))
        if self._closing:  # started as the pool closed: it must not outlive it
            self._start(self.kill(worker))

    def _start(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _supervise(self, worker: Worker) -> None:
        """Read the worker's messages until it ends, then settle its job and replace it."""
        try:
            await self._read(worker)
        finally:
            returncode = await worker.proc.wait()
            worker.exited.set()
            worker.writer.close()
            worker.read_transport.close()
            self._workers.discard(worker)
            if worker.outcome is not None and not worker.outcome.done():
                error = JobError("WorkerCrashed", _crash_message(worker, returncode))
                worker.outcome.set_result(Outcome(error=error, killed=worker.killing))
            expected = worker.killing or worker.retiring or worker.start_failed
            if not expected and not self._closing:
                log.warning(
                    "worker %d: %s", worker.pid, describe_exit(returncode),
                    extra={"worker_pid": worker.pid, "job_id": worker.job_id},
                )  # fmt: skip
        if not self._closing and not worker.retiring:
            # killed: to stop its job (a cancel, a timeout); died: on its own (a crash)
            self.replaced["killed" if worker.killing else "died"] += 1
            await self._respawn(started_ok=worker.ready.is_set(), killed=worker.killing)

    async def _respawn(self, *, started_ok: bool, killed: bool) -> None:
        self._failed_starts = 0 if started_ok else self._failed_starts + 1
        # after a kill, let whoever killed finish (a cancel's response) before a new
        # interpreter starts competing for the CPU
        delay_s = RESPAWN_AFTER_KILL_S if killed else 0.0
        while not self._closing:
            step = min(self._failed_starts, len(RESPAWN_BACKOFF_S) - 1)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._closed.wait(), max(delay_s, RESPAWN_BACKOFF_S[step]))
            if self._closing:
                return
            try:
                await self._spawn()
                return
            except OSError as exc:  # out of processes or descriptors: try again, later
                self._failed_starts += 1
                self.last_start_error = f"cannot start a worker process: {exc}"
                log.error("%s", self.last_start_error)

    async def _read(self, worker: Worker) -> None:
        try:
            while line := await worker.reader.readline():
                try:
                    message = protocol.decode_from_worker(line)
                except protocol.MalformedMessage as exc:
                    log.error(
                        "worker %d sent a malformed message (%s): %.200r", worker.pid, exc, line
                    )
                    continue
                self._handle(worker, message)
        except ValueError as exc:  # a line over the limit: the stream cannot be trusted now
            worker.problem = f"the worker sent a message over the size limit ({exc})"
            log.error("worker %d: %s", worker.pid, worker.problem)
            _signal_group(worker.pid, signal.SIGKILL)

    def _handle(self, worker: Worker, message: protocol.WorkerMessage) -> None:
        # a message about a job the worker no longer runs (it was killed) is dropped
        match message:
            case protocol.Ready():
                self._ready(worker)
            case protocol.Progress(job=job) if job == worker.job_id:
                self._on_progress(job, Progress(message.done, message.total, message.message))
            case protocol.Log(job=job) if job == worker.job_id and self._on_log is not None:
                self._on_log(job, message.entries, message.dropped)
            case protocol.Error(job=None, error=error):
                self._start_failed(worker, error)
            case protocol.Result(job=job, result=result) if job == worker.job_id:
                self._settle(worker, Outcome(result=result))
            case protocol.Error(job=job, error=error) if job == worker.job_id:
                self._settle(worker, Outcome(error=error))

    def _ready(self, worker: Worker) -> None:
        worker.ready.set()
        self._failed_starts = 0
        self.last_start_error = None
        self.start_error = None
        self._logged_start_error = None
        self._idle.put_nowait(worker)

    def _settle(self, worker: Worker, outcome: Outcome) -> None:
        future = worker.outcome
        if future is None or future.done() or worker.killing:
            return  # a job being killed may still answer; its outcome is the kill's
        future.set_result(outcome)

    def _start_failed(self, worker: Worker, error: JobError) -> None:
        """A worker could not start (a task module, a start hook): keep why, say it once."""
        worker.start_failed = True
        self.start_error = error.as_dict()
        self.last_start_error = error.message
        seen = (error.type, error.message)
        if seen != self._logged_start_error:  # the same failure again, at each retry: said
            self._logged_start_error = seen
            log.error(
                "worker %d could not start: %s%s", worker.pid, self.last_start_error,
                "\n" + error.traceback if error.traceback else "",
            )  # fmt: skip


def _crash_message(worker: Worker, returncode: int | None) -> str:
    message = worker.problem or describe_exit(returncode)
    if worker.memory_limit_mb is not None:
        message += (
            f"; the job ran with memory_limit_mb={worker.memory_limit_mb}, and code that "
            "cannot report a failed allocation may end its process instead"
        )
    return message
