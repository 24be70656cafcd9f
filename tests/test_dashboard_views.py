"""The dashboard's views in Chromium: times with their day, tables at phone width, progress only
where a job reported it, a log's attempts, what an empty log and a view on its way say, the
error of a job over its memory limit, and the schedules."""

from __future__ import annotations

import asyncio
import dataclasses
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
import pytest_asyncio
from playwright.async_api import Browser, Locator, Page, Route, expect

from service.settings import Settings

from .conftest import TASKS, finished, live_server, submit_job, wait_state
from .test_dashboard import (
    browser,
    no_script_errors,
    open_page,
    pages_closed,
    row,
    site,
)

__all__ = ["browser", "no_script_errors", "pages_closed", "site"]  # the fixtures, by name
pytestmark = pytest.mark.asyncio(loop_scope="module")

DAY_AND_MINUTE = re.compile(r"^\d{1,2} [A-Z][a-z]{2} \d\d:\d\d$")  # "3 Dec 14:03"
LONG_TASK = "quarterly_report_for_every_region"
T = TASKS + "."
LEAP_DAY = "task:tests.cron_tasks.leap_day"  # declared with @task(cron=...)


# -- times -----------------------------------------------------------------------------------


async def test_a_time_shows_its_day_unless_it_is_today(browser: Browser, site: str) -> None:
    page = await open_page(browser, site + "/#/submit")
    await expect(page.locator("main h1")).to_be_visible()
    shown = await page.evaluate(
        """async () => {
            const { clockText, relative } = await import("/static/dom.js");
            const now = new Date(2026, 11, 3, 18, 0, 0);
            return [
                clockText(new Date(2026, 11, 3, 14, 3, 7), now),
                clockText(new Date(2026, 11, 1, 14, 3, 7), now),
                clockText(new Date(2025, 11, 3, 14, 3, 7), now),
                relative(new Date(2026, 11, 3, 17, 59, 58), now),
                relative(new Date(2026, 11, 3, 17, 59, 20), now),
                relative(new Date(2026, 11, 3, 17, 55, 0), now),
                relative(new Date(2026, 11, 3, 20, 0, 30), now),
                relative(new Date(2026, 11, 1, 17, 0, 0), now),
            ];
        }"""
    )
    assert shown == [
        "14:03:07", "1 Dec 14:03", "3 Dec 2025 14:03",
        "just now", "40 s ago", "5 min ago", "in 2 h", "2 days ago",
    ]  # fmt: skip
    async with httpx.AsyncClient(base_url=site) as client:
        later = await submit_job(client, "add", 1, 2, delay_s=7200)
    await page.goto(site + f"/#/jobs/{later}")
    scheduled = page.locator(".facts div", has_text="scheduled for").locator("time")
    await expect(scheduled).to_have_attribute("title", re.compile(r"^in 1 h · "))


async def test_every_time_shown_says_its_day_and_how_long_ago(
    browser: Browser, site: str, tmp_path: Path
) -> None:
    gate = tmp_path / "gate"
    async with httpx.AsyncClient(base_url=site) as client:
        done = await submit_job(client, "print_lines", 2)
        await finished(client, done)
        held = await submit_job(client, LONG_TASK, str(gate))
        await wait_state(client, held, "running")
        # the browser lives two days on: every job it shows is from another day
        page = await open_page(browser, "about:blank")
        await page.clock.set_system_time(datetime.now(UTC) + timedelta(days=2))
        await page.goto(site + "/#/jobs")
        created = row(page, done).locator("time")
        await expect(created).to_have_text(DAY_AND_MINUTE)
        await expect(created).to_have_attribute("title", re.compile(r"^2 days ago · "))
        await page.goto(site + f"/#/jobs/{done}")
        await expect(page.locator(".log li")).to_have_count(2)
        await expect(page.locator("table.attempts tbody tr")).to_have_count(1)
        await expect(page.locator(".timeline li")).to_have_count(3)
        times = page.locator("main time")
        # created, started, finished; 3 in the timeline; 2 log lines; the attempt's 2
        await expect(times).to_have_count(10)
        for i in range(await times.count()):
            await expect(times.nth(i)).to_have_text(DAY_AND_MINUTE)
            await expect(times.nth(i)).to_have_attribute("title", re.compile(r"^2 days ago · "))
        await page.goto(site + "/#/")
        worker = page.locator(f'table.workers tr[data-job-id="{held}"]')
        running_for = worker.locator('td[data-label="running for"]')
        await expect(running_for).to_have_attribute("title", re.compile(r"^started 2 days ago · "))
        gate.touch()
        await finished(client, held)


