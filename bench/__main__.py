"""``python -m bench``: every figure beside its target, in one run.

Each workload of ``bench.figures`` runs ``--repeat`` times (the machine is noisy); each figure
is shown as the median of its runs with their min-max, beside its target and whether the median
meets it. The figures, with the machine they were taken on, are also written as JSON.

    python -m bench              # 3 runs of each workload, 5,000 jobs (a few minutes)
    python -m bench --quick      # 1 run, 1,000 jobs (under a minute)
    python -m bench --json out.json
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from pathlib import Path

import orjson

from .bench_core import bench_main
from .figures import CONTEXT, TARGETS, WORKLOADS, Figures, Plan

DEFAULT_JSON = Path("bench") / "last-run.json"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="one short run of each workload")
    parser.add_argument("--repeat", type=int, help="runs of each workload (default 3, quick 1)")
    parser.add_argument("--json", type=Path, default=DEFAULT_JSON, help="where to write them")
    parser.add_argument("--keep", action="store_true", help="keep the services' directories")
    options = parser.parse_args(argv)
    if options.repeat is None:
        options.repeat = 1 if options.quick else 3
    if options.repeat < 1:
        parser.error("--repeat must be >= 1")
    return options


async def measure(plan: Plan, repeat: int, workdir: Path) -> dict[str, list[float]]:
    """Every workload ``repeat`` times: each figure's values, one per run."""
    runs: dict[str, list[float]] = {}
    for name, workload in WORKLOADS:
        for n in range(repeat):
            print(f"{name}, run {n + 1} of {repeat} ...", file=sys.stderr, flush=True)
            figures: Figures = await workload(workdir / f"{name.replace(' ', '-')}-{n}", plan)
            for key, value in figures.items():
                runs.setdefault(key, []).append(value)
    return runs


def spread_of(values: list[float]) -> str:
    if len(values) == 1:
        return ""
    return f" ({_number(min(values))}-{_number(max(values))})"


def _number(value: float) -> str:
    if value >= 100:
        return f"{value:,.0f}"
    return f"{value:.2f}" if value < 10 else f"{value:.1f}"


def table(runs: dict[str, list[float]]) -> list[str]:
    lines = [
        "| figure | target | median (min-max) | met |",
        "| --- | ---: | ---: | :---: |",
    ]
    for target in TARGETS:
        values = runs.get(target.key)
        if not values:
            lines.append(f"| {target.figure} | - | not measured | |")
            continue
        median = statistics.median(values)
        sign = "≥" if target.higher_is_better else "≤"
        lines.append(
            f"| {target.figure} | {sign} {_number(target.goal)} {target.unit} "
            f"| {_number(median)}{spread_of(values)} {target.unit} "
            f"| {'yes' if target.met(median) else 'no'} |"
        )
    for key, (what, unit) in CONTEXT.items():
        if values := runs.get(key):
            median = statistics.median(values)
            lines.append(f"| {what} | | {_number(median)}{spread_of(values)} {unit} | |")
    return lines


def report(runs: dict[str, list[float]], options: argparse.Namespace, host: dict[str, str]) -> None:
    """The table, on the standard output, and every figure with its runs, as JSON."""
    print(f"machine: {host['nproc']} CPUs ({host['cpu']}), {host['python']}, {host['os']}")
    print(f"plan: {options.plan}, {options.repeat} run(s) of each workload")
    print("\n".join(table(runs)))
    written = {
        "machine": host,
        "started_at": options.started_at,
        "plan": options.plan.__dict__,
        "repeat": options.repeat,
        "figures": {
            key: {"median": statistics.median(values), "min": min(values), "max": max(values),
                  "runs": values}
            for key, values in runs.items()
        },
        "targets": {
            t.key: {"goal": t.goal, "unit": t.unit, "higher_is_better": t.higher_is_better,
                    "met": t.key in runs and t.met(statistics.median(runs[t.key]))}
            for t in TARGETS
        },
    }  # fmt: skip
    options.json.write_bytes(orjson.dumps(written, option=orjson.OPT_INDENT_2))
    print(f"written to {options.json}")


def main(argv: list[str] | None = None) -> int:
    options = parse_args(argv)
    options.plan = Plan.quick() if options.quick else Plan()
    options.started_at = time.time()
    return bench_main(
        options, lambda path: asyncio.run(measure(options.plan, options.repeat, path)), report
    )


if __name__ == "__main__":
    sys.exit(main())
