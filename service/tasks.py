"""The ``@task`` decorator, the registry it fills and the loading of task modules.

Imported by worker processes too, so it stays free of anything heavy.
"""

from __future__ import annotations

import importlib
import inspect
import os
import sys
import traceback
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, ParamSpec, TypeVar, overload

from .errors import InvalidArguments, TaskLoadError, UnknownTask
from .options import JobOptions
from .taskfn import TaskFunction, task_function

P = ParamSpec("P")
T = TypeVar("T")

_MISSING = object()


@dataclass(frozen=True, slots=True)
class Task:
    """A registered task: a plain function or coroutine function with a unique name."""

    name: str
    fn: Callable[..., Any]
    signature: inspect.Signature  # read once: every submit binds against it
    options: JobOptions = field(default_factory=JobOptions)  # defaults for its jobs
    concurrency: int | None = None  # how many of its jobs may run at once; None: no limit
    cron: str | None = None  # run (with no arguments) at every tick of this cron expression

    @property
    def is_async(self) -> bool:
        return inspect.iscoroutinefunction(self.fn)

    def check_arguments(
        self, args: list[Any], kwargs: dict[str, Any], *, takes_input: bool = False
    ) -> None:
        """Raise InvalidArguments unless ``fn(*args, **kwargs)`` would bind, with values of the
        types the parameters are annotated with (see ``service.argtypes``). ``takes_input``:
        a first argument comes later (a workflow's step, given the results before it), so
        only its place is checked."""
        first = [_INPUT] if takes_input else []
        try:
            bound = self.signature.bind(*first, *args, **kwargs)
        except TypeError as exc:
            problems = [str(exc)]
            unexpected = self._unexpected_keywords(kwargs)
            if unexpected and "unexpected keyword" not in problems[0]:  # bind names one problem
                problems.append(
                    f"unexpected keyword argument(s) {', '.join(map(repr, unexpected))}"
                )
            fields = [
                {"field": name, "message": "required"}
                for name in self._missing([*first, *args], kwargs)
            ]
            fields += [{"field": name, "message": "not a parameter"} for name in unexpected]
            raise InvalidArguments(self.name, "; ".join(problems), fields) from None
        from .argtypes import type_problems  # here: workers never need pydantic for this

        if takes_input:  # what the input will be is not known yet: its value goes unchecked
            name, values = next(iter(bound.arguments.items()))
            if isinstance(values, tuple):  # gathered by *args
                bound.arguments[name] = values[1:]
            else:
                del bound.arguments[name]
        fields = type_problems(self.fn, bound)
        if fields:
            reason = "; ".join(f"{f['field']}: {f['message']}" for f in fields)
            raise InvalidArguments(self.name, reason, fields)

    def _missing(self, args: list[Any], kwargs: dict[str, Any]) -> list[str]:
        """The required parameters that neither ``args`` nor ``kwargs`` give a value."""
        missing = []
        for index, param in enumerate(self.signature.parameters.values()):
            if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
                continue
            positional = param.kind is not param.KEYWORD_ONLY and index < len(args)
            if param.default is param.empty and not positional and param.name not in kwargs:
                missing.append(param.name)
        return missing

    def _unexpected_keywords(self, kwargs: dict[str, Any]) -> list[str]:
        params = self.signature.parameters
        if any(p.kind is p.VAR_KEYWORD for p in params.values()):
            return []
        return [
            key
            for key in kwargs
            if key not in params or params[key].kind is inspect.Parameter.POSITIONAL_ONLY
        ]

    def describe(self) -> dict[str, Any]:
        """The task as ``GET /tasks`` shows it: name, docstring, parameters."""
        doc = inspect.getdoc(self.fn)
        return {
            "name": self.name,
            "doc": doc,
            "is_async": self.is_async,
            "options": self.options.as_dict(),
            "concurrency": self.concurrency,
            "cron": self.cron,
            "params": [_describe_param(p) for p in self.signature.parameters.values()],
        }


