"""Every knob of the service, read once from ``CONVEYOR_*`` environment variables."""

from __future__ import annotations

import os
import re
import zoneinfo
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from .errors import SettingsError
from .options import is_queue_name
from .protocol import MAX_MESSAGE_BYTES
from .rates import interval_s

PREFIX = "CONVEYOR_"
DEMO_TASKS = "service.demo"

# What a job may leave: checked here, once, as CONVEYOR_MAX_LOG_LINES and
# CONVEYOR_MAX_RESULT_BYTES are read; the pool sends each job's worker the values set.
DEFAULT_MAX_LOG_LINES = 1000
MAX_LOG_LINES = 100_000  # per job: what a worker may hold, the store keep, a response carry
DEFAULT_MAX_RESULT_BYTES = 1024 * 1024
# A result travels in one message of the pipe: room is left for the rest of that message.
MAX_RESULT_BYTES = MAX_MESSAGE_BYTES - 64 * 1024


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise ValueError
    return value


def _non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise ValueError
    return value


def _int_between(low: int, high: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        value = int(text)
        if not low <= value <= high:
            raise ValueError
        return value

    return parse


def _positive_float(text: str) -> float:
    value = float(text)
    if not value > 0 or value == float("inf"):
        raise ValueError
    return value


def _non_negative_float(text: str) -> float:
    value = float(text)
    if not value >= 0 or value == float("inf"):
        raise ValueError
    return value


def _modules(text: str) -> tuple[str, ...]:
    names = tuple(name.strip() for name in text.split(",") if name.strip())
    if not names or not all(all(p.isidentifier() for p in n.split(".")) for n in names):
        raise ValueError
    return names


def _path(text: str) -> str:
    if not text.strip():
        raise ValueError
    return text


def _token(text: str) -> str:
    if not text.strip() or any(c.isspace() for c in text):
        raise ValueError
    return text


def _queues(text: str) -> tuple[dict[str, int], dict[str, str]]:
    """``"default=4,reports=1@10/m,mail=@100/m"`` → each queue's concurrency limit
    (``{"default": 4, "reports": 1}``) and rate limit (``{"reports": "10/m", "mail": "100/m"}``).
    """
    limits: dict[str, int] = {}
    rates: dict[str, str] = {}
    named: set[str] = set()
    for part in text.split(","):
        if not part.strip():
            continue
        name, equals, value = (p.strip() for p in part.partition("="))
        if not equals or not is_queue_name(name) or name in named:
            raise ValueError
        named.add(name)
        limit, at, rate = (p.strip() for p in value.partition("@"))
        if limit or not at:
            limits[name] = _positive_int(limit)
        if at:
            interval_s(rate)  # ValueError unless a rate
            rates[name] = rate
    return limits, rates


_HOST_NAME = re.compile(r"\*|\.?[a-z0-9]([a-z0-9.-]*[a-z0-9])?|\[?[0-9a-f:]+\]?")


def _hosts(text: str) -> tuple[str, ...]:
    """``"jobs.example.com,.internal"`` → the names (lowercased; ``.internal``: any name under
    it; ``*``: any name at all)."""
    names = tuple(name.strip().lower() for name in text.split(",") if name.strip())
    if not names or not all(_HOST_NAME.fullmatch(name) for name in names):
        raise ValueError
    return names


SCOPES = ("read", "write")


def _scoped_tokens(text: str) -> dict[str, str]:
    """``"read:abc,write:def"`` → ``{"abc": "read", "def": "write"}`` (token → scope)."""
    tokens: dict[str, str] = {}
    for part in text.split(","):
        scope, colon, token = part.strip().partition(":")
        if not colon or scope not in SCOPES or token in tokens:
            raise ValueError
        tokens[_token(token)] = scope
    return tokens


def _origins(text: str) -> tuple[str, ...]:
    """``"https://app.example.com,http://localhost:3000"`` → the origins (scheme://host[:port])."""
    origins = tuple(o.strip().rstrip("/") for o in text.split(",") if o.strip())
    if not origins or not all(re.fullmatch(r"https?://[^/\s]+", o) for o in origins):
        raise ValueError
    return origins


def _log_format(text: str) -> str:
    if text not in ("text", "json"):
        raise ValueError
    return text


def _timezone(text: str) -> str:
    try:
        zoneinfo.ZoneInfo(text)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError, OSError):  # "Europe" is a directory
        raise ValueError from None
    return text


