"""A task that writes lines of its own choosing to its worker's pipe to the service, as a
worker with a bug (or a job that found the pipe) would, before it returns as usual."""

from __future__ import annotations

import gc
import os

from service import task


@task
def send_lines(lines: list[str]) -> str:
    # the worker runs as __main__, so its Channel is found by name; its lock keeps each line
    # whole against the worker's own messages
    channel = next(o for o in gc.get_objects() if type(o).__name__ == "Channel")
    with channel._lock:
        for line in lines:
            os.write(channel._fd, line.encode() + b"\n")
    return "sent"
