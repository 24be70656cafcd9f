"""The pipe's messages: each one through its wire form and back, the bytes of that form, and
lines that are not messages refused with a clear MalformedMessage (and skipped by the pool)."""

from __future__ import annotations

import logging

import orjson
import pytest

from service.jobs import JobError
from service.pool import Outcome, ProcessPool
from service.protocol import (
    Error,
    Log,
    MalformedMessage,
    Progress,
    Ready,
    Result,
    Run,
    WorkerMessage,
    decode_from_worker,
    decode_run,
    encode,
)

RUN = Run("job-1", "mod.add", [1, [2, 3]], {"key": {"deep": None}}, 2.5, 512, 1024, 100)

WORKER_MESSAGES: list[WorkerMessage] = [
    Ready(4321),
    Progress("job-1", 3, 10, "three of ten"),
    Progress("job-1", 0.5, None, None),
    Log(
        "job-1",
        [
            {"at": 1.5, "stream": "stdout", "text": "hello"},
            {"at": 2.0, "stream": "log", "text": "é ☃", "level": "INFO", "logger": "app"},
        ],
        7,
    ),
    Log("job-1", [], 3),
    Result("job-1", {"rows": [1, 2.5, "x", None, True]}),
    Result("job-1", None),
    Error("job-1", JobError("ValueError", "boom", "Traceback ...\nValueError: boom\n")),
    Error("job-1", JobError("UnknownTask", "unknown task 'x'")),
    Error(None, JobError("TaskLoadError", "cannot import mod", None)),
]


def test_a_run_message_comes_back_as_it_was_sent() -> None:
    line = encode(RUN)
    assert line.endswith(b"\n") and line.count(b"\n") == 1
    assert decode_run(line) == RUN


@pytest.mark.parametrize("message", WORKER_MESSAGES, ids=repr)
def test_each_worker_message_comes_back_as_it_was_sent(message: WorkerMessage) -> None:
    line = encode(message)
    assert line.endswith(b"\n") and line.count(b"\n") == 1
    assert decode_from_worker(line) == message


def test_the_wire_form_is_one_json_object_a_line_with_its_kind_under_t() -> None:
    assert encode(Ready(12)) == b'{"t":"ready","pid":12}\n'
    assert orjson.loads(encode(Progress("j", 1, 2, None))) == {
        "t": "progress", "job": "j", "done": 1, "total": 2, "message": None,
    }  # fmt: skip
    assert orjson.loads(encode(Error(None, JobError("E", "m")))) == {
        "t": "error", "job": None, "error": {"type": "E", "message": "m", "traceback": None},
    }  # fmt: skip
    assert orjson.loads(encode(RUN)) == {
        "t": "run", "job": "job-1", "task": "mod.add", "args": [1, [2, 3]],
        "kwargs": {"key": {"deep": None}}, "soft_timeout_s": 2.5, "memory_limit_mb": 512,
        "max_result_bytes": 1024, "max_log_lines": 100,
    }  # fmt: skip


def test_a_result_already_json_is_carried_as_it_is() -> None:
    data = orjson.dumps({"big": "x" * 1000, "n": [1, 2]})
    line = encode(Result("job-1", orjson.Fragment(data)))
    assert line == b'{"t":"result","job":"job-1","result":%b}\n' % data
    assert decode_from_worker(line) == Result("job-1", {"big": "x" * 1000, "n": [1, 2]})


