"""``/docs``: Swagger UI from the package's own files, in a real Chromium, with nothing fetched
from anywhere but the service and nothing refused by the page's Content-Security-Policy."""

from __future__ import annotations

import json

import httpx
import pytest
from playwright.async_api import Browser, Locator, Page, expect

from .conftest import TASKS, wait_until
from .test_dashboard import browser, pages_closed, site

# the fixtures (test_dashboard skips without Chromium), used by name; in the module's event
# loop, where its browser runs
__all__ = ["browser", "pages_closed", "site"]
pytestmark = pytest.mark.asyncio(loop_scope="module")


class Watched:
    """What a page asked for, and what its console said."""

    def __init__(self, page: Page) -> None:
        self.requests: list[str] = []
        self.console: list[str] = []
        self.errors: list[str] = []
        page.on("request", lambda request: self.requests.append(request.url))
        page.on("console", lambda message: self.console.append(message.text))
        page.on("pageerror", lambda error: self.errors.append(str(error)))


def operation(page: Page, method: str, path: str) -> Locator:
    return page.locator(f".opblock-{method}:has(.opblock-summary-path[data-path='{path}'])")


async def execute(block: Locator, fill: dict[str, str]) -> str:
    """Open an operation, fill its fields (a parameter's name, or "body"), run it; the body of
    the answer as shown."""
    await block.locator(".opblock-summary").click()
    try_it = block.locator("button.try-out__btn")
    if await try_it.text_content() == "Try it out ":
        await try_it.click()
    for name, value in fill.items():
        field = (
            block.locator("textarea.body-param__text")
            if name == "body"
            else block.locator(f"tr[data-param-name='{name}'] input")
        )
        await field.fill(value)
    await block.locator("button.execute").click()
    answer = block.locator(".live-responses-table .response-col_description pre.microlight")
    await expect(answer.first).to_be_visible()
    return await answer.first.inner_text()


async def test_a_user_submits_a_job_and_cancels_it_from_the_docs(
    browser: Browser, site: str
) -> None:
    page = await browser.new_page()
    watched = Watched(page)
    await page.goto(site + "/docs")
    await expect(operation(page, "post", "/jobs")).to_be_visible()
    body = json.dumps({"task": f"{TASKS}.sleep", "args": [30]})
    job = json.loads(await execute(operation(page, "post", "/jobs"), {"body": body}))
    assert job["state"] in ("queued", "running")
    canceled = await execute(
        operation(page, "post", "/jobs/{job_id}/cancel"), {"job_id": job["id"]}
    )
    assert json.loads(canceled)["state"] == "canceled"
    async with httpx.AsyncClient(base_url=site) as client:
        assert (await client.get(f"/jobs/{job['id']}")).json()["state"] == "canceled"
    # everything came from the service itself, and the page's policy refused nothing
    assert watched.requests and all(url.startswith(site) for url in watched.requests)
    assert any(url.endswith("/docs/files/swagger-ui-bundle.js") for url in watched.requests)
    assert not [m for m in watched.console if "Content Security Policy" in m], watched.console
    assert not watched.errors


async def test_the_dashboard_links_to_the_docs(browser: Browser, site: str) -> None:
    page = await browser.new_page()
    await page.goto(site + "/")
    link = page.locator("a[href='/docs']")
    await expect(link).to_be_visible()
    await link.click()
    await wait_until(lambda: _has_operations(page), what="the docs to list the operations")


async def _has_operations(page: Page) -> bool:
    return await page.locator(".opblock").count() > 10
