"""Settings.from_env: every CONVEYOR_* variable parsed, anything wrong named in the error."""

from __future__ import annotations

import os
from dataclasses import fields
from typing import Any

import pytest

from service.errors import SettingsError
from service.settings import DEMO_TASKS, Settings


def test_defaults_without_any_variable() -> None:
    settings = Settings.from_env({})
    assert settings == Settings()
    assert settings.database == "conveyor.db"
    assert settings.tasks == (DEMO_TASKS,) == ("service.demo",)
    assert settings.concurrency == (os.cpu_count() or 1)
    assert settings.concurrency >= 1
    assert settings.cancel_grace_s == 2.0
    assert settings.token is None
    assert settings.max_interruptions == 3
    assert settings.max_body_bytes == 1024 * 1024
    assert settings.sse_keepalive_s == 15.0
    assert settings.timezone == "UTC"


def test_other_variables_are_ignored() -> None:
    environ = {"PATH": "/bin", "HOME": "/root", "CONVEYOR": "x", "XCONVEYOR_TOKEN": "y"}
    assert Settings.from_env(environ) == Settings()


@pytest.mark.parametrize(
    ("key", "text", "field", "value"),
    [
        ("CONVEYOR_DATABASE", "/data/jobs.db", "database", "/data/jobs.db"),
        ("CONVEYOR_TASKS", "myapp.tasks", "tasks", ("myapp.tasks",)),
        ("CONVEYOR_TASKS", " myapp.tasks , other ,", "tasks", ("myapp.tasks", "other")),
        ("CONVEYOR_CONCURRENCY", "4", "concurrency", 4),
        ("CONVEYOR_CANCEL_GRACE_S", "0.5", "cancel_grace_s", 0.5),
        ("CONVEYOR_CANCEL_GRACE_S", "0", "cancel_grace_s", 0.0),
        ("CONVEYOR_TOKEN", "s3cr3t-token", "token", "s3cr3t-token"),
        ("CONVEYOR_MAX_INTERRUPTIONS", "0", "max_interruptions", 0),
        ("CONVEYOR_MAX_INTERRUPTIONS", "10", "max_interruptions", 10),
        ("CONVEYOR_MAX_BODY_BYTES", "2048", "max_body_bytes", 2048),
        ("CONVEYOR_SSE_KEEPALIVE_S", "2.5", "sse_keepalive_s", 2.5),
        ("CONVEYOR_TIMEZONE", "Europe/Berlin", "timezone", "Europe/Berlin"),
    ],
)
def test_each_variable_is_parsed(key: str, text: str, field: str, value: Any) -> None:
    settings = Settings.from_env({key: text})
    assert getattr(settings, field) == value
    assert type(getattr(settings, field)) is type(value)
    others = {f.name: getattr(Settings(), f.name) for f in fields(Settings) if f.name != field}
    assert {f: getattr(settings, f) for f in others} == others


def test_all_variables_together() -> None:
    settings = Settings.from_env(
        {
            "CONVEYOR_DATABASE": "x.db",
            "CONVEYOR_TASKS": "a,b.c",
            "CONVEYOR_CONCURRENCY": "3",
            "CONVEYOR_CANCEL_GRACE_S": "1",
            "CONVEYOR_TOKEN": "t",
            "CONVEYOR_MAX_INTERRUPTIONS": "5",
            "CONVEYOR_MAX_BODY_BYTES": "100",
            "CONVEYOR_SSE_KEEPALIVE_S": "0.25",
            "CONVEYOR_TIMEZONE": "America/New_York",
            "UNRELATED": "ignored",
        }
    )
    assert settings == Settings(
        database="x.db",
        tasks=("a", "b.c"),
        concurrency=3,
        cancel_grace_s=1.0,
        token="t",
        max_interruptions=5,
        max_body_bytes=100,
        sse_keepalive_s=0.25,
        timezone="America/New_York",
    )


