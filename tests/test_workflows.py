"""Workflows through the API of a real server: chains that pass each result on, groups whose
callback gets their results in order, a failed step that ends the workflow, a cancel that stops
all of it, refusals that name the step, and the workflow's own event stream."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from .conftest import TASKS, SharedService, wait_until

T = TASKS + "."


@pytest.fixture
async def client(shared_service: SharedService) -> AsyncIterator[httpx.AsyncClient]:
    """A client of the module's one service: its tests need no service of their own."""
    async with httpx.AsyncClient(base_url=shared_service.url, timeout=10) as made:
        yield made


def call(task: str, *args: Any, **fields: Any) -> dict[str, Any]:
    return {"task": T + task, "args": list(args), **fields}


async def create(client: httpx.AsyncClient, body: dict[str, Any]) -> Any:
    response = await client.post("/workflows", json=body)
    assert response.status_code == 202, response.text
    assert response.headers["Location"] == f"/workflows/{response.json()['id']}"
    return response.json()


async def ended(client: httpx.AsyncClient, workflow_id: str) -> Any:
    async def done() -> Any:
        body = (await client.get(f"/workflows/{workflow_id}")).json()
        return body if body["state"] != "running" else None

    return await wait_until(done, timeout_s=20, what=f"workflow {workflow_id} to end")


async def test_a_chain_passes_each_result_to_the_next_step(client: httpx.AsyncClient) -> None:
    made = await create(
        client,
        {"chain": [call("add", 1, 2), call("add", 10), call("add", 1, 1, pass_result=False)]},
    )
    assert made["state"] == "running" and len(made["jobs"]) == 3
    first, second, third = (job["id"] for job in made["jobs"])
    assert made["edges"] == [{"from": first, "to": second}, {"from": second, "to": third}]
    assert [job["state"] for job in made["jobs"][1:]] == ["waiting", "waiting"]
    done = await ended(client, made["id"])
    assert done["state"] == "succeeded" and done["result"] == 2  # the last step's own
    assert [job["result"] for job in done["jobs"]] == [3, 13, 2]
    assert done["jobs"][1]["args"] == [3, 10]  # the input went first


async def test_a_group_s_callback_gets_every_result_in_order(client: httpx.AsyncClient) -> None:
    body = {
        "group": [
            call("add", 1, 1),
            call("add", 2, 2),
            {"chain": [call("add", 3, 3), call("add", 1)]},
        ],
        "then": call("echo"),
    }
    done = await ended(client, (await create(client, body))["id"])
    assert done["state"] == "succeeded"
    assert done["result"] == {"args": [[2, 4, 7]], "kwargs": {}}
    callback = done["jobs"][-1]
    assert sorted(e["from"] for e in done["edges"] if e["to"] == callback["id"]) == sorted(
        [done["jobs"][0]["id"], done["jobs"][1]["id"], done["jobs"][3]["id"]]
    )


async def test_a_failed_step_fails_the_workflow_and_cancels_what_follows(
    client: httpx.AsyncClient,
) -> None:
    made = await create(client, {"chain": [call("fail", "no"), call("echo"), call("echo")]})
    done = await ended(client, made["id"])
    assert done["state"] == "failed" and done["result"] is None
    states = [job["state"] for job in done["jobs"]]
    assert states == ["failed", "canceled", "canceled"]
    assert done["jobs"][1]["error"]["type"] == "dependency_failed"


async def test_cancel_stops_every_job_of_it_running_ones_too(client: httpx.AsyncClient) -> None:
    made = await create(
        client, {"group": [call("sleep", 30), call("sleep", 30)], "then": call("echo")}
    )

    async def running() -> bool:
        jobs = (await client.get(f"/workflows/{made['id']}")).json()["jobs"]
        return [job["state"] for job in jobs[:2]] == ["running", "running"]

    await wait_until(running, what="both sleeps to run")
    answer = await client.post(f"/workflows/{made['id']}/cancel")
    assert answer.status_code == 200
    assert answer.json()["state"] == "canceled"
    assert [job["state"] for job in answer.json()["jobs"]] == ["canceled"] * 3
    assert all(not w["job"] for w in (await client.get("/workers")).json()["workers"])


