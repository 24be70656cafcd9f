"""``@on_worker_start`` and ``@on_worker_stop``: set-up paid once per worker, not per job.

A task module registers them as it is imported; every worker process runs the start hooks once,
before its first job, and the stop hooks when it ends normally (recycled, or the service stops).
The service process imports the same modules but never runs the hooks.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

Hook = Callable[[], Any]
H = TypeVar("H", bound=Hook)

_start_hooks: dict[str, Hook] = {}  # by origin, in registration order
_stop_hooks: dict[str, Hook] = {}
_state: dict[str, Any] = {}


def origin(fn: Hook) -> str:
    return f"{fn.__module__}.{getattr(fn, '__qualname__', repr(fn))}"


def _register(hooks: dict[str, Hook], fn: H, decorator: str) -> H:
    if not callable(fn):
        raise TypeError(f"@{decorator} needs a function, got {type(fn).__name__}")
    hooks[origin(fn)] = fn  # a module imported twice registers its hook once
    return fn


def on_worker_start(fn: H) -> H:
    """Run ``fn()`` once in each worker process, before its first job.

    For set-up too heavy to repeat per job: load a model, open a connection pool. Keep what
    it prepares in ``worker_state()`` (or a module global) for the tasks to use::

        @on_worker_start
        def load_model() -> None:
            worker_state()["model"] = Model.load("weights.bin")

        @task
        def predict(x: list[float]) -> float:
            return worker_state()["model"].predict(x)

    ``async def`` hooks run on the event loop the worker's ``async`` tasks run on, so a
    client they open can be used there. If a start hook raises, the worker reports the error
    (``/health`` shows it), exits and is started again after a growing pause; jobs wait queued.
    """
    return _register(_start_hooks, fn, "on_worker_start")


def on_worker_stop(fn: H) -> H:
    """Run ``fn()`` when a worker process ends normally: recycled, or the service stopping.

    Stop hooks run in reverse order of registration and have ``CONVEYOR_WORKER_STOP_TIMEOUT_S``
    between them; a worker killed (a cancel, a timeout, a crash) runs none.
    """
    return _register(_stop_hooks, fn, "on_worker_stop")


def worker_state() -> dict[str, Any]:
    """This worker process's own dictionary, for what the start hooks prepare for the tasks.

    Empty outside a worker, and in a worker until its start hooks have run.
    """
    return _state


def start_hooks() -> list[Hook]:
    return list(_start_hooks.values())


def stop_hooks() -> list[Hook]:
    return list(reversed(_stop_hooks.values()))
