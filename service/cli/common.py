"""What the commands share: the command's client, ``--json``, and the job option flags."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, TypeVar, cast

import click

from ..client import Client
from ..client.options import OptionFields
from ..options import RULES

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


def _by_rule(name: str) -> Callable[[click.Context, click.Parameter, Any], Any]:
    rule = RULES[name]

    def check(ctx: click.Context, param: click.Parameter, value: Any) -> Any:
        if value in (None, ()):
            return None
        if not rule.allows(list(value) if isinstance(value, tuple) else value):
            raise click.BadParameter(f"must be {rule.expects()}, got {value!r}")
        return value

    return check


# each option's flag: its metavar and how click reads it; what it may be is the option's rule
_FLAG_TYPES: dict[str, tuple[str, Any]] = {"seconds": ("SECONDS", float), "whole": ("N", int)}


def job_option_flags(fn: F) -> F:
    """The job options of ``POST /jobs`` as flags, named as the API names them, each checked
    by its rule (``service.options.RULES``)."""
    for name in reversed(RULES):
        rule = RULES[name]
        flag = "--" + name.replace("_", "-")
        help_text = rule.description[0].upper() + rule.description[1:] + "."
        if rule.kind == "error types":
            option = click.option(
                flag, multiple=True, callback=_by_rule(name), metavar="TYPE",
                help="An error type worth a retry (repeat).",
            )  # fmt: skip
        elif rule.kind in ("queue", "rate"):
            metavar = "NAME" if rule.kind == "queue" else "RATE"
            option = click.option(flag, callback=_by_rule(name), metavar=metavar, help=help_text)
        else:
            metavar, kind = _FLAG_TYPES[rule.kind]
            option = click.option(
                flag, type=kind, callback=_by_rule(name), metavar=metavar, help=help_text
            )
        fn = option(fn)
    return fn


def options_from(flags: dict[str, Any]) -> OptionFields:
    """The options given on the command line (those left out come from the task)."""
    names = OptionFields.__optional_keys__ | OptionFields.__required_keys__
    chosen = {k: v for k, v in flags.items() if k in names and v not in (None, ())}
    return cast(OptionFields, chosen)
