"""One HTTP/1.1 exchange's bytes for ``transport``: a request as it goes on the wire, an
answer's head as httpx takes it (its body ``http.client`` reads), and the httpx error a failed
read stands for."""

from __future__ import annotations

import http.client
import io
import socket
from dataclasses import dataclass

import httpx

MAX_LINE_BYTES = 65536  # http.client's limits on an answer's head
MAX_HEADERS = 100


def request_bytes(request: httpx.Request) -> bytes:
    """The request as it goes on the wire, in one piece: one write, one segment for a small
    request (headers and body apart would be two). httpx has checked every header already."""
    body = request.read()
    lines = [b"%s %s HTTP/1.1" % (request.method.encode("ascii"), request.url.raw_path)]
    lines += [b"%s: %s" % pair for pair in request.headers.raw]
    if not isinstance(request.stream, httpx.ByteStream) and _is_chunked(request):
        # a generator's body (httpx announced it chunked), read whole: one chunk
        body = (b"%x\r\n%s\r\n" % (len(body), body) if body else b"") + b"0\r\n\r\n"
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


def _is_chunked(request: httpx.Request) -> bool:
    encoding: str = request.headers.get("transfer-encoding", "")
    return encoding.lower() == "chunked"


def read_error(exc: BaseException) -> httpx.TransportError:
    """httpx's exception for a failed read, as httpcore maps its own."""
    if isinstance(exc, http.client.RemoteDisconnected):  # EOF before a status line
        return httpx.RemoteProtocolError("Server disconnected without sending a response.")
    if isinstance(exc, TimeoutError):
        return httpx.ReadTimeout(str(exc) or "timed out")
    if isinstance(exc, OSError):
        return httpx.ReadError(str(exc) or type(exc).__name__)
    # a malformed status line or header, a body cut short
    return httpx.RemoteProtocolError(str(exc) or type(exc).__name__)


@dataclass(frozen=True, slots=True)
class Head:
    """An answer's status line and headers (as bytes, in order, duplicates kept, as httpx takes
    them), and how its body is framed."""

    version: int  # 10 or 11, as http.client counts
    status: int
    reason: str
    headers: list[tuple[bytes, bytes]]
    chunked: bool
    length: int | None  # None: to the chunked body's end, or else the connection's
    will_close: bool

    @property
    def is_interim(self) -> bool:
        """100 Continue, 103 Early Hints: the real answer follows (101 is one, and the last)."""
        return 100 <= self.status < 200 and self.status != 101


def parse_head(status_line: bytes, lines: list[bytes], *, is_head: bool) -> Head:
    """The ``Head`` of an answer from its status line and header lines (without the blank
    line that ends them); ``http.client`` exceptions for what is not HTTP/1.x."""
    version, status, reason = _parse_status(status_line)
    headers = _parse_headers(lines)
    first: dict[bytes, bytes] = {}  # the first value of each header, by its name in lower case
    for name, value in headers:
        first.setdefault(name.lower(), value)
    chunked = first.get(b"transfer-encoding", b"").strip().lower() == b"chunked"
    length = None if chunked else _length(first.get(b"content-length", b""))
    if status in (204, 304) or status < 200 or is_head:
        length = 0
    connection = first.get(b"connection", b"").lower()
    if version == 11:
        will_close = b"close" in connection
    else:  # HTTP/1.0 closes unless it says otherwise
        will_close = b"keep-alive" not in connection and b"keep-alive" not in first
    if length is None and not chunked:
        will_close = True  # the body ends where the connection does
    return Head(version, status, reason, headers, chunked, length, will_close)


def _parse_status(line: bytes) -> tuple[int, int, str]:
    if not line:
        raise http.client.RemoteDisconnected("Remote end closed connection without response")
    if len(line) > MAX_LINE_BYTES:
        raise http.client.LineTooLong("status line")
    version, _, rest = line.partition(b" ")
    code, _, reason = rest.partition(b" ")
    if not (version.startswith(b"HTTP/1.") and len(code) == 3 and code.isdigit()):
        raise http.client.BadStatusLine(repr(line))
    return (10 if version == b"HTTP/1.0" else 11), int(code), reason.strip().decode("latin-1")


def _parse_headers(lines: list[bytes]) -> list[tuple[bytes, bytes]]:
    if len(lines) > MAX_HEADERS:
        raise http.client.HTTPException(f"got more than {MAX_HEADERS} headers")
    headers: list[tuple[bytes, bytes]] = []
    for line in lines:
        if line[0] in b" \t" and headers:  # obsolete line folding: more of the last value
            name, value = headers[-1]
            headers[-1] = (name, value + b" " + line.strip())
            continue
        name, colon, value = line.partition(b":")
        if not colon or not name or name != name.strip():
            raise http.client.HTTPException(f"malformed header line {line!r}")
        headers.append((name, value.strip()))
    return headers


def _length(text: bytes) -> int | None:
    """Content-Length, or None (the body ends with the connection) if absent or malformed."""
    return int(text) if text.strip().isdigit() else None


class Answer(http.client.HTTPResponse):
    """``http.client``'s response, its head read here (``parse_head``), without the email
    parser ``http.client`` reads headers with (half of the sync transport's CPU). Its body is
    read by ``http.client``, chunked or not."""

    head: Head

    def __init__(self, sock: socket.socket, method: str) -> None:
        super().__init__(sock, method=method)
        self.is_head = method == "HEAD"

    def begin(self) -> None:
        while True:
            status_line = self.fp.readline(MAX_LINE_BYTES + 1)
            if not status_line:  # before anything was read: the server closed instead
                raise http.client.RemoteDisconnected("Remote end closed connection")
            self.head = parse_head(status_line, _head_lines(self.fp), is_head=self.is_head)
            if not self.head.is_interim:
                break
        head = self.head
        self.version, self.status, self.reason = head.version, head.status, head.reason
        self.code = head.status
        self.chunked, self.chunk_left = head.chunked, None
        self.length, self.will_close = head.length, head.will_close


def _head_lines(fp: io.BufferedReader) -> list[bytes]:
    """The header lines after a status line, up to the blank line that ends them."""
    lines: list[bytes] = []
    while (line := fp.readline(MAX_LINE_BYTES + 1)) not in (b"\r\n", b"\n"):
        if not line:
            raise http.client.IncompleteRead(b"", None)  # EOF within the head
        if len(line) > MAX_LINE_BYTES or len(lines) > MAX_HEADERS:
            raise http.client.HTTPException("an answer's head beyond http.client's limits")
        lines.append(line)
    return lines
