"""The ``conveyor`` command: the service from a terminal, and ``conveyor serve`` to run it.

Exit codes: 0 done; 1 a waited-for job failed or was canceled; 2 a usage error (click's);
3 the service refused the request or could not be reached; 124 a wait ran out of time;
130 interrupted (Ctrl-C).
"""

from __future__ import annotations

import sys
from importlib import resources
from typing import Any

import click
import orjson
from rich.markup import escape

from ..client import JobHandle
from ..client.settings import VERSION
from ..jobs import Job, JobState
from ..wire import job_json
from . import render
from .common import client, job_option_flags, json_option, options_from, seconds_option
from .live import JobBars
from .schedules import schedules
from .values import keywords, value
from .workflows import workflow

EXIT_JOB_FAILED = 1
EXIT_TIMEOUT = 124
EXIT_SERVE_FAILED = 3


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(VERSION, prog_name="conveyor")
@click.option(
    "--url", envvar="CONVEYOR_URL", default="http://127.0.0.1:8000", show_default=True,
    help="The service (or CONVEYOR_URL).",
)  # fmt: skip
@click.option("--token", envvar="CONVEYOR_TOKEN", help="Its token (or CONVEYOR_TOKEN).")
@click.pass_context
def cli(ctx: click.Context, url: str, token: str | None) -> None:
    """Conveyor from the terminal: submit, watch, wait for and stop jobs."""
    ctx.obj = {"url": url, "token": token}


# -- submit, wait, result -----------------------------------------------------------------------


@cli.command()
@click.argument("task")
@click.argument("args", nargs=-1)
@click.option("--kw", "kws", multiple=True, metavar="NAME=VALUE", help="A keyword argument.")
@job_option_flags
@seconds_option("--delay-s", zero=True, help="Run no sooner than this from now.")
@click.option("--run-at", help="Run no sooner than this ISO-8601 time (UTC if it names no zone).")
@click.option("--key", help="While a job with this key is unfinished, return it instead.")
@click.option("--idempotency-key", help="A retried submit returns the first one's job.")
@click.option("--wait", is_flag=True, help="Follow the job to its end; exit by its outcome.")
@seconds_option("--wait-timeout-s", help="With --wait: give up waiting after this.")
@json_option
def submit(
    task: str, args: tuple[str, ...], kws: tuple[str, ...], wait: bool,
    wait_timeout_s: float | None, as_json: bool, **flags: Any,
) -> None:  # fmt: skip
    """Submit a job of TASK with ARGS (each read as JSON if it parses, else as text).

    Example: conveyor submit service.demo.add 2 3 --wait
    """
    kwargs = keywords(kws)
    submitter = client().with_options(**options_from(flags))
    handle = submitter.submit(task, *(value(a) for a in args), **kwargs)
    if not wait:
        job = handle.submitted or handle.status()
        render.emit_json(job_json(job)) if as_json else render.out.print(render.job_summary(job))
        return
    if not as_json:
        made = "submitted" if handle.created is not False else "found (its key)"
        render.err.print(f"{made} job {handle.id} ({escape(task)})")
    finish(handle, wait_timeout_s, as_json)


@cli.command()
@click.argument("job_id")
@seconds_option("--timeout-s", help="Give up waiting after this long.")
@json_option
def result(job_id: str, timeout_s: float | None, as_json: bool) -> None:
    """Wait for a job's end and print its result; exit 1 if it failed or was canceled."""
    finish(client().job(job_id), timeout_s, as_json, quiet=True)


def finish(
    handle: JobHandle[Any], timeout_s: float | None, as_json: bool, *, quiet: bool = False
) -> None:
    """Follow the job to its end (bars and log lines on stderr unless ``quiet`` or JSON),
    print its outcome and exit by it."""
    try:
        if as_json or quiet:
            job = handle.wait(timeout_s)
        else:
            with JobBars(render.err, with_job=False) as bars:
                for event in handle.events(timeout_s=timeout_s):
                    bars.apply(event)
            job = handle.status()
    except KeyboardInterrupt:
        # only the wait ends: say how to reach the job that goes on
        render.err.print(f"job {handle.id} goes on; stop it with: conveyor cancel {handle.id}")
        raise
    print_outcome(job, as_json)
    if job.state is not JobState.SUCCEEDED:
        sys.exit(EXIT_JOB_FAILED)


def print_outcome(job: Job, as_json: bool) -> None:
    if as_json:
        render.emit_json(job_json(job))
    elif job.state is JobState.SUCCEEDED:
        render.write(orjson.dumps(job.result).decode() + "\n")  # whole, as JSON: for pipes
    elif job.error is not None:
        render.err.print(
            f"job {job.id} {render.state(job.state)}: "
            f"{escape(job.error.type)}: {escape(job.error.message)}"
        )
        if job.error.traceback:
            render.err.print(f"[dim]{escape(job.error.traceback.rstrip())}[/]")
    else:
        render.err.print(f"job {job.id} {render.state(job.state)}")


# -- one job ------------------------------------------------------------------------------------


