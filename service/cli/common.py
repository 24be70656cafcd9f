"""What the commands share: the command's client, ``--json``, and the job option flags."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, TypeVar, cast

import click

from ..client import Client
from ..client.options import OptionFields
from ..jobs import MAX_PRIORITY

F = TypeVar("F", bound=Callable[..., Any])


def _seconds(zero: bool) -> Callable[[click.Context, click.Parameter, float | None], Any]:
    def check(ctx: click.Context, param: click.Parameter, value: float | None) -> float | None:
        if value is None:
            return None
        if not math.isfinite(value) or value < 0 or (value == 0 and not zero):
            least = ">= 0" if zero else "> 0"
            raise click.BadParameter(f"{value!r} is not a finite number of seconds {least}")
        return value

    return check


def seconds_option(*names: str, zero: bool = False, help: str) -> Callable[[F], F]:
    """A duration flag: a finite number of seconds > 0 (or >= 0 with ``zero``)."""
    return click.option(*names, type=float, callback=_seconds(zero), metavar="SECONDS", help=help)


def client() -> Client:
    """The command's client, closed when the command ends."""
    ctx = click.get_current_context()
    made = Client(ctx.obj["url"], ctx.obj["token"])
    ctx.call_on_close(made.close)
    return made


def json_option(fn: F) -> F:
    return click.option("--json", "as_json", is_flag=True, help="Print JSON, for scripts.")(fn)


def job_option_flags(fn: F) -> F:
    """The job options of ``POST /jobs`` as flags, named as the API names them."""
    flags = [
        click.option(
            "--priority",
            type=click.IntRange(-MAX_PRIORITY, MAX_PRIORITY),
            help="Higher starts first.",
        ),
        click.option("--queue", help="The queue whose limit applies."),
        seconds_option("--timeout-s", help="Kill the job after this long."),
        seconds_option("--soft-timeout-s", help="Raise SoftTimeout in it first."),
        click.option("--max-retries", type=click.IntRange(0), help="Failures to retry."),
        seconds_option("--retry-backoff-s", help="The first retry's wait."),
        seconds_option("--retry-backoff-max-s", help="The longest wait."),
        click.option("--retry-on", multiple=True, help="An error type worth a retry (repeat)."),
        click.option("--memory-limit-mb", type=click.IntRange(1), help="What it may allocate."),
    ]
    for flag in reversed(flags):
        fn = flag(fn)
    return fn


def options_from(flags: dict[str, Any]) -> OptionFields:
    """The options given on the command line (those left out come from the task)."""
    names = OptionFields.__optional_keys__ | OptionFields.__required_keys__
    chosen = {k: v for k, v in flags.items() if k in names and v not in (None, ())}
    return cast(OptionFields, chosen)
