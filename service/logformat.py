"""How the service writes its log: lines for people, or (``CONVEYOR_LOG_FORMAT=json``) one JSON
object per line for a log collector, with the job and task a record is about when it names them
(``extra={"job_id": ..., "task": ...}``)."""

from __future__ import annotations

import logging
from datetime import UTC, datetime

import orjson

TEXT = "%(asctime)s [%(levelname)s] %(name)s: %(message)s"
FIELDS = ("job_id", "task", "schedule_id", "worker_pid")  # what a record may say it is about


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line = {
            "at": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for name in FIELDS:
            value = record.__dict__.get(name)
            if value is not None:
                line[name] = value
        if record.exc_info:
            line["traceback"] = self.formatException(record.exc_info)
        return orjson.dumps(line).decode()


def configure(log_format: str) -> None:
    """Give the ``conveyor`` loggers a handler, unless the application set up logging itself."""
    logger = logging.getLogger("conveyor")
    if logger.handlers or logging.getLogger().handlers:
        return
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter() if log_format == "json" else logging.Formatter(TEXT))
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
