"""Hostile input, sent byte for byte to a real server: every answer is a clean 4xx (a JSON error
wherever the service itself answers), never a 5xx, and no stored job is changed by any of it."""

from __future__ import annotations

import asyncio
import contextlib
import re
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass
from functools import partial
from typing import Any
from urllib.parse import SplitResult, urlsplit

import httpx
import orjson
import pytest

from .conftest import TASKS, SharedService, finished, wait_for

ADD = f'"{TASKS}.add"'.encode()


@dataclass(frozen=True)
class Answer:
    status: int
    body: bytes

    def error(self) -> Any:
        return orjson.loads(self.body)


async def send(url: str, request: bytes) -> Answer:
    """One request as these very bytes (no client tidies the path or the body), and its answer.

    The service may answer before it has read all of a body it refuses (413): the answer is read
    whatever happened to the rest of the request (a blocking socket, as asyncio's streams drop
    what came in once a write has failed)."""
    return await asyncio.to_thread(_send, urlsplit(url), request)


def _send(address: SplitResult, request: bytes) -> Answer:
    with socket.create_connection((address.hostname, address.port), timeout=30) as sock:
        with contextlib.suppress(ConnectionError):
            sock.sendall(request)
        data = b""
        while b"\r\n\r\n" not in data:
            data += _received(sock)
        head, _, body = data.partition(b"\r\n\r\n")
        length = re.search(rb"content-length: *(\d+)", head, re.IGNORECASE)
        while length and len(body) < int(length.group(1)):
            body += _received(sock)
        return Answer(int(head.split(b" ", 2)[1]), body)


def _received(sock: socket.socket) -> bytes:
    chunk = sock.recv(65536)
    if not chunk:
        raise ConnectionError("the server closed the connection before it answered in full")
    return chunk


def post(path: bytes, body: bytes, content_type: bytes = b"application/json") -> bytes:
    return (
        b"POST %s HTTP/1.1\r\nHost: localhost\r\nContent-Type: %s\r\nContent-Length: %d\r\n"
        b"Connection: close\r\n\r\n%s" % (path, content_type, len(body), body)
    )


def get(path: bytes) -> bytes:
    return b"GET %s HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n" % path


async def everything_stored(client: httpx.AsyncClient) -> list[Any]:
    page = (await client.get("/jobs", params={"limit": 1000})).json()
    assert page["next"] is None
    jobs: list[Any] = page["jobs"]
    return jobs


@pytest.fixture(scope="module")
def server(shared_service: SharedService) -> str:
    """One service for the module's hundred requests: each test still checks that the jobs
    stored before it are there unchanged after it, and that the service is healthy."""
    return shared_service.url


@pytest.fixture(scope="module")
def seeded(server: str) -> None:
    """Jobs in each kind of lasting state: succeeded, failed, and scheduled for much later."""
    with httpx.Client(base_url=server, timeout=10) as client:

        def submitted(task: str, *args: Any, **fields: Any) -> str:
            body = {"task": f"{TASKS}.{task}", "args": list(args), **fields}
            response = client.post("/jobs", json=body)
            assert response.status_code == 202, response.text
            job_id: str = response.json()["id"]
            return job_id

        ends = {submitted("add", 1, 2): "succeeded", submitted("fail", "on purpose"): "failed"}
        submitted("add", 3, 4, delay_s=3600, key="later")
        for job_id, state in ends.items():
            wait_for(partial(_in_state, client, job_id, state), what=f"job {job_id} to be {state}")


def _in_state(client: httpx.Client, job_id: str, state: str) -> bool:
    return bool(client.get(f"/jobs/{job_id}").json()["state"] == state)


@pytest.fixture
async def stored(seeded: None, client: httpx.AsyncClient) -> AsyncIterator[list[Any]]:
    """The jobs stored before the test, unchanged by the time it ends."""
    before = await everything_stored(client)
    yield before
    assert await everything_stored(client) == before
    assert (await client.get("/health")).status_code == 200


