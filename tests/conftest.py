"""Fixtures that run the real thing: SQLite files in temp dirs, worker processes, servers."""

from __future__ import annotations

import asyncio
import http.server
import inspect
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypercorn.asyncio import serve
from hypercorn.config import Config
from prometheus_client.parser import text_string_to_metric_families
from quart import Quart
from quart.typing import TestClientProtocol

from service.app import create_app
from service.settings import Settings

from .postgres import Cluster, cluster

ROOT = Path(__file__).resolve().parent.parent
TASKS = "tests.sample_tasks"


async def wait_until(
    predicate: Callable[[], Any], timeout_s: float = 10.0, what: str = "condition"
) -> Any:
    """Poll ``predicate`` (sync or async) until it returns something truthy; return that."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if inspect.isawaitable(value):
            value = await value
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout_s} s waiting for {what}")
        await asyncio.sleep(0.01)


def wait_for(predicate: Callable[[], bool], what: str, timeout_s: float = 10) -> None:
    """``wait_until`` for tests that block: poll ``predicate`` until it is true."""
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout_s} s waiting for {what}")
        time.sleep(0.01)


@contextmanager
def http_server(handler: Callable[..., http.server.BaseHTTPRequestHandler]) -> Iterator[str]:
    """The URL of an HTTP server (``http.server``) answering with ``handler``, in a thread of
    its own, until the end: a service that is not Conveyor, or a proxy in front of one."""
    with http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler) as server:
        threading.Thread(target=server.serve_forever, daemon=True).start()
        try:
            yield f"http://127.0.0.1:{server.server_address[1]}"
        finally:
            server.shutdown()


def lines_in(path: Path) -> int:
    """The lines written to ``path`` so far (0 while it does not exist)."""
    return len(path.read_text().splitlines()) if path.exists() else 0


def process_gone(pid: int) -> bool:
    """True once ``pid`` has exited (a zombie nobody reaps counts as gone)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except (FileNotFoundError, ProcessLookupError):  # gone before, or while, it was read
        return True
    return stat[stat.rfind(b")") + 2 :].split()[0] in (b"Z", b"X")


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """A ``/metrics`` text as (sample name, its labels) → value."""
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(
        database=str(tmp_path / "conveyor.db"), tasks=(TASKS,), concurrency=2, cancel_grace_s=1.0
    )


AppFactory = Callable[..., Awaitable[tuple[Quart, TestClientProtocol]]]


@asynccontextmanager
async def running_app(settings: Settings) -> AsyncIterator[tuple[Quart, TestClientProtocol]]:
    """The app with its lifespan running (database, pool, scheduler) and a test client."""
    app = create_app(settings)
    async with app.test_app() as test_app:
        yield app, test_app.test_client()


@pytest.fixture
async def app_client(settings: Settings) -> AsyncIterator[TestClientProtocol]:
    async with running_app(settings) as (_, client):
        await wait_until(lambda: _healthy(client), what="workers ready")
        yield client


async def _healthy(client: TestClientProtocol) -> bool:
    response = await client.get("/health")
    return response.status_code == 200


def listening_socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)  # before anyone connects: no ConnectError race
    return sock


@asynccontextmanager
async def serving(app: Any) -> AsyncIterator[str]:
    """An ASGI app served by hypercorn in this process on a free port; yields its base URL."""
    sock = listening_socket()
    port = sock.getsockname()[1]
    config = Config()
    config.bind = [f"fd://{sock.detach()}"]
    config.graceful_timeout = 0.1  # open streams would hold each teardown for the whole grace
    stop = asyncio.Event()
    server = asyncio.create_task(serve(app, config, shutdown_trigger=stop.wait))
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        stop.set()
        await asyncio.wait_for(server, 15)


@asynccontextmanager
async def live_server(settings: Settings) -> AsyncIterator[str]:
    """The service served by hypercorn in this process on a free port; yields its base URL."""
    async with serving(create_app(settings)) as url:
        async with httpx.AsyncClient(base_url=url) as client:
            await wait_until(lambda: _get_ok(client, "/health"), what="server ready")
        yield url


async def _get_ok(client: httpx.AsyncClient, path: str) -> bool:
    try:
        return (await client.get(path, timeout=2)).status_code == 200
    except httpx.TransportError:
        return False


@pytest.fixture
async def server(settings: Settings) -> AsyncIterator[str]:
    async with live_server(settings) as url:
        yield url


