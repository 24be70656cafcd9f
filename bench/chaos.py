"""Crash the service under load, many times, and account for every job it acknowledged.

Several clients submit jobs over HTTP (one at a time and in batches, with and without an
``Idempotency-Key``) while workers run them, and the service is ``kill -9``-ed at random
moments and started again, over and over. Every answer is recorded. At the end, once the
service has run what it has, the store is read and checked:

- every job whose submit was answered ``200``/``202`` exists, under the tokens it was sent with,
  and reached exactly one terminal state, through transitions that follow each other;
- no token made two jobs (an idempotent retry after a crash never made a second job) and a batch
  was made whole or not at all;
- a job whose task finished twice was requeued after a crash (its ``interruptions`` say so);
- the event ids have no gap, and ``PRAGMA integrity_check`` is ``ok``.

Run it from the repository root::

    python bench/chaos.py [--cycles 50] [--clients 4] [--seed 1] [--json report.json]

It prints the figures and exits non-zero if anything was lost or broken. ``tests/test_crash.py``
runs a shorter version of it in the test suite.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import os
import random
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
TASK = "bench.chaos_tasks.mark"
TERMINAL = frozenset({"succeeded", "failed", "canceled"})
UNFINISHED = "scheduled,queued,running"


@dataclass(frozen=True)
class Options:
    cycles: int = 20  # how many times the service is killed (and started again)
    clients: int = 4  # submitting at once
    batch_size: int = 5  # jobs in a batch submit
    run_for_s: tuple[float, float] = (0.3, 1.2)  # how long the service lives between kills
    task_delay_s: tuple[float, float] = (0.0, 0.01)  # how long each job runs
    concurrency: int = 2  # CONVEYOR_CONCURRENCY
    seed: int = 1
    settle_timeout_s: float = 600.0  # for the backlog to drain once the killing stops


@dataclass
class Request:
    """One submit as a client sent it, and every answer it got (a keyed one is sent again)."""

    tokens: list[str]
    batch: bool
    key: str | None
    answers: list[list[str]] = field(default_factory=list)  # job ids of each 200/202
    outcomes: list[str] = field(default_factory=list)  # each try: its status, or "no answer"


@dataclass
class Report:
    cycles: int = 0
    requests: int = 0
    requests_answered: int = 0
    requests_unanswered: int = 0  # sent without a key and cut off: their jobs may or may not exist
    jobs_acknowledged: int = 0
    jobs_stored: int = 0
    jobs_lost: int = 0  # must be 0
    jobs_duplicated: int = 0  # tokens with two jobs: must be 0
    jobs_rerun_after_crash: int = 0  # requeued by a restart and run again: allowed
    jobs_failed_interrupted: int = 0  # killed under too often (CONVEYOR_MAX_INTERRUPTIONS)
    keyed_retries_answered: int = 0  # idempotent requests cut off by a crash, then answered
    events: int = 0
    integrity: str = ""
    elapsed_s: float = 0.0
    problems: list[str] = field(default_factory=list)


class Service:
    """The service as a user runs it, on a socket this harness keeps: the same port each time."""

    def __init__(self, workdir: Path, options: Options) -> None:
        self.workdir = workdir
        self.database = workdir / "conveyor.db"
        self.runs = workdir / "runs.txt"
        self.log = workdir / "service.log"
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(1024)
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.env = {
            **os.environ,
            "PYTHONPATH": str(ROOT),
            "CONVEYOR_DATABASE": str(self.database),
            "CONVEYOR_TASKS": "bench.chaos_tasks",
            "CONVEYOR_CONCURRENCY": str(options.concurrency),
            "CONVEYOR_RETENTION_S": "0",  # keep every job: each is accounted for at the end
            "CHAOS_RUNS": str(self.runs),
        }
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        fd = self.sock.fileno()
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                [
                    sys.executable, "-m", "hypercorn", "--config", str(ROOT / "hypercorn.toml"),
                    "--bind", f"fd://{fd}", "service.app:create_app()",
                ],
                cwd=self.workdir, env=self.env, pass_fds=(fd,), stdout=log, stderr=log,
            )  # fmt: skip

    async def ready(self, timeout_s: float = 30) -> None:
        deadline = time.monotonic() + timeout_s
        async with httpx.AsyncClient(base_url=self.url, timeout=2) as client:
            while True:
                if self.proc is None or self.proc.poll() is not None:
                    raise RuntimeError(f"the service exited: {self.log.read_text()[-2000:]}")
                with contextlib.suppress(httpx.TransportError):
                    if (await client.get("/health")).status_code == 200:
                        return
                if time.monotonic() > deadline:
                    raise RuntimeError("the service did not get ready")
                await asyncio.sleep(0.05)

    def kill(self) -> None:
        """``kill -9``: no drain, no shutdown hooks; its workers see it gone and exit."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)

    def close(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self.sock.close()


# -- load -----------------------------------------------------------------------------------


async def submit(
    client: httpx.AsyncClient,
    request: Request,
    rng: random.Random,
    delay_s: tuple[float, float],
) -> None:
    """Send ``request`` until it is answered; one without a key only once (sent again after a
    lost answer, it could make its jobs twice, which is what the key is for)."""
    calls = [{"task": TASK, "args": [t, round(rng.uniform(*delay_s), 3)]} for t in request.tokens]
    path, body = ("/jobs/batch", {"jobs": calls}) if request.batch else ("/jobs", calls[0])
    headers = {} if request.key is None else {"Idempotency-Key": request.key}
    for _ in range(600):
        try:
            response = await client.post(path, json=body, headers=headers)
        except httpx.TransportError:
            request.outcomes.append("no answer")
        else:
            request.outcomes.append(str(response.status_code))
            if response.status_code in (200, 202):
                answer = response.json()
                jobs = answer["jobs"] if request.batch else [answer]
                request.answers.append([job["id"] for job in jobs])
                return
            if response.status_code < 500:
                return  # refused: a problem the report names
        if request.key is None:
            return
        await asyncio.sleep(0.05)


async def client_loop(
    url: str, seed: int, stop: asyncio.Event, requests: list[Request], options: Options
) -> None:
    rng = random.Random(seed)
    async with httpx.AsyncClient(base_url=url, timeout=10) as client:
        while not stop.is_set():
            batch = rng.random() < 0.3
            tokens = [uuid.uuid4().hex for _ in range(options.batch_size if batch else 1)]
            key = uuid.uuid4().hex if rng.random() < 0.5 else None
            request = Request(tokens, batch, key)
            requests.append(request)
            await submit(client, request, rng, options.task_delay_s)
            if request.outcomes[-1] == "no answer":
                await asyncio.sleep(0.02)  # the service is down: don't spin


async def killer(service: Service, options: Options, rng: random.Random) -> int:
    for _ in range(options.cycles):
        await asyncio.sleep(rng.uniform(*options.run_for_s))
        service.kill()
        service.start()
        await service.ready()
    return options.cycles


async def settle(service: Service, timeout_s: float) -> None:
    """Until the service has finished every job it holds."""
    deadline = time.monotonic() + timeout_s
    async with httpx.AsyncClient(base_url=service.url, timeout=10) as client:
        while True:
            counts = (await client.get("/stats")).json()["by_state"]
            left = sum(counts[state] for state in UNFINISHED.split(","))
            if not left:
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"{left} job(s) still unfinished after {timeout_s:g} s")
            await asyncio.sleep(0.2)


