"""``conveyor schedules``: list, show, add, pause, resume and delete periodic jobs."""

from __future__ import annotations

from typing import Any

import click
from rich.markup import escape

from . import render
from .common import client, job_option_flags, json_option, options_from
from .values import keywords, value


@click.group()
def schedules() -> None:
    """List, add, pause, resume and delete schedules (periodic jobs)."""


@schedules.command("list")
@json_option
def list_schedules(as_json: bool) -> None:
    """Every schedule, with its next run."""
    listed = client().schedules.list()
    if as_json:
        render.emit_json([s.data for s in listed])
    else:
        render.out.print(render.schedule_table(listed))


@schedules.command("show")
@click.argument("schedule_id")
@json_option
def show_schedule(schedule_id: str, as_json: bool) -> None:
    """One schedule."""
    found = client().schedules.get(schedule_id)
    if as_json:
        render.emit_json(found.data)
    else:
        render.out.print(render.schedule_table([found]))


@schedules.command("add")
@click.argument("task")
@click.argument("cron")
@click.argument("args", nargs=-1)
@click.option("--kw", "kws", multiple=True, metavar="NAME=VALUE", help="A keyword argument.")
@click.option("--id", "schedule_id", help="Its id (letters, digits, '.', '_', '-').")
@job_option_flags
@json_option
def add_schedule(
    task: str, cron: str, args: tuple[str, ...], kws: tuple[str, ...], schedule_id: str | None,
    as_json: bool, **flags: Any,
) -> None:  # fmt: skip
    """Run TASK with ARGS at every tick of CRON ("*/5 * * * *", "@hourly")."""
    made = client().schedules.create(
        task, cron, args=[value(a) for a in args], kwargs=keywords(kws),
        schedule_id=schedule_id, **options_from(flags),
    )  # fmt: skip
    if as_json:
        render.emit_json(made.data)
    else:
        render.out.print(f"schedule {escape(made.id)}: next run {render.moment(made.next_run_at)}")


@schedules.command("pause")
@click.argument("schedule_id")
@json_option
def pause_schedule(schedule_id: str, as_json: bool) -> None:
    """Make no jobs until resumed (a paused schedule stays paused)."""
    paused = client().schedules.pause(schedule_id)
    if as_json:
        render.emit_json(paused.data)
    else:
        render.out.print(f"schedule {escape(paused.id)} paused")


@schedules.command("resume")
@click.argument("schedule_id")
@json_option
def resume_schedule(schedule_id: str, as_json: bool) -> None:
    """Make jobs again from the next tick; the ticks passed while paused make none."""
    resumed = client().schedules.resume(schedule_id)
    if as_json:
        render.emit_json(resumed.data)
    else:
        render.out.print(
            f"schedule {escape(resumed.id)} resumed: next run {render.moment(resumed.next_run_at)}"
        )


@schedules.command("delete")
@click.argument("schedule_id")
def delete_schedule(schedule_id: str) -> None:
    """Delete a schedule made over the API (its jobs stay)."""
    client().schedules.delete(schedule_id)
    render.out.print(f"schedule {escape(schedule_id)} deleted")
