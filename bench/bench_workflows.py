"""Workflows end to end: a 1,000-job group with a callback, and a 200-step chain, each beside
the same jobs submitted as one batch with no edges between them, for the cost of an edge.

1. The service as a user runs it (``hypercorn --config hypercorn.toml``, SQLite, ``--concurrency``
   workers), with ``bench/workflow_tasks.py``.
2. Each shape ``--runs`` times: ``POST /workflows`` until ``GET /workflows/<id>/events`` ends
   (the service ends it with the workflow); and the same number of jobs as ``POST /jobs/batch``
   until the last has finished. What the workflow took beyond the batch, over its edges, is the
   overhead per edge; a chain's steps run one at a time, so its figure is also per step.

Run it from the repository root::

    python bench/bench_workflows.py [--group 1000] [--chain 200] [--runs 3]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.bench_core import BenchError, Service, bench_main, within

TASKS = "bench.workflow_tasks"


@dataclass
class Results:
    group_s: list[float] = field(default_factory=list)
    group_batch_s: list[float] = field(default_factory=list)
    chain_s: list[float] = field(default_factory=list)
    chain_batch_s: list[float] = field(default_factory=list)


async def workflow_time(client: httpx.AsyncClient, body: dict[str, Any]) -> float:
    started = time.perf_counter()
    made = await client.post("/workflows", json=body)
    if made.status_code != 202:
        raise BenchError(f"POST /workflows: {made.status_code} {made.text[:200]}")
    workflow_id = made.json()["id"]
    async with client.stream("GET", f"/workflows/{workflow_id}/events") as stream:
        async for _ in stream.aiter_bytes():  # the service ends it once the workflow has
            pass
    elapsed = time.perf_counter() - started
    state = (await client.get(f"/workflows/{workflow_id}")).json()["state"]
    if state != "succeeded":
        raise BenchError(f"workflow {workflow_id} ended {state}")
    return elapsed


async def batch_time(client: httpx.AsyncClient, calls: list[dict[str, Any]]) -> float:
    """The same jobs with no edges: one batch, until the last of them has finished."""
    started = time.perf_counter()
    last = ""
    for start in range(0, len(calls), 1000):  # a batch takes a thousand at most
        made = await client.post("/jobs/batch", json={"jobs": calls[start : start + 1000]})
        if made.status_code != 202:
            raise BenchError(f"POST /jobs/batch: {made.status_code} {made.text[:200]}")
        last = made.json()["jobs"][-1]["id"]
    while (await client.get(f"/jobs/{last}?wait_s=30")).json()["state"] != "succeeded":
        pass
    return time.perf_counter() - started


async def measure_all(options: argparse.Namespace, workdir: Path) -> Results:
    service = Service(workdir, options.concurrency, cancel_grace_s=None)
    service.env["CONVEYOR_TASKS"] = TASKS
    service.start()
    results = Results()
    try:
        await service.wait_ready(30)
        group = {
            "group": [{"task": f"{TASKS}.nothing"}] * options.group,
            "then": {"task": f"{TASKS}.count"},
        }
        chain = {"chain": [{"task": f"{TASKS}.plus_one", "args": [0]}]
                 + [{"task": f"{TASKS}.plus_one"}] * (options.chain - 1)}  # fmt: skip
        group_calls = [{"task": f"{TASKS}.nothing"}] * (options.group + 1)
        chain_calls = [{"task": f"{TASKS}.plus_one", "args": [0]}] * options.chain
        async with httpx.AsyncClient(base_url=service.url, timeout=60) as client:
            await within(120, "a warm-up", workflow_time(client, {"chain": chain["chain"][:5]}))
            for _ in range(options.runs):
                results.group_s.append(await within(300, "the group", workflow_time(client, group)))
                results.group_batch_s.append(await batch_time(client, group_calls))
                results.chain_s.append(await within(300, "the chain", workflow_time(client, chain)))
                results.chain_batch_s.append(await batch_time(client, chain_calls))
    finally:
        service.stop()
    return results


def report(results: Results, options: argparse.Namespace, host: dict[str, str]) -> None:
    print(f"machine: {host}")
    print(f"SQLite, {options.concurrency} workers; median of {options.runs} runs")
    group, group_batch = (
        statistics.median(results.group_s),
        statistics.median(results.group_batch_s),
    )
    chain, chain_batch = (
        statistics.median(results.chain_s),
        statistics.median(results.chain_batch_s),
    )
    group_edges, chain_edges = options.group, options.chain - 1
    print("| workflow | end to end | same jobs, one batch | overhead per edge |")
    print("| --- | ---: | ---: | ---: |")
    print(
        f"| group of {options.group:,} + callback ({group_edges:,} edges) | {group:.2f} s | "
        f"{group_batch:.2f} s | {(group - group_batch) / group_edges * 1000:.2f} ms |"
    )
    print(
        f"| chain of {options.chain} ({chain_edges} edges) | {chain:.2f} s "
        f"({chain / options.chain * 1000:.2f} ms a step) | {chain_batch:.2f} s | "
        f"{(chain - chain_batch) / chain_edges * 1000:.2f} ms |"
    )


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--group", type=int, default=1000)
    parser.add_argument("--chain", type=int, default=200)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=2)
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    options = parse_args(argv)
    return bench_main(options, lambda path: asyncio.run(measure_all(options, path)), report)


if __name__ == "__main__":
    sys.exit(main())
