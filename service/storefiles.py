"""The files beside the SQLite database: the one-service lock and the start journal."""

from __future__ import annotations

import fcntl
import os

from .errors import StoreUnavailable

JOURNAL_TRUNCATE_BYTES = 64 * 1024
PRIVATE = 0o600  # the mode of every file of the store: the owner's to read and write


def lock_database(path: str) -> int:
    """Lock ``<path>.lock`` for as long as the returned descriptor stays open.

    One service per database: a second one would requeue the first one's running jobs and run
    them twice. The kernel drops the lock when the holder dies, even by ``kill -9``. A side file,
    because closing any descriptor of the database file itself would drop SQLite's own locks.
    """
    try:
        fd = os.open(path + ".lock", os.O_RDWR | os.O_CREAT, PRIVATE)
    except OSError as exc:
        raise StoreUnavailable(path, exc.strerror or str(exc)) from None
    try:
        # made here, before SQLite makes it (0644, less the umask): the jobs' arguments and
        # results are the owner's alone, and SQLite gives its -wal and -shm files the same mode
        os.close(os.open(path, os.O_RDWR | os.O_CREAT, PRIVATE))
    except OSError as exc:
        os.close(fd)
        raise StoreUnavailable(path, exc.strerror or str(exc)) from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise StoreUnavailable(path, "another Conveyor service is using it") from None
    return fd


class StartJournal:
    """Jobs handed to a worker before their ``running`` row is committed: ``<path>``.

    A line per start (``<job id> <attempt>``), appended before the job runs; an append survives
    the service's death as the database's own WAL does, and costs microseconds where waiting
    for a commit would cost a worker's time. It is emptied whenever every start in it is
    committed, so it stays small.
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self._fd: int | None = None
        self._unrecorded = 0  # appended, not yet committed

    def append(self, job_id: str, attempt: int) -> None:
        if self._fd is None:
            self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, PRIVATE)
        os.write(self._fd, f"{job_id} {attempt}\n".encode())
        self._unrecorded += 1

    def recorded(self) -> None:
        """One appended start is committed (or failed for good)."""
        self._unrecorded -= 1
        if self._unrecorded or self._fd is None:
            return
        if os.fstat(self._fd).st_size > JOURNAL_TRUNCATE_BYTES:  # all of it is in the store
            os.ftruncate(self._fd, 0)

    def read(self) -> list[tuple[str, int]]:
        """(job id, attempt) of every start in the journal."""
        try:
            with open(self.path, "rb") as f:
                lines = f.read().decode(errors="replace").splitlines()
        except FileNotFoundError:
            return []
        starts = []
        for line in lines:
            job_id, _, attempt = line.partition(" ")
            if attempt.isdigit():  # a line cut short by a crash is skipped
                starts.append((job_id, int(attempt)))
        return starts

    def clear(self) -> None:
        os.close(os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, PRIVATE))

    def close(self) -> None:
        if self._fd is not None:
            if self._unrecorded == 0:  # a clean stop: every start is in the store
                os.ftruncate(self._fd, 0)
            os.close(self._fd)
            self._fd = None
