"""``KeepAliveTransport`` and ``AsyncKeepAliveTransport`` (``service.client.transport``,
``aio_transport``) against a real HTTP/1.1 server on a free port (http.server in a thread,
which counts the connections it accepts), and the clients over them against the real service."""

from __future__ import annotations

import asyncio
import http.server
import json
import socket
import threading
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest

from service.client import AsyncClient, Client, ConnectionFailed
from service.client.aio_transport import AsyncKeepAliveTransport
from service.client.transport import KeepAliveTransport, for_url

from .conftest import TASKS, SharedService, wait_for, wait_until


@dataclass
class Seen:
    """What the server received: each request as (client port, method, path, body)."""

    requests: list[tuple[int, str, str, bytes]] = field(default_factory=list)
    release: threading.Event = field(default_factory=threading.Event)  # for /stream, /hang

    @property
    def connections(self) -> int:
        return len({port for port, *_ in self.requests})

    def paths(self) -> list[str]:
        return [path for _, _, path, _ in self.requests]


class Handler(http.server.BaseHTTPRequestHandler):
    """Answers by path: /json echoes a JSON body; /close says ``Connection: close`` but keeps
    the connection; /drop answers, then closes it; /stream sends a chunk, waits for ``release``,
    sends another; /hang and /none never answer (/none closes at once); /short sends less body
    than it announced; /twice repeats a header."""

    protocol_version = "HTTP/1.1"
    server: Server

    def do_GET(self) -> None:
        self._answer()

    def do_POST(self) -> None:
        self._answer()

    def _answer(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        seen = self.server.seen
        seen.requests.append((self.client_address[1], self.command, self.path, body))
        match self.path:
            case "/stream":
                self._stream(seen.release)
            case "/hang" | "/none":
                if self.path == "/hang":
                    seen.release.wait(10)
                self.close_connection = True
            case "/short":
                self._send(b"abc", ("Content-Length", "10"))
                self.close_connection = True
            case "/close":
                self._send(b"{}", ("Connection", "close"))
                self.close_connection = False  # if it is used again, this server would tell
            case "/twice":
                self._send(b"{}", ("X-Part", "one"), ("X-Part", "two"))
            case _:
                self._send(body or b"{}")
                self.close_connection = self.path == "/drop"

    def _send(self, body: bytes, *headers: tuple[str, str]) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        for name, value in headers:
            self.send_header(name, value)
        if not any(name == "Content-Length" for name, _ in headers):
            self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _stream(self, release: threading.Event) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        self.wfile.write(b"5\r\nfirst\r\n")
        self.wfile.flush()
        release.wait(10)
        self.wfile.write(b"6\r\nsecond\r\n0\r\n\r\n")

    def log_message(self, *args: Any) -> None:
        pass


class Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    seen: Seen


@pytest.fixture
def server() -> Iterator[Server]:
    with Server(("127.0.0.1", 0), Handler) as made:
        made.seen = Seen()
        thread = threading.Thread(target=made.serve_forever)
        thread.start()
        try:
            yield made
        finally:
            made.seen.release.set()
            made.shutdown()
            thread.join(10)


def url_of(server: Server) -> str:
    return f"http://127.0.0.1:{server.server_address[1]}"


@pytest.fixture
def lean(server: Server) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=url_of(server), transport=KeepAliveTransport(), timeout=5) as made:
        yield made


def test_requests_one_after_another_share_one_connection(
    lean: httpx.Client, server: Server
) -> None:
    for number in range(20):
        assert lean.post("/json", json={"n": number}).json() == {"n": number}
    assert server.seen.connections == 1
    assert [body for *_, body in server.seen.requests] == [
        json.dumps({"n": n}, separators=(",", ":")).encode() for n in range(20)
    ]


def test_an_idle_connection_the_server_closed_is_replaced_and_nothing_is_sent_twice(
    lean: httpx.Client, server: Server
) -> None:
    answer = lean.get("/drop")  # the server closes it after answering, as an idle timeout does
    conn = answer.extensions["network_stream"]
    wait_for(lambda: bool(conn.get_extra_info("is_readable")), "the client to see the close")
    assert lean.post("/json", json={"once": True}).json() == {"once": True}
    assert server.seen.paths() == ["/drop", "/json"]
    assert server.seen.connections == 2


def test_an_answer_that_says_connection_close_ends_the_connection(
    lean: httpx.Client, server: Server
) -> None:
    lean.get("/close")
    lean.get("/json")
    lean.get("/json")
    assert server.seen.connections == 2  # the server left the first open: the client closed it


def test_a_stream_arrives_as_it_is_sent_and_a_whole_one_keeps_its_connection(
    lean: httpx.Client, server: Server
) -> None:
    with lean.stream("GET", "/stream") as answer:
        chunks = answer.iter_raw()
        assert next(chunks) == b"first"  # before the server sends more
        server.seen.release.set()
        assert b"".join(chunks) == b"second"
    lean.get("/json")
    assert server.seen.connections == 1


def test_a_stream_closed_early_closes_its_connection_and_the_next_request_gets_a_new_one(
    lean: httpx.Client, server: Server
) -> None:
    with lean.stream("GET", "/stream") as answer:
        assert next(answer.iter_raw()) == b"first"
    assert lean.post("/json", json={"after": 1}).json() == {"after": 1}
    assert server.seen.connections == 2


def test_headers_come_in_order_with_duplicates_and_the_status_line_s_parts(
    lean: httpx.Client,
) -> None:
    answer = lean.get("/twice")
    assert answer.headers.get_list("x-part") == ["one", "two"]
    assert answer.http_version == "HTTP/1.1" and answer.reason_phrase == "OK"


