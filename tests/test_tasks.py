"""The @task registry, argument checks, task descriptions, loading modules, and progress()."""

from __future__ import annotations

import asyncio
import concurrent.futures
import importlib
import inspect
import itertools
import pickle
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from service import tasks as tasks_module
from service.context import ProgressReporter, progress, set_reporter
from service.errors import InvalidArguments, TaskLoadError, UnknownTask
from service.protocol import Progress, encode
from service.tasks import Task, load_tasks, lookup, task

from . import sample_tasks
from .conftest import TASKS, wait_until

_module_numbers = itertools.count()


@pytest.fixture(autouse=True)
def _restore_registry() -> Iterator[None]:
    """Tasks registered by a test do not leak into the process-wide registry."""
    saved = dict(tasks_module._registry)
    yield
    tasks_module._registry.clear()
    tasks_module._registry.update(saved)


@pytest.fixture
def make_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[str], str]]:
    """Write a uniquely named module into the current directory (tmp_path); return its name."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", [*sys.path])  # load_tasks adds the cwd: undone afterwards
    made: list[str] = []

    def make(source: str) -> str:
        name = f"conveyor_test_module_{next(_module_numbers)}"
        (tmp_path / f"{name}.py").write_text(source)
        importlib.invalidate_caches()
        made.append(name)
        return name

    yield make
    for name in made:
        sys.modules.pop(name, None)


# -- @task -----------------------------------------------------------------------------------


def test_task_is_named_after_module_and_function(make_module: Callable[[str], str]) -> None:
    module = make_module("from service import task\n\n@task\ndef double(x):\n    return 2 * x\n")
    registry = load_tasks([module])
    assert f"{module}.double" in registry
    assert registry[f"{module}.double"].name == f"{module}.double"
    assert registry[f"{module}.double"].fn(21) == 42


def test_sample_tasks_are_named_as_documented() -> None:
    registry = load_tasks([TASKS])
    assert registry["tests.sample_tasks.add"].fn is sample_tasks.add.fn
    assert registry["tests.renamed"].fn is sample_tasks.renamed.fn
    assert sample_tasks.renamed.name == "tests.renamed"
    assert "tests.sample_tasks.renamed" not in registry


def test_decorator_returns_the_function_still_callable_as_before() -> None:
    def triple(x: int) -> int:
        """Three times x."""
        return 3 * x

    decorated = task(triple)
    assert decorated.fn is triple and decorated(2) == 6
    assert decorated.__name__ == "triple" and decorated.__doc__ == "Three times x."
    assert inspect.signature(decorated) == inspect.signature(triple)
    named = task(name="math.triple")(triple)
    assert named.name == "math.triple" and named(3) == 9
    assert task(named).fn is triple  # decorated twice: the function under it is registered
    registry = load_tasks([])
    assert registry["math.triple"] == Task("math.triple", triple, inspect.signature(triple))
    assert registry[f"{__name__}.{triple.__qualname__}"].fn is triple


def test_explicit_name() -> None:
    @task(name="tests.reports.build")
    async def build(pages: int) -> dict[str, int]:
        return {"pages": pages}

    registered = lookup(load_tasks([]), "tests.reports.build")
    assert registered.fn is build.fn
    assert registered.is_async
    assert not lookup(load_tasks([]), "tests.sample_tasks.add").is_async


def test_a_name_taken_by_another_function_is_refused() -> None:
    @task(name="dup.name")
    def first() -> int:
        return 1

    def second() -> int:
        return 2

    with pytest.raises(ValueError, match=r"'dup\.name'") as caught:
        task(name="dup.name")(second)
    assert "first" in str(caught.value) and "second" in str(caught.value)
    assert load_tasks([])["dup.name"].fn is first.fn  # the first one keeps the name


def test_registering_the_same_function_again_is_allowed() -> None:
    def once() -> int:
        return 1

    task(name="again.once")(once)
    task(name="again.once")(once)  # like a module imported twice
    assert load_tasks([])["again.once"].fn is once


def test_task_needs_a_callable() -> None:
    not_a_function: Any = 42
    with pytest.raises(TypeError, match="needs a function, got int"):
        task(not_a_function)


def test_lookup_of_an_unknown_task() -> None:
    with pytest.raises(UnknownTask) as caught:
        lookup(load_tasks([TASKS]), "tests.sample_tasks.nope")
    assert caught.value.name == "tests.sample_tasks.nope"


# -- arguments and descriptions --------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "kwargs"),
    [([1, 2], {}), ([1], {"y": 2}), ([], {"x": 1, "y": 2})],
)
def test_check_arguments_accepts_what_binds(args: list[Any], kwargs: dict[str, Any]) -> None:
    add = lookup(load_tasks([TASKS]), "tests.sample_tasks.add")
    add.check_arguments(args, kwargs)  # no error


@pytest.mark.parametrize(
    ("args", "kwargs", "reason"),
    [
        ([1], {}, "missing a required argument: 'y'"),
        ([], {}, "missing a required argument: 'x'"),
        ([1, 2, 3], {}, "too many positional arguments"),
        ([1, 2], {"z": 3}, "unexpected keyword argument 'z'"),
        ([1], {"x": 1, "y": 2}, "multiple values for argument 'x'"),
    ],
)
def test_check_arguments_refuses_what_does_not_bind(
    args: list[Any], kwargs: dict[str, Any], reason: str
) -> None:
    add = lookup(load_tasks([TASKS]), "tests.sample_tasks.add")
    with pytest.raises(InvalidArguments) as caught:
        add.check_arguments(args, kwargs)
    assert caught.value.task == "tests.sample_tasks.add"
    assert reason in caught.value.reason
    assert str(caught.value).startswith("arguments do not match task 'tests.sample_tasks.add': ")


def test_check_arguments_with_var_args() -> None:
    echo = lookup(load_tasks([TASKS]), "tests.sample_tasks.echo")
    echo.check_arguments([], {})
    echo.check_arguments([1, 2, 3], {"a": 1, "b": [2]})


def test_describe_lists_the_parameters() -> None:
    registry = load_tasks([TASKS])
    assert registry["tests.renamed"].describe() == {
        "name": "tests.renamed",
        "doc": None,
        "is_async": False,
        "options": {
            "timeout_s": None,
            "soft_timeout_s": None,
            "max_retries": None,
            "retry_backoff_s": None,
            "retry_backoff_max_s": None,
            "retry_on": None,
            "priority": None,
            "queue": None,
            "memory_limit_mb": None,
            "rate_limit": None,
        },
        "concurrency": None,
        "cron": None,
        "params": [
            {
                "name": "value",
                "kind": "positional_or_keyword",
                "type": "str",
                "required": False,
                "default": "hello",
            }
        ],
    }
    sleep = registry["tests.sample_tasks.sleep"].describe()
    assert sleep["doc"] is not None and sleep["doc"].startswith("Sleep; with ``marker``")
    assert sleep["params"] == [
        {"name": "seconds", "kind": "positional_or_keyword", "type": "float", "required": True},
        {
            "name": "marker",
            "kind": "positional_or_keyword",
            "type": "str | None",
            "required": False,
            "default": None,
        },
    ]
    assert registry["tests.sample_tasks.async_add"].describe()["is_async"] is True


def test_describe_with_evaluated_annotations_and_every_kind_of_parameter(
    make_module: Callable[[str], str],
) -> None:
    module = make_module(
        "from typing import Optional\n"
        "from service import task\n\n"
        "@task\n"
        "def f(a: int, b: list[int], c: Optional[int] = None, d: bytes = b'x', e=(1, 'two'),\n"
        "      *rest: int, flag: bool = False, **extra: str) -> None:\n"
        "    '''Doc.\n\n    More.'''\n"
    )
    described = load_tasks([module])[f"{module}.f"].describe()
    assert described["doc"] == "Doc.\n\nMore."
    params = {p["name"]: p for p in described["params"]}
    assert list(params) == ["a", "b", "c", "d", "e", "rest", "flag", "extra"]
    assert params["a"] == {
        "name": "a",
        "kind": "positional_or_keyword",
        "type": "int",
        "required": True,
    }
    assert params["b"]["type"] == "list[int]"
    assert (params["c"]["type"], params["c"]["default"]) == ("Optional[int]", None)
    assert params["d"] == {  # a default that is not JSON is left out, but it is not required
        "name": "d",
        "kind": "positional_or_keyword",
        "type": "bytes",
        "required": False,
    }
    assert (params["e"]["type"], params["e"]["default"]) == (None, (1, "two"))
    assert (params["rest"]["kind"], params["rest"]["required"]) == ("var_positional", False)
    assert "default" not in params["rest"]
    assert params["flag"] == {
        "name": "flag",
        "kind": "keyword_only",
        "type": "bool",
        "required": False,
        "default": False,
    }
    assert (params["extra"]["kind"], params["extra"]["required"]) == ("var_keyword", False)


# -- load_tasks ------------------------------------------------------------------------------


def test_load_tasks_returns_a_copy_of_the_registry() -> None:
    registry = load_tasks([TASKS])
    assert {"tests.renamed", "tests.sample_tasks.add", "tests.sample_tasks.echo"} <= set(registry)
    registry.clear()
    assert "tests.sample_tasks.add" in load_tasks([])


def test_load_tasks_of_a_missing_module() -> None:
    with pytest.raises(TaskLoadError) as caught:
        load_tasks([TASKS, "no_such_module_for_conveyor"])
    assert caught.value.module == "no_such_module_for_conveyor"
    assert "ModuleNotFoundError" in caught.value.reason
    assert "no_such_module_for_conveyor" in str(caught.value)


def test_load_tasks_of_a_module_that_fails_to_import(make_module: Callable[[str], str]) -> None:
    module = make_module("raise RuntimeError('broken at import')\n")
    with pytest.raises(TaskLoadError) as caught:
        load_tasks([module])
    assert caught.value.module == module
    assert caught.value.reason == "RuntimeError: broken at import"
    assert isinstance(caught.value.__cause__, RuntimeError)


def test_load_tasks_of_a_module_with_a_syntax_error(make_module: Callable[[str], str]) -> None:
    module = make_module("def broken(:\n")
    with pytest.raises(TaskLoadError, match="SyntaxError"):
        load_tasks([module])


# -- progress() ------------------------------------------------------------------------------


def on_the_wire(sent: list[dict[str, Any]]) -> Callable[[Progress], None]:
    """A reporter's send that keeps each message as the service reads it off the pipe."""
    return lambda message: sent.append(orjson.loads(encode(message)))


