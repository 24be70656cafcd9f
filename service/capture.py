"""Per-job capture of a worker's output: file descriptors 1 and 2, and ``logging`` records.

While a job runs, descriptors 1 and 2 of the worker are fresh pipes that only this job (and the
processes it starts) write to, so ``print``, C extensions and ``subprocess.run(["echo", ...])``
are all caught. A reader thread turns what arrives into log entries and sends them to the
service in batches, at most one per ``interval_s``. Between jobs, 1 and 2 are the worker's own
again (the service's terminal): what runs outside a job (start hooks, say) writes there, and a
child a job left behind writes into that job's pipe, never into the next job's.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import selectors
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

from .loglines import MAX_LOG_LINE_CHARS, Entry, JobLog, Lines, clean_text, line_text
from .protocol import Log

Send = Callable[[Log], None]

FLUSH_INTERVAL_S = 0.1  # live enough to watch, few enough writes for the store
READ_BYTES = 64 * 1024
# At a job's end, what is left in its pipes is read; a child it left running could write for
# ever, so the reading stops after this much.
DRAIN_MAX_BYTES = 1024 * 1024
WORKER_LOG_FORMAT = "%(asctime)s [%(levelname)s] %(name)s (worker %(process)d): %(message)s"


class Pipe:
    """The read end of one of a job's two pipes."""

    def __init__(self, fd: int, stream: str, job: JobLog) -> None:
        self.fd = fd
        self.stream = stream
        self.job = job
        self.lines = Lines()
        self.at_end = False  # every writer has closed it
        self.watched = True  # registered with the reader's selector

    def read(self, limit_bytes: int) -> None:
        """Turn up to ``limit_bytes`` of what the pipe holds now into the job's entries."""
        read_bytes = 0
        while read_bytes < limit_bytes and not self.at_end:
            try:
                data = os.read(self.fd, READ_BYTES)
            except BlockingIOError:
                return
            self.at_end = not data
            read_bytes += len(data)
            self.add(self.lines.feed(data))

    def add(self, lines: list[bytes]) -> None:
        now = time.time()
        for line in lines:
            self.job.add({"at": now, "stream": self.stream, "text": line_text(line)})


