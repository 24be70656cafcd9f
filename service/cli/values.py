"""How the command line spells a task's arguments: JSON where it parses, else text."""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

import click


def value(text: str) -> Any:
    """``2`` is a number, ``true`` a bool, ``[1, 2]`` a list, ``'"2"'`` the text 2; anything
    that is not JSON (``hello``, ``2026-12-24``) is taken as the text it is."""
    try:
        # the standard parser: a whole number of any size stays one (the service then refuses
        # what it cannot store, rather than a float taking its place), and NaN is text
        return json.loads(text, parse_constant=_not_json)
    except ValueError:
        return text


def _not_json(constant: str) -> Any:
    raise ValueError(f"{constant} is not JSON")


def keywords(pairs: Iterable[str]) -> dict[str, Any]:
    """``--kw NAME=VALUE`` options as keyword arguments; UsageError for one without a name."""
    kwargs: dict[str, Any] = {}
    for pair in pairs:
        name, sep, text = pair.partition("=")
        if not sep or not name.isidentifier():
            raise click.UsageError(f"--kw expects NAME=VALUE with a parameter's name, got {pair!r}")
        kwargs[name] = value(text)
    return kwargs
