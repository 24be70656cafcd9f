"""The task the crash harness (``bench/chaos.py``) runs: it notes each start and each end of a
run in a file, so that the harness can tell how often each job really ran."""

from __future__ import annotations

import os
import time

from conveyor import task

RUNS_FILE = "CHAOS_RUNS"  # the environment variable naming the file


def _note(line: str) -> None:
    # one write of a short line to a file opened for appending: whole, whatever else writes
    with open(os.environ[RUNS_FILE], "a", encoding="utf-8") as runs:
        runs.write(line + "\n")


@task
def mark(token: str, delay_s: float = 0.0) -> str:
    """Note the start, wait ``delay_s``, note the end; return ``token``."""
    _note(f"start {token}")
    time.sleep(delay_s)
    _note(f"end {token}")
    return token


@task
def step(previous: object, token: str) -> list[object]:
    """A workflow's step: note the run as ``mark`` does; return what came before and
    ``token``, so the harness sees each step got its input."""
    _note(f"start {token}")
    _note(f"end {token}")
    return [previous, token]
