"""An admin in a real browser: a failed job found, its webhook fixed, the job retried.

Each page visited is saved as a screenshot (conftest.shoot) for docs/console.md.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import replace
from typing import Any

import pytest
from aiohttp import web
from playwright.async_api import expect

from tests.conftest import eventually, free_port
from tests.integration.conftest import event_for
from webhook_router.defaults import install_defaults
from webhook_router.expressions import ExpressionSyntaxError, compile_filter

from .conftest import RUN_URL_TEMPLATE, Console, browser_login, shoot

pytestmark = [pytest.mark.asyncio(loop_scope="session"), pytest.mark.timeout(120)]

BROKEN_URL = "/nowhere/${form('slug')}"
STANDARD_URL = (
    "/app/api/v1/run-tree/Kinetic%20Request%20CE/"
    "Submissions%20%3E%20${kapp('slug')}%20%3E%20${form('slug')}/Submitted"
)
BAD_FILTER = "values('Status') == 'Open' &&"


def submitted(space: str, submission_id: str = "sub-1", **values: str) -> dict[str, Any]:
    return event_for(
        space,
        "Submission",
        "Submitted",
        kapp={"slug": "services"},
        form={"slug": "ipad-request"},
        submission={"id": submission_id, "coreState": "Submitted", "values": values},
    )


async def test_fix_a_webhook_and_retry_its_failed_job(console: Console, page: Any) -> None:
    stack = console.stack
    space = stack.space()
    hook = await stack.webhook(
        space,
        kapp="services",
        name="Submission Submitted",
        type="Submission",
        event="Submitted",
        url=BROKEN_URL,
    )
    event_id = await stack.publisher.publish(submitted(space, Status="Open"))
    [row] = await stack.settled(space, 1)
    assert (row["status"], row["summary"]) == ("Failed", "404 Not Found")
    job_id = str(row["id"])

    # Not logged in: the jobs page sends the browser to the login form, then back.
    await page.goto(console.url(f"spaces/{space}/jobs"))
    assert "/console/login" in page.url
    await shoot(page, "login")
    await browser_login(page, console, f"spaces/{space}/jobs")
    cookies = {c["name"]: c for c in await page.context.cookies()}
    session = cookies["console_session"]
    assert session["httpOnly"] and session["sameSite"] == "Strict"
    assert session["path"] == "/console/"

    # The jobs list: the failed job, and the counts per status.
    failed_row = page.locator(f"tr[data-job='{job_id}']")
    assert "Failed" in await failed_row.inner_text()
    assert "404 Not Found" in await failed_row.inner_text()
    assert await page.inner_text("a.count[data-status='Failed'] b") == "1"
    await shoot(page, "jobs")

    # The job: what was sent where, and the engine's 404.
    await failed_row.locator("a").first.click()
    await page.wait_for_url(re.compile(f"/jobs/{job_id}$"))
    body = json.loads(await page.inner_text("#request-body"))
    assert body["event"]["id"] == event_id
    assert body["submission"]["values"] == {"Status": "Open"}
    assert await page.inner_text("#job-url") == stack.settings.engine_url + "/nowhere/ipad-request"
    headers = await page.inner_text("#request-headers")
    assert "webhook-id" in headers and job_id in headers
    attempts = await page.inner_text("#attempts")
    assert "404" in attempts and "/nowhere/ipad-request does not exist" in attempts
    assert "Submissions > services > ipad-request" in await page.inner_text("dl.facts")
    await shoot(page, "job-failed")

    # The webhook: a filter with a syntax error shows the parser's own message.
    await page.click("dl.facts a[href*='/webhooks/']")
    await page.wait_for_url(re.compile(f"/webhooks/{hook.id}$"))
    assert await page.input_value("#url") == BROKEN_URL
    await page.fill("#filter", BAD_FILTER)
    with pytest.raises(ExpressionSyntaxError) as parser:
        compile_filter(BAD_FILTER)
    check = page.locator("#filter-check .message")
    await check.wait_for()
    assert await check.inner_text() == str(parser.value)
    caret = await page.inner_text("#filter-check pre.caret")
    assert caret.splitlines()[-1].index("^") == parser.value.position
    await page.fill("#url", STANDARD_URL.replace("${form('slug')}", "${form('slug'"))
    await page.locator("#url-check .message").wait_for()
    await shoot(page, "webhook-edit-errors")

    # Saving with the bad filter is refused, naming the field.
    await page.click("#save")
    assert "at position" in await page.inner_text("#filter-error")
    await page.fill("#filter", "")
    await page.fill("#url", STANDARD_URL)
    await page.locator("#url-check.ok").wait_for()
    await page.click("#save")
    assert "saved" in await page.inner_text(".flash-ok")
    saved = await stack.store.get_webhook_by_id(hook.id)
    assert saved is not None and saved.url == STANDARD_URL and saved.filter is None

    # Retry: the job goes out again through the fixed URL, and completes with its run.
    await page.goto(console.url(f"spaces/{space}/jobs/{job_id}"))
    await page.click("#retry")
    assert "Queued again" in await page.inner_text(".flash-ok")
    await expect(page.locator("#job-status")).to_have_text("Complete", timeout=20_000)
    done = await stack.store.get_job(job_id)
    assert done is not None and done.status == "Complete" and done.run_id
    run_link = page.locator("#job-run a")
    assert await run_link.inner_text() == f"#{done.run_id}"
    assert await run_link.get_attribute("href") == RUN_URL_TEMPLATE.replace("{run}", done.run_id)
    assert "200" in await page.inner_text("#attempts")
    assert await page.locator("#retry").count() == 0
    await shoot(page, "job-complete")

    # The list follows: the job is Complete there too.
    await page.goto(console.url(f"spaces/{space}/jobs"))
    assert "Complete" in await page.locator(f"tr[data-job='{job_id}']").inner_text()


async def test_the_jobs_list_refreshes_while_open(console: Console, page: Any) -> None:
    stack = console.stack
    space = stack.space()
    await stack.webhook(
        space, kapp="services", type="Submission", event="Submitted", url=STANDARD_URL
    )
    await browser_login(page, console, f"spaces/{space}/jobs")
    assert await page.locator("tr[data-job]").count() == 0
    await stack.publisher.publish(submitted(space))
    await page.locator("tr[data-job]").wait_for(timeout=20_000)
    await expect(page.locator("a.count[data-status='Complete'] b")).to_have_text(
        "1", timeout=20_000
    )


async def test_bulk_retry_says_how_many_before_queuing(console: Console, page: Any) -> None:
    stack = console.stack
    space = stack.space()
    await install_defaults(stack.store, stack.settings.tree_source, space, None)
    await install_defaults(stack.store, stack.settings.tree_source, space, "services")
    hook = await stack.webhook(
        space, kapp="services", name="Broken", type="Submission", event="Submitted", url=BROKEN_URL
    )
    for n in range(3):
        await stack.publisher.publish(submitted(space, f"sub-{n}"))
    rows = await stack.settled(space, 6)
    assert sorted((r["webhook_name"], r["status"]) for r in rows) == [
        ("Broken", "Failed"),
        ("Broken", "Failed"),
        ("Broken", "Failed"),
        ("Submission Submitted", "Complete"),
        ("Submission Submitted", "Complete"),
        ("Submission Submitted", "Complete"),
    ]

    await browser_login(page, console, f"spaces/{space}/webhooks")
    assert "Broken" in await page.inner_text(f"tr[data-webhook='{hook.id}']")
    assert await page.locator("tr[data-webhook]").count() > 20, "the standard webhooks too"
    await shoot(page, "webhooks")

    await page.goto(console.url(f"spaces/{space}/overview"))
    assert "Broken" in await page.inner_text("#failing")
    assert "Submission Submitted" not in await page.inner_text("#failing")
    caption = await page.inner_text("figure.chart figcaption >> nth=0")
    assert "6 deliveries" in caption and "3 failed" in caption
    await shoot(page, "overview")

    await page.goto(console.url(f"spaces/{space}/retry"))
    await page.select_option("#webhook", hook.id)
    await shoot(page, "bulk-retry")
    await page.click("#count")
    assert "will queue 3 failed jobs" in await page.inner_text("#confirm-count")
    await shoot(page, "bulk-retry-confirm")
    untouched = await stack.jobs(space)
    assert {r["replay"] for r in untouched} == {0}, "counting queued nothing"

    fixed = await stack.store.get_webhook_by_id(hook.id)
    assert fixed is not None
    await stack.store.update_webhook(replace(fixed, url=STANDARD_URL))
    await page.click("#confirm")
    assert "Queued 3 failed jobs again" in await page.inner_text(".flash-ok")

    async def all_complete() -> bool:
        rows = await stack.jobs(space)
        return all(r["status"] == "Complete" for r in rows) and sorted(
            r["replay"] for r in rows
        ) == [0, 0, 0, 1, 1, 1]

    assert await eventually(all_complete, timeout=20)
    # The confirmation leads to the jobs list filtered to the webhook: its 3 jobs, Complete.
    await expect(page.locator("a.count[data-status='Complete'] b")).to_have_text(
        "3", timeout=20_000
    )


@asynccontextmanager
async def held_receiver() -> AsyncIterator[tuple[str, asyncio.Event]]:
    """A webhook receiver on 127.0.0.1: its first POST gets 404, every later one waits for
    the event yielded to be set, then gets 200."""
    release = asyncio.Event()
    posts = 0

    async def receive(request: web.Request) -> web.Response:
        nonlocal posts
        posts += 1
        if posts == 1:
            return web.Response(status=404, text="not yet")
        await release.wait()
        return web.json_response({"ok": True})

    app = web.Application()
    app.router.add_post("/hook", receive)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield f"http://127.0.0.1:{port}/hook", release
    finally:
        release.set()
        await runner.cleanup()


async def test_a_retried_job_shows_as_queued_at_once(console: Console, page: Any) -> None:
    stack = console.stack
    space = stack.space()
    async with held_receiver() as (url, release):
        await stack.webhook(space, name="Users", type="User", event="Created", url=url)
        await stack.publisher.publish(event_for(space, "User", "Created", user={"username": "u"}))
        [row] = await stack.settled(space, 1)
        assert (row["status"], row["summary"]) == ("Failed", "404 Not Found")
        job_id = str(row["id"])
        await browser_login(page, console, f"spaces/{space}/jobs/{job_id}")
        assert await page.inner_text("#job-status") == "Failed"
        await page.click("#retry")
        # The receiver holds the new POST: whatever the recorder has written by now, the
        # job is Queued, and there is nothing to retry.
        assert "Queued again" in await page.inner_text(".flash-ok")
        assert await page.inner_text("#job-status") == "Queued"
        assert await page.locator("#retry").count() == 0
        assert "Updates every" in await page.inner_text(".live-note")
        await shoot(page, "job-queued-again")
        release.set()
        await expect(page.locator("#job-status")).to_have_text("Complete", timeout=20_000)


LONG_URL = (
    "http://10.0.0.5:8443/app/api/v1/run-tree/Kinetic%20Request%20CE/"
    "Submissions%20%3E%20services%20%3E%20employee-onboarding-request/Submitted?"
    "source=webhook-router&tenant=acme-corporation-international"
)
"""A private host (saved with a warning; no event ever goes to it) and a long URL."""
BREAKS = "/?&=0-"  # "0" ends "%20"; a browser may break after a hyphen too


async def line_ends(page: Any, selector: str) -> list[str]:
    """The text of each line `selector`'s text is laid out on, as the browser wrapped it."""
    return list(
        await page.eval_on_selector(
            selector,
            """(element) => {
                const lines = [];
                let top = null;
                const walker = document.createTreeWalker(element, NodeFilter.SHOW_TEXT);
                for (let node = walker.nextNode(); node; node = walker.nextNode()) {
                    for (let i = 0; i < node.length; i++) {
                        const range = document.createRange();
                        range.setStart(node, i);
                        range.setEnd(node, i + 1);
                        const y = Math.round(range.getBoundingClientRect().top);
                        if (top === null || y > top + 2) { lines.push(""); top = y; }
                        lines[lines.length - 1] += node.data[i];
                    }
                }
                return lines;
            }""",
        )
    )


