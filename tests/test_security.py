"""What every answer carries, whoever asks and whatever for."""

from __future__ import annotations

import asyncio
import dataclasses
import socket
import stat
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from service.errors import SettingsError
from service.settings import Settings

from .conftest import TASKS, live_server, samples, submit_job, wait_until

SECURITY_HEADERS = {
    "x-content-type-options": "nosniff",
    "x-frame-options": "DENY",
    "referrer-policy": "no-referrer",
}


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/jobs"),
        ("GET", "/jobs/{id}"),
        ("POST", "/jobs/{id}/cancel"),  # a 409: it has finished
        ("GET", "/jobs/{id}/events"),  # a 204: it has finished
        ("GET", "/health"),
        ("GET", "/openapi.json"),
        ("GET", "/docs"),
        ("GET", "/docs/files/swagger-ui.css"),
        ("GET", "/"),
        ("GET", "/static/app.js"),
        ("GET", "/no/such/page"),
        ("GET", "/jobs?bogus=1"),
    ],
)
async def test_every_answer_has_the_security_headers(
    client: httpx.AsyncClient, method: str, path: str
) -> None:
    job_id = await submit_job(client, "add", 1, 2)
    await client.get(f"/jobs/{job_id}", params={"wait_s": 10})
    response = await client.request(method, path.format(id=job_id))
    assert {k: response.headers.get(k) for k in SECURITY_HEADERS} == SECURITY_HEADERS


async def test_only_pages_carry_a_content_security_policy(client: httpx.AsyncClient) -> None:
    for path in ("/", "/docs"):
        policy = (await client.get(path)).headers["content-security-policy"]
        assert "default-src 'self'" in policy and "frame-ancestors 'none'" in policy
    assert "content-security-policy" not in (await client.get("/jobs")).headers


@pytest.mark.parametrize(
    ("body", "why"),
    [
        (
            '{"task": "tests.sample_tasks.add", "args": [1, 2], "args": [3, 4]}',
            "'args' is given twice",
        ),
        ('{"task": "tests.sample_tasks.echo", "kwargs": {"a": 1, "a": 2}}', "'a' is given twice"),
        ('{"task": "tests.sample_tasks.echo", "args": [18446744073709551616]}', "beyond 64 bits"),
        ('{"task": "tests.sample_tasks.echo", "args": [-9223372036854775809]}', "beyond 64 bits"),
        ('{"task": "tests.sample_tasks.echo", "args": [' + "9" * 5000 + "]}", "(5000 digits)"),
        ('{"jobs": [{"task": "tests.sample_tasks.add", "task": "x"}]}', "'task' is given twice"),
    ],
)
async def test_json_that_readers_would_read_differently_is_refused(
    client: httpx.AsyncClient, body: str, why: str
) -> None:
    path = "/jobs/batch" if body.startswith('{"jobs"') else "/jobs"
    response = await client.post(path, content=body, headers={"Content-Type": "application/json"})
    assert response.status_code == 422, response.text
    assert response.json()["error"] == "invalid_json" and why in response.json()["detail"]
    assert (await client.get("/jobs")).json()["jobs"] == []


async def test_the_64_bit_integers_at_the_edges_are_kept_exactly(client: httpx.AsyncClient) -> None:
    edges = [9223372036854775807, -9223372036854775808]
    response = await client.post(
        "/jobs?wait_s=10", json={"task": "tests.sample_tasks.echo", "args": edges}
    )
    assert response.status_code == 202 and response.json()["result"]["args"] == edges


async def test_open_streams_are_capped_and_a_closed_one_frees_its_place(
    settings: Settings,
) -> None:
    async with (
        live_server(dataclasses.replace(settings, max_streams=2)) as url,
        httpx.AsyncClient(base_url=url, timeout=10) as client,
    ):
        async with client.stream("GET", "/events") as first, client.stream("GET", "/events"):
            assert first.status_code == 200
            refused = await client.get("/events")
            assert refused.status_code == 503 and refused.headers["Retry-After"] == "5"
            assert refused.json()["error"] == "too_many_streams"
            job_id = await submit_job(client, "add", 1, 2)
            assert (await client.get(f"/jobs/{job_id}/events")).status_code == 503

        # both closed by the client: the server lets go of their places
        async def reopens() -> bool:
            async with client.stream("GET", "/events") as again:
                return again.status_code == 200

        await wait_until(reopens, what="a stream to open again")