BODIES = {
    "NaN": b'{"task": %s, "args": [NaN, 1]}' % ADD,
    "Infinity": b'{"task": %s, "args": [-Infinity, 1]}' % ADD,
    "a float beyond double": b'{"task": %s, "args": [1e999, 1]}' % ADD,
    "an integer of 5,000 digits": b'{"task": %s, "args": [%s, 1]}' % (ADD, b"9" * 5000),
    "2**64": b'{"task": %s, "args": [18446744073709551616, 1]}' % ADD,
    "nesting 100,000 deep": b'{"task": %s, "args": [%s1%s, 1]}' % (ADD, b"[" * 10**5, b"]" * 10**5),
    "a string that is not UTF-8": b'{"task": %s, "args": ["\xff\xfe", 1]}' % ADD,
    "a key that is not UTF-8": b'{"task": %s, "args": [1, 2], "\xc3": 1}' % ADD,
    "a lone surrogate": b'{"task": %s, "args": ["\\ud800", 1]}' % ADD,
    "a byte order mark": b'\xef\xbb\xbf{"task": %s, "args": [1, 2]}' % ADD,
    "UTF-16": f'{{"task": "{TASKS}.add", "args": [1, 2]}}'.encode("utf-16"),
    "a NUL in the task": b'{"task": "%s.add\\u0000", "args": [1, 2]}' % TASKS.encode(),
    "a key given twice": b'{"task": %s, "args": [1, 2], "args": [3, 4]}' % ADD,
    # colons in strings: more colons than keys, so the body is read again, strictly
    "a key given twice, a colon in a string": b'{"task": %s, "args": ["a:b", 2], "args": [3, 4]}'
    % ADD,
    "a key given twice, deep": b'{"task": %s, "args": [{"x": 1, "x": 2}, 2]}' % ADD,
    "-2**63 - 1": b'{"task": %s, "args": [-9223372036854775809, 1]}' % ADD,
    "a 10 MB string": b'{"task": %s, "args": ["%s", 1]}' % (ADD, b"x" * 10_000_000),
    "a 10 MB key": b'{"task": %s, "args": [1, 2], "key": "%s"}' % (ADD, b"k" * 10_000_000),
    "a bidirectional override in the key": b'{"task": %s, "args": [1, 2], "key": "a%sb"}'
    % (ADD, "\u202e".encode()),
    "not JSON at all": b"\x00\x01\x02",
    "nothing": b"",
}


@pytest.mark.parametrize("path", [b"/jobs", b"/jobs/batch", b"/schedules"])
@pytest.mark.parametrize("what", BODIES)
async def test_a_hostile_body_is_a_clean_refusal(
    server: str, stored: list[Any], path: bytes, what: str
) -> None:
    body = BODIES[what]
    if path == b"/jobs/batch":
        body = b'{"jobs": [%s]}' % body
    answer = await send(server, post(path, body))
    assert 400 <= answer.status < 500, (answer.status, answer.body[:300])
    error = answer.error()
    assert error["error"] and error["detail"]
    assert len(answer.body) < 10_000  # it says what is wrong, not the whole of it back


@pytest.mark.parametrize(
    ("what", "body"),
    [
        ("a colon in a string", b'{"task": %s, "args": [1, 2], "key": "k:1"}' % ADD),
        ("the largest 64-bit integers", b'{"task": %s, "args": [%s, %s]}'
         % (ADD, str(2**63 - 1).encode(), str(-(2**63)).encode())),
    ],
)  # fmt: skip
async def test_a_body_read_strictly_and_found_sound_is_taken(
    server: str, what: str, body: bytes
) -> None:
    answer = await send(server, post(b"/jobs", body))
    assert answer.status == 202, (what, answer.body[:300])
    # it runs to its end here, so that the next test finds the service's jobs at rest
    async with httpx.AsyncClient(base_url=server, timeout=10) as client:
        job_id = orjson.loads(answer.body)["id"]
        assert (await finished(client, job_id))["state"] == "succeeded"


