"""How the API answers: JSON bodies (encoded by orjson), error bodies, event streams, and how
it reads a request's JSON body and query."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

import orjson
import pydantic
import pydantic_core
from quart import Response, request
from quart.json.provider import JSONProvider
from quart.wrappers.response import FileBody
from quart_schema import document_querystring
from werkzeug.datastructures import Headers
from werkzeug.exceptions import HTTPException, RequestTimeout

from ..schemas import StreamQuery, parse_id

Q = TypeVar("Q", bound=pydantic.BaseModel)


# on every answer: no content sniffing, no framing, no referrer sent on
SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
}
_SECURITY_ITEMS = list(SECURITY_HEADERS.items())
# below asyncio's default write buffer limit (64 KiB): a response this small is handed to the
# transport whole, whether the client reads or not
BUFFERED_BYTES = 32 * 1024
# an HTML page's too: it renders every value as text, and this stops anything else from running
# on it (no inline script, nothing from another origin, no framing)
PAGE_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; img-src 'self' data:; object-src 'none'; base-uri 'none'; "
        "frame-ancestors 'none'; form-action 'self'"
    ),
}


class WholeFileBody(FileBody):
    """A file sent from one read made in the loop. Quart's own opens it in a thread (aiofiles):
    a request cancelled meanwhile (its client gone) leaves the file open until the garbage
    collector finds it. The files served (the dashboard's, Swagger UI's) are small and local."""

    async def __aenter__(self) -> WholeFileBody:
        # in the loop on purpose (see above); begin and end: a range the request asked for
        with open(self.file_path, "rb") as file:  # noqa: ASYNC230
            file.seek(self.begin)
            self._rest = file.read(self.end - self.begin)
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self._rest = b""

    async def __anext__(self) -> bytes:
        if not self._rest:
            raise StopAsyncIteration
        chunk, self._rest = self._rest, b""
        return chunk


class ServiceResponse(Response):
    """The app's responses: made with the security headers (a handler's own headers win), files
    sent by ``WholeFileBody``."""

    file_body_class = WholeFileBody

    def __init__(
        self, response: Any = None, status: int | None = None,
        headers: dict[str, str] | Headers | None = None,
        mimetype: str | None = None, content_type: str | None = None,
    ) -> None:  # fmt: skip
        # at construction, not in an after_request hook: werkzeug's Headers.setdefault scans
        # the list of headers once per name, per response
        if headers:
            own = headers if isinstance(headers, Headers) else Headers(headers)
            secured = Headers([(k, v) for k, v in _SECURITY_ITEMS if k not in own])
            secured.extend(own)
        else:
            secured = Headers(_SECURITY_ITEMS)
        super().__init__(response, status, secured, mimetype, content_type)


def json_response(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    # a ready Response: quart-schema would otherwise re-validate every dict it is handed
    data = orjson.dumps(body)
    response = ServiceResponse(data, status, headers, content_type="application/json")
    if len(data) <= BUFFERED_BYTES:
        # it fits in the transport's buffer, so sending it never waits on the client: no
        # RESPONSE_TIMEOUT, which Quart enforces with a task of its own per response
        response.timeout = None
    return response


def error_response(status: int, error: str, detail: str, **extra: Any) -> Response:
    """The one shape of every error: ``error`` (a stable code), ``detail`` (for people), and
    whatever else says more (``fields``, ``state``...)."""
    return json_response({"error": error, "detail": detail, **extra}, status)


def sse_response(body: AsyncIterator[bytes]) -> Response:
    response = ServiceResponse(
        body,
        200,
        {
            "Content-Type": "text/event-stream",
            "Cache-Control": "no-cache",
            "X-Accel-Buffering": "no",  # proxies must not hold events back
        },
    )
    response.timeout = None  # else RESPONSE_TIMEOUT cuts the stream after 60 s
    return response


class OrjsonProvider(JSONProvider):
    def dumps(self, obj: Any, **kwargs: Any) -> str:
        return orjson.dumps(obj, default=pydantic_core.to_jsonable_python).decode()

    def loads(self, s: str | bytes, **kwargs: Any) -> Any:
        return orjson.loads(s)


class UnsupportedMediaType(HTTPException):
    code = 415
    description = "send a JSON body with 'Content-Type: application/json'"


class InvalidRequest(HTTPException):
    code = 400
    name = "Invalid Request"


MIN_INT, MAX_INT = -(2**63), 2**63 - 1  # what SQLite (and every 64-bit reader) holds exactly


class JsonRefused(Exception):
    """Valid JSON that means something else to different readers: a key given twice (which one
    wins?), an integer beyond 64 bits (read as a float, or refused, elsewhere)."""


async def json_body() -> Any:
    """The request body as JSON: 415 unless declared JSON (browsers cannot send that
    cross-site unasked), 400 if malformed, 413 if over the size limit, 422 (``JsonRefused``)
    for a key given twice in an object or an integer beyond 64 bits."""
    if not request.is_json:
        raise UnsupportedMediaType
    data = await _body()
    try:
        body = orjson.loads(data)  # fast, and strict about UTF-8 and surrogates
    except orjson.JSONDecodeError as exc:
        _read_strictly(data)  # a huge integer is JsonRefused, as a shorter one would be
        raise InvalidRequest(f"the body is not valid JSON: {_why(data, exc)}") from None
    # orjson keeps the last of two keys and makes a float of a huge integer, silently: read
    # once more by the standard parser, which lets each object's keys and integers be seen,
    # when the body may hold either
    if _may_be_refused(data, body):
        _read_strictly(data)
    return body


async def _body() -> bytes:
    """The whole body, as ``request.get_data()`` reads it (413 over the limit, 408 after
    BODY_TIMEOUT), but in this task: ``get_data`` waits in ``asyncio.wait_for``, which on
    Python 3.11 makes a task of its own for every request."""
    try:
        async with asyncio.timeout(request.body_timeout):
            data: bytes = await request.body
            return data
    except TimeoutError:
        raise RequestTimeout from None


_LONG_DIGITS = re.compile(rb"\d{19}")  # 19 digits: near 2**63 or beyond


def _may_be_refused(data: str | bytes, body: Any) -> bool:
    """Whether ``body`` (orjson's reading of ``data``) may hide a key given twice or an integer
    beyond 64 bits. A key given twice can only be if the keys orjson kept are fewer than the
    colons of ``data``: every member of an object has one outside strings, and a colon inside
    a string only adds to that count, so equal counts prove every key distinct."""
    if not isinstance(data, bytes) or _LONG_DIGITS.search(data):
        return True
    return _count_keys(body) != data.count(b":")


def _count_keys(body: Any) -> int:
    """The keys of every object in ``body``, however deep (without recursion: a body nested a
    thousand deep is valid JSON)."""
    keys, pending = 0, [body]
    while pending:
        value = pending.pop()
        if isinstance(value, dict):
            keys += len(value)
            pending.extend(value.values())
        elif isinstance(value, list):
            pending.extend(value)
    return keys


def _why(data: str | bytes, exc: orjson.JSONDecodeError) -> str:
    """What is wrong with a body orjson refused, said of the bytes where orjson speaks of a
    ``str`` (its words for bytes that are not UTF-8)."""
    if isinstance(data, bytes):
        try:
            data.decode()
        except UnicodeDecodeError as bad:
            return f"it is not UTF-8 (byte {bad.start} is {data[bad.start]:#04x})"
    return str(exc)


def _read_strictly(data: str | bytes) -> None:
    """JsonRefused for a key given twice or an integer beyond 64 bits; nothing otherwise (what
    is not JSON at all is orjson's to say)."""
    with contextlib.suppress(ValueError, RecursionError):
        json.loads(data, object_pairs_hook=_unique_keys, parse_int=_int64)


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    made = dict(pairs)
    if len(made) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise JsonRefused(f"the key {key!r} is given twice in one object")
            seen.add(key)
    return made


def _int64(text: str) -> int:
    if len(text) > 20 or not MIN_INT <= (value := int(text)) <= MAX_INT:
        shown = text if len(text) <= 30 else f"{text[:20]}… ({len(text)} digits)"
        raise JsonRefused(f"the integer {shown} is beyond 64 bits")
    return value


# -- query parameters: every route says which it takes, and any other is refused ---------------

QUERY_MODEL = "conveyor_query"  # the attribute of a view that names its query's model


class UnknownParameters(Exception):
    """The query names parameters its route does not take."""

    def __init__(self, names: list[str], known: list[str]) -> None:
        self.names = names
        takes = f"it takes {', '.join(known)}" if known else "it takes none"
        super().__init__(f"unknown query parameter(s) {', '.join(map(repr, names))}: {takes}")


def query(model: type[Q]) -> Callable[[Callable[..., Awaitable[Any]]], Any]:
    """Declare the query parameters a route takes, and document them: the route gets them,
    parsed, as its ``query`` argument; ``refuse_undeclared`` refuses any other."""

    def declare(view: Callable[..., Awaitable[Any]]) -> Any:
        @functools.wraps(view)
        async def parsing(*args: Any, **kwargs: Any) -> Any:
            return await view(*args, query=parse_query(model), **kwargs)

        setattr(parsing, QUERY_MODEL, model)
        return document_querystring(model)(parsing)

    return declare


def parse_query(model: type[Q]) -> Q:
    if not request.query_string:  # the usual case: the defaults, validated once
        defaults: Q = _defaults(model)
        return defaults
    unknown = [name for name in request.args if name not in model.model_fields]
    if unknown:
        raise UnknownParameters(unknown, list(model.model_fields))
    repeated = [name for name, values in request.args.lists() if len(values) > 1]
    if repeated:
        raise InvalidRequest(f"query parameter {repeated[0]!r} is given more than once")
    return model.model_validate(request.args.to_dict())


@functools.cache
def _defaults(model: type[Q]) -> Q:
    # shared by every request without a query: the query models are frozen
    return model.model_validate({})


def refuse_undeclared(view: Callable[..., Any] | None) -> None:
    """A route that declares no query takes none: the same 400 as any unknown parameter (no
    route at all: its 404 or 405 says more)."""
    # the raw query string first: reading request.args parses it into a MultiDict
    if view is None or not request.query_string or getattr(view, QUERY_MODEL, None) is not None:
        return
    if request.args:
        raise UnknownParameters(list(request.args), [])


def last_event_id(query: StreamQuery) -> int | None:
    """Where a stream resumes: the Last-Event-ID header, or ?last_event_id= (an EventSource
    opened anew cannot set the header); None if neither is given."""
    text = request.headers.get("Last-Event-ID") or query.last_event_id
    if not text:
        return None
    value = parse_id(text)
    if value is None:
        raise InvalidRequest(f"Last-Event-ID must be an event id (a whole number), got {text!r}")
    return value
