"""What the routes use, built once the service starts and kept on the app."""

from __future__ import annotations

from dataclasses import dataclass
from typing import cast

from quart import current_app, request

from ..errors import RateLimited
from ..metrics import Metrics
from ..ratelimit import SubmitRate
from ..reads import Reads
from ..scheduler import Scheduler
from ..schedules import Schedules
from ..settings import Settings
from ..streams import StreamLimit
from ..streamtokens import StreamTokens

EXTENSION = "conveyor"


@dataclass(frozen=True, slots=True)
class Runtime:
    settings: Settings
    scheduler: Scheduler  # every change of a job goes through it
    schedules: Schedules
    reads: Reads  # everything routes show
    streams: StreamLimit  # the event streams open
    metrics: Metrics
    submit_rate: SubmitRate | None = None  # CONVEYOR_SUBMIT_RATE; None: no limit


def runtime() -> Runtime:
    return cast(Runtime, current_app.extensions[EXTENSION])


def stream_tokens() -> StreamTokens:
    """Made with the app, before it serves: the auth check needs them for every request."""
    return cast(StreamTokens, current_app.extensions[EXTENSION + ".stream_tokens"])


def within_submit_rate(jobs: int) -> None:
    """RateLimited if the client (its token, or its address) submits faster than allowed."""
    rate = runtime().submit_rate
    if rate is None:
        return
    client = request.headers.get("Authorization") or f"address {request.remote_addr}"
    wait_s = rate.take(client, jobs)
    if wait_s is not None:
        raise RateLimited(rate.jobs_per_s, wait_s)
