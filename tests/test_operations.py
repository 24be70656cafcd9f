"""What operators run the service with: its log as JSON lines, and a warning when it is open."""

from __future__ import annotations

import json
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from .conftest import TASKS, ServiceProcess, wait_until


def log_lines(path: Path) -> list[str]:
    return [line for line in path.read_text().splitlines() if line.strip()]


async def test_the_log_can_be_json_lines_naming_the_job(
    service_process: Callable[..., ServiceProcess],
) -> None:
    service = service_process(CONVEYOR_LOG_FORMAT="json")
    service.start()
    await service.wait_ready()
    async with httpx.AsyncClient(base_url=service.url, timeout=10) as client:
        body = {"task": f"{TASKS}.hard_exit", "args": [3]}
        job = (await client.post("/jobs?wait_s=20", json=body)).json()
    assert job["state"] == "failed"

    def records() -> list[dict[str, Any]]:
        # hypercorn's own lines are its; every line of the service's is one JSON object
        return [json.loads(line) for line in log_lines(service.log) if line.startswith("{")]

    def crash_logged() -> bool:
        return any(r.get("job_id") == job["id"] for r in records())

    await wait_until(crash_logged, what="the crash to be logged")
    crash = next(r for r in records() if r.get("job_id") == job["id"])
    assert crash["level"] == "warning" and crash["logger"] == "conveyor.pool"
    assert "exit" in crash["message"] and isinstance(crash["worker_pid"], int)
    assert {"at", "level", "logger", "message"} <= set(records()[0])
    service_lines = [line for line in log_lines(service.log) if "conveyor" in line]
    assert service_lines and all(line.startswith("{") for line in service_lines)


def _outward_address() -> str | None:
    """An address of this machine that is not loopback, if it has one."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("10.255.255.255", 1))  # no packet is sent: this only picks a route
            address: str = probe.getsockname()[0]
        except OSError:
            return None
    return None if address.startswith("127.") else address


async def test_a_service_reached_from_outside_with_no_token_warns_once(
    service_process: Callable[..., ServiceProcess],
) -> None:
    address = _outward_address()
    if address is None:
        pytest.skip("this machine has no address but loopback")
    service = service_process()
    service.sock.close()  # listen on every address instead of the loopback one
    service.sock = socket.create_server(("0.0.0.0", 0))
    port = service.sock.getsockname()[1]
    service.url = f"http://127.0.0.1:{port}"
    service.start()
    await service.wait_ready()
    assert "no token set" not in service.log.read_text()  # loopback: nothing to say
    async with httpx.AsyncClient(base_url=f"http://{address}:{port}", timeout=10) as client:
        for _ in range(3):
            assert (await client.get("/health")).status_code == 200

    def warned() -> bool:
        return "no token set" in service.log.read_text()

    await wait_until(warned, what="the warning")
    assert service.log.read_text().count("no token set") == 1