# -- checks ---------------------------------------------------------------------------------


def check(database: Path, runs: Path, requests: list[Request], report: Report) -> None:
    """Account for every acknowledged job in the store the service left."""
    db = sqlite3.connect(database)
    try:
        report.integrity = db.execute("PRAGMA integrity_check").fetchone()[0]
        rows = db.execute("SELECT id, args, state, interruptions FROM jobs").fetchall()
        events = db.execute("SELECT id, job_id, kind, data FROM events ORDER BY id").fetchall()
    finally:
        db.close()
    problems = report.problems
    if report.integrity != "ok":
        problems.append(f"integrity_check: {report.integrity}")
    jobs = {
        job_id: (json.loads(args)[0], state, interrupted)
        for job_id, args, state, interrupted in rows
    }
    report.jobs_stored = len(jobs)
    by_token = Counter(token for token, _, _ in jobs.values())
    report.jobs_duplicated = sum(1 for n in by_token.values() if n > 1)
    if report.jobs_duplicated:
        problems.append(f"{report.jobs_duplicated} token(s) made more than one job")
    _check_requests(requests, jobs, by_token, report)
    _check_states(jobs, events, report)
    _check_runs(runs, jobs, report)


def _check_requests(
    requests: list[Request],
    jobs: dict[str, tuple[str, str, int]],
    by_token: Counter[str],
    report: Report,
) -> None:
    problems = report.problems
    report.requests = len(requests)
    for request in requests:
        refused = [o for o in request.outcomes if o not in ("200", "202", "no answer")]
        if refused:  # a 4xx for a good request, or a 5xx: neither may happen
            problems.append(f"a submit was answered {refused}")
        made = [by_token[t] for t in request.tokens]
        if request.batch and len(set(made)) > 1:
            problems.append(f"a batch was made in part: {made}")
        if not request.answers:
            report.requests_unanswered += 1
            continue
        report.requests_answered += 1
        if request.key is not None and "no answer" in request.outcomes:
            report.keyed_retries_answered += 1  # cut off, sent again, answered
        if any(answer != request.answers[0] for answer in request.answers):
            problems.append(f"one Idempotency-Key, different jobs: {request.answers}")
        for job_id, token in zip(request.answers[0], request.tokens, strict=True):
            report.jobs_acknowledged += 1
            stored = jobs.get(job_id)
            if stored is None:
                report.jobs_lost += 1
                problems.append(f"acknowledged job {job_id} is not stored")
            elif stored[0] != token:
                problems.append(f"job {job_id} holds token {stored[0]}, was sent {token}")