class OutputCapture:
    """Owns descriptors 1 and 2 of the worker, and the thread that reads a job's output.

    The reader thread and the main thread share the job's pipes under ``_lock``: the reader
    reads whatever arrives while the job runs; at the job's end the main thread itself reads
    what is left and sends it. The main thread adds and removes the job's pipes on the reader's
    selector itself (epoll and kqueue allow it while another thread waits), so a job that
    prints nothing wakes no thread: its capture costs a few system calls.
    """

    def __init__(self, send: Send, *, interval_s: float = FLUSH_INTERVAL_S) -> None:
        self._send = send
        self._interval_s = interval_s
        self._lock = threading.Lock()  # the job, its entries, its pipes
        self._send_lock = threading.Lock()  # batches leave in the order they were taken
        self._job: JobLog | None = None
        self._pipes: dict[int, Pipe] = {}
        self._streams: tuple[Any, Any] = (sys.stdout, sys.stderr)
        self._sent_monotonic_s = 0.0
        # the worker's own 1 and 2, kept where a job cannot reach them
        self._stdout_fd = os.dup(1)
        self._stderr_fd = os.dup(2)
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        self._selector = selectors.DefaultSelector()
        self._selector.register(self._wake_r, selectors.EVENT_READ)
        self._fflush = _c_fflush()

    @property
    def stderr_fd(self) -> int:
        """The worker's own stderr: for what concerns the worker, not a job (crash dumps)."""
        return self._stderr_fd

    def install(self) -> None:
        """Start the reader and route ``logging`` to the running job (or, between jobs, to the
        worker's stderr). Call before the task modules are imported: their ``basicConfig()``
        then leaves this in place instead of printing each record twice."""
        if isinstance(sys.stdout, io.TextIOWrapper):  # printed lines reach the log as printed
            sys.stdout.reconfigure(line_buffering=True)
        stream = os.fdopen(os.dup(self._stderr_fd), "w", buffering=1, errors="backslashreplace")
        fallback = logging.StreamHandler(stream)
        fallback.setFormatter(logging.Formatter(WORKER_LOG_FORMAT))
        root = logging.getLogger()
        root.addHandler(JobLogHandler(self, fallback))
        root.setLevel(logging.INFO)
        os.register_at_fork(after_in_child=self._forget)
        threading.Thread(target=self._read_loop, name="conveyor-capture", daemon=True).start()

    def _forget(self) -> None:
        """In a process a job forked (``multiprocessing``, say), which is not the worker: its
        output goes to its descriptors 1 and 2, which the worker reads for the job."""
        self._lock = threading.Lock()  # it may have been held by another thread at the fork
        self._send_lock = threading.Lock()
        for fd in self._pipes:
            os.close(fd)  # the worker's ends, not this process's
        self._pipes = {}
        self._job = None

    # -- the main thread: a job's beginning and end ----------------------------------------

    def begin(self, job_id: str, max_lines: int) -> None:
        """Point descriptors 1 and 2 at new pipes for the job ``job_id``."""
        self._streams = (sys.stdout, sys.stderr)
        _flush_streams(self._fflush)
        try:
            out_r, out_w = os.pipe()
            err_r, err_w = os.pipe()
        except OSError:  # out of descriptors: the job runs, its output goes where it went
            return
        for write_end, fd in ((out_w, 1), (err_w, 2)):
            os.dup2(write_end, fd)  # inheritable: the job's children write there too
            os.close(write_end)
        job = JobLog(job_id, max_lines)
        with self._lock:
            self._job = job
            for read_end, stream in ((out_r, "stdout"), (err_r, "stderr")):
                os.set_blocking(read_end, False)
                self._pipes[read_end] = Pipe(read_end, stream, job)
                self._selector.register(read_end, selectors.EVENT_READ)

    def end(self) -> None:
        """Give descriptors 1 and 2 back to the worker and send the rest of the job's output:
        everything the job wrote reaches the service before its result does.

        A child the job left running that writes on finds its pipe closed (EPIPE or SIGPIPE),
        as if it wrote to a terminal that went away.
        """
        if self._job is None:
            return
        _flush_streams(self._fflush)
        sys.stdout, sys.stderr = self._streams  # a job may have replaced them and not put back
        with self._lock:  # before their writers close: the reader need not wake for that
            for pipe in self._pipes.values():
                self._unwatch(pipe)
        os.dup2(self._stdout_fd, 1)
        os.dup2(self._stderr_fd, 2)
        with self._send_lock:
            with self._lock:
                for pipe in self._pipes.values():
                    pipe.read(DRAIN_MAX_BYTES)
                    pipe.add(pipe.lines.rest())
                    os.close(pipe.fd)
                self._pipes.clear()
                messages = self._job.take()
                self._job = None
            self._send_all(messages)

    # -- any thread -------------------------------------------------------------------------

    def add(self, entry: Entry) -> bool:
        """Add an entry to the running job's log; False when no job is running."""
        with self._lock:
            job = self._job
            if job is None:
                return False
            first = not job.entries
            for pipe in self._pipes.values():  # what was printed before comes before
                pipe.read(DRAIN_MAX_BYTES)
            job.add(entry)
        if first:  # the reader may be asleep with nothing to send
            self._wake()
        return True

    def _wake(self) -> None:
        with contextlib.suppress(BlockingIOError):  # a wake-up is pending already
            os.write(self._wake_w, b"\0")

    def _unwatch(self, pipe: Pipe) -> None:
        """Stop the reader waiting on ``pipe``; call with ``_lock`` held."""
        if pipe.watched:
            self._selector.unregister(pipe.fd)
            pipe.watched = False

    def _send_all(self, messages: list[Log]) -> None:
        for message in messages:
            self._send(message)
        if messages:
            self._sent_monotonic_s = time.monotonic()

    # -- the reader thread ------------------------------------------------------------------

    def _read_loop(self) -> None:
        while True:
            try:
                self._step()
            except Exception:  # MemoryError under a job's memory limit, say: carry on
                time.sleep(0.01)

    def _step(self) -> None:
        with self._lock:
            pending = self._job is not None and bool(self._job.entries or self._job.dropped)
        timeout_s = None
        if pending:
            timeout_s = max(0.0, self._sent_monotonic_s + self._interval_s - time.monotonic())
        for key, _ in self._selector.select(timeout_s):
            if key.fd == self._wake_r:
                with contextlib.suppress(BlockingIOError):
                    os.read(self._wake_r, 4096)
                continue
            with self._lock:
                # by descriptor, now: one the main thread has closed since is gone, one whose
                # number a new pipe took is read as that pipe
                pipe = self._pipes.get(key.fd)
                if pipe is not None:
                    pipe.read(READ_BYTES)
                    if pipe.at_end:  # else it would be reported ready for ever
                        self._unwatch(pipe)
        if time.monotonic() >= self._sent_monotonic_s + self._interval_s:
            with self._send_lock:
                with self._lock:
                    messages = [] if self._job is None else self._job.take()
                self._send_all(messages)


class JobLogHandler(logging.Handler):
    """Sends ``logging`` records to the running job's log; between jobs, to ``fallback``."""

    def __init__(self, capture: OutputCapture, fallback: logging.Handler) -> None:
        super().__init__()
        self._capture = capture
        self._fallback = fallback
        self.setFormatter(logging.Formatter("%(message)s"))  # level and logger go apart
        os.register_at_fork(after_in_child=self._forked)

    def _forked(self) -> None:
        """A process a job forked writes its records to its stderr: the job's, in its log."""
        self._fallback = logging.StreamHandler(sys.stderr)
        self._fallback.setFormatter(logging.Formatter("[%(levelname)s] %(name)s: %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        try:
            # a traceback says most at its end
            text = clean_text(
                self.format(record), MAX_LOG_LINE_CHARS, keep_end=bool(record.exc_info)
            )
            entry = {
                "at": record.created,
                "stream": "log",
                "text": text,
                "level": record.levelname,
                "logger": record.name,
            }
            if not self._capture.add(entry):
                self._fallback.handle(record)
        except Exception:
            self.handleError(record)


def _flush_streams(fflush: Callable[[], None] | None) -> None:
    """Push what Python and C hold in their buffers to the descriptor it was written for."""
    for stream in {
        id(s): s for s in (sys.stdout, sys.stderr, sys.__stdout__, sys.__stderr__)
    }.values():
        _flush(stream)
    if fflush is not None:
        fflush()


def _flush(stream: Any) -> None:
    with contextlib.suppress(Exception):  # a job may have closed or replaced it
        if stream is not None:
            stream.flush()


def _c_fflush() -> Callable[[], None] | None:
    """``fflush(NULL)`` of the C library: C extensions' ``printf`` is buffered there."""
    try:
        import ctypes

        fflush = ctypes.CDLL(None).fflush
    except (ImportError, OSError, AttributeError):
        return None
    fflush.argtypes = [ctypes.c_void_p]
    return lambda: fflush(None)
