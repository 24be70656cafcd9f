"""Tasks whose workers prepare things once, in start hooks; each worker records its start and
stop as lines "start <pid>" / "stop <pid>" in $HOOK_TEST_DIR/hooks.log."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path
from typing import Any

from service import on_worker_start, on_worker_stop, task, worker_state


def _record(event: str) -> None:
    directory = os.environ.get("HOOK_TEST_DIR")
    if directory:
        with open(Path(directory) / "hooks.log", "a") as f:
            f.write(f"{event} {os.getpid()}\n")


async def _heartbeat() -> None:
    while True:
        worker_state()["beats"] += 1
        await asyncio.sleep(0.01)


@on_worker_start
def open_resources() -> None:
    _record("start")
    worker_state()["opened_by"] = os.getpid()


@on_worker_start
async def open_async_client() -> None:
    """An async hook: what it starts lives on the loop the async tasks run on."""
    loop = asyncio.get_running_loop()
    worker_state()["loop"] = id(loop)
    worker_state()["beats"] = 0
    worker_state()["heartbeat"] = loop.create_task(_heartbeat())


@on_worker_stop
def close_resources() -> None:
    directory = os.environ.get("HOOK_TEST_DIR")
    if directory and (Path(directory) / "hang_on_stop").exists():
        time.sleep(600)
    _record("stop")


@task
def state() -> dict[str, Any]:
    return {"pid": os.getpid(), "opened_by": worker_state()["opened_by"]}


@task
async def on_the_hooks_loop() -> dict[str, Any]:
    await asyncio.sleep(0.05)
    return {
        "same_loop": worker_state()["loop"] == id(asyncio.get_running_loop()),
        "heartbeat_alive": not worker_state()["heartbeat"].done(),
        "beats": worker_state()["beats"],
    }
