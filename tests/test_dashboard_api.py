"""What the dashboard reads: /stats, /workers, the list's filters, stream tokens, the page."""

from __future__ import annotations

import dataclasses
import time
from collections import Counter
from collections.abc import AsyncIterator
from typing import Any

import aiosqlite
import httpx
import pytest
from httpx_sse import aconnect_sse

from service.jobs import Event
from service.settings import Settings
from service.stats import BUCKET_S, JobStats, bucket_of
from service.streamtokens import StreamTokens

from .conftest import TASKS, finished, live_server, submit_job, wait_state, wait_until

T = TASKS + "."
TOKEN = "s3cret"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


async def stats(client: httpx.AsyncClient) -> Any:
    response = await client.get("/stats")
    assert response.status_code == 200, response.text
    return response.json()


async def stored_counts(database: str) -> Counter[tuple[str, str]]:
    """(queue, state) → jobs, counted by SQL: what /stats must agree with."""
    async with aiosqlite.connect(database) as conn:
        rows = await conn.execute_fetchall(
            "SELECT json_extract(options, '$.queue'), state, count(*) FROM jobs GROUP BY 1, 2"
        )
    return Counter({(row[0], row[1]): row[2] for row in rows})


def counts_of(body: Any) -> Counter[tuple[str, str]]:
    return Counter(
        {
            (queue, state): n
            for queue, states in body["by_queue"].items()
            for state, n in states.items()
            if n
        }
    )


# -- /stats --------------------------------------------------------------------------------------


async def test_stats_count_jobs_by_state_and_queue_and_survive_a_restart(
    settings: Settings,
) -> None:
    async with live_server(settings) as url, httpx.AsyncClient(base_url=url) as client:
        empty = await stats(client)
        assert empty["total"] == 0
        assert set(empty["by_state"]) == {
            "waiting", "scheduled", "queued", "running", "succeeded", "failed", "canceled",
        }  # fmt: skip
        ok = [await submit_job(client, "add", 1, i) for i in range(3)]
        bad = await submit_job(client, "fail", "boom", queue="reports")
        later = await submit_job(client, "add", 1, 2, delay_s=3600)
        held = await submit_job(client, "sleep", 30)
        await wait_state(client, held, "running")
        for job_id in [*ok, bad]:
            await finished(client, job_id)
        assert (await client.post(f"/jobs/{later}/cancel")).status_code == 200
        body = await stats(client)
        assert body["by_state"] == {
            "waiting": 0, "scheduled": 0, "queued": 0, "running": 1,
            "succeeded": 3, "failed": 1, "canceled": 1,
        }  # fmt: skip
        assert body["by_queue"]["reports"]["failed"] == 1
        assert body["by_queue"]["default"]["succeeded"] == 3
        assert body["total"] == 6
        assert counts_of(body) == await stored_counts(settings.database)
        buckets = body["throughput"]["buckets"]
        assert body["throughput"]["bucket_s"] == BUCKET_S
        assert len(buckets) == body["throughput"]["window_s"] // BUCKET_S
        assert sum(b["succeeded"] for b in buckets) == 3
        assert sum(b["failed"] for b in buckets) == 1
        assert sum(b["canceled"] for b in buckets) == 1
        assert body["event_id"] > 0
    # a new service reads the same figures back from the store (the held job was requeued,
    # and starts again: compared once it runs, the figures hold still for the comparison)
    async with live_server(settings) as url, httpx.AsyncClient(base_url=url) as client:
        await wait_state(client, held, "running")
        again = await stats(client)
        assert again["by_state"]["succeeded"] == 3 and again["by_state"]["canceled"] == 1
        assert sum(b["succeeded"] for b in again["throughput"]["buckets"]) == 3
        assert counts_of(again) == await stored_counts(settings.database)


async def test_stats_plus_the_events_after_its_event_id_give_the_counts_of_later(
    settings: Settings,
) -> None:
    """What the dashboard does: take /stats, then apply the stream's state events."""
    async with live_server(settings) as url, httpx.AsyncClient(base_url=url, timeout=10) as client:
        await submit_job(client, "add", 1, 1)
        before = await stats(client)
        counts = counts_of(before)
        job_ids = [await submit_job(client, "add", 2, i) for i in range(5)]
        job_ids.append(await submit_job(client, "sleep", 30, queue="slow"))
        await client.post(f"/jobs/{job_ids[-1]}/cancel")
        for job_id in job_ids:
            await finished(client, job_id)
        headers = {"Last-Event-ID": str(before["event_id"])}
        target = (await stats(client))["event_id"]
        async with aconnect_sse(client, "GET", "/events", headers=headers) as source:
            async for sse in source.aiter_sse():
                if not sse.data:
                    continue
                data = sse.json()
                if sse.event == "state":
                    if data["from"] is not None:
                        counts[(data["queue"], data["from"])] -= 1
                    counts[(data["queue"], data["state"])] += 1
                if int(sse.id) >= target:
                    break
        assert +counts == counts_of(await stats(client))


