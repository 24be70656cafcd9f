"""``?wait_s=``: the job in one call once it has finished; and query parameters refused alike on
every route. Against a real server on a free port."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator

import httpx
import pytest

from service.settings import Settings

from .conftest import TASKS, live_server, submit_job, wait_state

T = TASKS + "."


async def test_a_submit_that_waits_answers_with_the_finished_job(client: httpx.AsyncClient) -> None:
    response = await client.post("/jobs?wait_s=20", json={"task": T + "add", "args": [2, 3]})
    assert response.status_code == 202
    job = response.json()
    assert (job["state"], job["result"]) == ("succeeded", 5)
    assert response.headers["Location"] == f"/jobs/{job['id']}"


async def test_a_read_that_waits_answers_once_the_job_fails(client: httpx.AsyncClient) -> None:
    job_id = await submit_job(client, "fail", "no luck")
    job = (await client.get(f"/jobs/{job_id}", params={"wait_s": 20})).json()
    assert job["state"] == "failed" and job["error"]["message"] == "no luck"


async def test_a_wait_that_runs_out_answers_with_the_job_as_it_stands(
    client: httpx.AsyncClient,
) -> None:
    job_id = await submit_job(client, "sleep", 30)
    await wait_state(client, job_id, "running")
    response = await client.get(f"/jobs/{job_id}", params={"wait_s": 0.2})
    assert response.status_code == 200 and response.json()["state"] == "running"
    await client.post(f"/jobs/{job_id}/cancel")


async def test_a_cancel_ends_the_wait_of_another_request(client: httpx.AsyncClient) -> None:
    job_id = await submit_job(client, "sleep", 30)
    await wait_state(client, job_id, "running")
    waiting = asyncio.ensure_future(client.get(f"/jobs/{job_id}", params={"wait_s": 25}))
    await client.post(f"/jobs/{job_id}/cancel")
    response = await asyncio.wait_for(waiting, 10)
    assert response.json()["state"] == "canceled"


@pytest.fixture
async def capped(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    async with (
        live_server(dataclasses.replace(settings, max_wait_s=0.3)) as url,
        httpx.AsyncClient(base_url=url, timeout=10) as client,
    ):
        yield client


async def test_no_request_waits_longer_than_the_cap(capped: httpx.AsyncClient) -> None:
    # the job outlives the client's timeout: only the cap can make the answer come in time
    response = await capped.post("/jobs?wait_s=50", json={"task": T + "sleep", "args": [30]})
    job = response.json()
    assert response.status_code == 202 and job["state"] in ("queued", "running")
    await capped.post(f"/jobs/{job['id']}/cancel")


@pytest.mark.parametrize("wait_s", ["-1", "soon", "inf", "nan", ""])
async def test_a_bad_wait_is_400_and_submits_nothing(
    client: httpx.AsyncClient, wait_s: str
) -> None:
    response = await client.post(f"/jobs?wait_s={wait_s}", json={"task": T + "add", "args": [1, 2]})
    assert response.status_code == 400, response.text
    body = response.json()
    assert body["error"] == "invalid_request" and body["fields"][0]["field"] == "wait_s"
    assert (await client.get("/jobs")).json()["jobs"] == []


@pytest.mark.parametrize(
    ("method", "path", "known"),
    [
        ("GET", "/jobs/{id}?wait=5", "wait_s"),
        ("GET", "/jobs?bogus=1", "state"),
        ("GET", "/jobs/{id}/logs?lines=3", "tail"),
        ("GET", "/jobs/{id}/events?after=3", "last_event_id"),
        ("GET", "/events?since=0", "last_event_id"),
        ("POST", "/jobs/{id}/cancel?force=1", None),
        ("POST", "/jobs/{id}/retry?now=1", None),
        ("GET", "/tasks?verbose=1", None),
        ("GET", "/stats?x=1", None),
        ("GET", "/workers?x=1", None),
        ("GET", "/health?x=1", None),
        ("GET", "/schedules?x=1", None),
    ],
)
async def test_an_unknown_query_parameter_is_refused_alike_on_every_route(
    client: httpx.AsyncClient, method: str, path: str, known: str | None
) -> None:
    job_id = await submit_job(client, "add", 1, 2)
    response = await client.request(method, path.format(id=job_id))
    assert response.status_code == 400, response.text
    body = response.json()
    name = path.split("?")[1].split("=")[0]
    assert body["error"] == "invalid_request"
    assert body["fields"] == [{"field": name, "message": "not a parameter"}]
    assert repr(name) in body["detail"]
    assert (known or "takes none") in body["detail"]


async def test_a_repeated_query_parameter_is_refused(client: httpx.AsyncClient) -> None:
    response = await client.get("/jobs?limit=1&limit=2")
    assert response.status_code == 400 and "more than once" in response.json()["detail"]


async def test_a_path_no_route_has_is_404_whatever_its_query(client: httpx.AsyncClient) -> None:
    response = await client.get("/no/such/route?x=1")
    assert response.status_code == 404 and response.json()["error"] == "not_found"
