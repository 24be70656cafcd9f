"""The dashboard in a real headless Chromium, against a real server on a free port."""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio
from playwright.async_api import Browser, Locator, Page, expect

from service.settings import Settings

from .browsers import HAVE_CHROMIUM, chromium
from .conftest import TASKS, finished, live_server, process_gone, submit_job, wait_state, wait_until
from .relay import Relay

if not HAVE_CHROMIUM:
    pytest.skip(
        "the dashboard tests need Debian's chromium (apt-get install chromium); "
        "CI installs it and runs them",
        allow_module_level=True,
    )

T = TASKS + "."
expect.set_options(timeout=10_000)  # a loaded 2-core CI machine; the 1 s promises set their own


# One Chromium for the module (a launch is a second or more), each test's pages closed after it:
# the tests, and the fixtures they use, run in the module's event loop, where it was launched.
pytestmark = pytest.mark.asyncio(loop_scope="module")


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def browser() -> AsyncIterator[Browser]:
    async with chromium() as launched:
        yield launched


@pytest_asyncio.fixture(autouse=True, loop_scope="module")
async def pages_closed(request: pytest.FixtureRequest) -> AsyncIterator[None]:
    yield
    if "browser" in request.fixturenames:
        for context in request.getfixturevalue("browser").contexts:
            await context.close()


@pytest_asyncio.fixture(loop_scope="module")
async def site(settings: Settings) -> AsyncIterator[str]:
    async with live_server(settings) as url:
        yield url


SCRIPT_ERRORS: list[str] = []  # uncaught errors of any page a test opened


@pytest.fixture(autouse=True)
def no_script_errors() -> Iterator[None]:
    SCRIPT_ERRORS.clear()
    yield
    assert not SCRIPT_ERRORS, f"the page's scripts failed: {SCRIPT_ERRORS}"


async def open_page(browser: Browser, url: str, **options: Any) -> Page:
    page = await browser.new_page(**options)
    page.on("pageerror", lambda error: SCRIPT_ERRORS.append(str(error)))
    page.set_default_timeout(10_000)
    await page.goto(url)
    return page


def row(page: Page, job_id: str) -> Any:
    return page.locator(f'table.jobs tr[data-job-id="{job_id}"]')


# -- submit, progress, log ------------------------------------------------------------------------


async def test_a_job_from_the_form_shows_up_moves_and_logs(browser: Browser, site: str) -> None:
    watcher = await open_page(browser, site + "/#/jobs")
    await expect(watcher.locator("#connection")).to_have_attribute("data-status", "live")
    page = await open_page(browser, site + f"/#/submit?task={T}paged_report")
    await expect(page.locator("#field-pages")).to_have_value("5")  # the default, filled in
    await page.fill("#field-pages", "8")
    await page.fill("#field-interval_s", "0.4")
    await page.click("button[type=submit]")
    await expect(page).to_have_url(re.compile("#/jobs/"))
    job_id = page.url.split("#/jobs/")[1]
    # the job page: its progress bar moves, its log lines arrive, then it succeeds
    bar = page.locator(".job-head progress")
    await wait_until(lambda: _value_above(bar, 0.1), what="the progress bar to move")
    first = float(await bar.get_attribute("value") or 0)
    await wait_until(lambda: _value_above(bar, first), what="more")
    await expect(page.locator(".log li").first).to_contain_text("page 1 of 8 done")
    await expect(page.locator(".job-state .badge")).to_have_text("succeeded", timeout=15_000)
    await expect(page.locator(".log li")).to_have_count(8)
    await expect(page.locator(".result")).to_contain_text('"pages": 8')
    await expect(page.locator(".timeline li")).to_have_count(3)  # queued, running, succeeded
    # the list that was open all along got the new row, and saw it finish, without a reload
    await expect(row(watcher, job_id)).to_have_count(1)
    await expect(row(watcher, job_id).locator(".badge")).to_have_text("succeeded")


async def _value_above(bar: Locator, above: float) -> bool:
    """Whether the progress bar's value is past ``above``."""
    text = await bar.get_attribute("value")
    return text is not None and float(text) > above


