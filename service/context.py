"""The running job's link back to the service: ``progress()``.

Inside a worker process the worker installs a reporter; anywhere else (a task called directly,
in a unit test) ``progress()`` checks its arguments and does nothing.
"""

from __future__ import annotations

import math
import os
import threading
import time
from collections.abc import Callable

from .loglines import clean_text
from .protocol import Progress

Send = Callable[[Progress], None]

MAX_PROGRESS_MESSAGE_CHARS = 4 * 1024  # a longer progress() message is cut


class SoftTimeout(Exception):
    """Raised inside a task once its ``soft_timeout_s`` has passed: catch it to clean up and
    stop; ``timeout_s`` still ends the job if it goes on."""


class Deferred:
    """One daemon thread that runs callbacks when they come due.

    Progress updates held back are sent from here, not from a thread started per update: under
    a job's memory limit a new thread may fail to start, or hang the job while it starts.
    """

    def __init__(self) -> None:
        self._reset()
        os.register_at_fork(after_in_child=self._reset)  # a forked child has no such thread

    def _reset(self) -> None:
        self._cond = threading.Condition()
        self._due: dict[Callable[[], None], float] = {}  # callback → monotonic due time
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Start the thread now (a worker does, before its first job); idempotent."""
        with self._cond:
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="conveyor-deferred")
                self._thread.daemon = True
                self._thread.start()

    def call_at(self, due_monotonic_s: float, callback: Callable[[], None]) -> None:
        self.start()
        with self._cond:
            self._due[callback] = due_monotonic_s
            self._cond.notify()

    def cancel(self, callback: Callable[[], None]) -> None:
        with self._cond:
            self._due.pop(callback, None)

    def _run(self) -> None:
        while True:
            with self._cond:
                callback = self._next()
            callback()  # unlocked: it may take its own lock, whose holder may be calling in

    def _next(self) -> Callable[[], None]:
        while True:
            if not self._due:
                self._cond.wait()
                continue
            callback, due_s = min(self._due.items(), key=lambda item: item[1])
            wait_s = due_s - time.monotonic()
            if wait_s <= 0:
                del self._due[callback]
                return callback
            self._cond.wait(wait_s)


deferred = Deferred()


class ProgressReporter:
    """Sends a job's progress, at most one message per ``interval_s``; the latest value wins.

    A task may call ``progress()`` in a tight loop; coalescing here keeps the pipe, the store
    and every browser from paying for each call, while the last value always gets through.
    """

    def __init__(self, send: Send, job_id: str, interval_s: float = 0.05) -> None:
        self._send = send
        self._job_id = job_id
        self._interval_s = interval_s
        self._lock = threading.Lock()
        self._pending: Progress | None = None
        self._sent_monotonic_s = 0.0
        self._scheduled = False  # a flush is due on the deferred thread

    def update(self, done: float, total: float | None, message: str | None) -> None:
        payload = Progress(self._job_id, done, total, message)
        with self._lock:
            self._pending = payload
            wait_s = self._sent_monotonic_s + self._interval_s - time.monotonic()
            if wait_s <= 0:
                self._flush_locked()
            elif not self._scheduled:
                self._scheduled = True
                deferred.call_at(time.monotonic() + wait_s, self.flush)

    def flush(self) -> None:
        with self._lock:
            self._flush_locked()

    def close(self) -> None:
        """Send what is pending now: called before the job's result, which must come last."""
        with self._lock:
            if self._scheduled:
                deferred.cancel(self.flush)
            self._flush_locked()

    def _flush_locked(self) -> None:
        self._scheduled = False
        if self._pending is not None:
            self._send(self._pending)
            self._pending = None
            self._sent_monotonic_s = time.monotonic()


_reporter: ProgressReporter | None = None


def set_reporter(reporter: ProgressReporter | None) -> None:
    global _reporter
    _reporter = reporter


def _is_number(value: object) -> bool:
    """A finite int or float that JSON carries exactly (no bools, NaN, infinities, bigints)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    return math.isfinite(value) and abs(value) < 2**63


def progress(done: float, total: float | None = None, message: str | None = None) -> None:
    """Report how far the running job is: ``done`` out of ``total``, with an optional message.

    Shown live on ``GET /jobs/<id>``, on the event streams and in the dashboard.
    """
    if not _is_number(done):
        raise TypeError(f"progress(): done must be a finite number, got {done!r}")
    if total is not None and not _is_number(total):
        raise TypeError(f"progress(): total must be a finite number or None, got {total!r}")
    if message is not None and not isinstance(message, str):
        raise TypeError(f"progress(): message must be a str or None, got {type(message).__name__}")
    if _reporter is not None:
        if message is not None:
            message = clean_text(message, MAX_PROGRESS_MESSAGE_CHARS)
        _reporter.update(done, total, message)
