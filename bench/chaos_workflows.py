"""Crash the service while workflows run, many times, and check that each ends once.

A client makes workflows over HTTP, chains (``mark`` then two ``step``s, each taking the one
before's output) and groups (three ``mark``s, then a ``step`` that takes their outputs), while
the service is ``kill -9``-ed at random moments and started again. Once the killing stops and
everything has run, the store is read and checked:

- every workflow whose create was answered ``202`` is stored; every stored one is whole (all its
  jobs, or none: a create cut off by a kill made nothing);
- every job of every workflow succeeded, so every workflow did, and each step took exactly the
  outputs before it (a callback, its group's results, in order);
- every job that waited was let go exactly once (one ``waiting`` → ``queued`` event), however the
  kills fell: a callback is never made twice, nor left waiting.

Run it from the repository root::

    python bench/chaos_workflows.py [--workflows 50] [--cycles 20] [--seed 1]

It prints the figures and exits non-zero if anything was lost or broken.
``tests/test_crash.py`` runs a shorter version of it in the test suite.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sqlite3
import sys
import tempfile
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.chaos import Options, Service, settle

MARK = "bench.chaos_tasks.mark"
STEP = "bench.chaos_tasks.step"


@dataclass
class Report:
    workflows_asked: int = 0
    workflows_acknowledged: int = 0
    workflows_stored: int = 0
    jobs: int = 0
    kills: int = 0
    releases: int = 0  # waiting -> queued, counted over every job
    problems: list[str] = field(default_factory=list)
    elapsed_s: float = 0.0


def chain_body(tag: str) -> dict[str, Any]:
    return {"chain": [
        {"task": MARK, "args": [f"{tag}-a", 0.02]},
        {"task": STEP, "args": [f"{tag}-b"]},
        {"task": STEP, "args": [f"{tag}-c"]},
    ]}  # fmt: skip


def group_body(tag: str) -> dict[str, Any]:
    return {
        "group": [{"task": MARK, "args": [f"{tag}-{n}", 0.02]} for n in range(3)],
        "then": {"task": STEP, "args": [f"{tag}-then"]},
    }


async def maker(
    url: str, count: int, pause_s: tuple[float, float], rng: random.Random
) -> list[str]:
    """Make ``count`` workflows, one after another; the ids of those acknowledged."""
    acknowledged = []
    async with httpx.AsyncClient(base_url=url, timeout=10) as client:
        for n in range(count):
            tag = f"w{n}-{uuid.uuid4().hex[:6]}"
            body = chain_body(tag) if n % 2 == 0 else group_body(tag)
            try:
                answer = await client.post("/workflows", json=body)
            except httpx.TransportError:
                await asyncio.sleep(0.05)  # the service is down: not acknowledged, maybe made
                continue
            if answer.status_code == 202:
                acknowledged.append(answer.json()["id"])
            await asyncio.sleep(rng.uniform(*pause_s))
    return acknowledged


async def killer(service: Service, stop: asyncio.Event, run_for_s: tuple[float, float],
                 rng: random.Random) -> int:  # fmt: skip
    kills = 0
    while not stop.is_set():
        await asyncio.sleep(rng.uniform(*run_for_s))
        service.kill()
        kills += 1
        service.start()
        await service.ready()
    return kills


def check(database: Path, acknowledged: list[str], report: Report) -> None:
    with sqlite3.connect(database) as conn:
        workflows = {row[0] for row in conn.execute("SELECT id FROM workflows")}
        jobs = conn.execute(
            "SELECT id, workflow_id, task, state, args, result, depends_on FROM jobs "
            "WHERE workflow_id IS NOT NULL ORDER BY seq"
        ).fetchall()
        released = Counter(
            row[0] for row in conn.execute(
                "SELECT job_id FROM events WHERE kind = 'state' "
                "AND json_extract(data, '$.from') = 'waiting'"
            )
        )  # fmt: skip
    report.workflows_stored, report.jobs = len(workflows), len(jobs)
    report.releases = sum(released.values())
    for missing in set(acknowledged) - workflows:
        report.problems.append(f"workflow {missing} was acknowledged and is not stored")
    by_workflow: dict[str, list[tuple[Any, ...]]] = {}
    for row in jobs:
        by_workflow.setdefault(row[1], []).append(row)
    results = {row[0]: json.loads(row[5]) if row[5] is not None else None for row in jobs}
    for workflow_id in workflows:
        members = by_workflow.get(workflow_id, [])
        if len(members) not in (3, 4):
            report.problems.append(f"workflow {workflow_id} has {len(members)} jobs")
            continue
        for job_id, _, _, state, args, _, depends_on in members:
            if state != "succeeded":
                report.problems.append(f"job {job_id} of {workflow_id} ended {state}")
            waited = json.loads(depends_on)
            if waited and released[job_id] != 1:
                report.problems.append(f"job {job_id} was let go {released[job_id]} times")
            taken = json.loads(args)[0] if waited else None
            expected = results[waited[0]] if len(waited) == 1 else [results[w] for w in waited]
            if waited and taken != expected:
                report.problems.append(f"job {job_id} took {taken!r}, not {expected!r}")


async def run(
    workflows: int, options: Options, workdir: Path, pause_s: tuple[float, float] = (0.0, 0.05)
) -> Report:
    rng = random.Random(options.seed)
    service = Service(workdir, options)
    service.env["CONVEYOR_MAX_INTERRUPTIONS"] = "1000"  # every job ends succeeded, however cut
    report = Report(workflows_asked=workflows)
    started = time.monotonic()
    try:
        service.start()
        await service.ready()
        stop = asyncio.Event()
        kills = asyncio.create_task(killer(service, stop, options.run_for_s, rng))
        try:
            acknowledged = await maker(service.url, workflows, pause_s, rng)
        finally:
            stop.set()
            report.kills = await kills
        report.workflows_acknowledged = len(acknowledged)
        await settle(service, options.settle_timeout_s)
        service.stop()
        check(service.database, acknowledged, report)
    finally:
        service.close()
    report.elapsed_s = round(time.monotonic() - started, 1)
    return report


def print_report(report: Report) -> None:
    print(
        f"workflows asked / acknowledged / stored: {report.workflows_asked} / "
        f"{report.workflows_acknowledged} / {report.workflows_stored}\n"
        f"jobs: {report.jobs}, let go from waiting: {report.releases}\n"
        f"kill -9 and restart: {report.kills}\nelapsed: {report.elapsed_s} s"
    )
    for problem in report.problems[:50]:
        print("PROBLEM:", problem)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workflows", type=int, default=50)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    options = Options(run_for_s=(0.2, 0.8), seed=args.seed)
    with tempfile.TemporaryDirectory(prefix="conveyor-chaos-wf-") as workdir:
        report = asyncio.run(run(args.workflows, options, Path(workdir)))
    print_report(report)
    sys.exit(1 if report.problems else 0)


if __name__ == "__main__":
    main()