async def test_the_apis_refusals_show_next_to_their_fields(browser: Browser, site: str) -> None:
    page = await open_page(browser, site + f"/#/submit?task={T}add")
    await page.fill("#field-x", "1")  # y left empty: the API says it is required
    await page.click("details.options summary")
    await page.fill("#option-priority", "99999999")  # beyond what the API accepts
    await page.click("button[type=submit]")
    await expect(page.locator("#option-priority-error")).not_to_be_empty()
    await expect(page.locator("#option-priority")).to_have_attribute("aria-invalid", "true")
    await page.fill("#option-priority", "")
    await page.click("button[type=submit]")
    await expect(page.locator("#field-y-error")).to_have_text("required")
    await expect(page.locator("#field-x-error")).to_be_empty()
    assert "#/submit" in page.url  # nothing was submitted
    # a value of the wrong type, checked by the API against the task's annotation
    await page.select_option("#task", T + "typed")
    await page.fill("#field-count", "2")
    await page.fill("#field-tags", '["red", 7]')
    await page.click("button[type=submit]")
    await expect(page.locator("#field-tags-error")).to_contain_text("valid string")
    await page.fill("#field-tags", "not json")  # refused before it is sent
    await page.click("button[type=submit]")
    await expect(page.locator("#field-tags-error")).to_contain_text("not valid JSON")
    await page.fill("#field-tags", '["red", "blue"]')
    await page.click("button[type=submit]")
    await expect(page).to_have_url(re.compile("#/jobs/"))
    await expect(page.locator(".job-state .badge")).to_have_text("succeeded")


async def test_the_form_sends_arguments_as_the_signature_wants(browser: Browser, site: str) -> None:
    page = await open_page(browser, site + f"/#/submit?task={T}gather")
    await page.fill("#field-first", "a")
    await page.fill("#field-rest", '["b", "c"]')
    await page.fill("#field-key", "the argument")
    await page.click("details.options summary")
    await page.fill("#option-key", "the job's key")
    await page.click("button[type=submit]")
    await expect(page).to_have_url(re.compile("#/jobs/"))
    await expect(page.locator(".job-state .badge")).to_have_text("succeeded")
    await expect(page.locator(".result")).to_contain_text("the argument")
    result = await page.locator(".result").inner_text()
    assert json.loads(result) == {"first": "a", "rest": ["b", "c"], "key": "the argument"}
    await expect(page.locator(".facts")).to_contain_text("the job's key")


# -- cancel and retry -----------------------------------------------------------------------------


async def test_cancel_stops_a_running_job_within_a_second(
    browser: Browser, site: str, tmp_path: Path
) -> None:
    marker = tmp_path / "pid"
    async with httpx.AsyncClient(base_url=site) as client:
        job_id = await submit_job(client, "sleep", 60, str(marker))
        await wait_state(client, job_id, "running")
        page = await open_page(browser, site + f"/#/jobs/{job_id}")
        await expect(page.locator(".job-state .badge")).to_have_text("running")
        pid = int(marker.read_text().split()[0])
        await page.click("button:has-text('Cancel')")
        await expect(page.locator(".job-state .badge")).to_have_text("canceled", timeout=1000)
        await expect(page.locator(".outcome")).to_contain_text("Canceled")
        await wait_until(lambda: process_gone(pid), what="the job's process killed")
        assert (await client.get(f"/jobs/{job_id}")).json()["state"] == "canceled"
        # retry: queued again, the page follows it to its next run
        await page.click("button:has-text('Retry')")
        await expect(page.locator(".outcome")).to_contain_text("Queued again")
        await expect(page.locator(".job-state .badge")).to_have_text("running")
        await expect(page.locator("button:has-text('Cancel')")).to_be_enabled()


async def test_a_refused_cancel_says_why(browser: Browser, site: str) -> None:
    async with httpx.AsyncClient(base_url=site) as client:
        job_id = await submit_job(client, "add", 1, 2)
        await finished(client, job_id)
    page = await open_page(browser, site + f"/#/jobs/{job_id}")
    await expect(page.locator(".job-state .badge")).to_have_text("succeeded")
    await expect(page.locator("button:has-text('Cancel')")).to_be_disabled()
    await expect(page.locator("button:has-text('Retry')")).to_be_disabled()
    await expect(page.locator(".result")).to_have_text("3")