@pytest.mark.parametrize(
    ("line", "problem"),
    [
        (b"not json\n", "not JSON: "),
        (b'{"t":"ready","pid":1\n', "not JSON: "),
        (b'{"t":"log","job":"\xff\xfe","entries":[],"dropped":0}\n', "not JSON: "),
        (
            b'{"t":"ready","pid":99999999999999999999999}\n',
            "ready message: pid must be int, got float",
        ),
        (b"[1, 2]\n", "expected a JSON object, got list"),
        (b'"ready"\n', "expected a JSON object, got str"),
        (b"\n", "not JSON: "),
        (b'{"pid":1}\n', "unknown message kind None"),
        (b'{"t":"hello","job":"j"}\n', "unknown message kind 'hello'"),
        (b'{"t":["ready"],"pid":1}\n', "unknown message kind ['ready']"),
        (b'{"t":"run","job":"j"}\n', "unknown message kind 'run'"),  # not from a worker
        (b'{"t":"ready"}\n', "ready message: no pid"),
        (b'{"t":"ready","pid":"12"}\n', "ready message: pid must be int, got str"),
        (b'{"t":"ready","pid":1.5}\n', "ready message: pid must be int, got float"),
        (b'{"t":"ready","pid":true}\n', "ready message: pid must be int, got bool"),
        (
            b'{"t":"progress","job":5,"done":1,"total":null,"message":null}\n',
            "progress message: job must be str, got int",
        ),
        (
            b'{"t":"progress","job":"j","done":"1","total":null,"message":null}\n',
            "progress message: done must be int or float, got str",
        ),
        (
            b'{"t":"progress","job":"j","done":false,"total":null,"message":null}\n',
            "progress message: done must be int or float, got bool",
        ),
        (
            b'{"t":"progress","job":"j","done":1,"total":[],"message":null}\n',
            "progress message: total must be int or float or null, got list",
        ),
        (
            b'{"t":"progress","job":"j","done":1,"total":2}\n',
            "progress message: no message",
        ),
        (
            b'{"t":"log","job":"j","entries":{},"dropped":0}\n',
            "log message: entries must be list, got dict",
        ),
        (
            b'{"t":"log","job":"j","entries":[],"dropped":0.0}\n',
            "log message: dropped must be int, got float",
        ),
        (b'{"t":"result","job":"j"}\n', "result message: no result"),
        (
            b'{"t":"result","job":null,"result":1}\n',
            "result message: job must be str, got null",
        ),
        (b'{"t":"error","job":"j"}\n', "error message: no error"),
        (
            b'{"t":"error","job":"j","error":"boom"}\n',
            "error message: error must be dict, got str",
        ),
        (
            b'{"t":"error","job":"j","error":{"type":"E","traceback":null}}\n',
            "error message: no error.message",
        ),
        (
            b'{"t":"error","job":"j","error":{"type":"E","message":"m","traceback":3}}\n',
            "error message: error.traceback must be str or null, got int",
        ),
    ],
)
def test_a_line_that_is_no_worker_message_is_refused_clearly(line: bytes, problem: str) -> None:
    with pytest.raises(MalformedMessage) as caught:
        decode_from_worker(line)
    assert isinstance(caught.value, ValueError)  # what a reader of the pipe catches
    assert str(caught.value).startswith(problem)


@pytest.mark.parametrize(
    ("line", "problem"),
    [
        (encode(Ready(1)), "unknown message kind 'ready'"),
        (b'{"job":"j","task":"t","args":[],"kwargs":{}}\n', "unknown message kind None"),
        (
            orjson.dumps({**orjson.loads(encode(RUN)), "args": {}}),
            "run message: args must be list, got dict",
        ),
        (
            orjson.dumps({**orjson.loads(encode(RUN)), "max_log_lines": None}),
            "run message: max_log_lines must be int, got null",
        ),
    ],
)
def test_a_line_that_is_no_run_message_is_refused_clearly(line: bytes, problem: str) -> None:
    with pytest.raises(MalformedMessage) as caught:
        decode_run(line)
    assert str(caught.value) == problem


async def test_the_pool_skips_a_malformed_line_and_the_job_goes_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.ERROR, logger="conveyor.pool")
    lines = [
        "not json",
        '{"t":"hello"}',
        '{"t":"progress","job":"job-1","done":"half","total":null,"message":null}',
        '{"t":"result","job":5,"result":"forged"}',
    ]
    progress: list[object] = []
    async with ProcessPool(
        1,
        ["tests.broken_pipe_tasks"],
        grace_s=1.0,
        on_progress=lambda *update: progress.append(update),
    ) as pool:
        worker = await pool.acquire()
        outcome = await pool.run(worker, "job-1", "tests.broken_pipe_tasks.send_lines", [lines], {})
        assert outcome == Outcome(result="sent")
        assert [w["pid"] for w in pool.status()["workers"]] == [worker.pid]  # not replaced
    assert progress == []  # the progress with a bad field never reached the scheduler
    refused = [r.getMessage() for r in caplog.records if r.name == "conveyor.pool"]
    assert len(refused) == len(lines)
    assert all(f"worker {worker.pid} sent a malformed message" in m for m in refused)
    assert "(unknown message kind 'hello')" in refused[1]
    assert "(progress message: done must be int or float, got str)" in refused[2]
