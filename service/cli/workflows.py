"""``conveyor workflow``: a workflow's state and jobs, waited for, or canceled."""

from __future__ import annotations

import sys

import click
from rich.markup import escape

from ..client import WorkflowInfo
from . import render
from .common import client, json_option, seconds_option

EXIT_WORKFLOW_FAILED = 1  # as a waited-for job's


@click.group()
def workflow() -> None:
    """Read, wait for and cancel workflows (chains and groups of jobs)."""


@workflow.command("status")
@click.argument("workflow_id")
@click.option("--wait", is_flag=True, help="Wait for its end; exit by its outcome.")
@seconds_option("--timeout-s", help="With --wait: give up after this long (exit 124).")
@json_option
def status(workflow_id: str, wait: bool, timeout_s: float | None, as_json: bool) -> None:
    """WORKFLOW_ID's state, its jobs and, once it has succeeded, its result."""
    handle = client().workflow(workflow_id)
    info = handle.wait(timeout_s) if wait else handle.status()
    _show(info, as_json)
    if wait and info.state != "succeeded":
        sys.exit(EXIT_WORKFLOW_FAILED)


@workflow.command("cancel")
@click.argument("workflow_id")
@json_option
def cancel(workflow_id: str, as_json: bool) -> None:
    """Cancel every job of WORKFLOW_ID that has not finished, running ones too."""
    _show(client().workflow(workflow_id).cancel(), as_json)


def _show(info: WorkflowInfo, as_json: bool) -> None:
    if as_json:
        render.emit_json(info.raw)
        return
    render.out.print(f"workflow {escape(info.id)}: {info.state}")
    if info.state == "succeeded":
        render.out.print(f"result: {escape(render.compact(info.result, 200))}")
    render.out.print(render.job_table(info.jobs))
