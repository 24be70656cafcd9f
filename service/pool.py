"""A supervisor of long-lived worker processes: start them, run a job on one, kill, replace.

Each worker leads its own session, so killing a job's process group stops every process the job
started. A worker that dies or is killed is replaced at once, so capacity never shrinks.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

from . import protocol
from .errors import PoolClosed
from .jobs import JobError, Progress

log = logging.getLogger("conveyor.pool")

# Waits between restarts of a worker that dies before it is ready (a broken task module):
# back off instead of spinning.
RESPAWN_BACKOFF_S = (0.0, 0.1, 0.5, 1.0, 2.0, 5.0)
RESPAWN_AFTER_KILL_S = 0.05
GROUP_POLL_S = 0.005
GROUP_POLL_MAX_S = 0.05

ProgressCallback = Callable[[str, Progress], None]


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

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def alive(self) -> bool:
        return not self.exited.is_set() and not self.killing


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
    ) -> None:
        self.size = size
        self.grace_s = grace_s
        self._modules = tuple(modules)
        self._on_progress = on_progress
        self._workers: set[Worker] = set()
        self._idle: asyncio.Queue[Worker] = asyncio.Queue()
        self._tasks: set[asyncio.Task[None]] = set()
        self._closing = False
        self._closed = asyncio.Event()  # wakes a respawn that is backing off
        self._failed_starts = 0
        self.last_start_error: str | None = None

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

    async def run(self, worker: Worker, job_id: str, message: dict[str, Any]) -> Outcome:
        """Run one job on an acquired worker and wait for its outcome; the worker is freed after.

        If the process dies under the job, the outcome is a ``WorkerCrashed`` error.
        """
        loop = asyncio.get_running_loop()
        worker.job_id = job_id
        worker.outcome = loop.create_future()
        try:
            if worker.exited.is_set():  # it died after it was acquired: nobody would answer
                error = JobError("WorkerCrashed", "the worker process ended before the job began")
                return Outcome(error=error)
            worker.writer.write(protocol.encode(message))
            return await asyncio.shield(worker.outcome)
        finally:
            worker.job_id = None
            worker.outcome = None
            self.release(worker)

    async def kill(self, worker: Worker, job_id: str | None = None) -> bool:
        """SIGTERM the worker's process group, SIGKILL what is left after the grace period.

        With ``job_id``, only while the worker still runs that job (False if it has moved on).
        Returns once the worker and every process of its group are gone; a replacement starts.
        """
        if job_id is not None and worker.job_id != job_id:
            return False
        worker.killing = True
        deadline = time.monotonic() + self.grace_s
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
        return True

    def status(self) -> dict[str, Any]:
        workers = [
            {"pid": w.pid, "job_id": w.job_id, "ready": w.ready.is_set()}
            for w in sorted(self._workers, key=lambda w: w.started_at)
        ]
        return {
            "size": self.size,
            "alive": sum(1 for w in self._workers if w.ready.is_set() and w.alive),
            "busy": sum(1 for w in self._workers if w.job_id is not None),
            "workers": workers,
            "last_start_error": self.last_start_error,
        }

    async def close(self) -> None:
        """Stop every worker (SIGTERM, grace, SIGKILL) and wait for them; idempotent."""
        self._closing = True
        self._closed.set()
        # a replacement may be starting as we close: go round until none is left
        while self._workers or self._tasks:
            for worker in list(self._workers):
                worker.writer.close()  # an idle worker exits on end of input
            await asyncio.gather(*(self.kill(w) for w in list(self._workers)))
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

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
                error = JobError("WorkerCrashed", worker.problem or describe_exit(returncode))
                worker.outcome.set_result(Outcome(error=error, killed=worker.killing))
            if not worker.killing and not self._closing:
                log.warning("worker %d: %s", worker.pid, describe_exit(returncode))
        if not self._closing:
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
                    message = protocol.decode(line)
                except ValueError:
                    log.error("worker %d sent a malformed message: %.200r", worker.pid, line)
                    continue
                self._handle(worker, message)
        except ValueError as exc:  # a line over the limit: the stream cannot be trusted now
            worker.problem = f"the worker sent a message over the size limit ({exc})"
            log.error("worker %d: %s", worker.pid, worker.problem)
            _signal_group(worker.pid, signal.SIGKILL)

    def _handle(self, worker: Worker, message: dict[str, Any]) -> None:
        kind = message.get("t")
        if kind == protocol.READY:
            worker.ready.set()
            self._failed_starts = 0
            self.last_start_error = None
            self._idle.put_nowait(worker)
        elif kind == protocol.PROGRESS and message.get("job") == worker.job_id:
            progress = Progress(message["done"], message["total"], message["message"])
            self._on_progress(message["job"], progress)
        elif kind in (protocol.RESULT, protocol.ERROR) and message.get("job") is None:
            self.last_start_error = message["error"]["message"]
            log.error("worker %d could not start: %s", worker.pid, self.last_start_error)
        elif kind in (protocol.RESULT, protocol.ERROR) and message.get("job") == worker.job_id:
            outcome = worker.outcome
            if outcome is None or outcome.done() or worker.killing:
                return  # a job being killed may still answer; its outcome is the kill's
            if kind == protocol.RESULT:
                outcome.set_result(Outcome(result=message["result"]))
            else:
                error = message["error"]
                outcome.set_result(
                    Outcome(error=JobError(error["type"], error["message"], error["traceback"]))
                )
