"""A lean HTTP/1.1 client for the benchmarks: keep-alive connections on asyncio streams, a
request written in one piece and its answer read by ``Content-Length``.

A benchmark that measures a server must not spend its own time in the client: httpx costs
about as much CPU per request as the service does (``bench/bench_client.py`` says how much), so
the figures of ``python -m bench`` are taken with this one, and the client's CPU is reported
beside the service's.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from types import TracebackType

import orjson


class HTTPError(Exception):
    """An answer the benchmark did not expect."""


class Connection:
    """One keep-alive connection; one request at a time."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    @classmethod
    def to(cls, url: str) -> Connection:
        host, port = url.removeprefix("http://").rstrip("/").split(":")
        return cls(host, int(port))

    async def __aenter__(self) -> Connection:
        self._reader, self._writer = await asyncio.open_connection(self.host, self.port)
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._writer is not None:
            self._writer.close()
            await asyncio.gather(self._writer.wait_closed(), return_exceptions=True)

    async def request(
        self, method: str, path: str, body: bytes | None = None,
        headers: Iterable[tuple[str, str]] = (),
    ) -> tuple[int, bytes]:  # fmt: skip
        """Send one request, read its whole answer: the status and the body."""
        assert self._reader is not None and self._writer is not None, "not connected"
        head = [f"{method} {path} HTTP/1.1", f"Host: {self.host}:{self.port}"]
        head.extend(f"{name}: {value}" for name, value in headers)
        if body is not None:
            head.append("Content-Type: application/json")
            head.append(f"Content-Length: {len(body)}")
        self._writer.write(("\r\n".join(head) + "\r\n\r\n").encode() + (body or b""))
        answer = await self._reader.readuntil(b"\r\n\r\n")
        status = int(answer[9:12])
        length, closing = 0, False
        for line in answer.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            name = name.lower()
            if name == b"content-length":
                length = int(value)
            elif name == b"connection":
                closing = value.strip().lower() == b"close"
            elif name == b"transfer-encoding":
                raise HTTPError(f"{method} {path}: a chunked answer (not read here)")
        body = await self._reader.readexactly(length)
        if closing:  # hypercorn closes a connection after keep_alive_max_requests: reopen
            await self.__aexit__(None, None, None)
            await self.__aenter__()
        return status, body

    async def json(
        self, method: str, path: str, payload: object = None, *, expect: tuple[int, ...] = (200,)
    ) -> object:
        """Send ``payload`` as JSON, and read the answer's JSON; HTTPError unless ``expect``."""
        body = None if payload is None else orjson.dumps(payload)
        status, answer = await self.request(method, path, body)
        if status not in expect:
            raise HTTPError(f"{method} {path}: {status} {answer[:300]!r}")
        return orjson.loads(answer) if answer else None


class EventCounter:
    """Counts what a stream of ``/events`` says, without reading it message by message: the
    service's terminal ``succeeded`` events, found by ``bytes.count`` in each chunk read."""

    MARK = b'"state":"succeeded"'

    def __init__(self, url: str) -> None:
        self.url = url
        self.succeeded = 0
        self._enough = asyncio.Event()
        self._want = 0
        self._task: asyncio.Task[None] | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def __aenter__(self) -> EventCounter:
        connection = Connection.to(self.url)
        reader, self._writer = await asyncio.open_connection(connection.host, connection.port)
        # HTTP/1.0: the body is the stream as sent, with no chunk framing to cut a mark in two
        self._writer.write(f"GET /events HTTP/1.0\r\nHost: {connection.host}\r\n\r\n".encode())
        await reader.readuntil(b"\r\n\r\n")
        await reader.readuntil(b"\n\n")  # retry:
        await reader.readuntil(b"\n\n")  # the stream's position: subscribed from here on
        self._task = asyncio.get_running_loop().create_task(self._count(reader))
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        if self._writer is not None:
            self._writer.close()

    async def _count(self, reader: asyncio.StreamReader) -> None:
        tail = b""
        while chunk := await reader.read(1 << 16):
            # a mark may straddle two reads: the last read's tail, shorter than a mark (so
            # never holding a whole one counted already), is joined to this one
            data = tail + chunk
            self.succeeded += data.count(self.MARK)
            tail = data[-(len(self.MARK) - 1) :]
            if self.succeeded >= self._want > 0:
                self._enough.set()

    async def until(self, succeeded: int) -> None:
        """Until the stream has said ``succeeded`` jobs succeeded."""
        self._want = succeeded
        if self.succeeded >= succeeded:
            return
        self._enough.clear()
        await self._enough.wait()
