"""The jobs page reads its list and its counts through the store, filters and pages them."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest

from tests.integration.test_store_queries import NOW, hook, record
from webhook_router.jobs import Status

from .conftest import Client, Console

pytestmark = [pytest.mark.asyncio(loop_scope="session"), pytest.mark.timeout(60)]


async def test_the_jobs_page_filters_and_pages(console: Console) -> None:
    store = console.stack.store
    space = console.stack.space()
    a = await hook(store, space, "pager")
    newer = await record(store, a, status=Status.COMPLETE)
    older = await record(store, a, status=Status.FAILED, answer=500, at=NOW - timedelta(minutes=1))
    async with Client(console) as client:
        await client.login()
        _, html, _ = await client.get(f"spaces/{space}/jobs?limit=1")
        assert newer in html and older not in html
        found = re.search(r'href="([^"]+pageToken=[^"]+)" rel="next"', html)
        assert found is not None
        path = found.group(1).replace("&amp;", "&").removeprefix("/console/")
        _, html, _ = await client.get(path)
        assert older in html and newer not in html
        assert "Older pages do not update" in html

        _, html, _ = await client.get(f"spaces/{space}/jobs?status=failed")
        assert older in html and newer not in html
        assert re.search(r'data-status="Complete">Complete <b>1</b>', html)

        query = "type=Submission&event=Submitted&form=ipad-request&url=127.0.0.1:9/HOOK"
        _, html, _ = await client.get(f"spaces/{space}/jobs?{query}")
        assert newer in html and older in html
        assert re.search(r'data-status="Failed">Failed <b>1</b>', html)
        _, html, _ = await client.get(f"spaces/{space}/jobs?form=ipad")
        assert newer not in html and older not in html
        assert "No jobs match these filters." in html

        status, html, _ = await client.get(f"spaces/{space}/jobs?start=soon&pageToken=x")
        assert status == 200
        assert "start: must be a date and time" in html and "pageToken:" in html


@pytest.mark.parametrize(
    ("query", "words"),
    [
        ("start=2024-05-01T00:00%00", "start: must not contain NUL characters"),
        ("end=9999-12-31T23:59-23:59", "end: is out of range once moved to UTC"),
        ("start=0001-01-01T00:00%2B14:00", "start: is out of range once moved to UTC"),
        ("webhook=a%00b", "webhook: must not contain NUL characters"),
    ],
)
async def test_a_time_filter_no_job_can_have_is_named_not_a_server_error(
    console: Console, query: str, words: str
) -> None:
    space = console.stack.space()
    async with Client(console) as client:
        await client.login()
        status, html, _ = await client.get(f"spaces/{space}/jobs?{query}")
        assert status == 200, html
        assert words in html
        status, html, _ = await client.get(f"spaces/{space}/retry/confirm?webhook=x&{query}")
        assert status == 422 and "There is no" not in html


async def test_a_job_or_webhook_of_another_space_or_none_is_a_404_page(console: Console) -> None:
    space = console.stack.space()
    async with Client(console) as client:
        await client.login()
        for path, words in (
            ("jobs/00000000-0000-4000-8000-000000000000", "There is no such job"),
            ("jobs/not-an-id", "There is no such job"),
            ("webhooks/00000000-0000-4000-8000-000000000000", "There is no such webhook"),
            ("webhooks/not-an-id", "There is no such webhook"),
        ):
            status, html, _ = await client.get(f"spaces/{space}/{path}")
            assert status == 404 and words in html, path
        status, html, _ = await client.post(
            f"spaces/{space}/webhooks/not-an-id/enabled",
            data={"enabled": "true"},
            headers={"X-CSRF-Token": client.csrf},
        )
        assert status == 404 and "There is no such webhook" in html