def _check_states(
    jobs: dict[str, tuple[str, str, int]], events: list[tuple[Any, ...]], report: Report
) -> None:
    problems = report.problems
    report.events = len(events)
    ids = [row[0] for row in events]
    if ids and ids != list(range(ids[0], ids[0] + len(ids))):
        gaps = sorted(set(range(ids[0], ids[-1] + 1)) - set(ids))
        problems.append(f"event ids have gaps: {gaps[:10]}")
    states: dict[str, list[tuple[str | None, str]]] = {}
    for _, job_id, kind, data in events:
        if kind == "state":
            moved = json.loads(data)
            states.setdefault(job_id, []).append((moved["from"], moved["state"]))
    for job_id, (_, state, _) in jobs.items():
        if state not in TERMINAL:
            problems.append(f"job {job_id} never finished: {state}")
        if state == "failed":
            report.jobs_failed_interrupted += 1
        moves = states.get(job_id, [])
        ends = [to for _, to in moves if to in TERMINAL]
        if len(ends) != 1 or (moves and moves[-1][1] != state):
            problems.append(f"job {job_id}: terminal states {ends}, stored {state}")
        for (_, before), (left, _) in itertools.pairwise(moves):
            if left != before:
                problems.append(f"job {job_id}: a move from {left} after {before}")


def _check_runs(runs: Path, jobs: dict[str, tuple[str, str, int]], report: Report) -> None:
    ended = Counter(
        line.split()[1] for line in runs.read_text().splitlines() if line.startswith("end ")
    )
    interrupted = {token: n for token, _, n in jobs.values()}
    for token, n in ended.items():
        if n > 1:
            if interrupted.get(token, 0) == 0:
                report.problems.append(f"token {token} ran to its end {n} times, never requeued")
            report.jobs_rerun_after_crash += 1


# -- the run --------------------------------------------------------------------------------


async def run(options: Options, workdir: Path) -> Report:
    """Submit under crashes for ``options.cycles`` kills, then check; the report says what
    was found (``problems`` is empty when nothing was lost or broken)."""
    rng = random.Random(options.seed)
    service = Service(workdir, options)
    report = Report()
    requests: list[Request] = []
    started = time.monotonic()
    try:
        service.start()
        await service.ready()
        stop = asyncio.Event()
        clients = [
            asyncio.create_task(
                client_loop(service.url, options.seed * 1000 + n, stop, requests, options)
            )
            for n in range(options.clients)
        ]
        try:
            report.cycles = await killer(service, options, rng)
        finally:
            stop.set()
            await asyncio.gather(*clients)
        await settle(service, options.settle_timeout_s)
        service.stop()
        check(service.database, service.runs, requests, report)
    finally:
        service.close()
    report.elapsed_s = round(time.monotonic() - started, 1)
    return report


def print_report(report: Report) -> None:
    lines = [
        f"cycles (kill -9 and restart):      {report.cycles}",
        f"submit requests:                   {report.requests}"
        f" ({report.requests_answered} answered, {report.requests_unanswered} cut off unanswered)",
        f"jobs acknowledged:                 {report.jobs_acknowledged}",
        f"jobs stored:                       {report.jobs_stored}",
        f"jobs lost:                         {report.jobs_lost}",
        f"jobs made twice:                   {report.jobs_duplicated}",
        f"jobs re-run after a crash:         {report.jobs_rerun_after_crash}",
        f"jobs failed as Interrupted:        {report.jobs_failed_interrupted}",
        f"keyed requests cut off, answered:  {report.keyed_retries_answered}",
        f"events:                            {report.events}",
        f"integrity_check:                   {report.integrity}",
        f"elapsed:                           {report.elapsed_s} s",
    ]
    print("\n".join(lines))
    for problem in report.problems[:50]:
        print("PROBLEM:", problem)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cycles", type=int, default=50)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--concurrency", type=int, default=2)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--json", type=Path, help="also write the report here")
    args = parser.parse_args()
    options = Options(
        cycles=args.cycles, clients=args.clients, concurrency=args.concurrency, seed=args.seed
    )
    with tempfile.TemporaryDirectory(prefix="conveyor-chaos-") as workdir:
        report = asyncio.run(run(options, Path(workdir)))
    print_report(report)
    if args.json:
        args.json.write_text(json.dumps(asdict(report), indent=2))
    sys.exit(1 if report.problems else 0)


if __name__ == "__main__":
    main()