# -- phone width -----------------------------------------------------------------------------

OVERFLOWS = """() => {
    const width = document.documentElement.clientWidth;
    const problems = [];
    const sideways = document.documentElement.scrollWidth - width;
    if (sideways > 0) problems.push(`the page scrolls sideways by ${sideways}px`);
    for (const table of document.querySelectorAll("main table")) {
        const box = table.getBoundingClientRect();
        if (box.left < 0 || box.right > width) problems.push(`${table.className}: ${box.right}px`);
        const wrap = table.parentElement;
        if (wrap.scrollWidth > wrap.clientWidth) problems.push(`${table.className} is cut`);
    }
    return problems;
}"""

# the parts of a dotted name (each up to and with its dot) broken across lines although they
# would fit on one line of the block that holds the name
SPLIT_SEGMENTS = """(el) => {
    let block = el;
    while (getComputedStyle(block).display.startsWith("inline")) block = block.parentElement;
    const style = getComputedStyle(block);
    const room = block.clientWidth - parseFloat(style.paddingLeft) - parseFloat(style.paddingRight);
    const split = [];
    const walker = document.createTreeWalker(el, NodeFilter.SHOW_TEXT);
    for (let node = walker.nextNode(); node; node = walker.nextNode()) {
        let start = 0;
        for (const part of node.data.split(/(?<=[.])/)) {
            const range = document.createRange();
            range.setStart(node, start);
            range.setEnd(node, start + part.length);
            const rects = [...range.getClientRects()];
            const width = rects.reduce((sum, r) => sum + r.width, 0);
            const lines = new Set(rects.map((r) => Math.round(r.top))).size;
            if (part.trim() && lines > 1 && width <= room) split.push(part);
            start += part.length;
        }
    }
    return split;
}"""


async def test_tables_fit_a_phone_and_task_names_break_at_their_dots(
    browser: Browser, site: str, tmp_path: Path
) -> None:
    gate = tmp_path / "gate"
    async with httpx.AsyncClient(base_url=site) as client:
        retried = await submit_job(
            client, "flaky_talker", str(tmp_path / "runs"), 1, max_retries=1, retry_backoff_s=0.05
        )
        await finished(client, retried)
        held = await submit_job(client, LONG_TASK, str(gate))
        await wait_state(client, held, "running")
        views = {
            "/#/": f'table.workers tr[data-job-id="{held}"] a',
            "/#/jobs": f'table.jobs tr[data-job-id="{held}"] td.task',
            f"/#/jobs/{held}": "h1 .task",
            f"/#/jobs/{retried}": "table.attempts tbody tr >> nth=1",
        }
        for view, shown in views.items():
            page = await open_page(browser, site + view, viewport={"width": 390, "height": 800})
            name = page.locator(shown)
            await expect(name).to_be_visible()
            assert await page.evaluate(OVERFLOWS) == [], view
            if LONG_TASK in await name.inner_text():
                assert await name.evaluate(SPLIT_SEGMENTS) == [], view
                width = await name.evaluate("(el) => el.getBoundingClientRect().width")
                assert width > 150, f"{view}: the name is squeezed into {width}px"
            await page.close()
        gate.touch()
        await finished(client, held)


# -- progress --------------------------------------------------------------------------------


async def test_progress_shows_only_for_jobs_that_reported_it(
    browser: Browser, site: str, tmp_path: Path
) -> None:
    async with httpx.AsyncClient(base_url=site) as client:
        reported = await submit_job(client, "steps", 3)
        plain = await submit_job(client, "add", 1, 2)
        failed = await submit_job(client, "fail", "no")
        for job_id in (reported, plain, failed):
            await finished(client, job_id)
        running = await submit_job(client, "sleep", 30)
        await wait_state(client, running, "running")
        page = await open_page(browser, site + "/#/jobs")
        await expect(row(page, reported).locator("progress")).to_have_attribute("value", "1")
        await expect(row(page, reported)).to_contain_text("100%")
        for job_id in (plain, failed, running):
            await expect(row(page, job_id)).to_have_count(1)
            await expect(row(page, job_id).locator(".progress")).to_have_count(0)
        for job_id, state in ((failed, "failed"), (running, "running")):
            await page.goto(site + f"/#/jobs/{job_id}")
            await expect(page.locator(".job-state .badge")).to_have_text(state)
            await expect(page.locator(".job-head .progress")).to_have_count(0)
        await page.goto(site + "/#/")
        worker = page.locator(f'table.workers tr[data-job-id="{running}"]')
        await expect(worker).to_have_count(1)
        await expect(worker.locator(".progress")).to_have_count(0)
        await client.post(f"/jobs/{running}/cancel")


