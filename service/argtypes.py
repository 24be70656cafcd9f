"""Arguments checked against the task's annotations when a job is submitted.

A task's arguments arrive as JSON and reach the task as they are (nothing is converted), so a
value passes only if it already is what the annotation says: ``1`` for ``int`` and for ``float``,
never ``"1"`` or ``1.0`` for ``int``. Parameters without an annotation, with ``Any``, or with one
pydantic cannot check (a class of the task's own) are not checked. Only the service imports this
module: workers never load pydantic for it.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterator
from typing import Any

import orjson
import pydantic

Check = Callable[[Any], str | None]  # a value → what is wrong with it, or None

_checks: dict[tuple[Callable[..., Any], str], Check | None] = {}


def type_problems(fn: Callable[..., Any], bound: inspect.BoundArguments) -> list[dict[str, str]]:
    """``{"field": parameter, "message": problem}`` for each bound value its annotation refuses."""
    problems = []
    for name, value in _values(bound):
        check = _check_of(fn, bound.signature.parameters[name])
        message = None if check is None else check(value)
        if message is not None:
            problems.append({"field": name, "message": message})
    return problems


def _values(bound: inspect.BoundArguments) -> Iterator[tuple[str, Any]]:
    for name, value in bound.arguments.items():
        kind = bound.signature.parameters[name].kind
        if kind is inspect.Parameter.VAR_POSITIONAL:
            yield from ((name, item) for item in value)  # the annotation is each one's
        elif kind is inspect.Parameter.VAR_KEYWORD:
            yield from ((name, item) for item in value.values())
        else:
            yield name, value


def _check_of(fn: Callable[..., Any], param: inspect.Parameter) -> Check | None:
    key = (fn, param.name)
    if key not in _checks:
        _checks[key] = _make_check(fn, param.annotation)
    return _checks[key]


def _make_check(fn: Callable[..., Any], annotation: Any) -> Check | None:
    if annotation is inspect.Parameter.empty or annotation is Any or annotation == "Any":
        return None
    if isinstance(annotation, str):  # postponed: resolved where the task was written
        try:
            # what typing.get_type_hints does, one parameter at a time
            annotation = eval(annotation, getattr(fn, "__globals__", {}))
        except Exception:  # a name only a type checker knows: leave it unchecked
            return None
    try:
        adapter: pydantic.TypeAdapter[Any] = pydantic.TypeAdapter(annotation)
    except Exception:  # not a type pydantic knows how to check
        return None

    def check(value: Any) -> str | None:
        try:
            # as JSON, strictly: arrays pass for tuples, ints for floats, and nothing converts
            adapter.validate_json(orjson.dumps(value), strict=True)
        except pydantic.ValidationError as exc:
            error = exc.errors(include_url=False)[0]
            where = ".".join(str(part) for part in error["loc"])
            return f"{error['msg']}{f' (at {where})' if where else ''}, got {_shown(value)}"
        return None

    return check


def _shown(value: Any) -> str:
    text = orjson.dumps(value).decode()
    return text if len(text) <= 60 else text[:57] + "..."