@pytest.fixture
def sent() -> Iterator[list[dict[str, Any]]]:
    messages: list[dict[str, Any]] = []
    yield messages
    set_reporter(None)


@pytest.mark.parametrize(
    ("args", "problem"),
    [
        (("1",), "done must be a finite number, got '1'"),
        ((None,), "done must be a finite number, got None"),
        ((True,), "done must be a finite number, got True"),
        ((float("nan"),), "done must be a finite number, got nan"),
        ((2**70,), f"done must be a finite number, got {2**70}"),
        ((1, "10"), "total must be a finite number or None, got '10'"),
        ((1, False), "total must be a finite number or None, got False"),
        ((1, float("inf")), "total must be a finite number or None, got inf"),
        ((1, 10, 3), "message must be a str or None, got int"),
        ((1, 10, b"bytes"), "message must be a str or None, got bytes"),
    ],
)
def test_progress_checks_its_arguments(
    args: tuple[Any, ...], problem: str, sent: list[dict[str, Any]]
) -> None:
    set_reporter(ProgressReporter(on_the_wire(sent), "job-1", interval_s=0))
    with pytest.raises(TypeError) as caught:
        progress(*args)
    assert str(caught.value) == f"progress(): {problem}"
    assert sent == []  # nothing is reported on a bad call