# -- the log ---------------------------------------------------------------------------------


async def test_a_retried_jobs_log_marks_where_each_attempt_starts(
    browser: Browser, site: str, tmp_path: Path
) -> None:
    async with httpx.AsyncClient(base_url=site) as client:
        retried = await submit_job(
            client, "flaky_talker", str(tmp_path / "runs"), 1, max_retries=1, retry_backoff_s=0.05
        )
        once = await submit_job(client, "print_lines", 2)
        for job_id in (retried, once):
            await finished(client, job_id)
    page = await open_page(browser, site + f"/#/jobs/{retried}")
    await expect(page.locator(".log li")).to_have_text(
        ["attempt 1", re.compile("run 1 starts"), "attempt 2", re.compile("run 2 starts")]
    )
    await page.goto(site + f"/#/jobs/{once}")
    await expect(page.locator(".log li")).to_have_count(2)
    await expect(page.locator(".log .log-attempt")).to_have_count(0)  # one run: nothing to mark


async def test_an_empty_log_says_whether_more_may_come(browser: Browser, site: str) -> None:
    async with httpx.AsyncClient(base_url=site) as client:
        quiet = await submit_job(client, "add", 1, 2)
        await finished(client, quiet)
        running = await submit_job(client, "sleep", 30)
        await wait_state(client, running, "running")
        page = await open_page(browser, site + f"/#/jobs/{quiet}")
        await expect(page.locator(".log-status")).to_have_text("No output.")
        await page.goto(site + f"/#/jobs/{running}")
        await expect(page.locator(".log-status")).to_have_text("No output yet.")
        await client.post(f"/jobs/{running}/cancel")
        await expect(page.locator(".job-state .badge")).to_have_text("canceled")
        await expect(page.locator(".log-status")).to_have_text("No output.")


# -- loading ---------------------------------------------------------------------------------


@asynccontextmanager
async def held(page: Page, path: str) -> AsyncIterator[None]:
    """The page's requests for ``path`` get no answer until the block ends."""
    release = asyncio.Event()

    async def hold(route: Route) -> None:
        await release.wait()
        await route.continue_()

    await page.route(lambda url: urlsplit(url).path == path, hold)
    try:
        yield
    finally:
        release.set()


async def test_views_say_loading_until_their_first_data_is_in(browser: Browser, site: str) -> None:
    async with httpx.AsyncClient(base_url=site) as client:
        job_id = await submit_job(client, "add", 1, 2)
        await finished(client, job_id)
    page = await open_page(browser, "about:blank")
    async with held(page, "/jobs"):
        await page.goto(site + "/#/jobs")
        await expect(page.locator("main h1")).to_have_text("Jobs")
        await expect(page.locator("main [role=status]")).to_have_text("Loading…")
        await expect(page.locator("table.jobs")).to_be_hidden()  # no empty table meanwhile
        await expect(page.get_by_text("No jobs match.")).to_have_count(0)
        await expect(page.get_by_text("Load more")).to_be_hidden()
    await expect(row(page, job_id)).to_be_visible()
    await expect(page.locator("main")).not_to_contain_text("Loading…")
    async with held(page, f"/jobs/{job_id}"):
        await page.goto(site + f"/#/jobs/{job_id}")
        await expect(page.locator("main .loading")).to_have_text("Loading…")
        await expect(page.get_by_role("button", name="Cancel")).to_be_disabled()
    await expect(page.locator(".job-state .badge")).to_have_text("succeeded")
    await expect(page.locator("main .loading")).to_have_count(0)
    async with held(page, "/stats"):
        await page.goto(site + "/#/")
        await expect(page.locator(".tiles .loading")).to_have_text("Loading…")
        await expect(page.get_by_text("No jobs stored yet.")).to_have_count(0)
    await expect(page.locator('.tile[data-state="succeeded"] .tile-count')).to_have_text("1")
    await expect(page.locator("main .loading")).to_have_count(0)


# -- memory ----------------------------------------------------------------------------------


