"""The store's reads of the job log for lists, counts and the console's overview, against
jobs written as the recorder writes them (`Store.record`), each test in a space of its own."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from webhook_router.jobs import Attempt, Delivery, Outcome, Status, job_id
from webhook_router.store import JobFilter, Store
from webhook_router.webhooks import Webhook

pytestmark = [pytest.mark.asyncio(loop_scope="session"), pytest.mark.timeout(60)]

NOW = datetime.now(UTC).replace(second=30, microsecond=0)


def new_space() -> str:
    return f"space-{uuid.uuid4().hex[:8]}"


async def hook(st: Store, space: str, name: str, kapp: str | None = "services") -> Webhook:
    made = await st.insert_webhook(
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
    st: Store,
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
    parent_id: str = "s1",
    at: datetime = NOW,
    trace: dict[str, str] | None = None,
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
        parent_id=parent_id,
        tree_group=group,
        tree_name=action,
        url=url,
        body='{"event": {}}',
        created_at=at.isoformat(),
        trace=trace or {},
    )
    attempt = Attempt(1, at.isoformat(), 12.0, answer, None, error)
    summary = f"{answer}" if answer else error
    await st.record(
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


async def test_the_job_list_filters_pages_and_counts(st: Store) -> None:
    space = new_space()
    a, b = await hook(st, space, "a"), await hook(st, space, "b", kapp="hr")
    top = await hook(st, space, "top", kapp=None)
    ipad = await record(st, a, status=Status.COMPLETE, url="http://127.0.0.1:9/50%off")
    laptop = await record(
        st,
        a,
        status=Status.FAILED,
        action="Created",
        group="Submissions > services > laptop",
        answer=404,
        parent_id="s2",
        at=NOW - timedelta(minutes=5),
    )
    user = await record(
        st,
        b,
        status=Status.QUEUED,
        type_="User",
        action="Created",
        group="Users",
        answer=503,
        retry_count=1,
        at=NOW - timedelta(minutes=10),
    )
    robots = await record(
        st,
        top,
        status=Status.COMPLETE,
        type_="Datastore Submission",
        group="Datastore Submissions > robots",
        url="http://127.0.0.1:9/a_b\\c",
        at=NOW - timedelta(minutes=15),
    )

    async def ids(**filters: Any) -> list[str]:
        return [str(r.id) for r in await st.list_jobs(JobFilter(space=space, **filters))]

    assert await ids() == [ipad, laptop, user, robots], "newest first"
    assert await ids(kapp="hr") == [user]
    assert await ids(kapp_only=True) == [robots], "space-level webhooks only"
    assert await ids(webhook="a") == [ipad, laptop]
    assert await ids(status="Failed") == [laptop]
    assert await ids(parent_type="Submission", parent_key="s2") == [laptop]
    assert await ids(start=NOW - timedelta(minutes=6), end=NOW) == [laptop]
    assert await ids(type="User") == [user]
    assert await ids(type="Submission", event="Created") == [laptop]
    assert await ids(form="ipad-request") == [ipad]
    assert await ids(form="robots") == [robots], "datastore forms too"
    assert await ids(form="ipad") == [], "a form slug is matched whole"
    assert await ids(form="%") == [], "wildcards are literal"
    assert await ids(url_text="50%OFF") == [ipad], "any case, % literal"
    assert await ids(url_text="_") == [robots], "_ literal"
    assert await ids(url_text="\\") == [robots], "\\ literal"

    first = await st.list_jobs(JobFilter(space=space, limit=2))
    after = (first[-1].scheduled_at, str(first[-1].id))
    assert await ids(limit=2, after=after) == [user, robots]
    assert await ids(limit=2, after=after, type="User") == [user], "filters hold on a page"

    [whole] = await st.list_jobs(JobFilter(space=space, limit=1))
    [brief] = await st.list_jobs(JobFilter(space=space, limit=1), brief=True)
    assert brief.request_content is None and brief.response_content is None
    assert brief == whole.model_copy(update={"request_content": None, "response_content": None})
    assert whole.request_content == '{"event": {}}'

    counts = await st.count_by_status(JobFilter(space=space, status="Failed", webhook="a"))
    assert counts == {
        "Queued": 0,
        "In Progress": 0,
        "Complete": 1,
        "Failed": 1,
        "Cancelled": 0,
    }, "counted under every filter but the status"
    counts = await st.count_by_status(JobFilter(space=space, url_text="127.0.0.1", limit=1))
    assert sum(counts.values()) == 4, "the page does not limit the counts"


async def test_attempts_per_minute_failing_webhooks_and_backlog(st: Store) -> None:
    space = new_space()
    good, bad = await hook(st, space, "good"), await hook(st, space, "bad")
    minute = NOW.replace(second=0)
    await record(st, good, status=Status.COMPLETE, at=minute + timedelta(seconds=5))
    await record(st, good, status=Status.COMPLETE, at=minute + timedelta(seconds=9))
    await record(st, bad, status=Status.FAILED, answer=404, at=minute + timedelta(seconds=7))
    await record(
        st,
        bad,
        status=Status.FAILED,
        answer=None,
        error="timed out",
        at=minute - timedelta(minutes=2),
    )
    waiting = await record(
        st,
        bad,
        status=Status.QUEUED,
        answer=503,
        retry_count=2,
        at=minute - timedelta(minutes=3),
    )
    later = await record(
        st, good, status=Status.QUEUED, answer=500, retry_count=1, at=minute - timedelta(minutes=1)
    )
    await record(st, good, status=Status.COMPLETE, at=minute - timedelta(days=2))

    rows = await st.attempts_per_minute(space, minute - timedelta(minutes=59))
    series = {r["minute"]: (r["deliveries"], r["failures"]) for r in rows}
    assert series == {
        minute: (3, 1),
        minute - timedelta(minutes=1): (1, 1),
        minute - timedelta(minutes=2): (1, 1),
        minute - timedelta(minutes=3): (1, 1),
    }

    failing = await st.failing_webhooks(space, NOW - timedelta(days=1))
    assert [(f["webhook_name"], f["failed"], f["last_summary"]) for f in failing] == [
        ("bad", 2, "timed out")
    ]

    total, due = await st.retry_backlog(space)
    assert total == 2 and [str(r.id) for r in due] == [waiting, later], "next due first"
    total, due = await st.retry_backlog(space, limit=1)
    assert total == 2 and [str(r.id) for r in due] == [waiting]
    assert due[0].request_content is None, "a page of jobs leaves the contents out"


async def test_space_webhooks_and_known_spaces(st: Store) -> None:
    space = new_space()
    await hook(st, space, "b", kapp="services")
    await hook(st, space, "a", kapp="services")
    await hook(st, space, "z", kapp=None)
    await hook(st, space, "c", kapp="hr")
    webhooks = await st.space_webhooks(space)
    assert [(w.kapp, w.name) for w in webhooks] == [
        (None, "z"),
        ("hr", "c"),
        ("services", "a"),
        ("services", "b"),
    ], "space level first, then by kapp and name"
    assert await st.space_webhooks(new_space()) == []

    spaces = await st.known_spaces(limit=100_000)
    assert space in spaces and spaces == sorted(set(spaces))
    assert len(await st.known_spaces(limit=1)) == 1