async def test_the_page_of_a_retried_job_follows_its_new_run(browser: Browser, site: str) -> None:
    async with httpx.AsyncClient(base_url=site) as client:
        body = {"task": T + "paged_report", "kwargs": {"pages": 40, "interval_s": 0.2}}
        job_id = (await client.post("/jobs", json=body)).json()["id"]
        await wait_state(client, job_id, "running")
        await client.post(f"/jobs/{job_id}/cancel")
        await client.post(f"/jobs/{job_id}/retry")
        await wait_state(client, job_id, "running")
        page = await open_page(browser, site + f"/#/jobs/{job_id}")
        await expect(page.locator(".job-state .badge")).to_have_text("running")
        timeline = page.locator(".timeline li")
        await expect(timeline.nth(2)).to_have_attribute("data-state", "canceled")
        await expect(timeline.nth(4)).to_have_attribute("data-state", "running")
        lines = page.locator(".log li")
        seen = await lines.count()
        await wait_until(lambda: _more(lines, seen), what="log lines of the second run")
        await page.click("button:has-text('Cancel')")
        await expect(page.locator(".job-state .badge")).to_have_text("canceled")


async def _more(lines: Any, than: int) -> bool:
    return bool(await lines.count() > than)


async def test_a_burst_longer_than_a_page_leaves_no_job_out_of_reach(
    browser: Browser, site: str
) -> None:
    page = await open_page(browser, site + "/#/jobs")
    await expect(page.locator("#connection")).to_have_attribute("data-status", "live")
    jobs = [{"task": T + "add", "args": [i, i]} for i in range(80)]
    async with httpx.AsyncClient(base_url=site) as client:
        response = await client.post("/jobs/batch", json={"jobs": jobs})
        ids = [job["id"] for job in response.json()["jobs"]]
    await expect(row(page, ids[-1])).to_have_count(1)
    await page.click("button:has-text('Load more')")
    await expect(row(page, ids[0])).to_have_count(1)
    await expect(page.locator("table.jobs tbody tr")).to_have_count(80)


async def test_the_skip_link_moves_the_focus_and_keeps_the_view(
    browser: Browser, site: str
) -> None:
    page = await open_page(browser, site + "/#/jobs?state=failed")
    await expect(page.locator("main h1")).to_have_text("Jobs")
    await page.focus("a.skip")
    await page.keyboard.press("Enter")
    assert await page.evaluate("document.activeElement.id") == "view"
    assert page.url.endswith("#/jobs?state=failed")
    await expect(page.locator("main h1")).to_have_text("Jobs")


# -- a real cut ------------------------------------------------------------------------------------


async def test_what_finished_while_the_page_was_cut_off_shows_after_it_reconnects(
    browser: Browser, site: str
) -> None:
    relay = Relay(int(site.rsplit(":", 1)[1]))
    await relay.start()
    try:
        async with httpx.AsyncClient(base_url=site) as client:
            running = await submit_job(client, "sleep", 2)
            await wait_state(client, running, "running")
            page = await open_page(browser, f"http://127.0.0.1:{relay.port}/#/jobs")
            await expect(row(page, running).locator(".badge")).to_have_text("running")
            await expect(page.locator("#connection")).to_have_attribute("data-status", "live")
            await relay.cut()
            await expect(page.locator("#connection")).to_have_attribute(
                "data-status", "reconnecting"
            )
            # meanwhile: the running job ends and a new one comes and goes
            await finished(client, running)
            newcomer = await submit_job(client, "add", 2, 3)
            await finished(client, newcomer)
            assert await row(page, running).locator(".badge").inner_text() == "running"
            await relay.start()  # the same port: the browser's own retries get through
            await expect(row(page, running).locator(".badge")).to_have_text(
                "succeeded", timeout=15_000
            )
            await expect(row(page, newcomer).locator(".badge")).to_have_text("succeeded")
            await expect(page.locator("#connection")).to_have_attribute("data-status", "live")
    finally:
        await relay.close()