async def test_pruned_jobs_leave_the_counts(settings: Settings) -> None:
    settings = dataclasses.replace(settings, retention_s=0.5)
    async with live_server(settings) as url, httpx.AsyncClient(base_url=url) as client:
        job_id = await submit_job(client, "add", 1, 2)
        await finished(client, job_id)

        async def gone() -> bool:
            return (await client.get(f"/jobs/{job_id}")).status_code == 404

        await wait_until(gone, what="the job pruned", timeout_s=20)
        body = await stats(client)
        assert body["total"] == 0 and body["by_queue"] == {}
        # the stream tells of it too, so a page keeping counts from events drops the job
        async with aconnect_sse(client, "GET", "/events?last_event_id=0") as source:
            async for sse in source.aiter_sse():
                if sse.event == "pruned":
                    removed = sse.json()["removed"]
                    break
        assert removed == [{"queue": "default", "state": "succeeded", "jobs": 1}]
        # what finished still counts in the throughput: it did happen in that interval
        assert sum(b["succeeded"] for b in body["throughput"]["buckets"]) == 1


def test_job_stats_follow_moves_and_keep_only_the_window() -> None:
    stats = JobStats()
    stats.seed([("default", "queued", 2)], [])

    def moved(event_id: int, at: float, before: str | None, after: str) -> Event:
        data = {"queue": "default", "from": before, "state": after}
        return Event(event_id, f"j{event_id}", "state", at, data)

    now = 1_000_000.0
    stats.apply([moved(1, now, "queued", "running"), moved(2, now, "running", "succeeded")])
    stats.apply([Event(3, "j1", "progress", now, {"progress": None})])  # not a move
    body = stats.as_json(now)
    assert body["by_state"]["queued"] == 1 and body["by_state"]["succeeded"] == 1
    assert body["throughput"]["buckets"][-1] == {
        "at": body["throughput"]["buckets"][-1]["at"], "canceled": 0, "failed": 0, "succeeded": 1,
    }  # fmt: skip
    much_later = now + 3600
    stats.apply([moved(4, much_later, None, "canceled")])
    late = stats.as_json(much_later)
    assert sum(b["succeeded"] for b in late["throughput"]["buckets"]) == 0
    assert late["throughput"]["buckets"][-1]["canceled"] == 1
    assert bucket_of(much_later) % BUCKET_S == 0


async def test_a_retried_jobs_stream_goes_on_past_its_first_end(client: httpx.AsyncClient) -> None:
    job_id = await submit_job(client, "sleep", 30)
    await wait_state(client, job_id, "running")
    await client.post(f"/jobs/{job_id}/cancel")
    assert (await client.post(f"/jobs/{job_id}/retry")).status_code == 200
    await wait_state(client, job_id, "running")
    states = []
    async with aconnect_sse(client, "GET", f"/jobs/{job_id}/events") as source:
        async for sse in source.aiter_sse():
            if sse.event == "state":
                states.append(sse.json()["state"])
                if states[-1] == "running" and "canceled" in states:
                    break
    assert states == ["queued", "running", "canceled", "queued", "running"]
    await client.post(f"/jobs/{job_id}/cancel")


# -- /workers ------------------------------------------------------------------------------------


async def test_workers_show_who_is_busy_with_what(client: httpx.AsyncClient) -> None:
    job_id = await submit_job(client, "sleep", 30)
    await wait_state(client, job_id, "running")

    async def one_busy_one_idle() -> Any:
        body = (await client.get("/workers")).json()
        return body if (body["busy"], body["idle"]) == (1, 1) else None

    body = await wait_until(one_busy_one_idle, what="one busy worker and one idle")
    assert body["size"] == 2
    busy = next(w for w in body["workers"] if w["state"] == "busy")
    assert busy["job"]["id"] == job_id and busy["job"]["task"] == T + "sleep"
    assert busy["job"]["started_at"].endswith("Z") and busy["pid"] > 0
    idle = next(w for w in body["workers"] if w["state"] == "idle")
    assert idle["job"] is None
    await client.post(f"/jobs/{job_id}/cancel")

    async def all_idle() -> bool:
        body = (await client.get("/workers")).json()
        return body["busy"] == 0 and all(w["job"] is None for w in body["workers"])

    await wait_until(all_idle, what="the canceled job's worker idle again")


