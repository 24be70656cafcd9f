"""``python -m bench``: every figure beside its target, in one run.

Each workload of ``bench.figures`` runs ``--repeat`` times (the machine is noisy); each figure
is shown as the median of its runs with their min-max, beside its target and whether the median
meets it. The figures, with the machine they were taken on, are also written as JSON.

    python -m bench              # 3 runs of each workload, 5,000 jobs (a few minutes)
    python -m bench --quick      # 1 run, 1,000 jobs (under a minute)
    python -m bench --json out.json
    python -m bench --peers      # then Huey and SAQ through the same workloads, beside Conveyor
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import orjson

from .bench_core import bench_main
from .figures import CONTEXT, TARGETS, WORKLOADS, Figures, Plan, profile_into

if TYPE_CHECKING:
    from .peers import PeerRuns

DEFAULT_JSON = Path("bench") / "last-run.json"
PEERS_EXTRA = ("huey", "saq", "redis")
PEERS_MISSING = 'python -m bench --peers needs the peers extra: pip install -e ".[peers]"'
# the figures shown beside the peers', as that table names them
COMPARED = {
    "submit_1": "submit one by one, no job run",
    "e2e_single": "end to end, no-op jobs; Conveyor 64 requests in flight, peers one by one",
    "result_p50": "submit -> result seen, idle, p50",
    "result_p99": "submit -> result seen, idle, p99",
    "cancel_p50": "cancel a running job -> stopped, p50",
    "cancel_p99": "cancel a running job -> stopped, p99",
}
Runs = dict[str, list[float]]
PEERS_LEGEND = (
    "ratio: Conveyor's median / the peer's (jobs/s: above 1× Conveyor is ahead; ms: below 1×); "
    "cannot: the peer has no way to stop a job that runs"
)


@dataclass(frozen=True)
class Measured:
    conveyor: Runs
    peers: list[PeerRuns] = field(default_factory=list)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="one short run of each workload")
    parser.add_argument("--repeat", type=int, help="runs of each workload (default 3, quick 1)")
    parser.add_argument("--json", type=Path, default=DEFAULT_JSON, help="where to write them")
    parser.add_argument("--keep", action="store_true", help="keep the services' directories")
    parser.add_argument(
        "--peers", action="store_true", help="then Huey and SAQ, beside Conveyor (extra: peers)"
    )
    parser.add_argument(
        "--profile", type=Path, metavar="DIR",
        help="a py-spy flame graph of each service measured, written in DIR (extra: bench)",
    )  # fmt: skip
    parser.add_argument(
        "--only", nargs="+", metavar="WORKLOAD", choices=[name for name, _ in WORKLOADS],
        help=f"only these of Conveyor's workloads: {', '.join(repr(n) for n, _ in WORKLOADS)}",
    )  # fmt: skip
    options = parser.parse_args(argv)
    if options.repeat is None:
        options.repeat = 1 if options.quick else 3
    if options.repeat < 1:
        parser.error("--repeat must be >= 1")
    return options


def peers_missing() -> bool:
    """Whether the ``peers`` extra is not installed."""
    return any(importlib.util.find_spec(name) is None for name in PEERS_EXTRA)


def measure_all(options: argparse.Namespace, workdir: Path) -> Measured:
    """Conveyor's figures, then, with ``--peers``, the peers'."""
    conveyor = asyncio.run(measure(options.plan, options.repeat, workdir, options.only))
    if not options.peers:
        return Measured(conveyor)
    from .peers import measure_peers  # the extra's modules: only when asked for

    (workdir / "peers").mkdir()
    return Measured(conveyor, measure_peers(options.plan, options.repeat, workdir / "peers"))


async def measure(plan: Plan, repeat: int, workdir: Path, only: list[str] | None = None) -> Runs:
    """Every workload (or those named in ``only``) ``repeat`` times: each figure's values, one
    per run."""
    runs: Runs = {}
    for name, workload in WORKLOADS:
        if only is not None and name not in only:
            continue
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


def median_of(values: list[float]) -> str:
    """The median of ``values``, with their min-max if there are several."""
    return f"{_number(statistics.median(values))}{spread_of(values)}"


def table(runs: Runs) -> list[str]:
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
            f"| {median_of(values)} {target.unit} "
            f"| {'yes' if target.met(median) else 'no'} |"
        )
    for key, (what, unit) in CONTEXT.items():
        if values := runs.get(key):
            lines.append(f"| {what} | | {median_of(values)} {unit} | |")
    return lines


def ratio_of(conveyor: list[float], peer: list[float]) -> str:
    """Conveyor's median over the peer's, to two digits: ``0.42×``, ``3.0×``, ``15×``."""
    ratio = float(f"{statistics.median(conveyor) / statistics.median(peer):.2g}")
    return f"{ratio:.0f}×" if ratio >= 10 else f"{ratio:#.2g}×"  # two digits: 3.0×, not 3×


def peers_table(measured: Measured) -> list[str]:
    """Per figure, Conveyor's median (min-max) beside each peer's, and Conveyor's ratio to it."""
    targets = {target.key: target for target in TARGETS}
    head = "| figure | Conveyor |" + "".join(f" {p.peer.name} | ratio |" for p in measured.peers)
    lines = [head, "| --- |" + " ---: |" * (1 + 2 * len(measured.peers))]
    for key, what in COMPARED.items():
        target, conveyor = targets[key], measured.conveyor.get(key)
        better = "higher" if target.higher_is_better else "lower"
        row = f"| {what} ({target.unit}, {better} is better) | "
        row += f"{median_of(conveyor)} |" if conveyor else "not measured |"
        lines.append(row + "".join(_peer_cells(peer, key, conveyor) for peer in measured.peers))
    return lines


