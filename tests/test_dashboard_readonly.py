"""The dashboard with a read token: every control that would write is gone, the header says
"read-only", and what it shows still loads and follows the stream."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator

import httpx
import pytest
import pytest_asyncio
from playwright.async_api import Browser, Page, Route, expect

from service.settings import Settings

from .conftest import live_server, submit_job, wait_state
from .test_dashboard import (
    T,
    browser,
    no_script_errors,
    open_page,
    pages_closed,
    row,
)

__all__ = ["browser", "no_script_errors", "pages_closed"]  # the fixtures, used here by name
pytestmark = pytest.mark.asyncio(loop_scope="module")

READ, WRITE = "r3ad", "wr1te"


@pytest_asyncio.fixture(loop_scope="module")
async def scoped_site(settings: Settings) -> AsyncIterator[str]:
    """A service with a read and a write token, a job running and a schedule made."""
    scoped = dataclasses.replace(settings, tokens={READ: "read", WRITE: "write"})
    async with live_server(scoped) as url:
        yield url


def writer(url: str) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=url, headers={"Authorization": f"Bearer {WRITE}"})


async def running_job_and_schedule(client: httpx.AsyncClient) -> str:
    """A running job's id, and a schedule "nightly" besides."""
    body = {"task": T + "tick", "cron": "@daily", "args": ["x"], "id": "nightly"}
    assert (await client.post("/schedules", json=body)).status_code == 201
    job_id = await submit_job(client, "sleep", 30)
    await wait_state(client, job_id, "running")
    return job_id


async def sign_in(page: Page, token: str) -> None:
    await expect(page.locator("#token-dialog")).to_be_visible()
    await page.fill("#token-input", token)
    await page.click("#token-form button")
    await expect(page.locator("#token-dialog")).to_be_hidden()


async def test_a_read_token_sees_everything_and_no_control_that_writes(
    browser: Browser, scoped_site: str
) -> None:
    async with writer(scoped_site) as client:
        running = await running_job_and_schedule(client)
        page = await open_page(browser, scoped_site + "/#/jobs")
        await sign_in(page, READ)
        badge = page.locator("header").get_by_text("read-only", exact=True)
        await expect(badge).to_be_visible()
        await expect(page.get_by_role("link", name="Submit")).to_be_hidden()
        # the list loads, and follows what happens: a job submitted elsewhere comes and goes
        await expect(row(page, running).locator(".badge")).to_have_text("running")
        await expect(page.locator("#connection")).to_have_attribute("data-status", "live")
        newcomer = await submit_job(client, "add", 2, 3)
        await expect(row(page, newcomer).locator(".badge")).to_have_text("succeeded")
        # the running job: all it shows, no Cancel or Retry
        await page.goto(scoped_site + f"/#/jobs/{running}")
        await expect(page.locator(".job-state .badge")).to_have_text("running")
        await expect(page.locator(".facts")).to_contain_text("created")
        await expect(page.locator("main button")).to_have_count(0)
        await expect(badge).to_be_visible()
        # the schedules: listed, with no buttons and no form
        await page.goto(scoped_site + "/#/schedules")
        nightly = page.locator('table.schedules tr[data-schedule-id="nightly"]')
        await expect(nightly.locator(".badge")).to_have_text("active")
        await expect(page.locator("main button")).to_have_count(0)
        await expect(page.locator("main form")).to_have_count(0)
        await expect(page.get_by_role("heading", name="New schedule")).to_have_count(0)
        # the submit view, reached by its address: says why there is no form
        await page.goto(scoped_site + f"/#/submit?task={T}add")
        await expect(page.locator("main")).to_contain_text("This token may only read")
        await expect(page.locator("main form")).to_have_count(0)
        await expect(badge).to_be_visible()
        await client.post(f"/jobs/{running}/cancel")


async def test_a_write_token_gets_the_controls_back_after_a_read_token(
    browser: Browser, scoped_site: str
) -> None:
    async with writer(scoped_site) as client:
        running = await running_job_and_schedule(client)
        page = await open_page(browser, scoped_site + f"/#/jobs/{running}")
        await sign_in(page, READ)
        await expect(page.locator(".job-state .badge")).to_have_text("running")
        await expect(page.get_by_role("button", name="Cancel")).to_have_count(0)
        await page.click("#sign-out")  # another token in the same tab
        await sign_in(page, WRITE)
        await expect(page.locator(".job-state .badge")).to_have_text("running")
        await expect(page.get_by_role("button", name="Cancel")).to_be_enabled()
        await expect(page.get_by_role("button", name="Retry")).to_be_visible()
        await expect(page.locator("header").get_by_text("read-only")).to_be_hidden()
        await expect(page.get_by_role("link", name="Submit")).to_be_visible()
        await page.goto(scoped_site + "/#/schedules")
        nightly = page.locator('table.schedules tr[data-schedule-id="nightly"]')
        await expect(nightly.get_by_role("button", name="Pause")).to_be_visible()
        await expect(nightly.get_by_role("button", name="Delete")).to_be_visible()
        await expect(page.locator("#schedule-cron")).to_be_visible()
        await page.goto(scoped_site + f"/#/submit?task={T}add")
        await expect(page.locator("#field-x")).to_be_visible()
        await client.post(f"/jobs/{running}/cancel")


async def test_a_write_refused_after_all_says_why_and_the_next_view_is_read_only(
    browser: Browser, scoped_site: str
) -> None:
    async with writer(scoped_site) as client:
        running = await running_job_and_schedule(client)
        page = await open_page(browser, "about:blank")

        # the service says "write" for the read token: as a page that learnt the scope of a
        # token since made a read token would believe
        async def as_write(route: Route) -> None:
            answer = await route.fetch()
            body = await answer.json()
            if answer.ok:
                body["scope"] = "write"
            await route.fulfill(response=answer, json=body)

        await page.route("**/stream-token", as_write)
        await page.goto(scoped_site + f"/#/jobs/{running}")
        await sign_in(page, READ)
        await expect(page.locator(".job-state .badge")).to_have_text("running")
        # its stream token is in too (the last "write" it is told): what it learns next counts
        await expect(page.locator("#connection")).to_have_attribute("data-status", "live")
        await page.get_by_role("button", name="Cancel").click()
        refusal = "Not canceled: this token may only read"
        await expect(page.locator(".outcome")).to_contain_text(refusal)
        assert (await client.get(f"/jobs/{running}")).json()["state"] == "running"
        await page.unroute("**/stream-token")
        await page.goto(scoped_site + "/#/schedules")
        await expect(page.locator("header").get_by_text("read-only")).to_be_visible()
        nightly = page.locator('table.schedules tr[data-schedule-id="nightly"]')
        await expect(nightly.locator(".badge")).to_have_text("active")
        await expect(page.locator("main form")).to_have_count(0)
        await client.post(f"/jobs/{running}/cancel")
