"""``KeepAliveTransport``: plain-HTTP/1.1 requests of the sync ``Client`` over keep-alive
connections of its own, under httpx's API (base URL, headers, timeouts, event hooks, errors).

httpx's default transport (httpcore over h11) cost about 850 µs of CPU a request on a 2-core
machine, where the rest of httpx took about 200 µs and a request over ``http.client`` about
250 µs in all. Here a request is one ``sendall`` of its bytes, ``http11`` reads the answer's
head and ``http.client`` its body, chunked or sized. HTTPS, and URLs that a proxy configured in
the environment serves, stay with httpx's own transport (``for_url``).
"""

from __future__ import annotations

import http.client
import select
import socket
import threading
import time
import urllib.request
from collections.abc import Iterator
from typing import Any

import httpx

from .http11 import Answer, read_error, request_bytes

# httpx's defaults (httpx.Limits()): more requests at once wait for a connection (pool timeout)
MAX_CONNECTIONS = 100
MAX_IDLE_CONNECTIONS = 20
# hypercorn closes a connection idle for its keep_alive_timeout (5 s here and by default); httpx
# keeps one as long, so a request may go out as the service closes it. Below that, it does not.
IDLE_EXPIRY_S = 4.0
READ_CHUNK_BYTES = 65536


def for_url(url: str) -> KeepAliveTransport | None:
    """The transport for a service at ``url``: ours for plain HTTP, None (httpx's own, which
    honours proxy variables of the environment as before) for HTTPS or when a proxy is set."""
    return None if proxied(url) else KeepAliveTransport()


def proxied(url: str) -> bool:
    """Whether ``url`` is one for httpx's own transport: HTTPS, or a proxy set for HTTP."""
    if httpx.URL(url).scheme != "http":
        return True
    proxies = urllib.request.getproxies()  # what httpx reads (get_environment_proxies)
    return bool(proxies.get("http") or proxies.get("all"))


Origin = tuple[str, int]


class Connection:
    """One socket to ``origin``, and when it was last handed back idle."""

    def __init__(self, origin: Origin, timeout_s: float | None) -> None:
        self.origin = origin
        try:
            self.sock = socket.create_connection(origin, timeout_s)
            self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except TimeoutError as exc:
            raise httpx.ConnectTimeout(str(exc)) from exc
        except OSError as exc:  # refused, unreachable, no such host
            raise httpx.ConnectError(str(exc)) from exc
        self.timeout_s = timeout_s
        self.idle_since = 0.0

    def set_timeout(self, timeout_s: float | None) -> None:
        if timeout_s != self.timeout_s:  # each change is a system call
            self.sock.settimeout(timeout_s)
            self.timeout_s = timeout_s

    def is_dropped(self, now: float) -> bool:
        """Idle too long, or readable while idle: the server closed it (EOF), or sent what no
        request asked for; either way no request may go over it."""
        if now - self.idle_since > IDLE_EXPIRY_S:
            return True
        return is_readable(self.sock)

    def get_extra_info(self, info: str) -> Any:
        """httpx's ``network_stream`` interface: the sync client cuts a stream at its deadline
        by shutting down ``get_extra_info("socket")``."""
        if info == "socket":
            return self.sock
        if info == "is_readable":
            return is_readable(self.sock)
        if info == "server_addr":
            return self.sock.getpeername()
        if info == "client_addr":
            return self.sock.getsockname()
        return None

    def close(self) -> None:
        self.sock.close()


def is_readable(sock: socket.socket) -> bool:
    """Whether ``sock`` has bytes or EOF to read now (never waits)."""
    if sock.fileno() < 0:
        return True
    if hasattr(select, "poll"):  # any descriptor number; select() only those below 1024
        poller = select.poll()
        poller.register(sock, select.POLLIN)
        return bool(poller.poll(0))
    return bool(select.select([sock], [], [], 0)[0])


