"""The entry point of a worker process: ``python -m service.worker``.

It imports the task modules and runs their start hooks once, then runs one job at a time as the
service sends them, and reports progress, output and the outcome back on a private pipe. It
leads its own session, so the service can stop a job together with every process the job
started by signalling the group. When the service closes its input it runs the stop hooks and
exits. Nothing heavy is imported here: a worker is ready in a few tens of milliseconds.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import faulthandler
import logging
import os
import signal
import sys
import threading
import time
import traceback
from collections.abc import Callable
from types import FrameType
from typing import Any

import orjson

from . import context, hooks, protocol
from .capture import OutputCapture
from .context import SoftTimeout
from .errors import ServiceError
from .jobs import JobError
from .loglines import clean_text
from .memory import address_space_limit
from .protocol import Error, Ready, Result, Run, WorkerMessage
from .tasks import Task, load_tasks

log = logging.getLogger("conveyor.worker")

# How often a worker checks that the service is still alive.
PARENT_CHECK_INTERVAL_S = 0.2
# What a failed job's error may hold: longer messages and tracebacks are cut.
MAX_ERROR_MESSAGE_CHARS = 64 * 1024
MAX_TRACEBACK_CHARS = 256 * 1024


class Terminated(BaseException):
    """Raised in the job by SIGTERM, so its ``finally`` blocks run before the worker exits."""


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise Terminated


PR_SET_CHILD_SUBREAPER = 36  # linux/prctl.h


def _become_subreaper() -> None:
    """Keep a job's orphans as this process's children (Linux): a grandchild whose parent has
    exited, even one that left the process group with ``setsid()``, stays where the service can
    find it and kill it with the job, instead of moving to init."""
    if not sys.platform.startswith("linux"):
        return
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)


def _watch_parent(parent_pid: int) -> None:
    """Take the whole process group down once the service is gone, even by ``kill -9``.

    PR_SET_PDEATHSIG would kill only this process and orphan the job's children; a thread that
    notices the re-parenting and kills the group takes them all.
    """
    while True:
        if os.getppid() != parent_pid:
            os.killpg(os.getpgrp(), signal.SIGKILL)
        time.sleep(PARENT_CHECK_INTERVAL_S)


class Channel:
    """Writes protocol messages to the service; shared by the main and progress threads."""

    def __init__(self, fd: int) -> None:
        self._fd = fd
        self._lock = threading.Lock()

    def send(self, message: WorkerMessage) -> None:
        data = memoryview(protocol.encode(message))
        with self._lock:
            while data:
                data = data[os.write(self._fd, data) :]


def _error(
    exc: BaseException, type_name: str | None = None, message: str | None = None
) -> JobError:
    """What the service is told of ``exc``; ``message`` in place of its own, if given."""
    text = "".join(traceback.format_exception(exc))
    return JobError(
        type_name or type(exc).__qualname__,
        clean_text(str(exc) if message is None else message, MAX_ERROR_MESSAGE_CHARS),
        # the end of a traceback says where it happened: keep that
        clean_text(text, MAX_TRACEBACK_CHARS, keep_end=True),
    )


class Runner:
    """Runs jobs in this process; ``async def`` tasks share one event loop kept for its life."""

    def __init__(self, tasks: dict[str, Task], channel: Channel, capture: OutputCapture) -> None:
        self._tasks = tasks
        self._channel = channel
        self._capture = capture
        self._loop: Any = None
        self._worker_tasks: set[Any] = set()  # what async start hooks left running: kept

    def start(self) -> JobError | None:
        """Run the start hooks; the error of the first one that fails, else None."""
        for hook in hooks.start_hooks():
            try:
                self._call_hook(hook)
            except Exception as exc:
                return _error(
                    exc,
                    "WorkerStartError",
                    f"on_worker_start hook {hooks.origin(hook)} failed: "
                    f"{type(exc).__qualname__}: {exc}",
                )
        if self._loop is not None:
            import asyncio

            self._worker_tasks = asyncio.all_tasks(self._loop)
        return None

    def stop(self) -> None:
        """Run the stop hooks; one that fails is logged and the others still run."""
        for hook in hooks.stop_hooks():
            try:
                self._call_hook(hook)
            except Exception:
                log.exception("on_worker_stop hook %s failed", hooks.origin(hook))

    def _call_hook(self, hook: hooks.Hook) -> None:
        value = hook()
        if hasattr(value, "__await__"):
            self._await(value, None, drain=False)

    def run(self, message: Run) -> None:
        reporter = context.ProgressReporter(self._channel.send, message.job)
        context.set_reporter(reporter)
        self._capture.begin(message.job, message.max_log_lines)
        try:
            reply = self._call(message)
        finally:
            context.set_reporter(None)
            reporter.close()
            signal.signal(signal.SIGTERM, _on_sigterm)  # the job may have replaced it
            self._capture.end()  # its output before its result: nothing spills onto the next
        self._channel.send(reply)

    def _call(self, message: Run) -> Result | Error:
        job_id, memory_limit_mb = message.job, message.memory_limit_mb
        task = self._tasks.get(message.task)
        if task is None:
            return Error(job_id, JobError("UnknownTask", f"unknown task {message.task!r}"))
        try:
            with address_space_limit(memory_limit_mb):
                result = self._invoke(task, message.args, message.kwargs, message.soft_timeout_s)
        except Exception as exc:
            if isinstance(exc, MemoryError) and not str(exc) and memory_limit_mb is not None:
                # the kernel's MemoryError says nothing: say which limit it was
                return Error(job_id, _error(exc, message=over_memory_limit(memory_limit_mb)))
            return Error(job_id, _error(exc))
        return result_message(job_id, result, message.max_result_bytes)

    def _invoke(
        self, task: Task, args: list[Any], kwargs: dict[str, Any], soft_timeout_s: float | None
    ) -> Any:
        if task.is_async:
            return self._await(task.fn(*args, **kwargs), soft_timeout_s)
        if soft_timeout_s is not None:  # SIGALRM: it interrupts blocking calls too
            signal.signal(signal.SIGALRM, _soft_alarm(soft_timeout_s))
            signal.setitimer(signal.ITIMER_REAL, soft_timeout_s)
        try:
            value = task.fn(*args, **kwargs)
        finally:
            if soft_timeout_s is not None:
                signal.setitimer(signal.ITIMER_REAL, 0)
                signal.signal(signal.SIGALRM, signal.SIG_DFL)
        if hasattr(value, "__await__"):  # a plain function that returned an awaitable
            value = self._await(value, None)
        return value

    def _await(self, awaitable: Any, soft_timeout_s: float | None, *, drain: bool = True) -> Any:
        import asyncio  # only workers that run async tasks pay for it

        if self._loop is None:
            self._loop = asyncio.new_event_loop()
            asyncio.set_event_loop(self._loop)
        job = self._loop.create_task(awaitable)
        fired: list[bool] = []
        timer = None
        if soft_timeout_s is not None:
            timer = self._loop.call_later(
                soft_timeout_s, _interrupt_softly, job, soft_timeout_s, fired
            )
        try:
            return self._loop.run_until_complete(job)
        except asyncio.CancelledError as exc:  # not an Exception: it would end the worker
            if fired:  # the soft timeout could only cancel it
                raise SoftTimeout(_soft_message(soft_timeout_s)) from None
            raise RuntimeError("the task was cancelled") from exc
        finally:
            if timer is not None:
                timer.cancel()
            if drain:
                self._drain()

    def _drain(self) -> None:
        """Cancel what a job left behind on the loop (its own tasks), before the next job."""
        import asyncio

        leftovers = asyncio.all_tasks(self._loop) - self._worker_tasks
        for leftover in leftovers:
            leftover.cancel()
        if leftovers:
            self._loop.run_until_complete(asyncio.gather(*leftovers, return_exceptions=True))


def over_memory_limit(memory_limit_mb: int) -> str:
    """The message of a bare MemoryError raised under the job's limit (RLIMIT_AS)."""
    return f"the job went over its memory limit of {memory_limit_mb} MB (memory_limit_mb)"


