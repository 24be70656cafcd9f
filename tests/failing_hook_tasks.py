"""A worker start hook that fails while $HOOK_TEST_DIR/broken exists (a database that is down);
each attempt appends its time to $HOOK_TEST_DIR/attempts."""

from __future__ import annotations

import os
import time
from pathlib import Path

from service import on_worker_start, task


@on_worker_start
def connect() -> None:
    directory = Path(os.environ["HOOK_TEST_DIR"])
    with open(directory / "attempts", "a") as f:
        f.write(f"{time.time()}\n")
    if (directory / "broken").exists():
        raise ConnectionRefusedError("the database is down")


@task
def ping() -> str:
    return "pong"
