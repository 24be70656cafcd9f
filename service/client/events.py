"""A stream's events as typed records, decoded from Server-Sent Events in one place.

``decode`` turns each SSE message into a ``StateEvent``, ``ProgressEvent``, ``LogEvent``,
``PrunedEvent`` or (a kind this client does not know) ``OtherEvent``; the position message a
stream starts with, keep-alives and ``retry:`` blocks decode to None.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

import orjson

from ..jobs import TERMINAL, JobError, JobState, Progress
from ..logs import LogEntry
from ..wire import epoch_s, progress_from_json


@dataclass(frozen=True, slots=True)
class StateEvent:
    """A job moved from ``previous`` (None: it was just made) to ``state``."""

    kind: ClassVar[str] = "state"

    id: int
    job_id: str
    task: str
    at: float  # epoch seconds
    state: JobState
    previous: JobState | None
    queue: str
    attempt: int
    error: JobError | None = None  # type and message, when it failed (no traceback)
    data: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)  # as sent

    @property
    def is_terminal(self) -> bool:
        return self.state in TERMINAL


@dataclass(frozen=True, slots=True)
class ProgressEvent:
    """A running job reported how far it is."""

    kind: ClassVar[str] = "progress"

    id: int
    job_id: str
    task: str
    at: float
    progress: Progress
    data: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)


@dataclass(frozen=True, slots=True)
class LogEvent:
    """New lines of a job's log; ``dropped`` counts the older lines the store let go."""

    kind: ClassVar[str] = "log"

    id: int
    job_id: str
    task: str
    at: float
    entries: tuple[LogEntry, ...]
    dropped: int = 0
    data: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)


@dataclass(frozen=True, slots=True)
class PrunedEvent:
    """The retention sweep removed finished jobs: how many, by queue and state."""

    kind: ClassVar[str] = "pruned"

    id: int
    at: float
    removed: tuple[dict[str, Any], ...]
    data: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)


@dataclass(frozen=True, slots=True)
class OtherEvent:
    """An event of a kind this client does not know, as it came."""

    id: int
    kind: str
    data: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)


Event = StateEvent | ProgressEvent | LogEvent | PrunedEvent | OtherEvent


def decode(kind: str, data: str, event_id: int) -> Event | None:
    """The event an SSE message carries, or None for one that carries none."""
    if not data:
        return None
    body = orjson.loads(data)
    at = epoch_s(body.get("at")) or 0.0
    match kind:
        case "state":
            return StateEvent(
                event_id, body["job_id"], body["task"], at, JobState(body["state"]),
                None if body.get("from") is None else JobState(body["from"]),
                body.get("queue", "default"), body.get("attempt", 0),
                None if body.get("error") is None else JobError(**body["error"]), body,
            )  # fmt: skip
        case "progress":
            progress = progress_from_json(body["progress"]) or Progress(0)
            return ProgressEvent(event_id, body["job_id"], body["task"], at, progress, body)
        case "log":
            entries = tuple(log_entry(e) for e in body.get("entries", ()))
            return LogEvent(
                event_id, body["job_id"], body["task"], at, entries, body.get("dropped", 0), body
            )
        case "pruned":
            return PrunedEvent(event_id, at, tuple(body.get("removed", ())), body)
        case _:
            return OtherEvent(event_id, kind, body)


def log_entry(body: dict[str, Any]) -> LogEntry:
    """A log entry as ``GET /jobs/<id>/logs`` and ``log`` events give it."""
    return LogEntry(
        at=epoch_s(body["at"]) or 0.0,
        stream=body["stream"],
        text=body["text"],
        level=body.get("level"),
        logger=body.get("logger"),
        attempt=body.get("attempt"),
    )