def _soft_message(soft_timeout_s: float | None) -> str:
    return f"the job ran longer than its soft_timeout_s ({soft_timeout_s})"


def _soft_alarm(soft_timeout_s: float) -> Callable[[int, FrameType | None], None]:
    def on_alarm(signum: int, frame: FrameType | None) -> None:
        raise SoftTimeout(_soft_message(soft_timeout_s))

    return on_alarm


def _interrupt_softly(job: Any, soft_timeout_s: float, fired: list[bool]) -> None:
    """Raise SoftTimeout where the coroutine waits: in the future it awaits, when that future
    is its own (a sleep, a read); otherwise only a cancel can reach it."""
    import asyncio

    fired.append(True)
    waiter = getattr(job, "_fut_waiter", None)  # the future the task is suspended on
    if (
        isinstance(waiter, asyncio.Future)
        and not isinstance(waiter, asyncio.Task)
        and not waiter.done()
    ):
        waiter.set_exception(SoftTimeout(_soft_message(soft_timeout_s)))
    else:
        job.cancel()


def result_message(job_id: str, result: Any, max_result_bytes: int) -> Result | Error:
    """The result message, or an error message when the result is not JSON or too large.

    Checked here, so an oversized result never travels to the service.
    """
    try:
        data = orjson.dumps(result)
    except TypeError as exc:
        problem = f"the task returned a {type(result).__name__}, which is not JSON: {exc}"
        return Error(job_id, JobError("UnserializableResult", problem))
    if len(data) > max_result_bytes:
        problem = (
            f"the result is {len(data)} bytes as JSON; "
            f"the limit is {max_result_bytes} bytes (CONVEYOR_MAX_RESULT_BYTES)"
        )
        return Error(job_id, JobError("ResultTooLarge", problem))
    # carried as the JSON it is now: a large result is serialised once
    return Result(job_id, orjson.Fragment(data))


