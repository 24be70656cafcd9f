"""The tasks ``python -m bench --peers`` gives the other job queues, and how each is set up.

The peers' own workers import this module as their users import a tasks module of theirs:

    python -m huey.bin.huey_consumer bench.peer_tasks.huey -w 2 -k thread  # BENCH_HUEY_STORE set
    python -m saq bench.peer_tasks.saq_settings --workers 2                # BENCH_SAQ_REDIS set

and the benchmark, their client, builds the same queues from the same functions.
"""

from __future__ import annotations

import asyncio
import os
from typing import Any

from huey import RedisHuey, SqliteHuey
from saq import Queue

HUEY_STORE_ENV = "BENCH_HUEY_STORE"  # a SQLite file's path, or a redis:// URL
SAQ_REDIS_ENV = "BENCH_SAQ_REDIS"  # a redis:// URL
HUEY_NAME = "bench"
SAQ_CONCURRENCY = 1  # jobs at once in each of SAQ's worker processes: 2 processes, 2 jobs


def noop() -> int:
    """Does nothing; returns a value, since Huey stores no ``None`` result to be seen."""
    return 0


def make_huey(store: str) -> tuple[Any, Any]:
    """Huey on Redis for a ``redis://`` URL, else on the SQLite file ``store``, with its
    defaults; and the no-op task registered on it (calling it enqueues a run)."""
    if store.startswith("redis://"):
        huey = RedisHuey(HUEY_NAME, url=store)
    else:
        huey = SqliteHuey(HUEY_NAME, filename=store)
    return huey, huey.task(name="noop")(noop)


async def saq_noop(ctx: dict[str, Any]) -> int:
    return 0


async def saq_sleep(ctx: dict[str, Any], *, seconds: float) -> None:
    # a coroutine: SAQ aborts a job by cancelling its task, which a thread could not be
    await asyncio.sleep(seconds)


def saq_queue(url: str) -> Any:
    return Queue.from_url(url)


def saq_settings() -> dict[str, Any]:
    """SAQ's worker settings (it calls a callable it is given), for the queue of the URL in
    ``BENCH_SAQ_REDIS``."""
    return {
        "queue": saq_queue(os.environ[SAQ_REDIS_ENV]),
        "functions": [saq_noop, saq_sleep],
        "concurrency": SAQ_CONCURRENCY,
    }


# the consumer's instance, as huey_consumer imports it: only where the store is given
huey = make_huey(os.environ[HUEY_STORE_ENV])[0] if HUEY_STORE_ENV in os.environ else None
