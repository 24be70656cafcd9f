"""The example apps of ``examples/`` against a real Conveyor, as a user runs them.

Conveyor runs in a subprocess serving ``examples.tasks``; each app is really served on a free
port (FastAPI by hypercorn in the test's loop, Flask by werkzeug's threaded server in a thread),
and the test talks to the app only, as a browser would. One test drives Debian's Chromium on the
app's page.
"""

from __future__ import annotations

import asyncio
import json
import re
import socket
import threading
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

import httpx
import pytest
from httpx_sse import aconnect_sse
from playwright.async_api import Browser, Locator, expect

import conveyor

from .browsers import HAVE_CHROMIUM, chromium
from .conftest import SharedService, serving, started_service, wait_until

APPS = ["fastapi", "flask"]
TOKEN = "example-token"  # Conveyor's; the apps hold it, the browser never sees it
Relayed = tuple[int, str, dict[str, Any]]  # id, event (kind), data


@pytest.fixture(scope="module")
def conveyor_service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SharedService]:
    """Conveyor serving examples.tasks on a free port, shared by this module's tests."""
    workdir = tmp_path_factory.mktemp("conveyor")
    with started_service(workdir, "examples.tasks", CONVEYOR_TOKEN=TOKEN) as service:
        yield service


ServeApp = Callable[[str, str, str], AbstractAsyncContextManager[str]]


@pytest.fixture
def serve_app(monkeypatch: pytest.MonkeyPatch) -> ServeApp:
    """``async with serve_app(kind, conveyor_url, token) as url``: that example app served on a
    free port, configured as a user configures it (CONVEYOR_URL, CONVEYOR_TOKEN); everything it
    started is stopped and closed on leaving."""

    @asynccontextmanager
    async def served(kind: str, conveyor_url: str, token: str) -> AsyncIterator[str]:
        monkeypatch.setenv("CONVEYOR_URL", conveyor_url)
        monkeypatch.setenv("CONVEYOR_TOKEN", token)
        serving = _fastapi_served() if kind == "fastapi" else _flask_served()
        async with serving as url:
            async with httpx.AsyncClient(base_url=url) as client:
                await wait_until(lambda: _answers(client), what=f"the {kind} app to answer")
            yield url

    return served


@asynccontextmanager
async def _fastapi_served() -> AsyncIterator[str]:
    from examples.fastapi_app import app  # its lifespan makes its client: CONVEYOR_URL is set

    async with serving(app) as url:
        yield url


@asynccontextmanager
async def _flask_served() -> AsyncIterator[str]:
    from werkzeug.serving import make_server

    from examples.flask_app import create_app

    app = create_app()
    server = make_server("127.0.0.1", 0, app, threaded=True)  # bound and listening already
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        thread.join(10)
        # its request threads end once their streams have and their clients have left
        await wait_until(lambda: not _request_threads(), what="the Flask request threads to end")
        server.server_close()
        client: conveyor.Client = app.extensions["conveyor"]
        client.close()


def _request_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if "process_request_thread" in t.name]


async def _answers(client: httpx.AsyncClient) -> bool:
    try:
        await client.get("/reports/not-a-job", timeout=2)
    except httpx.TransportError:
        return False
    return True


@pytest.fixture(params=APPS)
async def app_url(
    request: pytest.FixtureRequest, serve_app: ServeApp, conveyor_service: SharedService
) -> AsyncIterator[str]:
    """An example app in front of the shared Conveyor."""
    async with serve_app(request.param, conveyor_service.url, TOKEN) as url:
        yield url


@pytest.fixture
async def app(app_url: str) -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client of the example app (and of nothing else)."""
    async with httpx.AsyncClient(base_url=app_url, timeout=10) as client:
        yield client


async def submit(app: httpx.AsyncClient, pages: int, page_s: float) -> str:
    response = await app.post("/reports", json={"pages": pages, "page_s": page_s})
    assert response.status_code == 202, response.text
    job_id: str = response.json()["id"]
    return job_id


async def relayed(
    app: httpx.AsyncClient,
    job_id: str,
    last_event_id: int | None = None,
) -> list[Relayed]:
    """The events the app relays for the job (after ``last_event_id``), until the stream ends."""
    headers = {} if last_event_id is None else {"Last-Event-ID": str(last_event_id)}
    got: list[Relayed] = []
    async with (
        asyncio.timeout(20),
        aconnect_sse(app, "GET", f"/reports/{job_id}/events", headers=headers) as source,
    ):
        assert source.response.status_code == 200
        async for sse in source.aiter_sse():
            assert sse.data, "the relay sends events only"
            got.append((int(sse.id), sse.event, json.loads(sse.data)))
    return got


def ids(events: list[Relayed]) -> list[int]:
    return [event_id for event_id, _, _ in events]


async def conveyors_own(conveyor_url: str, job_id: str) -> list[Relayed]:
    """The job's events as Conveyor itself streams them (to compare the relay with)."""
    async with conveyor.AsyncClient(conveyor_url, TOKEN) as client:
        return [(e.id, e.kind, e.data) async for e in client.job(job_id).events(timeout_s=20)]


