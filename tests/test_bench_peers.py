"""``python -m bench --peers``: its refusal without the extra, and its table (no peer is run)."""

from __future__ import annotations

from pathlib import Path

import pytest

import bench.__main__ as bench_main
from bench.figures import Figures, Plan


def test_without_the_extra_it_says_how_to_install_it(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(bench_main, "PEERS_EXTRA", ("huey", "no_such_module_for_the_bench"))
    assert bench_main.main(["--peers", "--quick"]) == 2
    assert capsys.readouterr().err == bench_main.PEERS_MISSING + "\n"
    assert 'pip install -e ".[peers]"' in bench_main.PEERS_MISSING


def test_the_table_gives_each_peer_its_figures_its_ratio_and_what_it_cannot() -> None:
    peers = pytest.importorskip("bench.peers", reason="the peers extra is not installed")

    def never(workdir: Path, plan: Plan) -> Figures:
        raise AssertionError("not run")

    huey = peers.Peer("Huey, SQLite", "huey_consumer", never, peers.CANCEL)
    saq = peers.Peer("SAQ, Redis", "saq", never)
    measured = bench_main.Measured(
        {"submit_1": [400, 500, 450], "result_p50": [5.0], "cancel_p50": [8.0]},
        [
            peers.PeerRuns(huey, {"submit_1": [2000.0], "result_p50": [50.0]}),
            peers.PeerRuns(saq, {"submit_1": [150, 100, 200], "cancel_p50": [1600.0]}),
        ],
    )
    rows = {row.split(" | ")[0]: row for row in bench_main.peers_table(measured)}
    assert rows["| figure"].endswith("| Huey, SQLite | ratio | SAQ, Redis | ratio |")
    submits = rows["| submit one by one, no job run (jobs/s, higher is better)"]
    assert submits.endswith("| 450 (400-500) | 2,000 | 0.23× | 150 (100-200) | 3.0× |")
    latency = rows["| submit -> result seen, idle, p50 (ms, lower is better)"]
    assert latency.endswith("| 5.00 | 50.0 | 0.10× | not measured | - |")
    cancel = rows["| cancel a running job -> stopped, p50 (ms, lower is better)"]
    assert cancel.endswith("| 8.00 | cannot | - | 1,600 | 0.0050× |")
