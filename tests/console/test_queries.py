"""The console's own queries against the job log, written by the recorder's `Store.record`."""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime, timedelta

import pytest

from webhook_router.console import queries
from webhook_router.console.queries import JobQuery
from webhook_router.jobs import Attempt, Delivery, Outcome, Status, job_id
from webhook_router.store import Store
from webhook_router.webhooks import Webhook

from .conftest import Client, Console

pytestmark = [pytest.mark.asyncio(loop_scope="session"), pytest.mark.timeout(60)]

NOW = datetime.now(UTC).replace(second=30, microsecond=0)


async def hook(store: Store, space: str, name: str, kapp: str | None = "services") -> Webhook:
    made = await store.insert_webhook(
        space=space,
        kapp=kapp,
        name=name,
        type="Submission",
        event="Submitted",
        filter=None,
        url="/x",
        auth_strategy=None,
    )
    assert made is not None
    return made


async def record(
    store: Store,
    webhook: Webhook,
    *,
    status: Status,
    type_: str = "Submission",
    action: str = "Submitted",
    group: str = "Submissions > services > ipad-request",
    url: str = "http://127.0.0.1:9/hook",
    answer: int | None = 200,
    error: str | None = None,
    retry_count: int = 0,
    at: datetime = NOW,
) -> str:
    """One job with one attempt started at `at`; returns its id."""
    event_id = str(uuid.uuid4())
    delivery = Delivery(
        job_id=job_id(event_id, webhook.id),
        event_id=event_id,
        event_at=at.isoformat(),
        webhook_id=webhook.id,
        webhook_name=webhook.name,
        space=webhook.space,
        scope_type=webhook.scope_type,
        scope_id=webhook.scope_id,
        type=type_,
        action=action,
        parent_type=type_,
        parent_id="s1",
        tree_group=group,
        tree_name=action,
        url=url,
        body='{"event": {}}',
        created_at=at.isoformat(),
    )
    attempt = Attempt(1, at.isoformat(), 12.0, answer, None, error)
    summary = f"{answer}" if answer else error
    await store.record(
        [
            Outcome(
                delivery,
                status,
                summary=summary,
                retry_count=retry_count,
                scheduled_at=at.isoformat(),
                response_status=answer,
                attempt=attempt,
            )
        ]
    )
    return delivery.job_id


async def test_job_filters_counts_and_pages(console: Console) -> None:
    store = console.stack.store
    space = console.stack.space()
    a, b = await hook(store, space, "a"), await hook(store, space, "b", kapp="hr")
    ipad = await record(store, a, status=Status.COMPLETE, url="http://127.0.0.1:9/50%off")
    laptop = await record(
        store,
        a,
        status=Status.FAILED,
        action="Created",
        group="Submissions > services > laptop",
        answer=404,
        at=NOW - timedelta(minutes=5),
    )
    user = await record(
        store,
        b,
        status=Status.QUEUED,
        type_="User",
        action="Created",
        group="Users",
        answer=503,
        retry_count=1,
        at=NOW - timedelta(minutes=10),
    )

    async def ids(**filters: object) -> list[str]:
        rows = await queries.list_jobs(store.pool, JobQuery(space=space, **filters))  # type: ignore[arg-type]
        return [str(r["id"]) for r in rows]

    assert await ids() == [ipad, laptop, user], "newest first"
    assert await ids(type="User") == [user]
    assert await ids(type="Submission", event="Created") == [laptop]
    assert await ids(form="ipad-request") == [ipad]
    assert await ids(form="ipad") == [], "a form slug is matched whole"
    assert await ids(form="%") == [], "wildcards are literal"
    assert await ids(url_text="50%OFF") == [ipad], "case-insensitive, % literal"
    assert await ids(url_text="_") == []
    assert await ids(kapp="hr") == [user]
    assert await ids(webhook="a") == [ipad, laptop]
    assert await ids(status="Failed") == [laptop]
    assert await ids(start=NOW - timedelta(minutes=6), end=NOW) == [laptop]

    first = await queries.list_jobs(store.pool, JobQuery(space=space, limit=2))
    after = (first[-1]["scheduled_at"], str(first[-1]["id"]))
    assert await ids(limit=2, after=after) == [user]

    counts = await queries.count_by_status(
        store.pool, JobQuery(space=space, status="Failed", webhook="a")
    )
    assert counts == {
        "Queued": 0,
        "In Progress": 0,
        "Complete": 1,
        "Failed": 1,
        "Cancelled": 0,
    }, "counted under every filter but the status"


async def test_attempts_per_minute_failing_webhooks_and_backlog(console: Console) -> None:
    store = console.stack.store
    space = console.stack.space()
    good, bad = await hook(store, space, "good"), await hook(store, space, "bad")
    minute = NOW.replace(second=0)
    await record(store, good, status=Status.COMPLETE, at=minute + timedelta(seconds=5))
    await record(store, good, status=Status.COMPLETE, at=minute + timedelta(seconds=9))
    await record(store, bad, status=Status.FAILED, answer=404, at=minute + timedelta(seconds=7))
    await record(
        store,
        bad,
        status=Status.FAILED,
        answer=None,
        error="timed out",
        at=minute - timedelta(minutes=2),
    )
    waiting = await record(
        store,
        bad,
        status=Status.QUEUED,
        answer=503,
        retry_count=2,
        at=minute - timedelta(minutes=3),
    )
    await record(store, good, status=Status.COMPLETE, at=minute - timedelta(days=2))

    rows = await queries.attempts_per_minute(store.pool, space, minute - timedelta(minutes=59))
    series = {r["minute"]: (r["deliveries"], r["failures"]) for r in rows}
    assert series == {
        minute: (3, 1),
        minute - timedelta(minutes=2): (1, 1),
        minute - timedelta(minutes=3): (1, 1),
    }

    failing = await queries.failing_webhooks(store.pool, space, NOW - timedelta(days=1))
    assert [(f["webhook_name"], f["failed"]) for f in failing] == [("bad", 2)]

    total, due = await queries.retry_backlog(store.pool, space)
    assert total == 1 and [str(r["id"]) for r in due] == [waiting]

    assert [w.name for w in await queries.space_webhooks(store.pool, space)] == ["bad", "good"]
    assert space in await queries.known_spaces(store.pool, limit=100_000)


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

        status, html, _ = await client.get(f"spaces/{space}/jobs?start=soon&pageToken=x")
        assert status == 200
        assert "start: must be a date and time" in html and "pageToken:" in html