def _describe_param(param: inspect.Parameter) -> dict[str, Any]:
    described: dict[str, Any] = {
        "name": param.name,
        "kind": param.kind.name.lower(),
        "type": _annotation_text(param.annotation),
        "required": param.default is inspect.Parameter.empty
        and param.kind not in (param.VAR_POSITIONAL, param.VAR_KEYWORD),
    }
    if param.default is not inspect.Parameter.empty and _is_json_value(param.default):
        described["default"] = param.default
    return described


def _annotation_text(annotation: Any) -> str | None:
    if annotation is inspect.Parameter.empty:
        return None
    if isinstance(annotation, str):  # postponed annotations stay text
        return annotation
    if isinstance(annotation, type):
        return annotation.__qualname__
    return str(annotation).replace("typing.", "")


def _is_json_value(value: Any) -> bool:
    if value is None or isinstance(value, str | int | float | bool):
        return True
    if isinstance(value, list | tuple):
        return all(_is_json_value(v) for v in value)
    if isinstance(value, dict):
        return all(isinstance(k, str) and _is_json_value(v) for k, v in value.items())
    return False


# Filled by @task as modules are imported; one per process, like a logging registry.
_registry: dict[str, Task] = {}


@overload
def task(fn: Callable[P, T], /) -> TaskFunction[P, T]: ...
@overload
def task(
    *,
    name: str | None = None,
    timeout_s: float | None = None,
    soft_timeout_s: float | None = None,
    max_retries: int | None = None,
    retry_backoff_s: float | None = None,
    retry_backoff_max_s: float | None = None,
    retry_on: Iterable[str | type[BaseException]] | None = None,
    priority: int | None = None,
    queue: str | None = None,
    concurrency: int | None = None,
    cron: str | None = None,
    memory_limit_mb: int | None = None,
    rate_limit: str | None = None,
) -> Callable[[Callable[P, T]], TaskFunction[P, T]]: ...
def task(
    fn: Callable[..., Any] | None = None,
    /,
    *,
    name: str | None = None,
    timeout_s: float | None = None,
    soft_timeout_s: float | None = None,
    max_retries: int | None = None,
    retry_backoff_s: float | None = None,
    retry_backoff_max_s: float | None = None,
    retry_on: Iterable[str | type[BaseException]] | None = None,
    priority: int | None = None,
    queue: str | None = None,
    concurrency: int | None = None,
    cron: str | None = None,
    memory_limit_mb: int | None = None,
    rate_limit: str | None = None,
) -> Any:
    """Register a function as a task, named ``"<module>.<function>"`` unless ``name`` is given.

    The function comes back as a ``TaskFunction``: called, it runs as before; it can also submit
    itself (``add.submit(2, 3).result()``, with a default client from ``CONVEYOR_URL``)::

        @task
        def add(x: int, y: int) -> int:
            return x + y

        @task(name="reports.build", timeout_s=600, soft_timeout_s=540)
        async def build(pages: int) -> dict: ...

    ``timeout_s`` kills the job's process tree once it has run that long (it fails with
    ``Timeout``); ``soft_timeout_s`` raises ``service.SoftTimeout`` inside it first. A failed
    job is retried up to ``max_retries`` times (only for the error types in ``retry_on``, if
    given), after ``retry_backoff_s``, doubled each time up to ``retry_backoff_max_s``, with
    jitter. Jobs of a higher ``priority`` start first; ``queue`` names the queue whose
    concurrency limit (``CONVEYOR_QUEUES``) they count against, and ``concurrency`` caps how
    many jobs of this task run at once. A job submitted with its own values uses those instead
    (``concurrency`` belongs to the task alone). ``memory_limit_mb`` caps what a job may allocate
    (the kernel refuses more: the job fails with ``MemoryError``); the cap is lifted when it ends.
    ``rate_limit`` (``"100/m"``, per ``s``, ``m``, ``h`` or ``d``) starts this task's jobs at most
    that often, evenly spaced, across restarts and services; the others wait ``queued``.

    ``cron`` (e.g. ``"*/5 * * * *"``, or six fields with seconds first) makes the service run the
    task, with no arguments, at every tick: one job per tick, listed in ``GET /schedules``.
    """
    options = JobOptions(
        timeout_s=timeout_s, soft_timeout_s=soft_timeout_s, max_retries=max_retries,
        retry_backoff_s=retry_backoff_s, retry_backoff_max_s=retry_backoff_max_s,
        retry_on=None if retry_on is None else tuple(_type_name(t) for t in retry_on),
        priority=priority, queue=queue,
        memory_limit_mb=memory_limit_mb, rate_limit=rate_limit,
    )  # fmt: skip
    _check_options(options)
    if concurrency is not None and not (_is_whole(concurrency) and concurrency >= 1):
        raise ValueError(f"@task(concurrency=...) must be a whole number >= 1, got {concurrency!r}")
    cron = None if cron is None else _check_cron(cron)

    def register(fn: Callable[P, T]) -> TaskFunction[P, T]:
        if isinstance(fn, TaskFunction):  # decorated twice: the function under it
            fn = fn.fn
        if not callable(fn):
            raise TypeError(f"@task needs a function, got {type(fn).__name__}")
        task_name = name or f"{fn.__module__}.{fn.__qualname__}"
        signature = inspect.signature(fn)
        known = _registry.get(task_name)
        if known is not None and _origin(known.fn) != _origin(fn):
            raise ValueError(
                f"task name {task_name!r} is taken by {_origin(known.fn)}; "
                f"give {_origin(fn)} another name with @task(name=...)"
            )
        if cron is not None:
            _check_callable_without_arguments(task_name, signature)
        _registry[task_name] = Task(
            task_name, fn, signature, options, concurrency=concurrency, cron=cron
        )
        return task_function(fn, task_name)

    return register if fn is None else register(fn)


