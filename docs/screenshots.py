"""Take the README's screenshots of the dashboard from a real run.

Starts the service as a user would (``hypercorn --config hypercorn.toml`` with the demo tasks and
a fresh database in a temporary directory), gives it some work, and photographs the overview, the
jobs list and a job page in Debian's headless Chromium::

    python docs/screenshots.py            # writes docs/overview.png, docs/jobs.png, docs/job.png
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
from playwright.async_api import async_playwright

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM_ARGS = [
    "--disable-gpu", "--disable-dev-shm-usage", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]  # fmt: skip
DEMO = "service.demo."


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


async def wait_healthy(client: httpx.AsyncClient, timeout_s: float = 20) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            if (await client.get("/health")).status_code == 200:
                return
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            raise SystemExit("the service did not become healthy")
        await asyncio.sleep(0.1)


async def submit(client: httpx.AsyncClient, task: str, **body: object) -> str:
    response = await client.post("/jobs", json={"task": DEMO + task, **body})
    response.raise_for_status()
    job_id: str = response.json()["id"]
    return job_id


async def give_it_work(client: httpx.AsyncClient) -> str:
    """A mix of jobs in every state; returns the id of the one to show on its own page."""
    for x in range(6):
        await submit(client, "add", args=[x, x * 10])
    await submit(client, "fail", kwargs={"message": "the upstream report was empty"})
    canceled = await submit(client, "sleep", kwargs={"seconds": 60}, queue="reports")
    await client.post(f"/jobs/{canceled}/cancel")
    await submit(client, "add", args=[1, 2], delay_s=3600)
    await submit(client, "sleep", kwargs={"seconds": 40, "steps": 40}, queue="reports")
    shown = await submit(client, "talk", kwargs={"lines": 60, "interval_s": 0.15})
    await submit(client, "countdown", kwargs={"start": 30, "interval_s": 1})
    await submit(client, "sleep", kwargs={"seconds": 5}, priority=-1)
    return shown


async def photograph(base: str, out: Path) -> None:
    async with httpx.AsyncClient(base_url=base) as client, async_playwright() as p:
        await wait_healthy(client)
        browser = await p.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
        page = await browser.new_page(viewport={"width": 1280, "height": 760})
        await page.goto(base + "/#/jobs")
        shown = await give_it_work(client)
        await page.wait_for_timeout(4000)  # progress and log lines accumulate
        await page.screenshot(path=out / "jobs.png")
        await page.goto(base + "/#/")
        await page.wait_for_timeout(1000)
        await page.screenshot(path=out / "overview.png", full_page=True)
        await page.goto(base + f"/#/jobs/{shown}")
        await page.wait_for_timeout(2500)
        await page.screenshot(path=out / "job.png", full_page=True)
        await browser.close()


def main(out: Path) -> None:
    port = free_port()
    with tempfile.TemporaryDirectory() as workdir:
        env = {
            **os.environ,
            "CONVEYOR_DATABASE": str(Path(workdir) / "conveyor.db"),
            "CONVEYOR_CONCURRENCY": "3",
            "CONVEYOR_SHUTDOWN_GRACE_S": "0",  # stop at once: the jobs were only for show
        }
        service = subprocess.Popen(
            [sys.executable, "-m", "hypercorn", "--config", "hypercorn.toml",
             "--bind", f"127.0.0.1:{port}", "service.app:create_app()"],
            cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        try:
            asyncio.run(photograph(f"http://127.0.0.1:{port}", out))
        finally:
            service.terminate()
            service.wait(10)
    print(f"wrote {out / 'overview.png'}, {out / 'jobs.png'} and {out / 'job.png'}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--out", type=Path, default=ROOT / "docs", help="where the PNGs go")
    main(parser.parse_args().out)