class KeepAliveTransport(httpx.BaseTransport):
    """HTTP/1.1 over a pool of keep-alive connections per origin, thread-safe, no retries:
    an idle connection the server has closed is never used, so a request is sent once."""

    def __init__(self) -> None:
        self._idle: dict[Origin, list[Connection]] = {}
        self._idle_count = 0
        self._lock = threading.Lock()
        self._slots = threading.BoundedSemaphore(MAX_CONNECTIONS)
        self._closed = False
        self._fallback: httpx.HTTPTransport | None = None

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        if request.url.scheme != "http":
            return self._fallback_transport().handle_request(request)
        timeouts: dict[str, float | None] = request.extensions.get("timeout", {})
        pool_timeout_s = timeouts.get("pool")
        if not self._slots.acquire(timeout=pool_timeout_s):
            raise httpx.PoolTimeout(f"no connection free within {pool_timeout_s} s")
        try:
            origin = (request.url.raw_host.decode("ascii"), request.url.port or 80)
            conn = self._connection(origin, timeouts)
        except BaseException:
            self._slots.release()
            raise
        try:
            answer = _exchange(conn, request, timeouts)
            return _response(answer, Body(self, conn, answer))
        except BaseException:  # no answer to close (Body's close hands the connection back)
            self.release(conn, reusable=False)
            raise

    def _connection(self, origin: Origin, timeouts: dict[str, float | None]) -> Connection:
        now = time.monotonic()
        while True:
            with self._lock:
                idle = self._idle.get(origin)
                if not idle:
                    break
                conn = idle.pop()  # the most recent: least likely to have been closed
                self._idle_count -= 1
            if not conn.is_dropped(now):
                return conn
            conn.close()
        return Connection(origin, timeouts.get("connect"))

    def release(self, conn: Connection, *, reusable: bool) -> None:
        try:
            if reusable:
                with self._lock:
                    if not self._closed and self._idle_count < MAX_IDLE_CONNECTIONS:
                        conn.idle_since = time.monotonic()
                        self._idle.setdefault(conn.origin, []).append(conn)
                        self._idle_count += 1
                        return
            conn.close()
        finally:
            self._slots.release()

    def _fallback_transport(self) -> httpx.HTTPTransport:
        with self._lock:
            if self._fallback is None:
                self._fallback = httpx.HTTPTransport()
            return self._fallback

    def close(self) -> None:
        with self._lock:
            self._closed = True
            idle = [conn for conns in self._idle.values() for conn in conns]
            self._idle.clear()
            self._idle_count = 0
            fallback, self._fallback = self._fallback, None
        for conn in idle:
            conn.close()
        if fallback is not None:
            fallback.close()


def _exchange(
    conn: Connection, request: httpx.Request, timeouts: dict[str, float | None]
) -> Answer:
    """Send ``request`` over ``conn`` and read its answer's status line and headers."""
    conn.set_timeout(timeouts.get("write"))
    try:
        conn.sock.sendall(request_bytes(request))
    except TimeoutError as exc:
        raise httpx.WriteTimeout(str(exc)) from exc
    except OSError:
        # as httpcore does: a server may answer (413, say) and close before taking the whole
        # request; its answer, or the lack of one, says more than this error
        pass
    conn.set_timeout(timeouts.get("read"))
    answer = Answer(conn.sock, method=request.method)
    try:
        answer.begin()
    except (OSError, http.client.HTTPException) as exc:
        answer.close()
        raise read_error(exc) from exc
    return answer


def _response(answer: Answer, body: Body) -> httpx.Response:
    extensions = {
        "http_version": b"HTTP/1.1" if answer.version == 11 else b"HTTP/1.0",
        "reason_phrase": answer.reason.encode("latin-1"),
        "network_stream": body.conn,
    }
    return httpx.Response(
        answer.status, headers=answer.head.headers, stream=body, extensions=extensions
    )


class Body(httpx.SyncByteStream):
    """An answer's body as it arrives; closing it hands the connection back to the pool if the
    body was read to its end and the server keeps the connection, else closes it."""

    def __init__(self, transport: KeepAliveTransport, conn: Connection, answer: Answer) -> None:
        self.conn = conn
        self._transport = transport
        self._answer = answer
        self._complete = False
        self._closed = False

    def __iter__(self) -> Iterator[bytes]:
        try:
            # read1: what has arrived (one chunk of a chunked body), without waiting for more
            while chunk := self._answer.read1(READ_CHUNK_BYTES):
                yield chunk
        except (OSError, http.client.HTTPException) as exc:
            raise read_error(exc) from exc
        if self._answer.length:  # EOF before Content-Length bytes: read1 returns b"" then
            raise httpx.RemoteProtocolError(
                "peer closed connection without sending complete message body"
            )
        self._complete = True

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._answer.close()
        reusable = self._complete and not self._answer.will_close
        self._transport.release(self.conn, reusable=reusable)
