"""The HTTP API inside ``app.test_app()``: the lifespan runs, with real workers and SQLite."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from typing import Any, cast

import orjson
import pytest
from quart.typing import TestClientProtocol as Client

from service.settings import Settings

from .conftest import running_app, wait_until

T = "tests.sample_tasks."


async def submit(client: Client, task: str, *args: Any, **kwargs: Any) -> Any:
    response = await client.post("/jobs", json={"task": task, "args": list(args), "kwargs": kwargs})
    assert response.status_code == 202, await response.get_data(as_text=True)
    return await response.get_json()


async def job(client: Client, job_id: str) -> Any:
    response = await client.get(f"/jobs/{job_id}")
    assert response.status_code == 200
    return await response.get_json()


async def wait_state(client: Client, job_id: str, *states: str) -> Any:
    async def reached() -> Any:
        current = await job(client, job_id)
        return current if current["state"] in states else None

    return await wait_until(reached, what=f"job {job_id} to be {'/'.join(states)}")


def assert_error(body: Any, error: str) -> None:
    assert body["error"] == error
    assert isinstance(body["detail"], str) and body["detail"]


async def job_count(client: Client) -> int:
    response = await client.get("/jobs?limit=500")
    return len((await response.get_json())["jobs"])


async def test_submit_runs_the_job_and_reports_the_result(app_client: Client) -> None:
    response = await app_client.post(
        "/jobs", json={"task": T + "add", "args": [2], "kwargs": {"y": 3}}
    )
    assert response.status_code == 202
    body = await response.get_json()
    assert response.headers["Location"] == f"/jobs/{body['id']}"
    assert body["state"] == "queued" and body["attempt"] == 0
    assert body["created_at"].endswith("Z")
    done = await wait_state(app_client, body["id"], "succeeded")
    assert done["result"] == 5 and done["error"] is None
    assert done["attempt"] == 1 and done["started_at"] and done["finished_at"]
    assert (done["task"], done["args"], done["kwargs"]) == (T + "add", [2], {"y": 3})


async def test_named_and_async_tasks(app_client: Client) -> None:
    named = await submit(app_client, "tests.renamed", "abc")
    asynchronous = await submit(app_client, T + "async_add", 20, 22)
    assert (await wait_state(app_client, named["id"], "succeeded"))["result"] == "ABC"
    assert (await wait_state(app_client, asynchronous["id"], "succeeded"))["result"] == 42


async def test_a_failing_task_records_its_error(app_client: Client) -> None:
    failed = await wait_state(
        app_client, (await submit(app_client, T + "fail", "nope"))["id"], "failed"
    )
    assert failed["error"]["type"] == "ValueError"
    assert failed["error"]["message"] == "nope"
    assert "Traceback" in failed["error"]["traceback"]
    assert failed["result"] is None


async def test_a_result_that_is_not_json_fails_the_job(app_client: Client) -> None:
    failed = await wait_state(
        app_client, (await submit(app_client, T + "unserializable"))["id"], "failed"
    )
    assert failed["error"]["type"] == "UnserializableResult"


async def test_a_crashing_worker_fails_the_job_with_the_exit_reason(
    app_client: Client,
) -> None:
    crashed = await wait_state(
        app_client, (await submit(app_client, T + "segfault"))["id"], "failed"
    )
    assert crashed["error"]["type"] == "WorkerCrashed"
    assert "SIGSEGV" in crashed["error"]["message"]
    ok = await wait_state(
        app_client, (await submit(app_client, T + "add", 1, 2))["id"], "succeeded"
    )
    assert ok["result"] == 3


ADD = T + "add"
JSON = "application/json"


def nested(depth: int) -> list[Any]:
    value: list[Any] = []
    for _ in range(depth - 1):
        value = [value]
    return value


def dumps(body: object) -> str:
    return orjson.dumps(body).decode()


@pytest.mark.parametrize(
    ("body", "content_type", "status", "error"),
    [
        ("{not json", JSON, 400, "invalid_request"),
        (dumps({"task": 5}), JSON, 400, "invalid_request"),
        (dumps({"task": ADD, "args": {"x": 1}}), JSON, 400, "invalid_request"),
        (dumps({"task": ADD, "kwargs": [1]}), JSON, 400, "invalid_request"),
        (dumps({"task": ADD, "colour": "x"}), JSON, 400, "invalid_request"),
        (dumps({"args": [1, 2]}), JSON, 400, "invalid_request"),
        (dumps([1, 2]), JSON, 400, "invalid_request"),
        (dumps({"task": ""}), JSON, 400, "invalid_request"),
        (dumps({"task": ADD, "args": [nested(65), 1]}), JSON, 400, "invalid_request"),
        (dumps({"task": ADD, "kwargs": {"x": nested(200), "y": 1}}), JSON, 400, "invalid_request"),
        (dumps({"task": ADD, "args": [1, 2]}), "text/plain", 415, "unsupported_media_type"),
        (dumps({"task": "no.such.task"}), JSON, 422, "unknown_task"),
        (dumps({"task": ADD, "args": [1]}), JSON, 422, "invalid_arguments"),
        (dumps({"task": ADD, "args": [1, 2, 3]}), JSON, 422, "invalid_arguments"),
        (dumps({"task": ADD, "kwargs": {"x": 1, "z": 2}}), JSON, 422, "invalid_arguments"),
    ],
)
async def test_bad_submissions_get_a_clear_error_and_create_nothing(
    app_client: Client, body: str, content_type: str, status: int, error: str
) -> None:
    response = await app_client.post("/jobs", data=body, headers={"Content-Type": content_type})
    assert response.status_code == status
    assert_error(await response.get_json(), error)
    assert await job_count(app_client) == 0


async def test_unknown_task_error_names_the_task(app_client: Client) -> None:
    response = await app_client.post("/jobs", json={"task": "billing.charge"})
    body = await response.get_json()
    assert response.status_code == 422 and "billing.charge" in body["detail"]
    assert body["task"] == "billing.charge"


async def test_arguments_error_says_what_is_wrong(app_client: Client) -> None:
    response = await app_client.post("/jobs", json={"task": T + "add", "args": [1]})
    assert "'y'" in (await response.get_json())["detail"]
    response = await app_client.post("/jobs", json={"task": ADD, "kwargs": {"x": 1, "z": 2}})
    detail = (await response.get_json())["detail"]
    assert "missing a required argument: 'y'" in detail and "'z'" in detail


async def test_arguments_error_names_each_parameter(app_client: Client) -> None:
    response = await app_client.post("/jobs", json={"task": ADD, "kwargs": {"x": 1, "z": 2}})
    body = await response.get_json()
    assert body["fields"] == [
        {"field": "y", "message": "required"},
        {"field": "z", "message": "not a parameter"},
    ]


@pytest.mark.parametrize(
    ("args", "kwargs", "field"),
    [
        (["3", ["a"]], {}, "count"),  # text for an int: nothing is converted
        ([1.0, ["a"]], {}, "count"),
        ([True, ["a"]], {}, "count"),
        ([1, {"a": 1}], {}, "tags"),
        ([1, ["a", 2]], {}, "tags"),  # an item of the list
        ([1, ["a"], 3, "four"], {}, "more"),  # each of *more
        ([1, ["a"]], {"ratio": "half"}, "ratio"),
    ],
)
async def test_arguments_must_have_their_annotated_types(
    app_client: Client, args: list[Any], kwargs: dict[str, Any], field: str
) -> None:
    body = {"task": T + "typed", "args": args, "kwargs": kwargs}
    response = await app_client.post("/jobs", json=body)
    assert response.status_code == 422
    error = await response.get_json()
    assert_error(error, "invalid_arguments")
    assert [f["field"] for f in error["fields"]] == [field]
    assert field in error["detail"] and "got " in error["detail"]
    assert await job_count(app_client) == 0


async def test_values_of_the_annotated_types_pass(app_client: Client) -> None:
    # an int where a float is asked for, a class of the task's own left unchecked, None
    body = {"task": T + "typed", "args": [1, ["a"], 2, 3], "kwargs": {"ratio": 1, "thing": "x"}}
    assert (await app_client.post("/jobs", json=body)).status_code == 202
    body = {"task": T + "echo", "args": [{"any": ["thing"]}]}  # unannotated: anything goes
    assert (await app_client.post("/jobs", json=body)).status_code == 202


async def test_oversized_body_is_413(settings: Settings) -> None:
    small = dataclasses.replace(settings, max_body_bytes=1000)
    async with running_app(small) as (_, client):
        response = await client.post("/jobs", json={"task": T + "echo", "args": ["x" * 2000]})
        assert response.status_code == 413
        body = await response.get_json()
        assert_error(body, "request_entity_too_large")
        assert "1000 bytes" in body["detail"]
        assert await job_count(client) == 0


@pytest.mark.parametrize(
    ("method", "path"),
    [("GET", "/jobs/nope"), ("POST", "/jobs/nope/cancel"), ("GET", "/jobs/nope/events")],
)
async def test_unknown_job_is_404(app_client: Client, method: str, path: str) -> None:
    response = await cast(Any, app_client).open(path, method=method)
    assert response.status_code == 404
    assert_error(await response.get_json(), "not_found")


@pytest.mark.parametrize(
    "query",
    [
        "state=bogus",
        "limit=0",
        "limit=1001",
        "limit=x",
        "cursor=abc",
        "cursor=%C2%B2",
        "cursor=" + "9" * 30,
        "colour=red",
    ],
)
async def test_bad_list_queries_are_400(app_client: Client, query: str) -> None:
    response = await app_client.get(f"/jobs?{query}")
    assert response.status_code == 400
    assert_error(await response.get_json(), "invalid_request")


async def test_cancel_a_queued_job_means_it_never_starts(app_client: Client) -> None:
    blockers = [await submit(app_client, T + "sleep", 30) for _ in range(2)]
    for blocker in blockers:
        await wait_state(app_client, blocker["id"], "running")
    queued = await submit(app_client, T + "add", 1, 1)
    response = await app_client.post(f"/jobs/{queued['id']}/cancel")
    assert response.status_code == 200
    canceled = await response.get_json()
    assert canceled["state"] == "canceled" and canceled["started_at"] is None
    for blocker in blockers:  # free the workers: the canceled job must still not run
        assert (await app_client.post(f"/jobs/{blocker['id']}/cancel")).status_code == 200
    later = await wait_state(
        app_client, (await submit(app_client, T + "add", 2, 2))["id"], "succeeded"
    )
    assert later["result"] == 4
    assert (await job(app_client, queued["id"]))["attempt"] == 0


async def test_cancel_a_running_job(app_client: Client) -> None:
    running = await submit(app_client, T + "sleep", 30)
    await wait_state(app_client, running["id"], "running")
    response = await app_client.post(f"/jobs/{running['id']}/cancel")
    assert response.status_code == 200
    body = await response.get_json()
    assert body["state"] == "canceled" and body["finished_at"]


async def test_cancel_a_finished_job_is_409_with_its_state(app_client: Client) -> None:
    done = await submit(app_client, T + "add", 1, 2)
    await wait_state(app_client, done["id"], "succeeded")
    response = await app_client.post(f"/jobs/{done['id']}/cancel")
    assert response.status_code == 409
    body = await response.get_json()
    assert_error(body, "conflict")
    assert body["state"] == "succeeded"
    assert (await job(app_client, done["id"]))["state"] == "succeeded"


async def test_list_is_newest_first_with_stable_cursor_pages(app_client: Client) -> None:
    ids = [(await submit(app_client, T + "add", i, 0))["id"] for i in range(7)]
    seen: list[str] = []
    cursor: str | None = None
    pages = 0
    while True:
        url = "/jobs?limit=3" + (f"&cursor={cursor}" if cursor else "")
        page = await (await app_client.get(url)).get_json()
        seen += [j["id"] for j in page["jobs"]]
        pages += 1
        if pages == 1:  # a job submitted between pages does not shift the later ones
            await submit(app_client, T + "add", 100, 0)
        cursor = page["next"]
        if cursor is None:
            break
    assert seen == ids[::-1]
    assert pages == 3


async def test_list_filters_by_state_and_task(app_client: Client) -> None:
    ok = await submit(app_client, T + "add", 1, 1)
    bad = await submit(app_client, T + "fail", "x")
    await wait_state(app_client, ok["id"], "succeeded")
    await wait_state(app_client, bad["id"], "failed")
    failed = await (await app_client.get("/jobs?state=failed")).get_json()
    assert [j["id"] for j in failed["jobs"]] == [bad["id"]]
    both = await (await app_client.get("/jobs?state=failed,succeeded")).get_json()
    assert len(both["jobs"]) == 2
    by_task = await (await app_client.get(f"/jobs?task={T}add")).get_json()
    assert [j["id"] for j in by_task["jobs"]] == [ok["id"]]


async def test_tasks_lists_the_registered_tasks_with_parameters(
    app_client: Client,
) -> None:
    tasks = {t["name"]: t for t in (await (await app_client.get("/tasks")).get_json())["tasks"]}
    assert {T + "add", "tests.renamed", T + "async_add"} <= tasks.keys()
    params = tasks[T + "add"]["params"]
    assert [(p["name"], p["type"], p["required"]) for p in params] == [
        ("x", "int", True),
        ("y", "int", True),
    ]
    assert tasks["tests.renamed"]["params"][0]["default"] == "hello"
    assert tasks[T + "async_add"]["is_async"] is True


async def test_health_reports_database_and_workers(app_client: Client) -> None:
    async def all_alive() -> Any:
        body = await (await app_client.get("/health")).get_json()
        return body if body["workers"]["alive"] == 2 else None

    body = await wait_until(all_alive, what="both workers")
    assert body["status"] == "ok"
    assert body["database"]["ok"] is True
    assert body["workers"]["size"] == 2 and body["workers"]["alive"] == 2


@pytest.fixture
async def token_client(settings: Settings) -> AsyncIterator[Client]:
    async with running_app(dataclasses.replace(settings, token="s3cret")) as (_, client):
        yield client


@pytest.mark.parametrize("header", [None, "Bearer wrong", "s3cret", "Basic s3cret"])
@pytest.mark.parametrize(
    ("method", "path"),
    [("GET", "/jobs"), ("POST", "/jobs"), ("GET", "/jobs/x"), ("POST", "/jobs/x/cancel"),
     ("GET", "/events"), ("GET", "/jobs/x/events"), ("GET", "/tasks")],
)  # fmt: skip
async def test_token_is_required_when_set(
    token_client: Client, header: str | None, method: str, path: str
) -> None:
    headers = {} if header is None else {"Authorization": header}
    response = await cast(Any, token_client).open(path, method=method, headers=headers)
    assert response.status_code == 401
    assert_error(await response.get_json(), "unauthorized")
    assert response.headers["WWW-Authenticate"].startswith("Bearer")


@pytest.mark.parametrize("scheme", ["Bearer", "bearer", "BEARER"])
async def test_the_token_scheme_is_case_insensitive(token_client: Client, scheme: str) -> None:
    response = await token_client.get("/jobs", headers={"Authorization": f"{scheme} s3cret"})
    assert response.status_code == 200


async def test_public_health_shows_no_job_ids(token_client: Client) -> None:
    public = await (await token_client.get("/health")).get_json()
    assert "workers" not in public["workers"] and "alive" in public["workers"]
    auth = {"Authorization": "Bearer s3cret"}
    private = await (await token_client.get("/health", headers=auth)).get_json()
    assert "workers" in private["workers"]


async def test_the_right_token_opens_the_api_and_health_stays_public(
    token_client: Client,
) -> None:
    auth = {"Authorization": "Bearer s3cret"}
    response = await token_client.post(
        "/jobs", json={"task": T + "add", "args": [1, 2]}, headers=auth
    )
    assert response.status_code == 202
    assert (await token_client.get("/jobs", headers=auth)).status_code == 200
    assert (await token_client.get("/health")).status_code in (200, 503)


async def test_health_is_503_when_workers_cannot_start(settings: Settings) -> None:
    broken = dataclasses.replace(settings, tasks=("tests.broken_in_worker",), concurrency=1)
    async with running_app(broken) as (_, client):

        async def unhealthy() -> Any:
            response = await client.get("/health")
            return await response.get_json() if response.status_code == 503 else None

        body = await wait_until(unhealthy, what="health to report the broken workers")
        assert "libcuda" in body["workers"]["last_start_error"]
        assert body["status"] == "degraded"


async def test_batch_submit_creates_all_jobs_in_order(app_client: Client) -> None:
    specs = [{"task": ADD, "args": [i, i]} for i in range(5)] + [{"task": "tests.renamed"}]
    response = await app_client.post("/jobs/batch", json={"jobs": specs})
    assert response.status_code == 202
    jobs = (await response.get_json())["jobs"]
    assert [j["state"] for j in jobs] == ["queued"] * 6
    results = [(await wait_state(app_client, j["id"], "succeeded"))["result"] for j in jobs]
    assert results == [0, 2, 4, 6, 8, "HELLO"]
    listed = await (await app_client.get("/jobs")).get_json()
    assert [j["id"] for j in listed["jobs"]] == [j["id"] for j in reversed(jobs)]


@pytest.mark.parametrize(
    ("specs", "status", "error", "index"),
    [
        ([{"task": ADD, "args": [1, 2]}, {"task": "nope"}], 422, "unknown_task", 1),
        ([{"task": ADD, "args": [1]}, {"task": ADD, "args": [1, 2]}], 422, "invalid_arguments", 0),
        ([{"task": ADD, "args": [1, 2]}, {"task": ADD, "args": "x"}], 400, "invalid_request", None),
        ([], 400, "invalid_request", None),
        ([{"task": ADD, "args": [1, 2]}] * 1001, 400, "invalid_request", None),
    ],
)
async def test_a_bad_batch_creates_nothing(
    app_client: Client, specs: list[Any], status: int, error: str, index: int | None
) -> None:
    response = await app_client.post("/jobs/batch", json={"jobs": specs})
    assert response.status_code == status
    body = await response.get_json()
    assert_error(body, error)
    if index is not None:
        assert body["index"] == index and f"jobs[{index}]" in body["detail"]
    assert await job_count(app_client) == 0


@pytest.mark.parametrize("last_id", ["9" * 30, "²", "-1", "soon"])
@pytest.mark.parametrize("path", ["/events", "/jobs/x/events"])
async def test_a_bad_last_event_id_is_400(app_client: Client, path: str, last_id: str) -> None:
    response = await app_client.get(path, headers={"Last-Event-ID": last_id})
    assert response.status_code == 400
    assert_error(await response.get_json(), "invalid_request")


async def test_arguments_nested_as_deep_as_allowed_still_run(app_client: Client) -> None:
    job_id = (await submit(app_client, T + "echo", nested(63)))["id"]
    done = await wait_state(app_client, job_id, "succeeded")
    assert done["result"]["args"] == [nested(63)]