def _type_name(error_type: str | type[BaseException]) -> str:
    return error_type if isinstance(error_type, str) else error_type.__qualname__


def _check_options(options: JobOptions) -> None:
    try:
        options.check(spell=lambda name: f"@task({name}=...)")
    except ValueError as exc:
        raise ValueError(str(exc) if str(exc).startswith("@task") else f"@task: {exc}") from None


def _is_whole(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_cron(expression: str) -> str:
    # only modules that declare schedules pay for importing croniter (workers import them too)
    from .cron import check_cron

    try:
        return check_cron(expression)
    except ValueError as exc:
        raise ValueError(f"@task(cron=...): {exc}") from None


def _check_callable_without_arguments(name: str, signature: inspect.Signature) -> None:
    try:
        signature.bind()
    except TypeError as exc:
        raise ValueError(
            f"@task(cron=...) runs {name} with no arguments, but it needs some ({exc}); "
            "give them defaults, or use POST /schedules with args"
        ) from None


def _origin(fn: Callable[..., Any]) -> str:
    return f"{fn.__module__}.{getattr(fn, '__qualname__', repr(fn))}"


def load_tasks(modules: Iterable[str]) -> dict[str, Task]:
    """Import the task modules (the current directory is importable) and return the registry."""
    cwd = os.getcwd()
    if cwd not in sys.path:
        sys.path.insert(0, cwd)
    for module in modules:
        try:
            importlib.import_module(module)
        except Exception as exc:  # any error in a user's module is reported, not crashed on
            reason = "".join(traceback.format_exception_only(exc)).strip()
            raise TaskLoadError(module, reason) from exc
    return dict(_registry)


def lookup(tasks: dict[str, Task], name: str) -> Task:
    try:
        return tasks[name]
    except KeyError:
        raise UnknownTask(name) from None


_INPUT = object()  # stands in for a workflow step's input while its arguments are checked