def test_threads_share_the_pool(lean: httpx.Client, server: Server) -> None:
    def work(worker: int) -> None:
        for number in range(25):
            assert lean.post("/json", json=[worker, number]).json() == [worker, number]

    threads = [threading.Thread(target=work, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert len(server.seen.requests) == 200
    assert server.seen.connections <= 8


def test_a_refused_connection_is_a_connect_error_and_the_client_s_connection_failed() -> None:
    with socket.socket() as bound:  # a port nobody listens on: connecting is refused
        bound.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{bound.getsockname()[1]}"
        with (
            httpx.Client(transport=KeepAliveTransport()) as lean,
            pytest.raises(httpx.ConnectError),
        ):
            lean.get(url)
        with Client(url) as client, pytest.raises(ConnectionFailed) as failed:
            client.health()
        assert url in str(failed.value)


def test_an_answer_that_does_not_come_is_a_read_timeout(lean: httpx.Client) -> None:
    with pytest.raises(httpx.ReadTimeout):
        lean.get("/hang", timeout=httpx.Timeout(5, read=0.2))


def test_a_server_that_closes_instead_of_answering_is_a_protocol_error(
    lean: httpx.Client,
) -> None:
    with pytest.raises(httpx.RemoteProtocolError, match="without sending a response"):
        lean.post("/none", json={})
    with pytest.raises(httpx.RemoteProtocolError):
        lean.get("/short")


def test_only_plain_http_without_a_proxy_uses_it(
    shared_service: SharedService, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert isinstance(for_url("http://127.0.0.1:8000"), KeepAliveTransport)
    assert for_url("https://conveyor.example") is None  # httpx's own, with TLS
    with Client("https://conveyor.example") as tls:
        assert isinstance(tls._http._transport, httpx.HTTPTransport)
    with Client(shared_service.url) as plain:
        assert isinstance(plain._http._transport, KeepAliveTransport)
        assert plain.submit(f"{TASKS}.add", 2, 3).result(timeout_s=10) == 5
    monkeypatch.setenv("HTTP_PROXY", "http://proxy.example:3128")
    assert for_url("http://127.0.0.1:8000") is None  # httpx honours the proxy, as before
    with Client(shared_service.url) as proxied:
        assert not isinstance(proxied._http._transport, KeepAliveTransport)


# -- the asyncio transport ----------------------------------------------------------------------


@pytest.fixture
async def alean(server: Server) -> AsyncIterator[httpx.AsyncClient]:
    transport = AsyncKeepAliveTransport()
    async with httpx.AsyncClient(base_url=url_of(server), transport=transport, timeout=5) as made:
        yield made


async def test_async_requests_share_one_connection_and_a_dropped_one_is_replaced(
    alean: httpx.AsyncClient, server: Server
) -> None:
    for number in range(20):
        assert (await alean.post("/json", json={"n": number})).json() == {"n": number}
    assert server.seen.connections == 1
    conn = (await alean.get("/drop")).extensions["network_stream"]
    await wait_until(lambda: conn.get_extra_info("is_readable"), what="the close to be seen")
    assert (await alean.post("/json", json={"once": True})).json() == {"once": True}
    assert server.seen.paths()[-2:] == ["/drop", "/json"]
    assert server.seen.connections == 2
    await alean.get("/close")
    await alean.get("/json")
    assert server.seen.connections == 3  # the server left /close's open: the client closed it


async def test_async_streams_arrive_as_sent_and_an_early_close_ends_the_connection(
    alean: httpx.AsyncClient, server: Server
) -> None:
    async with alean.stream("GET", "/stream") as answer:
        chunks = answer.aiter_raw()
        assert await anext(chunks) == b"first"  # before the server sends more
        server.seen.release.set()
        assert b"".join([chunk async for chunk in chunks]) == b"second"
    await alean.get("/json")
    assert server.seen.connections == 1
    server.seen.release.clear()
    async with alean.stream("GET", "/stream") as answer:
        assert await anext(answer.aiter_raw()) == b"first"
    server.seen.release.set()
    assert (await alean.get("/twice")).headers.get_list("x-part") == ["one", "two"]
    assert server.seen.connections == 2


async def test_async_concurrent_requests_each_get_a_connection(
    alean: httpx.AsyncClient, server: Server
) -> None:
    answers = await asyncio.gather(*(alean.post("/json", json=[n]) for n in range(10)))
    assert [a.json() for a in answers] == [[n] for n in range(10)]
    assert server.seen.connections <= 10


async def test_async_failures_are_httpx_s_errors(alean: httpx.AsyncClient) -> None:
    with pytest.raises(httpx.ReadTimeout):
        await alean.get("/hang", timeout=httpx.Timeout(5, read=0.2))
    with pytest.raises(httpx.RemoteProtocolError, match="without sending a response"):
        await alean.post("/none", json={})
    with pytest.raises(httpx.RemoteProtocolError):
        await alean.get("/short")
    with socket.socket() as bound:  # a port nobody listens on: connecting is refused
        bound.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{bound.getsockname()[1]}"
        with pytest.raises(httpx.ConnectError):
            await alean.get(url)
        async with AsyncClient(url) as client:
            with pytest.raises(ConnectionFailed):
                await client.health()


async def test_the_async_client_uses_it_for_plain_http(shared_service: SharedService) -> None:
    async with AsyncClient(shared_service.url) as plain:
        assert isinstance(plain._http._transport, AsyncKeepAliveTransport)
        job = await plain.submit(f"{TASKS}.add", 2, 3)
        assert await job.result(timeout_s=10) == 5
    async with AsyncClient("https://conveyor.example") as tls:
        assert isinstance(tls._http._transport, httpx.AsyncHTTPTransport)