def _private_fd(fd: int) -> int:
    """A copy of ``fd`` that the job's own child processes do not inherit."""
    private = os.dup(fd)  # os.dup makes non-inheritable descriptors
    os.close(fd)
    return private


def _parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="service.worker")
    parser.add_argument("--jobs-fd", type=int, required=True)
    parser.add_argument("--results-fd", type=int, required=True)
    parser.add_argument("--parent", type=int, required=True)
    parser.add_argument("--tasks", default="")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    options = _parse_args(sys.argv[1:] if argv is None else argv)
    signal.signal(signal.SIGTERM, _on_sigterm)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the service, which decides
    _become_subreaper()
    threading.Thread(target=_watch_parent, args=(options.parent,), daemon=True).start()
    jobs = os.fdopen(_private_fd(options.jobs_fd), "rb")
    channel = Channel(_private_fd(options.results_fd))
    capture = OutputCapture(channel.send)
    faulthandler.enable(capture.stderr_fd)  # a crash dump concerns the worker: not a job's log
    capture.install()  # before the task modules: they may set up logging as they load
    context.deferred.start()  # no thread is started for progress once jobs run (memory limits)
    try:
        try:
            tasks = load_tasks(m for m in options.tasks.split(",") if m)
        except ServiceError as exc:
            channel.send(Error(None, _error(exc, "TaskLoadError")))
            return 3
        runner = Runner(tasks, channel, capture)
        problem = runner.start()
        if problem is not None:
            channel.send(Error(None, problem))
            return 3
        channel.send(Ready(os.getpid()))
        for line in jobs:  # ends when the service closes the pipe
            runner.run(protocol.decode_run(line))
        runner.stop()
    except Terminated:
        os._exit(128 + signal.SIGTERM)  # skip interpreter teardown: the service is waiting
    except BrokenPipeError:
        os._exit(1)  # the service is gone; the parent watch takes the group down
    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # a SIGTERM during teardown just ends us
    return 0


if __name__ == "__main__":
    sys.exit(main())
