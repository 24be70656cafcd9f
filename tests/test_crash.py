"""``kill -9`` under load, six times: every acknowledged job is accounted for; and fifty
workflows made across kills each end once.

The harness is ``bench/chaos.py`` (run it there for longer); this is its short run.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.chaos import Options, print_report, run
from bench.chaos_workflows import print_report as print_workflows_report
from bench.chaos_workflows import run as run_workflows


@pytest.mark.timeout(240)
async def test_nothing_acknowledged_is_lost_across_six_crashes(tmp_path: Path) -> None:
    options = Options(cycles=6, clients=3, run_for_s=(0.2, 0.6), task_delay_s=(0.0, 0.01), seed=7)
    report = await run(options, tmp_path)
    print_report(report)  # shown when it fails
    assert report.problems == []
    assert report.cycles == 6 and report.integrity == "ok"
    assert report.jobs_acknowledged > 45 and report.jobs_lost == 0
    assert report.jobs_duplicated == 0
    # the crashes really cut work short: some jobs were requeued by a restart, and run again
    assert report.jobs_rerun_after_crash + report.requests_unanswered > 0


@pytest.mark.timeout(240)
async def test_fifty_workflows_each_end_once_across_kills(tmp_path: Path) -> None:
    options = Options(run_for_s=(0.2, 0.5), seed=3)
    report = await run_workflows(50, options, tmp_path, pause_s=(0.0, 0.02))
    print_workflows_report(report)  # shown when it fails
    assert report.problems == []
    assert report.kills >= 2
    assert report.workflows_stored >= report.workflows_acknowledged > 40
    assert report.releases >= report.workflows_stored  # each workflow let one go, at least