# field name → (parser, what a valid value looks like)
_PARSERS: dict[str, tuple[Callable[[str], Any], str]] = {
    "database": (_path, "a file path or a postgresql:// URL"),
    "tasks": (_modules, "comma-separated module names, e.g. 'myapp.tasks,other'"),
    "concurrency": (_positive_int, "a whole number >= 1"),
    "cancel_grace_s": (_non_negative_float, "a number of seconds >= 0"),
    "token": (_token, "a non-empty string without spaces"),
    "tokens": (_scoped_tokens, "comma-separated scope:token pairs, scope read or write"),
    "cors_origins": (_origins, "comma-separated origins, e.g. 'https://app.example.com'"),
    "log_format": (_log_format, "text or json"),
    "submit_rate": (_positive_float, "a number of jobs per second > 0"),
    "max_interruptions": (_non_negative_int, "a whole number >= 0"),
    "max_body_bytes": (_positive_int, "a whole number of bytes >= 1"),
    "sse_keepalive_s": (_positive_float, "a number of seconds > 0"),
    "queues": (
        _queues,
        "queue=limit pairs, each limit optionally with @rate, e.g. 'default=4,reports=1@10/m'",
    ),
    "retention_s": (_non_negative_float, "a number of seconds >= 0 (0: keep for good)"),
    "shutdown_grace_s": (_non_negative_float, "a number of seconds >= 0"),
    "lease_s": (_positive_float, "a number of seconds > 0"),
    "timezone": (_timezone, "a time zone name such as 'UTC' or 'Europe/Berlin'"),
    "max_log_lines": (
        _int_between(1, MAX_LOG_LINES),
        f"a whole number of lines from 1 to {MAX_LOG_LINES}",
    ),
    "max_result_bytes": (
        _int_between(1, MAX_RESULT_BYTES),
        f"a whole number of bytes from 1 to {MAX_RESULT_BYTES}",
    ),
    "max_jobs_per_worker": (_non_negative_int, "a whole number >= 0 (0: no limit)"),
    "max_worker_memory_mb": (_non_negative_int, "a whole number of MB >= 0 (0: no limit)"),
    "worker_stop_timeout_s": (_non_negative_float, "a number of seconds >= 0"),
    "max_wait_s": (_positive_float, "a number of seconds > 0"),
    "max_streams": (_positive_int, "a whole number >= 1"),
    "stream_stall_s": (_positive_float, "a number of seconds > 0"),
    "allowed_hosts": (
        _hosts,
        "comma-separated host names, e.g. 'jobs.example.com,.internal' or '*'",
    ),
}


@dataclass(frozen=True, slots=True)
class Settings:
    database: str = "conveyor.db"  # a SQLite file, or a postgresql:// URL
    tasks: tuple[str, ...] = (DEMO_TASKS,)  # modules whose @task functions are served
    concurrency: int = os.cpu_count() or 1  # worker processes
    cancel_grace_s: float = 2.0  # SIGTERM → SIGKILL
    token: str | None = None  # when set, data endpoints need "Authorization: Bearer <token>"
    # more tokens, each with its scope: "read" (every GET and the streams) or "write" (all)
    tokens: Mapping[str, str] = field(default_factory=dict)
    max_interruptions: int = 3  # restarts under a running job before it fails as Interrupted
    max_body_bytes: int = 1024 * 1024  # larger request bodies get 413
    sse_keepalive_s: float = 15.0  # comment sent on idle event streams
    # most jobs of each named queue that run at once; other queues are bounded by the pool alone
    queues: Mapping[str, int] = field(default_factory=dict)
    # and how often a job of each named queue may start ("10/m"; with CONVEYOR_QUEUES too)
    queue_rates: Mapping[str, str] = field(default_factory=dict)
    retention_s: float = 7 * 24 * 3600.0  # finished jobs are pruned this long after; 0: never
    # SIGTERM → how long running jobs may go on before they are stopped and requeued; within
    # the 30 s a container platform waits before it kills
    shutdown_grace_s: float = 20.0
    timezone: str = "UTC"  # the zone that cron expressions of schedules are read in
    # on PostgreSQL, services sharing the database: one whose heartbeat is this much older is
    # taken for dead, and its running jobs run elsewhere
    lease_s: float = 15.0
    max_log_lines: int = DEFAULT_MAX_LOG_LINES  # output lines kept per job: the newest
    max_result_bytes: int = DEFAULT_MAX_RESULT_BYTES  # a larger result (as JSON) fails the job
    max_jobs_per_worker: int = 0  # a worker is replaced after this many jobs; 0: never
    max_worker_memory_mb: int = 0  # ... or when it holds more RAM after a job; 0: never
    worker_stop_timeout_s: float = 5.0  # a worker ending normally: its stop hooks, then killed
    # the longest ?wait_s= a request may wait for its job to finish; held below the 60 s after
    # which proxies commonly cut a quiet response
    max_wait_s: float = 55.0
    max_streams: int = 2000  # event streams open at once; more get 503 too_many_streams
    # a stream whose client has taken nothing for this long, its buffers full, is dropped (the
    # client resumes with Last-Event-ID): it holds no place among max_streams for good
    stream_stall_s: float = 30.0
    # the Host names answered; None: on a loopback address only loopback names (a web page
    # cannot reach the service through a name it controls: DNS rebinding), elsewhere any
    allowed_hosts: tuple[str, ...] | None = None
    cors_origins: tuple[str, ...] = ()  # web pages of these origins may call the API; none: no CORS
    log_format: str = "text"  # or "json": one object per line, with job_id and task
    submit_rate: float | None = None  # jobs a second each token (or address) may submit

    @property
    def scoped_tokens(self) -> dict[str, str]:
        """Every token (CONVEYOR_TOKEN's is a write token) → its scope; empty: no auth."""
        return {**self.tokens, **({} if self.token is None else {self.token: "write"})}

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Build settings from ``CONVEYOR_*`` variables; raise SettingsError naming a bad one."""
        environ = os.environ if environ is None else environ
        known = set(_PARSERS)
        values: dict[str, Any] = {}
        for key in sorted(environ):
            if not key.startswith(PREFIX):
                continue
            name = key[len(PREFIX) :].lower()
            if name not in known or key != PREFIX + name.upper():
                raise SettingsError(key, f"unknown setting; known: {_known_keys()}")
            parse, expected = _PARSERS[name]
            try:
                values[name] = parse(environ[key])
                if name == "queues":  # one setting, both of a queue's limits
                    values["queues"], values["queue_rates"] = values["queues"]
            except ValueError:
                raise SettingsError(key, f"expected {expected}, got {environ[key]!r}") from None
        return cls(**values)


def _known_keys() -> str:
    return ", ".join(PREFIX + name.upper() for name in _PARSERS)