# -- the list's filters --------------------------------------------------------------------------


async def test_jobs_filter_by_queue_and_by_text_in_the_arguments(
    client: httpx.AsyncClient,
) -> None:
    first = await submit_job(client, "echo", "Quarterly Report", kwargs={"region": "north"})
    second = await submit_job(client, "echo", "weekly", queue="reports")
    third = await submit_job(client, "echo", "daily", kwargs={"region": "NORTH"})

    async def ids(query: str) -> list[str]:
        response = await client.get("/jobs?" + query)
        assert response.status_code == 200, response.text
        return [job["id"] for job in response.json()["jobs"]]

    assert await ids("queue=reports") == [second]
    assert await ids("queue=default") == [third, first]
    assert await ids("q=quarterly") == [first]  # ASCII case ignored
    assert await ids("q=north") == [third, first]  # keyword arguments too
    assert await ids("q=north&queue=reports") == []
    assert await ids("q=north&limit=1") == [third]
    assert await ids("q=%25") == []  # no wildcards: % is just a character
    response = await client.get("/jobs?q=" + "x" * 201)
    assert response.status_code == 400 and response.json()["error"] == "invalid_request"


# -- the page and its files ----------------------------------------------------------------------


async def test_the_dashboard_page_and_files_are_served(client: httpx.AsyncClient) -> None:
    page = await client.get("/")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert "default-src 'self'" in page.headers["content-security-policy"]
    script = await client.get("/static/app.js")
    assert script.status_code == 200
    assert "javascript" in script.headers["content-type"]
    assert (await client.get("/static/nope.js")).status_code == 404


# -- with a token --------------------------------------------------------------------------------


@pytest.fixture
async def guarded(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    async with (
        live_server(dataclasses.replace(settings, token=TOKEN)) as url,
        httpx.AsyncClient(base_url=url, timeout=10) as client,
    ):
        yield client


async def test_with_a_token_the_page_is_public_and_the_data_is_not(
    guarded: httpx.AsyncClient,
) -> None:
    assert (await guarded.get("/")).status_code == 200
    assert (await guarded.get("/static/app.js")).status_code == 200
    for path in ("/stats", "/workers", "/jobs", "/tasks"):
        assert (await guarded.get(path)).status_code == 401, path
        assert (await guarded.get(path, headers=AUTH)).status_code == 200, path
    assert (await guarded.post("/stream-token")).status_code == 401


async def test_a_stream_token_opens_streams_and_nothing_else(guarded: httpx.AsyncClient) -> None:
    response = await guarded.post("/stream-token", headers=AUTH)
    assert response.status_code == 200
    body = response.json()
    token = body["token"]
    assert TOKEN not in token and body["expires_in_s"] > 0
    async with guarded.stream("GET", "/events", params={"token": token}) as stream:
        assert stream.status_code == 200
        assert stream.headers["content-type"].startswith("text/event-stream")
    job_id = (
        await guarded.post("/jobs", json={"task": T + "add", "args": [1, 2]}, headers=AUTH)
    ).json()["id"]
    async with guarded.stream("GET", f"/jobs/{job_id}/events?token={token}") as stream:
        assert stream.status_code in (200, 204)
    # a stream token is no API token, and the API token does not go in a URL
    assert (await guarded.get("/jobs", params={"token": token})).status_code == 401
    assert (
        await guarded.get("/jobs", headers={"Authorization": f"Bearer {token}"})
    ).status_code == 401
    for wrong in (TOKEN, token + "x", "", "stream.abc.def"):
        async with guarded.stream("GET", "/events", params={"token": wrong}) as stream:
            assert stream.status_code == 401, wrong


def test_stream_tokens_expire_and_belong_to_their_secret() -> None:
    tokens = StreamTokens("one", ttl_s=0)
    token = tokens.issue()
    assert not StreamTokens("two").valid(token)
    assert StreamTokens("one").valid(token)
    # signed with a whole-second time stamp: expired once a second has gone by
    deadline = time.monotonic() + 5
    while tokens.valid(token):
        assert time.monotonic() < deadline, "a stream token outlived its time to live"
        time.sleep(0.05)
    assert not tokens.valid(token)
