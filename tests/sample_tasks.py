"""Tasks the tests run in real worker processes."""

from __future__ import annotations

import asyncio
import ctypes
import logging
import multiprocessing
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import FrameType
from typing import Any

from service import SoftTimeout, progress, task


@task
def add(x: int, y: int) -> int:
    return x + y


@task(name="tests.renamed")
def renamed(value: str = "hello") -> str:
    return value.upper()


@task
async def async_add(x: int, y: int) -> int:
    await asyncio.sleep(0.01)
    return x + y


@task
def fail(message: str) -> None:
    raise ValueError(message)


@task
def unserializable() -> set[int]:
    return {1, 2, 3}


@task
def steps(count: int, delay_s: float = 0.0) -> int:
    for i in range(count):
        progress(i + 1, count, f"step {i + 1}")
        time.sleep(delay_s)
    return count


@task
def sleep(seconds: float, marker: str | None = None) -> float:
    """Sleep; with ``marker``, first append this process's pid to that file (counts runs)."""
    if marker:
        with open(marker, "a") as f:
            f.write(f"{os.getpid()}\n")
    time.sleep(seconds)
    return seconds


@task
def spawn_tree(pidfile: str) -> None:
    """Start a child that starts a grandchild, write both pids, then wait forever."""
    code = (
        "import subprocess, sys, time;"
        "p = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(600)']);"
        "open(sys.argv[1], 'a').write(f'{p.pid}\\n');"
        "time.sleep(600)"
    )
    child = subprocess.Popen([sys.executable, "-c", code, pidfile])
    with open(pidfile, "a") as f:
        f.write(f"{child.pid}\n")
    while len(Path(pidfile).read_text().split()) < 2:
        time.sleep(0.01)
    Path(pidfile + ".ready").touch()
    time.sleep(600)


@task
def ignore_sigterm(started: str) -> None:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    Path(started).touch()
    time.sleep(600)


@task
def clean_up_on_sigterm(started: str, cleaned: str) -> None:
    def handler(signum: int, frame: FrameType | None) -> None:
        Path(cleaned).touch()
        sys.exit(0)

    signal.signal(signal.SIGTERM, handler)
    Path(started).touch()
    time.sleep(600)


@task
def raise_on_sigterm(started: str) -> None:
    def handler(signum: int, frame: FrameType | None) -> None:
        raise RuntimeError("interrupted")

    signal.signal(signal.SIGTERM, handler)
    Path(started).touch()
    time.sleep(600)


@task
def finally_on_sigterm(started: str, cleaned: str) -> None:
    """No handler of its own: the worker's SIGTERM still lets ``finally`` run."""
    try:
        Path(started).touch()
        time.sleep(600)
    finally:
        Path(cleaned).touch()


@task
def segfault() -> None:
    ctypes.string_at(0)


@task
def hard_exit(code: int) -> None:
    os._exit(code)


@task
def pid() -> int:
    return os.getpid()


@task
def echo(*args: Any, **kwargs: Any) -> dict[str, Any]:
    return {"args": list(args), "kwargs": kwargs}


@task
def die_later(delay_s: float) -> str:
    """Return at once, leaving a thread that kills this worker while it is idle."""

    def later() -> None:
        time.sleep(delay_s)
        os._exit(9)

    threading.Thread(target=later, daemon=True).start()
    return "returned"


@task
def surrogate_error() -> None:
    name = b"report-\xff.csv".decode("utf-8", "surrogateescape")  # as os.listdir gives it
    raise ValueError(f"cannot parse {name}")


@task
def chatty(size: int) -> str:
    progress(1, 2, "y" * size)
    return "ok"


@task(timeout_s=0.5)
def limited(seconds: float) -> float:
    """A task whose own default timeout is half a second."""
    time.sleep(seconds)
    return seconds


@task
def soft_aware(seconds: float) -> str:
    try:
        time.sleep(seconds)
    except SoftTimeout:
        return "stopped early"
    return "finished"


@task
async def async_soft_aware(seconds: float) -> str:
    try:
        await asyncio.sleep(seconds)
    except SoftTimeout:
        return "stopped early"
    return "finished"


@task
def stubborn(seconds: float) -> str:
    """Catches the soft timeout and carries on regardless."""
    try:
        time.sleep(seconds)
    except SoftTimeout:
        time.sleep(seconds)
    return "done"


@task
async def async_sleep(seconds: float) -> float:
    await asyncio.sleep(seconds)
    return seconds


@task
async def fan_out(marker: str) -> None:
    """Children that tick into ``marker`` until they are cancelled."""

    async def tick() -> None:
        while True:
            with open(marker, "a") as f:
                f.write("tick\n")
            await asyncio.sleep(0.02)

    async with asyncio.TaskGroup() as group:
        for _ in range(3):
            group.create_task(tick())


@task
async def cancels_itself() -> None:
    raise asyncio.CancelledError


@task
def flaky(marker: str, failures: int) -> int:
    """Fail the first ``failures`` runs (counted in ``marker``), then succeed."""
    with open(marker, "a") as f:
        f.write("run\n")
    runs = len(Path(marker).read_text().split())
    if runs <= failures:
        raise ValueError(f"run {runs} fails")
    return runs


@task(max_retries=2, retry_backoff_s=0.05)
def flaky_with_policy(marker: str, failures: int) -> int:
    return int(flaky(marker, failures))