# -- the overview ------------------------------------------------------------------------------


async def test_the_overview_counts_follow_the_jobs(browser: Browser, site: str) -> None:
    page = await open_page(browser, site + "/#/")
    succeeded = page.locator('.tile[data-state="succeeded"] .tile-count')
    await expect(succeeded).to_have_text("0")
    await expect(page.locator("#connection")).to_have_attribute("data-status", "live")
    async with httpx.AsyncClient(base_url=site) as client:
        held = await submit_job(client, "sleep", 30)
        await wait_state(client, held, "running")
        await expect(page.locator('.tile[data-state="running"] .tile-count')).to_have_text("1")
        await expect(page.locator("table.workers")).to_contain_text(T + "sleep")
        for i in range(3):
            await finished(client, await submit_job(client, "add", i, i))
        await expect(succeeded).to_have_text("3")
        await expect(page.locator(".chart rect.state-succeeded")).not_to_have_count(0)
        await client.post(f"/jobs/{held}/cancel")
        await expect(page.locator('.tile[data-state="canceled"] .tile-count')).to_have_text("1")
        await expect(page.locator('.tile[data-state="running"] .tile-count')).to_have_text("0")
        await expect(page.locator("table.workers .badge.worker-busy")).to_have_count(0)


# -- with a token -----------------------------------------------------------------------------


async def test_with_a_token_the_page_asks_once_and_streams_never_carry_it(
    browser: Browser, settings: Settings
) -> None:
    token = "correct horse battery staple"
    async with live_server(dataclasses.replace(settings, token=token)) as url:
        page = await open_page(browser, url + "/#/jobs")
        urls: list[str] = []
        page.on("request", lambda request: urls.append(request.url))
        dialog = page.locator("#token-dialog")
        await expect(dialog).to_be_visible()
        await page.fill("#token-input", "wrong")
        await page.click("#token-form button")
        await expect(page.locator("#token-error")).to_contain_text("not accepted")
        await page.fill("#token-input", token)
        await page.click("#token-form button")
        await expect(dialog).to_be_hidden()
        await expect(page.locator("#connection")).to_have_attribute("data-status", "live")
        headers = {"Authorization": f"Bearer {token}"}
        async with httpx.AsyncClient(base_url=url, headers=headers) as client:
            job_id = await submit_job(client, "add", 1, 1)
            await expect(row(page, job_id).locator(".badge")).to_have_text("succeeded")
        await page.reload()  # kept for the tab's session: not asked again
        await expect(row(page, job_id)).to_have_count(1)
        await expect(dialog).to_be_hidden()
        streams = [u for u in urls if "/events" in u]
        assert streams and all("token=" in u for u in streams)
        assert not any("correct" in u or "horse" in u for u in urls)


# -- text, widths, colours, keys ---------------------------------------------------------------


async def test_values_are_shown_as_text_never_as_markup(browser: Browser, site: str) -> None:
    evil = '<img src=x onerror="window.pwned=1"><b>bold</b>'
    async with httpx.AsyncClient(base_url=site) as client:
        job_id = await submit_job(client, "echo", evil, kwargs={"note": evil})
        await finished(client, job_id)
    page = await open_page(browser, site + f"/#/jobs/{job_id}")
    await expect(page.locator(".result")).to_contain_text("<img src=x")
    await page.goto(site + "/#/jobs")
    await expect(row(page, job_id)).to_contain_text("<b>bold</b>")
    assert await page.locator("main img, main b").count() == 0
    assert await page.evaluate("window.pwned") is None


