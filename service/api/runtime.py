"""What the routes use, built once the service starts and kept on the app."""

from __future__ import annotations

from dataclasses import dataclass
from typing import cast

from quart import current_app

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
