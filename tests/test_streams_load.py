"""Many streams at once, some never reading: everyone else gets every event, in order. The
harness is ``bench/streams_load.py`` (run it there with 1,000 streams); this is its short run."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from bench.streams_load import run

from .conftest import ServiceProcess


@pytest.mark.timeout(180)
async def test_streams_that_never_read_hold_up_no_one(
    service_process: Callable[..., ServiceProcess],
) -> None:
    service = service_process(CONVEYOR_TASKS="service.demo", CONVEYOR_MAX_STREAMS="500")
    service.start()
    await service.wait_ready()
    report = await run(service.url, clients=150, stalled=15, jobs=600, timeout_s=150)
    print(report.summary())
    assert report.problems == []
    assert report.readers_complete == 135 and report.out_of_order == 0
    # each reader got the three moves of every job (queued, running, succeeded) at least
    assert min(report.events_per_reader) >= 3 * 600
    assert report.health_ms  # the service answered /health all along