@pytest.mark.timeout(120)
async def test_a_stream_whose_client_stopped_reading_is_dropped_and_frees_its_place(
    settings: Settings,
) -> None:
    """A client that takes nothing must not hold one of the few stream places for good."""
    limited = dataclasses.replace(settings, max_streams=1, stream_stall_s=0.5)
    async with (
        live_server(limited) as url,
        httpx.AsyncClient(base_url=url, timeout=10) as client,
    ):
        host, port = url.removeprefix("http://").split(":")
        with socket.socket() as stalled:
            stalled.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # fills soon
            stalled.connect((host, int(port)))
            stalled.sendall(f"GET /events HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())

            async def counted() -> bool:
                return await _metric(client, "conveyor_sse_clients") == 1

            await wait_until(counted, what="the stream open")
            assert (await client.get("/events")).status_code == 503  # it holds the one place

            async def dropped() -> bool:
                # a megabyte or so of log events at a time, until the server's writes to it
                # wait (never read)
                await submit_job(client, "flood", 250)
                return await _metric(client, "conveyor_sse_dropped_total") == 1

            await wait_until(dropped, timeout_s=60, what="the stalled stream dropped")
            assert await _metric(client, "conveyor_sse_clients") == 0
            async with client.stream("GET", "/events") as again:
                assert again.status_code == 200  # its place is free
            # the client, reading at last, gets what was buffered and then the end
            stalled.settimeout(10)
            received = b""
            while chunk := await asyncio.to_thread(stalled.recv, 1 << 16):
                received += chunk
            assert received.startswith(b"HTTP/1.1 200")


async def _metric(client: httpx.AsyncClient, name: str) -> float:
    return samples((await client.get("/metrics")).text)[(name, ())]


async def test_the_store_and_its_side_files_are_the_owners_alone(
    client: httpx.AsyncClient, settings: Settings
) -> None:
    job_id = await submit_job(client, "add", 1, 2)
    await client.get(f"/jobs/{job_id}", params={"wait_s": 10})  # a start journalled, a commit
    base = Path(settings.database)
    names = [base.name + suffix for suffix in ("", "-wal", "-shm", ".lock", ".started")]
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in base.parent.iterdir()}
    modes = {name: mode for name, mode in modes.items() if name in names}
    assert {base.name, base.name + "-wal", base.name + ".lock"} <= set(modes), modes
    assert modes == dict.fromkeys(modes, 0o600)


@pytest.mark.parametrize("path", ["/jobs", "/health", "/", "/events", "/docs"])
async def test_on_loopback_a_host_name_of_another_site_is_refused(
    client: httpx.AsyncClient, path: str
) -> None:
    """DNS rebinding: a page whose own name resolves to 127.0.0.1 must not reach the service."""
    response = await client.get(path, headers={"Host": "rebind.attacker.example:8000"})
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_host"
    assert "CONVEYOR_ALLOWED_HOSTS" in response.json()["detail"]


@pytest.mark.parametrize("host", ["localhost:8000", "127.0.0.1", "[::1]:8000", "api.localhost"])
async def test_on_loopback_the_loopback_names_are_answered(
    client: httpx.AsyncClient, host: str
) -> None:
    assert (await client.get("/health", headers={"Host": host})).status_code == 200


async def test_allowed_hosts_name_the_hosts_answered(settings: Settings) -> None:
    # 127.0.0.1 too: the test's own requests use it
    names = ("jobs.example.com", ".internal", "127.0.0.1")
    allowed = dataclasses.replace(settings, allowed_hosts=names)
    async with (
        live_server(allowed) as url,
        httpx.AsyncClient(base_url=url, timeout=10) as client,
    ):
        for host, status in [
            ("jobs.example.com", 200), ("JOBS.example.com:443", 200), ("a.b.internal", 200),
            ("internal.evil", 400), ("example.com", 400), ("localhost", 400),
        ]:  # fmt: skip
            response = await client.get("/health", headers={"Host": host})
            assert response.status_code == status, host


def test_allowed_hosts_are_read_from_the_environment() -> None:
    read = Settings.from_env({"CONVEYOR_ALLOWED_HOSTS": "Jobs.Example.com, .internal,*"})
    assert read.allowed_hosts == ("jobs.example.com", ".internal", "*")
    with pytest.raises(SettingsError, match="CONVEYOR_ALLOWED_HOSTS"):
        Settings.from_env({"CONVEYOR_ALLOWED_HOSTS": "bad host!"})


# -- scoped tokens ------------------------------------------------------------------------------

READER, WRITER, OLD = "r3ad-only", "wr1te", "legacy-write"


@pytest.fixture
async def scoped(settings: Settings) -> AsyncIterator[str]:
    tokens = {READER: "read", WRITER: "write"}
    async with live_server(dataclasses.replace(settings, tokens=tokens, token=OLD)) as url:
        yield url


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def test_a_read_token_reads_and_a_write_token_also_writes(scoped: str) -> None:
    async with httpx.AsyncClient(base_url=scoped, timeout=10) as client:
        body = {"task": TASKS + ".sleep", "args": [30]}
        refused = await client.post("/jobs", json=body, headers=bearer(READER))
        assert refused.status_code == 403 and refused.json()["error"] == "forbidden"
        made = await client.post("/jobs", json=body, headers=bearer(WRITER))
        assert made.status_code == 202
        job_id = made.json()["id"]
        for path in (f"/jobs/{job_id}", "/jobs", "/tasks", "/stats", "/workers", "/metrics"):
            assert (await client.get(path, headers=bearer(READER))).status_code == 200, path
        cancel = f"/jobs/{job_id}/cancel"
        assert (await client.post(cancel, headers=bearer(READER))).status_code == 403
        schedule = {"task": TASKS + ".add", "args": [1, 2], "cron": "@daily"}
        assert (
            await client.post("/schedules", json=schedule, headers=bearer(READER))
        ).status_code == 403
        # CONVEYOR_TOKEN stays, as a write token
        assert (await client.post(cancel, headers=bearer(OLD))).json()["state"] == "canceled"
        assert (await client.get("/jobs", headers=bearer("wrong"))).status_code == 401
        assert (await client.get("/jobs")).status_code == 401
        assert (await client.get("/jobs")).headers["WWW-Authenticate"] == 'Bearer realm="conveyor"'


