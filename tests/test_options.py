"""A job option's rule is said once (``service.options.RULES``) and holds alike in ``@task``,
in ``POST /jobs`` and ``POST /schedules``, and on the ``conveyor`` command line."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
from click.testing import CliRunner
from quart.typing import TestClientProtocol as AppClient

from service.cli.app import cli
from service.client import Client, RequestError
from service.options import MAX_DURATION_S, MAX_PRIORITY, MAX_RETRIES, RULES, JobOptions
from service.tasks import task

ADD = "tests.sample_tasks.add"

# (option, a value its rule refuses): each bound, and each kind of wrong value
REFUSED: list[tuple[str, Any]] = [
    ("timeout_s", 0),
    ("timeout_s", -1.5),
    ("timeout_s", MAX_DURATION_S * 2),
    ("timeout_s", 1e308),
    ("soft_timeout_s", 1e10),
    ("retry_backoff_s", 1e12),
    ("retry_backoff_max_s", 1e12),
    ("max_retries", -1),
    ("max_retries", MAX_RETRIES + 1),
    ("priority", MAX_PRIORITY + 1),
    ("priority", -MAX_PRIORITY - 1),
    ("memory_limit_mb", 0),
    ("queue", "no spaces"),
    ("queue", "x" * 101),
]
# (option, the furthest value its rule allows)
ALLOWED: list[tuple[str, Any]] = [
    ("timeout_s", MAX_DURATION_S),
    ("retry_backoff_max_s", MAX_DURATION_S),
    ("max_retries", MAX_RETRIES),
    ("priority", -MAX_PRIORITY),
    ("memory_limit_mb", 1),
    ("queue", "reports.eu-1:slow"),
]


def test_every_option_has_a_rule() -> None:
    assert list(RULES) == [f.name for f in dataclasses.fields(JobOptions)]


@pytest.mark.parametrize(("option", "value"), REFUSED)
def test_task_refuses_what_the_rule_refuses(option: str, value: Any) -> None:
    with pytest.raises(ValueError, match=rf"^@task\({option}=\.\.\.\) must be ") as caught:
        task(name="tests.options.refused", **{option: value})
    assert RULES[option].expects() in str(caught.value)


@pytest.mark.parametrize(("option", "value"), REFUSED)
async def test_the_api_refuses_what_the_rule_refuses(
    app_client: AppClient, option: str, value: Any
) -> None:
    for path, body in [
        ("/jobs", {"task": ADD, "args": [1, 2]}),
        ("/schedules", {"task": ADD, "args": [1, 2], "cron": "@hourly"}),
    ]:
        response = await app_client.post(path, json={**body, option: value})
        answer = await response.get_json()
        assert response.status_code == 400, answer
        assert answer["error"] == "invalid_request"
        assert [f["field"] for f in answer["fields"]] == [option]
    listed = await (await app_client.get("/jobs")).get_json()
    assert listed["jobs"] == []


@pytest.mark.parametrize(("option", "value"), REFUSED)
def test_the_command_refuses_what_the_rule_refuses(option: str, value: Any) -> None:
    flag = "--" + option.replace("_", "-")
    # refused while the command line is read: no service is asked (none listens on port 9)
    result = CliRunner().invoke(
        cli, ["--url", "http://127.0.0.1:9", "submit", ADD, flag, str(value)]
    )
    assert result.exit_code == 2, result.output
    assert flag in result.output


@pytest.mark.parametrize(("option", "value"), REFUSED)
def test_the_client_refuses_what_the_rule_refuses_before_sending(option: str, value: Any) -> None:
    # nothing listens on port 9: a request would fail as ConnectionFailed, not RequestError
    with Client("http://127.0.0.1:9") as client, pytest.raises(RequestError) as caught:
        client.with_options(**{option: value}).submit(ADD, 1, 2)
    assert str(caught.value) == f"{option} must be {RULES[option].expects()}, got {value!r}"


@pytest.mark.parametrize(("option", "value"), ALLOWED)
async def test_the_furthest_allowed_values_pass_everywhere(
    app_client: AppClient, option: str, value: Any
) -> None:
    task(name="tests.options.allowed", **{option: value})  # checked; nothing registered
    response = await app_client.post("/jobs", json={"task": ADD, "args": [1, 2], option: value})
    assert response.status_code == 202, await response.get_json()
    assert (await response.get_json())["options"][option] == value


def test_options_that_clash_are_refused_by_task() -> None:
    with pytest.raises(ValueError, match=r"soft_timeout_s \(5\) must be shorter"):
        task(name="tests.options.clash", timeout_s=5, soft_timeout_s=5)