# -- submit, status, the relayed stream ---------------------------------------------------------


async def test_a_report_runs_and_its_events_are_relayed_to_the_end(
    app: httpx.AsyncClient, conveyor_service: SharedService
) -> None:
    response = await app.post("/reports", json={"pages": 8, "page_s": 0.1})
    assert response.status_code == 202, response.text
    body = response.json()
    job_id = body["id"]
    assert httpx.URL(response.headers["Location"]).path == f"/reports/{job_id}"
    assert body["conveyor_url"] == f"{conveyor_service.url}/jobs/{job_id}"
    assert httpx.URL(body["page"]).path == f"/reports/{job_id}/page"
    # its status, read through the app, while it has still most of its 0.8 s to go
    status = (await app.get(response.headers["Location"])).json()
    assert status["id"] == job_id
    assert status["state"] in ("queued", "running")
    assert status["result"] is None and status["error"] is None

    events = await relayed(app, job_id)  # returns: the relay ended with the job
    assert ids(events) == sorted(set(ids(events)))
    states = [data["state"] for _, kind, data in events if kind == "state"]
    assert states == ["queued", "running", "succeeded"]
    assert events[-1][1] == "state"  # the last one
    progress = [data["progress"] for _, kind, data in events if kind == "progress"]
    assert progress, "no progress was relayed"
    dones = [p["done"] for p in progress]
    assert dones == sorted(set(dones))  # coalesced maybe, never backwards
    assert all(p["total"] == 8 and p["message"] == f"page {p['done']}" for p in progress)
    assert progress[-1]["done"] == 8
    # what the browser got is what Conveyor sent: ids, kinds and data, nothing lost or added
    assert events == await conveyors_own(conveyor_service.url, job_id)

    status = (await app.get(f"/reports/{job_id}")).json()
    assert status["state"] == "succeeded"
    assert status["result"] == {"pages": 8}
    assert status["progress"] == {"done": 8, "total": 8, "message": "page 8"}
    assert status["error"] is None


async def test_a_reconnect_with_last_event_id_resumes_after_it(
    app: httpx.AsyncClient, conveyor_service: SharedService
) -> None:
    job_id = await submit(app, pages=10, page_s=0.1)
    # the first connection drops after the job's first progress event, while it runs
    before: list[Relayed] = []
    async with aconnect_sse(app, "GET", f"/reports/{job_id}/events") as source:
        async for sse in source.aiter_sse():
            before.append((int(sse.id), sse.event, json.loads(sse.data)))
            if sse.event == "progress":
                # the stream open, the app still answers: it holds neither a thread nor a loop
                status = (await app.get(f"/reports/{job_id}")).json()
                assert status["state"] == "running"
                break  # leaving the loop closes the connection
    assert before[-1][2]["progress"]["done"] < 10
    last_id = before[-1][0]
    after = await relayed(app, job_id, last_event_id=last_id)
    everything = await conveyors_own(conveyor_service.url, job_id)
    assert ids(after) == [i for i in ids(everything) if i > last_id]
    assert before + after == everything
    assert after[-1][2]["state"] == "succeeded"
    # resumed after its last event, the stream has nothing more: 204, and EventSource stops
    headers = {"Last-Event-ID": str(ids(after)[-1])}
    response = await app.get(f"/reports/{job_id}/events", headers=headers)
    assert response.status_code == 204


# -- refusals ---------------------------------------------------------------------------------


BAD_BODIES: list[Any] = [
    {"pages": 0},
    {"pages": -3},
    {"pages": 2.5},
    {"pages": "40"},
    {"pages": True},
    {"pages": None},
    {},
    {"pages": 3, "page_s": 0},
    {"pages": 3, "color": "red"},
    [3],
]


