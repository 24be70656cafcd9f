"""The service's way to its store: which backend ``CONVEYOR_DATABASE`` names, and the interface
every part of the service uses (``Store``, ``Transaction``). The SQL lives in ``service/store/``:
``sqlite.py`` (a file path: the embedded default) and ``postgres.py`` (a ``postgresql://`` URL)
each hold every statement of their backend."""

from __future__ import annotations

import time
from collections.abc import Callable

from .jobs import Event
from .settings import DEFAULT_MAX_LOG_LINES
from .store import sqlite
from .store.base import (
    MAX_PAGE_BYTES,
    Change,
    Guard,
    IdempotencyClaim,
    SharedStore,
    Store,
    Transaction,
)
from .store.urls import is_postgres, shown

__all__ = [
    "MAX_PAGE_BYTES",
    "Change",
    "Guard",
    "IdempotencyClaim",
    "SharedStore",
    "Store",
    "Transaction",
    "check_database",
    "open_store",
    "shown",
]


def open_store(
    database: str,
    *,
    on_commit: Callable[[list[Event]], None],
    clock: Callable[[], float] = time.time,
    max_log_lines: int = DEFAULT_MAX_LOG_LINES,
) -> Store:
    """The store ``database`` names, not yet opened (``async with`` opens and closes it)."""
    if is_postgres(database):
        from .store import postgres  # psycopg only for those who use it: memory, start time

        return postgres.PostgresStore(
            database, on_commit=on_commit, clock=clock, max_log_lines=max_log_lines
        )
    return sqlite.SqliteStore(
        database, on_commit=on_commit, clock=clock, max_log_lines=max_log_lines
    )


def check_database(database: str) -> None:
    """Fail early, with a clear StoreUnavailable, if the service could not use ``database``."""
    if is_postgres(database):
        from .store import postgres

        postgres.check_database(database)
    else:
        sqlite.check_database(database)