async def test_refusals_name_the_step_and_store_nothing(client: httpx.AsyncClient) -> None:
    marker = uuid.uuid4().hex  # in the first step's arguments: none of its jobs is stored
    refused = await client.post(
        "/workflows", json={"chain": [call("echo", marker), {"group": [call("nope")]}]}
    )
    assert refused.status_code == 422 and refused.json()["error"] == "unknown_task"
    assert refused.json()["step"] == "chain[1].group[0]"
    wrong = await client.post("/workflows", json={"chain": [call("add", 1, 2, 3)]})
    assert wrong.status_code == 422 and wrong.json()["error"] == "invalid_arguments"
    malformed: list[Any] = [
        {"chain": []}, {"group": [call("add", 1, 1)], "chain": []}, {"then": {}}, [],
    ]  # fmt: skip
    for body in malformed:
        answer = await client.post("/workflows", json=body)
        assert answer.status_code == 400 and answer.json()["error"] == "invalid_request", body
    assert (await client.get("/jobs", params={"q": marker})).json()["jobs"] == []
    missing = await client.get("/workflows/nope")
    assert missing.status_code == 404 and missing.json()["error"] == "not_found"


async def test_the_workflow_s_stream_has_its_jobs_events_and_ends_with_it(
    client: httpx.AsyncClient,
) -> None:
    made = await create(client, {"chain": [call("add", 1, 2), call("add", 3)]})
    ids = {job["id"] for job in made["jobs"]}
    seen: list[tuple[str, str]] = []
    last_id = ""
    async with client.stream("GET", f"/workflows/{made['id']}/events") as response:
        assert response.status_code == 200
        async for line in response.aiter_lines():  # ends when the workflow has
            if line.startswith("id:"):
                last_id = line[3:].strip()
            if line.startswith("data:") and line[5:].strip():  # the first has none
                data = json.loads(line[5:])
                if "state" in data:
                    seen.append((data["job_id"], data["state"]))
    assert {job_id for job_id, _ in seen} == ids
    assert seen[-1][1] == "succeeded"
    after = await client.get(f"/workflows/{made['id']}/events?last_event_id={last_id}")
    assert after.status_code == 204  # over, and nothing after what was seen


async def test_a_failed_step_run_again_carries_the_workflow_on(
    client: httpx.AsyncClient, tmp_path: Path
) -> None:
    flaky = str(tmp_path / "flaky")
    # fails once, then succeeds: first as the workflow's failure, then retried on request
    made = await create(
        client,
        {"chain": [call("flaky", flaky, 1), call("add", 10), call("add", 100)]},
    )
    failed = await ended(client, made["id"])
    assert [job["state"] for job in failed["jobs"]] == ["failed", "canceled", "canceled"]
    first = failed["jobs"][0]["id"]
    assert (await client.post(f"/jobs/{first}/retry")).status_code == 200
    waiting = (await client.get(f"/workflows/{made['id']}")).json()
    assert [job["state"] for job in waiting["jobs"][1:]] in (
        ["waiting", "waiting"], ["queued", "waiting"], ["running", "waiting"],
        ["succeeded", "waiting"], ["succeeded", "queued"], ["succeeded", "running"],
        ["succeeded", "succeeded"],
    )  # fmt: skip
    done = await ended(client, made["id"])
    assert done["state"] == "succeeded"
    assert done["result"] == 2 + 10 + 100  # flaky returns its attempt count: 2
    # a step with retries of its own carries it on by itself
    policy = str(tmp_path / "policy")
    made = await create(client, {"chain": [call("flaky_with_policy", policy, 1), call("add", 1)]})
    done = await ended(client, made["id"])
    assert done["state"] == "succeeded" and done["result"] == 3