@cli.command()
@click.argument("job_id")
@json_option
def status(job_id: str, as_json: bool) -> None:
    """Show a job: its state, progress, result or error."""
    job = client().job(job_id).status()
    render.emit_json(job_json(job)) if as_json else render.job_details(job)


@cli.command()
@click.argument("job_id")
@json_option
def cancel(job_id: str, as_json: bool) -> None:
    """Cancel a job, also while it runs (its processes are gone when this returns)."""
    job = client().cancel(job_id)
    render.emit_json(job_json(job)) if as_json else render.out.print(render.job_summary(job))


@cli.command()
@click.argument("job_id")
@json_option
def retry(job_id: str, as_json: bool) -> None:
    """Run a failed or canceled job again."""
    job = client().retry(job_id)
    render.emit_json(job_json(job)) if as_json else render.out.print(render.job_summary(job))


@cli.command()
@click.argument("job_id")
@click.option("--tail", type=int, help="Only the last N entries.")
@click.option("--follow", "-f", is_flag=True, help="Then print new lines until the job ends.")
@json_option
def logs(job_id: str, tail: int | None, follow: bool, as_json: bool) -> None:
    """Print what a job wrote (stdout, stderr, logging)."""
    if follow and tail is not None:
        raise click.UsageError("--tail and --follow go separately: --follow prints every line")
    handle = client().job(job_id)
    if not follow:
        page = handle.logs(tail)
        if as_json:
            render.emit_json({"job_id": page.job_id, "entries": [e.as_json() for e in page.entries],
                              "dropped": page.dropped})  # fmt: skip
            return
        for entry in page.entries:
            render.out.print(render.log_line(None, entry))
        return
    from ..client import LogEvent

    for event in handle.events():
        if isinstance(event, LogEvent):
            for entry in event.entries:
                if as_json:
                    render.emit_json_line(entry.as_json())
                else:
                    render.out.print(render.log_line(None, entry))


# -- many jobs ----------------------------------------------------------------------------------


@cli.command()
@click.option("--state", help="Only jobs in these states (comma-separated).")
@click.option("--task", help="Only jobs of this task.")
@click.option("--queue", help="Only jobs of this queue.")
@click.option("--search", help="Only jobs whose arguments hold this text.")
@click.option("--schedule", "schedule_id", metavar="ID", help="Only jobs this schedule made.")
@click.option("--limit", type=click.IntRange(1), default=20, show_default=True)
@json_option
def jobs(
    state: str | None, task: str | None, queue: str | None, search: str | None,
    schedule_id: str | None, limit: int, as_json: bool,
) -> None:  # fmt: skip
    """List jobs, newest first."""
    listed = client().jobs(
        state=state, task=task, queue=queue, text=search, schedule_id=schedule_id,
        page_size=min(limit, 1000),
    )  # fmt: skip
    found = [job for _, job in zip(range(limit), listed, strict=False)]
    if as_json:
        render.emit_json([job_json(j) for j in found])
    else:
        render.out.print(render.job_table(found))


@cli.command()
@json_option
def tasks(as_json: bool) -> None:
    """List the tasks the service serves."""
    served = client().tasks()
    if as_json:
        render.emit_json([t.data for t in served])  # the API's own description
    else:
        render.out.print(render.task_table(served))


@cli.command()
@click.argument("job_id", required=False)
@json_option
def watch(job_id: str | None, as_json: bool) -> None:
    """Follow every job live (or one, until it ends): state changes, progress, logs."""
    conveyor = client()
    if job_id is not None:
        events = conveyor.job(job_id).events()
    else:
        # from a known position, then the jobs running as of it: none ends unseen in between
        position = int(conveyor.stats()["event_id"])
        running = list(conveyor.jobs(state="running"))
        events = conveyor.events(after_id=position)
    if as_json:
        for event in events:
            render.emit_json_line(render.event_json(event))
        return
    with JobBars(render.out) as bars:
        if job_id is None:
            bars.running(running)
        for event in events:
            bars.apply(event)


cli.add_command(schedules)
cli.add_command(workflow)


# -- the service --------------------------------------------------------------------------------


@cli.command()
@click.option(
    "--config", "config_path", type=click.Path(exists=True, dir_okay=False),
    help="A hypercorn.toml of your own (default: the one Conveyor ships).",
)  # fmt: skip
@click.option("--bind", multiple=True, help="Where to listen, e.g. 0.0.0.0:8000 (repeat).")
def serve(config_path: str | None, bind: tuple[str, ...]) -> None:
    """Run the service (hypercorn with Conveyor's hypercorn.toml and the CONVEYOR_* settings)."""
    from hypercorn.config import Config
    from hypercorn.run import run

    try:
        if config_path is None:
            with resources.as_file(resources.files("service") / "hypercorn.toml") as path:
                config = Config.from_toml(path)
        else:
            config = Config.from_toml(config_path)
        if bind:
            config.bind = list(bind)
        config.application_path = "service.app:create_app()"
        code = run(config)
    except (OSError, ValueError, TypeError) as exc:  # a busy port, a bad bind or config file
        print(f"conveyor: cannot serve: {exc}", file=sys.stderr)
        sys.exit(EXIT_SERVE_FAILED)
    sys.exit(code)
