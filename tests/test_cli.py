"""The ``conveyor`` command as a user runs it: the installed console script in a subprocess,
against a real service (a hypercorn subprocess on a free port)."""

from __future__ import annotations

import os
import pty
import queue
import select
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from service.client import Client, StateEvent, call
from service.jobs import JobState

from .conftest import ROOT, TASKS, SharedService, listening_socket, wait_for

T = f"{TASKS}."
COMMAND = shutil.which("conveyor")

pytestmark = pytest.mark.skipif(
    COMMAND is None and os.environ.get("CI") != "true",
    reason="the conveyor command is not installed (pip install -e .)",
)


@pytest.fixture
def conveyor(shared_service: SharedService) -> Callable[..., subprocess.CompletedProcess[str]]:
    """Run ``conveyor ARGS...`` against the shared service; its exit code and output."""

    def run(*args: str, timeout_s: float = 30) -> subprocess.CompletedProcess[str]:
        assert COMMAND is not None, "the conveyor command must be installed"
        env = {**os.environ, "CONVEYOR_URL": shared_service.url}
        env.pop("CONVEYOR_TOKEN", None)
        return subprocess.run(
            [COMMAND, *args], env=env, capture_output=True, text=True, timeout=timeout_s,
            stdin=subprocess.DEVNULL,
        )  # fmt: skip

    return run


@pytest.fixture
def client(shared_service: SharedService) -> Iterator[Client]:
    with Client(shared_service.url) as made:
        yield made


def json_of(done: subprocess.CompletedProcess[str]) -> Any:
    assert done.returncode == 0, done.stderr
    return orjson.loads(done.stdout)


def one_line_error(done: subprocess.CompletedProcess[str], code: int) -> str:
    """The command failed with ``code`` and said why in one line on stderr, no traceback."""
    assert done.returncode == code, (done.returncode, done.stdout, done.stderr)
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("conveyor: "), done.stderr
    assert "Traceback" not in done.stderr
    return lines[0]


def wait_running(client: Client, job_id: str) -> None:
    for event in client.job(job_id).events(timeout_s=20):
        if isinstance(event, StateEvent) and event.state is JobState.RUNNING:
            return
    raise AssertionError(f"job {job_id} ended without running")


# -- submit -------------------------------------------------------------------------------------


def test_submit_prints_the_job(conveyor: Callable[..., Any]) -> None:
    job = json_of(conveyor("submit", T + "add", "2", "3", "--json"))
    assert job["task"] == T + "add" and job["args"] == [2, 3]
    assert job["state"] == "queued"
    human = conveyor("submit", T + "add", "2", "3")
    assert human.returncode == 0
    assert human.stdout.startswith("job ") and "queued" in human.stdout
    assert "\x1b[" not in human.stdout  # no colours when the output is not a terminal


def test_submit_wait_exits_with_the_outcome(conveyor: Callable[..., Any]) -> None:
    done = conveyor("submit", T + "add", "2", "3", "--wait")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "5"
    assert "running → succeeded" in done.stderr  # what happened, on stderr beside the result
    failed = conveyor("submit", T + "fail", "out of toner", "--wait")
    assert failed.returncode == 1
    assert "ValueError: out of toner" in failed.stderr and failed.stdout == ""
    as_json = json_of(conveyor("submit", T + "add", "1", "1", "--wait", "--json"))
    assert as_json["state"] == "succeeded" and as_json["result"] == 2


def test_values_are_json_when_they_parse_else_text(conveyor: Callable[..., Any]) -> None:
    job = json_of(
        conveyor(
            "submit", T + "echo", "2", "hello", '"3"', "[1, 2]", "2026-12-24", "--kw", "flag=true",
            "--kw", "name=bob", "--kw", "empty=", "--wait", "--json",
        )
    )  # fmt: skip
    assert job["result"] == {
        "args": [2, "hello", "3", [1, 2], "2026-12-24"],
        "kwargs": {"flag": True, "name": "bob", "empty": ""},
    }