class ServiceProcess:
    """The service as a user runs it: ``hypercorn --config hypercorn.toml ...`` in a subprocess.

    The test keeps the listening socket, so the port stays the same across restarts.
    """

    def __init__(self, workdir: Path, env: dict[str, str]) -> None:
        self.workdir = workdir
        self.env = {**os.environ, "PYTHONPATH": str(ROOT), **env}
        self.sock = listening_socket()
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = workdir / "service.log"

    def start(self) -> None:
        fd = self.sock.fileno()
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                [
                    sys.executable, "-m", "hypercorn", "--config", str(ROOT / "hypercorn.toml"),
                    "--bind", f"fd://{fd}", "service.app:create_app()",
                ],
                cwd=self.workdir, env=self.env, pass_fds=(fd,), stdout=log, stderr=log,
            )  # fmt: skip

    @property
    def pid(self) -> int:
        assert self.proc is not None, "not started"
        return self.proc.pid

    async def wait_ready(self) -> None:
        async with httpx.AsyncClient(base_url=self.url) as client:
            await wait_until(
                lambda: self._check_alive() and _get_ok(client, "/health"),
                timeout_s=20,
                what="the service to answer /health",
            )

    def _check_alive(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise RuntimeError(f"the service exited: {self.log.read_text()[-2000:]}")
        return True

    def kill(self) -> None:
        """``kill -9`` the service process."""
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait(10)

    def terminate(self, timeout_s: float = 20) -> int:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout_s)

    def close(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self.sock.close()


@pytest.fixture
async def client(server: str) -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client of the in-process server."""
    async with httpx.AsyncClient(base_url=server, timeout=10) as client:
        yield client


async def submit_job(client: httpx.AsyncClient, task: str, *args: Any, **fields: Any) -> str:
    """POST /jobs for a task of tests.sample_tasks; the new job's id."""
    body = {"task": f"{TASKS}.{task}", "args": list(args), **fields}
    response = await client.post("/jobs", json=body)
    assert response.status_code == 202, response.text
    job_id: str = response.json()["id"]
    return job_id


async def wait_state(
    client: httpx.AsyncClient, job_id: str, state: str, timeout_s: float = 15
) -> Any:
    """The job once it is in ``state``."""

    async def reached() -> Any:
        job = (await client.get(f"/jobs/{job_id}")).json()
        return job if job["state"] == state else None

    return await wait_until(reached, timeout_s=timeout_s, what=f"job {job_id} to be {state}")


async def finished(client: httpx.AsyncClient, job_id: str) -> Any:
    """The job once it has succeeded, failed or been canceled."""

    async def done() -> Any:
        job = (await client.get(f"/jobs/{job_id}")).json()
        return job if job["state"] in ("succeeded", "failed", "canceled") else None

    return await wait_until(done, what=f"job {job_id} to finish")


@pytest.fixture
def service_process(tmp_path: Path) -> Iterator[Callable[..., ServiceProcess]]:
    """A factory of service subprocesses, each killed at the end of the test."""
    made: list[ServiceProcess] = []

    def make(**env: str) -> ServiceProcess:
        defaults = {
            "CONVEYOR_DATABASE": str(tmp_path / "conveyor.db"),
            "CONVEYOR_TASKS": TASKS,
            "CONVEYOR_CONCURRENCY": "2",
            "CONVEYOR_CANCEL_GRACE_S": "1",
            "CONVEYOR_SHUTDOWN_GRACE_S": "0",  # SIGTERM stops and requeues at once
        }
        service = ServiceProcess(tmp_path, {**defaults, **env})
        made.append(service)
        return service

    yield make
    for service in made:
        service.close()


class SharedService:
    """One service subprocess for a module's tests, as a user starts it, with hypercorn's access
    log: what a test reads there is every request the service really received."""

    def __init__(self, workdir: Path, env: dict[str, str]) -> None:
        self.process = ServiceProcess(workdir, env)
        self.url = self.process.url
        self.access_log = workdir / "access.log"

    def start(self) -> None:
        fd = self.process.sock.fileno()
        with open(self.process.log, "ab") as log:
            self.process.proc = subprocess.Popen(
                [
                    sys.executable, "-m", "hypercorn", "--config", str(ROOT / "hypercorn.toml"),
                    "--bind", f"fd://{fd}", "--access-logfile", str(self.access_log),
                    "service.app:create_app()",
                ],
                cwd=self.process.workdir, env=self.process.env, pass_fds=(fd,), stdout=log,
                stderr=log,
            )  # fmt: skip

    def requests(self) -> list[str]:
        """The requests received so far, as "GET /jobs/…" (the path, without the query)."""
        if not self.access_log.exists():
            return []
        return re.findall(r'"([A-Z]+ [^" ]+) [^"]*"', self.access_log.read_text())

    def logged_so_far(self) -> int:
        """How many requests the log holds once those answered so far are in it: hypercorn
        writes a request's line after its answer has gone, so a client may be on to its next
        request before the last one is logged. A request to a path of its own is sent and
        waited for in the log; the count is up to it."""
        mark = f"GET /log-mark-{uuid.uuid4().hex}"
        httpx.get(self.url + mark.split(" ", 1)[1], timeout=10)
        wait_for(lambda: mark in self.requests(), f"{mark} in the access log")
        return self.requests().index(mark) + 1


@contextmanager
def started_service(workdir: Path, tasks: str, **env: str) -> Iterator[SharedService]:
    """A service subprocess serving ``tasks`` from a database in ``workdir``, until the end."""
    service = SharedService(
        workdir,
        {
            "CONVEYOR_DATABASE": str(workdir / "conveyor.db"),
            "CONVEYOR_TASKS": tasks,
            "CONVEYOR_CONCURRENCY": "2",
            "CONVEYOR_CANCEL_GRACE_S": "1",
            **env,
        },
    )
    service.start()
    try:
        asyncio.run(service.process.wait_ready())
        yield service
    finally:
        service.process.close()


@pytest.fixture(scope="module")
def shared_service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SharedService]:
    """A service serving tests.sample_tasks on a free port, shared by a module's tests."""
    with started_service(tmp_path_factory.mktemp("service"), TASKS) as service:
        yield service


@pytest.fixture(scope="session")
def postgres_cluster() -> Iterator[Cluster]:
    """The tests' own PostgreSQL server, started when a test first needs it."""
    with cluster() as server:
        yield server


@pytest.fixture
def postgres_database(postgres_cluster: Cluster) -> str:
    """The URL of a new empty database on the tests' PostgreSQL server."""
    return postgres_cluster.database()
