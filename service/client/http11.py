"""One HTTP/1.1 exchange's bytes for ``transport``: a request as it goes on the wire, an
answer's head as httpx takes it (its body ``http.client`` reads), and the httpx error a failed
read stands for."""

from __future__ import annotations

import http.client
import io
import socket

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


class Answer(http.client.HTTPResponse):
    """``http.client``'s response, its head read here: the headers as bytes, in order and with
    duplicates kept (as httpx takes them), without the email parser ``http.client`` reads them
    with (half of this transport's CPU). Its body is read by ``http.client``, chunked or not."""

    raw_headers: list[tuple[bytes, bytes]]

    def __init__(self, sock: socket.socket, method: str) -> None:
        super().__init__(sock, method=method)
        self.is_head = method == "HEAD"

    def begin(self) -> None:
        while True:
            self.version, self.status, self.reason = _read_status(self.fp)
            self.code = self.status
            self.raw_headers = _read_headers(self.fp)
            if not 100 <= self.status < 200 or self.status == 101:
                break  # an interim answer (100 Continue, 103 Early Hints): the real one follows
        first: dict[bytes, bytes] = {}  # the first value of each header, by its name in lower case
        for name, value in self.raw_headers:
            first.setdefault(name.lower(), value)
        self.chunked = first.get(b"transfer-encoding", b"").strip().lower() == b"chunked"
        self.chunk_left = None
        self.length = None if self.chunked else _length(first.get(b"content-length", b""))
        if self.status in (204, 304) or self.status < 200 or self.is_head:
            self.length = 0
        connection = first.get(b"connection", b"").lower()
        if self.version == 11:
            self.will_close = b"close" in connection
        else:  # HTTP/1.0 closes unless it says otherwise
            self.will_close = b"keep-alive" not in connection and b"keep-alive" not in first
        if self.length is None and not self.chunked:
            self.will_close = True  # the body ends where the connection does


def _read_status(fp: io.BufferedReader) -> tuple[int, int, str]:
    line = fp.readline(MAX_LINE_BYTES + 1)
    if not line:
        raise http.client.RemoteDisconnected("Remote end closed connection without response")
    if len(line) > MAX_LINE_BYTES:
        raise http.client.LineTooLong("status line")
    version, _, rest = line.partition(b" ")
    code, _, reason = rest.partition(b" ")
    if not (version.startswith(b"HTTP/1.") and len(code) == 3 and code.isdigit()):
        raise http.client.BadStatusLine(repr(line))
    return (10 if version == b"HTTP/1.0" else 11), int(code), reason.strip().decode("latin-1")


def _read_headers(fp: io.BufferedReader) -> list[tuple[bytes, bytes]]:
    headers: list[tuple[bytes, bytes]] = []
    while (line := fp.readline(MAX_LINE_BYTES + 1)) not in (b"\r\n", b"\n"):
        if not line:
            raise http.client.IncompleteRead(b"", None)  # EOF within the head
        if len(line) > MAX_LINE_BYTES or len(headers) >= MAX_HEADERS:
            raise http.client.HTTPException("an answer's head beyond http.client's limits")
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