async def test_a_job_over_its_memory_limit_says_which_limit(browser: Browser, site: str) -> None:
    async with httpx.AsyncClient(base_url=site) as client:
        job_id = await submit_job(client, "allocate_limited", 200)  # @task(memory_limit_mb=64)
        assert (await finished(client, job_id))["state"] == "failed"
    page = await open_page(browser, site + f"/#/jobs/{job_id}")
    await expect(page.locator("p.error-line")).to_have_text(
        "MemoryError: the job went over its memory limit of 64 MB (memory_limit_mb)"
    )
    limit = page.locator(".facts div", has_text="memory limit").locator("dd")
    await expect(limit).to_have_text("64 MB")


# -- schedules -------------------------------------------------------------------------------


@pytest_asyncio.fixture(loop_scope="module")
async def cron_site(settings: Settings) -> AsyncIterator[str]:
    """A service with a schedule declared in code besides those made over the API."""
    with_cron = dataclasses.replace(settings, tasks=(TASKS, "tests.cron_tasks"))
    async with live_server(with_cron) as url:
        yield url


def schedule_row(page: Page, schedule_id: str) -> Locator:
    return page.locator(f'table.schedules tr[data-schedule-id="{schedule_id}"]')


async def create_schedule(page: Page, task: str, cron: str, args: str = "", id: str = "") -> None:
    """Fill the page's form and send it."""
    await page.select_option("#schedule-task", T + task)
    await page.fill("#schedule-cron", cron)
    await page.fill("#schedule-args", args)
    await page.fill("#schedule-id", id)
    await page.click("form.schedule-form button[type=submit]")


async def test_a_schedule_made_on_the_page_pauses_resumes_shows_its_jobs_and_goes(
    browser: Browser, site: str
) -> None:
    page = await open_page(browser, site + "/#/schedules")
    await expect(page.locator("main h1")).to_have_text("Schedules")
    await expect(page.locator("nav a[aria-current=page]")).to_have_text("Schedules")
    await expect(page.get_by_text("No schedules yet.")).to_be_visible()
    await create_schedule(page, "tick", "* * * * * *", '["from the page"]', "page-made")
    made = schedule_row(page, "page-made")
    await expect(page.locator(".outcome")).to_have_text("Schedule page-made created.")
    await expect(made.locator("td.task")).to_have_text(T + "tick")
    await expect(made.locator('td[data-label="cron"] code')).to_have_text("* * * * * *")
    await expect(made.locator('td[data-label="cron"] .zone')).to_have_text("UTC")
    await expect(made.locator('td[data-label="from"]')).to_have_text("api")
    await expect(made.locator('td[data-label="next"] time')).to_have_count(1)
    await expect(made.locator(".badge")).to_have_text("active")
    await expect(page.get_by_text("No schedules yet.")).to_be_hidden()
    # its first tick makes a job: the last tick shows, with no reload
    await expect(made.locator('td[data-label="last"] time')).to_have_count(1)
    await made.get_by_role("button", name="Pause").click()
    await expect(made.locator(".badge")).to_have_text("paused")
    await expect(made.locator('td[data-label="next"]')).to_have_text("none while paused")
    async with httpx.AsyncClient(base_url=site) as client:
        assert (await client.get("/schedules/page-made")).json()["paused"] is True
        await made.get_by_role("button", name="Resume").click()
        await expect(made.locator(".badge")).to_have_text("active")
        await expect(made.locator('td[data-label="next"] time')).to_have_count(1)
        assert (await client.get("/schedules/page-made")).json()["paused"] is False
        submitted = await submit_job(client, "tick", "submitted")
        await finished(client, submitted)
        made_jobs = (await client.get("/jobs", params={"schedule": "page-made"})).json()["jobs"]
    first = made_jobs[-1]["id"]
    await made.get_by_role("link", name="its jobs").click()
    await expect(page).to_have_url(re.compile(r"#/jobs\?schedule=page-made$"))
    await expect(page.locator(".filter-note")).to_contain_text("The jobs of schedule page-made")
    await expect(row(page, first)).to_contain_text("from the page")
    await expect(row(page, submitted)).to_have_count(0)
    await page.get_by_role("link", name="every job").click()
    await expect(row(page, submitted)).to_have_count(1)
    await row(page, first).locator("a").click()
    schedule_fact = page.locator(".facts div", has_text="schedule").locator("a")
    await expect(schedule_fact).to_have_text("page-made")
    await page.goto(site + "/#/schedules")
    await schedule_row(page, "page-made").get_by_role("button", name="Delete").click()
    await expect(page.locator(".outcome")).to_have_text("Schedule page-made deleted.")
    await expect(schedule_row(page, "page-made")).to_have_count(0)
    await expect(page.get_by_text("No schedules yet.")).to_be_visible()


