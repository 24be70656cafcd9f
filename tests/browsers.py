"""Debian's Chromium for the browser tests, launched as Playwright drives it here."""

from __future__ import annotations

import os
import shutil
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from playwright.async_api import Browser, async_playwright

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
# no sandbox needs root's say-so (Playwright adds --no-sandbox); the rest keep Chromium off the
# network, which is closed here and would refuse it many times over
CHROMIUM_ARGS = [
    "--disable-gpu", "--disable-dev-shm-usage", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]  # fmt: skip
# without it the browser tests skip, except in CI, which installs it and must run them
HAVE_CHROMIUM = os.path.exists(CHROMIUM) or os.environ.get("CI") == "true"


@asynccontextmanager
async def chromium() -> AsyncIterator[Browser]:
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            await browser.close()