async def test_a_space_webhook_saved_from_the_console(console: Console, page: Any) -> None:
    """Its scope reads as text, a host the guard refuses is told in a notice, and its long
    URL wraps between parts in the list, never inside a word."""
    space = console.stack.space()
    await browser_login(page, console, f"spaces/{space}/webhooks/new")
    await page.fill("#name", "Onboarding")
    await page.select_option("#type", "User")
    await page.select_option("#event", "Created")
    await page.fill("#url", LONG_URL)
    await page.click("#save")
    await page.wait_for_url(re.compile(r"/webhooks/[0-9a-f-]{36}$"))
    assert "Webhook Onboarding created." in await page.inner_text(".flash-ok")
    warning = await page.inner_text(".flash-warning")
    assert "10.0.0.5 is a private address" in warning
    assert "WEBHOOK_ROUTER_ALLOWED_NETWORKS" in warning
    # The scope: plain text, no box to type in.
    assert await page.inner_text("#scope") == "space level"
    assert await page.locator("input#kapp:not([type=hidden])").count() == 0
    assert await page.locator("#kapp").get_attribute("type") == "hidden"
    await shoot(page, "webhook-space-level")
    await page.click("#save")
    assert "Webhook Onboarding saved." in await page.inner_text(".flash-ok")
    assert await page.locator(".flash-warning").count() == 1

    for width in (1280, 800):
        await page.set_viewport_size({"width": width, "height": 800})
        await page.goto(console.url(f"spaces/{space}/webhooks"))
        lines = await line_ends(page, "td.url code")
        assert "".join(lines) == LONG_URL
        assert len(lines) > 1, f"at {width} px the URL column is narrower than the URL"
        for line in lines[:-1]:
            assert line[-1] in BREAKS, f"a line ends inside a word: {line!r} (at {width} px)"
        assert await page.evaluate("document.documentElement.scrollWidth") <= width
    await shoot(page, "webhooks-800")


async def test_the_jobs_table_is_whole_at_800_px(console: Console, page: Any) -> None:
    stack = console.stack
    space = stack.space()
    await stack.webhook(
        space, kapp="services", type="Submission", event="Submitted", url=STANDARD_URL
    )
    await stack.publisher.publish(submitted(space))
    await stack.settled(space, 1)
    await page.set_viewport_size({"width": 800, "height": 800})
    await browser_login(page, console, f"spaces/{space}/jobs")
    await page.locator("tr[data-job]").wait_for()
    # Nothing sticks out of the window: the page itself never scrolls sideways...
    page_width = await page.evaluate("document.documentElement.scrollWidth")
    assert page_width <= 800, f"the page is {page_width} px wide in an 800 px window"
    # ...the table scrolls in its own box, and its last column can be brought into view.
    last = page.locator("table.jobs thead th").last
    assert await last.inner_text() == "Took"
    await last.scroll_into_view_if_needed()
    box = await last.bounding_box()
    assert box is not None and box["x"] >= 0 and box["x"] + box["width"] <= 800
    await shoot(page, "jobs-800")