async def test_the_schedule_forms_refusals_show_next_to_their_fields(
    browser: Browser, cron_site: str
) -> None:
    page = await open_page(browser, cron_site + "/#/schedules")
    declared = schedule_row(page, LEAP_DAY)
    await expect(declared.locator('td[data-label="from"]')).to_have_text("task")
    delete = declared.get_by_role("button", name="Delete")
    await expect(delete).to_be_disabled()
    await expect(delete).to_have_attribute("title", re.compile(r"@task\(cron=\.\.\.\)"))
    await create_schedule(page, "tick", "61 * * * *")
    await expect(page.locator("#schedule-cron-error")).to_contain_text("out of range")
    await expect(page.locator("#schedule-cron")).to_have_attribute("aria-invalid", "true")
    await create_schedule(page, "tick", "@daily", "[1, 2]")  # tick takes one argument
    await expect(page.locator("#schedule-args-error")).not_to_be_empty()
    await expect(page.locator("#schedule-cron-error")).to_be_empty()
    await create_schedule(page, "tick", "@daily", "not json")  # refused before it is sent
    await expect(page.locator("#schedule-args-error")).to_contain_text("not valid JSON")
    await create_schedule(page, "tick", "@daily", id="task:mine")
    await expect(page.locator("#schedule-id-error")).not_to_be_empty()
    await create_schedule(page, "tick", "@daily", '["x"]', "nightly")
    await expect(schedule_row(page, "nightly")).to_be_visible()
    await create_schedule(page, "tick", "@hourly", id="nightly")  # the id is taken
    await expect(page.locator("#schedule-id-error")).to_contain_text("exists")
    cron = schedule_row(page, "nightly").locator('td[data-label="cron"] code')
    await expect(cron).to_have_text("@daily")
    # a declared schedule pauses and resumes like the others
    await declared.get_by_role("button", name="Pause").click()
    await expect(declared.locator(".badge")).to_have_text("paused")
    await declared.get_by_role("button", name="Resume").click()
    await expect(declared.locator(".badge")).to_have_text("active")


async def test_the_schedules_fit_a_phone_and_a_laptop(browser: Browser, cron_site: str) -> None:
    async with httpx.AsyncClient(base_url=cron_site) as client:
        body = {"task": T + LONG_TASK, "cron": "0 0 1 1 *", "args": ["gate"], "id": "yearly-report"}
        assert (await client.post("/schedules", json=body)).status_code == 201
        assert (await client.post("/schedules/yearly-report/pause")).status_code == 200
    for width in (390, 1280):
        viewport = {"width": width, "height": 800}
        page = await open_page(browser, cron_site + "/#/schedules", viewport=viewport)
        name = schedule_row(page, "yearly-report").locator("td.task")
        await expect(name).to_be_visible()
        await expect(schedule_row(page, LEAP_DAY)).to_be_visible()
        assert await page.evaluate(OVERFLOWS) == [], width
        assert await name.evaluate(SPLIT_SEGMENTS) == [], width
        buttons = schedule_row(page, "yearly-report").get_by_role("button")
        for i in range(await buttons.count()):  # on the screen, none cut off at its edge
            box = await buttons.nth(i).bounding_box()
            assert box is not None and box["x"] >= 0 and box["x"] + box["width"] <= width
        await expect(page.locator("#schedule-cron")).to_be_visible()
        await page.close()


async def test_the_submit_form_shows_a_task_s_rate_limit_and_sets_a_job_s(
    browser: Browser, site: str
) -> None:
    page = await open_page(browser, site + f"/#/submit?task={TASKS}.rated")
    await expect(page.locator(".rate-note")).to_contain_text("Rate limit: 10/s")
    await page.locator("details.options summary").click()
    await expect(page.locator("#option-rate_limit")).to_have_attribute("placeholder", "10/s")
    await page.fill("#option-rate_limit", "2/s")
    await page.click("button[type=submit]")
    await expect(page).to_have_url(re.compile("#/jobs/"))
    job_id = page.url.split("#/jobs/")[1]
    async with httpx.AsyncClient(base_url=site) as client:
        assert (await client.get(f"/jobs/{job_id}")).json()["options"]["rate_limit"] == "2/s"