def _wait_for_file(path: str, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not os.path.exists(path):
        if time.monotonic() > deadline:
            raise TimeoutError(f"{path} never appeared")
        time.sleep(0.01)


@task
def gate(path: str, label: str = "", marker: str | None = None) -> str:
    """Wait until ``path`` exists; then append ``label`` to ``marker``."""
    _wait_for_file(path)
    if marker is not None:
        with open(marker, "a") as f:
            f.write(label + "\n")
    return label


@task(queue="reports", priority=3)
def report(path: str) -> str:
    _wait_for_file(path)
    return "report"


@task(concurrency=1)
def one_at_a_time(path: str) -> str:
    _wait_for_file(path)
    return "done"


@task
def tick(label: str = "") -> str:
    """What the schedules of the tests run; returns its label."""
    return label


# -- output, results and memory ------------------------------------------------------------


@task
def chatter(tag: str) -> str:
    """Write through every channel a job has, each line starting with ``tag``."""
    print(f"{tag} print")
    sys.stdout.write(f"{tag} stdout write\n")
    sys.stderr.write(f"{tag} stderr\n")
    logging.getLogger("tests.chatter").warning("%s logged", tag)
    subprocess.run(["echo", f"{tag} echo"], check=True)
    os.write(1, f"{tag} raw fd\n".encode())
    ctypes.CDLL(None).printf(f"{tag} printf\n".encode())
    sys.stdout.write(f"{tag} unfinished")  # no newline: still a line of its own
    return tag


@task
def print_lines(count: int) -> int:
    for i in range(count):
        print(f"line {i}")
    return count


@task
def leave_a_writer(go: str, done: str) -> None:
    """Leave a child that writes to this job's stdout once ``go`` exists, after the job."""
    code = (
        "import os, signal, sys, time\n"
        "signal.signal(signal.SIGPIPE, signal.SIG_IGN)\n"
        "while not os.path.exists(sys.argv[1]):\n"
        "    time.sleep(0.01)\n"
        "try:\n"
        "    os.write(1, b'leftover\\n')\n"
        "except OSError:\n"
        "    pass\n"
        "open(sys.argv[2], 'w').close()\n"
    )
    subprocess.Popen([sys.executable, "-c", code, go, done])


@task
def say_after_the_leftover(text: str, go: str, done: str) -> str:
    Path(go).touch()
    while not Path(done).exists():
        time.sleep(0.01)
    print(text)
    return text


@task
def talk_until_stopped(started: str) -> None:
    print("working")
    logging.getLogger("tests.talk").info("still working")
    try:
        Path(started).touch()
        time.sleep(600)
    finally:
        print("cleaning up")


@task
def big_result(size: int) -> str:
    return "x" * size


_leaked: list[bytes] = []


@task
def allocate(mb: int) -> int:
    """Allocate ``mb`` MB (touched, so really in RAM) and let it go."""
    block = b"x" * (mb * 1024 * 1024)
    return len(block) // (1024 * 1024)


@task(memory_limit_mb=64)
def allocate_limited(mb: int) -> int:
    return int(allocate(mb))


@task
def leak(mb: int) -> int:
    """Keep ``mb`` MB in this worker after the job; return its pid."""
    _leaked.append(b"x" * (mb * 1024 * 1024))
    return os.getpid()


@task
def abort() -> None:
    os.abort()


def _forked_child() -> None:
    logging.getLogger("tests.child").warning("logged in a forked child")
    print("printed in a forked child", flush=True)


@task
def fork_a_child() -> int | None:
    """A child forked, not started afresh (multiprocessing's default on Linux)."""
    child = multiprocessing.get_context("fork").Process(target=_forked_child)
    child.start()
    child.join(30)
    return child.exitcode


@task
def paged_report(pages: int = 5, interval_s: float = 0.2) -> dict[str, int]:
    """Write one log line and report progress per page: what a dashboard shows moving."""
    for page in range(1, pages + 1):
        time.sleep(interval_s)
        print(f"page {page} of {pages} done", flush=True)
        progress(page, pages, f"page {page}")
    return {"pages": pages}


class Opaque:
    """A class of the task's own: pydantic cannot check it, so it is left alone."""


@task
def typed(count: int, tags: list[str], *more: int, ratio: float = 0.5, thing: Opaque = None) -> int:  # type: ignore[assignment]
    return count


@task
def gather(first: str, *rest: str, key: str = "") -> dict[str, Any]:
    """A parameter after ``*rest``, and one named like a job option."""
    return {"first": first, "rest": list(rest), "key": key}


@task
def quarterly_report_for_every_region(path: str) -> str:
    """A long name, as real task names are: the dashboard has to fit it on a phone."""
    progress(1, 2, "halfway")
    _wait_for_file(path)
    return "report"


@task
def flaky_talker(marker: str, failures: int) -> int:
    """``flaky`` that prints a line per run first: a log that spans attempts."""
    runs = len(Path(marker).read_text().split()) + 1 if Path(marker).exists() else 1
    print(f"run {runs} starts", flush=True)
    return int(flaky(marker, failures))


@task
def escape_group(pidfile: str) -> None:
    """Start a child in a session of its own (setsid) that starts a grandchild in another one
    and exits: the grandchild is outside the worker's process group, and an orphan."""
    code = (
        "import subprocess, sys;"
        "p = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(600)'],"
        " start_new_session=True);"
        "open(sys.argv[1], 'a').write(f'{p.pid}\\n')"
    )
    child = subprocess.Popen([sys.executable, "-c", code, pidfile], start_new_session=True)
    with open(pidfile, "a") as f:
        f.write(f"{child.pid}\n")
    child.wait()  # it has exited: its child is an orphan now
    Path(pidfile + ".ready").touch()
    time.sleep(600)


@task(rate_limit="10/s")
def rated(label: str = "") -> float:
    """Started at most ten times a second: returns when it ran."""
    return time.time()


@task
def flood(lines: int) -> int:
    """Print ``lines`` lines of 4,000 characters: a lot of log events, fast."""
    for _ in range(lines):
        print("z" * 4000)
    return lines