async def test_a_bad_body_is_a_json_4xx_and_submits_nothing(
    app: httpx.AsyncClient, conveyor_service: SharedService
) -> None:
    submits = conveyor_service.requests().count("POST /jobs")
    for body in [*BAD_BODIES, "not json"]:
        if isinstance(body, str):
            response = await app.post(
                "/reports", content=body, headers={"Content-Type": "application/json"}
            )
        else:
            response = await app.post("/reports", json=body)
        assert response.status_code in (400, 422), (body, response.text)
        assert response.headers["Content-Type"].startswith("application/json")
        assert response.json()["detail"], body
    # a good one after them does reach Conveyor: the access log counts what did
    await submit(app, pages=1, page_s=0.01)
    await wait_until(
        lambda: conveyor_service.requests().count("POST /jobs") == submits + 1,
        what="the one good submit in Conveyor's access log",
    )


async def test_an_unknown_report_is_a_404(app: httpx.AsyncClient) -> None:
    job_id = str(uuid.uuid4())
    for path in (f"/reports/{job_id}", f"/reports/{job_id}/events"):
        response = await app.get(path)
        assert response.status_code == 404, (path, response.text)
        assert response.json()["error"] == "not_found"


REFUSALS = {  # Conveyor's failures, and what the apps make of them
    "out of reach": (503, {"error": "unavailable", "detail": "the job service is down"}),
    "a wrong token": (502, {"error": "bad_gateway", "detail": "the job service refused"}),
}


@pytest.mark.parametrize("kind", APPS)
@pytest.mark.parametrize("failure", REFUSALS)
async def test_conveyor_failing_is_a_clean_json_error(
    serve_app: ServeApp, conveyor_service: SharedService, kind: str, failure: str
) -> None:
    status, error = REFUSALS[failure]
    with socket.socket() as closed:  # bound and not listening: every connection is refused
        closed.bind(("127.0.0.1", 0))
        if failure == "out of reach":
            conveyor_url, token = f"http://127.0.0.1:{closed.getsockname()[1]}", TOKEN
        else:
            conveyor_url, token = conveyor_service.url, "wrong"
        async with (
            serve_app(kind, conveyor_url, token) as url,
            httpx.AsyncClient(base_url=url) as app,
        ):
            for response in (
                await app.post("/reports", json={"pages": 3}),
                await app.get(f"/reports/{uuid.uuid4()}"),
                await app.get(f"/reports/{uuid.uuid4()}/events"),
            ):
                assert response.status_code == status, response.text
                assert response.json() == error  # no address, no token, no traceback


# -- the page, in a real browser ------------------------------------------------------------------


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    if not HAVE_CHROMIUM:
        pytest.skip("the browser test needs Debian's chromium (apt-get install chromium)")
    async with chromium() as launched:
        yield launched


async def _value(bar: Locator) -> float:
    return float(await bar.get_attribute("value") or 0)


async def test_the_page_follows_the_report_live(
    app: httpx.AsyncClient,
    browser: Browser,  # app first: the browser leaves before it stops
) -> None:
    errors: list[str] = []
    page = await browser.new_page()
    page.on("pageerror", lambda error: errors.append(str(error)))
    job_id = await submit(app, pages=20, page_s=0.1)
    await page.goto(f"{app.base_url}/reports/{job_id}/page")
    bar = page.locator("progress")
    # the bar moves as the job goes: a value part of the way, then a greater one
    first = await wait_until(lambda: _value(bar), what="the progress bar to move")
    await expect(page.locator("#message")).to_have_text(re.compile(r"^page \d+$"))
    await wait_until(lambda: _above(bar, first), what="the progress bar to move on")
    assert first < 20, "the page saw only the end"
    await expect(page.locator("#state")).to_have_text("succeeded", timeout=15_000)
    await expect(page.locator("#message")).to_have_text("page 20")
    await expect(page.locator("#result")).to_contain_text('"pages": 20')
    assert await _value(bar) == 20
    # an unknown report: the relay's 404 ends the page's stream
    await page.goto(f"{app.base_url}/reports/{uuid.uuid4()}/page")
    await expect(page.locator("#state")).to_have_text("no such report")
    await page.close()
    assert not errors, f"the page's script failed: {errors}"


async def _above(bar: Locator, value: float) -> bool:
    return await _value(bar) > value