def test_option_flags_reach_the_job(conveyor: Callable[..., Any], client: Client) -> None:
    key = f"cli-{time.time_ns()}"
    job = json_of(
        conveyor(
            "submit", T + "echo", "--priority", "5", "--queue", "reports", "--timeout-s", "30",
            "--soft-timeout-s", "20", "--max-retries", "2", "--retry-on", "ValueError",
            "--retry-on", "OSError", "--memory-limit-mb", "256", "--key", key, "--json",
        )
    )  # fmt: skip
    options = job["options"]
    assert (options["priority"], options["queue"], options["timeout_s"]) == (5, "reports", 30)
    assert options["soft_timeout_s"] == 20 and options["max_retries"] == 2
    assert options["retry_on"] == ["ValueError", "OSError"] and options["memory_limit_mb"] == 256
    assert job["key"] == key
    later = json_of(conveyor("submit", T + "add", "1", "2", "--delay-s", "3600", "--json"))
    assert later["state"] == "scheduled"
    client.cancel(later["id"])


# -- one job ------------------------------------------------------------------------------------


def test_workflow_status_waits_and_cancel_stops_it(
    conveyor: Callable[..., Any], client: Client
) -> None:
    flow = client.chain(call(T + "add", 1, 2), call(T + "add", 4))
    done = conveyor("workflow", "status", flow.id, "--wait", "--json")
    assert done.returncode == 0 and json_of(done)["result"] == 7
    human = conveyor("workflow", "status", flow.id)
    assert f"workflow {flow.id}: succeeded" in human.stdout and "result: 7" in human.stdout
    sleeping = client.chain(call(T + "sleep", 30), call(T + "echo"))
    stopped = conveyor("workflow", "cancel", sleeping.id, "--json")
    assert stopped.returncode == 0 and json_of(stopped)["state"] == "canceled"
    failed = conveyor("workflow", "status", sleeping.id, "--wait")
    assert failed.returncode == 1 and "canceled" in failed.stdout
    missing = conveyor("workflow", "status", "nope")
    assert missing.returncode == 3 and len(missing.stderr.strip().splitlines()) == 1


def test_status_and_result(
    conveyor: Callable[..., Any], client: Client, shared_service: SharedService
) -> None:
    job = client.submit(T + "add", 20, 22)
    assert json_of(conveyor("result", job.id, "--json"))["result"] == 42
    shown = json_of(conveyor("status", job.id, "--json"))
    assert shown == httpx.get(f"{shared_service.url}/jobs/{job.id}").json()  # the API's JSON
    human = conveyor("status", job.id)
    assert job.id in human.stdout and "succeeded" in human.stdout and "42" in human.stdout
    plain = conveyor("result", job.id)
    assert (plain.returncode, plain.stdout.strip()) == (0, "42")
    failed = client.submit(T + "fail", "jammed")
    done = conveyor("result", failed.id)
    assert done.returncode == 1 and "ValueError: jammed" in done.stderr


def test_result_gives_up_after_its_timeout(conveyor: Callable[..., Any], client: Client) -> None:
    job = client.submit(T + "sleep", 30)
    line = one_line_error(conveyor("result", job.id, "--timeout-s", "0.3"), 124)
    assert job.id in line
    job.cancel()


def test_cancel_stops_a_running_job(conveyor: Callable[..., Any], client: Client) -> None:
    job = client.submit(T + "sleep", 60)
    wait_running(client, job.id)
    done = conveyor("cancel", job.id)
    assert done.returncode == 0 and "canceled" in done.stdout
    assert job.status().state is JobState.CANCELED
    line = one_line_error(conveyor("cancel", job.id), 3)
    assert "409" in line and "canceled" in line


def test_retry_runs_a_failed_job_again(conveyor: Callable[..., Any], client: Client) -> None:
    job = client.submit(T + "fail", "again")
    assert conveyor("result", job.id).returncode == 1
    retried = json_of(conveyor("retry", job.id, "--json"))
    assert retried["state"] == "queued" and retried["id"] == job.id
    assert conveyor("result", job.id).returncode == 1
    assert len(job.status().attempts) == 2


def test_logs(conveyor: Callable[..., Any], client: Client) -> None:
    job = client.submit(T + "print_lines", 4)
    job.result(timeout_s=10)
    done = conveyor("logs", job.id)
    assert [line.split(" ", 2)[2] for line in done.stdout.splitlines()] == [
        f"line {n}" for n in range(4)
    ]
    tail = json_of(conveyor("logs", job.id, "--tail", "1", "--json"))
    assert [e["text"] for e in tail["entries"]] == ["line 3"]
    following = client.submit(T + "steps", 5, 0.1)
    followed = conveyor("logs", following.id, "--follow")  # ends when the job does
    assert followed.returncode == 0
    live = client.submit(T + "chatter", "live")
    lines = conveyor("logs", live.id, "--follow", "--json").stdout.splitlines()
    assert any(orjson.loads(line)["text"] == "live print" for line in lines)


