"""A throwaway PostgreSQL server: Debian's binaries, a cluster made in a temp dir, on a free
port of loopback, stopped at the end. The tests run the PostgreSQL backend on one, and
``bench/bench_instances.py`` several services.

PostgreSQL will not run as root: when run as root, the cluster belongs to the ``postgres``
user that Debian's package makes, and its files to that user.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg

BINARIES = sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: int(p.split("/")[-2]))
START_TIMEOUT_S = 30
DATABASE = "conveyor_tests"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class Cluster:
    """A PostgreSQL server of the tests' own; ``database()`` makes an empty database in it."""

    def __init__(self) -> None:
        if not BINARIES:
            raise RuntimeError("PostgreSQL is not installed (apt-get install postgresql)")
        self.bin = Path(BINARIES[-1])
        self.dir = Path(tempfile.mkdtemp(prefix="conveyor-pg-"))
        self.port = _free_port()
        self.url = f"postgresql://conveyor@127.0.0.1:{self.port}/postgres"
        self.process: subprocess.Popen[bytes] | None = None
        self._made = False
        self._as: list[str] = []
        if os.geteuid() == 0:
            owner = pwd.getpwnam("postgres")
            os.chown(self.dir, owner.pw_uid, owner.pw_gid)
            self._as = ["runuser", "-u", "postgres", "--"]

    def start(self) -> None:
        data = self.dir / "data"
        subprocess.run(
            [*self._as, str(self.bin / "initdb"), "-D", str(data), "-A", "trust",
             "-U", "conveyor", "-E", "UTF8", "--no-sync"],
            check=True, capture_output=True, cwd=self.dir,
        )  # fmt: skip
        log = open(self.dir / "server.log", "ab")  # noqa: SIM115 (the server's, until stop)
        self.process = subprocess.Popen(
            [*self._as, str(self.bin / "postgres"), "-D", str(data), "-p", str(self.port),
             "-k", str(self.dir), "-c", "listen_addresses=127.0.0.1",
             # a throwaway cluster: nothing of it needs to outlive a crash of the machine
             "-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off",
             "-c", "max_connections=300"],
            stdout=log, stderr=log, cwd=self.dir,
        )  # fmt: skip
        log.close()
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            try:
                with psycopg.connect(self.url, connect_timeout=2):
                    return
            except psycopg.OperationalError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(
                        "PostgreSQL did not start: " + (self.dir / "server.log").read_text()
                    ) from None
                time.sleep(0.05)

    def database(self) -> str:
        """The URL of the tests' database, emptied: what an earlier test left is gone, and
        its sessions with it (dropping a schema takes milliseconds, making a database tenths
        of a second)."""
        url = f"postgresql://conveyor@127.0.0.1:{self.port}/{DATABASE}"
        if not self._made:
            with psycopg.connect(self.url, autocommit=True) as conn:
                conn.execute(f"CREATE DATABASE {DATABASE}")
            self._made = True
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
            conn.execute("DROP SCHEMA public CASCADE; CREATE SCHEMA public")
        return url

    def stop(self) -> None:
        if self.process is not None:
            # the server itself, not runuser: SIGINT is its fast shutdown (clients cut off)
            with contextlib.suppress(OSError, ValueError):
                pid = int((self.dir / "data" / "postmaster.pid").read_text().split()[0])
                os.kill(pid, signal.SIGINT)
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        shutil.rmtree(self.dir, ignore_errors=True)


@contextlib.contextmanager
def cluster() -> Iterator[Cluster]:
    server = Cluster()
    try:
        server.start()
        yield server
    finally:
        server.stop()
