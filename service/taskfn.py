"""What ``@task`` returns: the function, still callable as before, that can also submit itself.

``add.submit(2, 3).result()`` reads like Celery's ``add.delay(2, 3).get()``, with the
function's own signature (mypy checks the arguments, and knows the result's type). Submitting
goes through ``service.client``, imported only when a task is submitted: worker processes,
which import task modules, never load an HTTP client.
"""

from __future__ import annotations

import functools
import importlib
import inspect
from collections.abc import Awaitable, Callable, Coroutine
from typing import TYPE_CHECKING, Any, Generic, ParamSpec, TypeVar, cast, overload

if TYPE_CHECKING:
    from typing_extensions import Unpack

    from .client.options import OptionFields, SubmitOptions, TaskCall
    from .client.sync import JobHandle

P = ParamSpec("P")
T = TypeVar("T")
R = TypeVar("R")


class TaskFunction(Generic[P, T]):
    """A function registered as the task ``name``."""

    __name__: str  # set, with __doc__ and __wrapped__, from the function itself
    __wrapped__: Callable[P, T]

    def __init__(self, fn: Callable[P, T], name: str, options: SubmitOptions | None = None) -> None:
        self.fn = fn
        self.name = name
        self.submit_options = options  # what with_options() set, for every submit of this
        functools.update_wrapper(self, fn)  # __name__, __doc__, __wrapped__ (so signature())

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> T:
        return self.fn(*args, **kwargs)

    def __repr__(self) -> str:
        return f"<task {self.name}>"

    def __reduce__(self) -> tuple[Any, ...]:
        # pickled by name, as a function is (the module's attribute is this object, not the
        # function under it): multiprocessing and ProcessPoolExecutor can take it
        return (_restore, (self.fn.__module__, self.fn.__qualname__, self.submit_options))

    @overload
    def submit(
        self: TaskFunction[P, Coroutine[Any, Any, R]], *args: P.args, **kwargs: P.kwargs
    ) -> JobHandle[R]: ...
    @overload
    def submit(self: TaskFunction[P, R], *args: P.args, **kwargs: P.kwargs) -> JobHandle[R]: ...
    def submit(self, *args: Any, **kwargs: Any) -> JobHandle[Any]:
        """Run this task as a job on the service named by ``CONVEYOR_URL`` (and
        ``CONVEYOR_TOKEN``); its handle. Use ``Client.submit(task, ...)`` for another service."""
        from .client import default_client

        return default_client().submit(self, *args, **kwargs)

    def with_options(self, **options: Unpack[OptionFields]) -> TaskFunction[P, T]:
        """This task with options for its jobs: ``add.with_options(priority=5).submit(2, 3)``."""
        from .client.options import SubmitOptions, submit_options

        merged = (self.submit_options or SubmitOptions()).merged(submit_options(**options))
        return type(self)(self.fn, self.name, merged)

    def call(self, *args: P.args, **kwargs: P.kwargs) -> TaskCall:
        """This task with these arguments, as one job of ``submit_many``."""
        from .client.options import SubmitOptions, TaskCall

        return TaskCall(self.name, args, kwargs, self.submit_options or SubmitOptions())


class AsyncTaskFunction(TaskFunction[P, T]):
    """The same for an ``async def``: its ``__call__`` is a coroutine function too, so that a
    framework that asks (Starlette's and FastAPI's background tasks) awaits it."""

    # typed as TaskFunction's (it returns the coroutine the function's call does)
    async def __call__(self, *args: P.args, **kwargs: P.kwargs) -> Any:  # type: ignore[override]
        return await cast(Awaitable[Any], self.fn(*args, **kwargs))


def task_function(fn: Callable[P, T], name: str) -> TaskFunction[P, T]:
    """What ``@task`` returns for ``fn``."""
    is_async = inspect.iscoroutinefunction(fn)  # a flag, not a narrowing of fn's type
    return AsyncTaskFunction(fn, name) if is_async else TaskFunction(fn, name)


def _restore(module: str, qualname: str, options: SubmitOptions | None) -> TaskFunction[Any, Any]:
    found: Any = importlib.import_module(module)
    for part in qualname.split("."):
        found = getattr(found, part)
    if not isinstance(found, TaskFunction):
        raise TypeError(f"{module}.{qualname} is no longer a task")
    return found if options is None else type(found)(found.fn, found.name, options)