# -- many jobs, tasks, schedules ----------------------------------------------------------------


def test_jobs_and_tasks(conveyor: Callable[..., Any], client: Client) -> None:
    made = [client.submit(T + "pid").id for _ in range(3)]
    listed = json_of(conveyor("jobs", "--task", T + "pid", "--limit", "2", "--json"))
    assert [j["id"] for j in listed] == made[::-1][:2]
    table = conveyor("jobs", "--task", T + "pid")
    assert table.returncode == 0 and table.stdout.split()[:3] == ["id", "task", "state"]
    assert all(job_id in table.stdout for job_id in made)
    bad = conveyor("jobs", "--state", "lost")
    assert "unknown state" in one_line_error(bad, 3)
    tasks = json_of(conveyor("tasks", "--json"))
    assert tasks == httpx.get(f"{client.url}/tasks").json()["tasks"]  # the API's own JSON
    assert T + "add" in conveyor("tasks").stdout


def test_schedules(conveyor: Callable[..., Any]) -> None:
    made = json_of(
        conveyor("schedules", "add", T + "add", "*/5 * * * *", "1", "2", "--id", "cli-s", "--json")
    )
    assert made["id"] == "cli-s" and made["args"] == [1, 2]
    assert "cli-s" in [s["id"] for s in json_of(conveyor("schedules", "list", "--json"))]
    shown = json_of(conveyor("schedules", "show", "cli-s", "--json"))
    assert shown["cron"] == "*/5 * * * *" and shown == made | {"last_run_at": None}
    assert conveyor("schedules", "delete", "cli-s").returncode == 0
    assert "404" in one_line_error(conveyor("schedules", "show", "cli-s"), 3)


def test_schedules_pause_and_resume_and_their_jobs(
    conveyor: Callable[..., Any], client: Client
) -> None:
    client.schedules.create(T + "tick", "* * * * * *", args=["cli-p"], schedule_id="cli-p")
    paused = json_of(conveyor("schedules", "pause", "cli-p", "--json"))
    assert (paused["paused"], paused["next_run_at"]) == (True, None)
    said = conveyor("schedules", "pause", "cli-p")  # already paused: no change, no error
    assert said.returncode == 0 and said.stdout.strip() == "schedule cli-p paused"
    assert "paused" in conveyor("schedules", "show", "cli-p").stdout
    resumed = conveyor("schedules", "resume", "cli-p")
    assert resumed.returncode == 0 and resumed.stdout.startswith("schedule cli-p resumed: next run")
    assert json_of(conveyor("schedules", "show", "cli-p", "--json"))["paused"] is False
    wait_for(lambda: any(client.jobs(schedule_id="cli-p")), what="a job of the schedule")
    client.schedules.delete("cli-p")
    listed = json_of(conveyor("jobs", "--schedule", "cli-p", "--json"))
    assert listed and {(j["schedule_id"], j["args"][0]) for j in listed} == {("cli-p", "cli-p")}
    assert "404" in one_line_error(conveyor("schedules", "resume", "cli-p"), 3)


# -- watch --------------------------------------------------------------------------------------


def test_watch_one_job_prints_its_changes_and_ends_with_it(
    conveyor: Callable[..., Any], client: Client
) -> None:
    job = client.submit(T + "chatter", "watched")
    done = conveyor("watch", job.id)
    assert done.returncode == 0, done.stderr
    short = job.id[:8]
    changes = [line for line in done.stdout.splitlines() if "→" in line]
    assert [line.split(" ", 1)[1] for line in changes] == [
        f"{short} {T}chatter new → queued",
        f"{short} {T}chatter queued → running (attempt 1)",
        f"{short} {T}chatter running → succeeded",
    ]
    assert f"{short} stdout watched print" in done.stdout  # its log lines, as they came