def test_progress_outside_a_worker_does_nothing(sent: list[dict[str, Any]]) -> None:
    set_reporter(None)
    progress(1, 10, "one")  # no error, and nowhere to send it
    progress(2.5)
    set_reporter(ProgressReporter(on_the_wire(sent), "job-1", interval_s=0))
    progress(3, 10, "three")
    assert sent == [{"t": "progress", "job": "job-1", "done": 3, "total": 10, "message": "three"}]
    set_reporter(None)
    progress(4, 10)
    assert len(sent) == 1


def test_reporter_sends_the_first_update_at_once_and_the_latest_on_close() -> None:
    sent: list[dict[str, Any]] = []
    reporter = ProgressReporter(on_the_wire(sent), "job-7", interval_s=60)
    reporter.update(1, 3, "first")
    assert [m["done"] for m in sent] == [1]
    reporter.update(2, 3, "second")
    reporter.update(3, 3, "third")
    assert len(sent) == 1  # within the interval: held back
    reporter.close()
    assert sent == [
        {"t": "progress", "job": "job-7", "done": 1, "total": 3, "message": "first"},
        {"t": "progress", "job": "job-7", "done": 3, "total": 3, "message": "third"},
    ]
    reporter.close()  # nothing pending: nothing more sent
    assert len(sent) == 2