async def test_a_stream_token_carries_its_tokens_scope(scoped: str) -> None:
    async with httpx.AsyncClient(base_url=scoped, timeout=10) as client:
        for token, scope in ((READER, "read"), (WRITER, "write")):
            issued = (await client.post("/stream-token", headers=bearer(token))).json()
            assert issued["scope"] == scope
            async with client.stream("GET", "/events", params={"token": issued["token"]}) as s:
                assert s.status_code == 200
        # a stream token opens streams only: not a GET of the API
        assert (await client.get("/jobs", params={"token": issued["token"]})).status_code == 401


def test_scoped_tokens_are_read_from_the_environment() -> None:
    read = Settings.from_env({"CONVEYOR_TOKENS": "read:abc, write:def", "CONVEYOR_TOKEN": "ghi"})
    assert read.scoped_tokens == {"abc": "read", "def": "write", "ghi": "write"}
    for bad in ("admin:abc", "abc", "read:", "read:a b", "read:x,write:x"):
        with pytest.raises(SettingsError, match="CONVEYOR_TOKENS"):
            Settings.from_env({"CONVEYOR_TOKENS": bad})


# -- CORS -----------------------------------------------------------------------------------------

APP = "https://app.example.com"


async def test_without_cors_origins_no_page_elsewhere_may_read_answers(
    client: httpx.AsyncClient,
) -> None:
    response = await client.get("/jobs", headers={"Origin": APP})
    assert "access-control-allow-origin" not in response.headers


async def test_cors_origins_may_call_the_api_and_others_may_not(settings: Settings) -> None:
    allowed = dataclasses.replace(settings, cors_origins=(APP,), token="s3cret")
    async with (
        live_server(allowed) as url,
        httpx.AsyncClient(base_url=url, timeout=10) as client,
    ):
        preflight = await client.options(
            "/jobs",
            headers={
                "Origin": APP,
                "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": "authorization, content-type, idempotency-key",
            },
        )  # no token: a browser sends none with a preflight
        assert preflight.status_code == 200
        assert preflight.headers["access-control-allow-origin"] == APP
        assert "idempotency-key" in preflight.headers["access-control-allow-headers"].lower()
        answer = await client.get("/jobs", headers={"Origin": APP, **bearer("s3cret")})
        assert answer.headers["access-control-allow-origin"] == APP
        other = await client.get(
            "/jobs", headers={"Origin": "https://evil.example", **bearer("s3cret")}
        )
        assert "access-control-allow-origin" not in other.headers


@pytest.mark.parametrize("header", ["9" * 5000, "1" * 20], ids=["5000 digits", "20 digits"])
async def test_an_event_id_too_long_is_a_clean_400(client: httpx.AsyncClient, header: str) -> None:
    for response in (
        await client.get("/events", headers={"Last-Event-ID": header}),
        await client.get("/events", params={"last_event_id": header}),
    ):
        assert response.status_code == 400 and response.json()["error"] == "invalid_request"
        assert "whole number" in response.json()["detail"]


async def test_a_cursor_too_long_is_a_clean_400(client: httpx.AsyncClient) -> None:
    response = await client.get("/jobs", params={"cursor": "9" * 5000})
    assert response.status_code == 400
    assert response.json()["detail"] == "cursor: not a cursor from 'next'"


@pytest.mark.parametrize("key", ["invoice\u202egpj.exe", "tab\there", "zero\u200bwidth"])
async def test_a_key_that_does_not_show_as_it_is_is_refused(
    client: httpx.AsyncClient, key: str
) -> None:
    response = await client.post("/jobs", json={"task": TASKS + ".add", "args": [1, 2], "key": key})
    assert response.status_code == 422 and response.json()["error"] == "unsafe_text"
    assert response.json()["field"] == "key" and "U+" in response.json()["detail"]
    assert (await client.get("/jobs")).json()["jobs"] == []


async def test_a_list_can_leave_out_arguments_results_and_errors(
    client: httpx.AsyncClient,
) -> None:
    await client.post("/jobs?wait_s=10", json={"task": TASKS + ".echo", "args": ["x" * 50_000]})
    page = (await client.get("/jobs", params={"fields": "task,state"})).json()
    assert page["jobs"] == [
        {"id": page["jobs"][0]["id"], "task": TASKS + ".echo", "state": "succeeded"}
    ]
    refused = await client.get("/jobs", params={"fields": "task,secret"})
    assert refused.status_code == 400 and "secret" in refused.json()["detail"]
