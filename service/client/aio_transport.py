"""``AsyncKeepAliveTransport``: ``transport.KeepAliveTransport`` for ``AsyncClient``, over
asyncio streams: plain-HTTP/1.1 requests over keep-alive connections of its own, under httpx's
API, where httpx's default async transport (httpcore, anyio, h11) cost most of a request's CPU.
"""

from __future__ import annotations

import asyncio
import http.client
import time
from collections.abc import AsyncIterator, Awaitable
from typing import Any

import httpx

from .http11 import MAX_HEADERS, MAX_LINE_BYTES, Head, parse_head, read_error, request_bytes
from .transport import (
    IDLE_EXPIRY_S,
    MAX_CONNECTIONS,
    MAX_IDLE_CONNECTIONS,
    READ_CHUNK_BYTES,
    Origin,
    is_readable,
    proxied,
)

Timeouts = dict[str, float | None]


def for_url(url: str) -> AsyncKeepAliveTransport | None:
    """As ``transport.for_url``: ours for plain HTTP with no proxy set, else None (httpx's)."""
    return None if proxied(url) else AsyncKeepAliveTransport()


class Connection:
    """One stream pair to ``origin``, and when it was last handed back idle."""

    def __init__(
        self, origin: Origin, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        self.origin = origin
        self.reader = reader
        self.writer = writer
        self.idle_since = 0.0

    @classmethod
    async def open(cls, origin: Origin, timeout_s: float | None) -> Connection:
        try:
            async with asyncio.timeout(timeout_s):
                reader, writer = await asyncio.open_connection(*origin, limit=MAX_LINE_BYTES)
        except TimeoutError as exc:
            raise httpx.ConnectTimeout(str(exc) or "timed out") from exc
        except OSError as exc:  # refused, unreachable, no such host
            raise httpx.ConnectError(str(exc)) from exc
        return cls(origin, reader, writer)

    def is_dropped(self, now: float) -> bool:
        """Idle too long, or closed by the server: seen by the loop already, or not yet."""
        if now - self.idle_since > IDLE_EXPIRY_S or self.reader.at_eof():
            return True
        if self.writer.is_closing():
            return True
        sock = self.writer.get_extra_info("socket")
        return sock is None or is_readable(sock)

    def get_extra_info(self, info: str) -> Any:
        """httpx's ``network_stream`` interface, for what a test asks of a connection."""
        if info == "is_readable":
            return self.reader.at_eof() or is_readable(self.writer.get_extra_info("socket"))
        return self.writer.get_extra_info(info)

    def close(self) -> None:
        self.writer.close()  # its socket goes once the loop runs: nothing to wait for


class AsyncKeepAliveTransport(httpx.AsyncBaseTransport):
    """HTTP/1.1 over a pool of keep-alive connections per origin, for one event loop, no
    retries: an idle connection the server has closed is never used."""

    def __init__(self) -> None:
        self._idle: dict[Origin, list[Connection]] = {}
        self._idle_count = 0
        self._slots = asyncio.Semaphore(MAX_CONNECTIONS)
        self._closed = False
        self._fallback: httpx.AsyncHTTPTransport | None = None

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if request.url.scheme != "http":
            if self._fallback is None:
                self._fallback = httpx.AsyncHTTPTransport()
            return await self._fallback.handle_async_request(request)
        timeouts: Timeouts = request.extensions.get("timeout", {})
        try:
            async with asyncio.timeout(timeouts.get("pool")):
                await self._slots.acquire()
        except TimeoutError:
            raise httpx.PoolTimeout("no connection free in time") from None
        conn: Connection | None = None
        try:
            origin = (request.url.raw_host.decode("ascii"), request.url.port or 80)
            conn = self._reuse(origin) or await Connection.open(origin, timeouts.get("connect"))
            head = await _exchange(conn, request, timeouts)
            body = Body(self, conn, head, timeouts.get("read"))
            extensions = {
                "http_version": b"HTTP/1.1" if head.version == 11 else b"HTTP/1.0",
                "reason_phrase": head.reason.encode("latin-1"),
                "network_stream": conn,
            }
            return httpx.Response(
                head.status, headers=head.headers, stream=body, extensions=extensions
            )
        except BaseException:  # cancelled too: a request half sent or read is no state to reuse
            self.release(conn, reusable=False)
            raise

    def _reuse(self, origin: Origin) -> Connection | None:
        idle = self._idle.get(origin)
        now = time.monotonic()
        while idle:
            conn = idle.pop()  # the most recent: least likely to have been closed
            self._idle_count -= 1
            if not conn.is_dropped(now):
                return conn
            conn.close()
        return None

    def release(self, conn: Connection | None, *, reusable: bool) -> None:
        self._slots.release()
        if conn is None:
            return
        if reusable and not self._closed and self._idle_count < MAX_IDLE_CONNECTIONS:
            conn.idle_since = time.monotonic()
            self._idle.setdefault(conn.origin, []).append(conn)
            self._idle_count += 1
            return
        conn.close()

    async def aclose(self) -> None:
        self._closed = True
        for conns in self._idle.values():
            for conn in conns:
                conn.close()
        self._idle.clear()
        self._idle_count = 0
        if self._fallback is not None:
            await self._fallback.aclose()


async def _exchange(conn: Connection, request: httpx.Request, timeouts: Timeouts) -> Head:
    """Send ``request`` over ``conn`` and read its answer's status line and headers."""
    conn.writer.write(request_bytes(request))
    try:
        async with asyncio.timeout(timeouts.get("write")):
            await conn.writer.drain()
    except TimeoutError as exc:
        raise httpx.WriteTimeout(str(exc) or "timed out") from exc
    except OSError:
        pass  # as httpcore does: the server's answer, or the lack of one, says more
    is_head = request.method == "HEAD"
    try:
        async with asyncio.timeout(timeouts.get("read")):
            while (head := await _read_head(conn.reader, is_head)).is_interim:
                pass
    except (OSError, ValueError, http.client.HTTPException, asyncio.IncompleteReadError) as exc:
        raise read_error(_incomplete(exc)) from exc
    return head


async def _read_head(reader: asyncio.StreamReader, is_head: bool) -> Head:
    status_line = await reader.readline()
    lines: list[bytes] = []
    while status_line and (line := await reader.readline()) not in (b"\r\n", b"\n"):
        if not line.endswith(b"\n") or len(lines) > MAX_HEADERS:
            raise http.client.HTTPException("an answer's head cut short or too long")
        lines.append(line)
    return parse_head(status_line, lines, is_head=is_head)


def _incomplete(exc: BaseException) -> BaseException:
    """asyncio's EOF in the middle of an answer as http.client's, which ``read_error`` maps."""
    if isinstance(exc, asyncio.IncompleteReadError | asyncio.LimitOverrunError):
        return http.client.IncompleteRead(b"")
    return exc


class Body(httpx.AsyncByteStream):
    """An answer's body as it arrives (chunked, sized or to the connection's end); closing it
    hands the connection back if the body was read to its end and the server keeps it."""

    def __init__(
        self, transport: AsyncKeepAliveTransport, conn: Connection, head: Head, read_s: float | None
    ) -> None:
        self._transport = transport
        self._conn = conn
        self._head = head
        self._read_s = read_s
        self._complete = False
        self._closed = False

    async def __aiter__(self) -> AsyncIterator[bytes]:
        reader = self._conn.reader
        try:
            if self._head.chunked:
                while size := await self._chunk_size(reader):
                    async for piece in self._pieces(reader, size):
                        yield piece
                    await self._read(reader.readexactly(2))  # the CRLF after a chunk
                while await self._read(reader.readline()) not in (b"\r\n", b"\n", b""):
                    pass  # trailers
            else:
                async for piece in self._pieces(reader, self._head.length):
                    yield piece
        except (OSError, ValueError, http.client.HTTPException, asyncio.IncompleteReadError) as exc:
            raise read_error(_incomplete(exc)) from exc
        self._complete = True

    async def _chunk_size(self, reader: asyncio.StreamReader) -> int:
        line = await self._read(reader.readline())
        try:
            return int(line.split(b";", 1)[0], 16)
        except ValueError:  # b"": EOF where a chunk was due
            raise http.client.IncompleteRead(b"") from None

    async def _pieces(self, reader: asyncio.StreamReader, size: int | None) -> AsyncIterator[bytes]:
        """``size`` bytes as they arrive (None: up to EOF)."""
        left = size
        while left is None or left > 0:
            piece = await self._read(reader.read(min(left or READ_CHUNK_BYTES, READ_CHUNK_BYTES)))
            if not piece:
                if left is None:
                    return
                raise http.client.IncompleteRead(b"", left)
            if left is not None:
                left -= len(piece)
            yield piece

    async def _read(self, reading: Awaitable[bytes]) -> bytes:
        async with asyncio.timeout(self._read_s):
            data = await reading
        # a checkpoint, as each of anyio's reads is: bytes already buffered are returned without
        # suspending, and a caller's timeout (AsyncClient.follow's deadline) fires only there
        await asyncio.sleep(0)
        return data

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        reusable = self._complete and not self._head.will_close
        self._transport.release(self._conn, reusable=reusable)