def _peer_cells(peer: PeerRuns, key: str, conveyor: list[float] | None) -> str:
    if key in peer.peer.cannot:
        return " cannot | - |"
    if not (values := peer.runs.get(key)):
        return " not measured | - |"
    return f" {median_of(values)} | {ratio_of(conveyor, values) if conveyor else '-'} |"


def summary(runs: Runs) -> dict[str, object]:
    """Each figure's median, min, max and runs, as JSON."""
    return {
        key: {"median": statistics.median(values), "min": min(values), "max": max(values),
              "runs": values}
        for key, values in runs.items()
    }  # fmt: skip


def report(measured: Measured, options: argparse.Namespace, host: dict[str, str]) -> None:
    """The tables, on the standard output, and every figure with its runs, as JSON."""
    runs = measured.conveyor
    print(f"machine: {host['nproc']} CPUs ({host['cpu']}), {host['python']}, {host['os']}")
    print(f"plan: {options.plan}, {options.repeat} run(s) of each workload")
    print("\n".join(table(runs)))
    if measured.peers:
        print(f"\n{PEERS_LEGEND}")
        print("\n".join(peers_table(measured)))
    written = {
        "machine": host,
        "started_at": options.started_at,
        "plan": options.plan.__dict__,
        "repeat": options.repeat,
        "figures": summary(runs),
        "targets": {
            t.key: {"goal": t.goal, "unit": t.unit, "higher_is_better": t.higher_is_better,
                    "met": t.key in runs and t.met(statistics.median(runs[t.key]))}
            for t in TARGETS
        },
        "peers": {
            p.peer.name: {"runs_as": p.peer.runs_as, "cannot": list(p.peer.cannot),
                          "figures": summary(p.runs)}
            for p in measured.peers
        },
    }  # fmt: skip
    options.json.write_bytes(orjson.dumps(written, option=orjson.OPT_INDENT_2))
    print(f"written to {options.json}")


def main(argv: list[str] | None = None) -> int:
    options = parse_args(argv)
    if options.peers and peers_missing():
        print(PEERS_MISSING, file=sys.stderr)
        return 2
    options.plan = Plan.quick() if options.quick else Plan()
    options.started_at = time.time()
    if options.profile is not None:
        options.profile.mkdir(parents=True, exist_ok=True)
        profile_into(options.profile)
    return bench_main(options, lambda path: measure_all(options, path), report)


if __name__ == "__main__":
    sys.exit(main())
