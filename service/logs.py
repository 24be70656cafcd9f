"""A job's log: its output lines and ``logging`` records as the service keeps and shows them."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .jobs import isoformat

STREAMS = frozenset({"stdout", "stderr", "log"})


@dataclass(frozen=True, slots=True)
class LogEntry:
    """One line a job wrote to stdout or stderr, or one ``logging`` record (stream "log")."""

    at: float  # epoch seconds: when the worker read the line or the record was made
    stream: str  # "stdout", "stderr" or "log"
    text: str
    level: str | None = None  # log records only: "INFO", "WARNING", ...
    logger: str | None = None  # log records only: the logger's name
    attempt: int | None = None  # the run of the job that wrote it; set by the store

    def as_json(self) -> dict[str, Any]:
        entry: dict[str, Any] = {"at": isoformat(self.at), "stream": self.stream, "text": self.text}
        if self.level is not None:
            entry["level"] = self.level
            entry["logger"] = self.logger
        if self.attempt is not None:
            entry["attempt"] = self.attempt
        return entry


def entries_from_worker(raw: Any) -> list[LogEntry]:
    """The entries of a worker's ``log`` message; anything malformed is left out."""
    entries = []
    for item in raw if isinstance(raw, list) else ():
        try:
            at, stream, text = float(item["at"]), item["stream"], item["text"]
        except (KeyError, TypeError, ValueError):
            continue
        if stream in STREAMS and isinstance(text, str):
            level, logger = item.get("level"), item.get("logger")
            entries.append(
                LogEntry(
                    at, stream, text,
                    level if isinstance(level, str) else None,
                    logger if isinstance(logger, str) else None,
                )
            )  # fmt: skip
    return entries
