"""What ``CONVEYOR_DATABASE`` names: a SQLite file, or a PostgreSQL database by its URL."""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit

SCHEMES = ("postgresql", "postgres")


def is_postgres(database: str) -> bool:
    """Whether ``database`` is a PostgreSQL URL (else it is a SQLite file's path)."""
    return urlsplit(database).scheme in SCHEMES


def shown(database: str) -> str:
    """``database`` without its password: what logs and errors may say."""
    if not is_postgres(database):
        return database
    parts = urlsplit(database)
    if parts.password is None:
        return database
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))
