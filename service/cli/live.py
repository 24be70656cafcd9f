"""Live views from a stream: a line per state change and log line, a bar per running job.

On a terminal the bars are drawn with rich and the lines are printed above them; elsewhere
(a pipe, a CI log) only the lines are written, so nothing redraws into a file.
"""

from __future__ import annotations

from collections.abc import Iterable
from types import TracebackType

from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    Progress,
    TaskID,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
)

from ..client import Event, ProgressEvent, StateEvent
from ..jobs import Job, JobState
from ..jobs import Progress as JobProgress
from .render import event_lines, short


class JobBars:
    """A bar for each running job, with lines printed above them."""

    def __init__(self, console: Console, *, with_job: bool = True) -> None:
        self.console = console
        self.with_job = with_job
        self._bars: dict[str, TaskID] = {}
        self._progress: Progress | None = None
        if console.is_terminal:
            self._progress = Progress(
                TextColumn("{task.description}"), BarColumn(), TaskProgressColumn(),
                TextColumn("{task.fields[message]}"), TimeElapsedColumn(),
                console=console, transient=True,
            )  # fmt: skip

    def __enter__(self) -> JobBars:
        if self._progress is not None:
            self._progress.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._progress is not None:
            self._progress.stop()

    def print(self, line: str) -> None:
        self.console.print(line)  # rich keeps it above the live bars

    def show(self, job_id: str, task: str, progress: JobProgress | None = None) -> None:
        """Draw (or move) the bar of a running job."""
        if self._progress is None:
            return
        total = None if progress is None or not progress.total else progress.total
        done = 0.0 if progress is None else progress.done
        message = escape((progress.message or "") if progress else "")
        bar = self._bars.get(job_id)
        if bar is None:
            label = f"{short(job_id)} {escape(task)}" if self.with_job else escape(task)
            bar = self._progress.add_task(label, total=total, message=message)
            self._bars[job_id] = bar
        self._progress.update(bar, total=total, completed=done, message=message)

    def drop(self, job_id: str) -> None:
        bar = self._bars.pop(job_id, None)
        if bar is not None and self._progress is not None:
            self._progress.remove_task(bar)

    def running(self, jobs: Iterable[Job]) -> None:
        """Bars for the jobs already running when the view opens."""
        for job in jobs:
            self.show(job.id, job.task, job.progress)

    def apply(self, event: Event) -> None:
        """Show one event: its lines above, and the bars it changes."""
        for line in event_lines(event, with_job=self.with_job):
            self.print(line)
        match event:
            case StateEvent(state=JobState.RUNNING):
                self.show(event.job_id, event.task)
            case StateEvent():
                self.drop(event.job_id)
            case ProgressEvent():
                self.show(event.job_id, event.task, event.progress)
