"""Unique job keys and the Idempotency-Key header."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import httpx
import pytest

from service.db import IdempotencyClaim
from service.jobs import Job, JobState
from service.store.sqlite import SqliteStore

from .conftest import finished

T = "tests.sample_tasks."


async def post(
    client: httpx.AsyncClient, *, once: str | None = None, **body: object
) -> httpx.Response:
    """POST /jobs; ``once`` is the Idempotency-Key header."""
    headers = {} if once is None else {"Idempotency-Key": once}
    return await client.post("/jobs", json=body, headers=headers)


async def test_a_key_returns_the_unfinished_job_then_frees_up(
    client: httpx.AsyncClient, tmp_path: Path
) -> None:
    gate = tmp_path / "open"
    body: dict[str, Any] = {"task": T + "gate", "args": [str(gate)], "key": "nightly-report"}
    first = await post(client, **body)
    assert first.status_code == 202 and first.json()["key"] == "nightly-report"
    again = await post(client, **body)
    assert again.status_code == 200, again.text
    assert again.json()["id"] == first.json()["id"]
    assert again.headers["Location"] == f"/jobs/{first.json()['id']}"
    other_key = await post(client, **{**body, "key": "another"})
    assert other_key.status_code == 202
    gate.touch()
    await finished(client, first.json()["id"])
    await finished(client, other_key.json()["id"])
    after = await post(client, **body)  # the holder finished: the key is free
    assert after.status_code == 202 and after.json()["id"] != first.json()["id"]
    await finished(client, after.json()["id"])


async def test_racing_submits_of_one_key_make_one_job(
    client: httpx.AsyncClient, tmp_path: Path
) -> None:
    body: dict[str, Any] = {"task": T + "gate", "args": [str(tmp_path / "never")], "key": "once"}
    responses = await asyncio.gather(*(post(client, **body) for _ in range(30)))
    assert sorted(r.status_code for r in responses) == [200] * 29 + [202]
    assert len({r.json()["id"] for r in responses}) == 1
    page = (await client.get("/jobs", params={"limit": 100})).json()
    assert len(page["jobs"]) == 1
    await client.post(f"/jobs/{responses[0].json()['id']}/cancel")


async def test_a_scheduled_job_holds_its_key_and_cancel_frees_it(
    client: httpx.AsyncClient,
) -> None:
    body: dict[str, Any] = {"task": T + "add", "args": [1, 2], "key": "k", "delay_s": 60}
    first = (await post(client, **body)).json()
    assert first["state"] == "scheduled"
    assert (await post(client, **body)).json()["id"] == first["id"]
    await client.post(f"/jobs/{first['id']}/cancel")
    second = await post(client, **{**body, "delay_s": 0})
    assert second.status_code == 202
    assert (await finished(client, second.json()["id"]))["result"] == 3


async def test_retrying_a_job_whose_key_is_taken_is_a_conflict(
    client: httpx.AsyncClient, tmp_path: Path
) -> None:
    failed = (await post(client, task=T + "fail", args=["no"], key="k")).json()
    await finished(client, failed["id"])
    holder = (await post(client, task=T + "gate", args=[str(tmp_path / "never")], key="k")).json()
    response = await client.post(f"/jobs/{failed['id']}/retry")
    assert response.status_code == 409, response.text
    body = response.json()
    assert (body["error"], body["holder"], body["key"]) == ("key_taken", holder["id"], "k")
    assert (await client.get(f"/jobs/{failed['id']}")).json()["state"] == "failed"
    await client.post(f"/jobs/{holder['id']}/cancel")
    retried = await client.post(f"/jobs/{failed['id']}/retry")  # free again
    assert retried.status_code == 200 and retried.json()["state"] == "queued"
    await finished(client, failed["id"])


async def test_keys_in_a_batch(client: httpx.AsyncClient, tmp_path: Path) -> None:
    never = str(tmp_path / "never")
    jobs = [{"task": T + "gate", "args": [never], "key": k} for k in ("a", "b", "a")]
    response = await client.post("/jobs/batch", json={"jobs": jobs})
    assert response.status_code == 202
    ids = [job["id"] for job in response.json()["jobs"]]
    assert ids[0] == ids[2] != ids[1]
    again = await client.post("/jobs/batch", json={"jobs": jobs[:1]})
    assert again.status_code == 200 and again.json()["jobs"][0]["id"] == ids[0]
    for job_id in set(ids):
        await client.post(f"/jobs/{job_id}/cancel")


async def test_an_idempotency_key_returns_the_first_requests_job(
    client: httpx.AsyncClient,
) -> None:
    body: dict[str, Any] = {"task": T + "add", "args": [2, 2]}
    first = await post(client, once="req-1", **body)
    assert first.status_code == 202
    job = await finished(client, first.json()["id"])
    again = await client.post(  # the same request, spaced and ordered differently
        "/jobs",
        content=b'{ "args": [2, 2],  "task": "tests.sample_tasks.add" }',
        headers={"Idempotency-Key": "req-1", "Content-Type": "application/json"},
    )
    assert again.status_code == 200, again.text
    assert again.json()["id"] == job["id"] and again.json()["state"] == "succeeded"
    assert (await post(client, once="req-2", **body)).status_code == 202
    assert (await post(client, **body)).status_code == 202  # no header: always a new job


async def test_an_idempotency_key_with_another_request_is_refused(
    client: httpx.AsyncClient,
) -> None:
    assert (await post(client, once="req", task=T + "add", args=[1, 1])).status_code == 202
    response = await post(client, once="req", task=T + "add", args=[1, 2])
    assert response.status_code == 422
    assert response.json()["error"] == "idempotency_key_reused"
    batch = await client.post(
        "/jobs/batch",
        json={"jobs": [{"task": T + "add", "args": [1, 1]}]},
        headers={"Idempotency-Key": "req"},
    )
    assert batch.status_code == 422  # another endpoint is another request
    assert len((await client.get("/jobs")).json()["jobs"]) == 1


async def test_racing_retries_of_one_request_make_one_job(client: httpx.AsyncClient) -> None:
    responses = await asyncio.gather(
        *(post(client, once="same", task=T + "add", args=[3, 4]) for _ in range(20))
    )
    assert sorted(r.status_code for r in responses) == [200] * 19 + [202]
    assert len({r.json()["id"] for r in responses}) == 1


async def test_an_idempotent_batch(client: httpx.AsyncClient) -> None:
    body: dict[str, Any] = {"jobs": [{"task": T + "add", "args": [i, i]} for i in range(3)]}
    headers = {"Idempotency-Key": "batch-1"}
    first = await client.post("/jobs/batch", json=body, headers=headers)
    again = await client.post("/jobs/batch", json=body, headers=headers)
    assert (first.status_code, again.status_code) == (202, 200)
    assert [j["id"] for j in first.json()["jobs"]] == [j["id"] for j in again.json()["jobs"]]


@pytest.mark.parametrize("key", ["", "x" * 256, "tab\there"])
async def test_a_bad_idempotency_key_is_refused(client: httpx.AsyncClient, key: str) -> None:
    response = await post(client, once=key, task=T + "add", args=[1, 1])
    assert response.status_code == 400, response.text
    assert "Idempotency-Key" in response.json()["detail"]
    assert (await client.get("/jobs")).json()["jobs"] == []


async def test_an_idempotency_key_expires(tmp_path: Path) -> None:
    def job(number: int) -> Job:
        return Job(f"job-{number}", T + "add", [1, 1], {}, JobState.QUEUED, created_at=0.0)

    async with SqliteStore(str(tmp_path / "c.db"), on_commit=lambda events: None) as db:
        claim = IdempotencyClaim("k", "digest", at=1000.0, ttl_s=100.0)
        assert await db.submit([job(1)], claim) == [(job(1), True)]
        replay = IdempotencyClaim("k", "digest", at=1099.0, ttl_s=100.0)
        assert await db.submit([job(2)], replay) == [(job(1), False)]
        expired = IdempotencyClaim("k", "digest", at=1100.5, ttl_s=100.0)
        assert await db.submit([job(3)], expired) == [(job(3), True)]


async def test_the_store_refuses_two_unfinished_jobs_with_one_key(tmp_path: Path) -> None:
    """The unique index holds even for writes that skip the writer's check."""
    async with SqliteStore(str(tmp_path / "c.db"), on_commit=lambda events: None) as db:
        base = Job("a", T + "add", [1, 1], {}, JobState.QUEUED, created_at=0.0, key="k")
        await db.submit([base])
        (stored,) = await db.submit([Job("b", T + "add", [], {}, JobState.QUEUED, 0.0, key="k")])
        assert stored == (base, False)
        with pytest.raises(Exception, match="UNIQUE"):
            await db.transact(
                lambda batch: _raw_insert(batch, Job("c", T, [], {}, JobState.QUEUED, 0.0, key="k"))
            )
        assert [j.id for j in (await db.list_jobs())[0]] == ["a"]


async def _raw_insert(batch: object, job: Job) -> None:
    batch.put(job, new=True)  # type: ignore[attr-defined]
