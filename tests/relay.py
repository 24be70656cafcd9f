"""A TCP relay in front of a server, for tests of a real cut: cutting it drops every connection
through it and refuses new ones, as a lost network does (a browser's offline mode and a client
on the same host would otherwise never see one)."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Coroutine, Iterator
from typing import Any


class Relay:
    """A TCP relay in front of the server: cutting it drops every connection through it and
    refuses new ones, as a lost network does (the browser's offline mode spares localhost)."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = 0
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(
            self._serve, "127.0.0.1", self.port, reuse_address=True
        )
        self.port = self._server.sockets[0].getsockname()[1]

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            writer.transport.abort()
            return
        self._writers |= {writer, up_writer}
        pumps = [self._pump(reader, up_writer), self._pump(up_reader, writer)]
        for pump in pumps:
            task = asyncio.create_task(pump)
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError, asyncio.CancelledError):
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        writer.transport.abort()
        self._writers.discard(writer)

    async def cut(self) -> None:
        assert self._server is not None
        self._server.close()
        for writer in list(self._writers):
            writer.transport.abort()
        self._writers.clear()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def close(self) -> None:
        await self.cut()


@contextlib.contextmanager
def relay_thread(target_port: int) -> Iterator[ThreadedRelay]:
    """A relay on a loop of its own in a thread: for tests whose client blocks."""
    relay = ThreadedRelay(target_port)
    try:
        yield relay
    finally:
        relay.stop()


class ThreadedRelay:
    def __init__(self, target_port: int) -> None:
        self.loop = asyncio.new_event_loop()
        self.relay = Relay(target_port)
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()
        self._call(self.relay.start())
        self.port = self.relay.port

    def _call(self, work: Coroutine[Any, Any, None]) -> None:
        asyncio.run_coroutine_threadsafe(work, self.loop).result(10)

    def cut(self) -> None:
        self._call(self.relay.cut())

    def restart(self) -> None:
        self._call(self.relay.start())

    def stop(self) -> None:
        self._call(self.relay.close())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)
        self.loop.close()