def test_unknown_conveyor_variable_is_refused_by_name() -> None:
    with pytest.raises(SettingsError) as caught:
        Settings.from_env({"CONVEYOR_CONCURENCY": "4", "PATH": "/bin"})
    assert caught.value.key == "CONVEYOR_CONCURENCY"
    message = str(caught.value)
    assert message.startswith("CONVEYOR_CONCURENCY: unknown setting")
    assert "CONVEYOR_CONCURRENCY" in message  # the known ones are listed
    assert "CONVEYOR_SSE_KEEPALIVE_S" in message


@pytest.mark.parametrize(
    ("key", "text"),
    [
        ("CONVEYOR_DATABASE", ""),
        ("CONVEYOR_DATABASE", "   "),
        ("CONVEYOR_TASKS", "bad-name"),
        ("CONVEYOR_TASKS", ""),
        ("CONVEYOR_TASKS", " , "),
        ("CONVEYOR_TASKS", "good,bad-name"),
        ("CONVEYOR_TASKS", "trailing."),
        ("CONVEYOR_TASKS", "my app"),
        ("CONVEYOR_CONCURRENCY", "abc"),
        ("CONVEYOR_CONCURRENCY", "0"),
        ("CONVEYOR_CONCURRENCY", "-2"),
        ("CONVEYOR_CONCURRENCY", "1.5"),
        ("CONVEYOR_CONCURRENCY", ""),
        ("CONVEYOR_CANCEL_GRACE_S", "-1"),
        ("CONVEYOR_CANCEL_GRACE_S", "soon"),
        ("CONVEYOR_CANCEL_GRACE_S", "nan"),
        ("CONVEYOR_CANCEL_GRACE_S", "inf"),
        ("CONVEYOR_TOKEN", ""),
        ("CONVEYOR_TOKEN", "two words"),
        ("CONVEYOR_TOKEN", "tab\there"),
        ("CONVEYOR_MAX_INTERRUPTIONS", "-1"),
        ("CONVEYOR_MAX_INTERRUPTIONS", "many"),
        ("CONVEYOR_MAX_BODY_BYTES", "0"),
        ("CONVEYOR_MAX_BODY_BYTES", "1MB"),
        ("CONVEYOR_SSE_KEEPALIVE_S", "0"),
        ("CONVEYOR_SSE_KEEPALIVE_S", "-3"),
        ("CONVEYOR_SSE_KEEPALIVE_S", "inf"),
        ("CONVEYOR_SSE_KEEPALIVE_S", "1e400"),
        ("CONVEYOR_TIMEZONE", "Mars/Olympus"),
        ("CONVEYOR_TIMEZONE", ""),
        ("CONVEYOR_TIMEZONE", "Europe"),
        ("CONVEYOR_TIMEZONE", "../../etc/passwd"),
    ],
)
def test_malformed_values_are_refused_by_name(key: str, text: str) -> None:
    with pytest.raises(SettingsError) as caught:
        Settings.from_env({key: text})
    assert caught.value.key == key
    assert str(caught.value).startswith(f"{key}: expected ")
    assert repr(text) in str(caught.value)  # the offending value is quoted


def test_the_first_bad_variable_in_name_order_is_reported() -> None:
    environ = {"CONVEYOR_TOKEN": "a b", "CONVEYOR_CONCURRENCY": "0", "CONVEYOR_ZZZ": "1"}
    with pytest.raises(SettingsError) as caught:
        Settings.from_env(environ)
    assert caught.value.key == "CONVEYOR_CONCURRENCY"


def test_reads_os_environ_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in list(os.environ):
        if key.startswith("CONVEYOR_"):
            monkeypatch.delenv(key)
    monkeypatch.setenv("CONVEYOR_CONCURRENCY", "7")
    assert Settings.from_env().concurrency == 7
    monkeypatch.setenv("CONVEYOR_NOPE", "1")
    with pytest.raises(SettingsError, match="CONVEYOR_NOPE"):
        Settings.from_env()