def _interruptible() -> None:
    """Ctrl-C reaches the child as at a terminal, also when the tests run as a background job
    (a shell starts those with SIGINT ignored, and the ignoring is inherited)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def test_watch_everything_as_json_lines(shared_service: SharedService, client: Client) -> None:
    assert COMMAND is not None
    env = {**os.environ, "CONVEYOR_URL": shared_service.url}
    with subprocess.Popen(
        [COMMAND, "watch", "--json"], env=env, stdout=subprocess.PIPE, text=True,
        preexec_fn=_interruptible,
    ) as watching:  # fmt: skip
        assert watching.stdout is not None
        # read by a thread: select() cannot see lines already in the pipe's read buffer
        lines: queue.Queue[str] = queue.Queue()
        out = watching.stdout

        def read() -> None:
            for line in out:
                lines.put(line)

        threading.Thread(target=read, daemon=True).start()
        try:
            # the stream opens at the present: submit until a job's events show up
            seen: list[dict[str, Any]] = []
            job = client.submit(T + "add", 1, 2)
            deadline = time.monotonic() + 20
            while not any(
                e["data"].get("job_id") == job.id and e["data"].get("state") == "succeeded"
                for e in seen
            ):
                assert time.monotonic() < deadline, seen
                try:
                    seen.append(orjson.loads(lines.get(timeout=0.5)))
                except queue.Empty:
                    if not any(e["data"].get("job_id") == job.id for e in seen):
                        job = client.submit(T + "add", 1, 2)
        finally:
            watching.send_signal(signal.SIGINT)
            assert watching.wait(10) == 130
    mine = [e for e in seen if e["data"].get("job_id") == job.id]
    assert [e["data"]["state"] for e in mine] == ["queued", "running", "succeeded"]
    assert all(e["event"] == "state" and isinstance(e["id"], int) for e in mine)


def test_on_a_terminal_the_wait_draws_a_bar_in_colour(shared_service: SharedService) -> None:
    assert COMMAND is not None
    env = {**os.environ, "CONVEYOR_URL": shared_service.url, "COLUMNS": "100", "TERM": "xterm"}
    env.pop("NO_COLOR", None)
    screen = run_on_a_terminal([COMMAND, "submit", T + "steps", "10", "0.1", "--wait"], env)
    assert "\x1b[" in screen  # colours
    assert "━" in screen and "step " in screen  # rich's bar, with the job's message
    assert screen.rstrip().endswith("10")


def run_on_a_terminal(argv: list[str], env: dict[str, str]) -> str:
    """Run ``argv`` with a pseudo-terminal for its output; everything it drew."""
    primary, secondary = pty.openpty()
    with subprocess.Popen(argv, env=env, stdout=secondary, stderr=secondary) as proc:
        os.close(secondary)
        screen = b""
        while True:
            ready, _, _ = select.select([primary], [], [], 30)
            assert ready, f"no output for 30 s: {screen!r}"
            try:
                chunk = os.read(primary, 65536)
            except OSError:  # the terminal closed: the command is done
                break
            if not chunk:
                break
            screen += chunk
        assert proc.wait(10) == 0, screen
    os.close(primary)
    return screen.decode(errors="replace")


# -- errors and serve ---------------------------------------------------------------------------


def test_errors_are_one_line_with_their_cause(conveyor: Callable[..., Any]) -> None:
    line = one_line_error(conveyor("--url", "http://127.0.0.1:9", "status", "x"), 3)
    assert "http://127.0.0.1:9" in line
    assert "no job with id" in one_line_error(conveyor("status", "no-such-job"), 3)
    assert "unknown task" in one_line_error(conveyor("submit", "no.such.task"), 3)
    assert "invalid_arguments" in one_line_error(conveyor("submit", T + "add", "1"), 3)


def test_usage_errors_exit_2(conveyor: Callable[..., Any]) -> None:
    assert conveyor("submit").returncode == 2
    bad_kw = conveyor("submit", T + "add", "--kw", "nameless")
    assert bad_kw.returncode == 2 and "NAME=VALUE" in bad_kw.stderr
    assert conveyor("submit", T + "add", "--priority", "high").returncode == 2
    assert conveyor("frobnicate").returncode == 2
    assert conveyor("--help").returncode == 0


def test_serve_runs_the_service_with_its_settings(tmp_path: Path) -> None:
    assert COMMAND is not None
    sock = listening_socket()
    url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    env = {
        **os.environ, "PYTHONPATH": str(ROOT), "CONVEYOR_DATABASE": str(tmp_path / "served.db"),
        "CONVEYOR_TASKS": TASKS, "CONVEYOR_CONCURRENCY": "1",
    }  # fmt: skip
    log = tmp_path / "serve.log"
    with open(log, "wb") as out, subprocess.Popen(
        [COMMAND, "serve", "--bind", f"fd://{sock.fileno()}"], env=env, cwd=tmp_path,
        pass_fds=(sock.fileno(),), stdout=out, stderr=out,
    ) as served:  # fmt: skip
        try:
            with Client(url) as client:
                deadline = time.monotonic() + 20
                while True:
                    try:
                        if client.health()["status"] == "ok":
                            break
                    except Exception:
                        assert served.poll() is None, log.read_text()
                        assert time.monotonic() < deadline, log.read_text()
                        time.sleep(0.05)
                assert client.submit(T + "add", 2, 2).result(timeout_s=10) == 4
            served.send_signal(signal.SIGTERM)
            assert served.wait(20) == 0, log.read_text()
        finally:
            if served.poll() is None:
                served.kill()
            sock.close()
    assert (tmp_path / "served.db").exists()
    bad = subprocess.run(
        [COMMAND, "serve", "--bind", "127.0.0.1:0"], capture_output=True, text=True,
        env={**env, "CONVEYOR_CONCURRENCY": "lots"}, timeout=30,
    )  # fmt: skip
    assert bad.returncode != 0 and "CONVEYOR_CONCURRENCY" in bad.stderr
    assert "Traceback" not in bad.stderr


def test_a_result_goes_to_stdout_whole_and_as_written(conveyor: Callable[..., Any]) -> None:
    big = conveyor("submit", T + "big_result", "20000", "--wait")
    assert big.returncode == 0 and orjson.loads(big.stdout) == "x" * 20000
    emoji = conveyor("submit", T + "echo", ":fire: [bold]x[/]", "--wait")
    assert orjson.loads(emoji.stdout) == {"args": [":fire: [bold]x[/]"], "kwargs": {}}


def test_bad_values_are_refused_before_anything_is_sent(conveyor: Callable[..., Any]) -> None:
    for flags in (
        ["--delay-s", "nan"], ["--timeout-s", "inf"], ["--timeout-s", "-1"],
        ["--wait-timeout-s", "0"], ["--priority", "100000000000000000000"],
        ["--max-retries", "-1"], ["--memory-limit-mb", "0"],
    ):  # fmt: skip
        done = conveyor("submit", T + "add", "1", "2", *flags)
        assert done.returncode == 2 and "Traceback" not in done.stderr, (flags, done.stderr)
    assert "ASCII" in one_line_error(conveyor("--token", "é", "tasks"), 3)
    assert "ASCII" in one_line_error(
        conveyor("submit", T + "add", "1", "2", "--idempotency-key", "é"), 3
    )
    assert "not a URL" in one_line_error(conveyor("--url", "http://[::1", "tasks"), 3)
    assert "64-bit" in one_line_error(conveyor("submit", T + "echo", str(2**70)), 3)
    assert "--tail" in conveyor("logs", "x", "--tail", "2", "--follow").stderr


def test_a_reader_that_leaves_is_no_error(shared_service: SharedService, client: Client) -> None:
    assert COMMAND is not None
    env = {**os.environ, "CONVEYOR_URL": shared_service.url}
    with subprocess.Popen(
        [COMMAND, "watch", "--json"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    ) as watching:
        assert watching.stdout is not None and watching.stderr is not None
        while not select.select([watching.stdout], [], [], 0.2)[0]:
            client.submit(T + "add", 1, 2)  # until the stream, open at the present, shows one
        watching.stdout.readline()
        watching.stdout.close()  # as `| head -1` does
        while watching.poll() is None:
            client.submit(T + "add", 1, 2)
        assert watching.returncode == 0
        assert b"Traceback" not in watching.stderr.read()


def test_serve_on_a_busy_port_says_so_in_one_line(tmp_path: Path) -> None:
    assert COMMAND is not None
    taken = listening_socket()
    port = taken.getsockname()[1]
    env = {**os.environ, "CONVEYOR_DATABASE": str(tmp_path / "busy.db")}
    try:
        done = subprocess.run(
            [COMMAND, "serve", "--bind", f"127.0.0.1:{port}"], env=env, cwd=tmp_path,
            capture_output=True, text=True, timeout=30,
        )  # fmt: skip
    finally:
        taken.close()
    assert "cannot serve" in one_line_error(done, 3)