async def test_a_body_that_is_not_utf8_is_said_to_be_so(server: str, stored: list[Any]) -> None:
    answer = await send(server, post(b"/jobs", BODIES["a string that is not UTF-8"]))
    assert answer.status == 400
    assert "not UTF-8" in answer.error()["detail"]


PATHS = [
    b"/static/../service/db.py",
    b"/static/%2e%2e/db.py",
    b"/static/..%2fdb.py",
    b"/static/views/../../app.py",
    b"/static/views/%2e%2e/%2e%2e/app.py",
    b"/static/%5c..%5capp.py",
    b"/static//etc/passwd",
    b"/static/%2fetc%2fpasswd",
    b"/static/app.js%00.html",
    b"/static/",
    b"/docs/files/../../db.py",
]


@pytest.mark.parametrize("path", PATHS)
async def test_a_path_trick_finds_nothing(server: str, stored: list[Any], path: bytes) -> None:
    answer = await send(server, get(path))
    assert answer.status == 404, (answer.status, answer.body[:300])
    assert answer.error()["error"] == "not_found"
    assert b"import" not in answer.body and b"root:" not in answer.body


ODD_IDS = [b"a" * 5000, b"%00", b"%ff", b"%C3%A9", b"..", b"%2e%2e", b"..%2f..%2fetc", b"%20"]


@pytest.mark.parametrize("job_id", ODD_IDS)
@pytest.mark.parametrize("route", [b"GET /jobs/%s", b"GET /jobs/%s/events", b"POST /jobs/%s/cancel",
                                   b"POST /jobs/%s/retry", b"DELETE /schedules/%s"])  # fmt: skip
async def test_an_odd_id_is_not_found(
    server: str, stored: list[Any], route: bytes, job_id: bytes
) -> None:
    method, path = (route % job_id).split(b" ")
    request = b"%s %s HTTP/1.1\r\nHost: localhost\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    answer = await send(server, request % (method, path))
    assert answer.status == 404, (answer.status, answer.body[:300])
    assert answer.error()["error"] == "not_found"


QUERIES = [
    b"/jobs?cursor=%ff",
    b"/jobs?cursor=" + b"A" * 4000,
    b"/jobs?limit=99999999999999999999999",
    b"/jobs?limit=-1",
    b"/jobs?limit=1e3",
    b"/jobs?limit=1&limit=2",
    b"/jobs?state=%00",
    b"/jobs?fields=%00",
    b"/jobs?wait_s=NaN",
    b"/jobs/x?wait_s=inf",
    b"/jobs/x?wait_s=-1",
    b"/events?last_event_id=%ff",
    b"/events?last_event_id=" + b"9" * 5000,
    b"/jobs/x/events?last_event_id=-1",
    b"/stats?bogus",
]


@pytest.mark.parametrize("path", QUERIES)
async def test_an_odd_query_is_a_clean_400(server: str, stored: list[Any], path: bytes) -> None:
    answer = await send(server, get(path))
    assert answer.status == 400, (answer.status, answer.body[:300])
    assert answer.error()["error"] == "invalid_request"


@pytest.mark.parametrize(
    "request_bytes",
    [
        get(b"/jobs/\xff"),  # a path that is not ASCII
        get(b"/jobs?task=" + b"a" * 100_000),  # a request line too long to read
        b"GET /jobs HTTP/1.1\r\nHost: localhost\r\nX: " + b"h" * 100_000 + b"\r\n\r\n",
        b"NOT HTTP AT ALL\r\n\r\n",
    ],
)
async def test_what_is_not_http_is_refused_by_the_server(
    server: str, stored: list[Any], request_bytes: bytes
) -> None:
    """Refused by the HTTP server before the service sees it: a 4xx of its own, with no body."""
    answer = await send(server, request_bytes)
    assert 400 <= answer.status < 500
