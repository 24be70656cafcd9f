"""``CONVEYOR_SUBMIT_RATE``: a token bucket per client, a second's worth at most."""

from __future__ import annotations

import dataclasses

import httpx
import pytest

from service.ratelimit import SubmitRate
from service.settings import Settings

from .conftest import TASKS, live_server


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_burst_holds_a_second_worth_and_then_the_rate() -> None:
    clock = Clock()
    rate = SubmitRate(10, clock)
    assert [rate.take("a", 1) for _ in range(10)] == [None] * 10
    wait_s = rate.take("a", 1)
    assert wait_s == pytest.approx(0.1)
    assert rate.take("b", 1) is None  # each client its own bucket
    clock.now += 0.1
    assert rate.take("a", 1) is None and rate.take("a", 1) is not None
    clock.now += 60  # idle for long: still no more than a second's worth
    assert [rate.take("a", 1) for _ in range(11)].count(None) == 10


def test_a_batch_larger_than_a_second_passes_once_and_then_waits_its_cost() -> None:
    clock = Clock()
    rate = SubmitRate(10, clock)
    assert rate.take("a", 25) is None  # the bucket goes 15 below zero
    assert rate.take("a", 1) == pytest.approx(1.6)  # back to one job's worth in 1.6 s
    clock.now += 1.6
    assert rate.take("a", 1) is None


async def test_submits_past_the_rate_are_429_with_retry_after(settings: Settings) -> None:
    async with (
        live_server(dataclasses.replace(settings, submit_rate=5)) as url,
        httpx.AsyncClient(base_url=url, timeout=10) as client,
    ):
        body = {"task": f"{TASKS}.add", "args": [1, 2]}
        statuses = [(await client.post("/jobs", json=body)).status_code for _ in range(8)]
        assert statuses.count(202) in (5, 6) and statuses[-1] == 429  # 6 if a refill fell in
        refused = await client.post("/jobs", json=body)
        assert refused.status_code == 429 and refused.json()["error"] == "rate_limited"
        assert int(refused.headers["Retry-After"]) >= 1
        assert "CONVEYOR_SUBMIT_RATE" in refused.json()["detail"]
        listed = (await client.get("/jobs")).json()["jobs"]
        assert len(listed) == statuses.count(202)  # the refused ones made nothing
