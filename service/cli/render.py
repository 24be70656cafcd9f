"""How the command shows things to a person: tables, a job's fields, one line per event.

Colours only on a terminal (rich decides, and honours ``NO_COLOR``); ``--json`` output is
written elsewhere (``emit_json``) and never styled.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterable
from typing import Any, TextIO

import orjson
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from ..client import Event, LogEvent, ProgressEvent, PrunedEvent, ScheduleInfo, StateEvent, TaskInfo
from ..jobs import Job, JobState
from ..logs import LogEntry

STATE_STYLES = {
    JobState.WAITING: "blue",
    JobState.SCHEDULED: "magenta",
    JobState.QUEUED: "cyan",
    JobState.RUNNING: "yellow",
    JobState.SUCCEEDED: "green",
    JobState.FAILED: "red",
    JobState.CANCELED: "bright_black",
}


class OutputClosed(Exception):
    """The reader of the output has gone (``conveyor watch | head``): stop, which is no error."""


class _Console(Console):
    def on_broken_pipe(self) -> None:
        raise OutputClosed


def _console(stream: TextIO, *, stderr: bool) -> Console:
    # on a terminal rich follows its width; into a pipe or a file, rows are not wrapped. No
    # emoji codes: ":fire:" in a job's output is text, as the job wrote it
    width = None if stream.isatty() else 1000
    return _Console(stderr=stderr, highlight=False, soft_wrap=True, width=width, emoji=False)


out = _console(sys.stdout, stderr=False)
err = _console(sys.stderr, stderr=True)


def emit_json(body: Any) -> None:
    write(orjson.dumps(body, option=orjson.OPT_INDENT_2).decode() + "\n")


def emit_json_line(body: Any) -> None:
    """One JSON document per line (a stream of them, for ``jq`` or a log shipper)."""
    write(orjson.dumps(body).decode() + "\n")


def write(text: str) -> None:
    """Text on stdout as it is: no markup, no wrapping, nothing cut (a result, a document)."""
    try:
        sys.stdout.write(text)
        sys.stdout.flush()
    except BrokenPipeError:
        raise OutputClosed from None


def short(job_id: str) -> str:
    return job_id[:8]


def moment(epoch_s: float | None) -> str:
    if epoch_s is None:
        return "-"
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(epoch_s))


def clock(epoch_s: float) -> str:
    return time.strftime("%H:%M:%S", time.localtime(epoch_s))


def state(value: JobState) -> str:
    return f"[{STATE_STYLES.get(value, 'default')}]{value.value}[/]"


def compact(value: Any, limit: int = 60) -> str:
    text = orjson.dumps(value).decode()
    return text if len(text) <= limit else text[: limit - 1] + "…"


def percent(job: Job) -> str:
    progress = job.progress
    if progress is None or not progress.total:
        return "-" if progress is None else f"{progress.done:g}"
    return f"{100 * progress.done / progress.total:.0f}%"


def job_summary(job: Job) -> str:
    return f"job {job.id} {state(job.state)} ({escape(job.task)})"


def job_details(job: Job) -> None:
    rows: list[tuple[str, str]] = [
        ("id", job.id),
        ("task", escape(job.task)),
        ("state", state(job.state)),
        ("args", escape(compact(job.args, 200))),
        ("kwargs", escape(compact(job.kwargs, 200))),
        ("attempt", str(job.attempt)),
        ("created", moment(job.created_at)),
        ("started", moment(job.started_at)),
        ("finished", moment(job.finished_at)),
    ]
    if job.scheduled_at is not None:
        rows.append(("scheduled", moment(job.scheduled_at)))
    if job.key is not None:
        rows.append(("key", escape(job.key)))
    if job.progress is not None:
        message = job.progress.message or ""
        rows.append(("progress", escape(f"{percent(job)} {message}".strip())))
    if job.state is JobState.SUCCEEDED:
        rows.append(("result", escape(compact(job.result, 400))))
    if job.error is not None:
        rows.append(("error", escape(f"{job.error.type}: {job.error.message}")))
    width = max(len(name) for name, _ in rows)
    for name, text in rows:
        out.print(f"[bold]{name.ljust(width)}[/]  {text}")


def job_table(jobs: Iterable[Job]) -> Table:
    table = Table(box=None, pad_edge=False, header_style="bold")
    table.add_column("id", no_wrap=True, min_width=36)  # whole: it is what other commands take
    for column in ("task", "state", "progress", "created", "error"):
        table.add_column(column)
    for job in jobs:
        error = "" if job.error is None else f"{job.error.type}: {job.error.message}"
        table.add_row(
            job.id, escape(job.task), state(job.state), percent(job), moment(job.created_at),
            escape(error[:60]),
        )  # fmt: skip
    return table


def task_table(tasks: Iterable[TaskInfo]) -> Table:
    table = Table(box=None, pad_edge=False, header_style="bold")
    for column in ("task", "parameters", "cron", "doc"):
        table.add_column(column)
    for info in tasks:
        params = ", ".join(
            p.name + ("" if p.type is None else f": {p.type}") + ("" if p.required else "?")
            for p in info.params
        )
        first_line = (info.doc or "").strip().splitlines()[:1]
        table.add_row(
            escape(info.name), escape(params), info.cron or "", escape("".join(first_line))
        )
    return table


def schedule_table(schedules: Iterable[ScheduleInfo]) -> Table:
    table = Table(box=None, pad_edge=False, header_style="bold")
    for column in ("id", "task", "cron", "next run", "last run", "state", "source"):
        table.add_column(column)
    for s in schedules:
        table.add_row(
            escape(s.id), escape(s.task), escape(s.cron), moment(s.next_run_at),
            moment(s.last_run_at), "paused" if s.paused else "active", s.source,
        )  # fmt: skip
    return table


def log_line(job_id: str | None, entry: LogEntry) -> str:
    where = "" if job_id is None else f"{short(job_id)} "
    level = "" if entry.level is None else f"{entry.level} "
    style = "red" if entry.stream == "stderr" or entry.level in ("ERROR", "CRITICAL") else "dim"
    return f"[{style}]{clock(entry.at)} {where}{entry.stream}[/] {escape(level + entry.text)}"


def event_lines(event: Event, *, with_job: bool = True) -> list[str]:
    """What ``watch`` prints for an event (progress is drawn as bars, not printed)."""
    match event:
        case StateEvent():
            where = f"{short(event.job_id)} {escape(event.task)} " if with_job else ""
            came = "new → " if event.previous is None else f"{event.previous.value} → "
            line = f"{clock(event.at)} {where}{came}{state(event.state)}"
            if event.state is JobState.RUNNING:
                line += f" (attempt {event.attempt})"
            if event.error is not None:
                line += f" [red]{escape(event.error.type)}: {escape(event.error.message)}[/]"
            return [line]
        case LogEvent():
            return [log_line(event.job_id if with_job else None, e) for e in event.entries]
        case PrunedEvent():
            removed = sum(int(r.get("jobs", 0)) for r in event.removed)
            return [f"{clock(event.at)} [dim]retention removed {removed} finished job(s)[/]"]
        case ProgressEvent():
            return []
        case _:
            return [f"[dim]{escape(event.kind)} {escape(compact(event.data, 200))}[/]"]


def event_json(event: Event) -> dict[str, Any]:
    return {"id": event.id, "event": event.kind, "data": event.data}