async def test_reporter_sends_a_held_back_update_after_the_interval() -> None:
    sent: list[dict[str, Any]] = []
    reporter = ProgressReporter(on_the_wire(sent), "job-1", interval_s=0.05)
    reporter.update(1, None, None)
    reporter.update(2, None, None)
    reporter.update(3, None, "latest")
    await wait_until(lambda: len(sent) == 2, timeout_s=5, what="the timer to flush")
    assert sent[-1]["done"] == 3 and sent[-1]["message"] == "latest"
    reporter.close()
    assert len(sent) == 2


def test_reporter_coalesces_a_tight_loop() -> None:
    sent: list[dict[str, Any]] = []
    reporter = ProgressReporter(on_the_wire(sent), "job-1", interval_s=0.05)
    started = time.monotonic()
    for i in range(20_000):
        reporter.update(i, 19_999, f"step {i}")
    elapsed = time.monotonic() - started
    reporter.close()
    assert sent[-1] == {
        "t": "progress",
        "job": "job-1",
        "done": 19_999,
        "total": 19_999,
        "message": "step 19999",
    }
    assert len(sent) <= elapsed / 0.05 + 3
    assert len(sent) < 100
    dones = [m["done"] for m in sent]
    assert dones == sorted(dones)  # in order, never an older value after a newer one


def test_a_task_pickles_by_name_and_an_async_one_is_awaitable_to_frameworks() -> None:
    restored = pickle.loads(pickle.dumps(sample_tasks.add))
    assert restored is sample_tasks.add and restored(2, 3) == 5
    with_options = pickle.loads(pickle.dumps(sample_tasks.add.with_options(priority=4)))
    assert with_options.submit_options is not None
    assert with_options.submit_options.job.priority == 4
    with concurrent.futures.ProcessPoolExecutor(1) as pool:  # what users do with functions
        assert pool.submit(sample_tasks.add, 20, 22).result(timeout=30) == 42
    # Starlette's and FastAPI's background tasks await what they find to be async
    assert inspect.iscoroutinefunction(sample_tasks.async_add.__call__)
    assert not inspect.iscoroutinefunction(sample_tasks.add.__call__)
    assert asyncio.run(sample_tasks.async_add(1, 2)) == 3