@pytest.mark.parametrize("width", [390, 1280])
async def test_readable_at_phone_and_laptop_widths(browser: Browser, site: str, width: int) -> None:
    async with httpx.AsyncClient(base_url=site) as client:
        job_id = await submit_job(client, "echo", "x" * 300)
        await finished(client, job_id)
    for view in ("/#/", "/#/jobs", f"/#/jobs/{job_id}", "/#/schedules", "/#/submit"):
        page = await open_page(browser, site + view, viewport={"width": width, "height": 800})
        await expect(page.locator("main h1")).to_be_visible()
        overflow = await page.evaluate(
            "document.documentElement.scrollWidth - document.documentElement.clientWidth"
        )
        assert overflow <= 0, f"{view} scrolls sideways by {overflow}px at {width}px"
        await page.close()


async def test_dark_and_light_follow_the_system(browser: Browser, site: str) -> None:
    colours = {}
    for scheme in ("light", "dark"):
        page = await open_page(browser, site + "/#/", color_scheme=scheme)
        await expect(page.locator("main h1")).to_be_visible()
        colours[scheme] = await page.evaluate("getComputedStyle(document.body).backgroundColor")
        await page.close()
    assert colours["light"] != colours["dark"]


async def test_usable_from_the_keyboard(browser: Browser, site: str) -> None:
    async with httpx.AsyncClient(base_url=site) as client:
        job_id = await submit_job(client, "add", 4, 5)
        await finished(client, job_id)
    page = await open_page(browser, site + "/#/")
    await expect(page.locator("main h1")).to_have_text("Overview")
    for _ in range(20):  # tab through the header to the "Jobs" link
        await page.keyboard.press("Tab")
        if await page.evaluate("document.activeElement.textContent") == "Jobs":
            break
    await page.keyboard.press("Enter")
    await expect(page.locator("main h1")).to_have_text("Jobs")
    link = row(page, job_id).locator("a")
    await link.focus()
    await page.keyboard.press("Enter")
    await expect(page.locator(".result")).to_have_text("9")


# -- workflows ------------------------------------------------------------------------------------


async def test_a_workflow_is_drawn_as_a_graph_that_moves_live(
    browser: Browser, site: str, tmp_path: Path
) -> None:
    go = tmp_path / "go"
    body = {
        "group": [{"task": T + "gate", "args": [str(go)]}, {"task": T + "add", "args": [1, 2]}],
        "then": {"task": T + "echo"},
    }
    async with httpx.AsyncClient(base_url=site) as client:
        made = (await client.post("/workflows", json=body)).json()
    page = await open_page(browser, site + f"/#/workflows/{made['id']}")
    nodes = page.locator(".workflow-graph .node")
    await expect(nodes).to_have_count(3)
    await expect(page.locator(".workflow-graph .edge")).to_have_count(2)
    gate, added, callback = (job["id"] for job in made["jobs"])
    box = page.locator(f'.workflow-graph .node[data-job-id="{callback}"]')
    await expect(box).to_have_class(re.compile("state-waiting"))
    await expect(page.locator(f'.node[data-job-id="{added}"]')).to_have_class(
        re.compile("state-succeeded")
    )
    go.touch()
    await expect(box).to_have_class(re.compile("state-succeeded"))
    await expect(page.locator(".workflow-state .badge")).to_have_text("succeeded")
    await expect(page.locator(".result")).to_contain_text("3")
    # a box is the way to its job's page
    await page.locator(f'.node[data-job-id="{gate}"]').click()
    await expect(page).to_have_url(re.compile(f"#/jobs/{gate}"))
    await expect(page.locator("dl.facts")).to_contain_text(made["id"][:8])


async def test_cancel_on_the_workflow_page_stops_all_of_it(browser: Browser, site: str) -> None:
    body = {"chain": [{"task": T + "sleep", "args": [30]}, {"task": T + "echo"}]}
    async with httpx.AsyncClient(base_url=site) as client:
        made = (await client.post("/workflows", json=body)).json()
        await wait_state(client, made["jobs"][0]["id"], "running")
    page = await open_page(browser, site + f"/#/workflows/{made['id']}")
    await page.get_by_role("button", name="Cancel workflow").click()
    await expect(page.locator(".workflow-state .badge")).to_have_text("canceled")
    await expect(page.locator(".workflow-graph .node.state-canceled")).to_have_count(2)
    await expect(page.get_by_role("button", name="Cancel workflow")).to_be_disabled()
